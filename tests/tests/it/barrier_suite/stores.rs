//! The four barrier stores as fixtures of the generic suite: how to connect for the current
//! test's runtime, where each one's guarded service lives, and its barrier rows in one form.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

use dtm_barrier::mongo::create_barrier_index;
use dtm_barrier::redis::RedisStore;
use dtm_barrier::retention::{Purged, Retention};
use dtm_barrier::sql::create_barrier_table;
use dtm_barrier::{BranchBarrier, Error, Outcome, TableName, TransactionalStore};
use dtm_examples::bank::{mysql_url, pg_url};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use redis::aio::MultiplexedConnection;
use sqlx::{MySqlPool, PgPool};

use super::service::{self, Balances};

/// Barrier key expiry of the Redis store in the tests.
pub const REDIS_EXPIRE: Duration = Duration::from_secs(3600);

/// A barrier store under test: [`Balances`] (the business) plus what the suite reads back.
pub trait Store: Balances + Send + Sync {
    /// Where its guarded service answers (one service per store, shared by the binary).
    const PATH: &'static str;
    /// True when identical concurrent requests wait for each other (SQL row locks, Redis's
    /// one script) instead of failing transiently (MongoDB's write conflicts).
    const SERIALIZES_DUPLICATES: bool;

    /// A client for the current test's runtime, with the barrier table or index in place.
    fn connect() -> impl Future<Output = Self> + 'static;

    /// The barrier rows of `gid`, sorted, each as [`Store::row`] writes it.
    fn rows(&self, gid: &str) -> impl Future<Output = Vec<String>> + Send;

    /// One barrier row in the suite's form: `trans_type/branch/op/barrier_id=reason` where
    /// the store keeps them (SQL, MongoDB). `key` is `branch/op/barrier_id`.
    fn row(trans_type: &str, key: &str, reason: &str) -> String {
        format!("{trans_type}/{key}={reason}")
    }

    /// Runs the business inside the barrier's local transaction and then fails with
    /// `error`; `None` on a store without local transactions (Redis).
    fn write_then_fail(
        &self,
        bb: BranchBarrier,
        key: String,
        delta: i64,
        error: Error,
    ) -> Option<impl Future<Output = dtm_barrier::Result<Outcome<()>>> + Send>;

    /// True when `e` ends a local transaction that the same request may retry.
    fn is_transient(e: &Error) -> bool;

    /// The URL of `handler` on the store's guarded service (started on first use).
    fn url(handler: &str) -> String {
        service::url(Self::PATH, Self::connect, handler)
    }

    /// [`Store::url`] of the handlers whose rows go to [`service::RETENTION_TABLE`].
    fn retention_url(handler: &str) -> String {
        Self::url(&format!("retention/{handler}"))
    }

    /// Barrier retention on this store with the shared DTM; `None` on Redis, whose keys
    /// expire by themselves.
    fn purge(
        &self,
        r: Retention,
    ) -> Option<impl Future<Output = dtm_barrier::Result<Purged>> + Send>;

    /// How many barrier rows of `gid` [`service::RETENTION_TABLE`] holds.
    fn retention_rows(&self, gid: &str) -> impl Future<Output = usize> + Send;
}

/// `rows` expected of store `S`: `(trans_type, branch/op/barrier_id, reason)`, sorted.
pub fn expect<S: Store>(rows: &[(&str, &str, &str)]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|(t, k, r)| S::row(t, k, r)).collect();
    v.sort();
    v
}

/// [`Store::write_then_fail`] on a store with local transactions.
async fn adjust_then_fail<S: Balances + TransactionalStore>(
    store: S,
    bb: BranchBarrier,
    key: String,
    delta: i64,
    error: Error,
) -> dtm_barrier::Result<Outcome<()>> {
    bb.call(&store, move |c| {
        Box::pin(async move {
            S::adjust_local(c, key, delta).await?;
            Err::<(), _>(error)
        })
    })
    .await
}

