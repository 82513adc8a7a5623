//! The MongoDB branch barrier against a real MongoDB-wire server (`MONGO_URL`, default
//! `mongodb://127.0.0.1:27017/?directConnection=true`, a replica set with transactions) and
//! the real DTM server: sagas through barrier-guarded handlers, null compensation, hanging
//! TCC tries, duplicates and concurrency, rollback of a failed business, the documents the
//! Go SDK writes, and the msg outbox with its back-check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::kv_barrier;
use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::*;
use dtm_barrier::mongo::create_barrier_index;
use dtm_barrier::reprocess::ReprocessPolicy;
use dtm_barrier::{msg_query_info, BranchBarrier, Error, Outcome, TableName, TransactionalStore};
use dtm_examples::kv_bank::mongo_adjust as adjust_in;
use dtmcli::{Op, TransInfo, TransOptions, TransRequest, TransType};
use futures_util::TryStreamExt;
use kv_barrier::{outcomes, recs, Balances, Transfer};
use mongodb::bson::{doc, Document};
use mongodb::{Client, ClientSession, Collection};

const BUSI_DB: &str = "dtm_busi";
const JOURNAL: &str = "barrier_test_journal";

fn mongo_url() -> String {
    std::env::var("MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".to_string())
}

/// A client for the current test's runtime, with the barrier index in place.
async fn client() -> Client {
    let c = Client::with_uri_str(mongo_url()).await.expect("mongo url");
    create_barrier_index(&c, &TableName::default())
        .await
        .expect("create the barrier index (scripts/start-dbs.sh starts the server)");
    c
}

fn barriers(c: &Client) -> Collection<Document> {
    c.database("dtm_barrier").collection("barrier")
}

async fn set(c: &Client, key: &str, v: i64) {
    c.open(key, v).await.unwrap();
}

async fn balance(c: &Client, key: &str) -> Option<i64> {
    c.balance(key).await.unwrap()
}

