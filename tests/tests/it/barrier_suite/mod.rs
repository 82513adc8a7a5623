//! One barrier suite, generic over the store: every scenario runs on MariaDB, PostgreSQL,
//! Redis and MongoDB (the [`stores::Store`] fixtures), against the real DTM server, with the
//! examples' guarded business ([`service`]: balances moved by one guarded adjustment per
//! branch). What only one store has (Redis's key expiry and script, MongoDB's index and
//! write conflicts, the Go SDK's exact rows and documents) is tested in that store's module.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod service;
pub mod stores;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{self, branch_status, dtm, gid, wait_status};
use dtm_barrier::{msg_query_info, BranchBarrier, Error, Outcome};
use dtmcli::{Op, TransInfo, TransOptions, TransRequest, TransType};
use service::{outcomes, recs, Transfer};
use stores::{expect, Store};

/// The store of the current test's runtime.
async fn store<S: Store>() -> S {
    S::connect().await
}

async fn balance<S: Store>(s: &S, key: &str) -> Option<i64> {
    s.balance(key).await.unwrap()
}

/// The balances of `t`'s two accounts.
async fn balances<S: Store>(s: &S, t: &Transfer) -> (Option<i64>, Option<i64>) {
    (balance(s, &t.from).await, balance(s, &t.to).await)
}

/// A transfer of 30 between two fresh accounts of `s` holding `from` and `to`, with its gid.
async fn transfer<S: Store>(s: &S, name: &str, from: i64, to: i64) -> (String, Transfer) {
    let gid = gid(&format!("{}-{name}", S::NAME));
    let t = Transfer::new(&gid, 30);
    s.open(&t.from, from).await.unwrap();
    s.open(&t.to, to).await.unwrap();
    (gid, t)
}

/// Submits a saga of `t` through two legs (handler names, each with its undo) and waits
/// until DTM stores `status`; returns the reason DTM stored.
async fn saga<S: Store>(gid: &str, t: &Transfer, legs: [(&str, &str); 2], status: &str) -> String {
    let dtm = dtm();
    legs.iter()
        .fold(dtm.saga(gid), |saga, (a, u)| {
            saga.add(&S::url(a), &S::url(u), t)
        })
        .submit()
        .await
        .unwrap();
    let q = wait_status(&dtm, gid, status).await;
    q.transaction.unwrap().rollback_reason
}

const OUT: (&str, &str) = ("TransOut", "TransOutRevert");
const IN: (&str, &str) = ("TransIn", "TransInRevert");
const IN_TWICE: (&str, &str) = ("TransInTwice", "TransInTwiceRevert");

/// A saga moves the balances once, writes one barrier row per branch, and DTM repeating an
/// action (a lost answer) changes nothing.
pub async fn saga_success<S: Store>() {
    let s = store::<S>().await;
    let (gid, t) = transfer(&s, "saga-ok", 100, 0).await;
    saga::<S>(&gid, &t, [OUT, IN], "succeed").await;
    assert_eq!(balances(&s, &t).await, (Some(70), Some(30)));
    assert_eq!(
        s.rows(&gid).await,
        expect::<S>(&[
            ("saga", "01/action/01", "action"),
            ("saga", "02/action/01", "action")
        ])
    );
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let body = serde_json::to_string(&t).unwrap();
    dtm()
        .call_branch(&S::url("TransOut"), &info, &BTreeMap::new(), Some(body))
        .await
        .unwrap();
    assert_eq!(balance(&s, &t.from).await, Some(70));
    assert_eq!(
        outcomes(&gid, "TransOut"),
        [
            Ok(vec![Outcome::Executed(())]),
            Ok(vec![Outcome::Duplicate])
        ]
    );
}

/// An action that fails (too little money) leaves nothing behind: its compensation is a
/// null compensation and only the branch that ran is compensated.
pub async fn saga_rollback<S: Store>() {
    let s = store::<S>().await;
    let (gid, t) = transfer(&s, "saga-rb", 10, 5).await;
    let reason = saga::<S>(&gid, &t, [IN, OUT], "failed").await;
    assert!(reason.contains("would make it negative"), "{reason}");
    assert_eq!(balances(&s, &t).await, (Some(10), Some(5)));
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
    // The failed action's row went with its transaction, so the compensation wrote it as
    // a block (the Go SDK's rows).
    assert_eq!(
        s.rows(&gid).await,
        expect::<S>(&[
            ("saga", "01/action/01", "action"),
            ("saga", "01/compensate/01", "compensate"),
            ("saga", "02/action/01", "compensate"),
            ("saga", "02/compensate/01", "compensate"),
        ])
    );
}

