//! Balances kept in any barrier store (MySQL/MariaDB, PostgreSQL, Redis, MongoDB), moved by
//! guarded HTTP branches: [`Balances`] (implemented by the SQL pools, `mongodb::Client` and
//! `RedisStore<MultiplexedConnection>`) adjusts one balance under the branch barrier per
//! branch (a guarded local transaction around an update; Redis's own guarded adjustment),
//! and [`KvBank`] serves the saga and msg branches of a [`Transfer`] on it. The barrier
//! suite of the tests, generic over the store, runs on this business.

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{any, post};
use axum::Json;
use dtm_barrier::redis::{Guarded, RedisStore};
use dtm_barrier::{BarrierStore, BranchBarrier, Outcome};
use dtmcli::TransInfo;
use futures_util::future::BoxFuture;
use mongodb::bson::{doc, Document};
use mongodb::{ClientSession, Collection};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use crate::demo::DemoError;

/// Balances kept in a barrier store: what is specific to the business.
pub trait Balances: BarrierStore + Clone + 'static {
    /// The store's name in messages and URLs (`redis`, `mongo`).
    const NAME: &'static str;

    /// Adds `delta` to the account `key` under the branch barrier `bb` (each call takes the
    /// barrier's next barrier id); a missing account or a balance that would go negative is
    /// a DTM failure.
    fn adjust(
        &self,
        bb: &BranchBarrier,
        key: String,
        delta: i64,
    ) -> impl Future<Output = dtm_barrier::Result<Outcome<()>>> + Send;

    /// The business alone, inside a local transaction the barrier opened (the msg outbox's
    /// local transaction): adds `delta` to `key`, refusing a missing account or a negative
    /// balance as a DTM failure. On Redis, the connection's one guarded adjustment.
    fn adjust_local(
        conn: &mut Self::Conn,
        key: String,
        delta: i64,
    ) -> BoxFuture<'_, dtm_barrier::Result<()>>;

    /// Creates the account `key` with `balance`, or resets it.
    fn open(&self, key: &str, balance: i64) -> impl Future<Output = Result<(), DemoError>> + Send;

    /// The balance of `key`, if the account exists.
    fn balance(&self, key: &str) -> impl Future<Output = Result<Option<i64>, DemoError>> + Send;
}

/// The MongoDB accounts: documents `{_id: key, balance}`.
fn mongo_accounts(client: &mongodb::Client) -> Collection<Document> {
    client.database("dtm_busi").collection("example_account")
}

/// The MongoDB business: adds `delta` to the account `key` inside the session's
/// transaction; a missing account or a balance that would go negative is a DTM failure
/// (which rolls the barrier documents back with it).
pub async fn mongo_adjust(
    session: &mut ClientSession,
    key: &str,
    delta: i64,
) -> dtm_barrier::Result<()> {
    let r = mongo_accounts(&session.client())
        .update_one(
            doc! {"_id": key, "balance": {"$gte": -delta}},
            doc! {"$inc": {"balance": delta}},
        )
        .session(&mut *session)
        .await?;
    ensure_changed(r.matched_count, key, delta)
}

/// Ok when the update of `key` by `delta` matched its account (`matched` rows); else the
/// refusal, a DTM failure: the account is missing, or the balance would go negative.
fn ensure_changed(matched: u64, key: &str, delta: i64) -> dtm_barrier::Result<()> {
    if matched == 0 {
        return Err(dtm_barrier::Error::failure(format!(
            "account {key}: missing, or adding {delta} would make it negative"
        )));
    }
    Ok(())
}

impl Balances for mongodb::Client {
    const NAME: &'static str = "mongo";

    /// One MongoDB transaction: the barrier documents and [`mongo_adjust`].
    async fn adjust(
        &self,
        bb: &BranchBarrier,
        key: String,
        delta: i64,
    ) -> dtm_barrier::Result<Outcome<()>> {
        bb.call(self, move |s| Self::adjust_local(s, key, delta))
            .await
    }

    fn adjust_local(
        session: &mut ClientSession,
        key: String,
        delta: i64,
    ) -> BoxFuture<'_, dtm_barrier::Result<()>> {
        Box::pin(async move { mongo_adjust(session, &key, delta).await })
    }

    async fn open(&self, key: &str, balance: i64) -> Result<(), DemoError> {
        mongo_accounts(self)
            .replace_one(doc! {"_id": key}, doc! {"_id": key, "balance": balance})
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn balance(&self, key: &str) -> Result<Option<i64>, DemoError> {
        let d = mongo_accounts(self).find_one(doc! {"_id": key}).await?;
        Ok(d.and_then(|d| d.get_i64("balance").ok()))
    }
}

