//! The `saga` and `tcc` workflows of the workflow scenarios, written once over how a branch
//! is called: over HTTP in `http_workflow`, over gRPC or HTTP in `grpc_workflow`. Each takes
//! its branch URLs per step, from the workflow's input.

use std::future::Future;

use dtm_workflow::Wf;
use dtmcli::TransInfo;
use futures_util::future::BoxFuture;

/// How one workflow run calls its branches (the clients, and the run's request).
pub(super) trait BranchCalls: Clone + Send + Sync + 'static {
    /// One call of `url` for the workflow's current branch, recorded by the workflow.
    fn call(&self, wf: &Wf, url: &str) -> impl Future<Output = dtmcli::Result<()>> + Send;
}

/// The call of `url` as a second-phase callback of the current branch (for `on_commit`,
/// `on_rollback`).
fn later<C: BranchCalls>(
    calls: &C,
    wf: &Wf,
    url: &str,
) -> impl FnOnce(TransInfo) -> BoxFuture<'static, dtmcli::Result<()>> + Send + 'static {
    let (calls, wf, url) = (calls.clone(), wf.clone(), url.to_string());
    move |_| Box::pin(async move { calls.call(&wf, &url).await })
}

/// The two workflows, which differ only in what each step's URLs are.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// Per step: the action, and optionally its compensation.
    Saga,
    /// Per step: try, confirm, cancel.
    Tcc,
}

impl Kind {
    /// Both, as registered.
    pub(super) const ALL: [Kind; 2] = [Kind::Saga, Kind::Tcc];

    /// The name the workflow is registered under.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Saga => "saga",
            Kind::Tcc => "tcc",
        }
    }
}

/// Runs the workflow `kind` over `steps`: per step, a new branch that registers the
/// step's second-phase calls (a saga's compensation; a TCC's confirm and cancel), then
/// calls its first URL (the action, or the try).
pub(super) async fn run<C: BranchCalls>(
    kind: Kind,
    wf: &Wf,
    calls: &C,
    steps: &[Vec<String>],
) -> dtmcli::Result<()> {
    for step in steps {
        let (first, on_commit, on_rollback) = match (kind, step.as_slice()) {
            (Kind::Saga, [action, undo @ ..]) => (action, None, undo.first()),
            (Kind::Tcc, [try_, confirm, cancel]) => (try_, Some(confirm), Some(cancel)),
            (Kind::Saga, _) => return Err(dtmcli::Error::invalid("a saga step without an action")),
            (Kind::Tcc, _) => {
                return Err(dtmcli::Error::invalid("a tcc step is try, confirm, cancel"))
            }
        };
        wf.new_branch()?;
        if let Some(url) = on_commit {
            wf.on_commit(later(calls, wf, url))?;
        }
        if let Some(url) = on_rollback {
            wf.on_rollback(later(calls, wf, url))?;
        }
        calls.call(wf, first).await?;
    }
    Ok(())
}