/// The barrier documents of `gid` without `_id`, sorted by (branch_id, op, barrier_id).
async fn barrier_docs(c: &Client, gid: &str) -> Vec<Document> {
    barriers(c)
        .find(doc! {"gid": gid})
        .sort(doc! {"branch_id": 1, "op": 1, "barrier_id": 1})
        .projection(doc! {"_id": 0})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// `branch_id/op/barrier_id=reason` of each barrier document of `gid`, sorted.
async fn barrier_rows(c: &Client, gid: &str) -> Vec<String> {
    barrier_docs(c, gid)
        .await
        .iter()
        .map(|d| {
            format!(
                "{}/{}/{}={}",
                d.get_str("branch_id").unwrap(),
                d.get_str("op").unwrap(),
                d.get_str("barrier_id").unwrap(),
                d.get_str("reason").unwrap()
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The guarded business service (tests/kv_barrier): balances are documents {_id, balance}
// (the examples' `Balances` for `mongodb::Client`).

/// One guarded MongoDB transaction adding `delta` to `key`.
async fn guarded(
    bb: &BranchBarrier,
    client: &Client,
    key: String,
    delta: i64,
) -> dtm_barrier::Result<Outcome<()>> {
    client.adjust(bb, key, delta).await
}

fn murl(handler: &str) -> String {
    kv_barrier::url("/api/mbusi", client, handler)
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn barrier_index_is_unique_on_the_go_key() {
    let c = client().await;
    // Idempotent.
    create_barrier_index(&c, &TableName::default())
        .await
        .unwrap();
    let indexes: Vec<_> = barriers(&c)
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ix = indexes
        .iter()
        .find(|i| i.options.as_ref().and_then(|o| o.unique) == Some(true))
        .expect("a unique index");
    assert_eq!(
        ix.keys,
        doc! {"gid": 1, "branch_id": 1, "op": 1, "barrier_id": 1}
    );
    // A table without a database part cannot name a collection.
    let e = create_barrier_index(&c, &TableName::new("barrier").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
}

#[tokio::test]
async fn saga_success_moves_balances_once() {
    let dtm = dtm();
    let gid = gid("mb-saga-ok");
    let c = client().await;
    let t = Transfer::new(&gid, 30);
    set(&c, &t.from, 100).await;
    set(&c, &t.to, 0).await;
    dtm.saga(&gid)
        .add(&murl("TransOut"), &murl("TransOutRevert"), &t)
        .add(&murl("TransIn"), &murl("TransInRevert"), &t)
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(balance(&c, &t.from).await, Some(70));
    assert_eq!(balance(&c, &t.to).await, Some(30));
    assert_eq!(
        barrier_rows(&c, &gid).await,
        ["01/action/01=action", "02/action/01=action"]
    );
    // DTM repeating the action (a lost answer) changes nothing.
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let body = serde_json::to_string(&t).unwrap();
    dtm.call_branch(&murl("TransOut"), &info, &BTreeMap::new(), Some(body))
        .await
        .unwrap();
    assert_eq!(balance(&c, &t.from).await, Some(70));
    assert_eq!(
        outcomes(&gid, "TransOut"),
        [
            Ok(vec![Outcome::Executed(())]),
            Ok(vec![Outcome::Duplicate])
        ]
    );
}

#[tokio::test]
async fn saga_rollback_compensates_exactly_what_ran() {
    let dtm = dtm();
    let gid = gid("mb-saga-rb");
    let c = client().await;
    let t = Transfer::new(&gid, 30);
    set(&c, &t.from, 10).await; // too little: TransOut fails, its transaction aborts
    set(&c, &t.to, 5).await;
    dtm.saga(&gid)
        .add(&murl("TransIn"), &murl("TransInRevert"), &t)
        .add(&murl("TransOut"), &murl("TransOutRevert"), &t)
        .submit()
        .await
        .unwrap();
    let q = wait_status(&dtm, &gid, "failed").await;
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("would make it negative"), "{reason}");
    assert_eq!(balance(&c, &t.from).await, Some(10));
    assert_eq!(balance(&c, &t.to).await, Some(5));
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
    // The failed action's barrier document was rolled back with it, so the compensation
    // inserted it (reason compensate): exactly the Go SDK's documents.
    assert_eq!(
        barrier_rows(&c, &gid).await,
        [
            "01/action/01=action",
            "01/compensate/01=compensate",
            "02/action/01=compensate",
            "02/compensate/01=compensate",
        ]
    );
}

#[tokio::test]
async fn same_barrier_guards_two_transactions_with_ids_01_and_02() {
    let dtm = dtm();
    let c = client().await;

    let gid = gid("mb-twice");
    let t = Transfer::new(&gid, 30);
    set(&c, &t.from, 100).await;
    set(&c, &t.to, 0).await;
    dtm.saga(&gid)
        .add(&murl("TransOut"), &murl("TransOutRevert"), &t)
        .add(&murl("TransInTwice"), &murl("TransInTwiceRevert"), &t)
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(balance(&c, &t.from).await, Some(70));
    assert_eq!(balance(&c, &t.to).await, Some(30));
    assert_eq!(
        barrier_rows(&c, &gid).await,
        [
            "01/action/01=action",
            "02/action/01=action",
            "02/action/02=action"
        ]
    );

    let gid = support::gid("mb-twice-rb");
    let t = Transfer::new(&gid, 30);
    set(&c, &t.from, 0).await;
    set(&c, &t.to, 0).await;
    dtm.saga(&gid)
        .add(&murl("TransInTwice"), &murl("TransInTwiceRevert"), &t)
        .add(&murl("TransOut"), &murl("TransOutRevert"), &t)
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(balance(&c, &t.to).await, Some(0));
    assert_eq!(balance(&c, &t.from).await, Some(0));
    assert_eq!(
        outcomes(&gid, "TransInTwiceRevert"),
        [Ok(vec![Outcome::Executed(()), Outcome::Executed(())])]
    );
    assert_eq!(
        barrier_rows(&c, &gid).await,
        [
            "01/action/01=action",
            "01/action/02=action",
            "01/compensate/01=compensate",
            "01/compensate/02=compensate",
            "02/action/01=compensate",
            "02/compensate/01=compensate",
        ]
    );
}

#[tokio::test]
async fn null_compensation_then_the_late_action_is_a_no_op() {
    let c = client().await;
    for (tt, undo, origin) in [
        (TransType::Saga, Op::Compensate, Op::Action),
        (TransType::Tcc, Op::Cancel, Op::Try),
        // Workflow rollback: origin action (the Go Mongo barrier has no such mapping).
        (TransType::Workflow, Op::Rollback, Op::Action),
    ] {
        let gid = gid("mb-null");
        let acct = format!("acct-{gid}");
        set(&c, &acct, 50).await;
        let undo_bb = || BranchBarrier::new(TransInfo::new(&gid, tt, "01", undo.clone()));
        let out = guarded(&undo_bb(), &c, acct.clone(), 20).await.unwrap();
        assert_eq!(out, Outcome::NullCompensation, "{undo}");
        assert_eq!(balance(&c, &acct).await, Some(50), "{undo}");
        let mut expected = vec![
            format!("01/{origin}/01={undo}"),
            format!("01/{undo}/01={undo}"),
        ];
        expected.sort();
        assert_eq!(barrier_rows(&c, &gid).await, expected);
        // The hanging action finds its document: no effect, success.
        let late = BranchBarrier::new(TransInfo::new(&gid, tt, "01", origin.clone()));
        let out = guarded(&late, &c, acct.clone(), -20).await.unwrap();
        assert_eq!(out, Outcome::Duplicate, "{origin}");
        let out = guarded(&undo_bb(), &c, acct.clone(), 20).await.unwrap();
        assert_eq!(out, Outcome::Duplicate, "{undo}");
        assert_eq!(balance(&c, &acct).await, Some(50), "{undo}");
        assert_eq!(barrier_rows(&c, &gid).await, expected);
    }
}

#[tokio::test]
async fn hanging_tcc_try_after_timeout_cancel_changes_nothing() {
    let dtm = dtm();
    let gid = gid("mb-hanging");
    let c = client().await;
    let t = Transfer::new(&gid, 30);
    set(&c, &t.from, 100).await;
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
        ("confirm", murl("TransOutConfirm").as_str()),
        ("cancel", murl("TransOutCancel").as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    dtm.register_branch(&fields).await.unwrap();
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(
        outcomes(&gid, "TransOutCancel"),
        [Ok(vec![Outcome::NullCompensation])]
    );
    let mut info = TransInfo::new(&gid, TransType::Tcc, "01", Op::Try);
    info.dtm = Some(dtm.server().to_string());
    let r = dtm
        .call_branch(&murl("TransOutTry"), &info, &BTreeMap::new(), Some(data))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        outcomes(&gid, "TransOutTry"),
        [Ok(vec![Outcome::Duplicate])]
    );
    assert_eq!(balance(&c, &t.from).await, Some(100));
    assert_eq!(
        barrier_rows(&c, &gid).await,
        ["01/cancel/01=cancel", "01/try/01=cancel"]
    );
}

#[tokio::test]
async fn duplicates_have_one_effect() {
    let c = client().await;
    let gid = gid("mb-dup");
    let acct = format!("acct-{gid}");
    set(&c, &acct, 100).await;
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let bb = BranchBarrier::new(info.clone());
        seen.push(guarded(&bb, &c, acct.clone(), -10).await.unwrap());
    }
    assert_eq!(
        seen,
        [
            Outcome::Executed(()),
            Outcome::Duplicate,
            Outcome::Duplicate
        ]
    );
    assert_eq!(balance(&c, &acct).await, Some(90));
    assert_eq!(barrier_rows(&c, &gid).await, ["01/action/01=action"]);
}

#[tokio::test]
async fn concurrent_identical_requests_have_one_effect_and_all_succeed_with_reprocessing() {
    let c = client().await;
    let gid = gid("mb-conc");
    let acct = format!("acct-{gid}");
    set(&c, &acct, 100).await;
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let policy = ReprocessPolicy {
        max_attempts: 30,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, info, acct, policy) = (c.clone(), info.clone(), acct.clone(), policy.clone());
            tokio::spawn(async move {
                BranchBarrier::new(info)
                    .call_reprocessing(&c, &policy, |s| {
                        let acct = acct.clone();
                        Box::pin(async move { adjust_in(s, &acct, -10).await })
                    })
                    .await
            })
        })
        .collect();
    let mut executed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Outcome::Executed(())) => executed += 1,
            Ok(Outcome::Duplicate) => {}
            other => panic!("{other:?}"),
        }
    }
    tracing::info!(elapsed = ?started.elapsed(), "20 concurrent guarded calls");
    assert_eq!(executed, 1);
    assert_eq!(balance(&c, &acct).await, Some(90));
    assert_eq!(barrier_rows(&c, &gid).await, ["01/action/01=action"]);
}

