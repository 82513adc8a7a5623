//! TCC and XA global transactions: prepare, run the user's code, then submit or abort.
//!
//! [`GlobalTx`] is the lifecycle and the branch side of both modes, written once for every
//! transport. [`Tcc`] and [`Xa`] are its faces for JSON transports (HTTP here); `dtmgrpc` has
//! its own faces, which take and return protobuf messages, over the same [`GlobalTx`].

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::FutureExt;
use serde::Serialize;
use tracing::Instrument;

use crate::branch_id::BranchIdGen;
use crate::error::{Error, Result};
#[cfg(feature = "http")]
use crate::http::client::DtmClient;
use crate::options::TransOptions;
use crate::trace;
use crate::transport::BranchResponse;
use crate::transport::{BranchRegistration, DtmOp, Encode, Json, RegistrationKind, Transport};
use crate::types::{Op, TransInfo, TransType};
use crate::wire::TransRequest;

/// A TCC or XA global transaction as the SDK keeps it on the client side: the transport, the
/// id, mode and options, and the generator of its branch ids. Shared (`Arc`) by the handle a
/// closure receives and its clones.
#[derive(Debug)]
pub struct GlobalTx<T: Transport> {
    transport: T,
    gid: String,
    trans_type: TransType,
    options: TransOptions,
    ids: Mutex<BranchIdGen>,
}

impl<T: Transport> GlobalTx<T> {
    fn new(
        transport: T,
        gid: &str,
        trans_type: TransType,
        options: TransOptions,
        parent: &str,
    ) -> Self {
        GlobalTx {
            transport,
            gid: gid.to_string(),
            trans_type,
            options,
            ids: Mutex::new(BranchIdGen::new(parent)),
        }
    }

    /// Runs a global transaction of mode `trans_type` (TCC or XA): `prepare`, then `f` with
    /// the transaction's handle (`wrap` makes the face the closure expects), then `submit` if
    /// `f` succeeded. If `f` returns an error or panics, the transaction is aborted with the
    /// error (or panic) text as `rollback_reason`, and the error is returned or the panic
    /// resumed. A failed abort is only logged: DTM times the transaction out and rolls it
    /// back anyway (an aborted or never-submitted TCC or XA only ever ends `failed`).
    ///
    /// The prepare and the submit are reported as DTM stored them ([`crate::outcome`]):
    /// `Ok` once DTM holds the transaction submitted (with `wait_result`: `succeed`, every
    /// branch confirmed or committed), [`Error::NotFinal`] while DTM still confirms it (a
    /// confirm answered a retryable error) or rolls it back (it timed out first).
    pub async fn run<H, R, F, Fut>(
        transport: &T,
        gid: &str,
        trans_type: TransType,
        options: TransOptions,
        wrap: impl FnOnce(Arc<Self>) -> H,
        f: F,
    ) -> Result<R>
    where
        F: FnOnce(H) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let span = trace::transaction_span(trans_type.as_str(), gid, transport.protocol());
        let protocol = transport.protocol();
        let run = async move {
            crate::identity::check_gid(gid)?;
            let g = Arc::new(GlobalTx::new(
                transport.clone(),
                gid,
                trans_type,
                options,
                "",
            ));
            let req = g.request()?;
            let wait = req.wait_result();
            let answer = g.transport.call_dtm(DtmOp::Prepare, req.clone()).await;
            crate::outcome::prepared(&g.transport, gid, trans_type, answer).await?;
            let (reason, result) = match AssertUnwindSafe(f(wrap(g.clone()))).catch_unwind().await {
                Ok(Ok(v)) => {
                    let answer = g.transport.call_dtm(DtmOp::Submit, req).await;
                    crate::outcome::submitted(&g.transport, gid, trans_type, wait, answer).await?;
                    return Ok(v);
                }
                Ok(Err(e)) => (e.to_string(), Ok(Err(e))),
                Err(panic) => (panic_text(&*panic), Err(panic)),
            };
            let mut abort = req;
            abort.rollback_reason = reason;
            if let Err(e) = g.transport.call_dtm(DtmOp::Abort, abort).await {
                tracing::warn!(gid, error = %e, "abort failed; DTM will time the transaction out");
            }
            match result {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        };
        crate::metrics::transaction(trans_type.as_str(), protocol, run)
            .instrument(span)
            .await
    }

