//! Workflow mode over gRPC (DTM's gRPC API, the `workflow.Workflow/Execute` callback, the
//! recording tower layer), and a workflow mixing local, HTTP and gRPC steps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::support::*;
use crate::workflow_common::{recording_clients, RecordingBusi};
use dtm_examples::grpc_busi::pb::busi_client::BusiClient;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_workflow::{into_dtm_error, Wf, WfOptions, WorkflowLayer, WorkflowMiddleware, Workflows};
use dtmcli::{DtmClient, TransOptions};
use prost::Message;
use reqwest::Method;
use tower_layer::Layer;

type Client = RecordingBusi;

struct WfGrpc {
    grpc: Workflows,
    http: Workflows,
    local: Arc<Mutex<HashMap<String, usize>>>,
}

static WF: OnceLock<WfGrpc> = OnceLock::new();

fn opts() -> WfOptions {
    WfOptions {
        trans: TransOptions::default().retry_interval(Duration::from_secs(1)),
        ..Default::default()
    }
}

/// A unary call of the gRPC bank inside a workflow, its status mapped to DTM's outcome.
macro_rules! grpc {
    ($wf:expr, $client:expr, $method:ident, $req:expr) => {{
        let mut c: Client = $client.clone();
        c.$method($wf.grpc_request($req.clone()))
            .await
            .map_err(|s| dtmgrpc::status_to_error(stringify!($method), &s))
    }};
}

/// Registers workflow `name`, whose input is a `ReqGrpc`: its function gets the decoded
/// request and a clone of `client` for each run.
fn with_grpc<F, Fut>(wfs: &Workflows, name: &str, client: &Client, f: F)
where
    F: Fn(Wf, ReqGrpc, Client) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = dtmcli::Result<Vec<u8>>> + Send + 'static,
{
    let client = client.clone();
    wfs.register_with_options(name, opts(), move |wf, input| {
        let run = ReqGrpc::decode(input.as_slice()).map(|req| f(wf, req, client.clone()));
        async move { run.map_err(dtmcli::Error::other)?.await }
    })
    .unwrap();
}

fn register(
    wfs: &Workflows,
    client: &Client,
    http: &reqwest_middleware::ClientWithMiddleware,
    http_base: &str,
    local: &Arc<Mutex<HashMap<String, usize>>>,
) {
    with_grpc(wfs, "saga", client, |wf, req, c| async move {
        wf.new_branch()?;
        let (wf2, c2, r2) = (wf.clone(), c.clone(), req.clone());
        wf.on_rollback(move |_| async move { grpc!(wf2, c2, trans_out_revert, r2).map(drop) })?;
        grpc!(wf, c, trans_out, req)?;
        wf.new_branch()?;
        let (wf2, c2, r2) = (wf.clone(), c.clone(), req.clone());
        wf.on_rollback(move |_| async move { grpc!(wf2, c2, trans_in_revert, r2).map(drop) })?;
        grpc!(wf, c, trans_in, req)?;
        Ok(Vec::new())
    });

    let (c, h, base, loc) = (
        client.clone(),
        http.clone(),
        http_base.to_string(),
        local.clone(),
    );
    wfs.register_with_options("mixed", opts(), move |wf: Wf, input| {
        let (c, h, base, loc) = (c.clone(), h.clone(), base.clone(), loc.clone());
        async move {
            let req = ReqGrpc::decode(input.as_slice()).map_err(dtmcli::Error::other)?;
            // 01: a local step.
            wf.new_branch()?;
            let gid = wf.gid().to_string();
            wf.do_(move |_| async move {
                *loc.lock().unwrap().entry(gid).or_default() += 1;
                Ok(b"local".to_vec())
            })
            .await?;
            // 02: HTTP.
            wf.new_branch()?;
            let body = serde_json::to_vec(&BusiReq::new(req.amount)).unwrap();
            let resp = wf
                .http(&h, Method::POST, &format!("{base}/TransOut"))
                .body(body)
                .send()
                .await
                .map_err(into_dtm_error)?;
            assert_eq!(resp.status(), 200);
            // 03: gRPC; its reply (binary protobuf) is recorded and replayed intact.
            wf.new_branch()?;
            let reply = grpc!(wf, c, trans_in, req)?;
            Ok(reply.into_inner().encode_to_vec())
        }
    })
    .unwrap();

    with_grpc(wfs, "resume", client, |wf, req, c| async move {
        wf.new_branch()?;
        grpc!(wf, c, trans_out, req)?;
        wf.new_branch()?;
        grpc!(wf, c, trans_in, req)?;
        Ok(b"resumed result".to_vec())
    });

    // A deadline and a patch: DTM's gRPC answers carry neither the transaction's creation
    // time nor its custom_data, which both need (read through the HTTP API).
    let budget = WfOptions {
        deadline: Some(Duration::from_secs(2)),
        ..opts()
    };
    let c = client.clone();
    wfs.register_with_options("deadline", budget, move |wf, input| {
        let c = c.clone();
        async move {
            let req = ReqGrpc::decode(input.as_slice()).map_err(dtmcli::Error::other)?;
            wf.new_branch()?;
            let (wf2, c2, r2) = (wf.clone(), c.clone(), req.clone());
            wf.on_rollback(move |_| async move { grpc!(wf2, c2, trans_out_revert, r2).map(drop) })?;
            grpc!(wf, c, trans_out, req)?;
            if wf.patched("second-leg").await? {
                wf.new_branch()?;
                grpc!(wf, c, trans_in, req)?;
            }
            Ok(Vec::new())
        }
    })
    .unwrap();
}

