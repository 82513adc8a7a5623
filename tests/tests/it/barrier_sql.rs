//! The branch barrier on MariaDB and PostgreSQL, driven by the real DTM server.

use crate::support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::support::*;
use dtm_barrier::BranchBarrier;
use dtm_examples::bank::{BankReq, Db};
use dtmcli::{Op, TransInfo, TransOptions, TransType};

fn bank_url(db: Db, handler: &str) -> String {
    format!("{}/{}/{handler}", bank_env().base, db.as_str())
}

/// Two fresh accounts (from, to) with the given balances.
async fn accounts(db: Db, from: i64, to: i64) -> (i64, i64) {
    static N: AtomicI64 = AtomicI64::new(0);
    let base = (std::process::id() as i64) * 1_000_000
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
            % 100_000)
            * 10;
    let a = base + N.fetch_add(2, Ordering::Relaxed) * 100_000_000;
    let b = a + 1;
    let bank = bank_env().bank.clone();
    on_env(async move {
        bank.open_account(db, a, from).await.unwrap();
        bank.open_account(db, b, to).await.unwrap();
    })
    .await;
    (a, b)
}

async fn balance(db: Db, user: i64) -> i64 {
    let bank = bank_env().bank.clone();
    on_env(async move { bank.balance(db, user).await.unwrap() }).await
}

async fn rows(db: Db, gid: &str) -> Vec<String> {
    let gid = gid.to_string();
    let bank = bank_env().bank.clone();
    on_env(async move { bank.barrier_rows(db, &gid).await.unwrap() }).await
}

fn executed(gid: &str, handler: &str) -> usize {
    bank_env().bank.executed(gid, handler)
}

