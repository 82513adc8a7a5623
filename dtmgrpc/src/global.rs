//! TCC and XA global transactions over gRPC: prepare, run the user's code, then submit or
//! abort.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use dtmcli::flow::GlobalCore;
use dtmcli::{Error, Op, Result, TransInfo, TransOptions, TransType};
use prost::Message;
use tonic::metadata::MetadataMap;

use crate::client::{dtm_request, DtmGrpcClient};
use crate::metadata::trans_info_from_metadata;
use crate::pb::dtmgimp::{DtmBranchRequest, DtmRequest};
use crate::url::check_branch_url;

#[derive(Debug)]
struct Global {
    client: DtmGrpcClient,
    core: GlobalCore,
}

impl Global {
    fn new(
        client: &DtmGrpcClient,
        gid: &str,
        tt: TransType,
        options: TransOptions,
        parent: &str,
    ) -> Self {
        Global {
            client: client.clone(),
            core: GlobalCore::new(gid, tt, options, parent),
        }
    }

    fn request(&self) -> Result<DtmRequest> {
        dtm_request(
            &self.core.gid,
            self.core.trans_type,
            &self.core.options,
            &[],
        )
    }

    fn branch_info(&self, branch_id: String, op: Op) -> TransInfo {
        self.core.branch_info(branch_id, op, self.client.target())
    }
}

/// prepare → f → submit, or abort (with the error as rollback reason) on error or panic.
async fn run_global<H, T, F, Fut>(global: Arc<Global>, handle: H, f: F) -> Result<T>
where
    F: FnOnce(H) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let req = global.request()?;
    dtmcli::flow::global_transaction(
        &global.core.gid,
        || global.client.prepare(&req),
        f(handle),
        || global.client.submit(&req),
        |reason| {
            let mut abort = req.clone();
            abort.rollback_reason = reason;
            let client = global.client.clone();
            async move { client.abort(&abort).await }
        },
    )
    .await
}

/// A TCC global transaction over gRPC, handed to the closure of
/// [`DtmGrpcClient::tcc_global_transaction`], or rebuilt inside a try handler with
/// [`Tcc::nested`] / [`Tcc::from_metadata`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tcc(Arc<Global>);

impl DtmGrpcClient {
    /// Runs a TCC global transaction: `Prepare`, then `f` (which calls
    /// [`Tcc::call_branch`] for each branch), then `Submit` if `f` succeeded. A `gid` that
    /// is not a valid gid ([`dtmcli::identity::check_gid`]) or not printable ASCII is refused
    /// with [`Error::InvalidInput`] before anything is sent. If `f` returns
    /// an error or panics, the transaction is aborted with the error text as
    /// `rollback_reason` (DTM then cancels every registered branch), and the error is
    /// returned or the panic resumed.
    pub async fn tcc_global_transaction<T, F, Fut>(
        &self,
        gid: &str,
        options: TransOptions,
        f: F,
    ) -> Result<T>
    where
        F: FnOnce(Tcc) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let g = Arc::new(Global::new(self, gid, TransType::Tcc, options, ""));
        run_global(g.clone(), Tcc(g), f).await
    }
}

impl Tcc {
    /// Rebuilds the TCC inside a try handler so that it can open sub-branches (`0201`,
    /// `0202`...). `info` is the incoming request's transaction info; it must carry `dtm`
    /// (`dtm-dtm`, which the SDK always sends when calling a try). `client` lends its
    /// settings and channels; the DTM server is the one named in `info`, which `client` must
    /// trust ([`DtmGrpcClient::with_target`]): a request naming another server is refused
    /// with [`Error::InvalidInput`] before anything is sent.
    pub fn nested(client: &DtmGrpcClient, info: &TransInfo) -> Result<Tcc> {
        let dtm = info
            .dtm
            .as_deref()
            .ok_or_else(|| Error::invalid("nested TCC needs the `dtm-dtm` metadata"))?;
        let client = client.with_target(dtm)?;
        Ok(Tcc(Arc::new(Global::new(
            &client,
            &info.gid,
            TransType::Tcc,
            TransOptions::default(),
            &info.branch_id,
        ))))
    }

