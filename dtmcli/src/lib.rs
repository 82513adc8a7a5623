//! # dtmcli: distributed transactions with DTM over HTTP
//!
//! A client of the [DTM](https://github.com/dtm-labs/dtm) transaction manager, wire-compatible
//! with the Go SDK: a Rust service and a Go service can take part in the same global
//! transaction.
//!
//! - [`DtmClient`]: one per DTM server; new gids, queries, and the transaction builders.
//! - [`Saga`]: actions and compensations, sequential or concurrent with branch orders.
//! - [`Msg`]: 2-phase messages, topics, delay, and the outbox helper [`Msg::do_and_submit`].
//! - [`Tcc`]: try/confirm/cancel with [`DtmClient::tcc_global_transaction`], nested TCC.
//! - [`Xa`]: the global side of XA ([`DtmClient::xa_global_transaction`]).
//! - [`JsonRpcClient`]: the same modes over DTM's JSON-RPC API ([`jsonrpc`]).
//! - [`branch`]: the result convention for branch handlers, and [`TransInfo`] from a query.
//!
//! ## Architecture
//! Every transaction mode is written once, generic over a [`Transport`] (how DTM is reached)
//! and its payload [`transport::Encoding`] (JSON, protobuf):
//!
//! ```text
//!   Saga<T>   Msg<T>   GlobalTx<T> (TCC, XA)   workflow   XA / TCC branch side
//!        \       |         /                      |          /
//!         +------ Transport: call_dtm, register, call_branch_bytes, ... ------+
//!         |                         |                          |
//!   DtmClient (HTTP, JSON)   JsonRpcClient (JSON-RPC)   dtmgrpc::DtmGrpcClient (gRPC, protobuf)
//! ```
//!
//! The modes own the protocol-independent parts: the request and its options, gid and
//! branch-id rules, the TCC/XA lifecycle (prepare, run, submit or abort), msg do-and-submit
//! with its back-check, concurrent-saga orders, what a branch registers. A transport owns the
//! wire: encoding the request, mapping DTM's answers to [`Error`]'s outcomes, bounding every
//! call ([`Limits`]). The generic types live in [`saga`], [`msg`] and [`global`];
//! `dtmcli::Saga` is `saga::Saga<DtmClient>` and `dtmgrpc::Saga` is `Saga<DtmGrpcClient>`; TCC and XA have a small face per encoding ([`Tcc`], [`Xa`] for
//! JSON; dtmgrpc's take and return protobuf messages). Reads (query, admin) stay on each
//! client, where their answers are typed.
//!
//! Errors keep DTM's outcomes apart: [`Error::Failure`], [`Error::Ongoing`],
//! [`Error::Duplicated`], and retryable kinds (transport, status, decode...). What a mode
//! reports about a transaction is what DTM stored for its gid, not merely what DTM
//! answered ([`outcome`]): `Ok`, [`Error::Failure`] (stored `failed`), or
//! [`Error::NotFinal`] while DTM still runs it; [`DtmClient::wait_final`] waits for the
//! end.
//!
//! ## Bounds
//! Every HTTP call the client makes, to DTM or to a branch, has a timeout
//! ([`DEFAULT_TIMEOUT`], or the transaction's `request_timeout`; at most [`MAX_TIMEOUT`]) and
//! reads at most [`DEFAULT_MAX_ANSWER_BYTES`] of answer ([`Error::TooLarge`] beyond); both
//! are set on [`DtmClientBuilder`]. Errors, spans and `Debug` output show URLs without their
//! credentials. A branch request naming a DTM server (`dtm=`) is only followed
//! to a trusted one ([`trust`]).
//!
//! ## Feature flags
//! - `http` (default): the HTTP transport ([`DtmClient`]) and JSON-RPC ([`JsonRpcClient`]), on
//!   reqwest. Without it dtmcli is the protocol-independent core ([`saga`], [`msg`],
//!   [`global`], [`transport`], options, errors, branch-side types) that dtmgrpc builds on
//!   without reqwest; [`Saga`], [`Msg`], [`Tcc`] and [`Xa`] then name the generic types.
//! - `protobuf`: protobuf payloads ([`transport::Encode`] for prost messages), for dtmgrpc.
//! - `axum`: an axum extractor for [`TransInfo`] and `IntoResponse` for [`Error`].
//! - `tls`: TLS (rustls) for `https://` DTM servers and branches.
//!
//! ## Example
//! ```no_run
//! use dtmcli::{DtmClient, TransOptions};
//! use std::time::Duration;
//!
//! # async fn run() -> dtmcli::Result<()> {
//! let dtm = DtmClient::new("http://localhost:36789/api/dtmsvr")?;
//! let gid = dtm.new_gid().await?;
//! let body = serde_json::json!({"amount": 30});
//! dtm.saga(&gid)
//!     .add("http://localhost:8081/api/busi/TransOut", "http://localhost:8081/api/busi/TransOutCompensate", &body)
//!     .add("http://localhost:8081/api/busi/TransIn", "http://localhost:8081/api/busi/TransInCompensate", &body)
//!     .with_options(TransOptions::default().wait_result(true).retry_interval(Duration::from_secs(5)))
//!     .submit()
//!     .await?;
//! let status = dtm.query(&gid).await?.transaction.map(|t| t.status);
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod branch;
mod branch_id;
#[cfg(feature = "http")]
pub mod cluster;
#[cfg(feature = "http")]
pub mod discovery;
mod error;
#[cfg(test)]
mod fake;
pub mod global;
// The sibling crates' plumbing (dtmgrpc, dtm-workflow, dtm-barrier), public for them and
// out of the documented surface: `http_stack`, `redact`, `resolve`, and the hidden items
// of `limits` and `trace`.
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
#[doc(hidden)]
pub use http::stack as http_stack;
pub mod identity;
#[cfg(feature = "http")]
pub use http::jsonrpc;
pub mod limits;
pub mod metrics;
pub mod msg;
mod options;
pub mod outcome;
#[doc(hidden)]
pub mod redact;
#[doc(hidden)]
pub mod resolve;
pub mod saga;
pub mod trace;
pub mod transport;
pub mod trust;
mod types;
pub mod wire;

