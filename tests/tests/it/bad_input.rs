//! What the SDK does with an unreachable or misbehaving DTM server, malformed branch
//! queries, branch-id overflow and invalid server URLs: typed errors, never a panic.

use std::time::{Duration, Instant};

use crate::support::*;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use dtmcli::{DtmClient, Error, Op, Tcc, TransInfo, TransOptions, TransType};

/// Serves `app` on a free port of 127.0.0.1 for the rest of the test; returns its address.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn saga(dtm: &DtmClient, gid: &str) -> dtmcli::Saga {
    dtm.saga(gid).add(
        "http://127.0.0.1:1/a",
        "http://127.0.0.1:1/b",
        &BusiReq::new(1),
    )
}

// ---------------------------------------------------------------- unreachable server

#[tokio::test]
async fn unreachable_dtm_gives_transport_errors_quickly() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = format!("http://127.0.0.1:{port}/api/dtmsvr");
    let dtm = DtmClient::new(server.clone()).unwrap();

    let timed = |what: &str, start: Instant, err: Error| {
        let took = start.elapsed();
        println!("{what}: {took:?}: {err}");
        assert!(err.is_transport(), "{what}: {err:?}");
        assert_eq!(err.kind(), dtmcli::ErrorKind::Retryable);
        assert!(took < Duration::from_secs(10), "{what} took {took:?}");
        err
    };

    let t = Instant::now();
    let e = timed("new_gid", t, dtm.new_gid().await.unwrap_err());
    assert!(
        matches!(e, Error::Transport { ref url, .. } if *url == format!("{server}/newGid")),
        "{e:?}"
    );

    let t = Instant::now();
    let e = timed(
        "saga submit",
        t,
        saga(&dtm, "g-unreach").submit().await.unwrap_err(),
    );
    assert!(
        matches!(e, Error::Transport { ref url, .. } if *url == format!("{server}/submit")),
        "{e:?}"
    );

    let t = Instant::now();
    let e = timed("query", t, dtm.query("g-unreach").await.unwrap_err());
    assert!(
        matches!(e, Error::Transport { ref url, .. } if url.ends_with("/query")),
        "{e:?}"
    );

    let t = Instant::now();
    timed(
        "msg prepare",
        t,
        dtm.msg("g-unreach")
            .add("http://127.0.0.1:1/a", &1)
            .prepare("http://127.0.0.1:1/qp")
            .await
            .unwrap_err(),
    );

    // A global transaction whose prepare fails never runs the closure.
    let t = Instant::now();
    let r: dtmcli::Result<()> = dtm
        .tcc_global_transaction("g-unreach", TransOptions::default(), |_tcc| async move {
            panic!("the closure must not run when prepare fails")
        })
        .await;
    let e = r.unwrap_err();
    timed("tcc prepare", t, e);
}

// ---------------------------------------------------------------- misbehaving server

const BIG: usize = 10_000;

