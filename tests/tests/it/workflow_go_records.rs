//! `RecordFormat::Go`: step records stored as the Go SDK stores them (the raw result bytes),
//! replayed on resume, and records a Go service wrote replayed by this SDK; the default
//! format next to it, unchanged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::support::*;
use crate::workflow_common::{counted_step, recording_clients, RecordingBusi};
use dtm_examples::grpc_busi::pb::{BusiReply, ReqGrpc};
use dtm_workflow::{send_http, RecordFormat, Wf, WfOptions, Workflows};
use dtmcli::{DtmClient, Error, QueryResult, TransOptions, TransRequest, TransType};
use prost::Message;
use reqwest::Method;
use reqwest_middleware::ClientWithMiddleware;

type Client = RecordingBusi;

/// What DTM's HTTP API stores for a successful bank call: its answer body.
const BANK_OK: &[u8] = br#"{"dtm_result":"SUCCESS"}"#;

struct Env {
    /// HTTP, Go records.
    go: Workflows,
    /// HTTP, the default (checked) records.
    checked: Workflows,
    /// gRPC, Go records.
    go_grpc: Workflows,
    /// Runs of local steps by gid.
    local: Arc<Mutex<HashMap<String, usize>>>,
    /// What the local step of `nd` returned, by gid.
    seen: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// Makes `nd` take a local step where it recorded an HTTP call.
    nd_flag: Arc<AtomicBool>,
    /// The callback URLs of `go` and `checked`.
    go_callback: String,
    checked_callback: String,
}

static ENV: OnceLock<Env> = OnceLock::new();

fn opts() -> WfOptions {
    WfOptions {
        trans: TransOptions::default().retry_interval(Duration::from_secs(1)),
        ..Default::default()
    }
}

fn local_count(gid: &str) -> usize {
    let local = wf_env().local.lock().unwrap();
    local.get(gid).copied().unwrap_or(0)
}

async fn post(wf: &Wf, http: &ClientWithMiddleware, handler: &str) -> dtmcli::Result<Vec<u8>> {
    let body = serde_json::to_vec(&BusiReq::new(1)).unwrap();
    send_http(wf.http(http, Method::POST, &url(handler)).body(body)).await
}

/// The workflows every registry gets.
fn register(wfs: &Workflows, http: &ClientWithMiddleware, grpc: &Client, e: &Env0) {
    // 01 a local step, 02 an HTTP call with a commit; the result joins both step results,
    // so a resumed run's result shows what the replayed steps returned.
    let (h, loc) = (http.clone(), e.local.clone());
    wfs.register_with_options("steps", opts(), move |wf, _input| {
        let (http, loc) = (h.clone(), loc.clone());
        async move {
            wf.new_branch()?;
            let out = b"local result".to_vec();
            let mut result = counted_step(&wf, &loc, out, Duration::ZERO).await?;
            wf.new_branch()?;
            wf.on_commit(|_| async { Ok(()) })?;
            result.extend_from_slice(b" + ");
            result.extend(post(&wf, &http, "TransOut").await?);
            wf.new_branch()?;
            post(&wf, &http, "TransIn").await?;
            Ok(result)
        }
    })
    .unwrap();

    // 01 a gRPC call: its record is the reply's protobuf bytes, which is also the result.
    let c = grpc.clone();
    wfs.register_with_options("grpc", opts(), move |wf, _input| {
        let mut c = c.clone();
        async move {
            wf.new_branch()?;
            let reply = c
                .trans_in(wf.grpc_request(ReqGrpc::amount(1)))
                .await
                .map_err(|s| dtmgrpc::status_to_error("TransIn", &s))?;
            Ok(reply.into_inner().encode_to_vec())
        }
    })
    .unwrap();

    // 01 an HTTP call, or (flag set: "new code") a local step in its place; 02 HTTP.
    let (h, flag, seen) = (http.clone(), e.nd_flag.clone(), e.seen.clone());
    wfs.register_with_options("nd", opts(), move |wf, _input| {
        let (http, flag, seen) = (h.clone(), flag.clone(), seen.clone());
        async move {
            wf.new_branch()?;
            if flag.load(Ordering::SeqCst) {
                let first = wf.do_(|_| async { Ok(b"local".to_vec()) }).await?;
                seen.lock().unwrap().insert(wf.gid().to_string(), first);
            } else {
                post(&wf, &http, "TransOut").await?;
            }
            wf.new_branch()?;
            post(&wf, &http, "TransIn").await?;
            Ok(Vec::new())
        }
    })
    .unwrap();

    // A binary result, which DTM's HTTP API cannot store raw.
    wfs.register_with_options("binary", opts(), move |wf, _input| async move {
        wf.new_branch()?;
        wf.do_(|_| async { Ok(vec![0xff, 0x00, 0x9f]) }).await?;
        Ok(Vec::new())
    })
    .unwrap();
}

