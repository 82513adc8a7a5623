//! One execution of a workflow, in the four steps of DTM's workflow protocol:
//!
//! 1. **prepare**: `prepareWorkflow` creates the transaction, or returns it with the steps
//!    recorded so far; a workflow that finished earlier ends here with its stored outcome.
//! 2. **run**: the workflow function runs; recorded steps replay, new ones run and are
//!    recorded. Its outcome is a [`Verdict`]: commit, roll back, or unfinished (ongoing or a
//!    retryable error: no phase 2 and no submit, DTM calls the workflow back).
//! 3. **phase 2**: the commit or the rollback callbacks, each a recorded step.
//! 4. **submit**: the outcome goes to DTM, which finishes the transaction.
//!
//! How each step reaches DTM is the transport's business ([`crate::transport`]).

use std::sync::Arc;

use dtmcli::{Error, Result, TransRequest, TransType};
use futures_util::future::BoxFuture;

use base64::Engine;
use dtmcli::TransStatus;

use crate::budget::{self, Budget, Unfinished};
use crate::history::History;
use crate::options::WfOptions;
use crate::record::RecordFormat;
use crate::resume::{custom_data, Stored};
use crate::transport::{Prepared, Step, Transport};
use crate::wf::{Run, Wf};

/// A registered workflow function.
pub(crate) type WfFn =
    Arc<dyn Fn(Wf, Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>>> + Send + Sync>;

/// What a workflow is executed with: its registration and the registry's settings.
pub(crate) struct Execution<'a> {
    pub(crate) transport: &'a Transport,
    /// The URL DTM calls to resume the workflow.
    pub(crate) callback: &'a str,
    pub(crate) format: RecordFormat,
    pub(crate) name: &'a str,
    pub(crate) gid: &'a str,
    pub(crate) options: &'a WfOptions,
}

/// Where a run of the workflow function leaves the transaction.
enum Verdict {
    /// It succeeded with this result: commit.
    Commit(Vec<u8>),
    /// It failed for good ([`Error::Failure`]): roll back.
    Rollback(Error),
    /// Ongoing or a retryable error: leave the transaction prepared for DTM to call back.
    Unfinished(Error),
}

