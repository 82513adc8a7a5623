//! Workflow mode over HTTP: transactions written as plain code, each branch's call recorded
//! on DTM through the workflow middleware; compensations (`on_rollback`) and confirms
//! (`on_commit`) registered per branch. One registry serves every scenario; each workflow
//! takes the URLs it calls in its input (DTM keeps the input, so a resumed run calls the
//! same ones).

use dtm_barrier::xa::XaLocal;
use dtm_workflow::{send_http, Wf, WorkflowMiddleware, Workflows};
use dtmcli::DtmClient;
use reqwest::Method;
use reqwest_middleware::ClientWithMiddleware;
use serde::{Deserialize, Serialize};

use super::env::{expect_tcc_calls, Env};
use super::workflow_steps::{self, BranchCalls, Kind};
use crate::bank::{adjust_sql, mysql_url, pg_url, BankDb, BankReq, Db};
use crate::busi::{fails_if, BusiReq};
use crate::demo::DemoError;

/// The input of the `saga` and `tcc` workflows: per branch, the URLs to call (saga:
/// action and, optionally, compensation; tcc: try, confirm, cancel), and one JSON body.
#[derive(Debug, Serialize, Deserialize)]
struct Steps {
    steps: Vec<Vec<String>>,
    body: serde_json::Value,
}

/// How a workflow run calls its branches: through the workflow's recording HTTP client,
/// with the run's JSON body.
#[derive(Clone)]
struct Calls {
    http: ClientWithMiddleware,
    body: Vec<u8>,
}

impl Calls {
    /// The run of `input` (its steps, and calls with its body) on `http`.
    fn for_input(http: ClientWithMiddleware, input: &[u8]) -> dtmcli::Result<(Steps, Calls)> {
        let s: Steps = serde_json::from_slice(input).map_err(dtmcli::Error::invalid)?;
        let body = serde_json::to_vec(&s.body).map_err(dtmcli::Error::invalid)?;
        Ok((s, Calls { http, body }))
    }
}

impl BranchCalls for Calls {
    async fn call(&self, wf: &Wf, url: &str) -> dtmcli::Result<()> {
        let request = wf
            .http(&self.http, Method::POST, url)
            .header("content-type", "application/json")
            .body(self.body.clone());
        send_http(request).await.map(drop)
    }
}

/// Registers `saga`, `tcc` and `xa` on a registry whose resume callback is served here.
pub(super) async fn registry(env: &Env) -> Result<Workflows, DemoError> {
    let wfs = crate::demo::http_workflows(env.dtm().clone()).await?;
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(WorkflowMiddleware)
        .build();

    for kind in Kind::ALL {
        let http = http.clone();
        wfs.register(kind.name(), move |wf: Wf, input: Vec<u8>| {
            let http = http.clone();
            async move {
                let (s, calls) = Calls::for_input(http, &input)?;
                workflow_steps::run(kind, &wf, &calls, &s.steps).await
            }
        })?;
    }

    let my: XaLocal<sqlx::MySql, _> = XaLocal::new(mysql_url().parse()?, env.dtm().clone());
    let pg: XaLocal<sqlx::Postgres, _> = XaLocal::new(pg_url().parse()?, env.dtm().clone());
    wfs.register("xa", move |wf: Wf, input: Vec<u8>| {
        let (my, pg) = (my.clone(), pg.clone());
        async move {
            let r: BankReq = serde_json::from_slice(&input).map_err(dtmcli::Error::invalid)?;
            xa_adjust(&wf, &my, r.from, -r.amount, None).await?;
            let refuse = (r.trans_in_result == "FAILURE").then_some("credit refused");
            xa_adjust(&wf, &pg, r.to, r.amount, refuse).await?;
            Ok(())
        }
    })?;
    Ok(wfs)
}

/// One XA branch of the `xa` workflow: adds `delta` to `user`'s balance on `xa`'s database
/// (the bank's update), then fails with `refuse`, if given, which rolls it back.
async fn xa_adjust<DB: BankDb>(
    wf: &Wf,
    xa: &XaLocal<DB, DtmClient>,
    user: i64,
    delta: i64,
    refuse: Option<&'static str>,
) -> dtmcli::Result<()> {
    wf.new_branch()?;
    wf.do_xa(xa, move |c| {
        Box::pin(async move {
            adjust_sql::<DB>(c, user, delta).await?;
            match refuse {
                Some(why) => Err(dtm_barrier::Error::failure(why)),
                None => Ok(Vec::new()),
            }
        })
    })
    .await?;
    Ok(())
}

/// Runs workflow `name` with `input` as a new gid; checks what `execute` returned and
/// DTM's final status.
async fn run(env: &Env, name: &str, input: &impl Serialize, ok: bool) -> Result<String, DemoError> {
    let wfs = env.http_workflows().await?;
    env.run_workflow(wfs, "workflow", name, &serde_json::to_vec(input)?, ok)
        .await
}

