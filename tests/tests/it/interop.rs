//! Wire compatibility with the Go SDK.
//!
//! 1. Bodies written by hand exactly as the Go SDK produces them (protocol §2.2, §2.3) are
//!    accepted and run by the real server.
//! 2. What this SDK sends, captured by a recording proxy in front of the real server,
//!    decodes into the shape the spec gives: flat options, always-present `concurrent` and
//!    `protocol`, omitted zero options, string-only registerBranch maps.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};

async fn post_raw(path: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{}/{path}", env().server.http_url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn go_shaped_saga_body_is_accepted() {
    let gid = gid("interop-saga");
    let body = format!(
        r#"{{"gid":"{gid}","trans_type":"saga","concurrent":false,"steps":[{{"action":"{}","compensate":"{}"}}],"payloads":["{{\"amount\":30}}"],"protocol":""}}"#,
        url("TransOut"),
        url("TransOutRevert")
    );
    let (status, text) = post_raw("submit", &body).await;
    assert_eq!(
        (status, text.as_str()),
        (200, r#"{"dtm_result":"SUCCESS"}"#)
    );
    wait_status(&dtm(), &gid, "succeed").await;
    let calls = busi().calls(&gid);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body, r#"{"amount":30}"#);
}

#[tokio::test]
async fn go_shaped_tcc_bodies_are_accepted() {
    let gid = gid("interop-tcc");
    let base = format!(r#"{{"gid":"{gid}","trans_type":"tcc","concurrent":false,"protocol":""}}"#);
    assert_eq!(post_raw("prepare", &base).await.0, 200);
    let reg = json!({
        "gid": gid, "trans_type": "tcc", "branch_id": "01",
        "data": "{\"amount\":30}",
        "confirm": url("TransOutConfirm"), "cancel": url("TransOutCancel"),
    });
    assert_eq!(post_raw("registerBranch", &reg.to_string()).await.0, 200);
    // Values must all be strings: a number is refused.
    let bad = json!({"gid": gid, "trans_type": "tcc", "branch_id": 2});
    assert_ne!(post_raw("registerBranch", &bad.to_string()).await.0, 200);
    assert_eq!(post_raw("submit", &base).await.0, 200);
    wait_status(&dtm(), &gid, "succeed").await;
    let calls = busi().calls(&gid);
    assert_eq!(busi().handlers(&gid), ["TransOutConfirm"]);
    assert_eq!(calls[0].body, r#"{"amount":30}"#);
}

#[tokio::test]
async fn legacy_step_data_payload_is_accepted() {
    let gid = gid("interop-legacy");
    let body = json!({
        "gid": gid, "trans_type": "saga", "concurrent": false, "protocol": "",
        "steps": [{"action": url("TransIn"), "compensate": url("TransInRevert"), "data": "{\"amount\":5}"}],
    });
    assert_eq!(post_raw("submit", &body.to_string()).await.0, 200);
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(busi().calls(&gid)[0].body, r#"{"amount":5}"#);
}

/// A proxy that records every request body and forwards it to the real server.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    upstream: String,
}

impl Recorder {
    /// What DTM was asked, in order: each call's operation (its path after `/api/dtmsvr/`),
    /// and each call's body.
    fn seen(&self) -> (Vec<String>, Vec<Value>) {
        self.seen.lock().unwrap().iter().cloned().unzip()
    }
}

async fn record(
    State(rec): State<Recorder>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> impl IntoResponse {
    let path = uri.path().trim_start_matches("/api/dtmsvr/").to_string();
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        rec.seen.lock().unwrap().push((path.clone(), v));
    }
    let target = format!(
        "{}/{}{}",
        rec.upstream,
        path,
        uri.query().map(|q| format!("?{q}")).unwrap_or_default()
    );
    let r = reqwest::Client::new()
        .request(method, target)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    (status, r.bytes().await.unwrap())
}

async fn recorder() -> (Recorder, dtmcli::DtmClient) {
    let rec = Recorder {
        upstream: env().server.http_url(),
        ..Default::default()
    };
    let app = axum::Router::new().fallback(record).with_state(rec.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    let client = dtmcli::DtmClient::new(format!("http://{addr}/api/dtmsvr")).unwrap();
    (rec, client)
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn our_saga_and_msg_bodies_have_the_go_shape() {
    let (rec, dtm) = recorder().await;
    let gid = gid("interop-ours");
    dtm.saga(&gid)
        .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(3))
        .submit()
        .await
        .unwrap();
    let mgid = format!("{gid}-msg");
    dtm.msg(&mgid)
        .add(&url("TransIn"), &BusiReq::new(4))
        .with_options(dtmcli::TransOptions::default().retry_interval(Duration::from_secs(7)))
        .delay(Duration::from_secs(1))
        .do_and_submit(&url("QueryPrepared"), |_| async { Ok(()) })
        .await
        .unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    wait_status(&support::dtm(), &mgid, "succeed").await;

    let (ops, seen) = rec.seen();
    assert_eq!(ops, ["submit", "prepare", "submit"]);

    let saga = &seen[0];
    assert_eq!(
        keys(saga),
        [
            "concurrent",
            "gid",
            "payloads",
            "protocol",
            "steps",
            "trans_type"
        ]
    );
    assert_eq!(saga["concurrent"], json!(false));
    assert_eq!(saga["protocol"], json!(""));
    assert_eq!(saga["payloads"], json!([r#"{"amount":3}"#]));
    assert_eq!(
        saga["steps"],
        json!([{"action": url("TransOut"), "compensate": url("TransOutRevert")}])
    );

    let prepare = &seen[1];
    assert_eq!(prepare["query_prepared"], json!(url("QueryPrepared")));
    assert_eq!(prepare["retry_interval"], json!(7));
    assert!(
        prepare.get("custom_data").is_none(),
        "delay is sent on submit only"
    );
    assert_eq!(prepare["steps"], json!([{"action": url("TransIn")}]));
    let submit = &seen[2];
    assert_eq!(submit["custom_data"], json!(r#"{"delay":1}"#));
    // As in Go, the submit after a prepare repeats the back-check URL.
    assert_eq!(submit["query_prepared"], json!(url("QueryPrepared")));
    for absent in [
        "wait_result",
        "timeout_to_fail",
        "request_timeout",
        "retry_limit",
        "branch_headers",
        "rollback_reason",
    ] {
        assert!(
            submit.get(absent).is_none(),
            "{absent} must be omitted when zero"
        );
    }
}

#[tokio::test]
async fn our_tcc_register_branch_is_a_string_map() {
    let (rec, dtm) = recorder().await;
    let gid = gid("interop-tcc-ours");
    dtm.tcc_global_transaction(&gid, dtmcli::TransOptions::default(), |tcc| async move {
        tcc.call_branch(
            &BusiReq::new(9),
            &url("TransOutTry"),
            &url("TransOutConfirm"),
            &url("TransOutCancel"),
        )
        .await
    })
    .await
    .unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    let (ops, seen) = rec.seen();
    assert_eq!(ops, ["prepare", "registerBranch", "submit"]);
    let reg = &seen[1];
    assert_eq!(
        reg,
        &json!({
            "gid": gid, "trans_type": "tcc", "branch_id": "01",
            "data": r#"{"amount":9}"#,
            "confirm": url("TransOutConfirm"), "cancel": url("TransOutCancel"),
        })
    );
    assert_eq!(seen[0]["trans_type"], json!("tcc"));
}
