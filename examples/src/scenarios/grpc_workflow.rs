//! Workflow mode over gRPC: DTM reached over gRPC, resuming workflows through this
//! service's `workflow.Workflow/Execute`; every gRPC call goes through the workflow's tower
//! layer (recorded on DTM, replayed on resume), HTTP calls through its middleware. One
//! registry serves every scenario; each workflow takes the branch URLs in its input.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dtm_workflow::{send_http, Wf, WorkflowGrpc, WorkflowLayer, WorkflowMiddleware, Workflows};
use reqwest::Method;
use reqwest_middleware::ClientWithMiddleware;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use tower_layer::Layer;

use super::env::{expect_tcc_calls, Env};
use super::workflow_steps::{self, BranchCalls, Kind};
use crate::bank::Db;
use crate::busi::BusiReq;
use crate::demo::DemoError;
use crate::grpc_busi::pb::ReqGrpc;
use crate::grpc_busi::GrpcBank;

/// The input of the workflows: branch URLs (gRPC `host:port/pkg.Service/Method`, or
/// `http://...` for an HTTP call with a JSON body), the transfer, and whether to start
/// with a recorded local step.
#[derive(Debug, Serialize, Deserialize)]
struct Input {
    steps: Vec<Vec<String>>,
    amount: i64,
    from: i64,
    to: i64,
    fail_in: bool,
    local_step: bool,
}

impl Input {
    fn req(&self) -> ReqGrpc {
        ReqGrpc::transfer(self.amount, self.from, self.to, self.fail_in)
    }
}

/// Channels per target, each through the workflow layer.
#[derive(Clone, Default)]
struct Channels(Arc<Mutex<HashMap<String, WorkflowGrpc<Channel>>>>);

impl Channels {
    fn get(&self, target: &str) -> dtmcli::Result<WorkflowGrpc<Channel>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(target) {
            return Ok(c.clone());
        }
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
            .map_err(dtmcli::Error::invalid)?
            .connect_lazy();
        let c = WorkflowLayer.layer(ch);
        map.insert(target.to_string(), c.clone());
        Ok(c)
    }
}

/// How a workflow run calls its branches: through the workflow's recording channels and
/// HTTP client, with the run's request.
#[derive(Clone)]
struct Calls {
    channels: Channels,
    http: ClientWithMiddleware,
    req: ReqGrpc,
}

impl Calls {
    /// The run of `input`: the input, and these calls with its request.
    fn for_input(&self, input: &[u8]) -> dtmcli::Result<(Input, Calls)> {
        let i: Input = serde_json::from_slice(input).map_err(dtmcli::Error::invalid)?;
        let calls = Calls {
            req: i.req(),
            ..self.clone()
        };
        Ok((i, calls))
    }
}

impl BranchCalls for Calls {
    /// gRPC (any reply is read as `google.protobuf.Empty`: its fields are not needed), or
    /// HTTP for an `http://` URL.
    async fn call(&self, wf: &Wf, url: &str) -> dtmcli::Result<()> {
        let req = &self.req;
        if url.starts_with("http://") {
            let body = serde_json::to_vec(&BusiReq {
                amount: req.amount,
                trans_out_result: req.trans_out_result.clone(),
                trans_in_result: req.trans_in_result.clone(),
            })
            .map_err(dtmcli::Error::invalid)?;
            let r = wf
                .http(&self.http, Method::POST, url)
                .header("content-type", "application/json")
                .body(body);
            return send_http(r).await.map(drop);
        }
        let u = dtmgrpc::parse_branch_url(url)?;
        let mut grpc = tonic::client::Grpc::new(self.channels.get(&u.address)?);
        let status = |s: tonic::Status| dtmgrpc::status_to_error(&u.method, &s);
        grpc.ready()
            .await
            .map_err(|e| status(tonic::Status::unavailable(e.to_string())))?;
        let path =
            http::uri::PathAndQuery::try_from(u.method.as_str()).map_err(dtmcli::Error::invalid)?;
        let codec = tonic_prost::ProstCodec::<ReqGrpc, ()>::default();
        grpc.unary(wf.grpc_request(req.clone()), path, codec)
            .await
            .map(drop)
            .map_err(status)
    }
}

/// Registers `saga` and `tcc` on a gRPC registry whose resume service is served here.
pub(super) async fn registry(env: &Env) -> Result<Workflows, DemoError> {
    let (dtm, _) = env.grpc().await?;
    let wfs = crate::demo::grpc_workflows(dtm.clone()).await?;
    // What every run shares; each run adds its request.
    let base = Calls {
        channels: Channels::default(),
        http: reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(WorkflowMiddleware)
            .build(),
        req: ReqGrpc::default(),
    };

    for kind in Kind::ALL {
        let base = base.clone();
        wfs.register(kind.name(), move |wf: Wf, input: Vec<u8>| {
            let base = base.clone();
            async move {
                let (i, calls) = base.for_input(&input)?;
                if i.local_step {
                    wf.new_branch()?;
                    wf.do_(|info| async move {
                        println!("   local step runs for branch {}", info.branch_id);
                        Ok(Vec::new())
                    })
                    .await?;
                }
                workflow_steps::run(kind, &wf, &calls, &i.steps).await
            }
        })?;
    }
    Ok(wfs)
}

