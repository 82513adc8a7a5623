//! The workflow context: branches, recorded steps and phase-2 callbacks.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use dtmcli::{BranchIdGen, Error, Op, Result, TransInfo, TransType};
use futures_util::future::BoxFuture;
use tracing::Instrument;

use crate::budget::Budget;
use crate::options::WfOptions;
use crate::record::{Record, RecordFormat};
use crate::transport::{Step, Transport};

/// A phase-2 callback.
pub(crate) type Callback = Box<dyn FnOnce(TransInfo) -> BoxFuture<'static, Result<()>> + Send>;

/// A step result recorded on the DTM server (`branch_id-op` → status and data).
#[derive(Debug, Clone)]
struct Progress {
    status: String,
    data: Vec<u8>,
}

struct State {
    ids: BranchIdGen,
    branch: String,
    op: Op,
    phase2: bool,
    actions: HashSet<String>,
    rollbacks: Vec<(String, Callback)>,
    commits: Vec<(String, Callback)>,
    consumed: HashSet<String>,
    /// Why an action was refused on this run (the budget was spent): the run rolls back.
    gave_up: Option<String>,
    /// Whether this run created the transaction, once known ([`crate::patch`]).
    first_run: Option<bool>,
    /// The paths [`Wf::patched`] decided on this run, by change id.
    patches: HashMap<String, bool>,
    /// A replay asked for a step its history has no record of.
    beyond_history: bool,
}

/// What a run knows of itself when it starts.
pub(crate) struct Run {
    /// Its id, stored in `custom_data` by the run that creates the transaction.
    pub(crate) id: String,
    /// Whether it created the transaction: `None` when DTM's answer did not say (gRPC).
    pub(crate) first: Option<bool>,
    /// What the workflow may still spend.
    pub(crate) budget: Budget,
    /// A replay of a history: no step runs, every one must replay from its record.
    pub(crate) replay: bool,
}

struct Inner {
    gid: String,
    name: String,
    transport: Transport,
    options: WfOptions,
    format: RecordFormat,
    progress: HashMap<String, Progress>,
    run_id: String,
    budget: Budget,
    replay: bool,
    state: Mutex<State>,
}

/// The running workflow, handed to the workflow function. Cheap to clone.
///
/// Inside it, call [`Wf::new_branch`] before each branch, register its undo with
/// [`Wf::on_rollback`] (saga style) or its second phase with [`Wf::on_commit`] /
/// [`Wf::on_rollback`] (TCC style), then run its one recorded action: [`Wf::do_`] (local
/// code), an HTTP call through a client with [`crate::WorkflowMiddleware`] and
/// [`Wf::http`], a gRPC call through a channel wrapped in the gRPC layer, or an XA step.
/// On a resumed run, every action already recorded on the DTM server returns its recorded
/// result instead of running again.
///
/// A transfer as a workflow: a TCC-style debit (its confirm and cancel run after the
/// workflow's outcome) and a saga-style credit (its compensation runs if the workflow fails
/// after it). Every HTTP body names its content type: a branch service reading JSON (an
/// axum `Json` extractor...) answers 415 without it, which DTM retries forever.
///
/// ```no_run
/// use dtm_workflow::{send_http, Wf, WorkflowMiddleware};
/// use reqwest::Method;
/// use reqwest_middleware::ClientWithMiddleware;
///
/// /// A JSON POST that belongs to the workflow's current branch and op.
/// async fn post(wf: &Wf, http: &ClientWithMiddleware, url: &str, body: &[u8]) -> dtmcli::Result<Vec<u8>> {
///     send_http(
///         wf.http(http, Method::POST, url)
///             .header("content-type", "application/json")
///             .body(body.to_vec()),
///     )
///     .await
/// }
///
/// async fn transfer(wf: Wf, http: ClientWithMiddleware, input: Vec<u8>) -> dtmcli::Result<()> {
///     // Branch 01, TCC style: the try is the recorded action.
///     wf.new_branch()?;
///     let (w, h, b) = (wf.clone(), http.clone(), input.clone());
///     wf.on_commit(move |_info| async move {
///         post(&w, &h, "http://bank-a/api/TransOutConfirm", &b).await.map(drop)
///     })?;
///     let (w, h, b) = (wf.clone(), http.clone(), input.clone());
///     wf.on_rollback(move |_info| async move {
///         post(&w, &h, "http://bank-a/api/TransOutCancel", &b).await.map(drop)
///     })?;
///     post(&wf, &http, "http://bank-a/api/TransOutTry", &input).await?;
///
///     // Branch 02, saga style: register the compensation, then the action. A 409 from
///     // TransIn is recorded as a failure: the workflow rolls back (cancel of 01).
///     wf.new_branch()?;
///     let (w, h, b) = (wf.clone(), http.clone(), input.clone());
///     wf.on_rollback(move |_info| async move {
///         post(&w, &h, "http://bank-b/api/TransInRevert", &b).await.map(drop)
///     })?;
///     post(&wf, &http, "http://bank-b/api/TransIn", &input).await?;
///     Ok(())
/// }
///
/// # fn register(wfs: &dtm_workflow::Workflows) -> dtmcli::Result<()> {
/// // One recording client for the whole service.
/// let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(WorkflowMiddleware)
///     .build();
/// wfs.register("transfer", move |wf, input| transfer(wf, http.clone(), input))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Wf {
    inner: Arc<Inner>,
    /// The branch this handle is bound to ([`Wf::branch`]); `None`: the workflow's current
    /// branch ([`Wf::new_branch`]).
    bound: Option<Arc<str>>,
}