fn busi_steps(env: &Env, undo: bool, fail: bool) -> Steps {
    let step = |a: &str, u: &str| {
        let mut s = vec![env.url(a)];
        if undo {
            s.push(env.url(u));
        }
        s
    };
    Steps {
        steps: vec![
            step("TransOut", "TransOutRevert"),
            step("TransIn", "TransInRevert"),
        ],
        body: serde_json::json!(BusiReq {
            amount: 30,
            trans_in_result: fails_if(fail),
            ..Default::default()
        }),
    }
}

/// `http_workflow_simple`: two recorded calls, no compensations.
pub async fn simple(env: &Env) -> Result<(), DemoError> {
    let gid = run(env, "saga", &busi_steps(env, false, false), true).await?;
    env.expect_http_calls(&gid, &["TransOut", "TransIn"])
}

/// `http_workflow_saga`: each branch registers its compensation; all succeed.
pub async fn saga(env: &Env) -> Result<(), DemoError> {
    let gid = run(env, "saga", &busi_steps(env, true, false), true).await?;
    env.expect_http_calls(&gid, &["TransOut", "TransIn"])
}

/// `http_workflow_saga_rollback`: the credit fails; the debit is compensated (the failed
/// branch itself did nothing to undo).
pub async fn saga_rollback(env: &Env) -> Result<(), DemoError> {
    let gid = run(env, "saga", &busi_steps(env, true, true), false).await?;
    env.expect_http_calls(&gid, &["TransOut", "TransIn", "TransOutRevert"])
}

async fn bank_steps(env: &Env, names: &[&[&str]], body: &BankReq) -> Result<Steps, DemoError> {
    let mut steps = Vec::new();
    for step in names {
        let mut urls = Vec::new();
        for h in *step {
            urls.push(env.bank_url(Db::Mysql, h).await?);
        }
        steps.push(urls);
    }
    Ok(Steps {
        steps,
        body: serde_json::to_value(body)?,
    })
}

/// `http_workflow_saga_barrier`: the workflow's branches are the barrier-guarded bank on
/// MariaDB; the credit fails, the debit is compensated, the balances are back.
pub async fn saga_barrier(env: &Env) -> Result<(), DemoError> {
    for fail in [false, true] {
        let (a, b) = env.accounts(Db::Mysql, 100).await?;
        let body = BankReq::transfer(30, a, b, fail);
        let names: &[&[&str]] = &[
            &["TransOut", "TransOutCompensate"],
            &["TransIn", "TransInCompensate"],
        ];
        run(env, "saga", &bank_steps(env, names, &body).await?, !fail).await?;
        env.expect_moved(Db::Mysql, a, b, !fail).await?;
    }
    Ok(())
}

fn busi_tcc(env: &Env, fail: bool) -> Steps {
    let side = |s: &str| {
        ["Try", "Confirm", "Cancel"]
            .map(|p| env.url(&format!("{s}{p}")))
            .to_vec()
    };
    Steps {
        steps: vec![side("TransOut"), side("TransIn")],
        body: serde_json::json!(BusiReq {
            amount: 30,
            trans_in_result: fails_if(fail),
            ..Default::default()
        }),
    }
}

/// `http_workflow_tcc`: each branch registers confirm and cancel, then tries; DTM's second
/// phase confirms both.
pub async fn tcc(env: &Env) -> Result<(), DemoError> {
    let gid = run(env, "tcc", &busi_tcc(env, false), true).await?;
    expect_tcc_calls("HTTP", &env.busi().handlers(&gid), true)
}

/// `http_workflow_tcc_rollback`: the credit's try fails; both branches are cancelled.
pub async fn tcc_rollback(env: &Env) -> Result<(), DemoError> {
    let gid = run(env, "tcc", &busi_tcc(env, true), false).await?;
    expect_tcc_calls("HTTP", &env.busi().handlers(&gid), false)
}

/// `http_workflow_tcc_barrier`: TCC branches on the guarded bank on MariaDB.
pub async fn tcc_barrier(env: &Env) -> Result<(), DemoError> {
    for fail in [false, true] {
        let (a, b) = env.accounts(Db::Mysql, 100).await?;
        let body = BankReq::transfer(30, a, b, fail);
        let names: &[&[&str]] = &[
            &["TransOutTry", "TransOutConfirm", "TransOutCancel"],
            &["TransInTry", "TransInConfirm", "TransInCancel"],
        ];
        run(env, "tcc", &bank_steps(env, names, &body).await?, !fail).await?;
        env.expect_moved(Db::Mysql, a, b, !fail).await?;
    }
    Ok(())
}

/// `http_workflow_xa`: XA steps, a debit on MariaDB and a credit on PostgreSQL, committed
/// (or rolled back) by the workflow's second phase.
pub async fn xa(env: &Env) -> Result<(), DemoError> {
    for fail in [false, true] {
        let (a, b) = env.accounts_across().await?;
        let body = BankReq::transfer(30, a, b, fail);
        run(env, "xa", &body, !fail).await?;
        env.expect_moved_across(a, b, !fail).await?;
    }
    Ok(())
}