async fn run(env: &Env, name: &str, input: &Input, ok: bool) -> Result<String, DemoError> {
    let wfs = env.grpc_workflows().await?;
    env.run_workflow(wfs, "gRPC workflow", name, &serde_json::to_vec(input)?, ok)
        .await
}

async fn busi_input(env: &Env, names: &[&[&str]], fail_in: bool) -> Result<Input, DemoError> {
    let busi = &env.grpc().await?.1;
    Ok(Input {
        steps: names
            .iter()
            .map(|s| s.iter().map(|h| busi.url(h)).collect())
            .collect(),
        amount: 30,
        from: 0,
        to: 0,
        fail_in,
        local_step: false,
    })
}

const SAGA: &[&[&str]] = &[
    &["TransOut", "TransOutRevert"],
    &["TransIn", "TransInRevert"],
];
const TCC: &[&[&str]] = &[
    &["TransOutTry", "TransOutConfirm", "TransOutCancel"],
    &["TransInTry", "TransInConfirm", "TransInCancel"],
];

/// `grpc_workflow_simple`: two recorded gRPC calls, no compensations.
pub async fn simple(env: &Env) -> Result<(), DemoError> {
    let input = busi_input(env, &[&["TransOut"], &["TransIn"]], false).await?;
    let gid = run(env, "saga", &input, true).await?;
    env.expect_grpc_calls(&gid, &["TransOut", "TransIn"]).await
}

/// `grpc_workflow_saga`: each branch registers its compensation; all succeed.
pub async fn saga(env: &Env) -> Result<(), DemoError> {
    let gid = run(env, "saga", &busi_input(env, SAGA, false).await?, true).await?;
    env.expect_grpc_calls(&gid, &["TransOut", "TransIn"]).await
}

/// `grpc_workflow_saga_rollback`: the credit fails; the debit is compensated.
pub async fn saga_rollback(env: &Env) -> Result<(), DemoError> {
    let gid = run(env, "saga", &busi_input(env, SAGA, true).await?, false).await?;
    env.expect_grpc_calls(&gid, &["TransOut", "TransIn", "TransOutRevert"])
        .await
}

/// `grpc_workflow_saga_barrier`: the branches are the barrier-guarded gRPC bank on
/// MariaDB; a failing credit leaves the balances where they were.
pub async fn saga_barrier(env: &Env) -> Result<(), DemoError> {
    let base = env.grpc_bank().await?.to_string();
    for fail in [false, true] {
        let (a, b) = env.accounts(Db::Mysql, 100).await?;
        let u = |h| GrpcBank::url(&base, Db::Mysql, h);
        let input = Input {
            steps: vec![
                vec![u("TransOut"), u("TransOutCompensate")],
                vec![u("TransIn"), u("TransInCompensate")],
            ],
            amount: 30,
            from: a,
            to: b,
            fail_in: fail,
            local_step: false,
        };
        run(env, "saga", &input, !fail).await?;
        env.expect_moved(Db::Mysql, a, b, !fail).await?;
    }
    Ok(())
}

/// `grpc_workflow_tcc`: confirm and cancel registered per branch; DTM's second phase
/// confirms both.
pub async fn tcc(env: &Env) -> Result<(), DemoError> {
    let gid = run(env, "tcc", &busi_input(env, TCC, false).await?, true).await?;
    expect_tcc_calls("gRPC", &env.grpc().await?.1.handlers(&gid), true)
}

/// `grpc_workflow_tcc_rollback`: the credit's try fails; the branches are cancelled.
pub async fn tcc_rollback(env: &Env) -> Result<(), DemoError> {
    let gid = run(env, "tcc", &busi_input(env, TCC, true).await?, false).await?;
    expect_tcc_calls("gRPC", &env.grpc().await?.1.handlers(&gid), false)
}

/// `grpc_workflow_mixed`: a recorded local step, an HTTP debit (with its compensation)
/// and a gRPC credit in one workflow; then the same with a failing credit, which
/// compensates the HTTP debit.
pub async fn mixed(env: &Env) -> Result<(), DemoError> {
    let busi = &env.grpc().await?.1;
    for fail in [false, true] {
        let input = Input {
            steps: vec![
                vec![env.url("TransOut"), env.url("TransOutRevert")],
                vec![busi.url("TransIn")],
            ],
            amount: 30,
            from: 0,
            to: 0,
            fail_in: fail,
            local_step: true,
        };
        let gid = run(env, "saga", &input, !fail).await?;
        let http: &[&str] = if fail {
            &["TransOut", "TransOutRevert"]
        } else {
            &["TransOut"]
        };
        env.expect_http_calls(&gid, http)?;
        env.expect_grpc_calls(&gid, &["TransIn"]).await?;
    }
    Ok(())
}
