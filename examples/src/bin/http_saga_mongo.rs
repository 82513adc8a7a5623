//! Saga over HTTP whose branches keep balances in MongoDB, each branch one MongoDB
//! transaction guarded by the MongoDB branch barrier.
//!
//! The scenarios of [`dtm_examples::kv_saga`] (a transfer that succeeds, one that rolls
//! back with a null compensation, and an action DTM calls again) against a real DTM server
//! and MongoDB (`MONGO_URL`, default `mongodb://127.0.0.1:27017/?directConnection=true`; a
//! replica set, for transactions). When a debit would go negative, its transaction and its
//! barrier document are rolled back together.

use dtm_barrier::{BranchBarrier, Outcome, TableName};
use dtm_examples::demo::DemoError;
use dtm_examples::kv_saga::{self, Accounts};
use mongodb::bson::{doc, Document};
use mongodb::{Client, ClientSession, Collection};

fn accounts(client: &Client) -> Collection<Document> {
    client.database("dtm_busi").collection("example_account")
}

/// The business: add `delta` to the account `key`, inside the session's transaction.
async fn adjust(s: &mut ClientSession, key: &str, delta: i64) -> dtm_barrier::Result<()> {
    let r = accounts(&s.client())
        .update_one(
            doc! {"_id": key, "balance": {"$gte": -delta}},
            doc! {"$inc": {"balance": delta}},
        )
        .session(&mut *s)
        .await?;
    if r.matched_count == 0 {
        return Err(dtm_barrier::Error::failure(format!(
            "account {key}: missing, or adding {delta} would make it negative"
        )));
    }
    Ok(())
}

#[derive(Clone)]
struct Mongo(Client);

impl Accounts for Mongo {
    const NAME: &'static str = "mongo";

    async fn adjust(
        &self,
        bb: &BranchBarrier,
        key: String,
        delta: i64,
    ) -> dtm_barrier::Result<Outcome<()>> {
        bb.call(&self.0, move |s| {
            Box::pin(async move { adjust(s, &key, delta).await })
        })
        .await
    }

    async fn open(&self, key: &str, balance: i64) -> Result<(), DemoError> {
        accounts(&self.0)
            .insert_one(doc! {"_id": key, "balance": balance})
            .await?;
        Ok(())
    }

    async fn balance(&self, key: &str) -> Result<Option<i64>, DemoError> {
        let d = accounts(&self.0).find_one(doc! {"_id": key}).await?;
        Ok(d.and_then(|d| d.get_i64("balance").ok()))
    }
}

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let url = std::env::var("MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into());
    let client = Client::with_uri_str(&url).await?;
    // The unique index the barrier relies on (dtm_barrier.barrier), as Go's mongo.js.
    dtm_barrier::mongo::create_barrier_index(&client, &TableName::default()).await?;
    kv_saga::run(Mongo(client)).await
}