/// The items of [`Store`] a store with local transactions has (SQL, MongoDB).
macro_rules! transactional_store_items {
    () => {
        fn write_then_fail(
            &self,
            bb: BranchBarrier,
            key: String,
            delta: i64,
            error: Error,
        ) -> Option<impl Future<Output = dtm_barrier::Result<Outcome<()>>> + Send> {
            Some(adjust_then_fail(self.clone(), bb, key, delta, error))
        }

        fn is_transient(e: &Error) -> bool {
            <Self as TransactionalStore>::is_transient(e)
        }

        fn purge(
            &self,
            r: Retention,
        ) -> Option<impl Future<Output = dtm_barrier::Result<Purged>> + Send> {
            let (store, dtm) = (self.clone(), crate::support::dtm());
            Some(async move { dtm_barrier::retention::purge(&store, &dtm, &r).await })
        }
    };
}

/// The retention table, as the fixtures create it.
fn retention_table() -> TableName {
    TableName::new(service::RETENTION_TABLE).expect("table name")
}

/// SQL rows as `(trans_type, branch_id, op, barrier_id, reason)`.
type SqlRow = (String, String, String, String, String);

fn sql_rows(rows: Vec<SqlRow>) -> Vec<String> {
    let mut v: Vec<String> = rows
        .into_iter()
        .map(|(t, b, o, i, r)| format!("{t}/{b}/{o}/{i}={r}"))
        .collect();
    v.sort();
    v
}

/// [`Store`] on a SQL pool; the databases differ in their URL, pool options and how the
/// rows are read.
macro_rules! sql_store {
    ($pool:ty, $options:ty, path: $path:literal, url: $url:expr, rows: $rows:expr, count: $count:expr) => {
        impl Store for $pool {
            const PATH: &'static str = $path;
            const SERIALIZES_DUPLICATES: bool = true;

            async fn connect() -> Self {
                let pool = <$options>::new()
                    .max_connections(25)
                    .connect(&$url)
                    .await
                    .expect("connect (scripts/start-dbs.sh starts the databases)");
                for table in [TableName::default(), retention_table()] {
                    create_barrier_table(&pool, &table)
                        .await
                        .expect("barrier table");
                }
                pool
            }

            async fn retention_rows(&self, gid: &str) -> usize {
                let n: i64 = sqlx::query_scalar($count)
                    .bind(gid)
                    .fetch_one(self)
                    .await
                    .expect("count rows");
                n as usize
            }

            async fn rows(&self, gid: &str) -> Vec<String> {
                let rows: Vec<SqlRow> = sqlx::query_as($rows)
                    .bind(gid)
                    .fetch_all(self)
                    .await
                    .expect("barrier rows");
                sql_rows(rows)
            }

            transactional_store_items!();
        }
    };
}

// MySQL's barrier columns are binary (exact identities): read them as text.
sql_store!(MySqlPool, sqlx::mysql::MySqlPoolOptions, path: "/api/mysql-kv", url: mysql_url(),
    rows: "select cast(trans_type as char), cast(branch_id as char), cast(op as char), cast(barrier_id as char), cast(reason as char) from dtm_barrier.barrier where gid = ?",
    count: "select count(*) from dtm_barrier_retention.barrier where gid = ?");
sql_store!(PgPool, sqlx::postgres::PgPoolOptions, path: "/api/postgres-kv", url: pg_url(),
    rows: "select trans_type, branch_id, op, barrier_id, reason from dtm_barrier.barrier where gid = $1",
    count: "select count(*) from dtm_barrier_retention.barrier where gid = $1");

/// The MongoDB URL (`MONGO_URL`; a replica set, for transactions).
pub fn mongo_url() -> String {
    std::env::var("MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".to_string())
}

/// The Go SDK's barrier collection.
pub fn mongo_barriers(c: &mongodb::Client) -> mongodb::Collection<Document> {
    c.database("dtm_barrier").collection("barrier")
}

/// The barrier documents of `gid` without `_id`, sorted by (branch_id, op, barrier_id).
pub async fn mongo_docs(c: &mongodb::Client, gid: &str) -> Vec<Document> {
    mongo_barriers(c)
        .find(doc! {"gid": gid})
        .sort(doc! {"branch_id": 1, "op": 1, "barrier_id": 1})
        .projection(doc! {"_id": 0})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("documents")
}