/// A fake DTM whose answers depend on the first path segment (`/<mode>/api/dtmsvr/<op>`).
async fn fake(Path((mode, _op)): Path<(String, String)>) -> Response {
    let json = |status: StatusCode, body: &'static str| {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    match mode.as_str() {
        "text" => (StatusCode::OK, "not json").into_response(),
        "html" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        "emptygid" => json(StatusCode::OK, r#"{"gid":""}"#),
        "wrongtype" => json(StatusCode::OK, r#"{"gid":5,"transaction":"oops"}"#),
        "s500" => json(StatusCode::INTERNAL_SERVER_ERROR, r#"{"message":"boom"}"#),
        "big500" => (StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(BIG)).into_response(),
        "s409" => json(
            StatusCode::CONFLICT,
            r#"{"dtm_result":"FAILURE","message":"refused"}"#,
        ),
        "s409plain" => (StatusCode::CONFLICT, "nope").into_response(),
        "s425" => json(
            StatusCode::TOO_EARLY,
            r#"{"dtm_result":"ONGOING","message":"later"}"#,
        ),
        "failure200" => json(
            StatusCode::OK,
            r#"{"dtm_result":"FAILURE","message":"wait result not return success"}"#,
        ),
        "s204" => StatusCode::NO_CONTENT.into_response(),
        // A query answer that merely mentions FAILURE (a rollback reason does).
        "reason" => json(
            StatusCode::OK,
            r#"{"transaction":{"gid":"g","trans_type":"saga","status":"failed","rollback_reason":"branch answered FAILURE"},"branches":null}"#,
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            json(StatusCode::OK, r#"{"gid":"late"}"#)
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn fake_dtm() -> impl Fn(&str) -> DtmClient {
    let base = serve(Router::new().route("/{mode}/api/dtmsvr/{op}", any(fake))).await;
    move |mode: &str| DtmClient::new(format!("{base}/{mode}/api/dtmsvr")).unwrap()
}

fn assert_decode(what: &str, err: &Error, body_part: &str) {
    assert!(
        matches!(err, Error::Decode { body, .. } if body.contains(body_part)),
        "{what}: {err:?}"
    );
    assert_eq!(err.kind(), dtmcli::ErrorKind::Retryable, "{what}");
}

#[tokio::test]
async fn garbage_bodies_are_decode_errors() {
    let fake = fake_dtm().await;
    for (mode, part) in [("text", "not json"), ("html", "502 Bad Gateway")] {
        let dtm = fake(mode);
        let e = dtm.new_gid().await.unwrap_err();
        assert_decode(mode, &e, part);
        assert!(
            matches!(e, Error::Decode { ref url, .. } if url.ends_with(&format!("/{mode}/api/dtmsvr/newGid"))),
            "{e:?}"
        );
        assert_decode(mode, &dtm.query("g").await.unwrap_err(), part);
        // A 200 that is not DTM's `{"dtm_result":"SUCCESS"}` is not a submitted saga.
        assert_decode(mode, &saga(&dtm, "g").submit().await.unwrap_err(), part);
    }
    let e = fake("emptygid").new_gid().await.unwrap_err();
    assert_decode("emptygid", &e, r#"{"gid":""}"#);
    assert!(
        matches!(e, Error::Decode { ref reason, .. } if reason.contains("empty gid")),
        "{e:?}"
    );
    let dtm = fake("wrongtype");
    assert_decode("wrongtype gid", &dtm.new_gid().await.unwrap_err(), "oops");
    assert_decode(
        "wrongtype query",
        &dtm.query("g").await.unwrap_err(),
        "oops",
    );
    assert_decode("version", &dtm.version().await.unwrap_err(), "oops");
}

#[tokio::test]
async fn statuses_map_to_typed_outcomes() {
    let fake = fake_dtm().await;

    let dtm = fake("s500");
    let e = saga(&dtm, "g").submit().await.unwrap_err();
    assert!(
        matches!(e, Error::Status { status: 500, ref body, ref url } if body.contains("boom") && url.ends_with("/submit")),
        "{e:?}"
    );
    assert!(matches!(
        dtm.new_gid().await,
        Err(Error::Status { status: 500, .. })
    ));
    assert!(matches!(
        dtm.query("g").await,
        Err(Error::Status { status: 500, .. })
    ));
    let e = dtm.subscribe("t", "http://x/y", "").await.unwrap_err();
    assert!(matches!(e, Error::Status { status: 500, .. }), "{e:?}");

    let e = saga(&fake("big500"), "g").submit().await.unwrap_err();
    match e {
        Error::Status {
            status: 500,
            ref body,
            ..
        } => {
            assert!(
                body.len() < 5000,
                "body not truncated: {} bytes",
                body.len()
            );
            assert!(
                body.ends_with(&format!("({BIG} bytes)")),
                "{}",
                &body[body.len() - 30..]
            );
        }
        other => panic!("{other:?}"),
    }

    // The transport maps DTM's answers to outcomes (the raw API shows it)...
    let submit = |dtm: &DtmClient| {
        let req = saga(dtm, "g").request().unwrap();
        let dtm = dtm.clone();
        async move { dtm.submit(&req).await.unwrap_err() }
    };
    let dtm = fake("s409");
    let e = submit(&dtm).await;
    assert!(
        matches!(e, Error::Failure(ref m) if m == "refused"),
        "{e:?}"
    );
    assert!(e.is_failure());
    assert!(dtm.new_gid().await.unwrap_err().is_failure());
    assert!(dtm.query("g").await.unwrap_err().is_failure());
    // ...but a mode tells its caller what DTM stored (dtmcli::outcome), and this DTM
    // answers the query with a FAILURE as well: a FAILURE it cannot check is not final.
    let e = saga(&dtm, "g").submit().await.unwrap_err();
    assert!(matches!(e, Error::NotFinal { status: None, .. }), "{e:?}");
    assert!(e.to_string().contains("refused"), "{e}");
    let e = submit(&fake("s409plain")).await;
    assert!(matches!(e, Error::Failure(ref m) if m == "nope"), "{e:?}");

    let dtm = fake("s425");
    let e = submit(&dtm).await;
    assert!(matches!(e, Error::Ongoing(ref m) if m == "later"), "{e:?}");
    assert!(e.is_ongoing());
    assert_eq!(e.kind(), dtmcli::ErrorKind::Ongoing);
    let e = saga(&dtm, "g").submit().await.unwrap_err();
    assert!(matches!(e, Error::NotFinal { status: None, .. }), "{e:?}");
    assert_eq!(e.kind(), dtmcli::ErrorKind::Ongoing);

    // A 200 whose body says FAILURE is a failure for the transaction calls...
    let dtm = fake("failure200");
    let e = submit(&dtm).await;
    assert!(
        matches!(e, Error::Failure(ref m) if m == "wait result not return success"),
        "{e:?}"
    );
    // (and, unread, not final for the modes: this DTM holds nothing it will say)
    let e = dtm
        .msg("g")
        .add("http://x/a", &1)
        .prepare("http://x/q")
        .await
        .unwrap_err();
    assert!(e.is_not_final(), "{e:?}");
    // ...but not for newGid, which needs its gid.
    assert_decode(
        "failure200 gid",
        &dtm.new_gid().await.unwrap_err(),
        "FAILURE",
    );

    // A query result that mentions FAILURE is data, not an outcome.
    let q = fake("reason").query("g").await.unwrap();
    let t = q.transaction.unwrap();
    assert_eq!(
        (t.status.as_str(), t.rollback_reason.as_str()),
        ("failed", "branch answered FAILURE")
    );
    assert!(q.branches.is_empty());

    let e = saga(&fake("s204"), "g").submit().await.unwrap_err();
    assert!(matches!(e, Error::Status { status: 204, .. }), "{e:?}");
    let e = fake("no-such-mode").new_gid().await.unwrap_err();
    assert!(matches!(e, Error::Status { status: 404, .. }), "{e:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let fake = fake_dtm().await;
    let slow = fake("slow");
    let dtm = DtmClient::builder(slow.server())
        .limits(dtmcli::Limits::default().with_timeout(Duration::from_millis(300)))
        .build()
        .unwrap();
    let t = Instant::now();
    let e = dtm.new_gid().await.unwrap_err();
    let took = t.elapsed();
    println!("timed out after {took:?}: {e}");
    assert!(e.is_transport(), "{e:?}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

// ---------------------------------------------------------------- malformed branch queries

#[test]
fn malformed_branch_queries_are_invalid_input() {
    for q in [
        "",
        "?",
        "trans_type=saga&branch_id=01&op=action",
        "gid=g&branch_id=01&op=action",
        "gid=g&trans_type=&branch_id=01&op=action",
        "gid=g&trans_type=SAGA&branch_id=01&op=action",
        "gid=g&trans_type=bogus&branch_id=01&op=action",
        "gid=g&trans_type=saga&op=action",
        "gid=g&trans_type=saga&branch_id=01",
        "gid=g&trans_type=saga&branch_id=01&op=",
        "gid=%3B%0A&trans_type=saga&branch_id=01&op=action",
        "%%%&&&===",
    ] {
        invalid_input(q, TransInfo::from_query(q));
    }
    let e = TransInfo::from_query("gid=g&trans_type=bogus&branch_id=01&op=action").unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let e = TransInfo::from_query("trans_type=saga&branch_id=01&op=action").unwrap_err();
    assert!(e.to_string().contains("`gid`"), "{e}");
    // An unknown op is kept, not refused (workflow callbacks carry the workflow name).
    let ok = TransInfo::from_query("?gid=g&trans_type=workflow&branch_id=00&op=wf1").unwrap();
    assert_eq!(ok.op, Op::Other("wf1".into()));
    assert_eq!(ok.trans_type, TransType::Workflow);
}

async fn echo(info: TransInfo) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "gid": info.gid,
        "trans_type": info.trans_type.as_str(),
        "branch_id": info.branch_id,
        "op": info.op.as_str(),
    }))
}

#[tokio::test]
async fn axum_extractor_rejects_malformed_queries_with_400() {
    let base = serve(Router::new().route("/branch", any(echo))).await;
    let http = reqwest::Client::new();
    for q in [
        "",
        "?trans_type=saga&branch_id=01&op=action",
        "?gid=g&trans_type=bogus&branch_id=01&op=action",
        "?gid=g&trans_type=saga&branch_id=01",
        "?gid=&trans_type=saga&branch_id=01&op=action",
        "?%%%",
    ] {
        for post in [false, true] {
            let u = format!("{base}/branch{q}");
            let req = if post {
                http.post(&u).body("{}")
            } else {
                http.get(&u)
            };
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 400, "{q}");
            let ct = resp.headers()[header::CONTENT_TYPE.as_str()]
                .to_str()
                .unwrap()
                .to_string();
            assert_eq!(ct, "application/json", "{q}");
            let body: serde_json::Value = resp.json().await.unwrap();
            let msg = body["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{q}: {body}"));
            assert!(msg.starts_with("invalid input: "), "{q}: {msg}");
            // Neither DTM keyword, so DTM would retry rather than take it as an outcome.
            assert!(
                !msg.contains("FAILURE") && !msg.contains("ONGOING"),
                "{msg}"
            );
        }
    }
    // A well-formed query goes through.
    let resp = http
        .get(format!(
            "{base}/branch?gid=g1&trans_type=tcc&branch_id=0201&op=cancel"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"gid": "g1", "trans_type": "tcc", "branch_id": "0201", "op": "cancel"})
    );
}

// ---------------------------------------------------------------- branch-id overflow

#[tokio::test]
async fn the_hundredth_tcc_branch_overflows() {
    let dtm = dtm();
    let gid = gid("tcc-overflow");
    let req = BusiReq::new(1);
    // 198 registrations take a while on a loaded machine: DTM's default TCC timeout (35 s)
    // must not abort the transaction before the 100th branch is refused.
    let opts = TransOptions::default()
        .retry_interval(Duration::from_secs(1))
        .timeout_to_fail(Duration::from_secs(600))
        .request_timeout(Duration::from_secs(30));
    let (g2, d2) = (gid.clone(), dtm.clone());
    let err = dtm
        .tcc_global_transaction(&gid, opts, |tcc| async move {
            for i in 1..=99 {
                let r = tcc
                    .call_branch(
                        &req,
                        &url("TransOutTry"),
                        &url("TransOutConfirm"),
                        &url("TransOutCancel"),
                    )
                    .await;
                assert!(r.is_ok(), "branch {i}: {r:?}");
            }
            let e = tcc
                .call_branch(
                    &req,
                    &url("TransOutTry"),
                    &url("TransOutConfirm"),
                    &url("TransOutCancel"),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(e, Error::InvalidInput(ref m) if m.contains("overflow")),
                "{e:?}"
            );
            // Nothing was called or registered for the 100th branch.
            assert_eq!(busi().count(&g2, "TransOutTry"), 99);
            let q = d2.query(&g2).await?;
            assert_eq!(q.branches.len(), 2 * 99);
            assert_eq!(q.branches.last().map(|b| b.branch_id.as_str()), Some("99"));
            Err::<(), _>(e)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let q = wait_status(&dtm, &gid, "failed").await;
    let reason = q.transaction.clone().unwrap().rollback_reason;
    assert!(reason.contains("branch id overflow"), "{reason}");
    wait_calls(&gid, "TransOutCancel", 99).await;
    // Cancelled once each, in reverse registration order (the request timeout above keeps
    // a slow cancel from being retried, which would call it twice).
    let cancels: Vec<String> = busi()
        .calls(&gid)
        .into_iter()
        .filter(|c| c.handler == "TransOutCancel")
        .map(|c| c.info.unwrap().branch_id)
        .collect();
    let expected: Vec<String> = (1..=99).rev().map(|i| format!("{i:02}")).collect();
    assert_eq!(cancels, expected);
    assert_eq!(busi().count(&gid, "TransOutConfirm"), 0);
}

#[tokio::test]
async fn nested_tcc_with_a_too_long_parent_id() {
    let dtm = dtm();
    let gid = gid("tcc-nested-long");
    let mut info = TransInfo::new(gid.clone(), TransType::Tcc, "0".repeat(20), Op::Try);
    info.dtm = Some(dtm.server().to_string());
    // A try of the nested TCC rebuilt from `info`: its error.
    let nested_try = |info: TransInfo| {
        let dtm = dtm.clone();
        async move {
            let tcc = Tcc::nested(&dtm, &info).unwrap();
            let (t, c, x) = (
                url("TransInTry"),
                url("TransInConfirm"),
                url("TransInCancel"),
            );
            tcc.call_branch(&BusiReq::new(1), &t, &c, &x)
                .await
                .unwrap_err()
        }
    };
    let e = nested_try(info.clone()).await;
    assert!(
        matches!(e, Error::InvalidInput(ref m) if m.contains("overflow")),
        "{e:?}"
    );
    assert!(busi().calls(&gid).is_empty());

    // 19 characters are allowed: the call reaches DTM, which knows no such transaction.
    info.branch_id = "0".repeat(19);
    let e = nested_try(info.clone()).await;
    assert!(
        matches!(e, Error::Failure(ref m) if m.contains("no trans with gid")),
        "{e:?}"
    );
    assert!(busi().calls(&gid).is_empty());

    // Without `dtm` a nested TCC cannot be built.
    info.dtm = None;
    invalid_input("no dtm", Tcc::nested(&dtm, &info).map(drop));
    info.dtm = Some("not a url".into());
    invalid_input("not a url", Tcc::nested(&dtm, &info).map(drop));
}

// ---------------------------------------------------------------- invalid server URLs

#[test]
fn invalid_dtm_urls_are_refused() {
    for bad in [
        "not a url",
        "ftp://x",
        "",
        "localhost:36789/api/dtmsvr",
        "file:///tmp/dtm",
    ] {
        let e = invalid_input(bad, DtmClient::new(bad));
        assert!(e.to_string().contains("DTM server URL"), "{e}");
    }
    let ok = DtmClient::new("http://127.0.0.1:1/api/dtmsvr/").unwrap();
    assert_eq!(ok.server(), "http://127.0.0.1:1/api/dtmsvr");
    assert!(DtmClient::new("https://dtm.example/api/dtmsvr").is_ok());
    invalid_input("ftp://x", ok.with_server("ftp://x"));
}

#[test]
fn a_dtm_url_without_its_api_path_is_refused() {
    // Without a path every call would be a 404 from DTM, found only at the first call.
    for bad in [
        "http://localhost:36789",
        "http://localhost:36789/",
        "https://u:s3cret@dtm.example",
    ] {
        for e in [
            invalid_input(bad, DtmClient::new(bad)),
            invalid_input(bad, DtmClient::builder(bad).build()),
        ] {
            let m = e.to_string();
            assert!(m.contains("has no path"), "{m}");
            assert!(m.contains("http(s)://host:port/api/dtmsvr"), "{m}");
            assert!(!m.contains("s3cret"), "{m}");
        }
        let e = dtmcli::JsonRpcClient::new(bad).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{bad:?}: {e:?}");
        assert!(e.to_string().contains("/api/json-rpc"), "{e}");
    }
    // A query would end up before the operation's path.
    let e = DtmClient::new("http://h:1/api/dtmsvr?x=1").unwrap_err();
    assert!(e.to_string().contains("query"), "{e}");
    // Another path is a reverse proxy's prefix: accepted.
    let proxied = DtmClient::new("https://gateway.example/dtm/").unwrap();
    assert_eq!(proxied.server(), "https://gateway.example/dtm");
    // A branch request naming a DTM server without a path is refused the same way.
    let e = proxied.with_server("http://localhost:36789").unwrap_err();
    assert!(e.to_string().contains("has no path"), "{e}");
    // JSON-RPC: DTM's HTTP API path is the other endpoint.
    let e = dtmcli::JsonRpcClient::new("http://localhost:36789/api/dtmsvr").unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    assert!(e.to_string().contains("not its JSON-RPC endpoint"), "{e}");
    assert!(dtmcli::JsonRpcClient::new("http://localhost:36789/api/json-rpc").is_ok());
}

// ---------------------------------------------------------------- empty gid

#[tokio::test]
async fn an_empty_gid_is_refused_before_anything_is_sent() {
    let port = dtm_testkit::free_port().unwrap();
    let dtm = DtmClient::new(format!("http://127.0.0.1:{port}/api/dtmsvr")).unwrap();
    let body = BusiReq::new(1);
    // Every mode, and the raw API.
    let raw = dtmcli::TransRequest::new("", TransType::Saga, &TransOptions::default());
    assert_modes_refuse_an_empty_gid!(dtm, "http://127.0.0.1:1/a", body, raw: raw);
    // A nested TCC rebuilt from a hand-made TransInfo (one from a query is checked already).
    let mut info = TransInfo::new("", TransType::Tcc, "01", Op::Try);
    info.dtm = Some(dtm.server().to_string());
    let e = match Tcc::nested(&dtm, &info) {
        Err(e) => e,
        Ok(tcc) => tcc
            .call_branch(
                &body,
                "http://127.0.0.1:1/t",
                "http://127.0.0.1:1/c",
                "http://127.0.0.1:1/x",
            )
            .await
            .unwrap_err(),
    };
    assert_empty_gid("nested tcc", &e);
    // The reads.
    let fields = [("gid", ""), ("trans_type", "tcc"), ("branch_id", "01")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_empty_gid(
        "register_branch",
        &dtm.register_branch(&fields).await.unwrap_err(),
    );
    assert_empty_gid("query", &dtm.query("").await.unwrap_err());
    assert_empty_gid("force_stop", &dtm.force_stop("").await.unwrap_err());
    assert_empty_gid(
        "reset_next_cron_time",
        &dtm.reset_next_cron_time("").await.unwrap_err(),
    );
    // Workflows.
    let wfs = dtm_workflow::Workflows::http(dtm.clone(), "http://127.0.0.1:1/resume");
    wfs.register("w", |_wf, _input| async { panic!("must not run") })
        .unwrap();
    assert_empty_gid("workflow", &wfs.execute("w", "", b"{}").await.unwrap_err());
    // JSON-RPC.
    let rpc = dtmcli::JsonRpcClient::new(format!("http://127.0.0.1:{port}/api/json-rpc")).unwrap();
    assert_modes_refuse_an_empty_gid!(rpc, "http://127.0.0.1:1/a", body);
}