    /// Rebuilds a TCC inside a try handler so that it can open sub-branches (`0201`,
    /// `0202`...): `info` is the incoming request's transaction info; it must name its DTM
    /// server (`dtm`), which `transport` must trust ([`Transport::with_server`]).
    pub fn nested_tcc(transport: &T, info: &TransInfo) -> Result<Arc<Self>> {
        let dtm = info
            .dtm
            .as_deref()
            .ok_or_else(|| Error::invalid("a nested TCC needs the request's DTM server (query `dtm`, gRPC metadata `dtm-dtm`)"))?;
        // A hand-made `info` is not checked like one parsed from a request.
        crate::identity::check_gid(&info.gid)?;
        Ok(Arc::new(GlobalTx::new(
            transport.with_server(dtm)?,
            &info.gid,
            TransType::Tcc,
            TransOptions::default(),
            &info.branch_id,
        )))
    }

    fn request(&self) -> Result<TransRequest> {
        let r = TransRequest::new(&self.gid, self.trans_type, &self.options);
        self.transport.check_request(&r)?;
        Ok(r)
    }

    /// The global id.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// The options (branch headers go on every branch call).
    pub fn options(&self) -> &TransOptions {
        &self.options
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    fn next_branch_id(&self) -> Result<String> {
        self.ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .new_sub_branch_id()
    }

    fn branch_info(&self, branch_id: String, op: Op) -> TransInfo {
        let mut info = TransInfo::new(self.gid.clone(), self.trans_type, branch_id, op);
        info.dtm = Some(self.transport.server().to_string());
        info
    }

    /// Calls a branch within the transaction's `request_timeout`, or the client's timeout.
    async fn call(&self, url: &str, info: &TransInfo, body: Bytes) -> Result<BranchResponse> {
        let timeout = self
            .transport
            .limits()
            .branch_call_timeout(self.options.request_timeout);
        self.transport
            .call_branch_bytes(url, info, &self.options.branch_headers, Some(body), timeout)
            .await
    }

    /// TCC: registers a branch (its confirm and cancel URLs, and `body`, which they will
    /// receive) and then calls its try URL with `body`. The try's failure is returned as
    /// [`Error::Failure`].
    pub async fn tcc_branch(
        &self,
        body: Bytes,
        try_url: &str,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<BranchResponse> {
        for u in [try_url, confirm_url, cancel_url] {
            self.transport.check_branch_url(u)?;
        }
        let branch_id = self.next_branch_id()?;
        self.transport
            .register(&BranchRegistration {
                gid: self.gid.clone(),
                branch_id: branch_id.clone(),
                kind: RegistrationKind::Tcc {
                    confirm: confirm_url.to_string(),
                    cancel: cancel_url.to_string(),
                    data: body.clone(),
                },
            })
            .await?;
        let info = self.branch_info(branch_id, Op::Try);
        self.call(try_url, &info, body).await
    }

    /// XA: calls a branch with `op=action`, a new branch id, `phase2_url=url` and `dtm`, so
    /// that the branch can register itself; DTM later calls the same URL with `op=commit` or
    /// `op=rollback`.
    pub async fn xa_branch(&self, body: Bytes, url: &str) -> Result<BranchResponse> {
        self.transport.check_branch_url(url)?;
        let mut info = self.branch_info(self.next_branch_id()?, Op::Action);
        info.phase2_url = Some(url.to_string());
        self.call(url, &info, body).await
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// A TCC global transaction over a JSON transport (HTTP by default), handed to the closure of
/// [`DtmClient::tcc_global_transaction`], or rebuilt inside a try handler with
/// [`Tcc::nested`]. Cheap to clone. An example is on [`crate::Tcc`].
#[derive(Debug)]
pub struct Tcc<T: Transport<Encoding = Json>>(Arc<GlobalTx<T>>);

impl<T: Transport<Encoding = Json>> Clone for Tcc<T> {
    fn clone(&self) -> Self {
        Tcc(self.0.clone())
    }
}

/// The global side of an XA transaction over a JSON transport (HTTP by default), handed to
/// the closure of [`DtmClient::xa_global_transaction`]. Cheap to clone. An example is on
/// [`crate::Xa`].
#[derive(Debug)]
pub struct Xa<T: Transport<Encoding = Json>>(Arc<GlobalTx<T>>);

impl<T: Transport<Encoding = Json>> Clone for Xa<T> {
    fn clone(&self) -> Self {
        Xa(self.0.clone())
    }
}

/// The TCC and XA faces of a client: `tcc_global_transaction` and `xa_global_transaction`,
/// each the mode's `run` over `self`. Written once for every client, this crate's and
/// dtmgrpc's (hidden: plumbing of the sibling crates).
#[doc(hidden)]
#[macro_export]
macro_rules! __global_faces {
    (tcc: $tcc:ty, xa: $xa:ty, $tcc_doc:literal, $xa_doc:literal) => {
        $crate::__global_faces!(@face tcc_global_transaction, $tcc, $tcc_doc);
        $crate::__global_faces!(@face xa_global_transaction, $xa, $xa_doc);
    };
    (@face $name:ident, $face:ty, $doc:literal) => {
        #[doc = $doc]
        pub async fn $name<R, F, Fut>(
            &self,
            gid: &str,
            options: $crate::TransOptions,
            f: F,
        ) -> $crate::Result<R>
        where
            F: FnOnce($face) -> Fut,
            Fut: ::std::future::Future<Output = $crate::Result<R>>,
        {
            <$face>::run(self, gid, options, f).await
        }
    };
}

/// What a mode's face (`Tcc` or `Xa`, a tuple struct around `Arc<GlobalTx<T>>`, named as the
/// mode's [`TransType`]) has for the transports of one encoding: `run` and `gid`, and its
/// [`ModeHandle`] impl. Written once for this crate's faces and dtmgrpc's (hidden: plumbing
/// of the sibling crates).
#[doc(hidden)]
#[macro_export]
macro_rules! __mode_face {
    ($face:ident, $encoding:ty, $mode:literal, $client_method:literal) => {
        impl<T: $crate::Transport<Encoding = $encoding>> $face<T> {
            #[doc = concat!(
                "Runs ", $mode, " global transaction over `transport` (see [`", $client_method, "`])."
            )]
            pub async fn run<R, F, Fut>(
                transport: &T,
                gid: &str,
                options: $crate::TransOptions,
                f: F,
            ) -> $crate::Result<R>
            where
                F: FnOnce(Self) -> Fut,
                Fut: ::std::future::Future<Output = $crate::Result<R>>,
            {
                <Self as $crate::global::ModeHandle<T>>::run(transport, gid, options, f).await
            }

            /// The global id.
            pub fn gid(&self) -> &str {
                self.0.gid()
            }
        }

        impl<T: $crate::Transport<Encoding = $encoding>> $crate::global::ModeHandle<T> for $face<T> {
            const MODE: $crate::TransType = $crate::TransType::$face;
            fn wrap(tx: ::std::sync::Arc<$crate::GlobalTx<T>>) -> Self {
                $face(tx)
            }
        }
    };
}

#[cfg(feature = "http")]
impl DtmClient {
    crate::__global_faces!(
        tcc: Tcc<Self>,
        xa: Xa<Self>,
        "Runs a TCC global transaction: `prepare`, then `f` (which calls
[`Tcc::call_branch`] for each branch), then `submit` if `f` succeeded. If `f` returns
an error or panics, the transaction is aborted with the error text as
`rollback_reason` (DTM then cancels every registered branch), and the error is
returned or the panic resumed.",
        "Runs an XA global transaction: `prepare`, then `f` (which calls
[`Xa::call_branch`] for each branch; each branch prepares its local XA transaction
and registers itself), then `submit` (DTM commits every branch) or, on error or panic,
`abort` (DTM rolls every branch back)."
    );
}

