//! How a workflow talks to DTM: HTTP, or gRPC (feature `grpc`).

use std::collections::BTreeMap;

use dtmcli::{DtmClient, Error, Result, TransBranch, TransGlobal, TransRequest};
use serde::Deserialize;

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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HttpPrepared {
    transaction: Option<TransGlobal>,
    #[serde(deserialize_with = "null_default")]
    progresses: Vec<TransBranch>,
}

fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Transport {
    pub(crate) fn protocol(&self) -> &'static str {
        match self {
            Transport::Http(_) => "http",
            #[cfg(feature = "grpc")]
            Transport::Grpc(_) => "grpc",
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
                let body = c.prepare_workflow(req).await?;
                let p: HttpPrepared = serde_json::from_slice(&body).map_err(|e| Error::Decode {
                    url: format!("{}/prepareWorkflow", c.server()),
                    reason: e.to_string(),
                    body: String::from_utf8_lossy(&body).chars().take(4096).collect(),
                })?;
                let t = p.transaction.unwrap_or_default();
                Ok(Prepared {
                    status: t.status.clone(),
                    result: t.result.clone(),
                    rollback_reason: t.rollback_reason.clone(),
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
                let reply = c.prepare_workflow(&grpc::request(req)).await?;
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
            Transport::Grpc(c) => c.submit(&grpc::request(req)).await,
        }
    }
}

#[cfg(feature = "grpc")]
mod grpc {
    use dtmcli::TransRequest;
    use dtmgrpc::pb::dtmgimp::{DtmRequest, DtmTransOptions};

    /// The gRPC form of a workflow request (as the Go SDK builds it: steps `"null"`).
    pub(super) fn request(r: &TransRequest) -> DtmRequest {
        DtmRequest {
            gid: r.gid.clone(),
            trans_type: r.trans_type.clone(),
            trans_options: Some(DtmTransOptions {
                wait_result: r.wait_result,
                timeout_to_fail: r.timeout_to_fail,
                retry_interval: r.retry_interval,
                branch_headers: r.branch_headers.clone().into_iter().collect(),
                request_timeout: r.request_timeout,
                retry_limit: r.retry_limit,
            }),
            customed_data: r.custom_data.clone(),
            bin_payloads: Vec::new(),
            query_prepared: r.query_prepared.clone(),
            steps: "null".to_string(),
            req_extra: r.req_extra.clone().into_iter().collect(),
            rollback_reason: r.rollback_reason.clone(),
        }
    }
}