fn wf_env() -> &'static WfGrpc {
    WF.get_or_init(|| {
        let _ = grpc_env();
        let (dtm_http, dtm_grpc) = (env().server.http_url(), env().server.grpc_addr());
        let (busi_grpc, busi_http) = (grpc_env().base.clone(), env().base.clone());
        start_on_env(move || async move {
            let (client, http) = recording_clients(&busi_grpc);
            let local = Arc::new(Mutex::new(HashMap::new()));

            // The gRPC registry, served on its own tonic server.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let grpc_dtm = dtmgrpc::DtmGrpcClient::builder(dtm_grpc)
                .http_api(dtm_http.clone())
                .build()
                .unwrap();
            let grpc = Workflows::grpc(grpc_dtm, &addr);
            register(&grpc, &client, &http, &busi_http, &local);
            tokio::spawn(grpc.serve_grpc(listener));

            // The same workflows under the HTTP protocol.
            let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let cb = format!("http://{}/wf", l2.local_addr().unwrap());
            let httpw = Workflows::http(DtmClient::new(dtm_http).unwrap(), cb);
            register(&httpw, &client, &http, &busi_http, &local);
            let app = httpw.callback_router("/wf");
            tokio::spawn(async move { axum::serve(l2, app).await });
            WfGrpc {
                grpc,
                http: httpw,
                local,
            }
        })
    })
}

async fn execute(
    over_grpc: bool,
    name: &str,
    gid: &str,
    input: Vec<u8>,
) -> dtmcli::Result<Vec<u8>> {
    let wfs = if over_grpc {
        wf_env().grpc.clone()
    } else {
        wf_env().http.clone()
    };
    let (name, gid) = (name.to_string(), gid.to_string());
    on_env(async move { wfs.execute(&name, &gid, &input).await }).await
}

#[tokio::test]
async fn grpc_saga_success_and_records() {
    let gid = gid("wfg-ok");
    execute(true, "saga", &gid, ReqGrpc::amount(30).encode_to_vec())
        .await
        .unwrap();
    let q = wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(q.transaction.as_ref().unwrap().protocol, "grpc");
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransIn"]);
    let c = &grpc_busi().calls(&gid)[1];
    let info = c.info.clone().unwrap();
    assert_eq!(info_of(&info), "workflow/02/action");
    let rows = branch_rows(&q);
    assert!(rows.contains(&"02/action=succeed".to_string()), "{rows:?}");
    // Its result is empty: no copy of it is recorded (one registerBranch fewer), and
    // executing the finished workflow again still returns it, running nothing.
    assert!(!rows.iter().any(|r| r.starts_with("00/result")), "{rows:?}");
    let again = execute(true, "saga", &gid, ReqGrpc::amount(30).encode_to_vec())
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransIn"]);
}