#[cfg(feature = "http")]
impl crate::JsonRpcClient {
    crate::__global_faces!(
        tcc: Tcc<Self>,
        xa: Xa<Self>,
        "Runs a TCC global transaction over DTM's JSON-RPC API (see
    [`DtmClient::tcc_global_transaction`]).",
        "Runs an XA global transaction over DTM's JSON-RPC API (see
    [`DtmClient::xa_global_transaction`])."
    );
}

/// The handle a TCC or XA closure receives over transport `T`: [`Tcc`] and [`Xa`] here,
/// dtmgrpc's `Tcc` and `Xa` for protobuf, each around the running transaction.
pub trait ModeHandle<T: Transport>: Sized {
    /// Its mode: [`TransType::Tcc`] or [`TransType::Xa`].
    const MODE: TransType;

    /// The handle of the running transaction `tx`.
    fn wrap(tx: Arc<GlobalTx<T>>) -> Self;

    /// Runs a global transaction of this mode over `transport`, `f` getting this handle
    /// ([`GlobalTx::run`]).
    fn run<R, F, Fut>(
        transport: &T,
        gid: &str,
        options: TransOptions,
        f: F,
    ) -> impl Future<Output = Result<R>>
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        GlobalTx::run(transport, gid, Self::MODE, options, Self::wrap, f)
    }
}

