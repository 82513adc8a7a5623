//! Barrier retention: removing the rows of transactions DTM has finished, so that a barrier
//! table does not grow forever (DTM's users ask for it: dtm#389).
//!
//! [`purge`] walks the barrier rows in insertion order, in batches, and asks DTM about each
//! transaction a batch names (`query`, which changes nothing). The rows of a transaction are
//! deleted (one short statement per batch) only when DTM holds it final (`succeed` or
//! `failed`) and it ended at least [`Retention::keep`] ago (its `finish_time` or
//! `rollback_time`); the rows of a transaction DTM has not finished stay, whatever their
//! age, and so do those of a gid DTM does not know, unless [`Retention::remove_unknown`].
//! Rows younger than `keep` (by their own `create_time`, or MongoDB's `_id`) cannot belong
//! to a transaction that ended before that: a batch of them ends the walk. Safe while
//! transactions run: a transaction DTM holds final gets no more branch calls from DTM.
//!
//! **What a very late request can do once its rows are gone.** The rows are what makes a
//! repeated request harmless: a duplicate action or compensation, a compensation before its
//! action (null compensation), an action after its compensation (a hanging request). DTM
//! sends none of these once a transaction is final, so only a request that was already in
//! flight, held somewhere (a proxy's queue, a paused process) for longer than `keep` after
//! the transaction ended, could arrive after its rows were removed; the barrier would then
//! take it for a first call and run its business again. The default `keep` of 7 days is
//! far beyond any such delay (DTM's calls time out after seconds, this SDK's after
//! 30 s by default) and matches DTM's own `DataExpire` (7 days) for the transactions it
//! keeps on its Redis store. Redis barrier keys expire by themselves (the Go SDK's 7 days):
//! nothing to purge there.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, SystemTime};

use dtmcli::{TransStatus, Transport};
use futures_util::StreamExt;

use crate::barrier::TableName;
use crate::error::Result;

/// What [`purge`] keeps and how it walks the table. Build it with `..Default::default()`.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Keep the rows of a transaction for this long after DTM ended it (default 7 days; see
    /// the module docs for why).
    pub keep: Duration,
    /// Rows read per batch, and the most gids deleted by one statement (default 500).
    pub batch: usize,
    /// The most batches one call reads (default 1,000): a purge run is bounded; call it
    /// again (a job every hour) to go on.
    pub max_batches: usize,
    /// Also remove the rows of gids DTM does not know, when the rows themselves are older
    /// than `keep` (default: no). DTM on its boltdb or Redis store forgets finished
    /// transactions after `FinishedDataExpire` (1 day): there, their rows can only go this
    /// way. Wrong when `dtm` is not the server the barrier's transactions belong to.
    pub remove_unknown: bool,
    /// The barrier table (default `dtm_barrier.barrier`; `database.collection` on MongoDB).
    pub table: TableName,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep: Duration::from_secs(7 * 24 * 3600),
            batch: 500,
            max_batches: 1_000,
            remove_unknown: false,
            table: TableName::default(),
        }
    }
}

/// What a [`purge`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Purged {
    /// Barrier rows read.
    pub rows_read: u64,
    /// Barrier rows deleted.
    pub rows_deleted: u64,
    /// Transactions whose rows were deleted.
    pub gids_deleted: u64,
    /// Transactions kept because DTM has not finished them.
    pub kept_unfinished: u64,
    /// Transactions kept because DTM ended them less than `keep` ago.
    pub kept_recent: u64,
    /// Gids kept because DTM does not know them.
    pub kept_unknown: u64,
    /// True when the walk reached rows younger than `keep`, or the end of the table; false
    /// when it stopped at `max_batches`.
    pub complete: bool,
}

/// One barrier row as the walk reads it.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct ScannedRow {
    /// Where the walk goes on from (the row's id, or MongoDB's `_id`).
    pub cursor: Cursor,
    /// Its gid.
    pub gid: String,
    /// Its own age: `Some(true)` older than `keep`, `Some(false)` younger, `None` unknown
    /// (PostgreSQL rows the Go SDK wrote, which have no `create_time`).
    pub old: Option<bool>,
}

/// A position in the walk.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub enum Cursor {
    /// Before the first row.
    Start,
    /// A SQL row id.
    Id(i64),
    /// A MongoDB `_id`.
    #[cfg(feature = "mongodb")]
    Object(mongodb::bson::Bson),
}

/// One batch of the walk: up to `n` rows of `table` after `after`, aged against `keep`.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Scan<'a> {
    /// The barrier table.
    pub table: &'a TableName,
    /// Where the batch starts (exclusive).
    pub after: &'a Cursor,
    /// The age that makes a row old.
    pub keep: Duration,
    /// The most rows.
    pub n: usize,
}

