//! Workflow pieces the tests and the child processes write alike: the options of a test
//! workflow and its steps over HTTP.

use std::time::Duration;

use dtm_workflow::{send_http, Wf, WfOptions};
use dtmcli::TransOptions;
use reqwest_middleware::ClientWithMiddleware;

/// The options of a test workflow: DTM retries (and resumes) it every second.
pub fn retrying_every_second() -> WfOptions {
    WfOptions {
        trans: TransOptions::default().retry_interval(Duration::from_secs(1)),
        ..Default::default()
    }
}

/// POSTs the JSON `body` to `url` as the current branch of `wf`, through `http` (a client
/// with the `WorkflowMiddleware`); the answer's body.
pub async fn post(
    wf: &Wf,
    http: &ClientWithMiddleware,
    url: &str,
    body: Vec<u8>,
) -> dtmcli::Result<Vec<u8>> {
    let req = wf
        .http(http, reqwest::Method::POST, url)
        .header("content-type", "application/json")
        .body(body);
    send_http(req).await
}

/// A step of `wf`: a new branch that [`post`]s `body` to `action`, after registering the
/// same POST to `undo`, when given, as its rollback.
pub async fn post_step(
    wf: &Wf,
    http: &ClientWithMiddleware,
    action: &str,
    undo: Option<&str>,
    body: Vec<u8>,
) -> dtmcli::Result<Vec<u8>> {
    wf.new_branch()?;
    if let Some(undo) = undo {
        let (w, h, u, b) = (wf.clone(), http.clone(), undo.to_string(), body.clone());
        wf.on_rollback(move |_info| async move { post(&w, &h, &u, b).await.map(drop) })?;
    }
    post(wf, http, action, body).await
}

/// The input of workflow `fanout`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Fanout {
    /// The bank's URL for one database (`<base>/<db>`).
    pub bank: String,
    /// The account debited.
    pub from: i64,
    /// The accounts credited, `amount` each.
    pub tos: Vec<i64>,
    /// What each destination receives.
    pub amount: i64,
    /// The destination whose credit is refused (FAILURE after its write), if any.
    pub fail: Option<usize>,
}

/// Registers workflow `fanout`: branch 01 debits `from` by `amount` per destination (its
/// rollback credits it back), then one branch per destination credits it, all at once
/// (`Wf::branch`, joined; each rollback takes its credit back).
pub fn register_fanout(wfs: &dtm_workflow::Workflows, http: ClientWithMiddleware) {
    let options = retrying_every_second();
    let registered = wfs.register_with_options("fanout", options, move |wf: Wf, input| {
        let http = http.clone();
        async move {
            let f: Fanout = serde_json::from_slice(&input).map_err(dtmcli::Error::invalid)?;
            let n = f.tos.len() as i64;
            let debit = bank_req(f.amount * n, f.from, 0, false);
            let (out, undo) = (
                format!("{}/TransOut", f.bank),
                format!("{}/TransOutCompensate", f.bank),
            );
            post_step(&wf, &http, &out, Some(&undo), to_json(&debit)?).await?;
            let mut credits = Vec::new();
            for (i, to) in f.tos.iter().enumerate() {
                let branch = wf.branch()?;
                let body = to_json(&bank_req(f.amount, 0, *to, f.fail == Some(i)))?;
                let (b, h, u, undo) = (branch.clone(), http.clone(), f.bank.clone(), body.clone());
                branch.on_rollback(move |_info| async move {
                    post(&b, &h, &format!("{u}/TransInCompensate"), undo)
                        .await
                        .map(drop)
                })?;
                let (http, url) = (http.clone(), format!("{}/TransIn", f.bank));
                credits.push(async move { post(&branch, &http, &url, body).await });
            }
            for credited in futures_util::future::join_all(credits).await {
                credited?;
            }
            Ok(Vec::new())
        }
    });
    registered.expect("register fanout");
}

/// The bank's request (`dtm_examples::bank::BankReq`, whose crate the child does not link).
fn bank_req(amount: i64, from: i64, to: i64, fail_in: bool) -> serde_json::Value {
    let fail = if fail_in { "FAILURE" } else { "" };
    serde_json::json!({"amount": amount, "from": from, "to": to, "trans_in_result": fail})
}

fn to_json<T: serde::Serialize>(v: &T) -> dtmcli::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(dtmcli::Error::invalid)
}
