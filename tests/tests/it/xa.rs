//! XA global transactions over HTTP against the real DTM server. The branch side is the bank
//! service's XA stub (`TransOutXa`/`TransInXa`), which registers itself with DTM on
//! `op=action` and records phase 2.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use dtmcli::{DtmClient, Error, Op, TransOptions, TransRequest, TransType, TrustedServers};

fn opts() -> TransOptions {
    TransOptions::default()
        .retry_interval(Duration::from_secs(1))
        .branch_header("x-test-header", "xa")
}

/// The calls of `handler` for `gid` with op `op`.
fn calls_with(gid: &str, handler: &str, op: Op) -> Vec<Call> {
    busi()
        .calls(gid)
        .into_iter()
        .filter(|c| c.handler == handler && c.info.as_ref().map(|i| &i.op) == Some(&op))
        .collect()
}

/// Asserts `c` is DTM's phase-2 call (`commit` or `rollback`) of an XA branch.
fn assert_phase2(c: &Call, branch_id: &str, op: Op) {
    let info = c.info.as_ref().unwrap();
    assert_eq!(c.method, "POST", "{c:?}");
    assert_eq!(c.body, "", "{c:?}");
    assert_eq!(info.op, op, "{c:?}");
    assert_eq!(info.branch_id, branch_id, "{c:?}");
    assert_eq!(info.trans_type, TransType::Xa, "{c:?}");
    // DTM itself sends neither `dtm` nor `phase2_url`.
    assert_eq!(
        (info.dtm.as_deref(), info.phase2_url.as_deref()),
        (None, None),
        "{c:?}"
    );
    assert_eq!(
        c.headers.get("x-test-header").map(String::as_str),
        Some("xa"),
        "{c:?}"
    );
}

/// The closure's value is the transaction's (here a branch's answer, as text); the commit
/// and rollback scenarios are in `transport_suite` (`xa_*`), over HTTP and gRPC.
#[tokio::test]
async fn the_closure_value_is_returned() {
    let dtm = dtm();
    let gid = gid("xa-value");
    let body = dtm
        .xa_global_transaction(&gid, opts(), |xa| async move {
            let resp = xa.call_branch(&BusiReq::new(1), &url("TransOutXa")).await?;
            Ok(resp.text())
        })
        .await
        .unwrap();
    assert_eq!(body, r#"{"dtm_result":"SUCCESS"}"#);
    wait_status(&dtm, &gid, "succeed").await;
}

/// A recording proxy in front of the real DTM server: every request to
/// `<proxy>/api/dtmsvr/<op>` is logged as `(op, body)` and forwarded.
#[derive(Clone)]
struct Proxy {
    target: String,
    http: reqwest::Client,
    log: Arc<Mutex<Vec<(String, String)>>>,
}

async fn forward(
    State(p): State<Proxy>,
    Path(op): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    p.log
        .lock()
        .unwrap()
        .push((op.clone(), String::from_utf8_lossy(&body).into_owned()));
    let mut u = format!("{}/{op}", p.target);
    if let Some(q) = query {
        u = format!("{u}?{q}");
    }
    let m = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
    let resp = p
        .http
        .request(m, &u)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    (status, resp.bytes().await.unwrap().to_vec()).into_response()
}

async fn start_proxy() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let p = Proxy {
        target: env().server.http_url(),
        http: reqwest::Client::new(),
        log: Arc::default(),
    };
    let log = p.log.clone();
    let app = Router::new()
        .route("/api/dtmsvr/{op}", any(forward))
        .with_state(p);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/api/dtmsvr"), log)
}

