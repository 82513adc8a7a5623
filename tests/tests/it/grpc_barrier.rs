//! Barrier-guarded gRPC branches (the gRPC bank, barriers built from metadata) on MariaDB
//! and PostgreSQL, driven by the real DTM server or called as DTM would.

use crate::support;

use crate::support::*;
use dtm_examples::bank::Db;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtmcli::{Error, Op, TransInfo, TransOptions, TransType};
use std::collections::BTreeMap;

fn req(amount: i64, from: i64, to: i64) -> ReqGrpc {
    ReqGrpc::transfer(amount, from, to, false)
}

/// A fresh gid of `prefix`, and two accounts on `db`'s gRPC bank: `a` holding `balance`, `b`
/// nothing.
async fn fixture(db: Db, balance: i64, prefix: &str) -> (String, i64, i64) {
    let (a, b) = gbank_accounts(db, balance, 0).await;
    (gid(prefix), a, b)
}

/// The balances of `a` and `b` on `db`'s gRPC bank.
async fn balances(db: Db, a: i64, b: i64) -> (i64, i64) {
    (gbank_balance(db, a).await, gbank_balance(db, b).await)
}

/// Calls `handler` of `db`'s gRPC bank as DTM would, with `info`: it answers success, and
/// the barrier keeps its business from running (`why`).
async fn skipped_call(db: Db, handler: &str, info: &TransInfo, r: &ReqGrpc, why: &str) {
    grpc_call(&grpc_bank_url(db, handler), info, r)
        .await
        .unwrap();
    assert_eq!(gbank_executed(&info.gid, handler), 0, "{why}");
}

fn saga(gid: &str, db: Db, r: &ReqGrpc) -> dtmgrpc::Saga {
    grpc_dtm()
        .saga(gid)
        .add(
            &grpc_bank_url(db, "TransOut"),
            &grpc_bank_url(db, "TransOutCompensate"),
            r,
        )
        .add(
            &grpc_bank_url(db, "TransIn"),
            &grpc_bank_url(db, "TransInCompensate"),
            r,
        )
}

async fn saga_success(db: Db) {
    let (gid, a, b) = fixture(db, 100, "gbb-saga-ok").await;
    saga(&gid, db, &req(30, a, b)).submit().await.unwrap();
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(balances(db, a, b).await, (70, 30));
    assert_eq!(gbank_executed(&gid, "TransOut"), 1);
    assert_eq!(gbank_executed(&gid, "TransIn"), 1);
    // Exactly the rows the Go SDK writes.
    assert_eq!(
        gbank_rows(db, &gid).await,
        ["saga/01/action/01/action", "saga/02/action/01/action"]
    );
}

async fn saga_rollback(db: Db) {
    let (gid, a, b) = fixture(db, 100, "gbb-saga-rb").await;
    let r = ReqGrpc::transfer(30, a, b, true);
    saga(&gid, db, &r).submit().await.unwrap();
    wait_status(&dtm(), &gid, "failed").await;
    // TransIn's write was rolled back with its barrier row: its compensation is a null
    // compensation; TransOut's compensation undoes exactly its action.
    assert_eq!(balances(db, a, b).await, (100, 0));
    assert_eq!(gbank_executed(&gid, "TransIn"), 1);
    assert_eq!(gbank_executed(&gid, "TransInCompensate"), 0);
    assert_eq!(gbank_executed(&gid, "TransOutCompensate"), 1);
    assert_eq!(
        gbank_rows(db, &gid).await,
        [
            "saga/01/action/01/action",
            "saga/01/compensate/01/compensate",
            "saga/02/action/01/compensate",
            "saga/02/compensate/01/compensate",
        ]
    );
}

