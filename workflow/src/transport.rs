//! How a workflow talks to DTM: through any [`dtmcli::Transport`].
//!
//! Each method is one step of DTM's workflow protocol, with what differs between the
//! protocols kept here: which `protocol` the transaction names, that DTM's HTTP API stores
//! a record as text, and that DTM's gRPC `PrepareWorkflow` never returns the stored result.

use base64::Engine;
use bytes::Bytes;
use dtmcli::transport::{BranchRegistration, DtmOp, RegistrationKind, Transport as DtmTransport};
use std::sync::Arc;

use dtmcli::{
    Error, Limits, QueryResult, Result, TransGlobal, TransOptions, TransRequest, TransStatus,
    TransType, WorkflowProgress,
};
use futures_util::future::BoxFuture;

use crate::record::RecordFormat;

/// Where a gRPC workflow keeps a copy of its result (see [`Transport::submit_workflow`]).
pub(crate) const RESULT_BRANCH: &str = "00";
const RESULT_OP: &str = "result";

/// The DTM connection of a workflow registry: any [`dtmcli::Transport`] (HTTP, gRPC, a
/// cluster of either, a user's own), behind one type so that [`crate::Wf`] and
/// [`crate::Workflows`] are not generic over it. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Transport(Arc<dyn Dtm>);

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.debug(f)
    }
}

/// The calls of [`dtmcli::Transport`] a workflow makes, object-safe (boxed futures).
trait Dtm: Send + Sync + 'static {
    fn debug(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result;
    fn protocol(&self) -> &'static str;
    fn limits(&self) -> &Limits;
    fn server(&self) -> &str;
    fn query<'a>(&'a self, gid: &'a str) -> BoxFuture<'a, Result<QueryResult>>;
    fn prepare<'a>(&'a self, req: &'a TransRequest) -> BoxFuture<'a, Result<WorkflowProgress>>;
    fn register<'a>(&'a self, reg: &'a BranchRegistration) -> BoxFuture<'a, Result<()>>;
    fn call_dtm(&self, op: DtmOp, req: TransRequest) -> BoxFuture<'_, Result<()>>;
}

impl<T: DtmTransport> Dtm for T {
    fn debug(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
    fn protocol(&self) -> &'static str {
        DtmTransport::protocol(self)
    }
    fn limits(&self) -> &Limits {
        DtmTransport::limits(self)
    }
    fn server(&self) -> &str {
        DtmTransport::server(self)
    }
    fn query<'a>(&'a self, gid: &'a str) -> BoxFuture<'a, Result<QueryResult>> {
        Box::pin(DtmTransport::query(self, gid))
    }
    fn prepare<'a>(&'a self, req: &'a TransRequest) -> BoxFuture<'a, Result<WorkflowProgress>> {
        Box::pin(DtmTransport::prepare_workflow_progress(self, req))
    }
    fn register<'a>(&'a self, reg: &'a BranchRegistration) -> BoxFuture<'a, Result<()>> {
        Box::pin(DtmTransport::register(self, reg))
    }
    fn call_dtm(&self, op: DtmOp, req: TransRequest) -> BoxFuture<'_, Result<()>> {
        Box::pin(DtmTransport::call_dtm(self, op, req))
    }
}

/// The transport of a replay: there is no DTM to call.
struct Offline(Limits);

impl Offline {
    fn refuse<T>(what: &str) -> BoxFuture<'static, Result<T>> {
        let e = Error::invalid(format!("a replay has no DTM: {what} was not sent"));
        Box::pin(async move { Err(e) })
    }
}

impl Dtm for Offline {
    fn debug(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Offline")
    }
    fn protocol(&self) -> &'static str {
        "replay"
    }
    fn limits(&self) -> &Limits {
        &self.0
    }
    fn server(&self) -> &str {
        ""
    }
    fn query<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<QueryResult>> {
        Self::refuse("query")
    }
    fn prepare<'a>(&'a self, _: &'a TransRequest) -> BoxFuture<'a, Result<WorkflowProgress>> {
        Self::refuse("prepareWorkflow")
    }
    fn register<'a>(&'a self, _: &'a BranchRegistration) -> BoxFuture<'a, Result<()>> {
        Self::refuse("registerBranch")
    }
    fn call_dtm(&self, op: DtmOp, _: TransRequest) -> BoxFuture<'_, Result<()>> {
        Self::refuse(op.as_str())
    }
}

/// One recorded step as DTM returns it.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) branch_id: String,
    pub(crate) op: String,
    pub(crate) status: String,
    pub(crate) data: Vec<u8>,
}

/// What `prepareWorkflow` found.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// The workflow finished earlier: its stored result, or its failure.
    Finished(Result<Vec<u8>>),
    /// The transaction is prepared (now, or by an earlier run): the steps recorded so far.
    Open(Vec<Step>),
}

impl Transport {
    /// Wraps `dtm`.
    pub(crate) fn new<T: DtmTransport>(dtm: T) -> Self {
        Transport(Arc::new(dtm))
    }

    /// No DTM at all: every call fails (a replay of a recorded history sends nothing).
    pub(crate) fn offline() -> Self {
        Transport(Arc::new(Offline(Limits::default())))
    }