/// A store whose barrier rows [`purge`] can remove: the SQL pools and the MongoDB client.
pub trait RetentionStore: crate::store::sealed::Sealed + Send + Sync {
    /// The rows `at` asks for, in insertion order, each with its age.
    #[doc(hidden)]
    fn scan(&self, at: Scan<'_>) -> impl Future<Output = Result<Vec<ScannedRow>>> + Send;

    /// Deletes every row of `gids`; returns how many.
    #[doc(hidden)]
    fn delete(
        &self,
        table: &TableName,
        gids: &[String],
    ) -> impl Future<Output = Result<u64>> + Send;
}

/// What DTM says of one transaction.
enum Verdict {
    Remove,
    Unfinished,
    Recent,
    Unknown,
}

/// Removes the barrier rows of transactions DTM (`dtm`, any transport that reads `query`)
/// ended at least `retention.keep` ago, in batches (see the module docs).
pub async fn purge<S, T>(store: &S, dtm: &T, retention: &Retention) -> Result<Purged>
where
    S: RetentionStore,
    T: Transport,
{
    let batch = retention.batch.max(1);
    let mut done = Purged::default();
    let mut cursor = Cursor::Start;
    for _ in 0..retention.max_batches {
        let at = Scan {
            table: &retention.table,
            after: &cursor,
            keep: retention.keep,
            n: batch,
        };
        let rows = store.scan(at).await?;
        done.rows_read += rows.len() as u64;
        let Some(last) = rows.last() else {
            done.complete = true;
            return Ok(done);
        };
        cursor = last.cursor.clone();
        // A gid is worth asking about when one of its rows is old or of unknown age.
        let mut ages: BTreeMap<&str, bool> = BTreeMap::new();
        for r in &rows {
            let entry = ages.entry(r.gid.as_str()).or_insert(false);
            *entry |= r.old != Some(false);
        }
        let candidates: Vec<String> = ages
            .iter()
            .filter(|(_, c)| **c)
            .map(|(g, _)| g.to_string())
            .collect();
        if candidates.is_empty() && rows.iter().all(|r| r.old == Some(false)) {
            // Insertion order is age order: the rest is younger still.
            done.complete = true;
            return Ok(done);
        }
        let mut verdicts = Vec::with_capacity(candidates.len());
        let mut asks = futures_util::stream::iter(candidates.into_iter().map(|gid| {
            let ask = verdict(dtm, gid.clone(), retention);
            async move { (gid, ask.await) }
        }))
        .buffer_unordered(8);
        while let Some(v) = asks.next().await {
            verdicts.push(v);
        }
        let mut remove = BTreeSet::new();
        for (gid, v) in verdicts {
            match v? {
                Verdict::Remove => {
                    remove.insert(gid);
                }
                Verdict::Unfinished => done.kept_unfinished += 1,
                Verdict::Recent => done.kept_recent += 1,
                Verdict::Unknown => {
                    let old = rows.iter().any(|r| r.gid == gid && r.old == Some(true));
                    if retention.remove_unknown && old {
                        remove.insert(gid);
                    } else {
                        done.kept_unknown += 1;
                    }
                }
            }
        }
        let remove: Vec<String> = remove.into_iter().collect();
        for chunk in remove.chunks(batch) {
            done.rows_deleted += store.delete(&retention.table, chunk).await?;
            done.gids_deleted += chunk.len() as u64;
        }
        tracing::debug!(
            rows = rows.len(),
            deleted = remove.len(),
            "barrier retention: one batch"
        );
    }
    Ok(done)
}

/// What DTM holds of `gid`, against `retention`.
async fn verdict<T: Transport>(dtm: &T, gid: String, retention: &Retention) -> Result<Verdict> {
    let Some(t) = dtm.query(&gid).await?.transaction else {
        return Ok(Verdict::Unknown);
    };
    let ended = match t.status() {
        TransStatus::Succeed => t.finish_time.as_deref(),
        TransStatus::Failed => t.rollback_time.as_deref().or(t.finish_time.as_deref()),
        _ => return Ok(Verdict::Unfinished),
    };
    if retention.keep.is_zero() {
        return Ok(Verdict::Remove);
    }
    // A final transaction without a readable end time is kept: its age is not known.
    let Some(ended) = ended.and_then(parse_time) else {
        return Ok(Verdict::Recent);
    };
    let age = SystemTime::now().duration_since(ended).unwrap_or_default();
    Ok(if age >= retention.keep {
        Verdict::Remove
    } else {
        Verdict::Recent
    })
}

/// A time DTM wrote (RFC 3339).
fn parse_time(text: &str) -> Option<SystemTime> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.into())
}

/// `keep` in whole seconds for SQL, at most 100 years (no overflow in the database).
#[cfg(any(feature = "mysql", feature = "postgres"))]
fn keep_secs(keep: Duration) -> i64 {
    keep.as_secs().min(100 * 365 * 24 * 3600) as i64
}