async fn insufficient_balance_fails_the_saga(db: Db) {
    let (gid, a, b) = fixture(db, 10, "gbb-saga-poor").await;
    let err = saga(&gid, db, &req(30, a, b))
        .with_options(TransOptions::default().wait_result(true))
        .submit()
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    assert!(err.to_string().contains("insufficient balance"), "{err}");
    assert_eq!(balances(db, a, b).await, (10, 0));
    assert_eq!(gbank_executed(&gid, "TransIn"), 0);
}

async fn null_compensation_then_late_action(db: Db) {
    let (gid, a, b) = fixture(db, 100, "gbb-nullcomp").await;
    let r = req(30, a, b);
    let comp = TransInfo::new(&gid, TransType::Saga, "01", Op::Compensate);
    skipped_call(db, "TransOutCompensate", &comp, &r, "business must not run").await;
    let action = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    skipped_call(db, "TransOut", &action, &r, "late action must be a no-op").await;
    assert_eq!(gbank_balance(db, a).await, 100);
    assert_eq!(
        gbank_rows(db, &gid).await,
        [
            "saga/01/action/01/compensate",
            "saga/01/compensate/01/compensate"
        ]
    );
}

async fn hanging_tcc_try(db: Db) {
    let (gid, a, b) = fixture(db, 100, "gbb-hanging").await;
    let dtm = grpc_dtm();
    let r = req(30, a, b);
    // Register a branch over gRPC, but let its try "hang" until DTM timed out and cancelled.
    let mut body = dtmgrpc::pb::dtmgimp::DtmRequest {
        gid: gid.clone(),
        trans_type: "tcc".into(),
        steps: "null".into(),
        ..Default::default()
    };
    body.trans_options = Some(dtmgrpc::pb::dtmgimp::DtmTransOptions {
        timeout_to_fail: 1,
        retry_interval: 1,
        ..Default::default()
    });
    dtm.prepare(&body).await.unwrap();
    dtm.register_branch(&dtmgrpc::pb::dtmgimp::DtmBranchRequest {
        gid: gid.clone(),
        trans_type: "tcc".into(),
        branch_id: "01".into(),
        data: BTreeMap::from([
            ("confirm".to_string(), grpc_bank_url(db, "TransOutConfirm")),
            ("cancel".to_string(), grpc_bank_url(db, "TransOutCancel")),
        ]),
        busi_payload: prost::Message::encode_to_vec(&r).into(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_status(&support::dtm(), &gid, "failed").await;
    assert_eq!(
        gbank_executed(&gid, "TransOutCancel"),
        0,
        "null compensation"
    );
    // The late try: success, and nothing changes.
    let try_info = TransInfo::new(&gid, TransType::Tcc, "01", Op::Try);
    skipped_call(db, "TransOutTry", &try_info, &r, "late try must be a no-op").await;
    assert_eq!(gbank_balance(db, a).await, 100);
    assert_eq!(
        gbank_rows(db, &gid).await,
        ["tcc/01/cancel/01/cancel", "tcc/01/try/01/cancel"]
    );
}

async fn duplicates_apply_once(db: Db) {
    let (gid, a, b) = fixture(db, 100, "gbb-dup").await;
    let r = req(10, a, b);
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    for _ in 0..3 {
        grpc_call(&grpc_bank_url(db, "TransIn"), &info, &r)
            .await
            .unwrap();
    }
    assert_eq!(gbank_balance(db, b).await, 10);
    assert_eq!(gbank_executed(&gid, "TransIn"), 1);

    // 20 concurrent identical requests: one effect, all succeed (or are retryable).
    let gid2 = support::gid("gbb-dup-conc");
    let info2 = TransInfo::new(&gid2, TransType::Saga, "01", Op::Action);
    let calls = (0..20).map(|_| {
        let (info2, r) = (info2.clone(), r.clone());
        tokio::spawn(async move { grpc_call(&grpc_bank_url(db, "TransIn"), &info2, &r).await })
    });
    for c in futures_util::future::join_all(calls).await {
        // A loser of the unique-key race may see a deadlock / retryable error, never a
        // failure: DTM would just call again.
        if let Err(e) = c.unwrap() {
            assert!(!e.is_failure() && !e.is_ongoing(), "{e}");
        }
    }
    assert_eq!(gbank_balance(db, b).await, 20);
    assert_eq!(gbank_executed(&gid2, "TransIn"), 1);
}

async fn tcc_rollback(db: Db) {
    let (gid, a, b) = fixture(db, 100, "gbb-tcc-rb").await;
    let r = ReqGrpc::transfer(30, a, b, true);
    let err = grpc_dtm()
        .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
            for side in ["TransOut", "TransIn"] {
                let [try_, confirm, cancel] = ["Try", "Confirm", "Cancel"]
                    .map(|op| grpc_bank_url(db, &format!("{side}{op}")));
                let _: () = tcc.call_branch(&r, &try_, &confirm, &cancel).await?;
            }
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    wait_status(&dtm(), &gid, "failed").await;
    assert_eq!(balances(db, a, b).await, (100, 0));
    assert_eq!(gbank_executed(&gid, "TransOutCancel"), 1);
    assert_eq!(
        gbank_executed(&gid, "TransInCancel"),
        0,
        "its try rolled back"
    );
}

#[tokio::test]
async fn mariadb_saga_success() {
    saga_success(Db::Mysql).await;
}
#[tokio::test]
async fn postgres_saga_success() {
    saga_success(Db::Postgres).await;
}
#[tokio::test]
async fn mariadb_saga_rollback() {
    saga_rollback(Db::Mysql).await;
}
#[tokio::test]
async fn postgres_saga_rollback() {
    saga_rollback(Db::Postgres).await;
}
#[tokio::test]
async fn mariadb_insufficient_balance() {
    insufficient_balance_fails_the_saga(Db::Mysql).await;
}
#[tokio::test]
async fn postgres_insufficient_balance() {
    insufficient_balance_fails_the_saga(Db::Postgres).await;
}
#[tokio::test]
async fn mariadb_null_compensation() {
    null_compensation_then_late_action(Db::Mysql).await;
}
#[tokio::test]
async fn postgres_null_compensation() {
    null_compensation_then_late_action(Db::Postgres).await;
}
#[tokio::test]
async fn mariadb_hanging_try() {
    hanging_tcc_try(Db::Mysql).await;
}
#[tokio::test]
async fn postgres_hanging_try() {
    hanging_tcc_try(Db::Postgres).await;
}
#[tokio::test]
async fn mariadb_duplicates() {
    duplicates_apply_once(Db::Mysql).await;
}
#[tokio::test]
async fn postgres_duplicates() {
    duplicates_apply_once(Db::Postgres).await;
}
#[tokio::test]
async fn mariadb_tcc_rollback() {
    tcc_rollback(Db::Mysql).await;
}
#[tokio::test]
async fn postgres_tcc_rollback() {
    tcc_rollback(Db::Postgres).await;
}

#[tokio::test]
async fn malformed_metadata_is_refused_without_touching_the_database() {
    use dtm_examples::grpc_busi::pb::bank_mysql_client::BankMysqlClient;
    let (a, b) = gbank_accounts(Db::Mysql, 100, 0).await;
    let mut client = BankMysqlClient::connect(format!("http://{}", grpc_bank_env().base))
        .await
        .unwrap();
    // No metadata at all.
    let status = client.trans_in(req(5, a, b)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("dtm-gid"), "{}", status.message());
    // An unknown transaction type.
    let r = grpc_request(
        req(5, a, b),
        &[
            ("dtm-gid", "g"),
            ("dtm-trans_type", "nonsense"),
            ("dtm-branch_id", "01"),
            ("dtm-op", "action"),
        ],
    );
    let status = client.trans_in(r).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("nonsense"),
        "{}",
        status.message()
    );
    // DTM would retry such an answer, never roll back on it.
    let e = dtmgrpc::status_to_error("t", &status);
    assert!(matches!(e, Error::Grpc { code: 3, .. }), "{e}");
    assert_eq!(gbank_balance(Db::Mysql, b).await, 0);
}

// ---------------------------------------------------------------- one conversion

/// A business rule written against dtmcli, as HTTP and gRPC handlers share it.
fn settled(amount: i64, balance_after: i64) -> dtmcli::Result<()> {
    if amount == 0 {
        return Err(Error::ongoing("the amount is not known yet"));
    }
    if balance_after < 0 {
        return Err(Error::failure("insufficient balance"));
    }
    Ok(())
}

/// A tonic handler written with the one conversion: `?` on sqlx and dtmcli errors inside the
/// barrier closure, `.into_status()` on what the barrier returns. `column` lets a test break
/// the SQL.
async fn debit(
    pool: sqlx::MySqlPool,
    info: TransInfo,
    user: i64,
    amount: i64,
    column: &'static str,
) -> Result<(), tonic::Status> {
    use dtmgrpc::IntoStatus;
    let bb = dtm_barrier::BranchBarrier::new(info);
    bb.call(&pool, move |conn| {
        Box::pin(async move {
            sqlx::query(&format!(
                "update dtm_busi.user_account set {column} = {column} - ? where user_id = ?"
            ))
            .bind(amount)
            .bind(user)
            .execute(&mut *conn)
            .await?;
            let after: i64 =
                sqlx::query_scalar("select balance from dtm_busi.user_account where user_id = ?")
                    .bind(user)
                    .fetch_one(&mut *conn)
                    .await?;
            settled(amount, after)?;
            Ok(())
        })
    })
    .await
    .into_status()?;
    Ok(())
}

#[tokio::test]
async fn a_tonic_handler_needs_one_conversion() {
    let (a, _) = gbank_accounts(Db::Mysql, 10, 0).await;
    let pool = grpc_bank_env().bank.bank().mysql().clone();
    let call = |gid: &str, amount: i64, column: &'static str| {
        let (pool, info) = (
            pool.clone(),
            TransInfo::new(gid, TransType::Saga, "01", Op::Action),
        );
        on_env(debit(pool, info, a, amount, column))
    };

    // A dtmcli failure inside the closure: the debit is rolled back with the barrier row,
    // and the handler answers Aborted, which DTM reads as FAILURE.
    let poor = gid("gbb-one-poor");
    let status = call(&poor, 30, "balance").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert_eq!(status.message(), "insufficient balance");
    assert!(dtmgrpc::status_to_error("t", &status).is_failure());
    assert_eq!(gbank_balance(Db::Mysql, a).await, 10);
    assert!(gbank_rows(Db::Mysql, &poor).await.is_empty());

    // Ongoing: FailedPrecondition, nothing written either.
    let later = gid("gbb-one-later");
    let status = call(&later, 0, "balance").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(dtmgrpc::status_to_error("t", &status).is_ongoing());
    assert!(gbank_rows(Db::Mysql, &later).await.is_empty());

    // A sqlx error: retryable (Unknown), never a failure.
    let broken = gid("gbb-one-sql");
    let status = call(&broken, 5, "no_such_column").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unknown);
    assert!(
        status.message().contains("no_such_column"),
        "{}",
        status.message()
    );
    assert_eq!(
        dtmgrpc::status_to_error("t", &status).kind(),
        dtmcli::ErrorKind::Retryable
    );

    // Success: one debit, its barrier row; the duplicate is skipped.
    let ok = gid("gbb-one-ok");
    call(&ok, 4, "balance").await.unwrap();
    call(&ok, 4, "balance").await.unwrap();
    assert_eq!(gbank_balance(Db::Mysql, a).await, 6);
    assert_eq!(
        gbank_rows(Db::Mysql, &ok).await,
        ["saga/01/action/01/action"]
    );
}
