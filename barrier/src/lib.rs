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
//! One API over every backend. A backend is a [`BarrierStore`]; the ones whose local
//! transactions can hold a business closure are also a [`TransactionalStore`]:
//!
//! | backend | store | the business closure receives | guard a handler | msg outbox | back-check |
//! |---|---|---|---|---|---|
//! | MySQL/MariaDB | `sqlx::Pool<MySql>` | `&mut sqlx::MySqlConnection` (the open transaction) | [`BranchBarrier::call`], [`BranchBarrier::call_reprocessing`] | [`do_and_submit`] | [`BranchBarrier::query_prepared`] |
//! | PostgreSQL | `sqlx::Pool<Postgres>` | `&mut sqlx::PgConnection` | same | same | same |
//! | MongoDB | `mongodb::Client` | `&mut mongodb::ClientSession` (in its transaction) | same | same | same |
//! | Redis | `redis::RedisStore<C>` (a connection and the key expiry) | outbox only: `&mut redis::Guarded<C>` | `BranchBarrier::check_adjust_amount` (one atomic Lua script) | same | same |
//!
//! ```no_run
//! # #[cfg(feature = "mysql")]
//! # async fn handler(pool: sqlx::MySqlPool, query: &str) -> Result<(), dtmcli::Error> {
//! let bb = dtm_barrier::BranchBarrier::from_query(query)?;
//! bb.call(&pool, |conn| {
//!     Box::pin(async move {
//!         sqlx::query("update dtm_busi.user_account set balance = balance - 30 where user_id = 1")
//!             .execute(&mut *conn)
//!             .await?;
//!         Ok(())
//!     })
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! ## Names before the one store API
//! | before | now |
//! |---|---|
//! | `bb.call_with_pool(&pool, busi)`, `bb.mongo_call(&client, busi)` | `bb.call(&store, busi)` |
//! | `bb.call(tx, busi)` (the caller's sqlx transaction) | `bb.call_in_transaction(tx, busi)` |
//! | `bb.call_with_pool_reprocessing(..)`, `bb.mongo_call_reprocessing(..)` | `bb.call_reprocessing(&store, &policy, busi)` |
//! | `bb.query_prepared(&pool)`, `bb.mongo_query_prepared(&client)`, `bb.redis_query_prepared(&mut conn, expire)` | `bb.query_prepared(&store)` |
//! | `bb.redis_check_adjust_amount(&mut conn, key, amount, expire)` | `bb.check_adjust_amount(&RedisStore::new(conn, expire), key, amount)` |
//! | `sql::do_and_submit_db(&msg, qp, &pool, &config, busi)`, `mongo::do_and_submit_mongo(..)` | `do_and_submit(&msg, qp, &store, busi)`, or `config.do_and_submit(..)` for another table |
//! | `redis::do_and_submit_redis(&msg, qp, &mut conn, key, amount, expire)` | `do_and_submit(&msg, qp, &redis_store, \|g\| Box::pin(async move { g.check_adjust_amount(key, amount).await.map(drop) }))` |
//! | `mongo::is_transient(&e)` | `<mongodb::Client as TransactionalStore>::is_transient(&e)` (every store has one) |
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
#![cfg_attr(docsrs, feature(doc_cfg))]

mod barrier;
mod error;
#[cfg(feature = "mongodb")]
pub mod mongo;
#[cfg(feature = "redis")]
pub mod redis;
pub mod reprocess;
pub mod retention;
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub mod sql;
// Without a backend feature the traits have no implementors; compiled anyway, so that
// the one API is the same whatever the features.
mod store;
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub mod xa;

pub use barrier::{
    msg_query_info, BarrierConfig, BarrierRow, BranchBarrier, Outcome, TableName, DEFAULT_TABLE,
};
pub use error::{Error, Result};
pub use store::{do_and_submit, BarrierStore, TransactionalStore};

// Dependencies whose types are in this crate's API, so that users can name the versions it
// was built with instead of guessing them (see "Cargo.toml for your use case" in the README).
/// The redis crate the [`redis`] barrier module is built on, so your connections match it.
#[cfg(feature = "redis")]
pub use ::redis as redis_rs;
/// The mongodb the MongoDB barrier is built on, so your `Client` is of the same version.
#[cfg(feature = "mongodb")]
pub use mongodb;
/// The sqlx the SQL barrier is built on, so your pools and connections are of the same version.
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub use sqlx;