    /// [`Tcc::nested`] from an incoming request's metadata (Go: `TccFromGrpc`).
    pub fn from_metadata(client: &DtmGrpcClient, md: &MetadataMap) -> Result<Tcc> {
        Self::nested(client, &trans_info_from_metadata(md)?)
    }

    /// The global id.
    pub fn gid(&self) -> &str {
        &self.0.core.gid
    }

    /// The options (branch headers go on every try call).
    pub fn options(&self) -> &TransOptions {
        &self.0.core.options
    }

    /// Registers a branch (its confirm and cancel URLs, and `req`'s bytes, which they will
    /// receive) and then calls its try URL with `req` and the `dtm-*` metadata. The try's
    /// failure is returned as [`Error::Failure`]; return it from the closure to roll the
    /// transaction back. Returns the try's answer. The try gets the transaction's
    /// `request_timeout`, or the client's timeout.
    pub async fn call_branch<Resp: Message + Default>(
        &self,
        req: &impl Message,
        try_url: &str,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<Resp> {
        for u in [try_url, confirm_url, cancel_url] {
            check_branch_url(u)?;
        }
        let g = &self.0;
        let payload = req.encode_to_vec();
        let branch_id = g.core.next_branch_id()?;
        let reg = DtmBranchRequest {
            gid: g.core.gid.clone(),
            trans_type: TransType::Tcc.as_str().to_string(),
            branch_id: branch_id.clone(),
            op: String::new(),
            data: [("confirm", confirm_url), ("cancel", cancel_url)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            busi_payload: payload.clone(),
        };
        g.client.register_branch(&reg).await?;
        let info = g.branch_info(branch_id, Op::Try);
        g.client
            .call_branch_decoded(
                try_url,
                &info,
                &g.core.options.branch_headers,
                Bytes::from(payload),
                g.client.branch_timeout(&g.core.options),
            )
            .await
    }
}

/// The global side of an XA transaction over gRPC, handed to the closure of
/// [`DtmGrpcClient::xa_global_transaction`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Xa(Arc<Global>);

impl DtmGrpcClient {
    /// Runs an XA global transaction: `Prepare`, then `f` (which calls [`Xa::call_branch`]
    /// for each branch; each branch prepares its local XA transaction and registers
    /// itself), then `Submit` (DTM commits every branch) or, on error or panic, `Abort` (DTM
    /// rolls every registered branch back).
    pub async fn xa_global_transaction<T, F, Fut>(
        &self,
        gid: &str,
        options: TransOptions,
        f: F,
    ) -> Result<T>
    where
        F: FnOnce(Xa) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let g = Arc::new(Global::new(self, gid, TransType::Xa, options, ""));
        run_global(g.clone(), Xa(g), f).await
    }
}

impl Xa {
    /// The global id.
    pub fn gid(&self) -> &str {
        &self.0.core.gid
    }

    /// Calls an XA branch: `url` with `op action`, a new branch id, `dtm-phase2_url = url`
    /// and `dtm-dtm`, so the branch can register itself; DTM later calls the same URL with
    /// `op commit` or `op rollback` (and an empty message). Returns the branch's answer. The
    /// call gets the transaction's `request_timeout`, or the client's timeout.
    pub async fn call_branch<Resp: Message + Default>(
        &self,
        req: &impl Message,
        url: &str,
    ) -> Result<Resp> {
        check_branch_url(url)?;
        let g = &self.0;
        let mut info = g.branch_info(g.core.next_branch_id()?, Op::Action);
        info.phase2_url = Some(url.to_string());
        g.client
            .call_branch_decoded(
                url,
                &info,
                &g.core.options.branch_headers,
                Bytes::from(req.encode_to_vec()),
                g.client.branch_timeout(&g.core.options),
            )
            .await
    }
}
