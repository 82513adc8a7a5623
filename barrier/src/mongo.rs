//! The barrier on MongoDB: barrier documents and the business in one multi-document
//! transaction (MongoDB must run as a replica set or sharded cluster).
//!
//! Barrier documents are those of the Go SDK's `MongoCall`: in the collection named by the
//! barrier table (`database.collection`, default `dtm_barrier.barrier`), one document
//! `{trans_type, gid, branch_id, op, barrier_id, reason}` per barrier row, with the unique
//! index `{gid:1, branch_id:1, op:1, barrier_id:1}` ([`create_barrier_index`]).
//!
//! Inside the transaction a barrier document is inserted only if a find in the same session
//! does not see it (the Go SDK's way): a duplicate-key error would abort the whole MongoDB
//! transaction. Two concurrent identical requests both miss the document; the unique index
//! and MongoDB's write-conflict detection make one of them fail with a transient
//! `WriteConflict`, which DTM retries (or `BranchBarrier::mongo_call_reprocessing` re-runs
//! at once); the retry finds the document and is a duplicate.
//!
//! Unlike the Go SDK, a failure to start the transaction is reported, and the workflow
//! `rollback` op is treated like `compensate` (origin op `action`).
//!
//! A guarded saga action:
//!
//! ```no_run
//! use dtm_barrier::{BranchBarrier, Error};
//! use mongodb::bson::doc;
//!
//! /// Takes 30 from account 1 (`query`: the request's query string).
//! async fn trans_out(client: &mongodb::Client, query: &str) -> Result<(), dtmcli::Error> {
//!     let bb = BranchBarrier::from_query(query)?;
//!     bb.mongo_call(client, |session| {
//!         Box::pin(async move {
//!             let accounts = session
//!                 .client()
//!                 .database("dtm_busi")
//!                 .collection::<mongodb::bson::Document>("user_account");
//!             let r = accounts
//!                 .update_one(
//!                     doc! { "user_id": 1, "balance": { "$gte": 30 } },
//!                     doc! { "$inc": { "balance": -30 } },
//!                 )
//!                 .session(&mut *session)
//!                 .await?;
//!             if r.matched_count == 0 {
//!                 // Rolls back the barrier documents too; DTM rolls the saga back.
//!                 return Err(Error::failure("insufficient balance"));
//!             }
//!             Ok(())
//!         })
//!     })
//!     .await?;
//!     Ok(())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = mongodb::Client::with_uri_str("mongodb://127.0.0.1:27017/?replicaSet=rs0").await?;
//! dtm_barrier::mongo::create_barrier_index(&client, &Default::default()).await?;
//! trans_out(&client, "gid=g1&trans_type=saga&branch_id=01&op=action").await?;
//! # Ok(()) }
//! ```

use futures_util::future::BoxFuture;
use mongodb::bson::{doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Client, ClientSession, Collection, IndexModel};

use crate::barrier::{BarrierConfig, BarrierRow, BranchBarrier, Layout, Outcome, TableName};
use crate::error::{Error, Result};

/// MongoDB's `DuplicateKey` error code.
const DUPLICATE_KEY: i32 = 11000;
/// MongoDB's `WriteConflict` error code.
const WRITE_CONFLICT: i32 = 112;
/// How many times a commit whose outcome is unknown is retried before giving up.
const COMMIT_ATTEMPTS: u32 = 3;

/// The server error code of a MongoDB error, if it carries one.
fn error_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        _ => None,
    }
}

/// The barrier collection: the table name split into database and collection.
fn barrier_collection(client: &Client, table: &TableName) -> Result<Collection<Document>> {
    let database = table.schema().ok_or_else(|| {
        Error::Config(format!(
            "the MongoDB barrier table {table:?} must be `database.collection`"
        ))
    })?;
    Ok(client.database(database).collection(table.table()))
}

/// The unique key of a barrier document.
fn barrier_filter(row: &BarrierRow<'_>) -> Document {
    doc! {
        "gid": row.gid,
        "branch_id": row.branch_id,
        "op": row.op,
        "barrier_id": row.barrier_id,
    }
}

/// The barrier document, fields in the Go SDK's order.
fn barrier_document(row: &BarrierRow<'_>) -> Document {
    doc! {
        "trans_type": row.trans_type,
        "gid": row.gid,
        "branch_id": row.branch_id,
        "op": row.op,
        "barrier_id": row.barrier_id,
        "reason": row.reason,
    }
}

