//! A workflow resume callback runs only what DTM stored (dtm_workflow's resume module): a
//! forged callback, for a gid DTM holds or one it does not, over HTTP and gRPC, runs nothing
//! and creates nothing, and the workflow still finishes with the input it was started with.
//!
//! The workflow `pay` credits `amount` to account `to` in step 2, a recorded HTTP call to
//! the barrier-guarded bank on MariaDB, which fails retryably on its first run, so the
//! workflow is left for DTM to resume. Before DTM does, a forger posts the callback with
//! another payee and amount. The balances in MariaDB show what ran.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::support::*;
use dtm_examples::bank::{BankReq, Db};
use dtm_workflow::{send_http, Wf, WfOptions, WorkflowMiddleware, Workflows};
use dtmcli::{DtmClient, Error, TransOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    to: i64,
    amount: i64,
}

/// The two registries (HTTP and gRPC).
struct Env {
    http: Workflows,
    http_callback: String,
    grpc_addr: String,
    grpc: Workflows,
}

fn register(wfs: &Workflows, bank: &str) {
    let options = WfOptions {
        trans: TransOptions::default().retry_interval(Duration::from_secs(1)),
        ..Default::default()
    };
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(WorkflowMiddleware)
        .build();
    let credit = format!("{bank}/mysql/TransIn");
    // Step 2 fails on its first run in this process, for each gid.
    let tried: Arc<Mutex<HashSet<String>>> = Default::default();
    wfs.register_with_options("pay", options, move |wf: Wf, input: Vec<u8>| {
        let (http, credit, tried) = (http.clone(), credit.clone(), tried.clone());
        async move {
            let p: Payment = serde_json::from_slice(&input).map_err(Error::invalid)?;
            wf.new_branch()?;
            wf.do_(|_| async { Ok(b"checked".to_vec()) }).await?;
            wf.new_branch()?;
            if tried.lock().unwrap().insert(wf.gid().to_string()) {
                return Err(Error::other("the payment service is down"));
            }
            let req = BankReq::transfer(p.amount, 0, p.to, false);
            let body = serde_json::to_vec(&req).map_err(Error::invalid)?;
            let call = wf
                .http(&http, reqwest::Method::POST, &credit)
                .header("content-type", "application/json")
                .body(body);
            send_http(call).await?;
            Ok(Vec::new())
        }
    })
    .unwrap();
}

fn wf_env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let (dtm_http, dtm_grpc) = (env().server.http_url(), env().server.grpc_addr());
        let bank = bank_env().base.clone();
        start_on_env(move || async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            // A password in the callback URL, which Debug must not print.
            let http_callback = format!(
                "http://user:cb-secret@{}/api/wf/resume",
                listener.local_addr().unwrap()
            );
            let http = Workflows::http(DtmClient::new(dtm_http.clone()).unwrap(), &http_callback);
            register(&http, &bank);
            let app = http.callback_router("/api/wf/resume");
            tokio::spawn(async move { axum::serve(listener, app).await });

            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let grpc_addr = listener.local_addr().unwrap().to_string();
            let client = dtmgrpc::DtmGrpcClient::builder(dtm_grpc)
                .http_api(dtm_http)
                .build()
                .unwrap();
            let grpc = Workflows::grpc(client, &grpc_addr);
            register(&grpc, &bank);
            tokio::spawn(grpc.serve_grpc(listener));
            Env {
                http,
                http_callback,
                grpc_addr,
                grpc,
            }
        })
    })
}

/// Two fresh MariaDB accounts with a zero balance: alice and mallory.
async fn accounts() -> (i64, i64) {
    static N: AtomicI64 = AtomicI64::new(0);
    let a = (std::process::id() as i64) * 1_000_000 + 7_000 + N.fetch_add(2, Ordering::Relaxed);
    let bank = bank_env().bank.clone();
    on_env(async move {
        for user in [a, a + 1] {
            bank.open_account(Db::Mysql, user, 0).await.unwrap();
        }
    })
    .await;
    (a, a + 1)
}

async fn balances(users: (i64, i64)) -> (i64, i64) {
    let bank = bank_env().bank.clone();
    on_env(async move {
        (
            bank.balance(Db::Mysql, users.0).await.unwrap(),
            bank.balance(Db::Mysql, users.1).await.unwrap(),
        )
    })
    .await
}

fn pay(to: i64, amount: i64) -> Vec<u8> {
    serde_json::to_vec(&Payment { to, amount }).unwrap()
}

