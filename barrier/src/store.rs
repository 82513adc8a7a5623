//! One barrier API over every backend: the stores, the guarded call, its reprocessing loop,
//! the msg back-check and the msg outbox, each written once.
//!
//! A backend is a [`BarrierStore`] (every one answers the msg back-check and runs the msg
//! outbox); the ones with local transactions that can hold a business closure are also a
//! [`TransactionalStore`] (SQL pools, the MongoDB client). What differs per backend (how
//! barrier rows are inserted, how a transaction begins, commits and rolls back, which
//! errors are transient) is behind the traits' hidden methods; the barrier algorithm, the
//! retry loop and the outbox are here.

use std::future::Future;

use futures_util::future::BoxFuture;

use crate::barrier::{BarrierConfig, BarrierRow, BranchBarrier, Layout, Outcome, TableName};
use crate::error::{Error, Result};
use crate::reprocess::ReprocessPolicy;

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
    barrier_race: bool,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed {
            error,
            barrier_race: false,
        }
    }
}

impl BranchBarrier {
    /// The barrier algorithm inside an open transaction, with barrier id `bid` (identity
    /// already checked): insert this op's row (and the origin op's, for undo ops), then
    /// decide.
    pub(crate) async fn guard<'c, S, T, F>(
        &self,
        conn: &'c mut S::Conn,
        bid: &str,
        busi: F,
    ) -> Result<Outcome<T>, Failed>
    where
        S: TransactionalStore,
        F: FnOnce(&'c mut S::Conn) -> BoxFuture<'c, Result<T>>,
    {
        let table = &self.config().table;
        let op = self.info().op.as_str();
        let origin = self.origin_op();
        let (origin_affected, current_affected) = S::insert_barrier_rows(
            &mut *conn,
            table,
            origin.map(|o| self.row(o, bid)),
            self.row(op, bid),
        )
        .await
        .map_err(|error| Failed {
            barrier_race: S::is_barrier_race(&error),
            error,
        })?;
        tracing::debug!(
            gid = %self.info().gid, branch_id = %self.info().branch_id, op, bid,
            origin_affected, current_affected, "barrier rows"
        );
        if self.is_msg() && current_affected == 0 {
            return Err(Error::Dtm(dtmcli::Error::Duplicated).into());
        }
        if origin.is_some() && origin_affected > 0 {
            tracing::info!(gid = %self.info().gid, branch_id = %self.info().branch_id, op, "null compensation: business skipped");
            return Ok(Outcome::NullCompensation);
        }
        if current_affected == 0 {
            tracing::info!(gid = %self.info().gid, branch_id = %self.info().branch_id, op, "duplicate or hanging request: business skipped");
            return Ok(Outcome::Duplicate);
        }
        Ok(busi(conn).await.map(Outcome::Executed)?)
    }

    /// One attempt: begin, guard with barrier id `bid` (`None`: the next one, taken once the
    /// transaction is open, as the Go SDK's SQL barrier does, so that a failed begin
    /// leaves it to the next call), commit or roll back. The identity is checked before
    /// anything is written.
    async fn attempt<S, T, F>(
        &self,
        store: &S,
        bid: Option<&str>,
        busi: F,
    ) -> Result<Outcome<T>, Failed>
    where
        S: TransactionalStore,
        F: for<'c> FnOnce(&'c mut S::Conn) -> BoxFuture<'c, Result<T>>,
    {
        let mut tx = store.begin_local().await?;
        let next;
        let bid = match bid {
            Some(bid) => bid,
            None => {
                next = self.next_barrier_id();
                &next
            }
        };
        let guarded = match self.check_identity(bid, Layout::Columns) {
            Ok(()) => {
                self.guard::<S, T, _>(S::local_conn(&mut tx), bid, busi)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        match guarded {
            Ok(out) => {
                S::commit_local(tx).await?;
                Ok(out)
            }
            Err(f) => {
                S::rollback_local(tx).await;
                Err(f)
            }
        }
    }

    /// Runs `busi` guarded by the barrier in one local transaction of `store`: begins it,
    /// writes the barrier rows, runs `busi` with the transaction's connection (SQL) or
    /// session (MongoDB: pass it to every operation with `.session(&mut *session)`), then
    /// commits barrier rows and business together, or rolls both back if anything failed.
    /// Takes the next barrier id (`01` on the first call).
    ///
    /// The business is skipped, and the call succeeds, for a duplicate or hanging request
    /// ([`Outcome::Duplicate`]) and for an undo op whose action never ran
    /// ([`Outcome::NullCompensation`]); for op `msg` whose back-check ran first, the call
    /// fails with [`dtmcli::Error::Duplicated`]. An identity the store cannot hold exactly
    /// is refused before anything is written ([`dtmcli::Error::InvalidInput`]).
    ///
    /// A commit whose outcome stays unknown is [`Error::AmbiguousCommit`]; the business is
    /// never re-run by this call. A transient conflict ([`TransactionalStore::is_transient`];
    /// on MongoDB also a concurrent identical request) is returned as the database error,
    /// which DTM retries; [`BranchBarrier::call_reprocessing`] re-runs the transaction at
    /// once instead.
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn handler(pool: sqlx::PgPool, query: &str) -> Result<(), dtmcli::Error> {
    /// use dtm_barrier::BranchBarrier;
    ///
    /// let bb = BranchBarrier::from_query(query)?;
    /// bb.call(&pool, |conn| {
    ///     Box::pin(async move {
    ///         sqlx::query("update dtm_busi.user_account set balance = balance - $1 where user_id = $2")
    ///             .bind(30_i64)
    ///             .bind(1_i32)
    ///             .execute(&mut *conn)
    ///             .await?;
    ///         Ok(())
    ///     })
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn call<S, T, F>(&self, store: &S, busi: F) -> Result<Outcome<T>>
    where
        S: TransactionalStore,
        F: for<'c> FnOnce(&'c mut S::Conn) -> BoxFuture<'c, Result<T>>,
    {
        S::check_table(&self.config().table)?;
        self.attempt(store, None, busi).await.map_err(|f| f.error)
    }

    /// Like [`BranchBarrier::call`], but when the transaction fails transiently
    /// ([`TransactionalStore::is_transient`]: deadlock, lock wait timeout, serialization
    /// failure, write conflict), or its barrier insert meets a concurrent identical request
    /// (MongoDB's duplicate key), the whole local transaction (barrier rows included) is
    /// rolled back and run again with the same barrier id, up to the policy's attempts,
    /// with backoff. A commit whose outcome is unknown is never re-run
    /// ([`Error::AmbiguousCommit`]). `busi` must therefore be callable more than once.
    pub async fn call_reprocessing<S, T, F>(
        &self,
        store: &S,
        policy: &ReprocessPolicy,
        mut busi: F,
    ) -> Result<Outcome<T>>
    where
        S: TransactionalStore,
        F: for<'c> FnMut(&'c mut S::Conn) -> BoxFuture<'c, Result<T>>,
    {
        S::check_table(&self.config().table)?;
        // One barrier id for every attempt: they are the same local transaction.
        let bid = self.next_barrier_id();
        let mut attempt = 1;
        loop {
            let failed = match self.attempt(store, Some(&bid), &mut busi).await {
                Ok(out) => return Ok(out),
                Err(f) => f,
            };
            let retry = failed.barrier_race || S::is_transient(&failed.error);
            if !retry || attempt >= policy.max_attempts {
                return Err(failed.error);
            }
            let wait = policy.backoff(attempt);
            tracing::warn!(
                gid = %self.info().gid, branch_id = %self.info().branch_id, attempt,
                error = %failed.error, ?wait, "transient database error: re-running the local transaction"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The msg back-check answer (DTM's `query_prepared` call, or the SDK's own in
    /// [`do_and_submit`]): writes the row `(gid, 00, msg, 01)` with reason `rollback`
    /// unless the local transaction already wrote it, then reads it back. `rollback` means
    /// the local transaction never committed (and now never will):
    /// [`dtmcli::Error::Failure`] (answer 409 / gRPC Aborted); otherwise success. Other
    /// errors are retryable (500).
    pub async fn query_prepared<S: BarrierStore>(&self, store: &S) -> Result<()> {
        store.back_check(self).await
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

impl BarrierConfig {
    /// [`do_and_submit`] with this configuration's barrier table.
    pub async fn do_and_submit<T, S, F>(
        &self,
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
        msg.do_and_submit(query_prepared, |info| async move {
            store
                .msg_local(BranchBarrier::with_config(info, self.clone()), busi)
                .await
                .map_err(dtmcli::Error::from)
        })
        .await
        .map_err(Error::Dtm)
    }
}