impl Execution<'_> {
    /// The whole lifecycle: prepare, run, phase 2, submit.
    pub(crate) async fn execute(&self, f: &WfFn, input: &[u8]) -> Result<Vec<u8>> {
        // 1. prepare
        let run = run_id();
        let custom = custom_data(self.name, input, &run);
        let (prepared, held) = self.prepare(&custom).await?;
        let mut first = None;
        if !held.custom_data.is_empty() {
            // DTM answered with the transaction it holds (HTTP): an existing gid must be
            // this workflow with this input, or its records and outcome are another's.
            let stored = Stored::parse(self.gid, &held.custom_data)?;
            if stored.name != self.name || stored.input != input {
                return Err(Error::invalid(format!(
                    "gid {:?} is workflow {:?} with another input in DTM: nothing was run",
                    self.gid, stored.name
                )));
            }
            first = Some(stored.run == run);
        }
        // What the submit carries back (DTM's KV stores keep the submit's transaction).
        let custom = match held.custom_data.is_empty() {
            true => custom,
            false => held.custom_data,
        };
        let wf = match prepared {
            Prepared::Finished(outcome) => return outcome,
            Prepared::Open(steps) => {
                let budget = self.budget(held.create_time, &steps).await?;
                let run = Run {
                    id: run,
                    first,
                    budget,
                    replay: false,
                };
                self.workflow(steps, run)
            }
        };
        // 2. run
        let outcome = match self.run(&wf, f, input).await {
            Verdict::Unfinished(e) => return Err(e),
            Verdict::Commit(result) => Ok(result),
            Verdict::Rollback(e) => Err(e),
        };
        // 3. phase 2: an error here leaves the transaction prepared, and DTM's next call
        // replays the callbacks that finished and retries the others.
        let rollback = outcome.is_err();
        wf.phase2(rollback).await.map_err(|e| self.unfinished(e))?;
        // 4. submit
        self.submit(&outcome, &custom)
            .await
            .map_err(|e| self.unfinished(e))?;
        outcome
    }

    /// Runs the workflow against `history` instead of DTM ([`crate::history`]): every step
    /// replays from its record, then phase 2 as the recorded run ended. `Ok` when the code
    /// follows the recorded run as far as the history goes; [`Error::NonDeterministic`]
    /// naming where it does not.
    pub(crate) async fn replay(&self, f: &WfFn, history: &History) -> Result<()> {
        let (gid, name) = (self.gid, self.name);
        let (steps, input) = (history.steps()?, history.input_bytes()?);
        let created = history.create_time.as_deref();
        // A history without its creation time (a workflow ended on DTM's boltdb or Redis
        // store, which drop it) replays without the deadline.
        let mut options = self.options.clone();
        if created.is_none() {
            options.deadline = None;
        }
        let budget = Budget::new(&options, (name, gid), created, &steps, self.format)?;
        let run = Run {
            id: "replay".into(),
            first: Some(false),
            budget,
            replay: true,
        };
        let copy = steps
            .iter()
            .find(|s| s.branch_id == crate::transport::RESULT_BRANCH && s.op == "result")
            .map(|s| self.format.decode(&s.data).payload);
        let wf = self.workflow(steps, run);
        let verdict = self.run(&wf, f, &input).await;
        let diverged = |what: String| {
            Err(Error::NonDeterministic(format!(
                "replay of workflow {name} gid {gid}: {what}"
            )))
        };
        let status = history.trans_status();
        let (rollback, result) = match verdict {
            Verdict::Commit(result) => (false, Some(result)),
            Verdict::Rollback(_) => (true, None),
            // The history ends where the code goes on (a run that was still unfinished).
            Verdict::Unfinished(_) if wf.beyond_history() && !status.is_final() => return Ok(()),
            Verdict::Unfinished(e) => {
                return match e {
                    Error::NonDeterministic(_) | Error::RecordType { .. } => Err(e),
                    e if status.is_final() => diverged(format!(
                        "the recorded run ended {}, the code stops unfinished: {e}",
                        history.status
                    )),
                    _ => Ok(()),
                };
            }
        };
        match (&status, rollback) {
            (TransStatus::Succeed, true) | (TransStatus::Failed, false) => {
                return diverged(format!(
                    "the recorded run ended {}, the code {}",
                    history.status,
                    if rollback { "rolls back" } else { "commits" }
                ));
            }
            _ => {}
        }
        match wf.phase2(rollback).await {
            Err(_) if wf.beyond_history() && !status.is_final() => return Ok(()),
            r => r?,
        }
        if let (TransStatus::Succeed, Some(result)) = (&status, result) {
            let recorded = match history.result.as_str() {
                "" => copy.unwrap_or_default(),
                b64 => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| {
                        Error::invalid(format!("the history's result is not base64: {e}"))
                    })?,
            };
            if recorded != result {
                return diverged("the code returns another result than the recorded run".into());
            }
        }
        Ok(())
    }

    /// Step 1: `prepareWorkflow` with the Go SDK's transaction (the callback URL as
    /// `query_prepared`, the name and input in `custom_data`).
    async fn prepare(&self, custom: &str) -> Result<(Prepared, dtmcli::TransGlobal)> {
        let mut req = TransRequest::new(self.gid, TransType::Workflow, &self.options.trans);
        req.set_query_prepared(self.callback);
        req.set_custom_data(custom);
        self.transport.prepare_workflow(req, self.format).await
    }

    /// An error of phase 2 or of the submit leaves the transaction prepared, and DTM calls
    /// the workflow back: a FAILURE there (a confirm that refused) is not the workflow's
    /// outcome, so it is reported as not final.
    fn unfinished(&self, e: Error) -> Error {
        match e {
            Error::Failure(_) | Error::Ongoing(_) => {
                Error::not_final(self.gid, Some(dtmcli::TransStatus::Prepared), e)
            }
            other => other,
        }
    }

    /// What the workflow may still spend ([`crate::budget`]). A finite deadline needs the
    /// creation time: from `prepareWorkflow`'s answer (HTTP) or a `query` (gRPC).
    async fn budget(&self, created: Option<String>, steps: &[Step]) -> Result<Budget> {
        let needs_time = self
            .options
            .deadline
            .is_some_and(|d| !d.is_zero() && d < budget::FOREVER);
        let created = match created {
            None if needs_time => {
                let q = self.transport.query(self.gid).await?;
                q.transaction.and_then(|t| t.create_time)
            }
            created => created,
        };
        let id = (self.name, self.gid);
        Budget::new(self.options, id, created.as_deref(), steps, self.format)
    }

    /// The workflow context, holding the steps DTM recorded.
    fn workflow(&self, steps: Vec<Step>, run: Run) -> Wf {
        let (gid, name) = (self.gid, self.name);
        tracing::info!(gid, name, recorded = steps.len(), "workflow starts");
        Wf::new(
            gid.to_string(),
            name.to_string(),
            self.transport.clone(),
            self.options.clone(),
            self.format,
            steps,
            run,
        )
    }

    /// Step 2: runs the workflow function; a success that skipped recorded actions is
    /// non-deterministic, so it is not committed. A run that had an action refused (its
    /// budget is spent) rolls back, and so does one that ends unfinished past its budget.
    async fn run(&self, wf: &Wf, f: &WfFn, input: &[u8]) -> Verdict {
        let (gid, name) = (self.gid, self.name);
        let mut outcome = f(wf.clone(), input.to_vec()).await;
        if outcome.is_ok() {
            let left = wf.unconsumed_actions();
            if !left.is_empty() {
                outcome = Err(Error::NonDeterministic(format!(
                    "workflow {name} gid {gid} finished without asking for the recorded steps {left:?}"
                )));
            }
        }
        let code_error = matches!(&outcome, Err(e) if budget::is_code_error(e));
        if let (Some(reason), false) = (wf.gave_up(), code_error) {
            return Verdict::Rollback(Error::Failure(reason));
        }
        match outcome {
            Ok(result) => Verdict::Commit(result),
            Err(e @ Error::Failure(_)) => Verdict::Rollback(e),
            Err(e) if code_error => Verdict::Unfinished(e),
            Err(e) => self.spend(wf, e).await,
        }
    }

    /// A run that ended unfinished with `e`: past the deadline or the resume limit it rolls
    /// back; under a resume limit it is counted ([`crate::budget`]).
    async fn spend(&self, wf: &Wf, e: Error) -> Verdict {
        let (gid, name) = (self.gid, self.name);
        if wf.is_replay() {
            // A replay spends nothing: it records nothing and decides nothing.
            return Verdict::Unfinished(e);
        }
        if let Some(reason) = wf.budget().deadline_passed() {
            tracing::info!(gid, name, error = %e, "workflow unfinished past its deadline: rolling back");
            return Verdict::Rollback(Error::Failure(reason));
        }
        let (op, data, give_up) = match wf.budget().unfinished((name, gid), &e) {
            None => (None, String::new(), false),
            Some(Unfinished::Counted { op, data }) => (Some(op), data, false),
            Some(Unfinished::GiveUp { op, reason }) => (Some(op), reason, true),
        };
        if let Some(op) = op {
            let record = self.format.encode("unfinished", "", data.as_bytes());
            let recorded = (self.transport)
                .record(gid, budget::BRANCH, &op, "succeed", record)
                .await;
            if let Err(re) = recorded {
                // Not counted: the next run counts it (or gives up) again.
                tracing::warn!(gid, name, error = %re, "the unfinished run could not be recorded");
                return Verdict::Unfinished(if give_up { re } else { e });
            }
            if give_up {
                tracing::info!(gid, name, error = %e, "workflow unfinished past its resume limit: rolling back");
                return Verdict::Rollback(Error::Failure(data));
            }
        }
        tracing::info!(gid, name, error = %e, "workflow unfinished; DTM will call it back");
        Verdict::Unfinished(e)
    }

    /// Step 4: submits the outcome (step 3 is [`Wf::phase2`]). An error answer is read
    /// against what DTM stored: a submit whose answer was lost, sent again (a cluster's
    /// retry on another server), finds the workflow already ended and is answered with an
    /// error (`storage: NotFound` on SQL stores), although DTM holds the very outcome this
    /// submit carried.
    async fn submit(&self, outcome: &Result<Vec<u8>>, custom: &str) -> Result<()> {
        let (gid, name) = (self.gid, self.name);
        let status = if outcome.is_ok() { "succeed" } else { "failed" };
        if let Err(e) = self
            .transport
            .submit_workflow(gid, outcome, self.format, custom)
            .await
        {
            let stored = match &e {
                // Refused before anything was sent, or a cluster that already asked.
                Error::InvalidInput(_) | Error::Ambiguous { .. } => None,
                _ => self.transport.query(gid).await.ok(),
            };
            let held = stored.and_then(|q| q.transaction).map(|t| t.status);
            if held.as_deref() != Some(status) {
                return Err(e);
            }
            tracing::info!(gid, name, status, answer = %e, "DTM holds the workflow ended as submitted: the submit's answer did not say so");
        }
        tracing::info!(gid, name, status, "workflow finished");
        Ok(())
    }
}

/// An id for one run of a workflow, told apart from every other run of the same gid: one run
/// per gid at a time in a process (`Workflows::mark_running`), and the process and the
/// clock tell processes and runs apart.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}.{:x}", std::process::id())
}