#[tokio::test]
async fn concurrent_identical_requests_without_reprocessing_fail_only_transiently() {
    let c = client().await;
    let gid = gid("mb-conc-plain");
    let acct = format!("acct-{gid}");
    set(&c, &acct, 100).await;
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, info, acct) = (c.clone(), info.clone(), acct.clone());
            tokio::spawn(async move { guarded(&BranchBarrier::new(info), &c, acct, -10).await })
        })
        .collect();
    let (mut executed, mut transient) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(Outcome::Executed(())) => executed += 1,
            Ok(Outcome::Duplicate) => {}
            Err(e) if Client::is_transient(&e) => {
                transient += 1;
                // DTM retries such an answer (500), it is not a failure.
                assert!(!dtmcli::Error::from(e).is_failure());
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(executed <= 1, "{executed}");
    // The retries DTM would make: the losers find the winner's document.
    let bb = BranchBarrier::new(info.clone());
    let again = guarded(&bb, &c, acct.clone(), -10).await.unwrap();
    if executed == 0 {
        // Every request lost a write conflict: the retry is the one that executes.
        assert_eq!(again, Outcome::Executed(()));
    } else {
        assert_eq!(again, Outcome::Duplicate);
    }
    tracing::info!(executed, transient, "plain concurrent calls");
    assert_eq!(balance(&c, &acct).await, Some(90));
}

