//! The bank of the chaos suite (`tests/tests/chaos_suite/chaos.rs`), shared by the test process and its
//! branch service (`src/bin/chaos_bank.rs`): accounts on MariaDB, PostgreSQL, Redis and
//! MongoDB, the business of one leg per backend under the one barrier API (guarded call,
//! msg outbox, back-check), and the read-back of balances and barrier records the suite
//! checks.
//!
//! Every transfer has its own two accounts, `{chaos}-<run>-src-<n>` and `{chaos}-<run>-dst-<n>`
//! (`n` six digits), so each one can be checked on its own.

use std::collections::BTreeMap;
use std::time::Duration;

use dtm_barrier::redis::{Guarded, RedisStore};
use dtm_barrier::{BranchBarrier, Error as BError, Outcome};
use dtmcli::Op;
use futures_util::future::BoxFuture;
use mongodb::bson::{doc, Document};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use sqlx::{MySqlPool, PgPool, Pool};

use crate::sql::{execute_on, SqlDb};

/// Schema (MariaDB database, PostgreSQL schema, MongoDB database) of the chaos accounts.
pub const SCHEMA: &str = "dtm_chaos";
/// How long Redis barrier keys live.
pub const REDIS_EXPIRE: Duration = Duration::from_secs(7 * 86400);

/// Where an account lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// MariaDB (SQL barrier).
    Mysql,
    /// PostgreSQL (SQL barrier).
    Postgres,
    /// Redis (Lua barrier).
    Redis,
    /// MongoDB wire protocol (transactional barrier).
    Mongo,
}

impl Backend {
    /// All four.
    pub const ALL: [Backend; 4] = [
        Backend::Mysql,
        Backend::Postgres,
        Backend::Redis,
        Backend::Mongo,
    ];

    /// The URL segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Mysql => "mysql",
            Backend::Postgres => "postgres",
            Backend::Redis => "redis",
            Backend::Mongo => "mongo",
        }
    }

    /// Parses a URL segment.
    pub fn parse(s: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// True for the SQL backends (where a connection can be killed mid-branch).
    pub fn is_sql(self) -> bool {
        matches!(self, Backend::Mysql | Backend::Postgres)
    }
}

/// The body of every leg call: adjust `account` by `amount` (debit for `out`, credit for
/// `in`; the undo ops reverse it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Leg {
    /// The account.
    pub account: String,
    /// The amount moved.
    pub amount: i64,
    /// The business answers FAILURE (after its write, rolled back with it).
    #[serde(default)]
    pub fail: bool,
}

/// The source or destination account of transfer `n`.
pub fn account(run: &str, n: usize, side: &str) -> String {
    format!("{{chaos}}-{run}-{side}-{n:06}")
}

/// Faults to inject inside one guarded business.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sabotage {
    /// Answer FAILURE after the write (the local transaction rolls back).
    pub fail: bool,
    /// Kill the local transaction's connection from a second connection before the commit.
    pub kill_connection: bool,
}

/// An error of the chaos bank's set-up or read-back.
pub type ChaosError = Box<dyn std::error::Error + Send + Sync>;

