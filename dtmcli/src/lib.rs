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
//! [`Error::Duplicated`], and retryable kinds (transport, status, decode...).
//!
//! ## Bounds
//! Every HTTP call the client makes, to DTM or to a branch, has a timeout
//! ([`DEFAULT_TIMEOUT`], or the transaction's `request_timeout`; at most [`MAX_TIMEOUT`]) and
//! reads at most [`DEFAULT_MAX_ANSWER_BYTES`] of answer ([`Error::TooLarge`] beyond); both
//! are set on [`DtmClientBuilder`]. Errors, spans and `Debug` output show URLs without their
//! credentials ([`redact`]). A branch request naming a DTM server (`dtm=`) is only followed
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
mod client;
mod error;
pub mod global;
#[cfg(feature = "http")]
pub mod http_stack;
pub mod identity;
#[cfg(feature = "http")]
pub mod jsonrpc;
pub mod limits;
pub mod msg;
mod options;
pub mod redact;
pub mod saga;
pub mod trace;
pub mod transport;
pub mod trust;
mod types;
pub mod wire;

pub use branch_id::BranchIdGen;
#[cfg(feature = "http")]
pub use client::{CronReset, DtmClient, DtmClientBuilder, DEFAULT_SERVER};
pub use error::{Error, ErrorKind, Result};
pub use global::GlobalTx;
#[cfg(feature = "http")]
pub use jsonrpc::JsonRpcClient;
/// TCC over a JSON transport, HTTP ([`DtmClient`]) unless another is named.
#[cfg(feature = "http")]
pub type Tcc<T = DtmClient> = global::Tcc<T>;
/// The global side of XA over a JSON transport, HTTP ([`DtmClient`]) unless another is named.
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
#[cfg(feature = "http")]
pub type Msg<T = DtmClient> = msg::Msg<T>;
#[cfg(not(feature = "http"))]
pub use msg::Msg;
pub use options::{TransOptions, MAX_WIRE_DURATION};
/// A saga, over HTTP ([`DtmClient`]) unless another transport is named.
#[cfg(feature = "http")]
pub type Saga<T = DtmClient> = saga::Saga<T>;
#[cfg(not(feature = "http"))]
pub use saga::Saga;
pub use transport::{BranchResponse, Encode, Json, Transport};
pub use trust::TrustedServers;
pub use types::{Op, TransInfo, TransType};
pub use wire::{
    QueryResult, TransBranch, TransGlobal, TransRequest, TransStatus, WorkflowProgress,
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
