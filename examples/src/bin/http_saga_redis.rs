//! Saga over HTTP whose branches keep balances in Redis, guarded by the Redis branch barrier.
//!
//! The scenarios of [`dtm_examples::kv_saga`] (a transfer that succeeds, one that rolls
//! back with a null compensation, and an action DTM calls again) against a real DTM server
//! and Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`). Each branch is one
//! `check_adjust_amount`: the barrier key and the balance change in one Lua script.

use std::time::Duration;

use dtm_barrier::redis::RedisStore;
use dtm_barrier::{BranchBarrier, Outcome};
use dtm_examples::demo::DemoError;
use dtm_examples::kv_saga::{self, Accounts};
use redis::aio::MultiplexedConnection;

/// How long barrier keys live: longer than any transaction.
const EXPIRE: Duration = Duration::from_secs(7 * 86400);

#[derive(Clone)]
struct Redis(RedisStore<MultiplexedConnection>);

impl Accounts for Redis {
    const NAME: &'static str = "redis";

    async fn adjust(
        &self,
        bb: &BranchBarrier,
        key: String,
        delta: i64,
    ) -> dtm_barrier::Result<Outcome<()>> {
        bb.check_adjust_amount(&self.0, &key, delta).await
    }

    async fn open(&self, key: &str, balance: i64) -> Result<(), DemoError> {
        let mut conn = self.0.connection().clone();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(balance)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn balance(&self, key: &str) -> Result<Option<i64>, DemoError> {
        let mut conn = self.0.connection().clone();
        Ok(redis::cmd("GET").arg(key).query_async(&mut conn).await?)
    }
}

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    kv_saga::run(Redis(RedisStore::new(conn, EXPIRE))).await
}