/// One branch barrier guards two local transactions, barrier ids 01 and 02, on success and
/// on rollback.
pub async fn same_barrier_twice<S: Store>() {
    let s = store::<S>().await;
    let (gid, t) = transfer(&s, "twice", 100, 0).await;
    saga::<S>(&gid, &t, [OUT, IN_TWICE], "succeed").await;
    assert_eq!(balances(&s, &t).await, (Some(70), Some(30)));
    assert_eq!(
        outcomes(&gid, "TransInTwice"),
        [Ok(vec![Outcome::Executed(()), Outcome::Executed(())])]
    );
    assert_eq!(
        s.rows(&gid).await,
        expect::<S>(&[
            ("saga", "01/action/01", "action"),
            ("saga", "02/action/01", "action"),
            ("saga", "02/action/02", "action"),
        ])
    );

    let (gid, t) = transfer(&s, "twice-rb", 0, 0).await;
    saga::<S>(&gid, &t, [IN_TWICE, OUT], "failed").await;
    assert_eq!(balances(&s, &t).await, (Some(0), Some(0)));
    assert_eq!(
        outcomes(&gid, "TransInTwiceRevert"),
        [Ok(vec![Outcome::Executed(()), Outcome::Executed(())])]
    );
    assert_eq!(
        s.rows(&gid).await,
        expect::<S>(&[
            ("saga", "01/action/01", "action"),
            ("saga", "01/action/02", "action"),
            ("saga", "01/compensate/01", "compensate"),
            ("saga", "01/compensate/02", "compensate"),
            ("saga", "02/action/01", "compensate"),
            ("saga", "02/compensate/01", "compensate"),
        ])
    );
}

/// An undo that arrives first is a null compensation and blocks its late action, for the
/// saga, TCC and workflow undo operations; repeating either changes nothing.
pub async fn null_compensation_then_late_action<S: Store>() {
    let s = store::<S>().await;
    for (tt, undo, origin) in [
        (TransType::Saga, Op::Compensate, Op::Action),
        (TransType::Tcc, Op::Cancel, Op::Try),
        // Workflow rollback: origin action (the Go barriers have no such mapping).
        (TransType::Workflow, Op::Rollback, Op::Action),
    ] {
        let gid = gid(&format!("{}-null", S::NAME));
        let acct = format!("acct-{gid}");
        s.open(&acct, 50).await.unwrap();
        let bb = |op: &Op| BranchBarrier::new(TransInfo::new(&gid, tt, "01", op.clone()));
        let out = s.adjust(&bb(&undo), acct.clone(), 20).await.unwrap();
        assert_eq!(out, Outcome::NullCompensation, "{undo}");
        assert_eq!(balance(&s, &acct).await, Some(50), "{undo}");
        let expected = expect::<S>(&[
            (tt.as_str(), &format!("01/{undo}/01"), undo.as_str()),
            (tt.as_str(), &format!("01/{origin}/01"), undo.as_str()),
        ]);
        assert_eq!(s.rows(&gid).await, expected);
        // The hanging action finds its row: no effect, success. A repeated undo too.
        let out = s.adjust(&bb(&origin), acct.clone(), -20).await.unwrap();
        assert_eq!(out, Outcome::Duplicate, "{origin}");
        let out = s.adjust(&bb(&undo), acct.clone(), 20).await.unwrap();
        assert_eq!(out, Outcome::Duplicate, "{undo}");
        assert_eq!(balance(&s, &acct).await, Some(50), "{undo}");
        assert_eq!(s.rows(&gid).await, expected);
    }
}

/// A TCC try that arrives after DTM timed the transaction out and cancelled it: the cancel
/// was a null compensation, the try succeeds and changes nothing.
pub async fn hanging_tcc_try<S: Store>() {
    let (dtm, s) = (dtm(), store::<S>().await);
    let (gid, t) = transfer(&s, "hanging", 100, 0).await;
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
        ("confirm", S::url("TransOutConfirm").as_str()),
        ("cancel", S::url("TransOutCancel").as_str()),
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
    let mut info = TransInfo::new(&gid, TransType::Tcc, "01", Op::Try);
    info.dtm = Some(dtm.server().to_string());
    let r = dtm
        .call_branch(&S::url("TransOutTry"), &info, &BTreeMap::new(), Some(data))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        outcomes(&gid, "TransOutTry"),
        [Ok(vec![Outcome::Duplicate])]
    );
    assert_eq!(balance(&s, &t.from).await, Some(100));
    assert_eq!(
        s.rows(&gid).await,
        expect::<S>(&[
            ("tcc", "01/cancel/01", "cancel"),
            ("tcc", "01/try/01", "cancel")
        ])
    );
}

