//! Saga over HTTP whose branches keep balances in MongoDB, each branch one MongoDB
//! transaction guarded by the MongoDB branch barrier (`bb.call(&client, ..)` around the
//! update: [`dtm_examples::kv_saga::Balances`] for `mongodb::Client`).
//!
//! The scenarios of [`dtm_examples::kv_saga`] (a transfer that succeeds, one that rolls
//! back with a null compensation, and an action DTM calls again) against a real DTM server
//! and MongoDB (`MONGO_URL`, default `mongodb://127.0.0.1:27017/?directConnection=true`; a
//! replica set, for transactions). When a debit would go negative, its transaction and its
//! barrier document are rolled back together.

use dtm_barrier::TableName;
use dtm_examples::demo::DemoError;
use dtm_examples::kv_saga;
use mongodb::Client;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let url = std::env::var("MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into());
    let client = Client::with_uri_str(&url).await?;
    // The unique index the barrier relies on (dtm_barrier.barrier), as Go's mongo.js.
    dtm_barrier::mongo::create_barrier_index(&client, &TableName::default()).await?;
    kv_saga::run(client).await
}
