//! Workflow scenarios over HTTP, shared by the test binaries that run them against a
//! default-configured DTM server and one started with `UPDATE_BRANCH_SYNC=1`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dtm_workflow::{send_http, Wf, WfOptions, WorkflowMiddleware, Workflows};
use dtmcli::{DtmClient, Error, TransOptions};
use reqwest::Method;
use reqwest_middleware::ClientWithMiddleware;

use crate::support::*;

/// The bank's gRPC client, through the workflow's recording layer.
pub type RecordingBusi = dtm_examples::grpc_busi::pb::busi_client::BusiClient<
    dtm_workflow::WorkflowGrpc<tonic::transport::Channel>,
>;

/// Clients whose calls a workflow records and replays: the bank's gRPC service at
/// `busi_grpc` (host:port) through [`dtm_workflow::WorkflowLayer`], and HTTP through
/// [`WorkflowMiddleware`].
pub fn recording_clients(busi_grpc: &str) -> (RecordingBusi, ClientWithMiddleware) {
    use tower_layer::Layer;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{busi_grpc}"))
        .unwrap()
        .connect_lazy();
    let grpc = dtm_examples::grpc_busi::pb::busi_client::BusiClient::new(
        dtm_workflow::WorkflowLayer.layer(channel),
    );
    (grpc, recording_http())
}

/// An HTTP client whose calls a workflow records and replays ([`WorkflowMiddleware`]).
pub fn recording_http() -> ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(WorkflowMiddleware)
        .build()
}

pub struct WfEnv {
    pub wfs: Workflows,
    pub local: Arc<Mutex<HashMap<String, usize>>>,
    pub finished: Arc<Mutex<HashMap<String, Vec<bool>>>>,
    pub nd_flag: Arc<AtomicBool>,
}

static WF: OnceLock<WfEnv> = OnceLock::new();

fn opts(retry: u64) -> WfOptions {
    WfOptions {
        trans: TransOptions::default().retry_interval(Duration::from_secs(retry)),
        ..Default::default()
    }
}

async fn post(
    wf: &Wf,
    http: &ClientWithMiddleware,
    handler: &str,
    body: &[u8],
) -> dtmcli::Result<Vec<u8>> {
    // The action is recorded; commit/rollback callbacks call live: both read as DTM does.
    let request = wf
        .http(http, Method::POST, &url(handler))
        .header("content-type", "application/json")
        .body(body.to_vec());
    send_http(request).await
}

/// Registers `on_rollback` / `on_commit` calling a bank handler live.
fn undo(
    wf: &Wf,
    http: &ClientWithMiddleware,
    handler: &'static str,
    body: &[u8],
    commit: bool,
) -> dtmcli::Result<()> {
    let (wf2, http, body) = (wf.clone(), http.clone(), body.to_vec());
    let f = move |_info| async move { post(&wf2, &http, handler, &body).await.map(drop) };
    if commit {
        wf.on_commit(f)
    } else {
        wf.on_rollback(f)
    }
}

fn count(map: &Arc<Mutex<HashMap<String, usize>>>, gid: &str) {
    *map.lock().unwrap().entry(gid.to_string()).or_default() += 1;
}

/// Registers workflow `name` (retried every second), whose function gets a clone of `http`
/// for each run.
fn with_http<F, Fut>(wfs: &Workflows, name: &str, http: &ClientWithMiddleware, f: F)
where
    F: Fn(Wf, Vec<u8>, ClientWithMiddleware) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = dtmcli::Result<Vec<u8>>> + Send + 'static,
{
    let http = http.clone();
    wfs.register_with_options(name, opts(1), move |wf, input| f(wf, input, http.clone()))
        .unwrap();
}

/// The saga of a transfer: TransOut then TransIn, each a branch with its compensation.
async fn transfer_steps(wf: &Wf, http: &ClientWithMiddleware, input: &[u8]) -> dtmcli::Result<()> {
    wf.new_branch()?;
    undo(wf, http, "TransOutRevert", input, false)?;
    post(wf, http, "TransOut", input).await?;
    wf.new_branch()?;
    undo(wf, http, "TransInRevert", input, false)?;
    post(wf, http, "TransIn", input).await?;
    Ok(())
}

