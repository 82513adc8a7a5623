//! # dtm-testkit: a real DTM server in your integration tests
//!
//! Starts the real [DTM](https://github.com/dtm-labs/dtm) server (the Go binary) on free
//! ports of 127.0.0.1, on the store you choose, and stops it when the test is done, even if
//! the test process dies. Then it waits for a transaction's final status through DTM's
//! query API and reads its branches, so a test asserts what DTM did rather than what the
//! client hoped for.
//!
//! - [`DtmServer`]: [`start`](DtmServer::start) / [`stop`](DtmServer::stop), the
//!   [HTTP](DtmServer::http_url), [gRPC](DtmServer::grpc_addr) and
//!   [JSON-RPC](DtmServer::json_rpc_url) addresses, a [client](DtmServer::http_client),
//!   [`wait_final`](DtmServer::wait_final), [`branches`](DtmServer::branches), and
//!   [`kill`](DtmServer::kill) / [`restart`](DtmServer::restart) (same ports, same store)
//!   for crash tests.
//! - [`Store`]: boltdb (default, per server), Redis (a key prefix per value), MySQL/MariaDB
//!   or PostgreSQL; servers given the same value share it, as a DTM cluster does.
//!   [`Store::prepare`] creates DTM's SQL schema, idempotently.
//! - [`wait`]: the same waits for any [`dtmcli::DtmClient`].
//! - [`find_binary`] (`$DTM_BIN`, `PATH`, a workspace's `.tools/bin`, Go's bin directory,
//!   the kit's cache) and [`install`] (builds [`DTM_VERSION`] with `go install`).
//!
//! ```no_run
//! use std::time::Duration;
//! use dtm_testkit::{DtmServer, DtmServerConfig, Store};
//!
//! #[tokio::test]
//! async fn transfer_rolls_back() -> Result<(), Box<dyn std::error::Error>> {
//!     // Once per machine, if DTM is nowhere to be found: dtm_testkit::install()?;
//!     let dtm = DtmServer::start_async(DtmServerConfig::default()).await?;
//!     let client = dtm.http_client()?;
//!     let busi = "http://127.0.0.1:8081/api/busi"; // your service under test
//!
//!     let gid = client.new_gid().await?;
//!     client
//!         .saga(&gid)
//!         .add(&format!("{busi}/TransOut"), &format!("{busi}/TransOutRevert"), &30)
//!         .add(&format!("{busi}/TransIn"), &format!("{busi}/TransInRevert"), &30)
//!         .submit()
//!         .await?;
//!
//!     let q = dtm.wait_final(&gid, Duration::from_secs(30)).await?;
//!     assert_eq!(q.transaction.map(|t| t.status).as_deref(), Some("failed"));
//!     let rows: Vec<String> = dtm
//!         .branches(&gid)
//!         .await?
//!         .iter()
//!         .map(|b| format!("{}/{}={}", b.branch_id, b.op, b.status))
//!         .collect();
//!     assert!(rows.contains(&"01/compensate=succeed".to_string()), "{rows:?}");
//!
//!     // Two servers on one store see the same transactions.
//!     let store = Store::local_redis();
//!     let a = DtmServer::start(DtmServerConfig::default().with_store(store.clone()))?;
//!     let b = DtmServer::start(DtmServerConfig::default().with_store(store))?;
//!     # drop((a, b));
//!     dtm.stop()?;
//!     Ok(())
//! }
//! ```
//! `testkit/tests/example.rs` in the repository is a complete test to copy: a branch
//! service on axum, a saga through it, its branches asserted, and a cluster of two servers.
//!
//! ## The DTM binary
//! The kit runs a DTM binary, it does not contain one. [`find_binary`] says where it looks;
//! [`install`] builds [`DTM_VERSION`] with Go 1.22+ into a cache directory (minutes the
//! first time, then instant), or set `DTM_BIN`. The kit is written against DTM v1.19.0.
//!
//! ## Feature flags
//! - `mysql`: [`Store::prepare`] creates DTM's schema on MySQL/MariaDB;
//!   `schema::create_mysql` on your own connection (sqlx 0.8).
//! - `postgres`: the same on PostgreSQL, the database included (sqlx 0.8).
//!
//! Without them the kit builds no database driver; [`schema`] still has the statements.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod binary;
mod error;
mod gid;
#[cfg(feature = "workflow")]
pub mod history;
pub mod schema;
mod server;
mod store;
pub mod wait;

pub use binary::{
    binary_version, cache_dir, find_binary, find_or_install, install, DTM_MODULE, DTM_VERSION,
};
pub use error::{Error, Result, WaitError};
pub use gid::unique_gid;
pub use server::{free_port, DtmServer, DtmServerConfig};
pub use store::Store;

/// The dtmcli this kit's clients and query answers come from.
pub use dtmcli;
/// The sqlx the schema functions take connections of.
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub use sqlx;
