//! Saga over HTTP whose branches keep balances in Redis, guarded by the Redis branch barrier.
//!
//! The scenarios of [`dtm_examples::kv_saga`] (a transfer that succeeds, one that rolls
//! back with a null compensation, and an action DTM calls again) against a real DTM server
//! and Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`). Each branch is one
//! `check_adjust_amount` ([`dtm_examples::kv_saga::Balances`] for `RedisStore`): the
//! barrier key and the balance change in one Lua script.

use std::time::Duration;

use dtm_barrier::redis::RedisStore;
use dtm_examples::demo::DemoError;
use dtm_examples::kv_saga;

/// How long barrier keys live: longer than any transaction.
const EXPIRE: Duration = Duration::from_secs(7 * 86400);

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    kv_saga::run(RedisStore::new(conn, EXPIRE)).await
}