#[tokio::test]
async fn prepare_and_abort_bodies_and_status_transitions() {
    let direct = dtm();
    let (proxy_url, log) = start_proxy().await;
    let dtm = DtmClient::new(proxy_url.clone()).unwrap();
    // The XA branch registers with the server the SDK names (`dtm=`), here the proxy: its
    // client must trust it (by default a client only follows its own server).
    let branch = dtm_examples::busi::Busi::new(
        DtmClient::builder(env().server.http_url())
            .trusted_servers(TrustedServers::list([proxy_url]))
            .build()
            .unwrap(),
    );
    let base = branch.serve(0).await.unwrap();
    let url = |handler: &str| format!("{base}/{handler}");
    let calls_with = |gid: &str, handler: &str, op: Op| -> Vec<Call> {
        branch
            .calls(gid)
            .into_iter()
            .filter(|c| c.handler == handler && c.info.as_ref().map(|i| &i.op) == Some(&op))
            .collect()
    };
    let gid = gid("xa-abort");
    // The rollback answers ONGOING once, so the `aborting` status lasts a retry interval.
    branch.script(&gid, "TransOutXa", [Outcome::Success, Outcome::Ongoing]);
    let o = opts().timeout_to_fail(Duration::from_secs(30));
    let (g2, d2, out_url) = (gid.clone(), direct.clone(), url("TransOutXa"));
    let err = dtm
        .xa_global_transaction(&gid, o.clone(), |xa| async move {
            xa.call_branch(&BusiReq::new(1), &out_url).await?;
            let q = d2.query(&g2).await?;
            let t = q.transaction.as_ref().unwrap();
            assert_eq!(
                (t.status.as_str(), t.trans_type.as_str()),
                ("prepared", "xa")
            );
            assert_eq!(t.timeout_to_fail, 30);
            assert_eq!(t.retry_interval, 1);
            assert_eq!(
                branch_rows(&q),
                ["01/rollback=prepared", "01/commit=prepared"]
            );
            Err::<(), _>(Error::other("x"))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Other(_)), "{err}");
    assert_eq!(err.to_string(), "x");

    let q = wait_status(&direct, &gid, "aborting").await;
    assert_eq!(q.transaction.unwrap().rollback_reason, "x");
    let q = wait_status(&direct, &gid, "failed").await;
    let t = q.transaction.clone().unwrap();
    assert_eq!(t.rollback_reason, "x");
    assert_eq!(
        branch_rows(&q),
        ["01/rollback=succeed", "01/commit=prepared"]
    );
    let rollbacks = calls_with(&gid, "TransOutXa", Op::Rollback);
    assert_eq!(rollbacks.len(), 2);
    assert_phase2(&rollbacks[1], "01", Op::Rollback);
    assert!(calls_with(&gid, "TransOutXa", Op::Commit).is_empty());

    // What went over the wire: prepare, the stub's registerBranch, abort with the reason.
    let log = log.lock().unwrap().clone();
    let ops: Vec<&str> = log.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["prepare", "registerBranch", "abort"]);
    let expected = TransRequest::new(&gid, TransType::Xa, &o);
    assert_eq!(log[0].1, serde_json::to_string(&expected).unwrap());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&log[0].1).unwrap(),
        serde_json::json!({
            "gid": gid, "trans_type": "xa", "timeout_to_fail": 30, "retry_interval": 1,
            "branch_headers": {"x-test-header": "xa"}, "concurrent": false, "protocol": ""
        })
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&log[1].1).unwrap(),
        serde_json::json!({
            "gid": gid, "trans_type": "xa", "branch_id": "01", "url": url("TransOutXa")
        })
    );
    let abort: TransRequest = serde_json::from_str(&log[2].1).unwrap();
    let mut expected_abort = expected;
    expected_abort.set_rollback_reason("x");
    assert_eq!(abort, expected_abort);
    assert_eq!(log[2].1, serde_json::to_string(&expected_abort).unwrap());
}

#[tokio::test]
async fn timeout_aborts_and_a_late_branch_cannot_register() {
    let dtm = dtm();
    let gid = gid("xa-timeout");
    let o = opts().timeout_to_fail(Duration::from_secs(1));
    let (g2, d2) = (gid.clone(), dtm.clone());
    let err = dtm
        .xa_global_transaction(&gid, o, |xa| async move {
            xa.call_branch(&BusiReq::new(1), &url("TransOutXa")).await?;
            // Wait (polling) until DTM has timed the transaction out and rolled it back.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let q = d2.query(&g2).await?;
                if q.transaction.is_some_and(|t| t.status == "failed") {
                    break;
                }
                assert!(Instant::now() < deadline, "never timed out");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            xa.call_branch(&BusiReq::new(1), &url("TransInXa")).await?;
            Ok(())
        })
        .await
        .unwrap_err();
    // The late branch's registration is refused, and the stub passes the failure on.
    assert!(err.is_failure(), "{err}");
    assert!(err.to_string().contains("status: prepared"), "{err}");
    let q = wait_status(&dtm, &gid, "failed").await;
    let reason = q.transaction.clone().unwrap().rollback_reason;
    assert_eq!(reason, "Timeout after 1 seconds");
    assert_eq!(
        branch_rows(&q),
        ["01/rollback=succeed", "01/commit=prepared"]
    );
    assert_eq!(calls_with(&gid, "TransOutXa", Op::Rollback).len(), 1);
    assert_eq!(busi().count(&gid, "TransInXa"), 1);
}

fn boom() -> dtmcli::Result<()> {
    panic!("xa boom")
}

#[tokio::test]
async fn panic_aborts_and_is_resumed() {
    let dtm = dtm();
    let gid = gid("xa-panic");
    let (d2, g2) = (dtm.clone(), gid.clone());
    let handle = tokio::spawn(async move {
        d2.xa_global_transaction(&g2, opts(), |xa| async move {
            xa.call_branch(&BusiReq::new(1), &url("TransOutXa")).await?;
            boom()?;
            Ok(())
        })
        .await
    });
    let err = handle.await.unwrap_err();
    assert!(err.is_panic(), "{err}");
    let payload = err.into_panic();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"xa boom"));
    let q = wait_status(&dtm, &gid, "failed").await;
    assert_eq!(q.transaction.clone().unwrap().rollback_reason, "xa boom");
    assert_eq!(
        branch_rows(&q),
        ["01/rollback=succeed", "01/commit=prepared"]
    );
    assert_eq!(busi().handlers(&gid), ["TransOutXa", "TransOutXa"]);
    assert_phase2(&busi().calls(&gid)[1], "01", Op::Rollback);
}