/// Connections to the four stores.
#[derive(Clone)]
pub struct Stores {
    /// MariaDB.
    pub mysql: MySqlPool,
    /// PostgreSQL.
    pub pg: PgPool,
    /// Redis, with the expiry of its barrier keys ([`REDIS_EXPIRE`]).
    pub redis: RedisStore<MultiplexedConnection>,
    /// MongoDB.
    pub mongo: mongodb::Client,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

impl Stores {
    /// Connects to the four databases (`$MYSQL_URL`, `$PG_URL`, `$REDIS_URL`, `$MONGO_URL`,
    /// defaults on 127.0.0.1) and creates the account tables and barrier tables if missing.
    pub async fn connect(pool_size: u32) -> Result<Stores, ChaosError> {
        let mysql = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(20))
            .connect(&env_or("MYSQL_URL", "mysql://root@127.0.0.1:3306"))
            .await?;
        let pg = sqlx::postgres::PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(20))
            .connect(&env_or(
                "PG_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ))
            .await?;
        let redis = redis::Client::open(env_or("REDIS_URL", "redis://127.0.0.1:6379"))?
            .get_multiplexed_async_connection()
            .await?;
        let redis = RedisStore::new(redis, REDIS_EXPIRE);
        let mongo = mongodb::Client::with_uri_str(env_or(
            "MONGO_URL",
            "mongodb://127.0.0.1:27017/?directConnection=true",
        ))
        .await?;
        let table = dtm_barrier::TableName::default();
        dtm_barrier::sql::create_barrier_table(&mysql, &table).await?;
        dtm_barrier::sql::create_barrier_table(&pg, &table).await?;
        dtm_barrier::mongo::create_barrier_index(&mongo, &table).await?;
        let accounts = format!(
            "create table if not exists {SCHEMA}.account(id varchar(64) primary key, balance bigint not null)"
        );
        sqlx::raw_sql(&format!(
            "create database if not exists {SCHEMA}; {accounts} engine=InnoDB"
        ))
        .execute(&mysql)
        .await?;
        sqlx::raw_sql(&format!("create schema if not exists {SCHEMA}; {accounts}"))
            .execute(&pg)
            .await?;
        Ok(Stores {
            mysql,
            pg,
            redis,
            mongo,
        })
    }

    fn accounts(&self) -> mongodb::Collection<Document> {
        self.mongo.database(SCHEMA).collection("account")
    }

    /// Creates accounts (`(id, balance)`) on `backend`, in batches.
    pub async fn open(
        &self,
        backend: Backend,
        accounts: &[(String, i64)],
    ) -> Result<(), ChaosError> {
        for chunk in accounts.chunks(500) {
            match backend {
                Backend::Mysql | Backend::Postgres => {
                    let values = vec!["(?, ?)"; chunk.len()].join(",");
                    let sql = format!("insert into {SCHEMA}.account(id, balance) values {values}");
                    let binds = chunk
                        .iter()
                        .flat_map(|(id, b)| [id.as_str().into(), (*b).into()])
                        .collect();
                    if backend == Backend::Mysql {
                        execute_on(&self.mysql, &sql, binds).await?;
                    } else {
                        execute_on(&self.pg, &sql, binds).await?;
                    }
                }
                Backend::Redis => {
                    let mut cmd = redis::cmd("MSET");
                    for (id, b) in chunk {
                        cmd.arg(id).arg(b);
                    }
                    let mut conn = self.redis.connection().clone();
                    let () = cmd.query_async(&mut conn).await?;
                }
                Backend::Mongo => {
                    let docs: Vec<Document> = chunk
                        .iter()
                        .map(|(id, b)| doc! { "_id": id, "balance": b })
                        .collect();
                    self.accounts().insert_many(docs).await?;
                }
            }
        }
        Ok(())
    }

    /// Balances of `ids` on `backend` (missing accounts are absent from the map).
    pub async fn balances(
        &self,
        backend: Backend,
        ids: &[String],
    ) -> Result<BTreeMap<String, i64>, ChaosError> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(500) {
            match backend {
                Backend::Mysql => {
                    let sql = format!(
                        "select id, balance from {SCHEMA}.account where id in ({})",
                        vec!["?"; chunk.len()].join(",")
                    );
                    let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
                    for id in chunk {
                        q = q.bind(id);
                    }
                    out.extend(q.fetch_all(&self.mysql).await?);
                }
                Backend::Postgres => {
                    let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
                        "select id, balance from {SCHEMA}.account where id = any($1)"
                    ))
                    .bind(chunk)
                    .fetch_all(&self.pg)
                    .await?;
                    out.extend(rows);
                }
                Backend::Redis => {
                    let mut conn = self.redis.connection().clone();
                    let vals: Vec<Option<i64>> =
                        redis::cmd("MGET").arg(chunk).query_async(&mut conn).await?;
                    for (id, v) in chunk.iter().zip(vals) {
                        if let Some(v) = v {
                            out.insert(id.clone(), v);
                        }
                    }
                }
                Backend::Mongo => {
                    use futures_util::TryStreamExt;
                    let docs: Vec<Document> = self
                        .accounts()
                        .find(doc! { "_id": { "$in": chunk } })
                        .await?
                        .try_collect()
                        .await?;
                    for d in docs {
                        out.insert(d.get_str("_id")?.to_string(), d.get_i64("balance")?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The barrier records of `gids` on `backend`: `(gid, branch_id, op) -> reason` (for
    /// Redis the key's value, which is the op or `rollback`). Redis keys are looked up for
    /// the ops of each gid's legs, `legs` = `(gid, branch_id, [ops])`.
    pub async fn barrier_records(
        &self,
        backend: Backend,
        legs: &[(String, String, Vec<&'static str>)],
    ) -> Result<BTreeMap<(String, String, String), String>, ChaosError> {
        let mut out = BTreeMap::new();
        let gids: Vec<String> = {
            let mut g: Vec<String> = legs.iter().map(|l| l.0.clone()).collect();
            g.sort();
            g.dedup();
            g
        };
        match backend {
            Backend::Mysql | Backend::Postgres => {
                for chunk in gids.chunks(500) {
                    let rows: Vec<(String, String, String, String)> = if backend == Backend::Mysql {
                        let sql = format!(
                            "select cast(gid as char), cast(branch_id as char), cast(op as char), cast(reason as char) from dtm_barrier.barrier where gid in ({})",
                            vec!["?"; chunk.len()].join(",")
                        );
                        let mut q = sqlx::query_as(&sql);
                        for g in chunk {
                            q = q.bind(g);
                        }
                        q.fetch_all(&self.mysql).await?
                    } else {
                        sqlx::query_as(
                            "select gid, branch_id, op, reason from dtm_barrier.barrier where gid = any($1)",
                        )
                        .bind(chunk)
                        .fetch_all(&self.pg)
                        .await?
                    };
                    for (g, b, o, r) in rows {
                        out.insert((g, b, o), r);
                    }
                }
            }
            Backend::Redis => {
                let keys: Vec<(String, String, String)> = legs
                    .iter()
                    .flat_map(|(g, b, ops)| {
                        ops.iter()
                            .map(move |o| (g.clone(), b.clone(), (*o).to_string()))
                    })
                    .collect();
                let mut conn = self.redis.connection().clone();
                for chunk in keys.chunks(500) {
                    let names: Vec<String> = chunk
                        .iter()
                        .map(|(g, b, o)| format!("{g}-{b}-{o}-01"))
                        .collect();
                    let vals: Vec<Option<String>> = redis::cmd("MGET")
                        .arg(&names)
                        .query_async(&mut conn)
                        .await?;
                    for (k, v) in chunk.iter().zip(vals) {
                        if let Some(v) = v {
                            out.insert(k.clone(), v);
                        }
                    }
                }
            }
            Backend::Mongo => {
                use futures_util::TryStreamExt;
                let coll = self
                    .mongo
                    .database("dtm_barrier")
                    .collection::<Document>("barrier");
                for chunk in gids.chunks(500) {
                    let docs: Vec<Document> = coll
                        .find(doc! { "gid": { "$in": chunk } })
                        .await?
                        .try_collect()
                        .await?;
                    for d in docs {
                        out.insert(
                            (
                                d.get_str("gid")?.to_string(),
                                d.get_str("branch_id")?.to_string(),
                                d.get_str("op")?.to_string(),
                            ),
                            d.get_str("reason")?.to_string(),
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    /// The guarded adjustment of one leg: runs the barrier of `bb` on `backend` around
    /// "add `delta` to `account`, refusing to go below zero", with the `sabotage` faults.
    /// A `delta` of zero (TCC confirm) writes only the barrier record.
    pub async fn adjust(
        &self,
        bb: &BranchBarrier,
        backend: Backend,
        account: &str,
        delta: i64,
        sabotage: Sabotage,
    ) -> dtm_barrier::Result<Outcome<()>> {
        let account = account.to_string();
        match backend {
            Backend::Mysql => {
                let business = sql_business(self.mysql.clone(), account, delta, sabotage);
                bb.call(&self.mysql, business).await
            }
            Backend::Postgres => {
                let business = sql_business(self.pg.clone(), account, delta, sabotage);
                bb.call(&self.pg, business).await
            }
            Backend::Mongo => {
                bb.call(&self.mongo, mongo_business(account, delta, sabotage))
                    .await
            }
            Backend::Redis => {
                if sabotage.fail {
                    // The Lua barrier is one atomic step: a business failure happens before it.
                    return Err(failure("business failure"));
                }
                bb.check_adjust_amount(&self.redis, &account, delta).await
            }
        }
    }

    /// The msg outbox of a transfer whose source account is on `backend`: `msg` with the
    /// leg's business ([`Stores::adjust`]'s, under op `msg`) as its local transaction.
    pub async fn do_and_submit<T: dtmcli::Transport>(
        &self,
        msg: &dtmcli::Msg<T>,
        query_prepared: &str,
        backend: Backend,
        account: &str,
        delta: i64,
        sabotage: Sabotage,
    ) -> dtm_barrier::Result<()> {
        use dtm_barrier::do_and_submit;
        let (qp, account) = (query_prepared, account.to_string());
        match backend {
            Backend::Mysql => {
                let business = sql_business(self.mysql.clone(), account, delta, sabotage);
                do_and_submit(msg, qp, &self.mysql, business).await
            }
            Backend::Postgres => {
                let business = sql_business(self.pg.clone(), account, delta, sabotage);
                do_and_submit(msg, qp, &self.pg, business).await
            }
            Backend::Mongo => {
                do_and_submit(
                    msg,
                    qp,
                    &self.mongo,
                    mongo_business(account, delta, sabotage),
                )
                .await
            }
            Backend::Redis => {
                do_and_submit(
                    msg,
                    qp,
                    &self.redis,
                    redis_business(account, delta, sabotage),
                )
                .await
            }
        }
    }

    /// The msg back-check of `bb` on `backend`.
    pub async fn query_prepared(
        &self,
        bb: &BranchBarrier,
        backend: Backend,
    ) -> dtm_barrier::Result<()> {
        match backend {
            Backend::Mysql => bb.query_prepared(&self.mysql).await,
            Backend::Postgres => bb.query_prepared(&self.pg).await,
            Backend::Redis => bb.query_prepared(&self.redis).await,
            Backend::Mongo => bb.query_prepared(&self.mongo).await,
        }
    }
}

fn failure(what: &str) -> BError {
    BError::failure(format!("chaos: {what}"))
}

/// The SQL business of one leg (also the msg local transaction), on MariaDB or PostgreSQL;
/// `pool` kills the connection when the sabotage asks for it.
fn sql_business<DB: SqlDb>(
    pool: Pool<DB>,
    account: String,
    delta: i64,
    sabotage: Sabotage,
) -> impl for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, dtm_barrier::Result<()>> + Send {
    move |conn: &mut DB::Connection| {
        Box::pin(async move {
            if delta != 0 {
                let sql = format!(
                    "update {SCHEMA}.account set balance = balance + ? where id = ? and balance + ? >= 0"
                );
                let binds = vec![delta.into(), account.into(), delta.into()];
                if DB::execute(conn, &sql, binds).await? == 0 {
                    return Err(failure("insufficient balance or unknown account"));
                }
            }
            if sabotage.fail {
                return Err(failure("business failure"));
            }
            if sabotage.kill_connection {
                DB::kill(conn, &pool).await?;
            }
            Ok(())
        }) as BoxFuture<'_, dtm_barrier::Result<()>>
    }
}

/// The MongoDB business of one leg (also the msg local transaction).
fn mongo_business(
    account: String,
    delta: i64,
    sabotage: Sabotage,
) -> impl for<'s> FnOnce(&'s mut mongodb::ClientSession) -> BoxFuture<'s, dtm_barrier::Result<()>> + Send
{
    move |session: &mut mongodb::ClientSession| {
        Box::pin(async move {
            if delta != 0 {
                let coll = session
                    .client()
                    .database(SCHEMA)
                    .collection::<Document>("account");
                let r = coll
                    .update_one(
                        doc! { "_id": &account, "balance": { "$gte": -delta } },
                        doc! { "$inc": { "balance": delta } },
                    )
                    .session(&mut *session)
                    .await?;
                if r.matched_count == 0 {
                    return Err(failure("insufficient balance or unknown account"));
                }
            }
            if sabotage.fail {
                return Err(failure("business failure"));
            }
            Ok(())
        }) as BoxFuture<'_, dtm_barrier::Result<()>>
    }
}

/// The Redis msg local transaction of one leg: its one guarded adjustment (a business
/// failure happens before it, as in [`Stores::adjust`]).
fn redis_business(
    account: String,
    delta: i64,
    sabotage: Sabotage,
) -> impl for<'g> FnOnce(
    &'g mut Guarded<MultiplexedConnection>,
) -> BoxFuture<'g, dtm_barrier::Result<()>>
       + Send {
    move |guarded: &mut Guarded<MultiplexedConnection>| {
        Box::pin(async move {
            if sabotage.fail {
                return Err(failure("business failure"));
            }
            guarded.check_adjust_amount(&account, delta).await?;
            Ok(())
        }) as BoxFuture<'_, dtm_barrier::Result<()>>
    }
}

/// The signed change a leg call makes: `dir` is `out` or `in`; the op says apply, undo or
/// nothing (confirm). `None` for an op the bank does not serve.
pub fn leg_delta(dir: &str, op: &Op, amount: i64) -> Option<i64> {
    let sign = match dir {
        "out" => -1,
        "in" => 1,
        _ => return None,
    };
    match op {
        Op::Action | Op::Try | Op::Msg => Some(sign * amount),
        Op::Compensate | Op::Cancel | Op::Rollback => Some(-sign * amount),
        Op::Confirm => Some(0),
        _ => None,
    }
}