/// Calls a bank handler directly, as DTM would, and returns the HTTP status.
async fn call(db: Db, handler: &str, info: &TransInfo, req: &BankReq) -> u16 {
    reqwest::Client::new()
        .post(bank_url(db, handler))
        .query(&info.query_pairs())
        .json(req)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn req(amount: i64, from: i64, to: i64) -> BankReq {
    BankReq {
        amount,
        from,
        to,
        ..Default::default()
    }
}

async fn saga_success(db: Db) {
    let (a, b) = accounts(db, 100, 0).await;
    let gid = gid("bb-saga-ok");
    let r = req(30, a, b);
    dtm()
        .saga(&gid)
        .add(
            &bank_url(db, "TransOut"),
            &bank_url(db, "TransOutCompensate"),
            &r,
        )
        .add(
            &bank_url(db, "TransIn"),
            &bank_url(db, "TransInCompensate"),
            &r,
        )
        .submit()
        .await
        .unwrap();
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!((balance(db, a).await, balance(db, b).await), (70, 30));
    assert_eq!(executed(&gid, "TransOut"), 1);
    assert_eq!(executed(&gid, "TransIn"), 1);
    // Exactly the rows the Go SDK writes.
    assert_eq!(
        rows(db, &gid).await,
        ["saga/01/action/01/action", "saga/02/action/01/action"]
    );
}

async fn saga_rollback(db: Db) {
    let (a, b) = accounts(db, 100, 0).await;
    let gid = gid("bb-saga-rb");
    let r = BankReq {
        trans_in_result: "FAILURE".into(),
        ..req(30, a, b)
    };
    dtm()
        .saga(&gid)
        .add(
            &bank_url(db, "TransOut"),
            &bank_url(db, "TransOutCompensate"),
            &r,
        )
        .add(
            &bank_url(db, "TransIn"),
            &bank_url(db, "TransInCompensate"),
            &r,
        )
        .submit()
        .await
        .unwrap();
    wait_status(&dtm(), &gid, "failed").await;
    // The compensation undid exactly what the action did; TransIn's own write was rolled
    // back with its barrier row, so its compensation was a null compensation.
    assert_eq!((balance(db, a).await, balance(db, b).await), (100, 0));
    assert_eq!(executed(&gid, "TransIn"), 1);
    assert_eq!(executed(&gid, "TransInCompensate"), 0);
    assert_eq!(executed(&gid, "TransOutCompensate"), 1);
    let mut got = rows(db, &gid).await;
    got.sort();
    assert_eq!(
        got,
        [
            "saga/01/action/01/action",
            "saga/01/compensate/01/compensate",
            "saga/02/action/01/compensate",
            "saga/02/compensate/01/compensate",
        ]
    );
}

async fn same_barrier_twice(db: Db) {
    let (a, b) = accounts(db, 100, 0).await;
    let gid = gid("bb-twice");
    dtm()
        .saga(&gid)
        .add(
            &bank_url(db, "TransInTwice"),
            &bank_url(db, "TransInCompensate"),
            &req(30, a, b),
        )
        .submit()
        .await
        .unwrap();
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(balance(db, b).await, 30);
    assert_eq!(executed(&gid, "TransInTwice"), 2);
    assert_eq!(
        rows(db, &gid).await,
        ["saga/01/action/01/action", "saga/01/action/02/action"]
    );
}

async fn null_compensation_then_late_action(db: Db) {
    let (a, b) = accounts(db, 100, 0).await;
    let gid = gid("bb-nullcomp");
    let r = req(30, a, b);
    let comp = TransInfo::new(&gid, TransType::Saga, "01", Op::Compensate);
    assert_eq!(call(db, "TransOutCompensate", &comp, &r).await, 200);
    assert_eq!(
        executed(&gid, "TransOutCompensate"),
        0,
        "business must not run"
    );
    let action = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    assert_eq!(call(db, "TransOut", &action, &r).await, 200);
    assert_eq!(executed(&gid, "TransOut"), 0, "late action must be a no-op");
    assert_eq!(balance(db, a).await, 100);
    let mut got = rows(db, &gid).await;
    got.sort();
    assert_eq!(
        got,
        [
            "saga/01/action/01/compensate",
            "saga/01/compensate/01/compensate"
        ]
    );
}

async fn hanging_tcc_try(db: Db) {
    let (a, b) = accounts(db, 100, 0).await;
    let dtm = dtm();
    let gid = gid("bb-hanging");
    let r = req(30, a, b);
    // Register a branch but let its try "hang" until DTM timed out and cancelled.
    let mut body = dtmcli::TransRequest::new(
        &gid,
        TransType::Tcc,
        &TransOptions::default()
            .timeout_to_fail(Duration::from_secs(1))
            .retry_interval(Duration::from_secs(1)),
    );
    body.set_protocol("");
    dtm.prepare(&body).await.unwrap();
    let fields = [
        ("gid", gid.as_str()),
        ("trans_type", "tcc"),
        ("branch_id", "01"),
        ("data", &serde_json::to_string(&r).unwrap()),
        ("confirm", &bank_url(db, "TransOutConfirm")),
        ("cancel", &bank_url(db, "TransOutCancel")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    dtm.register_branch(&fields).await.unwrap();
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(executed(&gid, "TransOutCancel"), 0, "null compensation");
    // The late try: success, and nothing changes.
    let try_info = TransInfo::new(&gid, TransType::Tcc, "01", Op::Try);
    assert_eq!(call(db, "TransOutTry", &try_info, &r).await, 200);
    assert_eq!(executed(&gid, "TransOutTry"), 0);
    assert_eq!(balance(db, a).await, 100);
    let mut got = rows(db, &gid).await;
    got.sort();
    assert_eq!(got, ["tcc/01/cancel/01/cancel", "tcc/01/try/01/cancel"]);
}

async fn duplicates_apply_once(db: Db) {
    let (a, b) = accounts(db, 100, 0).await;
    let gid = gid("bb-dup");
    let r = req(10, a, b);
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    for _ in 0..3 {
        assert_eq!(call(db, "TransIn", &info, &r).await, 200);
    }
    assert_eq!(balance(db, b).await, 10);
    assert_eq!(executed(&gid, "TransIn"), 1);

    // 20 concurrent identical requests: one effect, all succeed.
    let gid2 = support::gid("bb-dup-conc");
    let info2 = TransInfo::new(&gid2, TransType::Saga, "01", Op::Action);
    let calls = (0..20).map(|_| {
        let (info2, r) = (info2.clone(), r.clone());
        tokio::spawn(async move { call(db, "TransIn", &info2, &r).await })
    });
    for c in futures_util::future::join_all(calls).await {
        assert_eq!(c.unwrap(), 200);
    }
    assert_eq!(balance(db, b).await, 20);
    assert_eq!(rows(db, &gid2).await, ["saga/01/action/01/action"]);
}

async fn business_error_rolls_back_writes_and_rows(db: Db) {
    let (a, b) = accounts(db, 100, 0).await;
    let gid = gid("bb-busierr");
    let r = BankReq {
        trans_out_result: "FAILURE".into(),
        ..req(30, a, b)
    };
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    assert_eq!(call(db, "TransOut", &info, &r).await, 409);
    assert_eq!(executed(&gid, "TransOut"), 1, "the business ran");
    assert_eq!(balance(db, a).await, 100, "its write was rolled back");
    assert!(
        rows(db, &gid).await.is_empty(),
        "and so was the barrier row"
    );
    // Insufficient balance: FAILURE, nothing written.
    let info = TransInfo::new(gid.clone() + "x", TransType::Saga, "01", Op::Action);
    assert_eq!(call(db, "TransOut", &info, &req(1000, a, b)).await, 409);
    assert_eq!(balance(db, a).await, 100);
}

macro_rules! per_db {
    ($($name:ident),* $(,)?) => {
        mod mysql {
            $( #[tokio::test] async fn $name() { super::$name(super::Db::Mysql).await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name(super::Db::Postgres).await } )*
        }
    };
}

per_db!(
    saga_success,
    saga_rollback,
    same_barrier_twice,
    null_compensation_then_late_action,
    hanging_tcc_try,
    duplicates_apply_once,
    business_error_rolls_back_writes_and_rows,
);

#[test]
fn barrier_from_bad_query_is_an_error() {
    assert!(BranchBarrier::from_query("gid=x&op=action").is_err());
}
