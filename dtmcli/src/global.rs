//! TCC and XA global transactions: prepare, run the user's code, then submit or abort.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;

use crate::client::{BranchResponse, DtmClient};
use crate::error::{Error, Result};
use crate::flow::GlobalCore;
use crate::options::TransOptions;
use crate::types::{Op, TransInfo, TransType};
use crate::wire::TransRequest;

#[derive(Debug)]
struct Global {
    client: DtmClient,
    core: GlobalCore,
}

impl Global {
    fn new(
        client: &DtmClient,
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

    fn request(&self) -> TransRequest {
        TransRequest::new(&self.core.gid, self.core.trans_type, &self.core.options)
    }

    fn branch_info(&self, branch_id: String, op: Op) -> TransInfo {
        self.core.branch_info(branch_id, op, self.client.server())
    }

    /// Calls a branch (TCC try, XA action) within the transaction's `request_timeout`, or
    /// the client's timeout without one.
    async fn call_branch(
        &self,
        url: &str,
        info: &TransInfo,
        data: String,
    ) -> Result<BranchResponse> {
        let timeout = self.client.call_timeout(self.core.options.request_timeout);
        self.client
            .call_branch_with_timeout(
                url,
                info,
                &self.core.options.branch_headers,
                Some(data),
                timeout,
            )
            .await
    }
}

/// prepare → f → submit, or abort (with the error as rollback reason) on error or panic.
async fn run_global<H, T, F, Fut>(global: Arc<Global>, handle: H, f: F) -> Result<T>
where
    F: FnOnce(H) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let req = global.request();
    crate::flow::global_transaction(
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

/// A TCC global transaction, handed to the closure of [`DtmClient::tcc_global_transaction`],
/// or rebuilt inside a try handler with [`Tcc::nested`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tcc(Arc<Global>);

impl DtmClient {
    /// Runs a TCC global transaction: `prepare`, then `f` (which calls
    /// [`Tcc::call_branch`] for each branch), then `submit` if `f` succeeded. If `f` returns
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
        crate::identity::check_gid(gid)?;
        let g = Arc::new(Global::new(self, gid, TransType::Tcc, options, ""));
        run_global(g.clone(), Tcc(g), f).await
    }
}

impl Tcc {
    /// Rebuilds the TCC inside a try handler so that it can open sub-branches (`0201`,
    /// `0202`...). `info` is the incoming request's transaction info; it must carry `dtm`
    /// (the SDK always sends it when calling a try), and that server must be trusted by
    /// `client` ([`DtmClient::with_server`]; by default only `client`'s own server is), or
    /// the result is [`Error::InvalidInput`].
    pub fn nested(client: &DtmClient, info: &TransInfo) -> Result<Tcc> {
        let dtm = info
            .dtm
            .as_deref()
            .ok_or_else(|| Error::invalid("nested TCC needs the `dtm` query parameter"))?;
        let client = client.with_server(dtm)?;
        Ok(Tcc(Arc::new(Global::new(
            &client,
            &info.gid,
            TransType::Tcc,
            TransOptions::default(),
            &info.branch_id,
        ))))
    }

    /// The global id.
    pub fn gid(&self) -> &str {
        &self.0.core.gid
    }

    /// The options (branch headers go on every try call).
    pub fn options(&self) -> &TransOptions {
        &self.0.core.options
    }

    /// Registers a branch (its confirm and cancel URLs, and `body` which they will receive)
    /// and then calls its try URL with `body`. The try's failure is returned as
    /// [`Error::Failure`]; return it from the closure to roll the transaction back.
    pub async fn call_branch(
        &self,
        body: &impl Serialize,
        try_url: &str,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<BranchResponse> {
        let data = serde_json::to_string(body)
            .map_err(|e| Error::invalid(format!("tcc branch body: {e}")))?;
        let g = &self.0;
        let branch_id = g.core.next_branch_id()?;
        let fields = [
            ("gid", g.core.gid.as_str()),
            ("trans_type", "tcc"),
            ("branch_id", branch_id.as_str()),
            ("data", data.as_str()),
            ("confirm", confirm_url),
            ("cancel", cancel_url),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        g.client.register_branch(&fields).await?;
        let info = g.branch_info(branch_id, Op::Try);
        g.call_branch(try_url, &info, data).await
    }
}

/// The global side of an XA transaction, handed to the closure of
/// [`DtmClient::xa_global_transaction`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Xa(Arc<Global>);

impl DtmClient {
    /// Runs an XA global transaction: `prepare`, then `f` (which calls
    /// [`Xa::call_branch`] for each branch; each branch prepares its local XA transaction
    /// and registers itself), then `submit` (DTM commits every branch) or, on error or panic,
    /// `abort` (DTM rolls every branch back).
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
        crate::identity::check_gid(gid)?;
        let g = Arc::new(Global::new(self, gid, TransType::Xa, options, ""));
        run_global(g.clone(), Xa(g), f).await
    }
}

impl Xa {
    /// The global id.
    pub fn gid(&self) -> &str {
        &self.0.core.gid
    }

    /// Calls an XA branch: POST `url` with `op=action`, a new branch id, `phase2_url=url`
    /// and `dtm`, so the branch can register itself; DTM later calls the same URL with
    /// `op=commit` or `op=rollback`.
    pub async fn call_branch(&self, body: &impl Serialize, url: &str) -> Result<BranchResponse> {
        let data = serde_json::to_string(body)
            .map_err(|e| Error::invalid(format!("xa branch body: {e}")))?;
        let g = &self.0;
        let mut info = g.branch_info(g.core.next_branch_id()?, Op::Action);
        info.phase2_url = Some(url.to_string());
        g.call_branch(url, &info, data).await
    }
}
