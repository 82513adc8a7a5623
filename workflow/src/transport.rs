//! How a workflow talks to DTM: HTTP, or gRPC (feature `grpc`).
//!
//! Each method is one step of DTM's workflow protocol, with what differs between the
//! protocols kept here: which `protocol` the transaction names, that DTM's HTTP API stores
//! a record as text, and that DTM's gRPC `PrepareWorkflow` never returns the stored result.

use base64::Engine;
use bytes::Bytes;
use dtmcli::transport::{BranchRegistration, DtmOp, RegistrationKind, Transport as DtmTransport};
#[cfg(feature = "http")]
use dtmcli::DtmClient;
use dtmcli::{
    Error, Limits, Result, TransGlobal, TransOptions, TransRequest, TransStatus, TransType,
};

use crate::record::RecordFormat;

/// Where a gRPC workflow keeps a copy of its result (see [`Transport::submit_workflow`]).
const RESULT_BRANCH: &str = "00";
const RESULT_OP: &str = "result";

/// The DTM connection of a workflow registry.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    /// HTTP: `prepareWorkflow`, `registerBranch`, `submit` on the DTM HTTP API.
    #[cfg(feature = "http")]
    Http(DtmClient),
    /// gRPC: the same calls on `dtmgimp.Dtm`.
    #[cfg(feature = "grpc")]
    Grpc(dtmgrpc::DtmGrpcClient),
    /// Several DTM servers over HTTP ([`dtmcli::cluster`]).
    #[cfg(feature = "http")]
    HttpCluster(dtmcli::cluster::Cluster<DtmClient>),
    /// Several DTM servers over gRPC, each with its HTTP API for resolving lost answers.
    #[cfg(all(feature = "grpc", feature = "http"))]
    GrpcCluster(dtmcli::cluster::Cluster<dtmcli::cluster::WithQuery<dtmgrpc::DtmGrpcClient>>),
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

/// Runs `$body` with `$c` bound to the concrete client: every method below is one call of
/// the [`dtmcli::Transport`] trait, whichever protocol this workflow speaks.
macro_rules! each {
    ($self:expr, $c:ident => $body:expr) => {
        match $self {
            #[cfg(feature = "http")]
            Transport::Http($c) => $body,
            #[cfg(feature = "grpc")]
            Transport::Grpc($c) => $body,
            #[cfg(feature = "http")]
            Transport::HttpCluster($c) => $body,
            #[cfg(all(feature = "grpc", feature = "http"))]
            Transport::GrpcCluster($c) => $body,
        }
    };
}

impl Transport {
    pub(crate) fn protocol(&self) -> &'static str {
        each!(self, c => DtmTransport::protocol(c))
    }

    pub(crate) fn limits(&self) -> &Limits {
        each!(self, c => DtmTransport::limits(c))
    }

    pub(crate) fn server(&self) -> String {
        each!(self, c => DtmTransport::server(c).to_string())
    }

    /// DTM's stored state of `gid` (`query`: HTTP, or a gRPC client's HTTP API), which
    /// never creates anything.
    pub(crate) async fn query(&self, gid: &str) -> Result<dtmcli::QueryResult> {
        each!(self, c => c.query(gid).await)
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
        let p = each!(self, c => c.prepare_workflow_progress(&req).await)?;
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
        each!(self, c => c.register(&reg).await)
    }

    /// `submit`: ends workflow `gid` as `succeed` with its result, or `failed` with the
    /// error as its rollback reason.
    pub(crate) async fn submit_workflow(
        &self,
        gid: &str,
        outcome: &Result<Vec<u8>>,
        format: RecordFormat,
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
        req.set_req_extra("status", status);
        req.set_req_extra("rollback_reason", reason);
        req.set_req_extra(
            "result",
            base64::engine::general_purpose::STANDARD.encode(result),
        );
        each!(self, c => c.call_dtm(DtmOp::Submit, req).await)
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