impl std::fmt::Debug for Wf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wf")
            .field("gid", &self.inner.gid)
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// What a step produced, before it is recorded.
pub(crate) enum StepOutcome {
    /// Success with data.
    Ok(Vec<u8>),
    /// A recorded failure (roll back) with its message.
    Failed(String),
    /// Not recorded: ongoing or a retryable error.
    Unrecorded(Error),
}

impl StepOutcome {
    pub(crate) fn from_result(r: Result<Vec<u8>>) -> Self {
        match r {
            Ok(v) => StepOutcome::Ok(v),
            Err(Error::Failure(m)) => StepOutcome::Failed(m),
            Err(e) => StepOutcome::Unrecorded(e),
        }
    }
}

impl Wf {
    /// The workflow `name` as transaction `gid`, resumed from the `steps` DTM recorded, in
    /// `run`.
    pub(crate) fn new(
        gid: String,
        name: String,
        transport: Transport,
        options: WfOptions,
        format: RecordFormat,
        steps: Vec<Step>,
        run: Run,
    ) -> Self {
        let progress = steps
            .into_iter()
            .map(|b| {
                let p = Progress {
                    status: b.status,
                    data: b.data,
                };
                (format!("{}-{}", b.branch_id, b.op), p)
            })
            .collect();
        let inner = Arc::new(Inner {
            gid,
            name,
            transport,
            options,
            format,
            progress,
            run_id: run.id,
            budget: run.budget,
            replay: run.replay,
            state: Mutex::new(State {
                ids: BranchIdGen::new(""),
                branch: String::new(),
                op: Op::Action,
                phase2: false,
                actions: HashSet::new(),
                rollbacks: Vec::new(),
                commits: Vec::new(),
                consumed: HashSet::new(),
                gave_up: None,
                first_run: run.first,
                patches: HashMap::new(),
                beyond_history: false,
            }),
        });
        Wf { inner, bound: None }
    }

    /// The cap on an answer body the recorders read.
    pub(crate) fn max_answer_bytes(&self) -> usize {
        self.inner.transport.limits().max_answer_bytes()
    }

    /// The timeout a branch call without its own gets.
    pub(crate) fn call_timeout(&self) -> std::time::Duration {
        self.inner
            .transport
            .limits()
            .branch_call_timeout(self.inner.options.trans.request_timeout)
    }