/// The shared state `register` closes over.
struct Env0 {
    local: Arc<Mutex<HashMap<String, usize>>>,
    seen: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    nd_flag: Arc<AtomicBool>,
}

async fn serve_http(wfs: Workflows, listener: tokio::net::TcpListener) {
    let app = wfs.callback_router("/wf");
    tokio::spawn(async move { axum::serve(listener, app).await });
}

fn wf_env() -> &'static Env {
    ENV.get_or_init(|| {
        let _ = grpc_env();
        let (dtm_http, dtm_grpc) = (env().server.http_url(), env().server.grpc_addr());
        let busi_grpc = grpc_env().base.clone();
        start_on_env(move || async move {
            let (grpc, http) = recording_clients(&busi_grpc);
            let e = Env0 {
                local: Default::default(),
                seen: Default::default(),
                nd_flag: Default::default(),
            };
            let dtm = DtmClient::new(dtm_http.clone()).unwrap();

            let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let go_callback = format!("http://{}/wf", l1.local_addr().unwrap());
            let go = Workflows::http(dtm.clone(), go_callback.clone())
                .with_record_format(RecordFormat::Go);
            assert_eq!(go.record_format(), RecordFormat::Go);
            register(&go, &http, &grpc, &e);
            serve_http(go.clone(), l1).await;

            let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let checked_callback = format!("http://{}/wf", l2.local_addr().unwrap());
            let checked = Workflows::http(dtm, checked_callback.clone());
            assert_eq!(checked.record_format(), RecordFormat::Checked);
            register(&checked, &http, &grpc, &e);
            serve_http(checked.clone(), l2).await;

            let l3 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l3.local_addr().unwrap().to_string();
            let go_grpc = Workflows::grpc(
                dtmgrpc::DtmGrpcClient::builder(dtm_grpc)
                    .http_api(dtm_http)
                    .build()
                    .unwrap(),
                &addr,
            )
            .with_record_format(RecordFormat::Go);
            register(&go_grpc, &http, &grpc, &e);
            tokio::spawn(go_grpc.serve_grpc(l3));
            Env {
                go,
                checked,
                go_grpc,
                local: e.local,
                seen: e.seen,
                nd_flag: e.nd_flag,
                go_callback,
                checked_callback,
            }
        })
    })
}

async fn execute(wfs: &Workflows, name: &str, gid: &str) -> dtmcli::Result<Vec<u8>> {
    let (wfs, name, gid) = (wfs.clone(), name.to_string(), gid.to_string());
    on_env(async move { wfs.execute(&name, &gid, b"").await }).await
}

/// The stored record of `branch_id/op`.
fn record<'q>(q: &'q QueryResult, branch_id: &str, op: &str) -> &'q [u8] {
    let b = q
        .branches
        .iter()
        .find(|b| b.branch_id == branch_id && b.op == op)
        .unwrap_or_else(|| panic!("no {branch_id}/{op} in {:?}", branch_rows(q)));
    &b.bin_data
}