pub use branch_id::BranchIdGen;
#[doc(hidden)]
pub use error::error_chain;
pub use error::{Error, ErrorKind, Result};
pub use global::GlobalTx;
#[cfg(feature = "http")]
pub use http::client::{CronReset, DtmClient, DtmClientBuilder, DEFAULT_SERVER};
#[cfg(feature = "http")]
pub use jsonrpc::JsonRpcClient;
/// TCC over a JSON transport, HTTP ([`DtmClient`]) unless another is named.
///
/// [`DtmClient::tcc_global_transaction`] prepares the transaction, hands a `Tcc` to the
/// closure, and submits when it returns `Ok` (DTM then calls every confirm) or aborts when
/// it returns an error (DTM calls the cancel of every registered branch). Each
/// [`call_branch`](global::Tcc::call_branch) registers a branch's confirm and cancel, then
/// calls its try.
///
/// ```no_run
/// use dtmcli::{DtmClient, TransInfo, TransOptions};
///
/// # async fn run() -> dtmcli::Result<()> {
/// let dtm = DtmClient::new("http://localhost:36789/api/dtmsvr")?;
/// let gid = dtm.new_gid().await?;
/// let body = serde_json::json!({"amount": 30});
/// let result = dtm
///     .tcc_global_transaction(&gid, TransOptions::default(), |tcc: dtmcli::Tcc| async move {
///         tcc.call_branch(&body, "http://bank-a/api/TransOutTry",
///             "http://bank-a/api/TransOutConfirm", "http://bank-a/api/TransOutCancel").await?;
///         tcc.call_branch(&body, "http://bank-b/api/TransInTry",
///             "http://bank-b/api/TransInConfirm", "http://bank-b/api/TransInCancel").await?;
///         Ok(())
///     })
///     .await;
/// match result {
///     Ok(()) => println!("confirmed"),
///     // A try answered FAILURE (409): every registered branch is cancelled.
///     Err(dtmcli::Error::Failure(reason)) => println!("cancelled: {reason}"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
///
/// // Inside a try handler: sub-branches of the same global TCC (`0101`, `0102`...).
/// async fn trans_in_try(dtm: &DtmClient, info: &TransInfo) -> dtmcli::Result<()> {
///     let tcc = dtmcli::Tcc::nested(dtm, info)?;
///     tcc.call_branch(&serde_json::json!({"amount": 30}), "http://bank-c/api/FeeTry",
///         "http://bank-c/api/FeeConfirm", "http://bank-c/api/FeeCancel").await?;
///     Ok(())
/// }
/// ```
#[cfg(feature = "http")]
pub type Tcc<T = DtmClient> = global::Tcc<T>;
/// The global side of XA over a JSON transport, HTTP ([`DtmClient`]) unless another is named.
///
/// [`DtmClient::xa_global_transaction`] prepares the transaction and hands an `Xa` to the
/// closure; each [`call_branch`](global::Xa::call_branch) calls a branch with `op=action`,
/// and the branch runs its local XA transaction, registers itself and prepares (the branch
/// side is `dtm_barrier::xa::XaLocal`). `Ok` from the closure submits (DTM commits every
/// branch), an error aborts (DTM rolls every branch back).
///
/// ```no_run
/// use dtmcli::{DtmClient, TransOptions};
///
/// # async fn run() -> dtmcli::Result<()> {
/// let dtm = DtmClient::new("http://localhost:36789/api/dtmsvr")?;
/// let gid = dtm.new_gid().await?;
/// let body = serde_json::json!({"amount": 30});
/// dtm.xa_global_transaction(&gid, TransOptions::default(), |xa: dtmcli::Xa| async move {
///     xa.call_branch(&body, "http://bank-a/api/TransOutXa").await?;
///     xa.call_branch(&body, "http://bank-b/api/TransInXa").await?;
///     Ok(())
/// })
/// .await?; // Err(Error::Failure(..)) when a branch refused: every branch rolled back
/// # Ok(()) }
/// ```
#[cfg(feature = "http")]
pub type Xa<T = DtmClient> = global::Xa<T>;
#[cfg(not(feature = "http"))]
pub use global::{Tcc, Xa};
#[cfg(feature = "http")]
pub use limits::read_answer;
pub use limits::{
    Limits, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ANSWER_BYTES, DEFAULT_TIMEOUT, MAX_TIMEOUT,
};
/// A 2-phase message, over HTTP ([`DtmClient`]) unless another transport is named.
///
/// Once submitted, DTM calls every branch until it succeeds. With
/// [`do_and_submit`](msg::Msg::do_and_submit) (the outbox pattern) the message is prepared
/// first and submitted only if the local transaction committed; if this process dies in
/// between, DTM asks the back-check URL. Its local business usually writes through
/// `dtm_barrier::do_and_submit`, which keeps the barrier row the back-check reads in the same
/// database transaction.
///
/// ```no_run
/// use dtmcli::DtmClient;
///
/// # async fn run() -> dtmcli::Result<()> {
/// let dtm = DtmClient::new("http://localhost:36789/api/dtmsvr")?;
/// let body = serde_json::json!({"amount": 30});
///
/// // Fire and forget: DTM delivers TransIn until it answers 200.
/// let msg: dtmcli::Msg = dtm.msg(dtm.new_gid().await?).add("http://bank-b/api/TransIn", &body);
/// msg.submit().await?;
///
/// // Outbox: prepare, debit locally, submit.
/// dtm.msg(dtm.new_gid().await?)
///     .add("http://bank-b/api/TransIn", &body)
///     .do_and_submit("http://bank-a/api/QueryPrepared", |info| async move {
///         // The local transaction, named by `info` (gid, branch 00, op msg).
///         let _ = info;
///         Ok(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[cfg(feature = "http")]
pub type Msg<T = DtmClient> = msg::Msg<T>;
#[cfg(not(feature = "http"))]
pub use msg::Msg;
pub use options::{TransOptions, MAX_WIRE_DURATION};
/// A saga, over HTTP ([`DtmClient`]) unless another transport is named.
///
/// Steps run in order (or concurrently, see [`concurrent`](saga::Saga::concurrent)); at the
/// first action that answers FAILURE (409), DTM runs the compensation of every step that
/// ran, in reverse order. Any other error is retried.
///
/// ```no_run
/// use dtmcli::{DtmClient, TransOptions};
///
/// # async fn run() -> dtmcli::Result<()> {
/// let dtm = DtmClient::new("http://localhost:36789/api/dtmsvr")?;
/// let body = serde_json::json!({"amount": 30});
/// let saga: dtmcli::Saga = dtm
///     .saga(dtm.new_gid().await?)
///     .add("http://bank-a/api/TransOut", "http://bank-a/api/TransOutRevert", &body)
///     .add("http://bank-b/api/TransIn", "http://bank-b/api/TransInRevert", &body)
///     // Wait for the outcome instead of returning once DTM stored the saga.
///     .with_options(TransOptions::default().wait_result(true));
/// match saga.submit().await {
///     Ok(()) => println!("transferred"),
///     Err(dtmcli::Error::Failure(reason)) => println!("rolled back: {reason}"),
///     // DTM retries a branch (or rolls back) and will finish it: wait for that, bounded.
///     Err(dtmcli::Error::NotFinal { gid, .. }) => {
///         dtm.wait_final(&gid, std::time::Duration::from_secs(60)).await?
///     }
///     Err(e) => return Err(e), // nothing of it reached DTM: send it again
/// }
///
/// // Concurrent: both debits at once, the credit after both.
/// dtm.saga(dtm.new_gid().await?)
///     .add("http://bank-a/api/TransOut", "http://bank-a/api/TransOutRevert", &body)
///     .add("http://bank-c/api/TransOut", "http://bank-c/api/TransOutRevert", &body)
///     .add("http://bank-b/api/TransIn", "http://bank-b/api/TransInRevert", &body)
///     .concurrent()
///     .add_branch_order(2, &[0, 1])
///     .submit()
///     .await?;
/// # Ok(()) }
/// ```
#[cfg(feature = "http")]
pub type Saga<T = DtmClient> = saga::Saga<T>;
#[cfg(not(feature = "http"))]
pub use saga::Saga;
pub use transport::{BranchResponse, Encode, Transport};
pub use trust::TrustedServers;
pub use types::{Op, TransInfo, TransType};
pub use wire::{
    QueryResult, TransBranch, TransGlobal, TransParts, TransRequest, TransStatus, WorkflowProgress,
};

// Dependencies whose types are in this crate's API, so that users can name the versions it
// was built with instead of guessing them (see "Cargo.toml for your use case" in the README).
/// The OpenTelemetry API the trace context is read with: your tracer provider must be of
/// this version for the SDK to see your spans' context.
#[cfg(feature = "opentelemetry")]
pub use opentelemetry;
/// The OpenTelemetry SDK of the W3C propagator (your tracer provider's crate).
#[cfg(feature = "opentelemetry")]
pub use opentelemetry_sdk;
/// The reqwest dtmcli is built on, so a `reqwest::Client` you pass in is of the same version.
#[cfg(feature = "http")]
pub use reqwest;
/// The reqwest-middleware of [`DtmClientBuilder::middleware`], so the stack you pass in is
/// of the same version.
#[cfg(feature = "middleware")]
pub use reqwest_middleware;
/// The tracing-opentelemetry bridge whose layer must be installed in your subscriber.
#[cfg(feature = "opentelemetry")]
pub use tracing_opentelemetry;
