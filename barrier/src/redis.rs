//! The barrier on Redis: balance-like counters adjusted by one atomic Lua script.
//!
//! Redis has no multi-key transactions with arbitrary business logic, so the Redis barrier
//! guards one operation: add `amount` to an integer key, refusing to go below zero
//! ([`BranchBarrier::check_adjust_amount`]). The script checks the balance, the barrier keys
//! and adjusts the counter atomically, with the keys and values of the Go SDK's
//! `RedisCheckAdjustAmount`, so Go and Rust services can share one Redis:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `<gid>-<branch_id>-<op>-<barrier_id>` | `op` (the literal word) | every executed adjustment and every null compensation |
//! | `<gid>-<branch_id>-<origin op>-<barrier_id>` | `rollback` | a null compensation (cancel / compensate / rollback whose try / action never ran) |
//! | `<gid>-00-msg-01` | `op`, or `rollback` | the msg local transaction ([`crate::do_and_submit`]), or the back-check ([`BranchBarrier::query_prepared`]) that ran first |
//!
//! The store is a [`RedisStore`]: any async connection (`redis::aio::ConnectionLike`, cloned
//! per call, as `MultiplexedConnection` and `ConnectionManager` are meant to be) with the
//! expiry of its barrier keys. It is a [`BarrierStore`] (back-check and msg outbox), not a
//! [`crate::TransactionalStore`]: a business closure cannot run inside a Lua script. In the
//! outbox the business receives a [`Guarded`] handle and makes its one guarded adjustment.
//!
//! Before anything is written, the identity is checked ([`dtmcli::identity`]): a branch id
//! with `-` is refused ([`dtmcli::Error::InvalidInput`]), since `g-01`+`01` and `g`+`01-01`
//! would share the key `g-01-01-...`.
//!
//! Every barrier key expires after the store's `expire` (choose it longer than any
//! transaction can last, e.g. days). On Redis Cluster all keys of one call must hash to one
//! slot: put the same hash tag in the gid and the business key (`{a}-gid`, `{a}-stock`).
//!
//! Unlike the Go SDK, the workflow `rollback` op is treated like `compensate` (its origin op
//! is `action`), and a null compensation is reported as [`Outcome::NullCompensation`].
//!
//! A guarded saga action and its compensation (wire them to routes of your web framework;
//! `dtmcli::Error` maps to DTM's answers: 409 FAILURE, 500 retry):
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use dtm_barrier::redis::RedisStore;
//! use dtm_barrier::{BranchBarrier, Outcome};
//! use redis::aio::MultiplexedConnection;
//!
//! /// Saga action: take 30 from the account (`query`: the request's query string).
//! async fn trans_out(
//!     redis: &RedisStore<MultiplexedConnection>,
//!     query: &str,
//! ) -> Result<(), dtmcli::Error> {
//!     let bb = BranchBarrier::from_query(query)?;
//!     // Insufficient balance -> Failure (409); a Redis error -> retryable (500).
//!     let outcome = bb.check_adjust_amount(redis, "account-1", -30).await?;
//!     if outcome == Outcome::Duplicate {
//!         tracing::info!("already done");
//!     }
//!     Ok(())
//! }
//!
//! /// Saga compensation: give the 30 back, unless the action never ran.
//! async fn trans_out_revert(
//!     redis: &RedisStore<MultiplexedConnection>,
//!     query: &str,
//! ) -> Result<(), dtmcli::Error> {
//!     BranchBarrier::from_query(query)?
//!         .check_adjust_amount(redis, "account-1", 30)
//!         .await?;
//!     Ok(())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = redis::Client::open("redis://127.0.0.1:6379")?;
//! let conn = client.get_multiplexed_async_connection().await?;
//! let redis = RedisStore::new(conn, Duration::from_secs(7 * 86400));
//! trans_out(&redis, "gid=g1&trans_type=saga&branch_id=01&op=action").await?;
//! trans_out_revert(&redis, "gid=g1&trans_type=saga&branch_id=01&op=compensate").await?;
//! # Ok(()) }
//! ```

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::ConnectionLike;
use redis::Script;

