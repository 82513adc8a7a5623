//! What only the Redis barrier has (the scenarios every store shares are in
//! `barrier_suite`): failures that write nothing, the keys and values the Go SDK's script
//! writes with their expiry, the outbox's one guarded adjustment, and the barrier deciding
//! before the balance.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use redis::AsyncCommands;
use std::time::Duration;

use crate::barrier_suite::stores::REDIS_EXPIRE as EXPIRE;
use crate::barrier_suite::stores::{redis_conn as conn, redis_keys as barrier_keys, Store};
use crate::support::{self, *};
use dtm_barrier::redis::RedisStore;
use dtm_barrier::{msg_query_info, BranchBarrier, Outcome};
use dtm_examples::kv_bank::Transfer;
use dtmcli::{Op, TransInfo, TransType};
use redis::aio::MultiplexedConnection;

async fn set(c: &mut MultiplexedConnection, key: &str, v: i64) {
    let _: () = c.set(key, v).await.unwrap();
}

/// The account `acct-<gid>`, set to `balance`.
async fn account(c: &mut MultiplexedConnection, gid: &str, balance: i64) -> String {
    let acct = format!("acct-{gid}");
    set(c, &acct, balance).await;
    acct
}

async fn get(c: &mut MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(c).await.unwrap()
}

async fn balance(c: &mut MultiplexedConnection, key: &str) -> Option<i64> {
    get(c, key).await.map(|v| v.parse().unwrap())
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

/// The suite's guarded service on Redis.
fn rurl(handler: &str) -> String {
    <RedisStore<MultiplexedConnection> as Store>::url(handler)
}

#[tokio::test]
async fn insufficient_balance_or_missing_key_fails_and_writes_nothing() {
    let mut c = conn().await;
    let gid = gid("rb-insufficient");
    let acct = account(&mut c, &gid, 10).await;
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
    let _: () = c.set(&acct, "ten").await.unwrap();
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
        let acct = account(&mut c, gid, 100).await;
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
    let acct = account(&mut c, &g, 0).await;
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
    let acct = account(&mut c, &g, 0).await;
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