/// A local step that counts its run in `runs` (per gid), takes `delay`, and returns `out`.
pub async fn counted_step(
    wf: &Wf,
    runs: &Arc<Mutex<HashMap<String, usize>>>,
    out: Vec<u8>,
    delay: Duration,
) -> dtmcli::Result<Vec<u8>> {
    let (runs, gid) = (runs.clone(), wf.gid().to_string());
    wf.do_(move |_info| async move {
        count(&runs, &gid);
        tokio::time::sleep(delay).await;
        Ok(out)
    })
    .await
}

pub fn wf_env() -> &'static WfEnv {
    WF.get_or_init(|| {
        let dtm_url = env().server.http_url();
        start_on_env(move || async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let callback = format!("http://{}/api/wf/resume", listener.local_addr().unwrap());
            let wfs = Workflows::http(DtmClient::new(dtm_url).unwrap(), callback);
            let http = recording_http();
            let local: Arc<Mutex<HashMap<String, usize>>> = Default::default();
            let finished: Arc<Mutex<HashMap<String, Vec<bool>>>> = Default::default();
            let nd_flag = Arc::new(AtomicBool::new(false));

            with_http(&wfs, "saga", &http, |wf, input, http| async move {
                transfer_steps(&wf, &http, &input).await?;
                Ok(Vec::new())
            });

            with_http(&wfs, "tcc", &http, |wf, input, http| async move {
                wf.new_branch()?;
                undo(&wf, &http, "TransOutConfirm", &input, true)?;
                undo(&wf, &http, "TransOutCancel", &input, false)?;
                post(&wf, &http, "TransOutTry", &input).await?;
                wf.new_branch()?;
                undo(&wf, &http, "TransInConfirm", &input, true)?;
                undo(&wf, &http, "TransInCancel", &input, false)?;
                post(&wf, &http, "TransInTry", &input).await?;
                Ok(Vec::new())
            });

            let (fin, loc) = (finished.clone(), local.clone());
            wfs.register_with_options("finish", opts(1), move |wf, _input| {
                let (fin, loc) = (fin.clone(), loc.clone());
                async move {
                    wf.new_branch()?;
                    let gid = wf.gid().to_string();
                    wf.on_finish(move |_info, rollback| {
                        let (fin, gid) = (fin.clone(), gid.clone());
                        async move {
                            fin.lock().unwrap().entry(gid).or_default().push(rollback);
                            Ok(())
                        }
                    })?;
                    counted_step(&wf, &loc, b"done".to_vec(), Duration::ZERO).await?;
                    Ok(Vec::new())
                }
            })
            .unwrap();

            let loc = local.clone();
            with_http(&wfs, "resume", &http, move |wf, input, http| {
                let loc = loc.clone();
                async move {
                    wf.new_branch()?;
                    counted_step(&wf, &loc, b"local".to_vec(), Duration::ZERO).await?;
                    wf.new_branch()?;
                    post(&wf, &http, "TransIn", &input).await?;
                    wf.new_branch()?;
                    post(&wf, &http, "TransOut", &input).await?;
                    Ok(Vec::new())
                }
            });

            with_http(&wfs, "phase2", &http, |wf, input, http| async move {
                transfer_steps(&wf, &http, &input).await?;
                wf.new_branch()?;
                post(&wf, &http, "TransOutTry", &input).await?;
                Ok(Vec::new())
            });

            let flag = nd_flag.clone();
            with_http(&wfs, "nd", &http, move |wf, input, http| {
                let flag = flag.clone();
                async move {
                    wf.new_branch()?;
                    if flag.load(Ordering::SeqCst) {
                        // The "new version" of the code: a local step where an HTTP
                        // call was recorded.
                        wf.do_(|_info| async { Ok(Vec::new()) }).await?;
                    } else {
                        post(&wf, &http, "TransOut", &input).await?;
                    }
                    wf.new_branch()?;
                    post(&wf, &http, "TransIn", &input).await?;
                    Ok(Vec::new())
                }
            });

            let loc = local.clone();
            wfs.register_with_options("result", opts(1), move |wf, input| {
                let loc = loc.clone();
                async move {
                    wf.new_branch()?;
                    let mut r = counted_step(&wf, &loc, b"hello ".to_vec(), Duration::ZERO).await?;
                    r.extend_from_slice(&input);
                    Ok(r)
                }
            })
            .unwrap();

            let loc = local.clone();
            wfs.register_with_options("slow", opts(1), move |wf, _input| {
                let loc = loc.clone();
                async move {
                    wf.new_branch()?;
                    // Longer than the retry interval: DTM calls back meanwhile.
                    counted_step(&wf, &loc, Vec::new(), Duration::from_millis(2500)).await?;
                    Ok(Vec::new())
                }
            })
            .unwrap();

            let app = wfs.callback_router("/api/wf/resume");
            tokio::spawn(async move { axum::serve(listener, app).await });
            WfEnv {
                wfs,
                local,
                finished,
                nd_flag,
            }
        })
    })
}

