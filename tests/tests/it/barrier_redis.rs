//! The Redis branch barrier against a real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`) and the real DTM server: sagas through barrier-guarded
//! handlers, null compensation, hanging TCC tries, duplicates, the keys the Go SDK writes,
//! and the msg outbox with its back-check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::kv_barrier;
use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use dtm_barrier::redis::RedisStore;
use dtm_barrier::{msg_query_info, BranchBarrier, Outcome};
use dtmcli::{DtmClient, Op, TransInfo, TransOptions, TransRequest, TransType};
use kv_barrier::{outcomes, recs, Transfer};
use redis::aio::MultiplexedConnection;

/// Barrier key expiry used by the tests.
const EXPIRE: Duration = Duration::from_secs(3600);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A connection for the current test's runtime.
async fn conn() -> MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis (scripts/start-dbs.sh starts it)")
}

async fn set(c: &mut MultiplexedConnection, key: &str, v: i64) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(v)
        .query_async(c)
        .await
        .unwrap();
}

async fn get(c: &mut MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(c).await.unwrap()
}

async fn balance(c: &mut MultiplexedConnection, key: &str) -> Option<i64> {
    get(c, key).await.map(|v| v.parse().unwrap())
}

/// Every barrier key of `gid` (`<gid>-...`) with its value, sorted.
async fn barrier_keys(c: &mut MultiplexedConnection, gid: &str) -> Vec<(String, String)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{gid}-*"))
        .query_async(c)
        .await
        .unwrap();
    let mut out = Vec::new();
    for k in keys {
        let v = get(c, &k).await.unwrap_or_default();
        out.push((k, v));
    }
    out.sort();
    out
}

/// `(<gid>-<suffix>, value)` pairs, sorted, for comparing with [`barrier_keys`].
fn expect_keys(gid: &str, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (format!("{gid}-{k}"), v.to_string()))
        .collect();
    v.sort();
    v
}

async fn ttl(c: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query_async(c).await.unwrap()
}

/// The barrier store on `c`, with the tests' key expiry.
fn store(c: &MultiplexedConnection) -> RedisStore<MultiplexedConnection> {
    RedisStore::new(c.clone(), EXPIRE)
}

// ---------------------------------------------------------------------------------------
// The guarded business service (tests/kv_barrier): balances are Redis integers (the
// examples' `Balances` for `RedisStore`).

fn rurl(handler: &str) -> String {
    kv_barrier::url("/api/rbusi", || async { store(&conn().await) }, handler)
}

// ---------------------------------------------------------------------------------------

fn saga_transfer(dtm: &DtmClient, gid: &str, t: &Transfer) -> dtmcli::Saga {
    dtm.saga(gid)
        .add(&rurl("TransOut"), &rurl("TransOutRevert"), t)
        .add(&rurl("TransIn"), &rurl("TransInRevert"), t)
}

#[tokio::test]
async fn saga_success_moves_balances_once() {
    let dtm = dtm();
    let gid = gid("rb-saga-ok");
    let mut c = conn().await;
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 100).await;
    set(&mut c, &t.to, 0).await;
    saga_transfer(&dtm, &gid, &t).submit().await.unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(balance(&mut c, &t.from).await, Some(70));
    assert_eq!(balance(&mut c, &t.to).await, Some(30));
    assert_eq!(
        barrier_keys(&mut c, &gid).await,
        expect_keys(&gid, &[("01-action-01", "op"), ("02-action-01", "op")])
    );
    let left = ttl(&mut c, &format!("{gid}-01-action-01")).await;
    assert!(left > 0 && left <= EXPIRE.as_secs() as i64, "ttl {left}");
    assert_eq!(
        outcomes(&gid, "TransOut"),
        [Ok(vec![Outcome::Executed(())])]
    );

    // DTM repeating the action (a lost answer) changes nothing.
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let body = serde_json::to_string(&t).unwrap();
    dtm.call_branch(&rurl("TransOut"), &info, &BTreeMap::new(), Some(body))
        .await
        .unwrap();
    assert_eq!(balance(&mut c, &t.from).await, Some(70));
    assert_eq!(
        outcomes(&gid, "TransOut").last().unwrap(),
        &Ok(vec![Outcome::Duplicate])
    );
}