#[tokio::test]
async fn a_business_error_rolls_back_its_writes_and_the_barrier_documents() {
    let c = client().await;
    let gid = gid("mb-busi-err");
    let journal = c.database(BUSI_DB).collection::<Document>(JOURNAL);
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    for fail in [Error::failure("refused"), Error::business("disk on fire")] {
        let is_failure = fail.is_failure();
        let g = gid.clone();
        let e = BranchBarrier::new(info.clone())
            .call(&c, move |s| {
                Box::pin(async move {
                    journal_insert(s, &g).await?;
                    Err::<(), _>(fail)
                })
            })
            .await
            .unwrap_err();
        assert_eq!(e.is_failure(), is_failure, "{e}");
        assert_eq!(
            journal.count_documents(doc! {"gid": &gid}).await.unwrap(),
            0
        );
        assert!(barrier_rows(&c, &gid).await.is_empty());
    }
    // A retry of the same request is not mistaken for a duplicate.
    let g = gid.clone();
    let out = BranchBarrier::new(info)
        .call(&c, move |s| {
            Box::pin(async move { journal_insert(s, &g).await })
        })
        .await
        .unwrap();
    assert_eq!(out, Outcome::Executed(()));
    assert_eq!(
        journal.count_documents(doc! {"gid": &gid}).await.unwrap(),
        1
    );
    assert_eq!(barrier_rows(&c, &gid).await, ["01/action/01=action"]);
}

