//! How a workflow talks to DTM: HTTP, or gRPC (feature `grpc`).

use dtmcli::transport::{BranchRegistration, DtmOp, RegistrationKind, Transport as DtmTransport};
use dtmcli::{DtmClient, Limits, Result, TransRequest};

/// The DTM connection of a workflow registry.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    /// HTTP: `prepareWorkflow`, `registerBranch`, `submit` on the DTM HTTP API.
    Http(DtmClient),
    /// gRPC: the same calls on `dtmgimp.Dtm`.
    #[cfg(feature = "grpc")]
    Grpc(dtmgrpc::DtmGrpcClient),
}

/// One recorded step as DTM returns it.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) branch_id: String,
    pub(crate) op: String,
    pub(crate) status: String,
    pub(crate) data: Vec<u8>,
}

/// The answer of `prepareWorkflow`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prepared {
    /// Empty when DTM returned no transaction.
    pub(crate) status: String,
    /// base64 of the result (HTTP only: DTM's gRPC answer never carries it).
    pub(crate) result: String,
    pub(crate) rollback_reason: String,
    pub(crate) steps: Vec<Step>,
}

/// Runs `$body` with `$c` bound to the concrete client: every method below is one call of
/// the [`dtmcli::Transport`] trait, whichever protocol this workflow speaks.
macro_rules! each {
    ($self:expr, $c:ident => $body:expr) => {
        match $self {
            Transport::Http($c) => $body,
            #[cfg(feature = "grpc")]
            Transport::Grpc($c) => $body,
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

    pub(crate) async fn prepare_workflow(&self, req: &TransRequest) -> Result<Prepared> {
        let p = each!(self, c => c.prepare_workflow_progress(req).await)?;
        let t = p.transaction.unwrap_or_default();
        Ok(Prepared {
            status: t.status,
            result: t.result,
            rollback_reason: t.rollback_reason,
            steps: p
                .progresses
                .into_iter()
                .map(|b| Step {
                    branch_id: b.branch_id,
                    op: b.op,
                    status: b.status,
                    data: b.bin_data,
                })
                .collect(),
        })
    }

    pub(crate) async fn record(
        &self,
        gid: &str,
        branch_id: &str,
        op: &str,
        status: &str,
        data: String,
    ) -> Result<()> {
        let reg = BranchRegistration::new(
            gid,
            branch_id,
            RegistrationKind::Workflow {
                op: op.to_string(),
                status: status.to_string(),
                data: data.into(),
            },
        );
        each!(self, c => c.register(&reg).await)
    }

    pub(crate) async fn submit(&self, req: &TransRequest) -> Result<()> {
        each!(self, c => c.call_dtm(DtmOp::Submit, req).await)
    }
}
