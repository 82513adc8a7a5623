//! An integration test to copy: a real DTM server, a branch service on axum, a saga through
//! it, and what DTM did, asserted. Then a cluster: two DTM servers on one shared store.
//!
//! Needs the DTM binary (`DTM_BIN`, `dtm` on PATH, or `dtm_testkit::install()`), and Redis
//! on 127.0.0.1:6379 (MariaDB on 3306 for the `mysql` test, run with `--features mysql`).

// Tests and their helpers: a panic is how they report a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Json;
use dtm_testkit::{DtmServer, DtmServerConfig, Store};
use dtmcli::{DtmClient, TransInfo};

/// The service under test: TransOut, TransIn and their compensations. TransIn refuses
/// (DTM's FAILURE: roll back) amounts above 100. Every call is recorded as `handler/op`.
#[derive(Clone, Default)]
struct Busi {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Busi {
    /// Serves the branches on a free port; returns their base URL.
    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route("/api/busi/{handler}", post(branch))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/busi", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

async fn branch(
    State(busi): State<Busi>,
    Path(handler): Path<String>,
    info: TransInfo,
    Json(amount): Json<i64>,
) -> Result<Json<serde_json::Value>, dtmcli::Error> {
    busi.calls
        .lock()
        .unwrap()
        .push(format!("{handler}/{}", info.op));
    if handler == "TransIn" && amount > 100 {
        return Err(dtmcli::Error::failure("TransIn: at most 100 per transfer"));
    }
    Ok(Json(serde_json::json!({"dtm_result": "SUCCESS"})))
}

/// Submits a two-step saga moving `amount` through `busi`; returns its gid.
async fn transfer(dtm: &DtmClient, busi: &str, amount: i64) -> String {
    let gid = dtm.new_gid().await.unwrap();
    dtm.saga(&gid)
        .add(
            &format!("{busi}/TransOut"),
            &format!("{busi}/TransOutRevert"),
            &amount,
        )
        .add(
            &format!("{busi}/TransIn"),
            &format!("{busi}/TransInRevert"),
            &amount,
        )
        .submit()
        .await
        .unwrap();
    gid
}

/// `branch_id/op=status` per row DTM holds, in its order.
fn rows(branches: &[dtmcli::TransBranch]) -> Vec<String> {
    branches
        .iter()
        .map(|b| format!("{}/{}={}", b.branch_id, b.op, b.status))
        .collect()
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_saga_that_commits_and_one_that_rolls_back() {
    let dtm = DtmServer::start_async(DtmServerConfig::default())
        .await
        .unwrap();
    let client = dtm.http_client().unwrap();
    let busi = Busi::default();
    let base = busi.serve().await;

    // 30 moves: both actions run, DTM ends the saga `succeed`.
    let gid = transfer(&client, &base, 30).await;
    let q = dtm.wait_final(&gid, WAIT).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "succeed");
    assert_eq!(
        rows(&dtm.branches(&gid).await.unwrap()),
        [
            "01/compensate=prepared",
            "01/action=succeed",
            "02/compensate=prepared",
            "02/action=succeed"
        ]
    );
    assert_eq!(busi.calls(), ["TransOut/action", "TransIn/action"]);

    // 500: TransIn refuses, DTM compensates both steps in reverse order and ends `failed`.
    busi.calls.lock().unwrap().clear();
    let gid = transfer(&client, &base, 500).await;
    let e = dtm
        .wait_status(&gid, dtmcli::TransStatus::Succeed, WAIT)
        .await
        .unwrap_err();
    // Waiting for `succeed` stops as soon as the saga is final otherwise, and says why.
    let w = e.as_wait().unwrap();
    assert!(w.ended_otherwise(), "{e}");
    assert!(
        e.to_string().contains("at most 100 per transfer"),
        "the rollback reason is in the error: {e}"
    );
    assert_eq!(
        rows(&dtm.branches(&gid).await.unwrap()),
        [
            "01/compensate=succeed",
            "01/action=succeed",
            "02/compensate=succeed",
            "02/action=failed"
        ]
    );
    assert_eq!(
        busi.calls(),
        [
            "TransOut/action",
            "TransIn/action",
            "TransInRevert/compensate",
            "TransOutRevert/compensate"
        ]
    );
    dtm.stop().unwrap();
}

/// A cluster: servers started with the same `Store` value share their transactions; a
/// server on another Redis prefix does not see them.
#[tokio::test]
async fn two_servers_on_one_redis_store() {
    let store = Store::local_redis();
    store.prepare().await.unwrap();
    let config = DtmServerConfig::default().with_store(store);
    let a = DtmServer::start_async(config.clone()).await.unwrap();
    let b = DtmServer::start_async(config).await.unwrap();
    let other = DtmServer::start_async(DtmServerConfig::default().with_store(Store::local_redis()))
        .await
        .unwrap();
    let busi = Busi::default();
    let base = busi.serve().await;

    // Submitted to `a`, followed on `b`.
    let gid = transfer(&a.http_client().unwrap(), &base, 30).await;
    let on_b = b.wait_final(&gid, WAIT).await.unwrap();
    assert_eq!(on_b.transaction.as_ref().unwrap().status, "succeed");
    // Branch rows are written asynchronously (DTM's default): wait for both actions' rows.
    let actions_done = |q: &dtmcli::QueryResult| {
        q.branches
            .iter()
            .filter(|b| b.op == "action" && b.status == "succeed")
            .count()
            == 2
    };
    let on_b = b.wait_until(&gid, WAIT, actions_done).await.unwrap();
    let on_a = a.query(&gid).await.unwrap();
    assert_eq!(on_a, on_b, "both servers read the same store");
    assert!(
        other.query(&gid).await.unwrap().transaction.is_none(),
        "another prefix is another store"
    );
}

/// The same on MariaDB: `prepare` creates DTM's schema in the named database, and may run
/// again (here twice at once) while servers use it.
#[cfg(feature = "mysql")]
#[tokio::test]
async fn two_servers_on_one_mariadb_store() {
    let store = Store::local_mysql("dtm_testkit_example");
    let (first, second) = tokio::join!(store.prepare(), store.prepare());
    first.unwrap();
    second.unwrap();
    let config = DtmServerConfig::default().with_store(store.clone());
    let a = DtmServer::start_async(config.clone()).await.unwrap();
    let b = DtmServer::start_async(config).await.unwrap();
    store.prepare().await.unwrap();
    let busi = Busi::default();
    let base = busi.serve().await;

    let gid = transfer(&b.http_client().unwrap(), &base, 500).await;
    let on_a = a.wait_final(&gid, WAIT).await.unwrap();
    assert_eq!(on_a.transaction.as_ref().unwrap().status, "failed");
    // DTM's SQL store writes branch statuses asynchronously (after the global status), so
    // wait for the rows too; then both servers read the same ones.
    let done = [
        "01/action=succeed",
        "01/compensate=succeed",
        "02/action=failed",
        "02/compensate=succeed",
    ];
    let on_a = a
        .wait_until(&gid, WAIT, |q| {
            let mut r = rows(&q.branches);
            r.sort();
            r == done
        })
        .await
        .unwrap();
    assert_eq!(rows(&on_a.branches), rows(&b.branches(&gid).await.unwrap()));
}
