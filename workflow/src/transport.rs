//! How a workflow talks to DTM.

use std::collections::BTreeMap;

use dtmcli::{DtmClient, Error, Result, TransBranch, TransGlobal, TransRequest};
use serde::Deserialize;

/// The DTM connection of a workflow registry.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    /// HTTP: `prepareWorkflow`, `registerBranch`, `submit` on the DTM HTTP API.
    Http(DtmClient),
}

/// The answer of `prepareWorkflow`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Prepared {
    pub(crate) transaction: Option<TransGlobal>,
    #[serde(deserialize_with = "null_default")]
    pub(crate) progresses: Vec<TransBranch>,
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
        }
    }

    pub(crate) fn server(&self) -> String {
        match self {
            Transport::Http(c) => c.server().to_string(),
        }
    }

    pub(crate) async fn prepare_workflow(&self, req: &TransRequest) -> Result<Prepared> {
        match self {
            Transport::Http(c) => {
                let body = c.prepare_workflow(req).await?;
                serde_json::from_slice(&body).map_err(|e| Error::Decode {
                    url: format!("{}/prepareWorkflow", c.server()),
                    reason: e.to_string(),
                    body: String::from_utf8_lossy(&body).chars().take(4096).collect(),
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
        }
    }

    pub(crate) async fn submit(&self, req: &TransRequest) -> Result<()> {
        match self {
            Transport::Http(c) => c.submit(req).await,
        }
    }
}
