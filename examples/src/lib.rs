//! Runnable DTM services and scenarios.
//!
//! - [`bank`]: a bank on MariaDB and PostgreSQL guarded by the barrier, with XA branches.
//! - [`busi`]: the bank business service (saga, TCC, nested TCC, XA stub, msg back-check
//!   handlers) on axum, steerable per request.
//! - [`demo`]: starts DTM (through `dtm_testkit`) and the in-memory business service;
//!   serves the examples' HTTP and gRPC services and workflow registries on local ports.
//! - [`founding`]: the scenarios of the project's founding documents, each checking its
//!   own outcome against a real DTM server and real databases.
//! - [`kv_bank`]: balances in Redis and MongoDB moved by guarded HTTP branches.
//! - [`scenarios`]: every scenario by name (the `dtm-examples` binary runs them).

pub mod bank;
pub mod busi;
pub mod demo;
pub mod founding;
pub mod grpc_busi;
pub mod kv_bank;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod scenarios;