fn joined(local: &[u8], http: &[u8]) -> Vec<u8> {
    [local, b" + ", http].concat()
}

/// Runs workflow `steps` of `wfs` to success as a new gid; returns the gid and its records.
async fn run_steps(wfs: &Workflows, name: &str) -> (String, QueryResult) {
    let gid = gid(name);
    let r = execute(wfs, "steps", &gid).await.unwrap();
    assert_eq!(r, joined(b"local result", BANK_OK));
    let q = wait_status(&dtm(), &gid, "succeed").await;
    (gid, q)
}

#[tokio::test]
async fn go_records_are_the_raw_results_over_http() {
    let (gid, q) = run_steps(&wf_env().go, "wfgo-raw").await;
    assert_eq!(record(&q, "01", "action"), b"local result");
    assert_eq!(record(&q, "02", "action"), BANK_OK);
    assert_eq!(record(&q, "03", "action"), BANK_OK);
    assert_eq!(record(&q, "02", "commit"), b"");
    // Executed again: the stored result, nothing called.
    let again = execute(&wf_env().go, "steps", &gid).await.unwrap();
    assert_eq!(again, joined(b"local result", BANK_OK));
    assert_eq!(local_count(&gid), 1);
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn"]);
}

#[tokio::test]
async fn checked_records_keep_their_header() {
    let (_, q) = run_steps(&wf_env().checked, "wfck-raw").await;
    assert_eq!(record(&q, "01", "action"), b"rs1 local t \nlocal result");
    let http = [
        format!("rs1 http t POST {}\n", url("TransOut")).as_bytes(),
        BANK_OK,
    ]
    .concat();
    assert_eq!(record(&q, "02", "action"), http);
    assert_eq!(record(&q, "02", "commit"), b"rs1 commit t \n");
}

#[tokio::test]
async fn go_records_over_grpc_are_the_raw_reply() {
    let gid = gid("wfgo-grpc");
    let r = execute(&wf_env().go_grpc, "grpc", &gid).await.unwrap();
    let reply = BusiReply {
        message: "TransIn done".into(),
    }
    .encode_to_vec();
    assert_eq!(r, reply);
    let q = wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(q.transaction.as_ref().unwrap().protocol, "grpc");
    assert_eq!(record(&q, "01", "action"), reply);
    // The copy of the result DTM's gRPC API does not return is raw too, and is found again.
    assert_eq!(record(&q, "00", "result"), reply);
    let again = execute(&wf_env().go_grpc, "grpc", &gid).await.unwrap();
    assert_eq!(again, reply);
    assert_eq!(grpc_busi().handlers(&gid), ["TransIn"]);
}

#[tokio::test]
async fn a_go_format_workflow_resumes_from_its_raw_records() {
    let gid = gid("wfgo-resume");
    busi().script(&gid, "TransIn", [Outcome::Error]);
    let err = execute(&wf_env().go, "steps", &gid).await.unwrap_err();
    assert!(!err.is_failure() && !err.is_ongoing(), "{err}");
    // DTM calls the workflow back; steps 01 and 02 replay their raw records.
    let q = wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(local_count(&gid), 1, "the local step ran once");
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn", "TransIn"]);
    assert_eq!(record(&q, "01", "action"), b"local result");
    assert_eq!(record(&q, "02", "action"), BANK_OK);
    // The result DTM stored joins what the replayed steps returned.
    let r = execute(&wf_env().go, "steps", &gid).await.unwrap();
    assert_eq!(r, joined(b"local result", BANK_OK));
}