#[tokio::test]
async fn saga_rollback_compensates_exactly_what_ran() {
    let dtm = dtm();
    let gid = gid("rb-saga-rb");
    let mut c = conn().await;
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 10).await; // too little: TransOut fails
    set(&mut c, &t.to, 5).await;
    dtm.saga(&gid)
        .add(&rurl("TransIn"), &rurl("TransInRevert"), &t)
        .add(&rurl("TransOut"), &rurl("TransOutRevert"), &t)
        .submit()
        .await
        .unwrap();
    let q = wait_status(&dtm, &gid, "failed").await;
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("would make it negative"), "{reason}");
    assert_eq!(balance(&mut c, &t.from).await, Some(10));
    assert_eq!(balance(&mut c, &t.to).await, Some(5));
    // The failed TransOut wrote nothing; its compensation is a null compensation.
    let ops: Vec<(String, Op)> = recs(&gid).into_iter().map(|r| (r.handler, r.op)).collect();
    assert_eq!(
        ops,
        [
            ("TransIn".to_string(), Op::Action),
            ("TransOut".to_string(), Op::Action),
            ("TransOutRevert".to_string(), Op::Compensate),
            ("TransInRevert".to_string(), Op::Compensate),
        ]
    );
    assert!(outcomes(&gid, "TransOut")[0].is_err());
    assert_eq!(
        outcomes(&gid, "TransOutRevert"),
        [Ok(vec![Outcome::NullCompensation])]
    );
    assert_eq!(
        outcomes(&gid, "TransInRevert"),
        [Ok(vec![Outcome::Executed(())])]
    );
    assert_eq!(
        barrier_keys(&mut c, &gid).await,
        expect_keys(
            &gid,
            &[
                ("01-action-01", "op"),
                ("01-compensate-01", "op"),
                ("02-compensate-01", "op"),
                ("02-action-01", "rollback"),
            ]
        )
    );
}

#[tokio::test]
async fn same_barrier_guards_two_adjustments_with_ids_01_and_02() {
    let dtm = dtm();
    let mut c = conn().await;

    // Success: TransInTwice adds 15 + 15 under barrier ids 01 and 02.
    let gid = gid("rb-twice");
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 100).await;
    set(&mut c, &t.to, 0).await;
    dtm.saga(&gid)
        .add(&rurl("TransOut"), &rurl("TransOutRevert"), &t)
        .add(&rurl("TransInTwice"), &rurl("TransInTwiceRevert"), &t)
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(balance(&mut c, &t.from).await, Some(70));
    assert_eq!(balance(&mut c, &t.to).await, Some(30));
    assert_eq!(
        barrier_keys(&mut c, &gid).await,
        expect_keys(
            &gid,
            &[
                ("01-action-01", "op"),
                ("02-action-01", "op"),
                ("02-action-02", "op")
            ]
        )
    );

    // Rollback: both halves are compensated, each under its own barrier id.
    let gid = support::gid("rb-twice-rb");
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 0).await;
    set(&mut c, &t.to, 0).await;
    dtm.saga(&gid)
        .add(&rurl("TransInTwice"), &rurl("TransInTwiceRevert"), &t)
        .add(&rurl("TransOut"), &rurl("TransOutRevert"), &t)
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(balance(&mut c, &t.to).await, Some(0));
    assert_eq!(balance(&mut c, &t.from).await, Some(0));
    assert_eq!(
        outcomes(&gid, "TransInTwiceRevert"),
        [Ok(vec![Outcome::Executed(()), Outcome::Executed(())])]
    );
    assert_eq!(
        barrier_keys(&mut c, &gid).await,
        expect_keys(
            &gid,
            &[
                ("01-action-01", "op"),
                ("01-action-02", "op"),
                ("01-compensate-01", "op"),
                ("01-compensate-02", "op"),
                ("02-compensate-01", "op"),
                ("02-action-01", "rollback"),
            ]
        )
    );
}

