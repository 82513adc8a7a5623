//! A workflow shared with a real Go service: `RecordFormat::Go` lets a service built on
//! DTM's own Go SDK (tests/go, the client packages of the pinned server module) resume a
//! workflow this SDK started, and the other way round, through the real DTM.
//!
//! Both sides register workflow `interop-steps`: branch 01 a local step (`go-local:<input>`
//! in Go, `rust-local:<input>` here), branch 02 an HTTP call to the test service's
//! `TransIn`; the result is `<local>|<answer body>`. The first side's HTTP call is answered
//! ONGOING, so that side leaves the workflow unfinished with branch 01 recorded; then it
//! stops, the other side serves the same callback address, and DTM's retry resumes the
//! workflow there. The other side must replay branch 01 from the first side's record
//! (its own local step never runs) and finish it.
//!
//! DTM runs with `UpdateBranchSync: 1`: the Go SDK does not send `"sync"` with its step
//! records, and a default v1.19.0 server then drops them (protocol §7.9; seen here: the Go
//! service's record of branch 01 never reached the store). A team running Go workflow
//! services needs that setting anyway; this SDK sends `"sync":"1"` and needs no setting.

use crate::go_service;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use crate::workflow_common::{counted_step, recording_http};
use dtm_examples::busi::Outcome;
use dtm_workflow::{send_http, RecordFormat, Wf, WfOptions, Workflows};
use dtmcli::{DtmClient, TransOptions};
use go_service::{free_addr, GoService};
use reqwest::Method;
use reqwest_middleware::ClientWithMiddleware;

const NAME: &str = "interop-steps";
const BANK_OK: &str = r#"{"dtm_result":"SUCCESS"}"#;

/// The DTM server of this binary: Go's step records need synchronous branch updates.
fn setup() {
    configure(dtm_testkit::DtmServerConfig::default().with_env("UPDATE_BRANCH_SYNC", "1"));
}

/// The Rust side: its registry, recording Go format, with the workflow registered; the runs
/// of its local step by gid.
fn rust_side(callback: String) -> (Workflows, Arc<Mutex<HashMap<String, usize>>>) {
    let dtm = DtmClient::new(env().server.http_url()).unwrap();
    let wfs = Workflows::http(dtm, callback).with_record_format(RecordFormat::Go);
    let http: ClientWithMiddleware = recording_http();
    let runs: Arc<Mutex<HashMap<String, usize>>> = Default::default();
    let opts = WfOptions {
        trans: TransOptions::default().retry_interval(Duration::from_secs(1)),
        ..Default::default()
    };
    let r = runs.clone();
    wfs.register_with_options(NAME, opts, move |wf: Wf, input: Vec<u8>| {
        let (http, runs) = (http.clone(), r.clone());
        async move {
            wf.new_branch()?;
            let out = [b"rust-local:".as_slice(), &input].concat();
            let mut result = counted_step(&wf, &runs, out, Duration::ZERO).await?;
            wf.new_branch()?;
            let answer = send_http(
                wf.http(&http, Method::POST, &url("TransIn"))
                    .header("content-type", "application/json")
                    .body(r#"{"amount":1}"#),
            )
            .await?;
            result.push(b'|');
            result.extend(answer);
            Ok(result)
        }
    })
    .unwrap();
    (wfs, runs)
}

/// Waits until DTM has finished `gid` successfully; returns its stored result, decoded.
async fn wait_result(gid: &str) -> String {
    let q = wait_status(&dtm(), gid, "succeed").await;
    let t = q.transaction.unwrap();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&t.result)
        .unwrap_or_else(|e| panic!("result {:?} is not base64: {e}", t.result));
    String::from_utf8(raw).unwrap()
}

#[tokio::test]
async fn go_service_resumes_a_workflow_started_here() {
    setup();
    let gid = gid("go-resumes");
    let addr = free_addr();
    let (wfs, runs) = rust_side(format!("http://{addr}/wf/resume"));
    // Branch 02's call is answered ONGOING once: the workflow stays unfinished, 01 recorded.
    busi().script(&gid, "TransIn", [Outcome::Ongoing]);
    let w = wfs.clone();
    let g = gid.clone();
    let err = on_env(async move { w.execute(NAME, &g, b"in").await })
        .await
        .unwrap_err();
    assert!(err.is_ongoing(), "{err}");
    assert_eq!(runs.lock().unwrap().get(&gid), Some(&1));

    // This service is gone; a Go service of the same name takes over its address.
    let go = GoService::start(&addr, &[]).await;
    assert_eq!(
        wait_result(&gid).await,
        format!("rust-local:in|{BANK_OK}"),
        "the Go service must replay the local step's record written here"
    );
    assert_eq!(
        go.local_runs(&gid).await,
        Some(0),
        "Go reran the local step"
    );
    assert_eq!(busi().count(&gid, "TransIn"), 2);
    assert_eq!(runs.lock().unwrap().get(&gid), Some(&1));
    go.stop();
}

#[tokio::test]
async fn workflow_started_by_go_service_resumes_here() {
    setup();
    let gid = gid("go-started");
    let addr = free_addr();
    busi().script(&gid, "TransIn", [Outcome::Ongoing]);
    let go = GoService::start(&addr, &[]).await;
    let (result, error) = go.execute(&gid, "in").await;
    assert_eq!(result, "");
    assert!(error.to_ascii_lowercase().contains("ongoing"), "{error}");
    assert_eq!(go.local_runs(&gid).await, Some(1));
    go.stop();

    // The Go service is gone; this service takes over its address and callback.
    let (wfs, runs) = rust_side(format!("http://{addr}/wf/resume"));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let app = wfs.callback_router("/wf/resume");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(
        wait_result(&gid).await,
        format!("go-local:in|{BANK_OK}"),
        "this SDK must replay the local step's record the Go service wrote"
    );
    assert_eq!(
        runs.lock().unwrap().get(&gid),
        None,
        "the local step reran here"
    );
    assert_eq!(busi().count(&gid, "TransIn"), 2);
    server.abort();
}
