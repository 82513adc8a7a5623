//! The barrier value and its configuration.

// What the backends share is unused when no backend feature is on: one allow for all of it.
#![cfg_attr(
    not(any(
        feature = "mysql",
        feature = "postgres",
        feature = "redis",
        feature = "mongodb"
    )),
    allow(dead_code)
)]

use std::sync::atomic::{AtomicU32, Ordering};

use dtmcli::{Op, TransInfo, TransType};

use futures_util::future::BoxFuture;

use crate::error::{Error, Result};
use crate::reprocess::ReprocessPolicy;
use crate::store::{BarrierStore, Failed, TransactionalStore};

/// The default barrier table, as in the Go SDK.
pub const DEFAULT_TABLE: &str = "dtm_barrier.barrier";

/// A validated barrier table name: `table` or `schema.table`, each part an ASCII identifier
/// (`[A-Za-z_][A-Za-z0-9_$]*`, at most 64 characters), so it can be spliced into SQL safely.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName(String);

impl TableName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self> {
        let parts: Vec<&str> = name.split('.').collect();
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.len() <= 64
                && p.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        };
        if parts.len() > 2 || !parts.iter().all(|p| ok_part(p)) {
            return Err(Error::Config(format!(
                "barrier table name {name:?} must be `table` or `schema.table` made of ASCII identifiers"
            )));
        }
        Ok(TableName(name.to_string()))
    }

    /// The full name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The schema (database) part, if any.
    pub fn schema(&self) -> Option<&str> {
        self.0.split_once('.').map(|(s, _)| s)
    }

    /// The table (collection) part.
    pub fn table(&self) -> &str {
        self.0.split_once('.').map_or(self.0.as_str(), |(_, t)| t)
    }
}

impl Default for TableName {
    fn default() -> Self {
        TableName(DEFAULT_TABLE.to_string())
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Barrier settings, passed as a value (there is no global table name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BarrierConfig {
    /// Where barrier rows live (SQL table, or `database.collection` on MongoDB).
    pub table: TableName,
}

impl BarrierConfig {
    /// A configuration with a custom table.
    pub fn with_table(name: &str) -> Result<Self> {
        Ok(BarrierConfig {
            table: TableName::new(name)?,
        })
    }

    /// [`crate::do_and_submit`] with this configuration's barrier table.
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

/// One barrier row, exactly the columns the Go SDK writes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BarrierRow<'a> {
    /// `trans_type`.
    pub trans_type: &'a str,
    /// `gid`.
    pub gid: &'a str,
    /// `branch_id`.
    pub branch_id: &'a str,
    /// `op`.
    pub op: &'a str,
    /// `barrier_id` (`01`, `02`...).
    pub barrier_id: &'a str,
    /// `reason`: the op that inserted the row.
    pub reason: &'a str,
}

/// How a backend stores the parts of a barrier identity, which decides the branch-id rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One column or field per part (SQL rows, Mongo documents).
    Columns,
    /// The parts joined with `-` (Redis keys, XA xids): a `-` inside a branch id would make
    /// two identities one key, so it is refused.
    // Built only by the Redis store and XA (the SQL features).
    #[cfg_attr(
        not(any(feature = "redis", feature = "mysql", feature = "postgres")),
        allow(dead_code)
    )]
    Dashed,
}

impl<'a> BarrierRow<'a> {
    /// The row of `info`'s branch for `op` and `barrier_id`, written because of `reason`.
    pub fn of(info: &'a TransInfo, op: &'a str, barrier_id: &'a str, reason: &'a str) -> Self {
        BarrierRow {
            trans_type: info.trans_type.as_str(),
            gid: &info.gid,
            branch_id: &info.branch_id,
            op,
            barrier_id,
            reason,
        }
    }
}

impl BarrierRow<'_> {
    /// Refuses, before anything is written, a row the stores cannot hold exactly: the one
    /// identity check of every backend ([`dtmcli::identity`]'s rules). A value that a
    /// column would truncate, a collation fold or a key separator merge could make two
    /// transactions share one row, and the second one's business would be skipped as a
    /// "duplicate". Errors are [`dtmcli::Error::InvalidInput`].
    pub(crate) fn check(&self, layout: Layout) -> Result<()> {
        use dtmcli::identity;
        identity::check_gid(self.gid)?;
        match layout {
            Layout::Columns => identity::check_branch_id(self.branch_id)?,
            Layout::Dashed => identity::check_branch_id_unseparated(self.branch_id)?,
        }
        identity::check_barrier_word("op", self.op)?;
        identity::check_barrier_word("barrier id", self.barrier_id)?;
        // Written to varchar(45) columns too; fixed words today, checked so that they stay so.
        identity::check_barrier_word("trans_type", self.trans_type)?;
        identity::check_barrier_word("reason", self.reason)?;
        Ok(())
    }
}

