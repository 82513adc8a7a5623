//! One barrier API over every backend: the stores, the guarded call, its reprocessing loop,
//! the msg back-check and the msg outbox, each written once.
//!
//! A backend is a [`BarrierStore`] (every one answers the msg back-check and runs the msg
//! outbox); the ones with local transactions that can hold a business closure are also a
//! [`TransactionalStore`] (SQL pools, the MongoDB client). What differs per backend (how
//! barrier rows are inserted, how a transaction begins, commits and rolls back, which
//! errors are transient) is behind the traits' hidden methods. The barrier algorithm and
//! its retry loop are `BranchBarrier`'s methods (barrier.rs); the outbox is here.

use std::future::Future;

use futures_util::future::BoxFuture;

use crate::barrier::{BarrierConfig, BarrierRow, BranchBarrier, TableName};
use crate::error::{Error, Result};

pub(crate) mod sealed {
    /// Only this crate's stores: the rows they write must stay exactly the Go SDK's.
    pub trait Sealed {}
}

/// A database the branch barrier writes its rows (keys, documents) to.
///
/// Implemented by `sqlx::Pool<MySql>` and `sqlx::Pool<Postgres>` (features `mysql`,
/// `postgres`), `mongodb::Client` (feature `mongodb`) and `redis::RedisStore` (feature
/// `redis`). Sealed: the rows must stay those the Go SDK writes, which Go services read.
///
/// Every store answers the msg back-check ([`BranchBarrier::query_prepared`]) and runs the
/// msg outbox ([`do_and_submit`]); the stores with local transactions are also a
/// [`TransactionalStore`] ([`BranchBarrier::call`]).
pub trait BarrierStore: sealed::Sealed + Send + Sync {
    /// What a business closure receives: the open transaction's connection on SQL
    /// (`sqlx::MySqlConnection`, `sqlx::PgConnection`), the `mongodb::ClientSession` in its
    /// transaction on MongoDB, and on Redis, which has no local transactions, a
    /// `redis::Guarded` handle whose one guarded adjustment is the msg local transaction.
    type Conn: Send;

    /// The msg back-check on this store (see [`BranchBarrier::query_prepared`]).
    #[doc(hidden)]
    fn back_check(&self, bb: &BranchBarrier) -> impl Future<Output = Result<()>> + Send;

    /// Runs `busi` as the msg local transaction of `bb` (see [`do_and_submit`]).
    #[doc(hidden)]
    fn msg_local<F>(&self, bb: BranchBarrier, busi: F) -> impl Future<Output = Result<()>> + Send
    where
        F: for<'c> FnOnce(&'c mut Self::Conn) -> BoxFuture<'c, Result<()>> + Send;
}

/// A [`BarrierStore`] whose local transactions hold the barrier rows and a business
/// closure together: SQL pools and the MongoDB client. [`BranchBarrier::call`] and
/// [`BranchBarrier::call_reprocessing`] run on it.
pub trait TransactionalStore: BarrierStore {
    /// True when `error` ends a local transaction in a way that re-running the whole
    /// transaction (barrier rows included) is safe and may succeed: a deadlock, a lock
    /// wait timeout or a serialization failure on SQL (MySQL/MariaDB 1213, 1205;
    /// PostgreSQL 40P01, 40001, 55P03), a `WriteConflict` or an error labelled
    /// `TransientTransactionError` on MongoDB. A commit whose outcome is unknown
    /// ([`Error::AmbiguousCommit`]) never is. DTM retries such branch errors anyway; this
    /// is what [`BranchBarrier::call_reprocessing`] retries at once.
    fn is_transient(error: &Error) -> bool;

    /// An open local transaction.
    #[doc(hidden)]
    type Tx: Send;

    /// Refuses a barrier table this store cannot use, before anything is written.
    #[doc(hidden)]
    fn check_table(_table: &TableName) -> Result<()> {
        Ok(())
    }

    /// Begins a local transaction.
    #[doc(hidden)]
    fn begin_local(&self) -> impl Future<Output = Result<Self::Tx>> + Send;

    /// The connection (session) of an open transaction.
    #[doc(hidden)]
    fn local_conn(tx: &mut Self::Tx) -> &mut Self::Conn;