use crate::barrier::{BranchBarrier, Layout, Outcome};
use crate::error::{Error, Result};
use crate::store::{sealed, BarrierStore};

/// The Go SDK's `RedisCheckAdjustAmount` script with the same keys and values, but the
/// barrier decides before the balance does: duplicate, then null compensation, then the
/// balance check. Go checks the balance first, so a null compensation of a credit (take the
/// amount back from an account that never received it) answers FAILURE, which DTM retries
/// for ever: the transaction never ends (found by the chaos suite). A duplicate likewise
/// must not depend on today's balance. A null compensation and an executed adjustment
/// answer distinct markers instead of nil.
///
/// KEYS: business key, barrier key of this op, barrier key of the origin op.
/// ARGV: amount, origin op (`""` when none), expiry in seconds.
const CHECK_ADJUST_AMOUNT_LUA: &str = r"-- dtm-barrier RedisCheckAdjustAmount (barrier first)
if redis.call('EXISTS', KEYS[2]) == 1 then
	return 'DUPLICATE'
end

if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[3]) == 0 then
	redis.call('SET', KEYS[2], 'op', 'EX', ARGV[3])
	redis.call('SET', KEYS[3], 'rollback', 'EX', ARGV[3])
	return 'NULL_COMPENSATION'
end

local v = redis.call('GET', KEYS[1])
if v == false or v + ARGV[1] < 0 then
	return 'FAILURE'
end

redis.call('SET', KEYS[2], 'op', 'EX', ARGV[3])
redis.call('INCRBY', KEYS[1], ARGV[1])
return 'EXECUTED'
";

/// The Go SDK's `RedisQueryPrepared` script. KEYS: `<gid>-00-msg-01`; ARGV: expiry seconds.
const QUERY_PREPARED_LUA: &str = r"-- dtm-barrier RedisQueryPrepared
local v = redis.call('GET', KEYS[1])
if v == false then
	redis.call('SET', KEYS[1], 'rollback', 'EX', ARGV[1])
	v = 'rollback'
end
if v == 'rollback' then
	return 'FAILURE'
end
";

// Immutable scripts (code + SHA1): `invoke_async` sends EVALSHA and loads the script only
// when the server does not know it yet.
static CHECK_ADJUST_AMOUNT: LazyLock<Script> =
    LazyLock::new(|| Script::new(CHECK_ADJUST_AMOUNT_LUA));
static QUERY_PREPARED: LazyLock<Script> = LazyLock::new(|| Script::new(QUERY_PREPARED_LUA));

/// Whole seconds for Redis `EX`, rounded up; zero is refused (Redis rejects `EX 0`).
fn expire_secs(expire: Duration) -> Result<u64> {
    let secs = expire
        .as_secs()
        .saturating_add(u64::from(expire.subsec_nanos() > 0));
    if secs == 0 {
        return Err(Error::Config(
            "the Redis barrier expiry must be at least one second".to_string(),
        ));
    }
    Ok(secs)
}

/// A Redis barrier store: an async connection and how long the barrier keys it writes
/// live. The connection is cloned for each call (cheap for `MultiplexedConnection` and
/// `ConnectionManager`, which are made to be shared that way).
#[derive(Debug, Clone)]
pub struct RedisStore<C> {
    conn: C,
    expire: Duration,
}

impl<C> RedisStore<C> {
    /// A store on `conn` whose barrier keys expire after `expire` (whole seconds, rounded
    /// up; a zero expiry is refused by each call, before anything is sent).
    pub fn new(conn: C, expire: Duration) -> Self {
        RedisStore { conn, expire }
    }

    /// The connection.
    pub fn connection(&self) -> &C {
        &self.conn
    }

