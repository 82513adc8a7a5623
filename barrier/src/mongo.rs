//! The barrier on MongoDB: barrier documents and the business in one multi-document
//! transaction (MongoDB must run as a replica set or sharded cluster).
//!
//! A [`mongodb::Client`] is a [`TransactionalStore`]: [`BranchBarrier::call`] starts a
//! session and a transaction on it, and the business closure receives the
//! [`ClientSession`] (pass it to every operation with `.session(&mut *session)`).
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
//! `WriteConflict`, which DTM retries (or [`BranchBarrier::call_reprocessing`] re-runs at
//! once); the retry finds the document and is a duplicate.
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
//!     bb.call(client, |session| {
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

use crate::barrier::{BarrierRow, BranchBarrier, Layout, TableName};
use crate::error::{Error, Result};
use crate::store::{msg_local_call, sealed, BarrierStore, TransactionalStore};

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

/// The database of the barrier collection: the table name's schema part.
fn barrier_database(table: &TableName) -> Result<&str> {
    table.schema().ok_or_else(|| {
        Error::Config(format!(
            "the MongoDB barrier table {table:?} must be `database.collection`"
        ))
    })
}

/// The barrier collection: the table name split into database and collection.
pub(crate) fn collection(client: &Client, table: &TableName) -> Result<Collection<Document>> {
    barrier_collection(client, table)
}

fn barrier_collection(client: &Client, table: &TableName) -> Result<Collection<Document>> {
    Ok(client
        .database(barrier_database(table)?)
        .collection(table.table()))
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

impl sealed::Sealed for Client {}

impl BarrierStore for Client {
    type Conn = ClientSession;

    async fn back_check(&self, bb: &BranchBarrier) -> Result<()> {
        let table = &bb.config().table;
        let coll = barrier_collection(self, table)?;
        let row = bb.msg_row();
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
        bb.msg_verdict(reason, table)
    }

    async fn msg_local<F>(&self, bb: BranchBarrier, busi: F) -> Result<()>
    where
        F: for<'c> FnOnce(&'c mut Self::Conn) -> BoxFuture<'c, Result<()>> + Send,
    {
        msg_local_call(self, bb, busi).await
    }
}

impl TransactionalStore for Client {
    /// A `WriteConflict`, or an error MongoDB labels `TransientTransactionError`.
    fn is_transient(error: &Error) -> bool {
        match error {
            Error::Mongo(m) => {
                m.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR)
                    || error_code(m) == Some(WRITE_CONFLICT)
            }
            _ => false,
        }
    }

    type Tx = ClientSession;

    fn check_table(table: &TableName) -> Result<()> {
        barrier_database(table).map(drop)
    }

    async fn begin_local(&self) -> Result<ClientSession> {
        let mut session = self.start_session().await?;
        session.start_transaction().await?;
        Ok(session)
    }

    fn local_conn(tx: &mut ClientSession) -> &mut ClientSession {
        tx
    }

    async fn insert_barrier_rows<'a>(
        session: &'a mut ClientSession,
        table: &'a TableName,
        origin: Option<BarrierRow<'a>>,
        current: BarrierRow<'a>,
    ) -> Result<(u64, u64)> {
        let coll = barrier_collection(&session.client(), table)?;
        Ok(match origin {
            Some(origin) => {
                let n = insert_barriers_in(&coll, session, &[origin, current]).await?;
                (
                    n.first().copied().unwrap_or(0),
                    n.get(1).copied().unwrap_or(0),
                )
            }
            None => {
                let n = insert_barriers_in(&coll, session, &[current]).await?;
                (0, n.first().copied().unwrap_or(0))
            }
        })
    }

    /// A concurrent identical request inserted the document first (duplicate key): the
    /// transaction is aborted, and a re-run finds the other request's document.
    fn is_barrier_race(error: &Error) -> bool {
        matches!(error, Error::Mongo(e) if error_code(e) == Some(DUPLICATE_KEY))
    }

    async fn commit_local(mut tx: ClientSession) -> Result<()> {
        commit(&mut tx).await
    }

    async fn rollback_local(mut tx: ClientSession) {
        if let Err(e) = tx.abort_transaction().await {
            tracing::debug!(error = %e, "abort of the MongoDB transaction failed; the server drops it anyway");
        }
    }
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