/// Inserts the barrier documents inside the session's transaction unless a find in the same
/// transaction sees them: one find for all of them (one round trip), then one insert per
/// missing document. Returns, per row, the number inserted (0 or 1).
async fn insert_barriers_in(
    coll: &Collection<Document>,
    session: &mut ClientSession,
    rows: &[BarrierRow<'_>],
) -> Result<Vec<u64>, mongodb::error::Error> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    // All rows of one call share gid, branch and barrier id; one equality-and-$in query on
    // the unique index's fields finds every one of them.
    let ops: Vec<&str> = rows.iter().map(|r| r.op).collect();
    let filter = if rows.len() == 1 {
        barrier_filter(first)
    } else {
        doc! {
            "gid": first.gid,
            "branch_id": first.branch_id,
            "op": { "$in": ops },
            "barrier_id": first.barrier_id,
        }
    };
    let mut cursor = coll
        .find(filter)
        .projection(doc! { "_id": 0, "op": 1 })
        .session(&mut *session)
        .await?;
    let mut existing = Vec::new();
    while let Some(d) = cursor.next(&mut *session).await {
        if let Ok(op) = d?.get_str("op") {
            existing.push(op.to_string());
        }
    }
    let mut inserted = Vec::with_capacity(rows.len());
    for row in rows {
        if existing.iter().any(|op| op == row.op) {
            inserted.push(0);
            continue;
        }
        coll.insert_one(barrier_document(row))
            .session(&mut *session)
            .await?;
        inserted.push(1);
    }
    Ok(inserted)
}

/// [`insert_barriers_in`] for one row.
async fn insert_barrier_in(
    coll: &Collection<Document>,
    session: &mut ClientSession,
    row: &BarrierRow<'_>,
) -> Result<u64, mongodb::error::Error> {
    Ok(insert_barriers_in(coll, session, std::slice::from_ref(row))
        .await?
        .first()
        .copied()
        .unwrap_or(0))
}

/// Creates the unique index `{gid:1, branch_id:1, op:1, barrier_id:1}` of the barrier
/// collection (as the Go SDK's `dtmcli.barrier.mongo.js`); a no-op when it exists.
/// The barrier relies on it to refuse concurrent duplicates.
pub async fn create_barrier_index(client: &Client, table: &TableName) -> Result<()> {
    let coll = barrier_collection(client, table)?;
    let index = IndexModel::builder()
        .keys(doc! { "gid": 1, "branch_id": 1, "op": 1, "barrier_id": 1 })
        .options(IndexOptions::builder().unique(true).build())
        .build();
    coll.create_index(index).await?;
    Ok(())
}

/// True when `e` says the MongoDB transaction was aborted by a conflict and re-running the
/// whole guarded call ([`BranchBarrier::mongo_call`]) may succeed: a `WriteConflict`, or an
/// error MongoDB labels `TransientTransactionError`. DTM retries such branch errors anyway;
/// this is for callers that retry at once.
pub fn is_transient(e: &Error) -> bool {
    match e {
        Error::Mongo(m) => {
            m.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR)
                || error_code(m) == Some(WRITE_CONFLICT)
        }
        _ => false,
    }
}

/// Commits, retrying a commit whose outcome is unknown (commitTransaction is idempotent);
/// if it stays unknown, [`Error::AmbiguousCommit`].
async fn commit(session: &mut ClientSession) -> Result<()> {
    let mut attempt = 1;
    loop {
        match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(e)
                if e.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    && attempt < COMMIT_ATTEMPTS =>
            {
                tracing::warn!(error = %e, attempt, "commit outcome unknown: retrying the commit");
                attempt += 1;
            }
            Err(e) if e.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT) => {
                return Err(Error::AmbiguousCommit(Box::new(Error::Mongo(e))));
            }
            Err(e) => return Err(Error::Mongo(e)),
        }
    }
}

async fn abort(session: &mut ClientSession) {
    if let Err(e) = session.abort_transaction().await {
        tracing::debug!(error = %e, "abort of the MongoDB transaction failed; the server drops it anyway");
    }
}

