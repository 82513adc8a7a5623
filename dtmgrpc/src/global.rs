//! TCC and XA global transactions over gRPC: the protobuf faces of [`dtmcli::GlobalTx`],
//! which holds the lifecycle (prepare, the user's code, submit or abort) and the branch side
//! of both modes for every transport.

use std::sync::Arc;

use dtmcli::transport::{Encode, Protobuf, Transport};
use dtmcli::{GlobalTx, Result, TransInfo, TransOptions};
use prost::Message;
use tonic::metadata::MetadataMap;

use crate::client::{decode_answer, DtmGrpcClient};
use crate::metadata::trans_info_from_metadata;

/// A TCC global transaction over gRPC, handed to the closure of
/// [`DtmGrpcClient::tcc_global_transaction`] (or of [`Tcc::run`] on another protobuf
/// transport, such as a `dtmcli::cluster::Cluster` of gRPC servers), or rebuilt inside a
/// try handler with [`Tcc::nested`] / [`Tcc::from_metadata`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tcc<T: Transport = DtmGrpcClient>(Arc<GlobalTx<T>>);

/// The global side of an XA transaction over gRPC, handed to the closure of
/// [`DtmGrpcClient::xa_global_transaction`] (or of [`Xa::run`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Xa<T: Transport = DtmGrpcClient>(Arc<GlobalTx<T>>);

impl DtmGrpcClient {
    dtmcli::__global_faces!(
        tcc: Tcc<Self>,
        xa: Xa<Self>,
        "Runs a TCC global transaction: `Prepare`, then `f` (which calls
[`Tcc::call_branch`] for each branch), then `Submit` if `f` succeeded. A `gid` that
is not a valid gid ([`dtmcli::identity::check_gid`]) or not printable ASCII is refused
with [`Error::InvalidInput`](dtmcli::Error::InvalidInput) before anything is sent. If `f` returns
an error or panics, the transaction is aborted with the error text as
`rollback_reason` (DTM then cancels every registered branch), and the error is
returned or the panic resumed.",
        "Runs an XA global transaction: `Prepare`, then `f` (which calls [`Xa::call_branch`]
for each branch; each branch prepares its local XA transaction and registers
itself), then `Submit` (DTM commits every branch) or, on error or panic, `Abort` (DTM
rolls every registered branch back)."
    );
}

impl dtmcli::global::ModeHandles for DtmGrpcClient {
    type Tcc<U: Transport<Encoding = Protobuf>> = Tcc<U>;
    type Xa<U: Transport<Encoding = Protobuf>> = Xa<U>;
}

dtmcli::__mode_face!(
    Tcc,
    Protobuf,
    "a TCC",
    "DtmGrpcClient::tcc_global_transaction"
);
dtmcli::__mode_face!(
    Xa,
    Protobuf,
    "an XA",
    "DtmGrpcClient::xa_global_transaction"
);

impl<T: Transport<Encoding = Protobuf>> Tcc<T> {
    /// Rebuilds the TCC inside a try handler so that it can open sub-branches (`0201`,
    /// `0202`...). `info` is the incoming request's transaction info; it must carry `dtm`
    /// (`dtm-dtm`, which the SDK always sends when calling a try). `client` lends its
    /// settings and channels; the DTM server is the one named in `info`, which `client` must
    /// trust ([`DtmGrpcClient::with_server`]): a request naming another server is refused
    /// with [`Error::InvalidInput`](dtmcli::Error::InvalidInput) before anything is sent.
    pub fn nested(client: &T, info: &TransInfo) -> Result<Self> {
        GlobalTx::nested_tcc(client, info).map(Tcc)
    }

    /// [`Tcc::nested`] from an incoming request's metadata (Go: `TccFromGrpc`).
    pub fn from_metadata(client: &T, md: &MetadataMap) -> Result<Self> {
        Self::nested(client, &trans_info_from_metadata(md)?)
    }

    /// The options (branch headers go on every try call).
    pub fn options(&self) -> &TransOptions {
        self.0.options()
    }

    /// Registers a branch (its confirm and cancel URLs, and `req`'s bytes, which they will
    /// receive) and then calls its try URL with `req` and the `dtm-*` metadata. The try's
    /// failure is returned as [`Error::Failure`](dtmcli::Error::Failure); return it from the closure to roll the
    /// transaction back. Returns the try's answer. The try gets the transaction's
    /// `request_timeout`, or the client's timeout.
    pub async fn call_branch<Resp: Message + Default>(
        &self,
        req: &impl Message,
        try_url: &str,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<Resp> {
        let body = Encode::<Protobuf>::encode(req)?;
        let answer = self
            .0
            .tcc_branch(body, try_url, confirm_url, cancel_url)
            .await?;
        decode_answer(try_url, answer)
    }
}

impl<T: Transport<Encoding = Protobuf>> Xa<T> {
    /// Calls an XA branch: `url` with `op action`, a new branch id, `dtm-phase2_url = url`
    /// and `dtm-dtm`, so the branch can register itself; DTM later calls the same URL with
    /// `op commit` or `op rollback` (and an empty message). Returns the branch's answer. The
    /// call gets the transaction's `request_timeout`, or the client's timeout.
    pub async fn call_branch<Resp: Message + Default>(
        &self,
        req: &impl Message,
        url: &str,
    ) -> Result<Resp> {
        let body = Encode::<Protobuf>::encode(req)?;
        let answer = self.0.xa_branch(body, url).await?;
        decode_answer(url, answer)
    }
}