/// Repeated and concurrent identical requests have one effect. Stores that serialize them
/// answer every one with success; MongoDB may answer some with a transient write conflict,
/// which DTM retries (never a failure), and the retry finds the winner's row.
pub async fn duplicates_have_one_effect<S: Store>() {
    let s = store::<S>().await;
    let gid = gid(&format!("{}-dup", S::NAME));
    let acct = format!("acct-{gid}");
    s.open(&acct, 100).await.unwrap();
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let bb = BranchBarrier::new(info.clone());
        seen.push(s.adjust(&bb, acct.clone(), -10).await.unwrap());
    }
    assert_eq!(
        seen,
        [
            Outcome::Executed(()),
            Outcome::Duplicate,
            Outcome::Duplicate
        ]
    );
    assert_eq!(balance(&s, &acct).await, Some(90));
    assert_eq!(
        s.rows(&gid).await,
        expect::<S>(&[("saga", "01/action/01", "action")])
    );

    // 20 identical requests at once.
    let gid = support::gid(&format!("{}-dup-conc", S::NAME));
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (s, info, acct) = (s.clone(), info.clone(), acct.clone());
            tokio::spawn(async move { s.adjust(&BranchBarrier::new(info), acct, -10).await })
        })
        .collect();
    let (mut executed, mut transient) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(Outcome::Executed(())) => executed += 1,
            Ok(Outcome::Duplicate) => {}
            Err(e) if S::is_transient(&e) => {
                transient += 1;
                assert!(!dtmcli::Error::from(e).is_failure());
            }
            other => panic!("{other:?}"),
        }
    }
    if S::SERIALIZES_DUPLICATES {
        assert_eq!((executed, transient), (1, 0));
    }
    assert!(executed <= 1, "{executed}");
    // The retry DTM would make.
    let again = s
        .adjust(&BranchBarrier::new(info), acct.clone(), -10)
        .await
        .unwrap();
    let expected = if executed == 0 {
        Outcome::Executed(())
    } else {
        Outcome::Duplicate
    };
    assert_eq!(again, expected);
    assert_eq!(balance(&s, &acct).await, Some(80));
    assert_eq!(
        s.rows(&gid).await,
        expect::<S>(&[("saga", "01/action/01", "action")])
    );
}

/// A business that fails after writing rolls its writes and the barrier rows back, keeps
/// its error's class (a failure, or a retryable error), and the retry of the same request
/// executes once. Only on stores with local transactions.
pub async fn business_error_rolls_back<S: Store>() {
    let s = store::<S>().await;
    let gid = gid(&format!("{}-busi-err", S::NAME));
    let acct = format!("acct-{gid}");
    s.open(&acct, 100).await.unwrap();
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    for fail in [Error::failure("refused"), Error::business("disk on fire")] {
        let is_failure = fail.is_failure();
        let bb = BranchBarrier::new(info.clone());
        let e = s
            .write_then_fail(bb, acct.clone(), -30, fail)
            .expect("a store with local transactions")
            .await
            .unwrap_err();
        assert_eq!(e.is_failure(), is_failure, "{e}");
        assert_eq!(balance(&s, &acct).await, Some(100), "the write rolled back");
        assert!(s.rows(&gid).await.is_empty(), "and the barrier rows too");
    }
    let out = s
        .adjust(&BranchBarrier::new(info), acct.clone(), -30)
        .await
        .unwrap();
    assert_eq!(out, Outcome::Executed(()));
    assert_eq!(balance(&s, &acct).await, Some(70));
    assert_eq!(
        s.rows(&gid).await,
        expect::<S>(&[("saga", "01/action/01", "action")])
    );
}

/// Options that make DTM back-check a prepared message after about one second.
fn fast() -> TransOptions {
    TransOptions::default()
        .timeout_to_fail(Duration::from_secs(1))
        .retry_interval(Duration::from_secs(1))
}