/// The TCC and XA handles of a client's transactions: this crate's [`Tcc`] and [`Xa`] for
/// [`DtmClient`] and [`JsonRpcClient`](crate::JsonRpcClient), dtmgrpc's for its client. A
/// [`Cluster`](crate::cluster::Cluster) of such members has the faces they have
/// (`tcc_global_transaction`, `xa_global_transaction`), with the same handles.
pub trait ModeHandles: Transport {
    /// The TCC handle over transport `U`.
    type Tcc<U: Transport<Encoding = Self::Encoding>>: ModeHandle<U>;
    /// The XA handle over transport `U`.
    type Xa<U: Transport<Encoding = Self::Encoding>>: ModeHandle<U>;
}

#[cfg(feature = "http")]
impl ModeHandles for DtmClient {
    type Tcc<U: Transport<Encoding = Json>> = Tcc<U>;
    type Xa<U: Transport<Encoding = Json>> = Xa<U>;
}

#[cfg(feature = "http")]
impl ModeHandles for crate::JsonRpcClient {
    type Tcc<U: Transport<Encoding = Json>> = Tcc<U>;
    type Xa<U: Transport<Encoding = Json>> = Xa<U>;
}

/// A member paired with its HTTP API has the member's handles.
#[cfg(feature = "http")]
impl<T: ModeHandles> ModeHandles for crate::cluster::WithQuery<T> {
    type Tcc<U: Transport<Encoding = T::Encoding>> = T::Tcc<U>;
    type Xa<U: Transport<Encoding = T::Encoding>> = T::Xa<U>;
}

#[cfg(feature = "http")]
impl<T: crate::cluster::Query + ModeHandles> crate::cluster::Cluster<T> {
    crate::__global_faces!(
        tcc: T::Tcc<Self>,
        xa: T::Xa<Self>,
        "Runs a TCC global transaction on the cluster, with the members' TCC handle (see
    `DtmClient::tcc_global_transaction`): the prepare, the branches' registrations and the
    submit or abort go to the server the cluster is on.",
        "Runs an XA global transaction on the cluster, with the members' XA handle (see
    `DtmClient::xa_global_transaction`)."
    );
}

crate::__mode_face!(Tcc, Json, "a TCC", "DtmClient::tcc_global_transaction");
crate::__mode_face!(Xa, Json, "an XA", "DtmClient::xa_global_transaction");

impl<T: Transport<Encoding = Json>> Tcc<T> {
    /// Rebuilds the TCC inside a try handler so that it can open sub-branches (`0201`,
    /// `0202`...). `info` is the incoming request's transaction info; it must carry `dtm`
    /// (the SDK always sends it when calling a try), and that server must be trusted by
    /// `client` ([`DtmClient::with_server`]; by default only `client`'s own server is), or
    /// the result is [`Error::InvalidInput`].
    pub fn nested(client: &T, info: &TransInfo) -> Result<Self> {
        GlobalTx::nested_tcc(client, info).map(Tcc)
    }

    /// The options (branch headers go on every try call).
    pub fn options(&self) -> &TransOptions {
        self.0.options()
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
        let data = Encode::<Json>::encode(body)?;
        self.0
            .tcc_branch(data, try_url, confirm_url, cancel_url)
            .await
    }
}

impl<T: Transport<Encoding = Json>> Xa<T> {
    /// Calls an XA branch: POST `url` with `op=action`, a new branch id, `phase2_url=url`
    /// and `dtm`, so the branch can register itself; DTM later calls the same URL with
    /// `op=commit` or `op=rollback`.
    pub async fn call_branch(&self, body: &impl Serialize, url: &str) -> Result<BranchResponse> {
        let data = Encode::<Json>::encode(body)?;
        self.0.xa_branch(data, url).await
    }
}