#[tokio::test]
async fn null_compensation_then_the_late_action_is_a_no_op() {
    let mut c = conn().await;
    for (tt, undo, origin) in [
        (TransType::Saga, Op::Compensate, Op::Action),
        (TransType::Tcc, Op::Cancel, Op::Try),
        // Workflow rollback: origin action (the Go Redis barrier has no such mapping).
        (TransType::Workflow, Op::Rollback, Op::Action),
    ] {
        let gid = gid("rb-null");
        let acct = format!("acct-{gid}");
        set(&mut c, &acct, 50).await;
        let undo_bb = || BranchBarrier::new(TransInfo::new(&gid, tt, "01", undo.clone()));
        let out = undo_bb()
            .check_adjust_amount(&store(&c), &acct, 20)
            .await
            .unwrap();
        assert_eq!(out, Outcome::NullCompensation, "{undo}");
        assert_eq!(balance(&mut c, &acct).await, Some(50), "{undo}");
        assert_eq!(
            barrier_keys(&mut c, &gid).await,
            expect_keys(
                &gid,
                &[
                    (&format!("01-{undo}-01"), "op"),
                    (&format!("01-{origin}-01"), "rollback")
                ]
            )
        );
        // The hanging action finds its key: no effect, success.
        let out = BranchBarrier::new(TransInfo::new(&gid, tt, "01", origin.clone()))
            .check_adjust_amount(&store(&c), &acct, -20)
            .await
            .unwrap();
        assert_eq!(out, Outcome::Duplicate, "{origin}");
        // A repeated compensation too.
        let out = undo_bb()
            .check_adjust_amount(&store(&c), &acct, 20)
            .await
            .unwrap();
        assert_eq!(out, Outcome::Duplicate, "{undo}");
        assert_eq!(balance(&mut c, &acct).await, Some(50), "{undo}");
        assert_eq!(barrier_keys(&mut c, &gid).await.len(), 2);
    }
}

#[tokio::test]
async fn hanging_tcc_try_after_timeout_cancel_changes_nothing() {
    let dtm = dtm();
    let gid = gid("rb-hanging");
    let mut c = conn().await;
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 100).await;
    let opts = TransOptions::default()
        .timeout_to_fail(Duration::from_secs(1))
        .retry_interval(Duration::from_secs(1));
    dtm.prepare(&TransRequest::new(&gid, TransType::Tcc, &opts))
        .await
        .unwrap();
    let data = serde_json::to_string(&t).unwrap();
    let fields = [
        ("gid", gid.as_str()),
        ("trans_type", "tcc"),
        ("branch_id", "01"),
        ("data", data.as_str()),
        ("confirm", rurl("TransOutConfirm").as_str()),
        ("cancel", rurl("TransOutCancel").as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    dtm.register_branch(&fields).await.unwrap();
    // The try is "in flight" while DTM times the transaction out and cancels.
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(
        outcomes(&gid, "TransOutCancel"),
        [Ok(vec![Outcome::NullCompensation])]
    );
    // Now the try arrives.
    let mut info = TransInfo::new(&gid, TransType::Tcc, "01", Op::Try);
    info.dtm = Some(dtm.server().to_string());
    let r = dtm
        .call_branch(&rurl("TransOutTry"), &info, &BTreeMap::new(), Some(data))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        outcomes(&gid, "TransOutTry"),
        [Ok(vec![Outcome::Duplicate])]
    );
    assert_eq!(balance(&mut c, &t.from).await, Some(100));
    assert_eq!(
        barrier_keys(&mut c, &gid).await,
        expect_keys(&gid, &[("01-cancel-01", "op"), ("01-try-01", "rollback")])
    );
}

#[tokio::test]
async fn duplicates_have_one_effect() {
    let mut c = conn().await;
    let gid = gid("rb-dup");
    let acct = format!("acct-{gid}");
    set(&mut c, &acct, 100).await;
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(
            BranchBarrier::new(info.clone())
                .check_adjust_amount(&store(&c), &acct, -10)
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        seen,
        [
            Outcome::Executed(()),
            Outcome::Duplicate,
            Outcome::Duplicate
        ]
    );
    assert_eq!(balance(&mut c, &acct).await, Some(90));

    // 20 identical requests at once: all succeed, one adjusts.
    let gid = support::gid("rb-dup-conc");
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let redis = store(&c);
            let info = info.clone();
            let acct = acct.clone();
            tokio::spawn(async move {
                BranchBarrier::new(info)
                    .check_adjust_amount(&redis, &acct, -10)
                    .await
            })
        })
        .collect();
    let mut executed = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Outcome::Executed(()) => executed += 1,
            Outcome::Duplicate => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(executed, 1);
    assert_eq!(balance(&mut c, &acct).await, Some(80));
}