    /// Inserts the barrier rows of one guarded call unless they exist, in the open
    /// transaction: the origin op's row (for undo ops) and this op's. Returns how many of
    /// each were inserted, (origin, current), each 0 or 1.
    #[doc(hidden)]
    fn insert_barrier_rows<'a>(
        conn: &'a mut Self::Conn,
        table: &'a TableName,
        origin: Option<BarrierRow<'a>>,
        current: BarrierRow<'a>,
    ) -> impl Future<Output = Result<(u64, u64)>> + Send + 'a;

    /// True when inserting the barrier rows failed because a concurrent identical request
    /// inserted them first (MongoDB's duplicate key): a re-run finds them.
    #[doc(hidden)]
    fn is_barrier_race(_error: &Error) -> bool {
        false
    }

    /// Commits; an unknown outcome is [`Error::AmbiguousCommit`].
    #[doc(hidden)]
    fn commit_local(tx: Self::Tx) -> impl Future<Output = Result<()>> + Send;

    /// Rolls back after a failure (errors are logged: the failure is what is reported).
    #[doc(hidden)]
    fn rollback_local(tx: Self::Tx) -> impl Future<Output = ()> + Send;
}

/// Why a guarded transaction failed, and whether re-running it is safe.
pub(crate) struct Failed {
    pub(crate) error: Error,
    /// The barrier insert met a concurrent identical request: the transaction is rolled
    /// back, and a re-run finds the other request's rows.
    pub(crate) barrier_race: bool,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed {
            error,
            barrier_race: false,
        }
    }
}

/// [`BarrierStore::msg_local`] of a [`TransactionalStore`]: the guarded call.
#[cfg(any(feature = "mysql", feature = "postgres", feature = "mongodb"))]
pub(crate) async fn msg_local_call<S, F>(store: &S, bb: BranchBarrier, busi: F) -> Result<()>
where
    S: TransactionalStore,
    F: for<'c> FnOnce(&'c mut S::Conn) -> BoxFuture<'c, Result<()>>,
{
    bb.call(store, busi).await.map(drop)
}

/// The outbox pattern with the barrier (the Go SDK's `DoAndSubmit` / `DoAndSubmitDB`):
/// [`dtmcli::Msg::do_and_submit`] whose local business `busi` runs guarded by the barrier
/// row `(gid, 00, msg, 01)` on `store`, with the default barrier table. For another table,
/// [`BarrierConfig::do_and_submit`].
///
/// On SQL and MongoDB the row and `busi` commit in one local transaction; on Redis `busi`
/// makes its one guarded adjustment (`redis::Guarded::check_adjust_amount`), which writes
/// the key atomically with the adjustment. If DTM's back-check ran first, the
/// local transaction is refused with [`dtmcli::Error::Duplicated`] and the message
/// aborted. The `query_prepared` handler at `query_prepared` answers with
/// [`BranchBarrier::query_prepared`] on the same store. Works with every transport
/// (`dtmcli::Msg`, `dtmgrpc::Msg`, JSON-RPC).
///
/// ```no_run
/// # #[cfg(feature = "mysql")]
/// # async fn outbox(dtm: dtmcli::DtmClient, pool: sqlx::MySqlPool) -> dtm_barrier::Result<()> {
/// let msg = dtm
///     .msg("gid-1")
///     .add("http://busi/api/TransIn", &30);
/// dtm_barrier::do_and_submit(&msg, "http://busi/api/QueryPrepared", &pool, |conn| {
///     Box::pin(async move {
///         sqlx::query("update dtm_busi.user_account set balance = balance - 30 where user_id = 1")
///             .execute(&mut *conn)
///             .await?;
///         Ok(())
///     })
/// })
/// .await
/// # }
/// ```
pub async fn do_and_submit<T, S, F>(
    msg: &dtmcli::Msg<T>,
    query_prepared: &str,
    store: &S,
    busi: F,
) -> Result<()>
where
    T: dtmcli::Transport,
    S: BarrierStore,
    F: for<'c> FnOnce(&'c mut S::Conn) -> BoxFuture<'c, Result<()>> + Send,
{
    BarrierConfig::default()
        .do_and_submit(msg, query_prepared, store, busi)
        .await
}
