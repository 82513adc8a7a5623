//! # dtm-barrier: idempotent DTM branch handlers in the business's own database
//!
//! DTM calls branch handlers repeatedly, out of order, and for actions that never ran. A
//! [`BranchBarrier`] makes a handler correct anyway by writing a barrier row in the same
//! local transaction as the business:
//!
//! - a **duplicate** request (same gid, branch, op) finds its row and skips the business;
//! - a **null compensation** (cancel/compensate/rollback whose action never ran) inserts the
//!   action's row first, so it skips the business and a **hanging** late action skips too;
//! - a msg whose back-check ran before the local transaction gets
//!   [`dtmcli::Error::Duplicated`].
//!
//! Rows are those of the Go SDK (same table, columns, ids and reasons), so Go and Rust
//! services can share one barrier table.
//!
//! | backend | guard a handler | msg outbox | back-check |
//! |---|---|---|---|
//! | MySQL/MariaDB, Postgres | `BranchBarrier::call`, `call_with_pool`, `call_with_pool_reprocessing` | `sql::do_and_submit_db` | `BranchBarrier::query_prepared` |
//! | Redis | `BranchBarrier::redis_check_adjust_amount` | `redis::do_and_submit_redis` | `BranchBarrier::redis_query_prepared` |
//! | MongoDB | `BranchBarrier::mongo_call`, `mongo_call_reprocessing` | `mongo::do_and_submit_mongo` | `BranchBarrier::mongo_query_prepared` |
//!
//! XA local transactions (the branch side of XA) are in the `xa` module.
//!
//! ## Identities are exact
//! A barrier row, Redis key or XA xid belongs to one (gid, branch id, op, barrier id). A
//! value a store cannot hold exactly (too long, a control character, leading or trailing
//! whitespace, a `-` in a branch id where the parts are joined with `-`) is refused with
//! [`dtmcli::Error::InvalidInput`] before anything is written ([`dtmcli::identity`]), and
//! the MySQL/MariaDB table compares the identity columns binary. A table created with a
//! folding collation (the Go SDK's DDL) still works, but a request whose row folds onto
//! another transaction's is refused with the `ALTER TABLE` that fixes the table
//! (`sql::mysql_exact_collation_migration`), never skipped as a duplicate;
//! `sql::check_mysql_barrier_table` finds such a table at startup.
//!
//! ## Feature flags
//! - `mysql`: the SQL barrier, msg helpers and XA local transactions on MySQL/MariaDB (sqlx).
//! - `postgres`: the same on PostgreSQL (sqlx).
//! - `redis`: the Redis barrier (Lua through `redis::Script`).
//! - `mongodb`: the MongoDB barrier (sessions and transactions).

mod barrier;
mod error;
#[cfg(feature = "mongodb")]
pub mod mongo;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "mysql", feature = "postgres", feature = "mongodb"))]
pub mod reprocess;
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub mod sql;
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub mod xa;

pub use barrier::{
    msg_query_info, BarrierConfig, BarrierRow, BranchBarrier, Outcome, TableName, DEFAULT_TABLE,
};
pub use error::{Error, Result};