#[tokio::test]
async fn grpc_saga_rollback() {
    let gid = gid("wfg-rb");
    let req = ReqGrpc {
        amount: 30,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    let err = execute(true, "saga", &gid, req.encode_to_vec())
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    wait_status(&dtm(), &gid, "failed").await;
    assert_eq!(
        grpc_busi().handlers(&gid),
        ["TransOut", "TransIn", "TransOutRevert"]
    );
    let rb = grpc_busi().calls(&gid)[2].info.clone().unwrap();
    assert_eq!((rb.branch_id.as_str(), rb.op.as_str()), ("01", "rollback"));
}

#[tokio::test]
async fn grpc_resume_through_execute_callback() {
    let gid = gid("wfg-resume");
    grpc_busi().script(&gid, "TransIn", [dtm_examples::busi::Outcome::Error]);
    let err = execute(true, "resume", &gid, ReqGrpc::amount(1).encode_to_vec())
        .await
        .unwrap_err();
    assert!(!err.is_failure(), "{err}");
    // DTM calls /workflow.Workflow/Execute; the workflow completes without re-calling TransOut.
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(
        grpc_busi().handlers(&gid),
        ["TransOut", "TransIn", "TransIn"]
    );
    // A finished gRPC workflow executed again returns its result (DTM's gRPC API does not
    // return it; the SDK keeps a copy).
    let r = settled(|| execute(true, "resume", &gid, ReqGrpc::amount(1).encode_to_vec()))
        .await
        .unwrap();
    assert_eq!(r, b"resumed result");
    assert_eq!(grpc_busi().calls(&gid).len(), 3);
}

#[tokio::test]
async fn grpc_deadline_and_patch_read_the_transaction_through_the_http_api() {
    let gid = gid("wfg-deadline");
    grpc_busi().script(&gid, "TransIn", vec![Outcome::Error; 100]);
    let err = execute(true, "deadline", &gid, ReqGrpc::amount(2).encode_to_vec())
        .await
        .unwrap_err();
    assert!(!err.is_failure(), "{err}");
    // The first run created the workflow: it took the patched path, and recorded that.
    let q = dtm().query(&gid).await.unwrap();
    let rows = branch_rows(&q);
    assert!(
        rows.contains(&"00/patch-second-leg=succeed".to_string()),
        "{rows:?}"
    );
    // DTM resumes it every second (the same path: the marker), until 2 s after its
    // creation the workflow rolls back.
    let q = wait_status(&dtm(), &gid, "failed").await;
    let why = &q.transaction.as_ref().unwrap().rollback_reason;
    assert!(why.contains("deadline of 2s"), "{why}");
    let handlers = grpc_busi().handlers(&gid);
    assert_eq!(handlers.first().map(String::as_str), Some("TransOut"));
    assert_eq!(handlers.last().map(String::as_str), Some("TransOutRevert"));
    assert!(
        handlers.iter().filter(|h| *h == "TransIn").count() >= 1,
        "{handlers:?}"
    );
    assert_eq!(handlers.iter().filter(|h| *h == "TransOut").count(), 1);
}

async fn mixed(over_grpc: bool, name: &str) {
    let gid = gid(name);
    busi().script(&gid, "TransOut", [Outcome::Error]);
    // First run: the HTTP step errors after the local step ran; DTM resumes the workflow.
    let err = execute(over_grpc, "mixed", &gid, ReqGrpc::amount(3).encode_to_vec())
        .await
        .unwrap_err();
    assert!(!err.is_failure(), "{err}");
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(wf_env().local.lock().unwrap().get(&gid).copied(), Some(1));
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransOut"]);
    assert_eq!(grpc_busi().handlers(&gid), ["TransIn"]);
    // Executed again once finished: the stored result (the gRPC reply the workflow returned,
    // binary protobuf) comes back intact, and nothing is called.
    let r = settled(|| execute(over_grpc, "mixed", &gid, ReqGrpc::amount(3).encode_to_vec()))
        .await
        .unwrap();
    let reply = dtm_examples::grpc_busi::pb::BusiReply::decode(r.as_slice()).unwrap();
    assert_eq!(reply.message, "TransIn done");
    assert_eq!(grpc_busi().handlers(&gid), ["TransIn"]);
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransOut"]);
}

#[tokio::test]
async fn mixed_local_http_grpc_over_grpc() {
    mixed(true, "wfg-mixed").await
}

#[tokio::test]
async fn mixed_local_http_grpc_over_http() {
    mixed(false, "wfh-mixed").await
}

#[tokio::test]
async fn outside_a_workflow_calls_pass_untouched() {
    let _ = wf_env();
    let base = grpc_env().base.clone();
    let http_base = env().base.clone();
    let (grpc_before, http_before) = (grpc_busi().bad_calls().len(), busi().calls("").len());
    on_env(async move {
        // gRPC through the recording layer, without a workflow: no dtm-* metadata, a live call.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{base}"))
            .unwrap()
            .connect_lazy();
        let mut client: Client = BusiClient::new(WorkflowLayer.layer(channel));
        // The bank refuses a call without transaction metadata: proof that the layer added
        // none and called live.
        let status = client
            .trans_out(tonic::Request::new(ReqGrpc::amount(1)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("dtm-gid"), "{status:?}");
        // HTTP through the recording middleware, without a workflow: the query is untouched.
        let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(WorkflowMiddleware)
            .build();
        let resp = http
            .post(format!("{http_base}/TransOut?x=1"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    })
    .await;
    let bad = grpc_busi().bad_calls();
    assert_eq!(
        bad.len(),
        grpc_before + 1,
        "one call without transaction metadata"
    );
    let last = bad.last().unwrap();
    assert_eq!(last.handler, "TransOut");
    let plain = busi().calls("");
    assert_eq!(plain.len(), http_before + 1);
    assert_eq!(plain.last().unwrap().query, "x=1");
}
