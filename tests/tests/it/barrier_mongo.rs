//! What only the MongoDB barrier has (the scenarios every store shares are in
//! `barrier_suite`): its unique index, identical concurrent requests made all to succeed
//! by reprocessing the transaction, and the documents the Go SDK writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::barrier_suite::stores::{mongo_barriers as barriers, mongo_docs as barrier_docs, Store};
use crate::support::*;
use dtm_barrier::mongo::create_barrier_index;
use dtm_barrier::reprocess::ReprocessPolicy;
use dtm_barrier::{BranchBarrier, Error, Outcome, TableName};
use dtm_examples::kv_bank::{mongo_adjust as adjust_in, Balances};
use dtmcli::{Op, TransInfo, TransType};
use futures_util::TryStreamExt;
use mongodb::bson::doc;
use mongodb::Client;

async fn client() -> Client {
    <Client as Store>::connect().await
}

async fn balance(c: &Client, key: &str) -> Option<i64> {
    c.balance(key).await.unwrap()
}

/// A fresh gid of `prefix`, and its account `acct-<gid>`, opened with 100.
async fn gid_and_account(c: &Client, prefix: &str) -> (String, String) {
    let gid = gid(prefix);
    let acct = format!("acct-{gid}");
    c.open(&acct, 100).await.unwrap();
    (gid, acct)
}

/// The barrier rows of `gid`, as the suite writes them.
async fn barrier_rows(c: &Client, gid: &str) -> Vec<String> {
    Store::rows(c, gid).await
}

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
async fn concurrent_identical_requests_have_one_effect_and_all_succeed_with_reprocessing() {
    let c = client().await;
    let (gid, acct) = gid_and_account(&c, "mb-conc").await;
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
    assert_eq!(barrier_rows(&c, &gid).await, ["saga/01/action/01=action"]);
}

#[tokio::test]
async fn documents_are_those_of_the_go_sdk() {
    let c = client().await;
    let (gid, acct) = gid_and_account(&c, "mb-go-docs").await;
    // Null compensation of a TCC branch: both documents, reason = the cancel op.
    let bb = BranchBarrier::new(TransInfo::new(&gid, TransType::Tcc, "01", Op::Cancel));
    c.adjust(&bb, acct.clone(), 10).await.unwrap();
    // An executed saga action.
    let bb = BranchBarrier::new(TransInfo::new(&gid, TransType::Saga, "02", Op::Action));
    c.adjust(&bb, acct.clone(), -10).await.unwrap();
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