/// Executes on the services' runtime.
pub async fn execute(name: &str, gid: &str, input: &[u8]) -> dtmcli::Result<Vec<u8>> {
    let wfs = wf_env().wfs.clone();
    let (name, gid, input) = (name.to_string(), gid.to_string(), input.to_vec());
    on_env(async move { wfs.execute(&name, &gid, &input).await }).await
}

fn input(req: &BusiReq) -> Vec<u8> {
    serde_json::to_vec(req).unwrap()
}

/// A transfer of `amount` whose credit (TransIn) the bank refuses.
fn refused_in(amount: i64) -> BusiReq {
    BusiReq {
        amount,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    }
}

/// How many times a counted step ran for `gid`.
pub fn counted_step_runs(runs: &Arc<Mutex<HashMap<String, usize>>>, gid: &str) -> usize {
    runs.lock().unwrap().get(gid).copied().unwrap_or(0)
}

fn local_count(gid: &str) -> usize {
    counted_step_runs(&wf_env().local, gid)
}

pub async fn saga_success() {
    let gid = gid("wf-saga-ok");
    execute("saga", &gid, &input(&BusiReq::new(30)))
        .await
        .unwrap();
    let q = wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn"]);
    // Both actions carried the workflow's transaction info.
    let c = busi().calls(&gid);
    let info = c[1].info.clone().unwrap();
    assert_eq!(info_of(&info), "workflow/02/action");
    let rows = branch_rows(&q);
    assert!(rows.contains(&"01/action=succeed".to_string()), "{rows:?}");
    assert!(rows.contains(&"02/action=succeed".to_string()), "{rows:?}");
}

pub async fn saga_rollback_skips_the_failed_branch() {
    let gid = gid("wf-saga-rb");
    let req = refused_in(30);
    let err = execute("saga", &gid, &input(&req)).await.unwrap_err();
    assert!(err.is_failure(), "{err}");
    let q = wait_status(&dtm(), &gid, "failed").await;
    assert_eq!(
        busi().handlers(&gid),
        ["TransOut", "TransIn", "TransOutRevert"]
    );
    let rb = busi().calls(&gid)[2].info.clone().unwrap();
    assert_eq!((rb.branch_id.as_str(), rb.op.as_str()), ("01", "rollback"));
    assert!(q
        .transaction
        .unwrap()
        .rollback_reason
        .contains("TransIn refused"));
    // Executing the failed workflow again returns the failure without calling anything.
    let again = execute("saga", &gid, &input(&req)).await.unwrap_err();
    assert!(again.is_failure());
    assert_eq!(busi().calls(&gid).len(), 3);
}

pub async fn tcc_commit() {
    let gid = gid("wf-tcc-ok");
    execute("tcc", &gid, &input(&BusiReq::new(5)))
        .await
        .unwrap();
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(
        busi().handlers(&gid),
        [
            "TransOutTry",
            "TransInTry",
            "TransInConfirm",
            "TransOutConfirm"
        ]
    );
}

pub async fn tcc_rollback() {
    let gid = gid("wf-tcc-rb");
    let req = refused_in(5);
    assert!(execute("tcc", &gid, &input(&req))
        .await
        .unwrap_err()
        .is_failure());
    wait_status(&dtm(), &gid, "failed").await;
    assert_eq!(
        busi().handlers(&gid),
        ["TransOutTry", "TransInTry", "TransOutCancel"]
    );
}