impl Store for mongodb::Client {
    const PATH: &'static str = "/api/mongo-kv";
    const SERIALIZES_DUPLICATES: bool = false;

    async fn connect() -> Self {
        let c = mongodb::Client::with_uri_str(mongo_url())
            .await
            .expect("mongo url");
        for table in [TableName::default(), retention_table()] {
            create_barrier_index(&c, &table)
                .await
                .expect("create the barrier index (scripts/start-dbs.sh starts the server)");
        }
        c
    }

    async fn retention_rows(&self, gid: &str) -> usize {
        let coll = self
            .database("dtm_barrier_retention")
            .collection::<Document>("barrier");
        coll.count_documents(doc! {"gid": gid})
            .await
            .expect("count") as usize
    }

    async fn rows(&self, gid: &str) -> Vec<String> {
        let field = |d: &Document, k: &str| d.get_str(k).expect(k).to_string();
        let mut v: Vec<String> = mongo_docs(self, gid)
            .await
            .iter()
            .map(|d| {
                format!(
                    "{}/{}/{}/{}={}",
                    field(d, "trans_type"),
                    field(d, "branch_id"),
                    field(d, "op"),
                    field(d, "barrier_id"),
                    field(d, "reason")
                )
            })
            .collect();
        v.sort();
        v
    }

    transactional_store_items!();
}

/// The Redis URL (`REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A Redis connection for the current test's runtime. Its answers may take 10 s, not
/// redis-rs's default 500 ms: on the loaded CI machine (tests beside the checks) Redis once
/// answered three tests later than that at the same moment.
pub async fn redis_conn() -> MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(10)));
    redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect to redis (scripts/start-dbs.sh starts it)")
}

/// Every barrier key of `gid` (`<gid>-...`) with its value, sorted.
pub async fn redis_keys(c: &mut MultiplexedConnection, gid: &str) -> Vec<(String, String)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{gid}-*"))
        .query_async(c)
        .await
        .expect("KEYS");
    let mut out = Vec::new();
    for k in keys {
        let v: Option<String> = redis::cmd("GET").arg(&k).query_async(c).await.expect("GET");
        out.push((k, v.unwrap_or_default()));
    }
    out.sort();
    out
}

impl Store for RedisStore<MultiplexedConnection> {
    const PATH: &'static str = "/api/redis-kv";
    const SERIALIZES_DUPLICATES: bool = true;

    async fn connect() -> Self {
        RedisStore::new(redis_conn().await, REDIS_EXPIRE)
    }

    /// Keys `<gid>-<branch>-<op>-<barrier_id>` read as `branch/op/barrier_id=value`.
    async fn rows(&self, gid: &str) -> Vec<String> {
        let mut c = self.connection().clone();
        let prefix = format!("{gid}-");
        redis_keys(&mut c, gid)
            .await
            .into_iter()
            .map(|(k, v)| {
                let rest = k.strip_prefix(&prefix).unwrap_or(&k);
                format!("{}={v}", rest.replace('-', "/"))
            })
            .collect()
    }

    /// Redis keys carry no trans type, and their value is `op` when the key's own operation
    /// wrote it, `rollback` when a compensation or a back-check did (SQL's other reasons).
    fn row(_trans_type: &str, key: &str, reason: &str) -> String {
        let op = key.split('/').nth(1).unwrap_or_default();
        let v = if reason == op { "op" } else { "rollback" };
        format!("{key}={v}")
    }

    fn write_then_fail(
        &self,
        _bb: BranchBarrier,
        _key: String,
        _delta: i64,
        _error: Error,
    ) -> Option<impl Future<Output = dtm_barrier::Result<Outcome<()>>> + Send> {
        None::<std::future::Ready<dtm_barrier::Result<Outcome<()>>>>
    }

    fn is_transient(_: &Error) -> bool {
        false
    }

    fn purge(
        &self,
        _: Retention,
    ) -> Option<impl Future<Output = dtm_barrier::Result<Purged>> + Send> {
        None::<std::future::Ready<dtm_barrier::Result<Purged>>>
    }

    async fn retention_rows(&self, _gid: &str) -> usize {
        0
    }
}