#[tokio::test]
async fn insufficient_balance_or_missing_key_fails_and_writes_nothing() {
    let mut c = conn().await;
    let gid = gid("rb-insufficient");
    let acct = format!("acct-{gid}");
    set(&mut c, &acct, 10).await;
    let bb = BranchBarrier::new(TransInfo::new(&gid, TransType::Saga, "01", Op::Action));
    let e = bb
        .check_adjust_amount(&store(&c), &acct, -30)
        .await
        .unwrap_err();
    assert!(e.is_failure(), "{e}");
    assert!(dtmcli::Error::from(e).is_failure());
    assert_eq!(balance(&mut c, &acct).await, Some(10));

    let missing = format!("acct-{gid}-missing");
    let e = bb
        .check_adjust_amount(&store(&c), &missing, 5)
        .await
        .unwrap_err();
    assert!(e.is_failure(), "{e}");
    assert_eq!(get(&mut c, &missing).await, None);
    assert!(barrier_keys(&mut c, &gid).await.is_empty());

    // A value that is not an integer is a Redis (retryable) error, not a failure.
    let _: () = redis::cmd("SET")
        .arg(&acct)
        .arg("ten")
        .query_async(&mut c)
        .await
        .unwrap();
    let e = bb
        .check_adjust_amount(&store(&c), &acct, -1)
        .await
        .unwrap_err();
    assert!(matches!(e, dtm_barrier::Error::Redis(_)), "{e}");
    assert!(!e.is_failure());
    // Zero expiry is refused before anything is sent.
    let e = bb
        .check_adjust_amount(&RedisStore::new(c.clone(), Duration::ZERO), &acct, -1)
        .await
        .unwrap_err();
    assert!(matches!(e, dtm_barrier::Error::Config(_)), "{e}");
}

/// The Go SDK's script and key scheme, verbatim, to compare what both write.
const GO_CHECK_ADJUST_AMOUNT: &str = r" -- RedisCheckAdjustAmount
local v = redis.call('GET', KEYS[1])
local e1 = redis.call('GET', KEYS[2])

if v == false or v + ARGV[1] < 0 then
	return 'FAILURE'
end

if e1 ~= false then
	return 'DUPLICATE'
end

redis.call('SET', KEYS[2], 'op', 'EX', ARGV[3])

if ARGV[2] ~= '' then
	local e2 = redis.call('GET', KEYS[3])
	if e2 == false then
		redis.call('SET', KEYS[3], 'rollback', 'EX', ARGV[3])
		return
	end
end
redis.call('INCRBY', KEYS[1], ARGV[1])
";

const GO_QUERY_PREPARED: &str = r"-- RedisQueryPrepared
local v = redis.call('GET', KEYS[1])
if v == false then
	redis.call('SET', KEYS[1], 'rollback', 'EX', ARGV[1])
	v = 'rollback'
end
if v == 'rollback' then
	return 'FAILURE'
end
";

/// What the Go SDK's `RedisCheckAdjustAmount` does (fresh barrier: id 01).
async fn go_adjust(
    c: &mut MultiplexedConnection,
    info: &TransInfo,
    key: &str,
    amount: i64,
) -> Option<String> {
    let origin = match info.op {
        Op::Cancel => "try",
        Op::Compensate => "action",
        _ => "",
    };
    let k = |op: &str| format!("{}-{}-{op}-01", info.gid, info.branch_id);
    redis::Script::new(GO_CHECK_ADJUST_AMOUNT)
        .key(key)
        .key(k(info.op.as_str()))
        .key(k(origin))
        .arg(amount)
        .arg(origin)
        .arg(EXPIRE.as_secs())
        .invoke_async(c)
        .await
        .unwrap()
}

