//! How a workflow talks to DTM: HTTP, or gRPC (feature `grpc`).

use std::collections::BTreeMap;

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

impl Transport {
    pub(crate) fn protocol(&self) -> &'static str {
        match self {
            Transport::Http(_) => "http",
            #[cfg(feature = "grpc")]
            Transport::Grpc(_) => "grpc",
        }
    }

    /// The DTM client's bounds, which the workflow's recorders keep too.
    pub(crate) fn limits(&self) -> &Limits {
        match self {
            Transport::Http(c) => c.limits(),
            #[cfg(feature = "grpc")]
            Transport::Grpc(c) => c.limits(),
        }
    }

    pub(crate) fn server(&self) -> String {
        match self {
            Transport::Http(c) => c.server().to_string(),
            #[cfg(feature = "grpc")]
            Transport::Grpc(c) => c.target().to_string(),
        }
    }

    pub(crate) async fn prepare_workflow(&self, req: &TransRequest) -> Result<Prepared> {
        match self {
            Transport::Http(c) => {
                let p = c.prepare_workflow(req).await?;
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
            #[cfg(feature = "grpc")]
            Transport::Grpc(c) => {
                let reply = c.prepare_workflow(&req.into()).await?;
                let t = reply.transaction.unwrap_or_default();
                Ok(Prepared {
                    status: t.status,
                    result: t.result,
                    rollback_reason: t.rollback_reason,
                    steps: reply
                        .progresses
                        .into_iter()
                        .map(|p| Step {
                            branch_id: p.branch_id,
                            op: p.op,
                            status: p.status,
                            data: p.bin_data,
                        })
                        .collect(),
                })
            }
        }
    }

    /// Records one step. `"sync":"1"` makes v1.15.1+ servers write it synchronously even
    /// when `UpdateBranchSync` is off (the v1.19.0 default), where the Go SDK loses it.
    pub(crate) async fn record(
        &self,
        gid: &str,
        branch_id: &str,
        op: &str,
        status: &str,
        data: String,
    ) -> Result<()> {
        match self {
            Transport::Http(c) => {
                let fields: BTreeMap<String, String> = [
                    ("gid", gid),
                    ("trans_type", "workflow"),
                    ("branch_id", branch_id),
                    ("op", op),
                    ("status", status),
                    ("sync", "1"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain([("data".to_string(), data)])
                .collect();
                c.register_branch(&fields).await
            }
            #[cfg(feature = "grpc")]
            Transport::Grpc(c) => {
                let req = dtmgrpc::pb::dtmgimp::DtmBranchRequest {
                    gid: gid.to_string(),
                    trans_type: "workflow".to_string(),
                    branch_id: branch_id.to_string(),
                    op: op.to_string(),
                    data: [("status", status), ("op", op), ("sync", "1")]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    busi_payload: data.into_bytes(),
                };
                c.register_branch(&req).await
            }
        }
    }

    pub(crate) async fn submit(&self, req: &TransRequest) -> Result<()> {
        match self {
            Transport::Http(c) => c.submit(req).await,
            #[cfg(feature = "grpc")]
            Transport::Grpc(c) => c.submit(&req.into()).await,
        }
    }
}