pub async fn success_with_on_finish() {
    let gid = gid("wf-finish");
    execute("finish", &gid, b"").await.unwrap();
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(local_count(&gid), 1);
    assert_eq!(
        wf_env().finished.lock().unwrap().get(&gid),
        Some(&vec![false])
    );
}

async fn resume_after(outcome: Outcome, name: &str) {
    let gid = gid(name);
    busi().script(&gid, "TransIn", [outcome.clone()]);
    let err = execute("resume", &gid, &input(&BusiReq::new(1)))
        .await
        .unwrap_err();
    match outcome {
        Outcome::Ongoing => assert!(err.is_ongoing(), "{err}"),
        _ => assert!(!err.is_failure() && !err.is_ongoing(), "{err}"),
    }
    // DTM calls the workflow back; it completes without re-running finished steps.
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(local_count(&gid), 1, "the local step ran once");
    assert_eq!(busi().handlers(&gid), ["TransIn", "TransIn", "TransOut"]);
}

pub async fn resume_after_error() {
    resume_after(Outcome::Error, "wf-resume-err").await
}

pub async fn resume_after_ongoing() {
    resume_after(Outcome::Ongoing, "wf-resume-ongoing").await
}

pub async fn resume_during_phase2() {
    let gid = gid("wf-phase2");
    busi().script(&gid, "TransOutTry", [Outcome::Failure]);
    busi().script(&gid, "TransOutRevert", [Outcome::Error]);
    let err = execute("phase2", &gid, &input(&BusiReq::new(1)))
        .await
        .unwrap_err();
    assert!(!err.is_failure(), "phase 2 did not finish: {err}");
    wait_status(&dtm(), &gid, "failed").await;
    // Branch 02's rollback succeeded on the first run and was replayed; branch 01's was
    // retried; no action ran twice.
    assert_eq!(busi().count(&gid, "TransInRevert"), 1);
    assert_eq!(busi().count(&gid, "TransOutRevert"), 2);
    assert_eq!(busi().count(&gid, "TransOut"), 1);
    assert_eq!(busi().count(&gid, "TransIn"), 1);
    assert_eq!(busi().count(&gid, "TransOutTry"), 1);
}

pub async fn non_determinism_is_detected() {
    let gid = gid("wf-nd");
    busi().script(&gid, "TransIn", std::iter::repeat_n(Outcome::Error, 1000));
    let err = execute("nd", &gid, &input(&BusiReq::new(1)))
        .await
        .unwrap_err();
    assert!(!err.is_failure());
    wf_env().nd_flag.store(true, Ordering::SeqCst);
    let err = execute("nd", &gid, &input(&BusiReq::new(1)))
        .await
        .unwrap_err();
    wf_env().nd_flag.store(false, Ordering::SeqCst);
    assert!(matches!(err, Error::NonDeterministic(_)), "{err}");
    assert!(err.to_string().contains("01-action"), "{err}");
    assert_eq!(busi().count(&gid, "TransOut"), 1);
    let _ = dtm().force_stop(&gid).await;
}

pub async fn finished_workflow_returns_its_result() {
    let gid = gid("wf-result");
    let r = execute("result", &gid, b"world").await.unwrap();
    assert_eq!(r, b"hello world");
    wait_status(&dtm(), &gid, "succeed").await;
    let again = execute("result", &gid, b"world").await.unwrap();
    assert_eq!(again, b"hello world");
    assert_eq!(local_count(&gid), 1);
}

pub async fn callback_during_a_slow_step_does_not_run_it_twice() {
    let gid = gid("wf-slow");
    execute("slow", &gid, b"").await.unwrap();
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(local_count(&gid), 1, "the slow step ran once");
}

pub async fn unknown_and_duplicate_names_are_errors() {
    let e = execute("nope", &gid("wf-nope"), b"").await.unwrap_err();
    assert!(e.to_string().contains("not registered"), "{e}");
    let e = wf_env()
        .wfs
        .register("saga", |_wf, _in| async { Ok(()) })
        .unwrap_err();
    assert!(e.to_string().contains("already registered"), "{e}");
}

/// One `#[tokio::test]` per named scenario, each calling `setup()` first.
#[macro_export]
macro_rules! workflow_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                setup();
                workflow_common::$name().await
            }
        )*
    };
}