/// [`RetentionStore`] for a sqlx pool, from its two statements: the scan (binds: `keep` in
/// seconds, the id after, the limit; columns: id, gid, age class 1 old / 0 young / 2
/// unknown) and the delete's placeholder for the `n`-th gid.
#[cfg(any(feature = "mysql", feature = "postgres"))]
macro_rules! sql_retention {
    ($pool:ty, scan: $scan:literal, mark: $mark:expr) => {
        impl RetentionStore for $pool {
            async fn scan(&self, at: Scan<'_>) -> Result<Vec<ScannedRow>> {
                use sqlx::Row;
                let (table, after, keep, n) = (at.table, at.after, at.keep, at.n);
                let after = match after {
                    Cursor::Id(id) => *id,
                    _ => i64::MIN,
                };
                let rows = sqlx::query(&format!($scan, t = table))
                    .bind(keep_secs(keep))
                    .bind(after)
                    .bind(i64::try_from(n).unwrap_or(i64::MAX))
                    .fetch_all(self)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let class: i64 = r.try_get(2)?;
                        Ok(ScannedRow {
                            cursor: Cursor::Id(r.try_get(0)?),
                            gid: r.try_get(1)?,
                            old: match class {
                                1 => Some(true),
                                0 => Some(false),
                                _ => None,
                            },
                        })
                    })
                    .collect()
            }

            async fn delete(&self, table: &TableName, gids: &[String]) -> Result<u64> {
                if gids.is_empty() {
                    return Ok(0);
                }
                let mark: fn(usize) -> String = $mark;
                let marks: Vec<String> = (1..=gids.len()).map(mark).collect();
                let sql = format!("delete from {table} where gid in ({})", marks.join(","));
                let mut q = sqlx::query(&sql);
                for g in gids {
                    q = q.bind(g.as_str());
                }
                Ok(q.execute(self).await?.rows_affected())
            }
        }
    };
}

#[cfg(feature = "mysql")]
sql_retention!(
    sqlx::MySqlPool,
    scan: "select id, convert(gid using utf8mb4), cast(case when create_time is null then 2 \
           when create_time < date_sub(now(), interval ? second) then 1 else 0 end as signed) \
           from {t} where id > ? order by id limit ?",
    mark: |_| "?".to_string()
);

#[cfg(feature = "postgres")]
sql_retention!(
    sqlx::PgPool,
    scan: "select id, gid, (case when create_time is null then 2 \
           when create_time < now() - make_interval(secs => $1::double precision) then 1 else 0 end)::bigint \
           from {t} where id > $2 order by id limit $3",
    mark: |i| format!("${i}")
);

#[cfg(feature = "mongodb")]
mod mongo {
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId, Bson, Document};

    impl RetentionStore for mongodb::Client {
        async fn scan(&self, at: Scan<'_>) -> Result<Vec<ScannedRow>> {
            let (table, after, keep, n) = (at.table, at.after, at.keep, at.n);
            let coll = crate::mongo::collection(self, table)?;
            let filter = match after {
                Cursor::Object(id) => doc! { "_id": { "$gt": id.clone() } },
                _ => doc! {},
            };
            let cutoff = SystemTime::now()
                .checked_sub(keep)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let mut cur = coll
                .find(filter)
                .sort(doc! { "_id": 1 })
                .limit(i64::try_from(n).unwrap_or(i64::MAX))
                .projection(doc! { "_id": 1, "gid": 1 })
                .await?;
            let mut rows = Vec::new();
            while let Some(d) = cur.next().await {
                let d: Document = d?;
                let id = d.get("_id").cloned().unwrap_or(Bson::Null);
                // An ObjectId carries its creation second; another _id says nothing.
                let old = match &id {
                    Bson::ObjectId(oid) => Some(created(oid) < cutoff),
                    _ => None,
                };
                let gid = d.get_str("gid").unwrap_or_default().to_string();
                rows.push(ScannedRow {
                    cursor: Cursor::Object(id),
                    gid,
                    old,
                });
            }
            Ok(rows)
        }

        async fn delete(&self, table: &TableName, gids: &[String]) -> Result<u64> {
            let coll = crate::mongo::collection(self, table)?;
            let r = coll.delete_many(doc! { "gid": { "$in": gids } }).await?;
            Ok(r.deleted_count)
        }
    }

    fn created(oid: &ObjectId) -> SystemTime {
        oid.timestamp().to_system_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_times() {
        let r = Retention::default();
        assert_eq!(r.keep, Duration::from_secs(604_800));
        assert!(!r.remove_unknown);
        assert!(parse_time("2026-12-08T00:05:45.666734946Z").is_some());
        assert!(parse_time("2026-12-08T08:05:45+08:00").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