/// Makes a branch handler idempotent and safe against null compensation and hanging
/// requests. Build one per incoming branch request, from its [`TransInfo`].
///
/// Each guarded call takes the next barrier id (`01`, `02`...), so one handler may guard
/// several local transactions, and repeats of the same request reuse the same ids.
///
/// A saga's action and its compensation, guarded on MySQL/MariaDB (the same code runs on a
/// PostgreSQL pool or a MongoDB client: see [`BranchBarrier::call`]). The business runs in
/// the local transaction that writes the barrier row: it commits with it, or not at all.
///
/// ```no_run
/// # #[cfg(feature = "mysql")]
/// # mod handlers {
/// use dtm_barrier::{BranchBarrier, Outcome};
///
/// /// `POST /api/TransOut?gid=..&trans_type=saga&branch_id=01&op=action`
/// pub async fn trans_out(pool: &sqlx::MySqlPool, query: &str, amount: i64) -> Result<(), dtmcli::Error> {
///     let bb = BranchBarrier::from_query(query)?;
///     let outcome = bb
///         .call(pool, |conn| {
///             Box::pin(async move {
///                 let debited = sqlx::query(
///                     "update bank.account set balance = balance - ? where id = 1 and balance >= ?",
///                 )
///                 .bind(amount)
///                 .bind(amount)
///                 .execute(&mut *conn)
///                 .await?; // a database error: rolled back, DTM retries
///                 if debited.rows_affected() == 0 {
///                     // Rolled back too, and the handler answers FAILURE: the saga compensates.
///                     Err(dtmcli::Error::failure("insufficient balance"))?;
///                 }
///                 Ok(())
///             })
///         })
///         .await?;
///     // A repeated request, or one that came after its compensation, did nothing.
///     let _ran = matches!(outcome, Outcome::Executed(()));
///     Ok(())
/// }
///
/// /// `POST /api/TransOutRevert?..&op=compensate`: skipped if the action never ran or failed.
/// pub async fn trans_out_revert(pool: &sqlx::MySqlPool, query: &str, amount: i64) -> Result<(), dtmcli::Error> {
///     BranchBarrier::from_query(query)?
///         .call(pool, |conn| {
///             Box::pin(async move {
///                 sqlx::query("update bank.account set balance = balance + ? where id = 1")
///                     .bind(amount)
///                     .execute(&mut *conn)
///                     .await?;
///                 Ok(())
///             })
///         })
///         .await?;
///     Ok(())
/// }
/// # }
/// ```
///
/// Over gRPC the barrier comes from the call's metadata
/// (`BranchBarrier::new(dtmgrpc::trans_info_from_metadata(request.metadata())?)`) and the
/// handler answers with `dtmgrpc::IntoStatus`.
#[derive(Debug)]
pub struct BranchBarrier {
    info: TransInfo,
    config: BarrierConfig,
    barrier_id: AtomicU32,
}

impl BranchBarrier {
    /// A barrier for the branch request `info`, with the default table.
    pub fn new(info: TransInfo) -> Self {
        Self::with_config(info, BarrierConfig::default())
    }

    /// A barrier with an explicit configuration.
    pub fn with_config(info: TransInfo, config: BarrierConfig) -> Self {
        BranchBarrier {
            info,
            config,
            barrier_id: AtomicU32::new(0),
        }
    }

    /// A barrier from a branch request's query string.
    pub fn from_query(query: &str) -> Result<Self> {
        Ok(Self::new(TransInfo::from_query(query)?))
    }

    /// The transaction info.
    pub fn info(&self) -> &TransInfo {
        &self.info
    }

    /// The configuration.
    pub fn config(&self) -> &BarrierConfig {
        &self.config
    }

    /// Takes the next barrier id (`01` on the first call).
    pub fn next_barrier_id(&self) -> String {
        let n = self.barrier_id.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{n:02}")
    }

    // What the backends share (unused when no backend feature is on).