#[tokio::test]
async fn keys_and_values_are_those_of_the_go_sdk() {
    let mut c = conn().await;
    let go_gid = gid("rb-go");
    let rs_gid = gid("rb-rs");
    // (trans_type, branch, op, amount) applied in order on both sides.
    let steps = [
        (TransType::Saga, "01", Op::Action, -10),
        (TransType::Saga, "01", Op::Action, -10),
        (TransType::Saga, "01", Op::Compensate, 10),
        (TransType::Saga, "02", Op::Compensate, 7),
        (TransType::Saga, "02", Op::Action, -7),
        (TransType::Tcc, "03", Op::Cancel, 3),
        (TransType::Tcc, "04", Op::Try, -4),
        (TransType::Tcc, "04", Op::Confirm, 0),
        (TransType::Saga, "05", Op::Action, -1000),
        (TransType::Msg, "00", Op::Msg, -5),
    ];
    for (gid, go) in [(&go_gid, true), (&rs_gid, false)] {
        let acct = format!("acct-{gid}");
        set(&mut c, &acct, 100).await;
        for (tt, branch, op, amount) in &steps {
            let info = TransInfo::new(gid.as_str(), *tt, *branch, op.clone());
            if go {
                go_adjust(&mut c, &info, &acct, *amount).await;
            } else {
                let _ = BranchBarrier::new(info)
                    .check_adjust_amount(&store(&c), &acct, *amount)
                    .await;
            }
        }
        let qp = format!("{gid}-unprepared");
        if go {
            let r: Option<String> = redis::Script::new(GO_QUERY_PREPARED)
                .key(format!("{qp}-00-msg-01"))
                .arg(EXPIRE.as_secs())
                .invoke_async(&mut c)
                .await
                .unwrap();
            assert_eq!(r.as_deref(), Some("FAILURE"));
        } else {
            let e = BranchBarrier::new(msg_query_info(&qp))
                .query_prepared(&store(&c))
                .await
                .unwrap_err();
            assert!(e.is_failure());
        }
    }
    let normalize = |gid: &str, v: Vec<(String, String)>| -> Vec<(String, String)> {
        v.into_iter()
            .map(|(k, val)| (k.replacen(gid, "G", 1), val))
            .collect()
    };
    let go_keys = normalize(&go_gid, barrier_keys(&mut c, &go_gid).await);
    let rs_keys = normalize(&rs_gid, barrier_keys(&mut c, &rs_gid).await);
    assert_eq!(rs_keys, go_keys);
    assert_eq!(
        go_keys
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>(),
        [
            "G-00-msg-01=op",
            "G-01-action-01=op",
            "G-01-compensate-01=op",
            "G-02-action-01=rollback",
            "G-02-compensate-01=op",
            "G-03-cancel-01=op",
            "G-03-try-01=rollback",
            "G-04-confirm-01=op",
            "G-04-try-01=op",
            "G-unprepared-00-msg-01=rollback",
        ]
    );
    assert_eq!(
        balance(&mut c, &format!("acct-{rs_gid}")).await,
        balance(&mut c, &format!("acct-{go_gid}")).await
    );
    assert_eq!(balance(&mut c, &format!("acct-{rs_gid}")).await, Some(91));
    for (k, _) in barrier_keys(&mut c, &rs_gid).await {
        let left = ttl(&mut c, &k).await;
        assert!(left > 0 && left <= EXPIRE.as_secs() as i64, "{k}: {left}");
    }
}

// ---------------------------------------------------------------------------------------
// msg outbox

/// Options that make DTM back-check a prepared message after about one second.
fn fast() -> TransOptions {
    TransOptions::default()
        .timeout_to_fail(Duration::from_secs(1))
        .retry_interval(Duration::from_secs(1))
}

/// The outbox with the Redis barrier: the local transaction adds `delta` to `from`.
async fn do_and_submit(
    msg: &dtmcli::Msg,
    c: &MultiplexedConnection,
    from: &str,
    delta: i64,
) -> dtm_barrier::Result<()> {
    let from = from.to_string();
    dtm_barrier::do_and_submit(msg, &rurl("QueryPrepared"), &store(c), move |g| {
        Box::pin(async move { g.check_adjust_amount(&from, delta).await.map(drop) })
    })
    .await
}

#[tokio::test]
async fn msg_do_and_submit_success() {
    let dtm = dtm();
    let gid = gid("rb-msg-ok");
    let mut c = conn().await;
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 100).await;
    set(&mut c, &t.to, 0).await;
    let msg = dtm.msg(&gid).add(&rurl("TransIn"), &t);
    do_and_submit(&msg, &c, &t.from, -30).await.unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(balance(&mut c, &t.from).await, Some(70));
    assert_eq!(balance(&mut c, &t.to).await, Some(30));
    assert_eq!(
        barrier_keys(&mut c, &gid).await,
        expect_keys(&gid, &[("00-msg-01", "op"), ("01-action-01", "op")])
    );
    // The back-check answers "committed".
    dtm.call_branch(
        &rurl("QueryPrepared"),
        &msg_query_info(&gid),
        &BTreeMap::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(outcomes(&gid, "QueryPrepared"), [Ok(vec![])]);
}