/// Starts workflow `steps` as a Go service would and records its first two steps with the
/// Go SDK's HTTP `registerBranch` body (raw data), then lets `wfs` (called back at
/// `callback`) resume it.
async fn resume_go_started(wfs: &Workflows, callback: &str, gid: &str) -> Vec<u8> {
    let dtm = dtm();
    let mut req = TransRequest::new(gid, TransType::Workflow, &TransOptions::default());
    req.set_protocol("http");
    req.set_query_prepared(callback);
    req.set_custom_data(r#"{"data":null,"name":"steps"}"#);
    dtm.prepare_workflow(&req).await.unwrap();
    for (branch, data) in [("01", "from go"), ("02", r#"{"go":1}"#)] {
        let fields = [
            ("gid", gid),
            ("trans_type", "workflow"),
            ("branch_id", branch),
            ("op", "action"),
            ("status", "succeed"),
            ("data", data),
            // Not sent by the Go SDK: keeps the record on a default v1.19.0 server.
            ("sync", "1"),
        ];
        let fields = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        dtm.register_branch(&fields).await.unwrap();
    }
    let r = execute(wfs, "steps", gid).await.unwrap();
    wait_status(&dtm, gid, "succeed").await;
    assert_eq!(local_count(gid), 0, "the recorded local step did not run");
    assert_eq!(busi().handlers(gid), ["TransIn"], "only step 03 was called");
    r
}

#[tokio::test]
async fn records_a_go_service_wrote_are_replayed() {
    let gid = gid("wfgo-from-go");
    let r = resume_go_started(&wf_env().go, &wf_env().go_callback, &gid).await;
    assert_eq!(r, joined(b"from go", br#"{"go":1}"#));
}

#[tokio::test]
async fn the_checked_format_replays_go_records_too() {
    let gid = gid("wfck-from-go");
    let r = resume_go_started(&wf_env().checked, &wf_env().checked_callback, &gid).await;
    assert_eq!(r, joined(b"from go", br#"{"go":1}"#));
}

#[tokio::test]
async fn go_records_give_up_the_per_step_check() {
    let (e, checked, go) = (wf_env(), gid("wfck-nd"), gid("wfgo-nd"));
    for gid in [&checked, &go] {
        busi().script(gid, "TransIn", std::iter::repeat_n(Outcome::Error, 1000));
    }
    assert!(!execute(&e.go, "nd", &go).await.unwrap_err().is_failure());
    assert!(!execute(&e.checked, "nd", &checked)
        .await
        .unwrap_err()
        .is_failure());
    e.nd_flag.store(true, Ordering::SeqCst);
    let go_err = execute(&e.go, "nd", &go).await.unwrap_err();
    let checked_err = execute(&e.checked, "nd", &checked).await.unwrap_err();
    e.nd_flag.store(false, Ordering::SeqCst);
    // Checked: the local step where an HTTP call was recorded is refused.
    assert!(
        matches!(checked_err, Error::NonDeterministic(_)),
        "{checked_err}"
    );
    // Go: the local step gets the HTTP call's recorded body (it did not run); the run goes
    // on to step 02.
    assert!(!matches!(go_err, Error::NonDeterministic(_)), "{go_err}");
    assert_eq!(e.seen.lock().unwrap().get(&go).unwrap(), BANK_OK);
    assert_eq!(busi().count(&go, "TransOut"), 1);
    for gid in [&checked, &go] {
        let _ = dtm().force_stop(gid).await;
    }
}

#[tokio::test]
async fn a_binary_result_cannot_be_a_go_record_over_http() {
    let (go, checked) = (gid("wfgo-bin"), gid("wfck-bin"));
    let err = execute(&wf_env().go, "binary", &go).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("not UTF-8"), "{err}");
    let q = dtm().query(&go).await.unwrap();
    assert!(branch_rows(&q).is_empty(), "{:?}", branch_rows(&q));
    let _ = dtm().force_stop(&go).await;
    // The checked format keeps it (base64).
    execute(&wf_env().checked, "binary", &checked)
        .await
        .unwrap();
    let q = wait_status(&dtm(), &checked, "succeed").await;
    assert_eq!(record(&q, "01", "action"), b"rs1 local b \n/wCf");
}