    /// How long barrier keys live.
    pub fn expire(&self) -> Duration {
        self.expire
    }
}

impl<C> sealed::Sealed for RedisStore<C> {}

impl<C> BarrierStore for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    type Conn = Guarded<C>;

    /// Sets `<gid>-00-msg-01` to `rollback` (expiring after the store's `expire`) unless the
    /// local transaction already wrote it; `rollback` means it never ran.
    async fn back_check(&self, bb: &BranchBarrier) -> Result<()> {
        let expire = expire_secs(self.expire)?;
        bb.msg_row().check(Layout::Dashed)?;
        let gid = bb.info().gid.as_str();
        let key = format!("{gid}-00-msg-01");
        let reply: Option<String> = QUERY_PREPARED
            .key(&key)
            .arg(expire)
            .invoke_async(&mut self.conn.clone())
            .await?;
        tracing::debug!(
            gid,
            reply = reply.as_deref().unwrap_or("nil"),
            "redis query prepared"
        );
        match reply.as_deref() {
            Some("FAILURE") => Err(bb.msg_not_committed()),
            _ => Ok(()),
        }
    }

    /// Runs `busi` with a [`Guarded`] handle; the local transaction is its one guarded
    /// adjustment, which must have been made when `busi` succeeds.
    async fn msg_local<F>(&self, bb: BranchBarrier, busi: F) -> Result<()>
    where
        F: for<'c> FnOnce(&'c mut Guarded<C>) -> BoxFuture<'c, Result<()>> + Send,
    {
        let mut guarded = Guarded {
            store: self.clone(),
            bb,
            state: GuardState::Unused,
        };
        busi(&mut guarded).await?;
        match guarded.state {
            GuardState::Adjusted => Ok(()),
            _ => Err(Error::Config(format!(
                "msg {}: the Redis local transaction made no guarded adjustment (call Guarded::check_adjust_amount once and return its error)",
                guarded.bb.info().gid
            ))),
        }
    }
}

/// What a [`Guarded`] handle has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuardState {
    Unused,
    Adjusted,
    /// Tried and failed (or skipped): the local transaction did not happen.
    Refused,
}

/// What the business of the msg outbox receives on Redis ([`crate::do_and_submit`] with a
/// [`RedisStore`]): the local transaction is the one guarded adjustment made through it,
/// which writes the msg barrier key `<gid>-00-msg-01` atomically with the adjustment.
///
/// ```no_run
/// # async fn outbox(
/// #     dtm: dtmcli::DtmClient,
/// #     redis: dtm_barrier::redis::RedisStore<redis::aio::MultiplexedConnection>,
/// # ) -> dtm_barrier::Result<()> {
/// let msg = dtm.msg("gid-1").add("http://busi/api/TransIn", &30);
/// dtm_barrier::do_and_submit(&msg, "http://busi/api/QueryPrepared", &redis, |guarded| {
///     Box::pin(async move {
///         guarded.check_adjust_amount("account-1", -30).await?;
///         Ok(())
///     })
/// })
/// .await
/// # }
/// ```
#[derive(Debug)]
pub struct Guarded<C> {
    store: RedisStore<C>,
    bb: BranchBarrier,
    state: GuardState,
}

impl<C> Guarded<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// [`BranchBarrier::check_adjust_amount`] under the msg barrier (op `msg`, barrier id
    /// `01`): an insufficient balance is [`dtmcli::Error::Failure`] (the message is
    /// aborted); if DTM's back-check ran first, nothing is adjusted and the call fails with
    /// [`dtmcli::Error::Duplicated`]. Only one adjustment per local transaction: a second
    /// call is refused ([`Error::Config`]), since only the first one is atomic with the
    /// msg barrier key the back-check reads.
    pub async fn check_adjust_amount(&mut self, key: &str, amount: i64) -> Result<Outcome<()>> {
        if self.state != GuardState::Unused {
            return Err(Error::Config(format!(
                "msg {}: a Redis local transaction is one guarded adjustment; a second one is not atomic with the msg barrier key",
                self.bb.info().gid
            )));
        }
        self.state = GuardState::Refused;
        let out = self
            .bb
            .check_adjust_amount(&self.store, key, amount)
            .await?;
        if out.is_executed() {
            self.state = GuardState::Adjusted;
        }
        Ok(out)
    }
}