impl Balances for RedisStore<MultiplexedConnection> {
    const NAME: &'static str = "redis";

    /// Redis's guarded adjustment: the barrier key and the balance change in one Lua script.
    async fn adjust(
        &self,
        bb: &BranchBarrier,
        key: String,
        delta: i64,
    ) -> dtm_barrier::Result<Outcome<()>> {
        bb.check_adjust_amount(self, &key, delta).await
    }

    fn adjust_local(
        guarded: &mut Guarded<MultiplexedConnection>,
        key: String,
        delta: i64,
    ) -> BoxFuture<'_, dtm_barrier::Result<()>> {
        Box::pin(async move { guarded.check_adjust_amount(&key, delta).await.map(drop) })
    }

    async fn open(&self, key: &str, balance: i64) -> Result<(), DemoError> {
        let mut conn = self.connection().clone();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(balance)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn balance(&self, key: &str) -> Result<Option<i64>, DemoError> {
        let mut conn = self.connection().clone();
        Ok(redis::cmd("GET").arg(key).query_async(&mut conn).await?)
    }
}

/// The SQL accounts: rows `(name, balance)`, beside the bank's numbered accounts.
const SQL_ACCOUNTS: &str = "dtm_busi.kv_account";

/// [`Balances`] on a SQL pool: one guarded local transaction per adjustment. The SQL of each
/// database differs only in its placeholders and its upsert.
macro_rules! sql_balances {
    ($db:ty, $name:literal, $conn:ty, schema: $schema:literal, upsert: $upsert:literal,
     adjust: $adjust:literal, select: $select:literal) => {
        impl Balances for sqlx::Pool<$db> {
            const NAME: &'static str = $name;

            async fn adjust(
                &self,
                bb: &BranchBarrier,
                key: String,
                delta: i64,
            ) -> dtm_barrier::Result<Outcome<()>> {
                bb.call(self, move |c| Self::adjust_local(c, key, delta))
                    .await
            }

            fn adjust_local(
                conn: &mut $conn,
                key: String,
                delta: i64,
            ) -> BoxFuture<'_, dtm_barrier::Result<()>> {
                Box::pin(async move {
                    let sql = format!($adjust, t = SQL_ACCOUNTS);
                    let r = sqlx::query(&sql)
                        .bind(delta)
                        .bind(&key)
                        .bind(delta)
                        .execute(&mut *conn)
                        .await?;
                    ensure_changed(r.rows_affected(), &key, delta)
                })
            }

            async fn open(&self, key: &str, balance: i64) -> Result<(), DemoError> {
                sqlx::raw_sql($schema).execute(self).await?;
                let create = format!(
                    "create table if not exists {SQL_ACCOUNTS}(name varchar(128) primary key, balance bigint not null)"
                );
                sqlx::raw_sql(&create).execute(self).await?;
                sqlx::query(&format!($upsert, t = SQL_ACCOUNTS))
                    .bind(key)
                    .bind(balance)
                    .execute(self)
                    .await?;
                Ok(())
            }

            async fn balance(&self, key: &str) -> Result<Option<i64>, DemoError> {
                let row: Option<(i64,)> = sqlx::query_as(&format!($select, t = SQL_ACCOUNTS))
                    .bind(key)
                    .fetch_optional(self)
                    .await?;
                Ok(row.map(|(b,)| b))
            }
        }
    };
}

sql_balances!(sqlx::MySql, "mysql", sqlx::MySqlConnection,
    schema: "create database if not exists dtm_busi",
    upsert: "insert into {t}(name, balance) values(?, ?) on duplicate key update balance = values(balance)",
    adjust: "update {t} set balance = balance + ? where name = ? and balance + ? >= 0",
    select: "select balance from {t} where name = ?");
sql_balances!(sqlx::Postgres, "postgres", sqlx::PgConnection,
    schema: "create schema if not exists dtm_busi",
    upsert: "insert into {t}(name, balance) values($1, $2) on conflict (name) do update set balance = excluded.balance",
    adjust: "update {t} set balance = balance + $1 where name = $2 and balance + $3 >= 0",
    select: "select balance from {t} where name = $1");