    /// What the workflow may still spend.
    pub(crate) fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    /// Why an action was refused on this run, if one was: the run rolls back.
    pub(crate) fn gave_up(&self) -> Option<String> {
        self.state().gave_up.clone()
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    pub(crate) fn format(&self) -> RecordFormat {
        self.inner.format
    }

    /// This run's id ([`Run::id`]).
    pub(crate) fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// Whether this run created the transaction, once known.
    pub(crate) fn first_run(&self) -> Option<bool> {
        self.state().first_run
    }

    pub(crate) fn set_first_run(&self, first: bool) {
        self.state().first_run = Some(first);
    }

    /// The path [`Wf::patched`] decided for `change_id` on this run.
    pub(crate) fn patch_decision(&self, change_id: &str) -> Option<bool> {
        self.state().patches.get(change_id).copied()
    }

    pub(crate) fn set_patch_decision(&self, change_id: &str, taken: bool) {
        self.state().patches.insert(change_id.to_string(), taken);
    }

    /// True when DTM returned a record of `branch`'s `op` at the start of this run.
    pub(crate) fn has_step(&self, branch: &str, op: &str) -> bool {
        self.inner.progress.contains_key(&format!("{branch}-{op}"))
    }

    /// True for a replay of a history ([`crate::history`]).
    pub(crate) fn is_replay(&self) -> bool {
        self.inner.replay
    }

    /// True once a replay asked for a step its history has no record of.
    pub(crate) fn beyond_history(&self) -> bool {
        self.state().beyond_history
    }

    /// True inside the commit or rollback callbacks.
    pub(crate) fn in_phase2(&self) -> bool {
        self.state().phase2
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The global id.
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }

    /// The workflow's registered name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The branch and op this handle acts for: its bound branch's action while the workflow
    /// function runs; inside the phase-2 callbacks (which run one at a time), the branch and
    /// op of the callback running, whatever handle it uses.
    fn position(&self, s: &State) -> (String, Op) {
        match &self.bound {
            Some(b) if !s.phase2 => (b.to_string(), Op::Action),
            _ => (s.branch.clone(), s.op.clone()),
        }
    }

    /// The current branch id (`01`, `02`...; empty before the first [`Wf::new_branch`]), or
    /// the branch this handle is bound to ([`Wf::branch`]).
    pub fn branch_id(&self) -> String {
        self.position(&self.state()).0
    }

    /// The current op: `action` while the workflow function runs, `commit` / `rollback`
    /// inside phase-2 callbacks.
    pub fn op(&self) -> Op {
        self.position(&self.state()).1
    }

    /// The transaction info of the current branch and op (what a barrier or a branch
    /// service receives).
    pub fn trans_info(&self) -> TransInfo {
        let (branch, op) = self.position(&self.state());
        let mut info = TransInfo::new(self.inner.gid.clone(), TransType::Workflow, branch, op);
        info.dtm = Some(self.inner.transport.server());
        info
    }

    /// True when the current branch's action is recorded and will be replayed.
    pub fn is_replaying(&self) -> bool {
        let (branch, op) = self.position(&self.state());
        self.has_step(&branch, op.as_str())
    }

    /// True when DTM holds a record of `op` for the current branch (how the XA step finds
    /// its `business` marker).
    #[cfg(feature = "xa")]
    pub(crate) fn has_record(&self, op: &Op) -> bool {
        self.has_step(&self.branch_id(), op.as_str())
    }

    /// Records, with no data, that branch `branch_id` reached `op`: the XA step's
    /// `business` marker, written from inside its XA transaction. Raw in every record
    /// format, as the Go SDK writes it.
    #[cfg(feature = "xa")]
    pub(crate) async fn record_marker(&self, branch_id: &str, op: &Op) -> Result<()> {
        let (gid, status) = (&self.inner.gid, "succeed");
        let empty = bytes::Bytes::new();
        self.inner
            .transport
            .record(gid, branch_id, op.as_str(), status, empty)
            .await
    }

    /// Starts the next branch (`01`, `02`...). Not allowed inside phase-2 callbacks, nor
    /// on a handle bound to a branch ([`Wf::branch`]).
    pub fn new_branch(&self) -> Result<()> {
        let mut s = self.state();
        let id = self.next_branch_id(&mut s, "new_branch")?;
        s.branch = id;
        s.op = Op::Action;
        Ok(())
    }

    /// Starts the next branch (`01`, `02`...) and returns a handle bound to it, to run
    /// beside other branches (`futures::join!` of their steps, `tokio::spawn`): its
    /// [`Wf::on_rollback`], [`Wf::on_commit`] and its one recorded action (local, HTTP,
    /// gRPC, XA) are that branch's, while the workflow's current branch
    /// ([`Wf::new_branch`]) stays where it is.
    ///
    /// Branch ids follow the order of the `branch` calls, never the order in which the
    /// branches finish, so a resumed run gives each branch its own records back. When the
    /// workflow fails, the rollbacks of the branches whose actions succeeded run (newest
    /// registration first), those of the branches whose actions failed do not
    /// ([`WfOptions::compensate_error_branch`]), and a branch whose action was still
    /// running or had answered a retryable error counts as succeeded (it may have
    /// applied): prefer `join` to `try_join`, which drops the other branches mid-flight.
    ///
    /// ```no_run
    /// # async fn f(wf: dtm_workflow::Wf) -> dtmcli::Result<()> {
    /// let (a, b) = (wf.branch()?, wf.branch()?); // 01 and 02, in this order
    /// let (ra, rb) = futures_util::join!(
    ///     a.do_(|_info| async { Ok(b"a".to_vec()) }),
    ///     b.do_(|_info| async { Ok(b"b".to_vec()) }),
    /// );
    /// let (_ra, _rb) = (ra?, rb?);
    /// # Ok(()) }
    /// ```
    pub fn branch(&self) -> Result<Wf> {
        let mut s = self.state();
        let id = self.next_branch_id(&mut s, "branch")?;
        Ok(Wf {
            inner: self.inner.clone(),
            bound: Some(id.into()),
        })
    }

    fn next_branch_id(&self, s: &mut State, what: &str) -> Result<String> {
        if s.phase2 {
            return Err(Error::invalid(format!(
                "{what} is not allowed in a commit/rollback callback"
            )));
        }
        if let Some(b) = &self.bound {
            return Err(Error::invalid(format!(
                "{what} on the handle of branch {b}: a branch has one action; call it on the workflow"
            )));
        }
        s.ids.new_sub_branch_id()
    }

    fn current_branch(&self, what: &str) -> Result<String> {
        let s = self.state();
        if s.phase2 {
            return Err(Error::invalid(format!(
                "{what} is not allowed in a commit/rollback callback"
            )));
        }
        let (branch, _) = self.position(&s);
        if branch.is_empty() {
            return Err(Error::invalid(format!("call new_branch before {what}")));
        }
        Ok(branch)
    }

    /// Registers the current branch's rollback: it runs, as a recorded step, when the
    /// workflow fails (returns [`Error::Failure`]), in reverse order of registration. By
    /// default a branch whose own action failed is not rolled back (see
    /// [`WfOptions::compensate_error_branch`]). At most one per branch.
    pub fn on_rollback<F, Fut>(&self, f: F) -> Result<()>
    where
        F: FnOnce(TransInfo) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let branch = self.current_branch("on_rollback")?;
        let mut s = self.state();
        if s.rollbacks.iter().any(|(b, _)| *b == branch) {
            return Err(Error::invalid(format!(
                "branch {branch} already has a rollback"
            )));
        }
        s.rollbacks
            .push((branch, Box::new(move |info| Box::pin(f(info)))));
        Ok(())
    }