    /// The op whose row a call of this op must also insert (try for cancel, action for
    /// compensate and rollback), as a string.
    pub(crate) fn origin_op(&self) -> Option<&'static str> {
        match self.info.op.origin() {
            Some(Op::Try) => Some("try"),
            Some(Op::Action) => Some("action"),
            _ => None,
        }
    }

    /// Checks this request's identity (its own row with barrier id `bid`; origin rows only
    /// differ by a fixed op word) before a backend writes anything. See [`BarrierRow::check`].
    pub(crate) fn check_identity(&self, bid: &str, layout: Layout) -> Result<()> {
        self.row(self.info.op.as_str(), bid).check(layout)
    }

    /// The row for `op` with barrier id `bid` and reason = this request's op.
    pub(crate) fn row<'a>(&'a self, op: &'a str, bid: &'a str) -> BarrierRow<'a> {
        BarrierRow::of(&self.info, op, bid, self.info.op.as_str())
    }

    /// The row a msg back-check writes unless the local transaction already did:
    /// `(gid, 00, msg, 01)` with reason `rollback`.
    pub(crate) fn msg_row(&self) -> BarrierRow<'_> {
        BarrierRow {
            branch_id: "00",
            ..BarrierRow::of(&self.info, "msg", "01", "rollback")
        }
    }

    /// The back-check answer once the reason of the msg row has been read back from
    /// `table`: `rollback` (written by the back-check itself) means the local transaction
    /// never committed, and now never will.
    // Read back by the SQL and MongoDB stores; Redis decides in its script.
    #[cfg_attr(
        not(any(feature = "mysql", feature = "postgres", feature = "mongodb")),
        allow(dead_code)
    )]
    pub(crate) fn msg_verdict(&self, reason: Option<&str>, table: &TableName) -> Result<()> {
        match reason {
            Some("rollback") => Err(self.msg_not_committed()),
            Some(_) => Ok(()),
            None => Err(Error::Config(format!(
                "msg {}: the barrier record vanished from {table}",
                self.info.gid
            ))),
        }
    }

    /// The failure a back-check answers when the local transaction did not commit.
    pub(crate) fn msg_not_committed(&self) -> Error {
        Error::failure(format!(
            "msg {}: the local transaction did not commit",
            self.info.gid
        ))
    }

    /// True when this request is the msg back-check / DoAndSubmit (`op == msg`).
    pub(crate) fn is_msg(&self) -> bool {
        self.info.op == Op::Msg
    }

    // The barrier algorithm, its retry loop and the msg back-check, for every store.

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
            dtmcli::metrics::barrier_outcome("null_compensation");
            return Ok(Outcome::NullCompensation);
        }
        if current_affected == 0 {
            tracing::info!(gid = %self.info().gid, branch_id = %self.info().branch_id, op, "duplicate or hanging request: business skipped");
            dtmcli::metrics::barrier_outcome("duplicate");
            return Ok(Outcome::Duplicate);
        }
        dtmcli::metrics::barrier_outcome("executed");
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
    /// [`crate::do_and_submit`]): writes the row `(gid, 00, msg, 01)` with reason `rollback`
    /// unless the local transaction already wrote it, then reads it back. `rollback` means
    /// the local transaction never committed (and now never will):
    /// [`dtmcli::Error::Failure`] (answer 409 / gRPC Aborted); otherwise success. Other
    /// errors are retryable (500).
    pub async fn query_prepared<S: BarrierStore>(&self, store: &S) -> Result<()> {
        store.back_check(self).await
    }

    // The guarded operations of the stores without a local transaction of their own, and
    // of a transaction the caller opened: each a thin entry over its store module.

    /// Adds `amount` (negative to take) to the integer at `key` on `store`, guarded by the
    /// barrier, in one atomic Lua script (the Go SDK's `RedisCheckAdjustAmount`; barrier
    /// id: the next one, `01` on the first call). Redis's guarded operation: it has no
    /// local transactions for [`BranchBarrier::call`].
    ///
    /// In the script's order (the barrier first, unlike the Go SDK, which checks the balance
    /// first and so never ends a transaction whose credit has to be null-compensated):
    /// 1. the barrier key of this op exists: a duplicate or a hanging request,
    ///    [`Outcome::Duplicate`], or [`dtmcli::Error::Duplicated`] for op `msg` (the msg
    ///    back-check ran first; see [`crate::do_and_submit`]).
    /// 2. cancel / compensate / rollback whose try / action key is missing: the barrier key
    ///    is set to `op`, the origin's to `rollback`, and nothing else happens:
    ///    [`Outcome::NullCompensation`] (a late try / action then finds its key and is a
    ///    duplicate).
    /// 3. `key` missing, or its value + `amount` below zero: nothing is written and the call
    ///    fails with [`dtmcli::Error::Failure`] (DTM rolls the transaction back).
    /// 4. otherwise the barrier key is set to `op` and `INCRBY key amount`:
    ///    [`Outcome::Executed`].
    ///
    /// Barrier keys expire after the store's `expire` (whole seconds, rounded up, at least
    /// one). Redis errors (a non-integer value at `key`...) are [`Error::Redis`].
    #[cfg(feature = "redis")]
    pub async fn check_adjust_amount<C>(
        &self,
        store: &crate::redis::RedisStore<C>,
        key: &str,
        amount: i64,
    ) -> Result<Outcome<()>>
    where
        C: redis::aio::ConnectionLike + Clone + Send + Sync,
    {
        crate::redis::check_adjust_amount(self, store, key, amount).await
    }

    /// [`BranchBarrier::call`] inside the caller's own transaction `tx` (the Go SDK's
    /// `Call(tx, busi)`): the barrier rows and `busi` are written in `tx`, which is then
    /// committed, or rolled back if anything failed. For when the caller must begin the
    /// transaction itself; otherwise `call(&pool, busi)`.
    #[cfg(any(feature = "mysql", feature = "postgres"))]
    pub async fn call_in_transaction<DB, T, F>(
        &self,
        tx: sqlx::Transaction<'_, DB>,
        busi: F,
    ) -> Result<Outcome<T>>
    where
        DB: crate::sql::BarrierDatabase,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<T>>,
    {
        crate::sql::call_in_transaction(self, tx, busi).await
    }
}