async fn journal_insert(s: &mut ClientSession, gid: &str) -> dtm_barrier::Result<()> {
    s.client()
        .database(BUSI_DB)
        .collection::<Document>(JOURNAL)
        .insert_one(doc! {"gid": gid})
        .session(&mut *s)
        .await?;
    Ok(())
}

#[tokio::test]
async fn documents_are_those_of_the_go_sdk() {
    let c = client().await;
    let gid = gid("mb-go-docs");
    let acct = format!("acct-{gid}");
    set(&c, &acct, 100).await;
    // Null compensation of a TCC branch: both documents, reason = the cancel op.
    let bb = BranchBarrier::new(TransInfo::new(&gid, TransType::Tcc, "01", Op::Cancel));
    guarded(&bb, &c, acct.clone(), 10).await.unwrap();
    // An executed saga action.
    let bb = BranchBarrier::new(TransInfo::new(&gid, TransType::Saga, "02", Op::Action));
    guarded(&bb, &c, acct.clone(), -10).await.unwrap();
    let docs = barrier_docs(&c, &gid).await;
    let expected = [
        ("tcc", "01", "cancel", "cancel"),
        ("tcc", "01", "try", "cancel"),
        ("saga", "02", "action", "action"),
    ];
    assert_eq!(docs.len(), expected.len());
    for (d, (tt, branch, op, reason)) in docs.iter().zip(expected) {
        // Field names and order of the Go SDK's bson.D.
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "trans_type",
                "gid",
                "branch_id",
                "op",
                "barrier_id",
                "reason"
            ]
        );
        assert_eq!(
            d,
            &doc! {
                "trans_type": tt, "gid": &gid, "branch_id": branch, "op": op,
                "barrier_id": "01", "reason": reason,
            }
        );
    }
    // Every document carries an ObjectId `_id`, as InsertOne gives it in Go.
    let raw = barriers(&c)
        .find_one(doc! {"gid": &gid})
        .await
        .unwrap()
        .unwrap();
    assert!(raw.get_object_id("_id").is_ok(), "{raw}");
}

// ---------------------------------------------------------------------------------------
// msg outbox

fn fast() -> TransOptions {
    TransOptions::default()
        .timeout_to_fail(Duration::from_secs(1))
        .retry_interval(Duration::from_secs(1))
}

async fn do_and_submit(
    msg: &dtmcli::Msg,
    c: &Client,
    from: &str,
    delta: i64,
) -> dtm_barrier::Result<()> {
    let from = from.to_string();
    dtm_barrier::do_and_submit(msg, &murl("QueryPrepared"), c, move |s| {
        Box::pin(async move { adjust_in(s, &from, delta).await })
    })
    .await
}