/// Posts DTM's resume callback for `gid` with `body`, as a forger would: returns the HTTP
/// status.
async fn forge_http(gid: &str, name: &str, body: Vec<u8>) -> u16 {
    let url = wf_env().http_callback.replacen("user:cb-secret@", "", 1);
    reqwest::Client::new()
        .post(url)
        .query(&[
            ("gid", gid),
            ("trans_type", "workflow"),
            ("branch_id", "00"),
            ("op", name),
        ])
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Calls `workflow.Workflow/Execute` for `gid` with `body`, as a forger would.
async fn forge_grpc(gid: &str, name: &str, body: Vec<u8>) -> Result<(), tonic::Status> {
    use dtmgrpc::pb::workflow::workflow_client::WorkflowClient;
    use dtmgrpc::pb::workflow::WorkflowData;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", wf_env().grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut req = tonic::Request::new(WorkflowData { data: body.into() });
    for (k, v) in [
        ("dtm-gid", gid),
        ("dtm-trans_type", "workflow"),
        ("dtm-branch_id", "00"),
        ("dtm-op", name),
    ] {
        req.metadata_mut().insert(k, v.parse().unwrap());
    }
    WorkflowClient::new(channel).execute(req).await.map(drop)
}

/// Starts `pay` for `gid` (its step 2 fails once), forges a resume with mallory's
/// payment, and checks that the forgery ran nothing and that DTM's own resume pays alice.
async fn forged_resume_of_an_existing_workflow(grpc: bool) {
    let e = wf_env();
    let wfs = if grpc { &e.grpc } else { &e.http };
    let (alice, mallory) = accounts().await;
    let gid = gid(if grpc { "wfr-g" } else { "wfr-h" });
    let first = wfs.execute("pay", &gid, &pay(alice, 10)).await;
    assert!(
        first.is_err() && !first.as_ref().unwrap_err().is_failure(),
        "{first:?}"
    );
    let forged = pay(mallory, 1_000_000);
    if grpc {
        let status = forge_grpc(&gid, "pay", forged.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("not the input DTM stored"),
            "{status:?}"
        );
    } else {
        assert_eq!(forge_http(&gid, "pay", forged.clone()).await, 400);
        // The application itself asking for another input is refused as well: DTM's
        // prepareWorkflow answer over HTTP carries the stored input.
        let again = wfs.execute("pay", &gid, &forged).await.unwrap_err();
        assert!(matches!(again, Error::InvalidInput(_)), "{again:?}");
    }
    assert_eq!(
        balances((alice, mallory)).await,
        (0, 0),
        "the forged input ran"
    );
    // DTM resumes it with what it stored: alice is paid, once.
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(balances((alice, mallory)).await, (10, 0));
    assert_eq!(bank_env().bank.executed(&gid, "TransIn"), 1);
}

/// A forged callback for a gid DTM does not hold, or for a transaction that is not this
/// workflow, runs nothing and creates nothing.
async fn forged_resume_of_what_dtm_does_not_hold(grpc: bool) {
    let (alice, mallory) = accounts().await;
    let unknown = gid(if grpc { "wfr-none-g" } else { "wfr-none-h" });
    let saga_gid = gid("wfr-saga");
    dtm()
        .saga(&saga_gid)
        .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(1))
        .with_options(TransOptions::default().wait_result(true))
        .submit()
        .await
        .unwrap();
    let other = gid("wfr-other");
    let first = wf_env().http.execute("pay", &other, &pay(alice, 10)).await;
    assert!(first.is_err(), "{first:?}");
    let forged = pay(mallory, 1_000_000);
    for (g, name) in [(&unknown, "pay"), (&saga_gid, "pay"), (&other, "refund")] {
        if grpc {
            let status = forge_grpc(g, name, forged.clone()).await.unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{g}: {status:?}"
            );
        } else {
            assert_eq!(forge_http(g, name, forged.clone()).await, 400, "{g}");
        }
    }
    assert_eq!(
        balances((alice, mallory)).await,
        (0, 0),
        "a forged callback ran"
    );
    let q = dtm().query(&unknown).await.unwrap();
    assert!(
        q.transaction.is_none(),
        "the forged callback created {unknown}: {q:?}"
    );
    assert_eq!(
        dtm()
            .query(&saga_gid)
            .await
            .unwrap()
            .transaction
            .unwrap()
            .trans_type,
        "saga"
    );
    wait_status(&dtm(), &other, "succeed").await;
    assert_eq!(balances((alice, mallory)).await, (10, 0));
}

#[tokio::test]
async fn http_forged_resume_of_an_existing_workflow_is_refused() {
    forged_resume_of_an_existing_workflow(false).await;
}

#[tokio::test]
async fn grpc_forged_resume_of_an_existing_workflow_is_refused() {
    forged_resume_of_an_existing_workflow(true).await;
}

#[tokio::test]
async fn http_forged_resume_of_what_dtm_does_not_hold_runs_and_creates_nothing() {
    forged_resume_of_what_dtm_does_not_hold(false).await;
}

#[tokio::test]
async fn grpc_forged_resume_of_what_dtm_does_not_hold_runs_and_creates_nothing() {
    forged_resume_of_what_dtm_does_not_hold(true).await;
}

/// A gRPC registry without DTM's HTTP API cannot check a callback: it refuses every one,
/// even DTM's own, rather than trust the body.
#[tokio::test]
async fn a_grpc_registry_that_cannot_read_dtm_refuses_resumes() {
    let blind = Workflows::grpc(
        dtmgrpc::DtmGrpcClient::new(env().server.grpc_addr()).unwrap(),
        "127.0.0.1:1",
    );
    register(&blind, "http://127.0.0.1:1");
    let e = blind
        .execute_callback(
            "gid=g-blind&trans_type=workflow&branch_id=00&op=pay",
            &pay(1, 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidInput(ref m) if m.contains("HTTP")),
        "{e:?}"
    );
}

/// The registry's Debug output names the callback without its password.
#[test]
fn debug_redacts_the_callback_url() {
    let text = format!("{:?}", wf_env().http);
    assert!(!text.contains("cb-secret"), "{text}");
    assert!(text.contains("/api/wf/resume"), "{text}");
}
