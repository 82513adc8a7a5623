//! How the SDK reaches DTM and the branches it calls itself, whatever the protocol.
//!
//! Every transaction mode ([`crate::Saga`], [`crate::Msg`], TCC and XA through
//! [`crate::GlobalTx`], workflow, the XA branch side in the barrier crate) is written once,
//! against this trait. A protocol is one implementation of it: [`crate::DtmClient`] (HTTP),
//! `dtmgrpc::DtmGrpcClient` (gRPC). It carries the calls to DTM that change a transaction, the
//! branch registrations, and the branch calls the SDK makes itself (TCC try, XA action, msg
//! back-check); reads (query, admin) stay on each client, where their answers are typed.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::{truncate_body, Error, Result};
use crate::limits::Limits;
use crate::types::{TransInfo, TransType};
use crate::wire::{QueryResult, TransRequest, WorkflowProgress};

/// A successful answer of a branch the SDK called itself.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BranchResponse {
    /// HTTP status (always 200 for a success).
    pub status: u16,
    /// Raw body.
    pub body: Bytes,
}

impl BranchResponse {
    /// A successful answer with this status and body (for transports other than HTTP).
    pub fn new(status: u16, body: Bytes) -> Self {
        BranchResponse { status, body }
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            url: String::new(),
            reason: e.to_string(),
            body: truncate_body(&String::from_utf8_lossy(&self.body)),
        })
    }
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A global-transaction call to DTM that carries a [`TransRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtmOp {
    /// Creates the transaction in status `prepared` (TCC, XA, msg phase 1).
    Prepare,
    /// Creates or submits the transaction (saga, msg, TCC/XA phase 2, workflow end).
    Submit,
    /// Rolls back a prepared TCC/XA transaction or fails a prepared msg.
    Abort,
}

impl DtmOp {
    /// The name in DTM's API (`prepare`, `submit`, `abort`).
    pub fn as_str(self) -> &'static str {
        match self {
            DtmOp::Prepare => "prepare",
            DtmOp::Submit => "submit",
            DtmOp::Abort => "abort",
        }
    }
}

/// A branch registering itself with DTM (`registerBranch`), in protocol-neutral form; each
/// transport lays it out the way DTM reads it (HTTP: one flat string map; gRPC: `Data` map
/// plus `BusiPayload`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BranchRegistration {
    /// Global id.
    pub gid: String,
    /// Branch id.
    pub branch_id: String,
    /// What is registered.
    pub kind: RegistrationKind,
}

/// What a [`BranchRegistration`] registers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationKind {
    /// A TCC branch: its confirm and cancel URLs and the body they will receive.
    Tcc {
        /// Confirm URL.
        confirm: String,
        /// Cancel URL.
        cancel: String,
        /// The try's body, which confirm and cancel receive too.
        data: Bytes,
    },
    /// An XA branch: the URL DTM calls for phase 2.
    Xa {
        /// Phase-2 URL.
        url: String,
    },
    /// A workflow step's result, recorded synchronously.
    Workflow {
        /// The step's op (`action`, `compensate`, `commit`, `rollback`...).
        op: String,
        /// `succeed` or `failed`.
        status: String,
        /// The recorded result.
        data: Bytes,
    },
}

impl BranchRegistration {
    /// A registration of branch `branch_id` of transaction `gid`.
    pub fn new(
        gid: impl Into<String>,
        branch_id: impl Into<String>,
        kind: RegistrationKind,
    ) -> Self {
        BranchRegistration {
            gid: gid.into(),
            branch_id: branch_id.into(),
            kind,
        }
    }

    /// The transaction mode the registration belongs to.
    pub fn trans_type(&self) -> TransType {
        match self.kind {
            RegistrationKind::Tcc { .. } => TransType::Tcc,
            RegistrationKind::Xa { .. } => TransType::Xa,
            RegistrationKind::Workflow { .. } => TransType::Workflow,
        }
    }
}

/// A protocol for talking to DTM: HTTP ([`crate::DtmClient`]), gRPC (`dtmgrpc`), or another.
///
/// Implementations are cheap to clone (they share their connections), bound every call
/// ([`Limits`]) and map DTM's answers to [`crate::Error`]'s outcomes
/// (`Failure`/`Ongoing`/retryable).
pub trait Transport: Clone + Debug + Send + Sync + 'static {
    /// How branch bodies are encoded ([`Json`], or protobuf for gRPC).
    type Encoding: Encoding;

    /// The protocol name DTM stores and branches see (`http`, `grpc`, `json-rpc`).
    fn protocol(&self) -> &'static str;

    /// This DTM server's address as branches receive it (`dtm` / `dtm-dtm`), so that nested
    /// TCC and XA branches can reach it.
    fn server(&self) -> &str;

    /// The client's bounds: call timeouts, answer cap.
    fn limits(&self) -> &Limits;

    /// A transport to the DTM server `server` names (from a branch request), sharing this
    /// one's settings; refused unless that server is trusted ([`crate::trust`]).
    fn with_server(&self, server: &str) -> Result<Self>;

    /// Checks what this protocol cannot carry before anything is sent (the gid and branch
    /// ids are checked by the modes themselves): branch URLs, headers as metadata...
    fn check_request(&self, req: &TransRequest) -> Result<()>;

    /// Checks a branch URL the SDK will call or register.
    fn check_branch_url(&self, url: &str) -> Result<()>;

    /// `prepare`, `submit` or `abort`, accepting only DTM's success answer. The request is
    /// taken by value so that a transport can encode it and drop it before the call waits:
    /// only the encoded form stays in memory while the transaction is in flight.
    fn call_dtm(&self, op: DtmOp, req: TransRequest) -> impl Future<Output = Result<()>> + Send;

    /// `registerBranch`.
    fn register(&self, reg: &BranchRegistration) -> impl Future<Output = Result<()>> + Send;

    /// `prepareWorkflow`: the workflow transaction and its recorded branch results.
    fn prepare_workflow_progress(
        &self,
        req: &TransRequest,
    ) -> impl Future<Output = Result<WorkflowProgress>> + Send;

    /// Calls a branch the way DTM would (TCC try, XA action, msg back-check) within
    /// `timeout`, with `info` and `headers`; `body` is the encoded request (`None`: none).
    fn call_branch_bytes(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> impl Future<Output = Result<BranchResponse>> + Send;

    /// DTM's stored state of `gid` (its `query`), which decides what an answer that is not
    /// a plain success means ([`crate::outcome`]) and what a workflow resume may run. DTM
    /// answers `query` over HTTP only: an HTTP client reads it itself, a gRPC client through
    /// the server's HTTP API when it was given one. The default, for a transport that
    /// cannot read it, is [`Error::InvalidInput`] naming what is missing.
    fn query(&self, gid: &str) -> impl Future<Output = Result<QueryResult>> + Send {
        let protocol = self.protocol();
        let _ = gid;
        async move {
            Err(Error::invalid(format!(
                "this {protocol} transport cannot read DTM's stored state (DTM answers query \
                 over HTTP only): give it the server's HTTP API"
            )))
        }
    }
}

/// A payload encoding: [`Json`], or `Protobuf` (feature `protobuf`, for gRPC).
pub trait Encoding: Send + Sync + 'static {}

/// Payloads as JSON text (HTTP, JSON-RPC).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;
impl Encoding for Json {}

/// Payloads as protobuf messages (gRPC).
#[cfg(feature = "protobuf")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Protobuf;
#[cfg(feature = "protobuf")]
impl Encoding for Protobuf {}

/// A value a transaction body can be made of, in encoding `E`: anything `Serialize` for
/// [`Json`], any `prost::Message` for `Protobuf`.
pub trait Encode<E: Encoding> {
    /// The encoded body.
    fn encode(&self) -> Result<Bytes>;
}

impl<S: serde::Serialize + ?Sized> Encode<Json> for S {
    fn encode(&self) -> Result<Bytes> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| crate::Error::invalid(format!("payload is not JSON: {e}")))
    }
}

#[cfg(feature = "protobuf")]
impl<M: prost::Message> Encode<Protobuf> for M {
    fn encode(&self) -> Result<Bytes> {
        Ok(Bytes::from(self.encode_to_vec()))
    }
}