    /// Registers the current branch's commit: it runs, as a recorded step, when the
    /// workflow succeeds, in reverse order of registration. At most one per branch.
    pub fn on_commit<F, Fut>(&self, f: F) -> Result<()>
    where
        F: FnOnce(TransInfo) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let branch = self.current_branch("on_commit")?;
        let mut s = self.state();
        if s.commits.iter().any(|(b, _)| *b == branch) {
            return Err(Error::invalid(format!(
                "branch {branch} already has a commit"
            )));
        }
        s.commits
            .push((branch, Box::new(move |info| Box::pin(f(info)))));
        Ok(())
    }

    /// Registers `f` both as commit and as rollback of the current branch; its second
    /// argument says which (`true` for rollback).
    pub fn on_finish<F, Fut>(&self, f: F) -> Result<()>
    where
        F: Fn(TransInfo, bool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let f = Arc::new(f);
        let g = f.clone();
        self.on_rollback(move |info| g(info, true))?;
        self.on_commit(move |info| f(info, false))
    }

    /// Runs `f` as the current branch's recorded local action: on a resumed run its
    /// recorded result (or failure) comes back without running `f` again. `f` receives the
    /// transaction info, from which a barrier can be built.
    pub async fn do_<F, Fut>(&self, f: F) -> Result<Vec<u8>>
    where
        F: FnOnce(TransInfo) -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        let info = self.trans_info();
        self.recorded("local", "", async move {
            StepOutcome::from_result(f(info).await)
        })
        .await
    }

    /// The core of every recorded step of the current branch and op.
    pub(crate) async fn recorded<Fut>(&self, kind: &str, label: &str, step: Fut) -> Result<Vec<u8>>
    where
        Fut: Future<Output = StepOutcome>,
    {
        let (branch, op, key) = {
            let mut s = self.state();
            let (branch, op) = self.position(&s);
            if branch.is_empty() {
                return Err(Error::invalid("call new_branch before a recorded step"));
            }
            if op == Op::Action && !s.actions.insert(branch.clone()) {
                return Err(Error::invalid(format!(
                    "branch {branch} already has its one recorded action; call new_branch first"
                )));
            }
            let key = format!("{branch}-{op}");
            s.consumed.insert(key.clone());
            (branch, op, key)
        };
        let recorded = self.inner.progress.contains_key(&key);
        if op == Op::Action && !recorded {
            if let Some(reason) = self.inner.budget.refusal() {
                // Not run, not recorded, and the branch keeps its rollback: an earlier run's
                // attempt may have applied (see WfOptions::deadline).
                tracing::info!(gid = %self.inner.gid, branch, %reason, "action not run: the workflow's budget is spent");
                self.state().gave_up = Some(reason.clone());
                return Err(Error::Failure(reason));
            }
        }
        if self.inner.replay && !recorded {
            self.state().beyond_history = true;
            return Err(Error::NonDeterministic(format!(
                "replay of workflow {} gid {}: step {key} has no record in the history: the code takes a step the recorded run did not",
                self.inner.name, self.inner.gid
            )));
        }
        let span = tracing::info_span!(
            "dtm.workflow.step",
            otel.name = %format_args!("dtm workflow step {kind}"),
            dtm.gid = %self.inner.gid,
            dtm.branch_id = %branch,
            dtm.op = %op,
            dtm.step.kind = kind,
            dtm.step.replayed = tracing::field::Empty,
        );
        let result = async {
            if let Some(p) = self.inner.progress.get(&key) {
                tracing::Span::current().record("dtm.step.replayed", true);
                dtmcli::metrics::workflow_step(true);
                return self.replay(&key, kind, label, p);
            }
            tracing::Span::current().record("dtm.step.replayed", false);
            dtmcli::metrics::workflow_step(false);
            let outcome = step.await;
            let (status, payload, result) = match outcome {
                StepOutcome::Ok(v) => ("succeed", v.clone(), Ok(v)),
                StepOutcome::Failed(m) => {
                    ("failed", m.clone().into_bytes(), Err(Error::Failure(m)))
                }
                StepOutcome::Unrecorded(e) => return Err(e),
            };
            self.inner
                .transport
                .record(
                    &self.inner.gid,
                    &branch,
                    op.as_str(),
                    status,
                    self.inner.format.encode(kind, label, &payload),
                )
                .await?;
            result
        }
        .instrument(span)
        .await;
        if matches!(&result, Err(Error::Failure(_))) && !self.inner.options.compensate_error_branch
        {
            // This branch's own action failed: nothing to undo. Its rollback is wherever
            // concurrent branches left it in the list.
            self.state().rollbacks.retain(|(b, _)| *b != branch);
        }
        result
    }

    fn replay(&self, key: &str, kind: &str, label: &str, p: &Progress) -> Result<Vec<u8>> {
        let rec: Record = self.inner.format.decode(&p.data);
        if let Some(k) = &rec.kind {
            if k != kind || rec.label != label {
                return Err(Error::NonDeterministic(format!(
                    "workflow {} gid {}: step {key} was recorded as {k} {:?}, the code now asks for {kind} {label:?}",
                    self.inner.name, self.inner.gid, rec.label
                )));
            }
        }
        tracing::debug!(key, "replaying recorded step");
        match p.status.as_str() {
            "succeed" => Ok(rec.payload),
            "failed" => Err(Error::Failure(
                String::from_utf8_lossy(&rec.payload).into_owned(),
            )),
            other => Err(Error::NonDeterministic(format!(
                "step {key} has an unexpected recorded status {other:?}"
            ))),
        }
    }

    /// Recorded actions the code did not ask for on this run (a replay that took fewer or
    /// other branches than the record holds).
    pub(crate) fn unconsumed_actions(&self) -> Vec<String> {
        let s = self.state();
        let mut v: Vec<String> = self
            .inner
            .progress
            .keys()
            .filter(|k| k.ends_with("-action") && !s.consumed.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Phase 2: the commit (`rollback == false`) or rollback callbacks, newest first, each a
    /// recorded step of its branch.
    pub(crate) async fn phase2(&self, rollback: bool) -> Result<()> {
        let callbacks = {
            let mut s = self.state();
            s.phase2 = true;
            s.op = if rollback { Op::Rollback } else { Op::Commit };
            if rollback {
                std::mem::take(&mut s.rollbacks)
            } else {
                std::mem::take(&mut s.commits)
            }
        };
        let kind = if rollback { "rollback" } else { "commit" };
        for (branch, f) in callbacks.into_iter().rev() {
            self.state().branch = branch;
            let info = self.trans_info();
            let r = self
                .recorded(kind, "", async move {
                    match f(info).await {
                        Ok(()) => StepOutcome::Ok(Vec::new()),
                        Err(Error::Failure(m)) => StepOutcome::Unrecorded(Error::invalid(format!(
                            "a {kind} callback must not fail for good (it returned FAILURE: {m}); it will be retried"
                        ))),
                        Err(e) => StepOutcome::Unrecorded(e),
                    }
                })
                .await;
            r?;
        }
        Ok(())
    }
}