    pub(crate) fn protocol(&self) -> &'static str {
        self.0.protocol()
    }

    pub(crate) fn limits(&self) -> &Limits {
        self.0.limits()
    }

    pub(crate) fn server(&self) -> String {
        self.0.server().to_string()
    }

    /// DTM's stored state of `gid` (`query`: HTTP, or a gRPC client's HTTP API), which
    /// never creates anything.
    pub(crate) async fn query(&self, gid: &str) -> Result<QueryResult> {
        self.0.query(gid).await
    }

    /// `prepareWorkflow`: creates the transaction `req` describes, or finds it with its
    /// records (read in `format`). Also returns the transaction as DTM's answer carries it:
    /// over HTTP with its `custom_data` (the workflow's name and input) and `create_time`,
    /// over gRPC with neither.
    pub(crate) async fn prepare_workflow(
        &self,
        mut req: TransRequest,
        format: RecordFormat,
    ) -> Result<(Prepared, TransGlobal)> {
        req.set_protocol(self.protocol());
        let p = self.0.prepare(&req).await?;
        let t = p.transaction.unwrap_or_default();
        let steps: Vec<Step> = p
            .progresses
            .into_iter()
            .map(|b| Step {
                branch_id: b.branch_id,
                op: b.op,
                status: b.status,
                data: b.bin_data,
            })
            .collect();
        let prepared = match TransStatus::parse(&t.status) {
            TransStatus::Succeed => Prepared::Finished(stored_result(&t.result, &steps, format)),
            TransStatus::Failed => {
                Prepared::Finished(Err(Error::Failure(t.rollback_reason.clone())))
            }
            _ => Prepared::Open(steps),
        };
        Ok((prepared, t))
    }

    /// `registerBranch`: records a step's outcome (`data` as the record format made it).
    pub(crate) async fn record(
        &self,
        gid: &str,
        branch_id: &str,
        op: &str,
        status: &str,
        data: Bytes,
    ) -> Result<()> {
        if self.protocol() == "http" && std::str::from_utf8(&data).is_err() {
            // Only the Go record format stores raw bytes; DTM's HTTP API takes a record as
            // JSON text, and a lossy copy would replay other bytes than the step produced.
            return Err(Error::invalid(format!(
                "step {branch_id}-{op} of {gid}: its result is not UTF-8 text, which DTM's \
                 HTTP API cannot record in the Go record format (the checked format can)"
            )));
        }
        let reg = BranchRegistration::new(
            gid,
            branch_id,
            RegistrationKind::Workflow {
                op: op.to_string(),
                status: status.to_string(),
                data,
            },
        );
        self.0.register(&reg).await
    }

    /// `submit`: ends workflow `gid` as `succeed` with its result, or `failed` with the
    /// error as its rollback reason. It carries the workflow's `custom_data` (its name and
    /// input) too: DTM v1.19.0 ends a workflow by writing the submit's transaction in place
    /// of the stored one on its boltdb and Redis stores (its SQL stores update the status
    /// columns only), and without it a finished workflow would lose its name and input.
    pub(crate) async fn submit_workflow(
        &self,
        gid: &str,
        outcome: &Result<Vec<u8>>,
        format: RecordFormat,
        custom_data: &str,
    ) -> Result<()> {
        let (status, reason, result) = match outcome {
            Ok(r) => ("succeed", String::new(), r.as_slice()),
            Err(e) => ("failed", e.to_string(), &[][..]),
        };
        if status == "succeed" && self.protocol() == "grpc" && !result.is_empty() {
            // DTM's gRPC prepareWorkflow never returns the stored result (§7.10): keep a
            // copy as a step record, so executing the finished workflow again returns it.
            // An empty result needs none (no copy reads as empty): one call to DTM fewer.
            let copy = format.encode(RESULT_OP, "", result);
            self.record(gid, RESULT_BRANCH, RESULT_OP, status, copy)
                .await?;
        }
        let mut req = TransRequest::new(gid, TransType::Workflow, &TransOptions::default());
        req.set_protocol(self.protocol());
        req.set_custom_data(custom_data);
        req.set_req_extra("status", status);
        req.set_req_extra("rollback_reason", reason);
        req.set_req_extra(
            "result",
            base64::engine::general_purpose::STANDARD.encode(result),
        );
        self.0.call_dtm(DtmOp::Submit, req).await
    }
}

/// The result of a finished workflow: DTM's `result` (base64, HTTP), or the copy kept as a
/// step record (gRPC, where DTM never returns the result).
fn stored_result(result: &str, steps: &[Step], format: RecordFormat) -> Result<Vec<u8>> {
    if result.is_empty() {
        let copy = steps
            .iter()
            .find(|s| s.branch_id == RESULT_BRANCH && s.op == RESULT_OP);
        return Ok(copy.map_or_else(Vec::new, |s| format.decode(&s.data).payload));
    }
    base64::engine::general_purpose::STANDARD
        .decode(result.as_bytes())
        .map_err(|e| Error::Decode {
            url: "prepareWorkflow".into(),
            reason: format!("result is not base64: {e}"),
            body: result.to_string(),
        })
}
