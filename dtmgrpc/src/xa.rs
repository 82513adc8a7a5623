//! XA local transactions of gRPC branches (features `mysql` / `postgres`).
//!
//! The branch side of XA is [`dtm_barrier::xa::XaLocal`]; over gRPC the branch registers
//! itself with DTM's gRPC API (`RegisterBranch` with `Data {url: dtm-phase2_url}`) instead of
//! the HTTP one, still inside the local XA transaction, before it is prepared.

use std::sync::Arc;

use dtm_barrier::xa::{Registration, XaDatabase, XaLocal};
use dtmcli::{Op, TransInfo};
use futures_util::future::BoxFuture;

use crate::client::DtmGrpcClient;
use crate::pb::dtmgimp::DtmBranchRequest;

/// XA local transactions whose branches are called over gRPC.
pub struct XaGrpcLocal<DB: XaDatabase> {
    local: Arc<XaLocal<DB>>,
    client: DtmGrpcClient,
}

impl<DB: XaDatabase> Clone for XaGrpcLocal<DB> {
    fn clone(&self) -> Self {
        XaGrpcLocal {
            local: self.local.clone(),
            client: self.client.clone(),
        }
    }
}

impl<DB: XaDatabase> std::fmt::Debug for XaGrpcLocal<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XaGrpcLocal")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Forces the higher-ranked signature of a business closure.
fn business<DB, T, F>(f: F) -> F
where
    DB: XaDatabase,
    F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, dtm_barrier::Result<T>>,
{
    f
}

impl<DB: XaDatabase> XaGrpcLocal<DB> {
    /// XA branches on `local`'s database, registering through `client`, or through the DTM
    /// server named by an incoming request's `dtm-dtm` when `client` trusts it
    /// ([`DtmGrpcClient::with_target`]; another server is refused before anything is sent).
    pub fn new(local: XaLocal<DB>, client: DtmGrpcClient) -> Self {
        XaGrpcLocal {
            local: Arc::new(local),
            client,
        }
    }

    /// The underlying [`XaLocal`].
    pub fn local(&self) -> &XaLocal<DB> {
        &self.local
    }

    /// Handles one XA branch call (`info` from [`crate::trans_info_from_metadata`]): phase 1
    /// (`op action`) runs `busi` in a local XA transaction, registers the branch over gRPC
    /// and prepares, returning `busi`'s value; phase 2 (`op commit` / `op rollback`) commits
    /// or rolls back the prepared branch and returns `None`.
    pub async fn handle<T, F>(&self, info: &TransInfo, busi: F) -> dtm_barrier::Result<Option<T>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, dtm_barrier::Result<T>>
            + Send
            + 'static,
    {
        match info.op {
            Op::Commit | Op::Rollback => self.local.phase2(info).await.map(|()| None),
            Op::Action => {
                let phase2_url = info.phase2_url.clone().ok_or_else(|| {
                    dtm_barrier::Error::Config(
                        "XA branch called without dtm-phase2_url metadata".into(),
                    )
                })?;
                let client = match info.dtm.as_deref() {
                    Some(dtm) => self.client.with_target(dtm)?,
                    None => self.client.clone(),
                };
                let reg = DtmBranchRequest {
                    gid: info.gid.clone(),
                    trans_type: info.trans_type.as_str().to_string(),
                    branch_id: info.branch_id.clone(),
                    op: String::new(),
                    data: [("url".to_string(), phase2_url)].into_iter().collect(),
                    busi_payload: Vec::new(),
                };
                let wrapped = business::<DB, T, _>(move |conn| {
                    Box::pin(async move {
                        let v = busi(conn).await?;
                        // Inside the XA transaction, before prepare: DTM refuses it once the
                        // global transaction is no longer prepared (late actions).
                        client.register_branch(&reg).await?;
                        Ok(v)
                    })
                });
                self.local
                    .phase1(info, Registration::None, wrapped)
                    .await
                    .map(Some)
            }
            ref other => Err(dtm_barrier::Error::Config(format!(
                "XA branch called with op {other}"
            ))),
        }
    }
}