#[tokio::test]
async fn msg_local_failure_aborts() {
    let dtm = dtm();
    let gid = gid("rb-msg-fail");
    let mut c = conn().await;
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 10).await;
    set(&mut c, &t.to, 0).await;
    let msg = dtm.msg(&gid).add(&rurl("TransIn"), &t);
    let e = do_and_submit(&msg, &c, &t.from, -30).await.unwrap_err();
    assert!(e.is_failure(), "{e}");
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(balance(&mut c, &t.from).await, Some(10));
    assert_eq!(balance(&mut c, &t.to).await, Some(0));
    assert!(barrier_keys(&mut c, &gid).await.is_empty());
    assert!(recs(&gid).is_empty(), "{:?}", recs(&gid));
}

#[tokio::test]
async fn msg_back_check_first_makes_the_local_transaction_duplicated() {
    let dtm = dtm();
    let gid = gid("rb-msg-dup");
    let mut c = conn().await;
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 100).await;
    set(&mut c, &t.to, 0).await;
    // DTM's back-check ran before the local transaction: the gid is marked rolled back.
    let e = BranchBarrier::new(msg_query_info(&gid))
        .query_prepared(&store(&c))
        .await
        .unwrap_err();
    assert!(e.is_failure(), "{e}");
    let msg = dtm.msg(&gid).add(&rurl("TransIn"), &t);
    let e = do_and_submit(&msg, &c, &t.from, -30).await.unwrap_err();
    assert!(e.is_duplicated(), "{e}");
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(balance(&mut c, &t.from).await, Some(100));
    assert_eq!(balance(&mut c, &t.to).await, Some(0));
    assert_eq!(
        barrier_keys(&mut c, &gid).await,
        expect_keys(&gid, &[("00-msg-01", "rollback")])
    );
    // The SDK back-checked itself after the Duplicated local transaction.
    let qp = outcomes(&gid, "QueryPrepared");
    assert_eq!(qp.len(), 1);
    assert!(qp[0].as_ref().unwrap_err().contains("FAILURE"), "{qp:?}");
}

#[tokio::test]
async fn msg_query_prepared_answers_dtm_back_checks() {
    let dtm = dtm();
    let mut c = conn().await;

    // The local transaction committed, then the process "crashed" before submit: DTM's
    // back-check finds the key and delivers the message.
    let gid = gid("rb-msg-bc-ok");
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 100).await;
    set(&mut c, &t.to, 0).await;
    let msg = dtm.msg(&gid).add(&rurl("TransIn"), &t).with_options(fast());
    msg.prepare(&rurl("QueryPrepared")).await.unwrap();
    let out = BranchBarrier::new(msg.local_info())
        .check_adjust_amount(&store(&c), &t.from, -30)
        .await
        .unwrap();
    assert_eq!(out, Outcome::Executed(()));
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(outcomes(&gid, "QueryPrepared")[0], Ok(vec![]));
    assert_eq!(balance(&mut c, &t.from).await, Some(70));
    assert_eq!(balance(&mut c, &t.to).await, Some(30));

    // Prepared, and the local transaction never ran: the back-check fails the message and
    // blocks a late local transaction.
    let gid = support::gid("rb-msg-bc-fail");
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 100).await;
    let msg = dtm.msg(&gid).add(&rurl("TransIn"), &t).with_options(fast());
    msg.prepare(&rurl("QueryPrepared")).await.unwrap();
    wait_status(&dtm, &gid, "failed").await;
    assert!(outcomes(&gid, "QueryPrepared")[0].is_err());
    assert_eq!(
        get(&mut c, &format!("{gid}-00-msg-01")).await.as_deref(),
        Some("rollback")
    );
    let e = BranchBarrier::new(msg.local_info())
        .check_adjust_amount(&store(&c), &t.from, -30)
        .await
        .unwrap_err();
    assert!(e.is_duplicated(), "{e}");
    assert_eq!(balance(&mut c, &t.from).await, Some(100));
    assert!(outcomes(&gid, "TransIn").is_empty());
}