/// The Redis barrier key of the barrier row for `op` and `bid`: its unique key
/// `<gid>-<branch_id>-<op>-<barrier_id>`.
pub(crate) fn redis_key(bb: &BranchBarrier, op: &str, bid: &str) -> String {
    let row = bb.row(op, bid);
    format!(
        "{}-{}-{}-{}",
        row.gid, row.branch_id, row.op, row.barrier_id
    )
}

/// [`BranchBarrier::check_adjust_amount`]'s script run.
pub(crate) async fn check_adjust_amount<C>(
    bb: &BranchBarrier,
    store: &RedisStore<C>,
    key: &str,
    amount: i64,
) -> Result<Outcome<()>>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    let expire = expire_secs(store.expire)?;
    let bid = bb.next_barrier_id();
    // Keys join the parts with `-`: a `-` in the branch id is refused, so the key reads
    // back as one identity only (origin keys differ by a fixed op word).
    bb.check_identity(&bid, Layout::Dashed)?;
    let op = bb.info().op.as_str();
    let origin = bb.origin_op().unwrap_or("");
    let current_key = redis_key(bb, op, &bid);
    let origin_key = redis_key(bb, origin, &bid);
    let reply: Option<String> = CHECK_ADJUST_AMOUNT
        .key(key)
        .key(&current_key)
        .key(&origin_key)
        .arg(amount)
        .arg(origin)
        .arg(expire)
        .invoke_async(&mut store.conn.clone())
        .await?;
    tracing::debug!(
        gid = %bb.info().gid, branch_id = %bb.info().branch_id, op, bid, key, amount,
        reply = reply.as_deref().unwrap_or("nil"), "redis barrier"
    );
    match reply.as_deref() {
        Some("EXECUTED") => Ok(Outcome::Executed(())),
        Some("FAILURE") => Err(Error::failure(format!(
            "redis key {key:?} is missing or adding {amount} would make it negative"
        ))),
        Some("DUPLICATE") if bb.is_msg() => Err(Error::Dtm(dtmcli::Error::Duplicated)),
        Some("DUPLICATE") => {
            tracing::info!(gid = %bb.info().gid, branch_id = %bb.info().branch_id, op, "duplicate or hanging request: adjustment skipped");
            Ok(Outcome::Duplicate)
        }
        Some("NULL_COMPENSATION") => {
            tracing::info!(gid = %bb.info().gid, branch_id = %bb.info().branch_id, op, "null compensation: adjustment skipped");
            Ok(Outcome::NullCompensation)
        }
        other => Err(Error::Config(format!(
            "unexpected reply {other:?} from the redis barrier script"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_in_whole_seconds() {
        assert_eq!(expire_secs(Duration::from_secs(86400)).ok(), Some(86400));
        assert_eq!(expire_secs(Duration::from_millis(1500)).ok(), Some(2));
        assert_eq!(expire_secs(Duration::from_millis(1)).ok(), Some(1));
        assert!(matches!(expire_secs(Duration::ZERO), Err(Error::Config(_))));
    }

    #[test]
    fn keys_follow_the_go_scheme() {
        let bb = BranchBarrier::new(dtmcli::TransInfo::new(
            "g1",
            dtmcli::TransType::Saga,
            "01",
            dtmcli::Op::Compensate,
        ));
        assert_eq!(redis_key(&bb, "compensate", "01"), "g1-01-compensate-01");
        assert_eq!(redis_key(&bb, "", "02"), "g1-01--02");
    }
}
