//! The barrier on Redis: balance-like counters adjusted by one atomic Lua script.
//!
//! Redis has no multi-key transactions with arbitrary business logic, so the Redis barrier
//! guards one operation: add `amount` to an integer key, refusing to go below zero. The
//! script checks the balance, the barrier keys and adjusts the counter atomically, with the
//! keys and values of the Go SDK's `RedisCheckAdjustAmount`, so Go and Rust services can
//! share one Redis:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `<gid>-<branch_id>-<op>-<barrier_id>` | `op` (the literal word) | every executed adjustment and every null compensation |
//! | `<gid>-<branch_id>-<origin op>-<barrier_id>` | `rollback` | a null compensation (cancel / compensate / rollback whose try / action never ran) |
//! | `<gid>-00-msg-01` | `op`, or `rollback` | the msg local transaction ([`do_and_submit_redis`]), or the back-check ([`BranchBarrier::redis_query_prepared`]) that ran first |
//!
//! Before anything is written, the identity is checked ([`dtmcli::identity`]): a branch id
//! with `-` is refused ([`dtmcli::Error::InvalidInput`]), since `g-01`+`01` and `g`+`01-01`
//! would share the key `g-01-01-...`.
//!
//! Every barrier key expires after the `expire` given to the call (choose it longer than any
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
//! use dtm_barrier::{BranchBarrier, Outcome};
//! use redis::aio::MultiplexedConnection;
//!
//! const EXPIRE: Duration = Duration::from_secs(7 * 86400);
//!
//! /// Saga action: take 30 from the account (`query`: the request's query string).
//! async fn trans_out(conn: &mut MultiplexedConnection, query: &str) -> Result<(), dtmcli::Error> {
//!     let bb = BranchBarrier::from_query(query)?;
//!     // Insufficient balance -> Failure (409); a Redis error -> retryable (500).
//!     let outcome = bb.redis_check_adjust_amount(conn, "account-1", -30, EXPIRE).await?;
//!     if outcome == Outcome::Duplicate {
//!         tracing::info!("already done");
//!     }
//!     Ok(())
//! }
//!
//! /// Saga compensation: give the 30 back, unless the action never ran.
//! async fn trans_out_revert(
//!     conn: &mut MultiplexedConnection,
//!     query: &str,
//! ) -> Result<(), dtmcli::Error> {
//!     BranchBarrier::from_query(query)?
//!         .redis_check_adjust_amount(conn, "account-1", 30, EXPIRE)
//!         .await?;
//!     Ok(())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = redis::Client::open("redis://127.0.0.1:6379")?;
//! let mut conn = client.get_multiplexed_async_connection().await?;
//! trans_out(&mut conn, "gid=g1&trans_type=saga&branch_id=01&op=action").await?;
//! trans_out_revert(&mut conn, "gid=g1&trans_type=saga&branch_id=01&op=compensate").await?;
//! # Ok(()) }
//! ```

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::Script;

use crate::barrier::{BranchBarrier, Layout, Outcome};
use crate::error::{Error, Result};

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

impl BranchBarrier {
    /// The Redis barrier key of the barrier row for `op` and `bid`: its unique key
    /// `<gid>-<branch_id>-<op>-<barrier_id>`.
    fn redis_key(&self, op: &str, bid: &str) -> String {
        let row = self.row(op, bid);
        format!(
            "{}-{}-{}-{}",
            row.gid, row.branch_id, row.op, row.barrier_id
        )
    }