/// Why a guarded transaction failed, and whether re-running it is safe.
struct Failed {
    error: Error,
    /// The barrier insert met a concurrent identical request (duplicate key): the
    /// transaction is aborted, and a re-run finds the other request's document.
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

fn barrier_insert_error(e: mongodb::error::Error) -> Failed {
    let barrier_race = error_code(&e) == Some(DUPLICATE_KEY);
    Failed {
        error: Error::Mongo(e),
        barrier_race,
    }
}

impl BranchBarrier {
    /// The barrier algorithm inside the session's open transaction, with barrier id `bid`.
    async fn mongo_guard<T, F>(
        &self,
        coll: &Collection<Document>,
        session: &mut ClientSession,
        bid: &str,
        busi: F,
    ) -> Result<Outcome<T>, Failed>
    where
        F: for<'s> FnOnce(&'s mut ClientSession) -> BoxFuture<'s, Result<T>>,
    {
        let op = self.info().op.as_str();
        let (origin_affected, current_affected) = match self.origin_op() {
            Some(origin) => {
                let rows = [self.row(origin, bid), self.row(op, bid)];
                let n = insert_barriers_in(coll, session, &rows)
                    .await
                    .map_err(barrier_insert_error)?;
                (
                    n.first().copied().unwrap_or(0),
                    n.get(1).copied().unwrap_or(0),
                )
            }
            None => (
                0,
                insert_barrier_in(coll, session, &self.row(op, bid))
                    .await
                    .map_err(barrier_insert_error)?,
            ),
        };
        tracing::debug!(
            gid = %self.info().gid, branch_id = %self.info().branch_id, op, bid,
            origin_affected, current_affected, "mongo barrier documents"
        );
        if self.is_msg() && current_affected == 0 {
            return Err(Error::Dtm(dtmcli::Error::Duplicated).into());
        }
        if self.origin_op().is_some() && origin_affected > 0 {
            tracing::info!(gid = %self.info().gid, branch_id = %self.info().branch_id, op, "null compensation: business skipped");
            return Ok(Outcome::NullCompensation);
        }
        if current_affected == 0 {
            tracing::info!(gid = %self.info().gid, branch_id = %self.info().branch_id, op, "duplicate or hanging request: business skipped");
            return Ok(Outcome::Duplicate);
        }
        Ok(busi(session).await.map(Outcome::Executed)?)
    }

