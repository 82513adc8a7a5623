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