/// The transaction info of a msg back-check for `gid` (`branch_id 00`, `op msg`).
pub fn msg_query_info(gid: &str) -> TransInfo {
    TransInfo::new(gid, TransType::Msg, "00", Op::Msg)
}

/// What a guarded call did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome<T> {
    /// The business ran and committed with the barrier rows; its value.
    Executed(T),
    /// The business was skipped: this request is a duplicate, or arrived after its own
    /// cancel/compensation (hanging), and the call succeeds without effect.
    Duplicate,
    /// The business was skipped: a compensation/cancel/rollback whose action never ran.
    NullCompensation,
}

impl<T> Outcome<T> {
    /// The business value if it ran.
    pub fn executed(self) -> Option<T> {
        match self {
            Outcome::Executed(v) => Some(v),
            _ => None,
        }
    }

    /// True when the business ran.
    pub fn is_executed(&self) -> bool {
        matches!(self, Outcome::Executed(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_from_a_query_without_its_fields_is_an_error() {
        assert!(BranchBarrier::from_query("gid=x&op=action").is_err());
    }

    #[test]
    fn table_names() {
        assert!(TableName::new("dtm_barrier.barrier").is_ok());
        assert!(TableName::new("barrier").is_ok());
        for bad in ["", "a.b.c", "a;drop", "a b", "1abc", "a.", "x'--", "a.b`"] {
            assert!(TableName::new(bad).is_err(), "{bad}");
        }
        let t = TableName::new("s.t").unwrap();
        assert_eq!((t.schema(), t.table()), (Some("s"), "t"));
    }

    #[test]
    fn identities_the_stores_cannot_hold_exactly_are_refused() {
        let check = |gid: &str, branch: &str, op: Op, layout: Layout| {
            BranchBarrier::new(TransInfo::new(gid, TransType::Saga, branch, op))
                .check_identity("01", layout)
        };
        assert!(check("Case-x-abc", "01", Op::Action, Layout::Columns).is_ok());
        assert!(check("café", "01-01", Op::Action, Layout::Columns).is_ok());
        for (gid, branch, layout) in [
            ("g ", "01", Layout::Columns),
            (&"x".repeat(129) as &str, "01", Layout::Columns),
            ("a\0b", "01", Layout::Columns),
            ("g", "01-01", Layout::Dashed),
            ("g", "0 1", Layout::Columns),
        ] {
            let e = check(gid, branch, Op::Action, layout).unwrap_err();
            assert!(e.is_invalid_input(), "{gid:?} {branch:?}: {e}");
            assert!(matches!(
                dtmcli::Error::from(e),
                dtmcli::Error::InvalidInput(_)
            ));
        }
        // A workflow callback's op may be any text, but not in a barrier row.
        let e = check("g", "01", Op::parse("my flow"), Layout::Columns).unwrap_err();
        assert!(e.is_invalid_input(), "{e}");
    }

    #[test]
    fn barrier_ids_and_origin() {
        let bb = BranchBarrier::new(TransInfo::new("g", TransType::Tcc, "01", Op::Cancel));
        assert_eq!(bb.next_barrier_id(), "01");
        assert_eq!(bb.next_barrier_id(), "02");
        assert_eq!(bb.origin_op(), Some("try"));
        let bb = BranchBarrier::new(TransInfo::new("g", TransType::Workflow, "01", Op::Rollback));
        assert_eq!(bb.origin_op(), Some("action"));
        let row = bb.row("action", "01");
        assert_eq!(row.reason, "rollback");
    }
}