    /// One attempt: session, transaction, guard, commit or abort.
    async fn mongo_attempt<T, F>(
        &self,
        client: &Client,
        coll: &Collection<Document>,
        bid: &str,
        busi: F,
    ) -> Result<Outcome<T>, Failed>
    where
        F: for<'s> FnOnce(&'s mut ClientSession) -> BoxFuture<'s, Result<T>>,
    {
        let mut session = client.start_session().await.map_err(Error::Mongo)?;
        session.start_transaction().await.map_err(Error::Mongo)?;
        match self.mongo_guard(coll, &mut session, bid, busi).await {
            Ok(out) => {
                commit(&mut session).await?;
                Ok(out)
            }
            Err(f) => {
                abort(&mut session).await;
                Err(f)
            }
        }
    }

    /// Runs `busi` guarded by the barrier in one MongoDB transaction: starts a session and a
    /// transaction on `client`, writes the barrier documents (the same algorithm as the SQL
    /// barrier's `call`), runs `busi` with the session (pass it to every operation
    /// with `.session(&mut *session)`), then commits, or aborts if anything failed.
    ///
    /// A commit whose outcome stays unknown after retries is [`Error::AmbiguousCommit`];
    /// the business is never re-run by this call. A concurrent identical request may make
    /// this call fail with a transient write conflict ([`Error::Mongo`], retryable for DTM);
    /// [`is_transient`] tells it, and `BranchBarrier::mongo_call_reprocessing` re-runs the
    /// transaction on it.
    pub async fn mongo_call<T, F>(&self, client: &Client, busi: F) -> Result<Outcome<T>>
    where
        F: for<'s> FnOnce(&'s mut ClientSession) -> BoxFuture<'s, Result<T>>,
    {
        let coll = barrier_collection(client, &self.config().table)?;
        let bid = self.next_barrier_id();
        self.check_identity(&bid, Layout::Columns)?;
        self.mongo_attempt(client, &coll, &bid, busi)
            .await
            .map_err(|f| f.error)
    }

    /// Like [`BranchBarrier::mongo_call`], but when the transaction fails with a write
    /// conflict, an error labelled `TransientTransactionError`, or a duplicate-key error on
    /// a barrier document (a concurrent identical request), the whole transaction (barrier
    /// documents included) is run again with the same barrier id, up to the policy's
    /// attempts, with backoff. A commit whose outcome is unknown is never re-run
    /// ([`Error::AmbiguousCommit`]). `busi` must therefore be callable more than once.
    pub async fn mongo_call_reprocessing<T, F>(
        &self,
        client: &Client,
        policy: &crate::reprocess::ReprocessPolicy,
        mut busi: F,
    ) -> Result<Outcome<T>>
    where
        F: for<'s> FnMut(&'s mut ClientSession) -> BoxFuture<'s, Result<T>>,
    {
        let coll = barrier_collection(client, &self.config().table)?;
        let bid = self.next_barrier_id();
        self.check_identity(&bid, Layout::Columns)?;
        let mut attempt = 1;
        loop {
            let failed = match self.mongo_attempt(client, &coll, &bid, &mut busi).await {
                Ok(out) => return Ok(out),
                Err(f) => f,
            };
            let retry = failed.barrier_race || is_transient(&failed.error);
            if !retry || attempt >= policy.max_attempts {
                return Err(failed.error);
            }
            let wait = policy.backoff(attempt);
            tracing::warn!(
                gid = %self.info().gid, branch_id = %self.info().branch_id, attempt,
                error = %failed.error, ?wait, "transient MongoDB error: re-running the transaction"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The msg back-check answer on MongoDB (DTM's `query_prepared` call, or the SDK's own
    /// in [`do_and_submit_mongo`]): inserts the document `(gid, 00, msg, 01)` with reason
    /// `rollback` unless the local transaction already wrote it, then reads it back.
    /// `rollback` means the local transaction never committed (and now never will):
    /// [`dtmcli::Error::Failure`]; otherwise success.
    pub async fn mongo_query_prepared(&self, client: &Client) -> Result<()> {
        let table = &self.config().table;
        let coll = barrier_collection(client, table)?;
        let row = self.msg_row();
        row.check(Layout::Columns)?;
        // Outside a transaction a duplicate key is harmless: the document exists.
        match coll.insert_one(barrier_document(&row)).await {
            Ok(_) => {}
            Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => {}
            Err(e) => return Err(e.into()),
        }
        let found = coll.find_one(barrier_filter(&row)).await?;
        let reason = found
            .as_ref()
            .map(|d| d.get_str("reason").unwrap_or_default());
        tracing::debug!(gid = row.gid, ?reason, "mongo query prepared");
        self.msg_verdict(reason, table)
    }
}

/// The outbox helper on MongoDB: [`dtmcli::Msg::do_and_submit`] whose local business runs
/// guarded by the barrier document `(gid, 00, msg, 01)` in one MongoDB transaction
/// ([`BranchBarrier::mongo_call`]). If DTM's back-check ran first, the transaction is
/// aborted with [`dtmcli::Error::Duplicated`] and the message aborted. The `query_prepared`
/// handler answers with [`BranchBarrier::mongo_query_prepared`].
pub async fn do_and_submit_mongo<F>(
    msg: &dtmcli::Msg,
    query_prepared: &str,
    client: &Client,
    config: &BarrierConfig,
    busi: F,
) -> Result<()>
where
    F: for<'s> FnOnce(&'s mut ClientSession) -> BoxFuture<'s, Result<()>>,
{
    msg.do_and_submit(query_prepared, |info| async move {
        BranchBarrier::with_config(info, config.clone())
            .mongo_call(client, busi)
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
    fn documents_have_the_go_fields_in_order() {
        let row = BarrierRow {
            trans_type: "saga",
            gid: "g",
            branch_id: "01",
            op: "action",
            barrier_id: "01",
            reason: "compensate",
        };
        let d = barrier_document(&row);
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "trans_type",
                "gid",
                "branch_id",
                "op",
                "barrier_id",
                "reason"
            ]
        );
        assert_eq!(d.get_str("reason").ok(), Some("compensate"));
    }

    #[tokio::test]
    async fn table_needs_a_database() {
        // No connection is made until an operation runs.
        let client = Client::with_uri_str("mongodb://127.0.0.1:1").await.unwrap();
        let bare = TableName::new("barrier").unwrap();
        assert!(matches!(
            barrier_collection(&client, &bare),
            Err(Error::Config(_))
        ));
        let coll = barrier_collection(&client, &TableName::default()).unwrap();
        assert_eq!(coll.namespace().to_string(), "dtm_barrier.barrier");
    }
}