/// On Redis the outbox's local transaction is its one guarded adjustment. A business that
/// makes none is refused (the back-check then fails the message, nothing adjusted); a
/// second adjustment is refused, and the first, committed, still delivers the message.
#[tokio::test]
async fn msg_outbox_is_one_guarded_adjustment() {
    let dtm = dtm();
    let mut c = conn().await;

    let gid = gid("rb-msg-none");
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 100).await;
    let msg = dtm.msg(&gid).add(&rurl("TransIn"), &t);
    let e = dtm_barrier::do_and_submit(&msg, &rurl("QueryPrepared"), &store(&c), |_g| {
        Box::pin(async { Ok(()) })
    })
    .await
    .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(balance(&mut c, &t.from).await, Some(100));
    assert_eq!(
        barrier_keys(&mut c, &gid).await,
        expect_keys(&gid, &[("00-msg-01", "rollback")])
    );

    let gid = support::gid("rb-msg-twice");
    let t = Transfer::new(&gid, 30);
    set(&mut c, &t.from, 100).await;
    set(&mut c, &t.to, 0).await;
    let msg = dtm.msg(&gid).add(&rurl("TransIn"), &t);
    let from = t.from.clone();
    let e = dtm_barrier::do_and_submit(&msg, &rurl("QueryPrepared"), &store(&c), move |g| {
        Box::pin(async move {
            g.check_adjust_amount(&from, -30).await?;
            g.check_adjust_amount(&from, -30).await?;
            Ok(())
        })
    })
    .await
    .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(balance(&mut c, &t.from).await, Some(70));
    assert_eq!(balance(&mut c, &t.to).await, Some(30));
    assert_eq!(
        barrier_keys(&mut c, &gid).await,
        expect_keys(&gid, &[("00-msg-01", "op"), ("01-action-01", "op")])
    );
}

/// A credit that never ran, compensated while the account holds less than its amount:
/// the barrier answers null compensation (the Go SDK's script checks the balance first and
/// answers FAILURE, which DTM retries for ever, so the transaction never ends). A repeated
/// undo whose action did run is a duplicate whatever the balance is now.
#[tokio::test]
async fn barrier_decides_before_the_balance() {
    let mut c = conn().await;
    let g = gid("rb-null-credit");
    let acct = format!("acct-{g}");
    set(&mut c, &acct, 0).await;
    let undo = TransInfo::new(g.as_str(), TransType::Saga, "02", Op::Compensate);
    let out = BranchBarrier::new(undo.clone())
        .check_adjust_amount(&store(&c), &acct, -5)
        .await
        .unwrap();
    assert_eq!(out, Outcome::NullCompensation);
    let go_info = TransInfo::new(
        gid("rb-null-credit-go").as_str(),
        TransType::Saga,
        "02",
        Op::Compensate,
    );
    assert_eq!(
        go_adjust(&mut c, &go_info, &acct, -5).await.as_deref(),
        Some("FAILURE"),
        "the Go script's order, kept here as the reason for ours"
    );
    let late = TransInfo::new(g.as_str(), TransType::Saga, "02", Op::Action);
    let out = BranchBarrier::new(late)
        .check_adjust_amount(&store(&c), &acct, 5)
        .await
        .unwrap();
    assert_eq!(out, Outcome::Duplicate);
    assert_eq!(balance(&mut c, &acct).await, Some(0));

    // Action ran (+5), the money left the account, then the compensation is repeated.
    let g = gid("rb-dup-undo");
    let acct = format!("acct-{g}");
    set(&mut c, &acct, 0).await;
    let act = TransInfo::new(g.as_str(), TransType::Saga, "01", Op::Action);
    let undo = TransInfo::new(g.as_str(), TransType::Saga, "01", Op::Compensate);
    let redis = store(&c);
    let run = |info: &TransInfo, amount: i64| {
        let bb = BranchBarrier::new(info.clone());
        let (key, redis) = (acct.clone(), redis.clone());
        async move { bb.check_adjust_amount(&redis, &key, amount).await }
    };
    assert_eq!(run(&act, 5).await.unwrap(), Outcome::Executed(()));
    assert_eq!(run(&undo, -5).await.unwrap(), Outcome::Executed(()));
    set(&mut c, &acct, 1).await;
    assert_eq!(run(&undo, -5).await.unwrap(), Outcome::Duplicate);
    assert_eq!(balance(&mut c, &acct).await, Some(1));
}
