//! One barrier table (or key space) shared with a real Go service: a branch guarded by the
//! Go SDK's barrier (tests/go, on DTM's own Go SDK) and by this SDK's is one branch, on
//! MariaDB, PostgreSQL, Redis and MongoDB alike.
//!
//! For every store, five branches are called alternately from both sides (saga, branch 01):
//! - a Go action, then the same action here: duplicate;
//! - an action here, then in Go: Go skips it;
//! - a compensation here first (null compensation), then the action in Go: Go skips the
//!   hanging action;
//! - a compensation in Go first, then the action here: duplicate (hanging);
//! - a Go action, a compensation here (runs), the same compensation in Go (skipped).

use crate::go_service;
use crate::support;
use redis::AsyncCommands;

use std::time::Duration;

use dtm_barrier::redis::RedisStore;
use dtm_barrier::sql::BarrierDatabase;
use dtm_barrier::{BranchBarrier, Outcome, TableName};
use dtmcli::{Op, TransInfo, TransType};
use go_service::{free_addr, GoService};
use sqlx::{MySqlPool, PgPool, Pool};

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// 127.0.0.1:<port> of a `scheme://[user@]host:port[/...]` URL.
fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

/// The stores, opened on both sides, with the default barrier table/collection.
/// The default barrier table on `pool`. Other test binaries may create the same table at the
/// same moment: one retry.
async fn create_barrier_table<DB>(pool: &Pool<DB>, table: &TableName)
where
    DB: BarrierDatabase,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    if dtm_barrier::sql::create_barrier_table(pool, table)
        .await
        .is_err()
    {
        dtm_barrier::sql::create_barrier_table(pool, table)
            .await
            .unwrap();
    }
}

struct Stores {
    mysql: MySqlPool,
    pg: PgPool,
    redis: RedisStore<redis::aio::MultiplexedConnection>,
    redis_conn: redis::aio::MultiplexedConnection,
    mongo: mongodb::Client,
    go: GoService,
}

impl Stores {
    async fn open() -> Stores {
        let (mysql_url, pg_url) = (
            var("MYSQL_URL", "mysql://root@127.0.0.1:3306"),
            var("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        );
        let (redis_url, mongo_url) = (
            var("REDIS_URL", "redis://127.0.0.1:6379"),
            var(
                "MONGO_URL",
                "mongodb://127.0.0.1:27017/?directConnection=true",
            ),
        );
        let mysql = MySqlPool::connect(&mysql_url).await.expect("MariaDB");
        let pg = PgPool::connect(&pg_url).await.expect("PostgreSQL");
        let table = TableName::default();
        create_barrier_table(&mysql, &table).await;
        create_barrier_table(&pg, &table).await;
        let redis_conn = redis::Client::open(redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis");
        let redis = RedisStore::new(redis_conn.clone(), Duration::from_secs(600));
        let mongo = mongodb::Client::with_uri_str(&mongo_url).await.unwrap();
        dtm_barrier::mongo::create_barrier_index(&mongo, &table)
            .await
            .expect("MongoDB-wire server");
        let pg_hp = host_port(&pg_url);
        let vars = [
            ("MYSQL_DSN", format!("root@tcp({})/", host_port(&mysql_url))),
            (
                "PG_DSN",
                format!("postgres://postgres@{pg_hp}/postgres?sslmode=disable"),
            ),
            ("REDIS_ADDR", host_port(&redis_url)),
            ("MONGO_URI", mongo_url.clone()),
        ];
        let go = GoService::start(&free_addr(), &vars).await;
        Stores {
            mysql,
            pg,
            redis,
            redis_conn,
            mongo,
            go,
        }
    }

    /// The Redis account a branch adjusts (action -10, compensation +10), set to 100.
    async fn account(&self, gid: &str) -> String {
        let key = format!("{gid}-account");
        let mut c = self.redis_conn.clone();
        let _: () = c.set(&key, 100).await.unwrap();
        key
    }

    async fn balance(&self, key: &str) -> i64 {
        let mut c = self.redis_conn.clone();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap()
    }

    /// Calls the branch here: the barrier's outcome.
    async fn here(&self, store: &str, gid: &str, op: Op) -> Outcome<()> {
        let amount = if op == Op::Action { -10 } else { 10 };
        let bb = BranchBarrier::new(TransInfo::new(gid, TransType::Saga, "01", op.clone()));
        let out = match store {
            "mysql" => bb.call(&self.mysql, |_| Box::pin(async { Ok(()) })).await,
            "postgres" => bb.call(&self.pg, |_| Box::pin(async { Ok(()) })).await,
            "mongo" => bb.call(&self.mongo, |_| Box::pin(async { Ok(()) })).await,
            "redis" => {
                bb.check_adjust_amount(&self.redis, &format!("{gid}-account"), amount)
                    .await
            }
            _ => unreachable!(),
        };
        out.unwrap_or_else(|e| panic!("{store} {gid} {op:?} here: {e}"))
    }

    /// Calls the branch in the Go service: whether its business ran.
    async fn go(&self, store: &str, gid: &str, op: &str) -> bool {
        let key = format!("{gid}-account");
        let before = if store == "redis" {
            self.balance(&key).await
        } else {
            0
        };
        let amount = if op == "action" { -10 } else { 10 };
        let r: serde_json::Value = reqwest::get(format!(
            "{}/barrier?store={store}&trans_type=saga&gid={gid}&branch_id=01&op={op}&key={key}&amount={amount}",
            self.go.base
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(r["error"], "", "{store} {gid} {op} in Go: {r}");
        if store == "redis" {
            self.balance(&key).await != before
        } else {
            r["ran"].as_bool().unwrap()
        }
    }
}

fn gid(store: &str, case: &str) -> String {
    support::gid(&format!("gb-{store}-{case}"))
}

async fn shared_branches(s: &Stores, store: &str) {
    use Outcome::*;
    let g = gid(store, "go-first");
    s.account(&g).await;
    assert!(s.go(store, &g, "action").await);
    assert_eq!(s.here(store, &g, Op::Action).await, Duplicate);

    let g = gid(store, "here-first");
    s.account(&g).await;
    assert_eq!(s.here(store, &g, Op::Action).await, Executed(()));
    assert!(
        !s.go(store, &g, "action").await,
        "Go ran an action done here"
    );

    let g = gid(store, "null-here");
    s.account(&g).await;
    assert_eq!(s.here(store, &g, Op::Compensate).await, NullCompensation);
    assert!(!s.go(store, &g, "action").await, "Go ran a hanging action");

    let g = gid(store, "null-go");
    s.account(&g).await;
    assert!(
        !s.go(store, &g, "compensate").await,
        "Go compensated nothing"
    );
    assert_eq!(s.here(store, &g, Op::Action).await, Duplicate);

    let g = gid(store, "compensated");
    let key = s.account(&g).await;
    assert!(s.go(store, &g, "action").await);
    assert_eq!(s.here(store, &g, Op::Compensate).await, Executed(()));
    assert!(!s.go(store, &g, "compensate").await, "Go compensated twice");
    if store == "redis" {
        assert_eq!(s.balance(&key).await, 100, "-10 in Go, +10 here, once each");
    }
}

#[tokio::test]
async fn go_and_rust_guard_the_same_branches() {
    let s = Stores::open().await;
    for store in ["mysql", "postgres", "redis", "mongo"] {
        shared_branches(&s, store).await;
    }
}