/// The body of every branch: move `amount` from the account `from` to the account `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transfer {
    /// Amount to move.
    pub amount: i64,
    /// Debited account.
    pub from: String,
    /// Credited account.
    pub to: String,
}

impl Transfer {
    /// A transfer of `amount` between two accounts named after the gid (`acct-<gid>-from`,
    /// `acct-<gid>-to`: outside the `<gid>-*` space of the Redis barrier keys).
    pub fn new(gid: &str, amount: i64) -> Self {
        Transfer {
            amount,
            from: format!("acct-{gid}-from"),
            to: format!("acct-{gid}-to"),
        }
    }

    /// The account `handler` adjusts and by how much: `TransOut` / `TransIn` (saga
    /// actions) and `TransOutRevert` / `TransInRevert` (their compensations).
    pub fn leg(&self, handler: &str) -> Option<(&str, i64)> {
        match handler {
            "TransOut" => Some((&self.from, -self.amount)),
            "TransOutRevert" => Some((&self.from, self.amount)),
            "TransIn" => Some((&self.to, self.amount)),
            "TransInRevert" => Some((&self.to, -self.amount)),
            _ => None,
        }
    }
}

/// The guarded HTTP branches of a [`Transfer`] on one store, served at
/// `<base>/{TransOut,TransOutRevert,TransIn,TransInRevert,QueryPrepared}`; every call is
/// logged with what the barrier did.
#[derive(Clone)]
pub struct KvBank<S> {
    store: S,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl<S> std::fmt::Debug for KvBank<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvBank")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl<S: Balances> KvBank<S> {
    /// Serves the branches on `store` on a free port of 127.0.0.1.
    pub async fn serve(store: S) -> Result<KvBank<S>, DemoError> {
        let path = format!("/api/{}-busi", S::NAME);
        let mut bank = KvBank {
            store,
            base: String::new(),
            log: Arc::default(),
        };
        let router = axum::Router::new()
            .route(&format!("{path}/QueryPrepared"), any(query_prepared::<S>))
            .route(&format!("{path}/{{handler}}"), post(branch::<S>))
            .with_state(bank.clone());
        bank.base = format!("{}{path}", crate::demo::serve(router).await?);
        Ok(bank)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The URL of a handler.
    pub fn url(&self, handler: &str) -> String {
        format!("{}/{handler}", self.base)
    }

    /// Prints and forgets the calls logged so far for `gid`; returns them.
    pub fn tell(&self, gid: &str) -> Vec<String> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let (mine, rest): (Vec<String>, Vec<String>) = log.drain(..).partition(|l| l.contains(gid));
        *log = rest;
        for l in &mine {
            println!("     {l}");
        }
        mine
    }

    fn record(&self, line: String) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }
}

/// One guarded branch handler for the four operations.
async fn branch<S: Balances>(
    State(bank): State<KvBank<S>>,
    Path(handler): Path<String>,
    info: TransInfo,
    body: Bytes,
) -> Result<Json<serde_json::Value>, dtmcli::Error> {
    let t: Transfer = serde_json::from_slice(&body).map_err(dtmcli::Error::invalid)?;
    let (key, amount) = t
        .leg(&handler)
        .ok_or_else(|| dtmcli::Error::invalid(format!("no handler {handler}")))?;
    let bb = BranchBarrier::new(info.clone());
    let result = bank.store.adjust(&bb, key.to_string(), amount).await;
    let said = match &result {
        Ok(Outcome::Executed(())) => format!("executed: {key} {amount:+}"),
        Ok(other) => format!("{other:?}: skipped"),
        Err(e) => format!("error: {e}"),
    };
    bank.record(format!(
        "{} {handler:<15} branch {} op {:<10} -> {said}",
        info.gid, info.branch_id, info.op
    ));
    result?;
    Ok(Json(serde_json::json!({"dtm_result": "SUCCESS"})))
}

/// The msg back-check on the store.
async fn query_prepared<S: Balances>(
    State(bank): State<KvBank<S>>,
    info: TransInfo,
) -> Result<Json<serde_json::Value>, dtmcli::Error> {
    BranchBarrier::new(info).query_prepared(&bank.store).await?;
    Ok(Json(serde_json::json!({"dtm_result": "SUCCESS"})))
}