    /// Adds `amount` (negative to take) to the integer at `key`, guarded by the barrier, in
    /// one atomic Lua script (barrier id: the next one, `01` on the first call).
    ///
    /// In the script's order (the barrier first, unlike the Go SDK, which checks the balance
    /// first and so never ends a transaction whose credit has to be null-compensated):
    /// 1. the barrier key of this op exists: a duplicate or a hanging request,
    ///    [`Outcome::Duplicate`], or [`dtmcli::Error::Duplicated`] for op `msg` (the msg
    ///    back-check ran first; see [`do_and_submit_redis`]).
    /// 2. cancel / compensate / rollback whose try / action key is missing: the barrier key
    ///    is set to `op`, the origin's to `rollback`, and nothing else happens:
    ///    [`Outcome::NullCompensation`] (a late try / action then finds its key and is a
    ///    duplicate).
    /// 3. `key` missing, or its value + `amount` below zero: nothing is written and the call
    ///    fails with [`dtmcli::Error::Failure`] (DTM rolls the transaction back).
    /// 4. otherwise the barrier key is set to `op` and `INCRBY key amount`:
    ///    [`Outcome::Executed`].
    ///
    /// Barrier keys expire after `expire` (whole seconds, rounded up, at least one).
    /// Redis errors (a non-integer value at `key`...) are [`Error::Redis`].
    pub async fn redis_check_adjust_amount<C>(
        &self,
        conn: &mut C,
        key: &str,
        amount: i64,
        expire: Duration,
    ) -> Result<Outcome<()>>
    where
        C: ConnectionLike + Send,
    {
        let expire = expire_secs(expire)?;
        let bid = self.next_barrier_id();
        // Keys join the parts with `-`: a `-` in the branch id is refused, so the key reads
        // back as one identity only (origin keys differ by a fixed op word).
        self.check_identity(&bid, Layout::Dashed)?;
        let op = self.info().op.as_str();
        let origin = self.origin_op().unwrap_or("");
        let current_key = self.redis_key(op, &bid);
        let origin_key = self.redis_key(origin, &bid);
        let reply: Option<String> = CHECK_ADJUST_AMOUNT
            .key(key)
            .key(&current_key)
            .key(&origin_key)
            .arg(amount)
            .arg(origin)
            .arg(expire)
            .invoke_async(conn)
            .await?;
        tracing::debug!(
            gid = %self.info().gid, branch_id = %self.info().branch_id, op, bid, key, amount,
            reply = reply.as_deref().unwrap_or("nil"), "redis barrier"
        );
        match reply.as_deref() {
            Some("EXECUTED") => Ok(Outcome::Executed(())),
            Some("FAILURE") => Err(Error::failure(format!(
                "redis key {key:?} is missing or adding {amount} would make it negative"
            ))),
            Some("DUPLICATE") if self.is_msg() => Err(Error::Dtm(dtmcli::Error::Duplicated)),
            Some("DUPLICATE") => {
                tracing::info!(gid = %self.info().gid, branch_id = %self.info().branch_id, op, "duplicate or hanging request: adjustment skipped");
                Ok(Outcome::Duplicate)
            }
            Some("NULL_COMPENSATION") => {
                tracing::info!(gid = %self.info().gid, branch_id = %self.info().branch_id, op, "null compensation: adjustment skipped");
                Ok(Outcome::NullCompensation)
            }
            other => Err(Error::Config(format!(
                "unexpected reply {other:?} from the redis barrier script"
            ))),
        }
    }

    /// The msg back-check answer on Redis (DTM's `query_prepared` call, or the SDK's own in
    /// [`do_and_submit_redis`]): sets `<gid>-00-msg-01` to `rollback` (expiring after
    /// `expire`) unless the local transaction already wrote it. `rollback` means the local
    /// transaction never ran (and now never will): [`dtmcli::Error::Failure`]; otherwise
    /// success.
    pub async fn redis_query_prepared<C>(&self, conn: &mut C, expire: Duration) -> Result<()>
    where
        C: ConnectionLike + Send,
    {
        let expire = expire_secs(expire)?;
        self.msg_row().check(Layout::Dashed)?;
        let gid = self.info().gid.as_str();
        let key = format!("{gid}-00-msg-01");
        let reply: Option<String> = QUERY_PREPARED
            .key(&key)
            .arg(expire)
            .invoke_async(conn)
            .await?;
        tracing::debug!(
            gid,
            reply = reply.as_deref().unwrap_or("nil"),
            "redis query prepared"
        );
        match reply.as_deref() {
            Some("FAILURE") => Err(self.msg_not_committed()),
            _ => Ok(()),
        }
    }
}

/// The outbox helper on Redis: [`dtmcli::Msg::do_and_submit`] whose local business is
/// [`BranchBarrier::redis_check_adjust_amount`] of `amount` on `key` under op `msg`, which
/// writes `<gid>-00-msg-01` atomically with the adjustment. The `query_prepared` handler
/// answers with [`BranchBarrier::redis_query_prepared`].
///
/// An insufficient balance aborts the message ([`dtmcli::Error::Failure`]); if DTM's
/// back-check ran first, nothing is adjusted, the message is aborted and the call returns
/// [`dtmcli::Error::Duplicated`].
pub async fn do_and_submit_redis<C>(
    msg: &dtmcli::Msg,
    query_prepared: &str,
    conn: &mut C,
    key: &str,
    amount: i64,
    expire: Duration,
) -> Result<()>
where
    C: ConnectionLike + Send,
{
    msg.do_and_submit(query_prepared, |info| async move {
        BranchBarrier::new(info)
            .redis_check_adjust_amount(conn, key, amount, expire)
            .await
            .map(drop)
            .map_err(dtmcli::Error::from)
    })
    .await
    .map_err(Error::Dtm)
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
        assert_eq!(bb.redis_key("compensate", "01"), "g1-01-compensate-01");
        assert_eq!(bb.redis_key("", "02"), "g1-01--02");
    }
}