/// The outbox on store `S`: the local transaction adds `delta` to `from`.
async fn do_and_submit<S: Store>(
    msg: &dtmcli::Msg,
    s: &S,
    from: &str,
    delta: i64,
) -> dtm_barrier::Result<()> {
    let from = from.to_string();
    dtm_barrier::do_and_submit(msg, &S::url("QueryPrepared"), s, move |c| {
        S::adjust_local(c, from, delta)
    })
    .await
}

/// The outbox commits its local transaction and delivers the message; the back-check then
/// answers "committed".
pub async fn msg_do_and_submit_success<S: Store>() {
    let (dtm, s) = (dtm(), store::<S>().await);
    let (gid, t) = transfer(&s, "msg-ok", 100, 0).await;
    let msg = dtm.msg(&gid).add(&S::url("TransIn"), &t);
    do_and_submit(&msg, &s, &t.from, -30).await.unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(balances(&s, &t).await, (Some(70), Some(30)));
    assert_eq!(
        s.rows(&gid).await,
        expect::<S>(&[
            ("msg", "00/msg/01", "msg"),
            ("msg", "01/action/01", "action")
        ])
    );
    dtm.call_branch(
        &S::url("QueryPrepared"),
        &msg_query_info(&gid),
        &BTreeMap::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(outcomes(&gid, "QueryPrepared"), [Ok(vec![])]);
}

/// A local transaction that fails aborts the message: nothing moved, no row, no branch
/// called.
pub async fn msg_local_failure_aborts<S: Store>() {
    let (dtm, s) = (dtm(), store::<S>().await);
    let (gid, t) = transfer(&s, "msg-fail", 10, 0).await;
    let msg = dtm.msg(&gid).add(&S::url("TransIn"), &t);
    let e = do_and_submit(&msg, &s, &t.from, -30).await.unwrap_err();
    assert!(e.is_failure(), "{e}");
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(balances(&s, &t).await, (Some(10), Some(0)));
    assert!(s.rows(&gid).await.is_empty());
    assert!(recs(&gid).is_empty(), "{:?}", recs(&gid));
}

/// DTM's back-check wins the race with the local transaction: it answers "not committed"
/// (409) and marks the gid rolled back, so the local transaction is Duplicated and the
/// message fails.
pub async fn msg_back_check_first<S: Store>() {
    let (dtm, s) = (dtm(), store::<S>().await);
    let (gid, t) = transfer(&s, "msg-dup", 100, 0).await;
    let msg = dtm.msg(&gid).add(&S::url("TransIn"), &t);
    let (local, from) = (s.clone(), t.from.clone());
    let e = msg
        .do_and_submit(&S::url("QueryPrepared"), |info| async move {
            let url = S::url("QueryPrepared");
            assert_eq!(branch_status(reqwest::Method::GET, &url, &info).await, 409);
            local.adjust(&BranchBarrier::new(info), from, -30).await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(e.is_duplicated(), "{e}");
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(balances(&s, &t).await, (Some(100), Some(0)));
    assert_eq!(
        s.rows(&gid).await,
        expect::<S>(&[("msg", "00/msg/01", "rollback")])
    );
    // DTM's back-check, then the SDK's own after the Duplicated local transaction.
    let qp = outcomes(&gid, "QueryPrepared");
    assert_eq!(qp.len(), 2, "{qp:?}");
    for q in &qp {
        assert!(q.as_ref().unwrap_err().contains("FAILURE"), "{qp:?}");
    }
    assert!(outcomes(&gid, "TransIn").is_empty());
}

/// The local transaction committed but its caller saw an error (a lost reply): the SDK's
/// own back-check finds the committed row and submits the message.
pub async fn msg_error_after_commit_back_check_decides<S: Store>() {
    let (dtm, s) = (dtm(), store::<S>().await);
    let (gid, t) = transfer(&s, "msg-after-commit", 100, 0).await;
    let msg = dtm.msg(&gid).add(&S::url("TransIn"), &t);
    let (local, from) = (s.clone(), t.from.clone());
    let e = msg
        .do_and_submit(&S::url("QueryPrepared"), |info| async move {
            local.adjust(&BranchBarrier::new(info), from, -30).await?;
            Err(dtmcli::Error::other("connection reset after commit"))
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("after commit"), "{e}");
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(balances(&s, &t).await, (Some(70), Some(30)));
    assert_eq!(outcomes(&gid, "QueryPrepared"), [Ok(vec![])]);
}

/// DTM's back-check of a prepared message: it delivers the message when the local
/// transaction committed, and fails it (blocking a late local transaction) when not.
pub async fn msg_query_prepared_answers_back_checks<S: Store>() {
    let (dtm, s) = (dtm(), store::<S>().await);
    let (gid, t) = transfer(&s, "msg-bc-ok", 100, 0).await;
    let msg = dtm
        .msg(&gid)
        .add(&S::url("TransIn"), &t)
        .with_options(fast());
    msg.prepare(&S::url("QueryPrepared")).await.unwrap();
    let bb = BranchBarrier::new(msg.local_info());
    let out = s.adjust(&bb, t.from.clone(), -30).await.unwrap();
    assert_eq!(out, Outcome::Executed(()));
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(outcomes(&gid, "QueryPrepared")[0], Ok(vec![]));
    assert_eq!(balances(&s, &t).await, (Some(70), Some(30)));

    let (gid, t) = transfer(&s, "msg-bc-fail", 100, 0).await;
    let msg = dtm
        .msg(&gid)
        .add(&S::url("TransIn"), &t)
        .with_options(fast());
    msg.prepare(&S::url("QueryPrepared")).await.unwrap();
    wait_status(&dtm, &gid, "failed").await;
    assert!(outcomes(&gid, "QueryPrepared")[0].is_err());
    assert_eq!(
        s.rows(&gid).await,
        expect::<S>(&[("msg", "00/msg/01", "rollback")])
    );
    let bb = BranchBarrier::new(msg.local_info());
    let e = s.adjust(&bb, t.from.clone(), -30).await.unwrap_err();
    assert!(e.is_duplicated(), "{e}");
    assert_eq!(balance(&s, &t.from).await, Some(100));
    assert!(outcomes(&gid, "TransIn").is_empty());
}

// ---------------------------------------------------------------------------------------
// Barrier retention (SQL and MongoDB; Redis keys expire by themselves), on a table of its
// own (`service::RETENTION_TABLE`): a purge of the shared table would remove the rows the
// other scenarios are checking.

/// A saga of `t` on the retention table's handlers; waits until DTM stores `status`.
async fn retention_saga<S: Store>(gid: &str, t: &Transfer, legs: [(&str, &str); 2], status: &str) {
    let dtm = dtm();
    legs.iter()
        .fold(dtm.saga(gid).with_options(fast()), |saga, (a, u)| {
            saga.add(&S::retention_url(a), &S::retention_url(u), t)
        })
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, gid, status).await;
}

/// Purges the retention table with `keep` (and `remove_unknown`), in batches of 3.
async fn purge<S: Store>(
    s: &S,
    keep: Duration,
    remove_unknown: bool,
) -> dtm_barrier::retention::Purged {
    let r = dtm_barrier::retention::Retention {
        keep,
        batch: 3,
        remove_unknown,
        table: dtm_barrier::TableName::new(service::RETENTION_TABLE).unwrap(),
        ..Default::default()
    };
    s.purge(r).expect("a store with retention").await.unwrap()
}

/// Purges (keep 0) until `gids` have no rows left, within 20 s: a row written in the current
/// second is not older than 0 s yet.
async fn purge_until_gone<S: Store>(s: &S, gids: &[String]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        purge(s, Duration::ZERO, false).await;
        let mut left = 0;
        for g in gids {
            left += s.retention_rows(g).await;
        }
        if left == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} rows left of {gids:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Retention removes the rows of the transactions DTM finished and only those: a purge with
/// a window of an hour removes nothing recent; with no window, the rows of a committed and a
/// rolled-back saga go, those of a saga DTM still retries stay, and so do those of a gid
/// DTM does not know (unless asked); purges running beside six transfers leave every one of
/// them moving its money exactly once.
pub async fn retention_removes_only_what_dtm_finished<S: Store>() {
    let s = store::<S>().await;
    if s.purge(dtm_barrier::retention::Retention::default())
        .is_none()
    {
        return;
    }
    let (ok, t_ok) = transfer(&s, "ret-ok", 100, 0).await;
    retention_saga::<S>(&ok, &t_ok, [OUT, IN], "succeed").await;
    let (rb, t_rb) = transfer(&s, "ret-rb", 10, 5).await;
    retention_saga::<S>(&rb, &t_rb, [IN, OUT], "failed").await;
    // A saga DTM retries for ever: its second branch's handler does not exist (400).
    let (open, t_open) = transfer(&s, "ret-open", 100, 0).await;
    let dtm = dtm();
    dtm.saga(&open)
        .with_options(fast())
        .add(
            &S::retention_url("TransOut"),
            &S::retention_url("TransOutRevert"),
            &t_open,
        )
        .add(
            &S::retention_url("Nowhere"),
            &S::retention_url("NowhereRevert"),
            &t_open,
        )
        .submit()
        .await
        .unwrap();
    // A gid DTM never heard of, written straight to the branch.
    let stray = gid(&format!("{}-ret-stray", S::NAME));
    let t_stray = Transfer::new(&stray, 1);
    s.open(&t_stray.from, 10).await.unwrap();
    let info = TransInfo::new(&stray, TransType::Saga, "01", Op::Action);
    let body = serde_json::to_string(&t_stray).unwrap();
    dtm.call_branch(
        &S::retention_url("TransOut"),
        &info,
        &BTreeMap::new(),
        Some(body),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.retention_rows(&open).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the open saga's first branch never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An hour's window: everything here ended less than an hour ago.
    let p = purge(&s, Duration::from_secs(3600), false).await;
    assert_eq!(p.rows_deleted, 0, "{p:?}");
    for g in [&ok, &rb] {
        assert!(s.retention_rows(g).await > 0, "{g}");
    }

    // No window, while six transfers run.
    let mut running: Vec<(String, Transfer)> = Vec::new();
    for i in 0..6 {
        running.push(transfer(&s, &format!("ret-run{i}"), 100, 0).await);
    }
    let transfers = futures_util::future::join_all(
        running
            .iter()
            .map(|(g, t)| retention_saga::<S>(g, t, [OUT, IN], "succeed")),
    );
    let purges = async {
        for _ in 0..5 {
            purge(&s, Duration::ZERO, false).await;
        }
    };
    futures_util::join!(transfers, purges);
    for (_, t) in &running {
        assert_eq!(balances(&s, t).await, (Some(70), Some(30)));
    }
    let mut finished: Vec<String> = running.iter().map(|(g, _)| g.clone()).collect();
    finished.extend([ok.clone(), rb.clone()]);
    purge_until_gone(&s, &finished).await;
    // What DTM has not finished, and what it does not know, stays.
    assert!(s.retention_rows(&open).await > 0);
    assert!(s.retention_rows(&stray).await > 0);
    let p = purge(&s, Duration::ZERO, false).await;
    assert!(p.kept_unfinished >= 1 && p.kept_unknown >= 1, "{p:?}");
    // The balances of the finished sagas are untouched by the purge.
    assert_eq!(balances(&s, &t_ok).await, (Some(70), Some(30)));
    assert_eq!(balances(&s, &t_rb).await, (Some(10), Some(5)));
    // Unknown gids go only when asked, once their rows are older than the window.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.retention_rows(&stray).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stray gid's rows stayed"
        );
        purge(&s, Duration::ZERO, true).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(s.retention_rows(&open).await > 0);
    dtm.force_stop(&open).await.unwrap();
}

/// Every scenario but `business_error_rolls_back` runs on every store.
macro_rules! every_store_scenario {
    ($store:ident: $ty:ty $(, $extra:ident)*) => {
        instantiate!($store: $ty =>
            saga_success,
            saga_rollback,
            same_barrier_twice,
            null_compensation_then_late_action,
            hanging_tcc_try,
            duplicates_have_one_effect,
            msg_do_and_submit_success,
            msg_local_failure_aborts,
            msg_back_check_first,
            msg_error_after_commit_back_check_decides,
            msg_query_prepared_answers_back_checks,
            retention_removes_only_what_dtm_finished,
            $($extra),*
        );
    };
}

every_store_scenario!(mariadb: sqlx::MySqlPool, business_error_rolls_back);
every_store_scenario!(postgres: sqlx::PgPool, business_error_rolls_back);
every_store_scenario!(mongo: mongodb::Client, business_error_rolls_back);
// Not business_error_rolls_back: Redis has no local transaction; its guarded adjustment is
// one script, so no business runs after the barrier wrote (see barrier_redis).
every_store_scenario!(redis: dtm_barrier::redis::RedisStore<redis::aio::MultiplexedConnection>);