#[tokio::test]
async fn msg_do_and_submit_success() {
    let dtm = dtm();
    let gid = gid("mb-msg-ok");
    let c = client().await;
    let t = Transfer::new(&gid, 30);
    set(&c, &t.from, 100).await;
    set(&c, &t.to, 0).await;
    let msg = dtm.msg(&gid).add(&murl("TransIn"), &t);
    do_and_submit(&msg, &c, &t.from, -30).await.unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(balance(&c, &t.from).await, Some(70));
    assert_eq!(balance(&c, &t.to).await, Some(30));
    assert_eq!(
        barrier_rows(&c, &gid).await,
        ["00/msg/01=msg", "01/action/01=action"]
    );
    let d = &barrier_docs(&c, &gid).await[0];
    assert_eq!(d.get_str("trans_type").unwrap(), "msg");
    dtm.call_branch(
        &murl("QueryPrepared"),
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
    let gid = gid("mb-msg-fail");
    let c = client().await;
    let t = Transfer::new(&gid, 30);
    set(&c, &t.from, 10).await;
    set(&c, &t.to, 0).await;
    let msg = dtm.msg(&gid).add(&murl("TransIn"), &t);
    let e = do_and_submit(&msg, &c, &t.from, -30).await.unwrap_err();
    assert!(e.is_failure(), "{e}");
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(balance(&c, &t.from).await, Some(10));
    assert_eq!(balance(&c, &t.to).await, Some(0));
    assert!(barrier_rows(&c, &gid).await.is_empty());
    assert!(recs(&gid).is_empty(), "{:?}", recs(&gid));
}

#[tokio::test]
async fn msg_back_check_first_makes_the_local_transaction_duplicated() {
    let dtm = dtm();
    let gid = gid("mb-msg-dup");
    let c = client().await;
    let t = Transfer::new(&gid, 30);
    set(&c, &t.from, 100).await;
    set(&c, &t.to, 0).await;
    let e = BranchBarrier::new(msg_query_info(&gid))
        .query_prepared(&c)
        .await
        .unwrap_err();
    assert!(e.is_failure(), "{e}");
    let msg = dtm.msg(&gid).add(&murl("TransIn"), &t);
    let e = do_and_submit(&msg, &c, &t.from, -30).await.unwrap_err();
    assert!(e.is_duplicated(), "{e}");
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(balance(&c, &t.from).await, Some(100));
    assert_eq!(balance(&c, &t.to).await, Some(0));
    assert_eq!(barrier_rows(&c, &gid).await, ["00/msg/01=rollback"]);
    let qp = outcomes(&gid, "QueryPrepared");
    assert_eq!(qp.len(), 1);
    assert!(qp[0].as_ref().unwrap_err().contains("FAILURE"), "{qp:?}");
}

#[tokio::test]
async fn msg_query_prepared_answers_dtm_back_checks() {
    let dtm = dtm();
    let c = client().await;

    // Committed locally, "crashed" before submit: the back-check delivers the message.
    let gid = gid("mb-msg-bc-ok");
    let t = Transfer::new(&gid, 30);
    set(&c, &t.from, 100).await;
    set(&c, &t.to, 0).await;
    let msg = dtm.msg(&gid).add(&murl("TransIn"), &t).with_options(fast());
    msg.prepare(&murl("QueryPrepared")).await.unwrap();
    let out = guarded(
        &BranchBarrier::new(msg.local_info()),
        &c,
        t.from.clone(),
        -30,
    )
    .await
    .unwrap();
    assert_eq!(out, Outcome::Executed(()));
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(outcomes(&gid, "QueryPrepared")[0], Ok(vec![]));
    assert_eq!(balance(&c, &t.from).await, Some(70));
    assert_eq!(balance(&c, &t.to).await, Some(30));

    // Never committed locally: the back-check fails the message and blocks a late local
    // transaction.
    let gid = support::gid("mb-msg-bc-fail");
    let t = Transfer::new(&gid, 30);
    set(&c, &t.from, 100).await;
    let msg = dtm.msg(&gid).add(&murl("TransIn"), &t).with_options(fast());
    msg.prepare(&murl("QueryPrepared")).await.unwrap();
    wait_status(&dtm, &gid, "failed").await;
    assert!(outcomes(&gid, "QueryPrepared")[0].is_err());
    assert_eq!(barrier_rows(&c, &gid).await, ["00/msg/01=rollback"]);
    let e = guarded(
        &BranchBarrier::new(msg.local_info()),
        &c,
        t.from.clone(),
        -30,
    )
    .await
    .unwrap_err();
    assert!(e.is_duplicated(), "{e}");
    assert_eq!(balance(&c, &t.from).await, Some(100));
    assert!(outcomes(&gid, "TransIn").is_empty());
}
