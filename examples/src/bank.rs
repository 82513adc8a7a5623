//! A bank service whose handlers are guarded by the branch barrier on real databases
//! (MySQL/MariaDB and PostgreSQL), including XA branches.
//!
//! Routes: `POST|GET /api/bank/{db}/{handler}` with `db` = `mysql` or `postgres`:
//!
//! | handler | business (guarded by the barrier) |
//! |---|---|
//! | `TransOut` / `TransOutCompensate` | debit `from` / credit it back (saga) |
//! | `TransIn` / `TransInCompensate` | credit `to` / debit it back (saga) |
//! | `TransInTwice` | credits `to` in two guarded local transactions (barrier ids 01 and 02) |
//! | `TransOutTry` / `TransOutConfirm` / `TransOutCancel` | TCC debit of `from` (confirm does nothing but write its barrier row) |
//! | `TransInTry` / `TransInConfirm` / `TransInCancel` | TCC credit of `to` |
//! | `TransOutXa` / `TransInXa` | XA branches (phase 1 debit/credit, phase 2 commit/rollback) |
//! | `QueryPrepared` | msg back-check |
//!
//! and `POST /api/bank/multi/TransMulti` (`TransMultiRevert`): one branch that debits `from`
//! on MariaDB and credits `to` on PostgreSQL, each part guarded.
//!
//! A debit below zero answers FAILURE. `trans_out_result` / `trans_in_result` = `FAILURE`
//! in the body make the action/try fail *after* its write, so the rollback of the business
//! together with the barrier rows can be seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use dtm_barrier::sql::create_barrier_table;
use dtm_barrier::xa::{XaDatabase, XaLocal};
use dtm_barrier::{BranchBarrier, Error as BError, Outcome, TableName};
use dtmcli::{DtmClient, TransInfo};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::{MySql, MySqlPool, PgPool, Pool, Postgres};

/// The request body of the bank handlers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BankReq {
    /// Amount to move.
    pub amount: i64,
    /// Account debited by the `TransOut*` handlers.
    pub from: i64,
    /// Account credited by the `TransIn*` handlers.
    pub to: i64,
    /// `FAILURE` makes the out action/try fail after its write.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trans_out_result: String,
    /// `FAILURE` makes the in action/try fail after its write.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trans_in_result: String,
}

impl BankReq {
    /// Moves `amount` from `from` to `to`; the credit fails after its write when `fail_in`.
    pub fn transfer(amount: i64, from: i64, to: i64, fail_in: bool) -> BankReq {
        BankReq {
            amount,
            from,
            to,
            trans_in_result: crate::busi::fails_if(fail_in),
            ..Default::default()
        }
    }
}

/// What a bank handler does, as its business: the account it adjusts, by how much, and the
/// failure it gives after its write when the request says `FAILURE` for its side.
pub(crate) struct Leg {
    pub(crate) user: i64,
    pub(crate) delta: i64,
    pub(crate) fail: Option<String>,
}

impl BankReq {
    /// The [`Leg`] of `handler` (`TransOut`, `TransInCancel`...; `QueryPrepared` has none),
    /// the same over HTTP and gRPC.
    pub(crate) fn leg(&self, handler: &str) -> dtmcli::Result<Leg> {
        let (user, delta, forced) = match handler {
            "TransOut" | "TransOutTry" | "TransOutXa" => {
                (self.from, -self.amount, self.trans_out_result.as_str())
            }
            "TransOutCompensate" | "TransOutCancel" => (self.from, self.amount, ""),
            "TransIn" | "TransInTry" | "TransInXa" | "TransInTwice" => {
                (self.to, self.amount, self.trans_in_result.as_str())
            }
            "TransInCompensate" | "TransInCancel" => (self.to, -self.amount, ""),
            "TransOutConfirm" | "TransInConfirm" => (0, 0, ""),
            other => return Err(dtmcli::Error::invalid(format!("unknown handler {other}"))),
        };
        let fail = (forced == "FAILURE").then(|| format!("{handler} told to fail"));
        Ok(Leg { user, delta, fail })
    }
}

/// The MySQL URL of the tests and examples (`$MYSQL_URL`, default root on 127.0.0.1:3306).
pub fn mysql_url() -> String {
    std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The PostgreSQL URL (`$PG_URL`, default postgres on 127.0.0.1:5432).
pub fn pg_url() -> String {
    std::env::var("PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The account table.
pub const ACCOUNTS: &str = "dtm_busi.user_account";

/// Which database a handler uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Db {
    /// MariaDB / MySQL.
    Mysql,
    /// PostgreSQL.
    Postgres,
}

impl Db {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Db::Mysql => "mysql",
            Db::Postgres => "postgres",
        }
    }
}

struct Inner {
    mysql: MySqlPool,
    pg: PgPool,
    xa_mysql: XaLocal<MySql, DtmClient>,
    xa_pg: XaLocal<Postgres, DtmClient>,
    executed: Mutex<HashMap<(String, String), usize>>,
}

/// The bank service (cheap to clone).
#[derive(Clone)]
pub struct Bank(Arc<Inner>);

impl std::fmt::Debug for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank").finish_non_exhaustive()
    }
}

/// An error of the bank's set-up.
pub type BankError = Box<dyn std::error::Error + Send + Sync>;

impl Bank {
    /// Connects to both databases and creates the account and barrier tables if missing.
    pub async fn connect(dtm: DtmClient) -> Result<Bank, BankError> {
        let mysql = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(30)
            .connect(&mysql_url())
            .await?;
        let pg = sqlx::postgres::PgPoolOptions::new()
            .max_connections(30)
            .connect(&pg_url())
            .await?;
        let table = TableName::default();
        create_barrier_table(&mysql, &table).await?;
        create_barrier_table(&pg, &table).await?;
        let accounts = format!(
            "create table if not exists {ACCOUNTS}(user_id bigint primary key, balance bigint not null)"
        );
        sqlx::raw_sql(&format!(
            "create database if not exists dtm_busi; {accounts} engine=InnoDB"
        ))
        .execute(&mysql)
        .await?;
        sqlx::raw_sql(&format!("create schema if not exists dtm_busi; {accounts}"))
            .execute(&pg)
            .await?;
        let xa_mysql = XaLocal::new(mysql_url().parse()?, dtm.clone());
        let xa_pg = XaLocal::new(pg_url().parse()?, dtm);
        Ok(Bank(Arc::new(Inner {
            mysql,
            pg,
            xa_mysql,
            xa_pg,
            executed: Mutex::new(HashMap::new()),
        })))
    }

    /// The MySQL pool.
    pub fn mysql(&self) -> &MySqlPool {
        &self.0.mysql
    }

    /// The PostgreSQL pool.
    pub fn pg(&self) -> &PgPool {
        &self.0.pg
    }

    /// Creates (or resets) an account.
    pub async fn open_account(&self, db: Db, user: i64, balance: i64) -> Result<(), sqlx::Error> {
        match db {
            Db::Mysql => MySql::open(&self.0.mysql, user, balance).await,
            Db::Postgres => Postgres::open(&self.0.pg, user, balance).await,
        }
    }

    /// An account's balance.
    pub async fn balance(&self, db: Db, user: i64) -> Result<i64, sqlx::Error> {
        match db {
            Db::Mysql => MySql::balance(&self.0.mysql, user).await,
            Db::Postgres => Postgres::balance(&self.0.pg, user).await,
        }
    }

    /// The barrier rows of `gid`, as `trans_type/branch_id/op/barrier_id/reason`, ordered.
    pub async fn barrier_rows(&self, db: Db, gid: &str) -> Result<Vec<String>, sqlx::Error> {
        let sql = "select trans_type, branch_id, op, barrier_id, reason from dtm_barrier.barrier where gid = ";
        let rows: Vec<(String, String, String, String, String)> = match db {
            Db::Mysql => {
                // sqlx reads the utf8mb4_bin identity columns as VARBINARY: convert them.
                let sql = "select trans_type, convert(branch_id using utf8mb4), convert(op using utf8mb4), \
                    convert(barrier_id using utf8mb4), reason from dtm_barrier.barrier where gid = ";
                sqlx::query_as(&format!("{sql}? order by id"))
                    .bind(gid)
                    .fetch_all(&self.0.mysql)
                    .await?
            }
            Db::Postgres => {
                sqlx::query_as(&format!("{sql}$1 order by id"))
                    .bind(gid)
                    .fetch_all(&self.0.pg)
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(t, b, o, i, r)| format!("{t}/{b}/{o}/{i}/{r}"))
            .collect())
    }

    /// How often the business of `handler` actually ran (committed or not) for `gid`.
    pub fn executed(&self, gid: &str, handler: &str) -> usize {
        self.lock()
            .get(&(gid.to_string(), handler.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), usize>> {
        self.0.executed.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn count(&self, gid: &str, handler: &str) {
        *self
            .lock()
            .entry((gid.to_string(), handler.to_string()))
            .or_default() += 1;
    }

    /// The router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/bank/{db}/{handler}", any(handle))
            .with_state(self.clone())
            .layer(dtmcli::trace::BranchSpanLayer::http())
    }

    /// Serves on 127.0.0.1 (port 0: a free one); returns the base URL
    /// `http://127.0.0.1:<port>/api/bank`.
    pub async fn serve(&self, port: u16) -> std::io::Result<String> {
        let addr = crate::demo::serve_http(port, self.router(), "bank server").await?;
        Ok(format!("http://{addr}/api/bank"))
    }
}

/// Adds `delta` to `user`'s balance inside the guarded transaction; refuses to go below zero.
pub(crate) fn adjust_sql<'c, DB: BankDb>(
    conn: &'c mut DB::Connection,
    user: i64,
    delta: i64,
) -> BoxFuture<'c, dtm_barrier::Result<()>> {
    DB::adjust(conn, user, delta)
}

/// SQL of the bank per database (the gRPC bank uses it too).
pub(crate) trait BankDb: XaDatabase {
    /// Adds `delta` to `user`'s balance inside a local transaction; refuses to go below zero.
    fn adjust(
        conn: &mut Self::Connection,
        user: i64,
        delta: i64,
    ) -> BoxFuture<'_, dtm_barrier::Result<()>>;

    /// Creates (or resets) `user`'s account with `balance`.
    async fn open(pool: &Pool<Self>, user: i64, balance: i64) -> Result<(), sqlx::Error>;

    /// `user`'s balance.
    async fn balance(pool: &Pool<Self>, user: i64) -> Result<i64, sqlx::Error>;
}

/// [`BankDb`] for a sqlx database, from its SQL (`{t}` the account table): the SQL of each
/// database differs only in its placeholders and its upsert. The guarded update binds the
/// delta, the user, the delta again.
macro_rules! bank_db {
    ($db:ty, adjust: $adjust:literal, open: $open:literal, balance: $balance:literal) => {
        impl BankDb for $db {
            fn adjust(
                conn: &mut Self::Connection,
                user: i64,
                delta: i64,
            ) -> BoxFuture<'_, dtm_barrier::Result<()>> {
                Box::pin(async move {
                    let r = sqlx::query(&format!($adjust, t = ACCOUNTS))
                        .bind(delta)
                        .bind(user)
                        .bind(delta)
                        .execute(&mut *conn)
                        .await?;
                    if r.rows_affected() == 0 {
                        return Err(BError::failure(format!(
                            "account {user}: insufficient balance or unknown"
                        )));
                    }
                    Ok(())
                })
            }

            async fn open(pool: &Pool<Self>, user: i64, balance: i64) -> Result<(), sqlx::Error> {
                sqlx::query(&format!($open, t = ACCOUNTS))
                    .bind(user)
                    .bind(balance)
                    .execute(pool)
                    .await?;
                Ok(())
            }

            async fn balance(pool: &Pool<Self>, user: i64) -> Result<i64, sqlx::Error> {
                sqlx::query_scalar(&format!($balance, t = ACCOUNTS))
                    .bind(user)
                    .fetch_one(pool)
                    .await
            }
        }
    };
}

bank_db!(MySql,
    adjust: "update {t} set balance = balance + ? where user_id = ? and balance + ? >= 0",
    open: "replace into {t}(user_id, balance) values(?, ?)",
    balance: "select balance from {t} where user_id = ?");
bank_db!(Postgres,
    adjust: "update {t} set balance = balance + $1 where user_id = $2 and balance + $3 >= 0",
    open: "insert into {t}(user_id, balance) values($1, $2) on conflict (user_id) do update set balance = excluded.balance",
    balance: "select balance from {t} where user_id = $1");

async fn handle(
    State(bank): State<Bank>,
    Path((db, handler)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: String,
) -> Response {
    let result = async {
        let info = TransInfo::from_query(query.as_deref().unwrap_or(""))?;
        let req: BankReq = if body.is_empty() {
            BankReq::default()
        } else {
            serde_json::from_str(&body).map_err(|e| dtmcli::Error::invalid(format!("body: {e}")))?
        };
        match db.as_str() {
            "mysql" => {
                run::<MySql>(&bank, &bank.0.mysql, &bank.0.xa_mysql, &handler, info, req).await
            }
            "postgres" => {
                run::<Postgres>(&bank, &bank.0.pg, &bank.0.xa_pg, &handler, info, req).await
            }
            "multi" => multi_source(&bank, &handler, info, req).await,
            other => Err(dtmcli::Error::invalid(format!("unknown database {other}"))),
        }
    }
    .await;
    match result {
        Ok(()) => Json(serde_json::json!({"dtm_result": "SUCCESS"})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run<DB: BankDb>(
    bank: &Bank,
    pool: &Pool<DB>,
    xa: &XaLocal<DB, DtmClient>,
    handler: &str,
    info: TransInfo,
    req: BankReq,
) -> dtmcli::Result<()> {
    if handler == "QueryPrepared" {
        return BranchBarrier::new(info)
            .query_prepared(pool)
            .await
            .map_err(Into::into);
    }
    let gid = info.gid.clone();
    let Leg { user, delta, fail } = req.leg(handler)?;
    let business = guarded::<DB>(
        bank.clone(),
        gid.clone(),
        handler.to_string(),
        user,
        delta,
        fail,
    );
    if handler.ends_with("Xa") {
        xa.handle(&info, business).await?;
        return Ok(());
    }
    let bb = BranchBarrier::new(info);
    if handler == "TransInTwice" {
        let half = delta / 2;
        for part in [half, delta - half] {
            let out: Outcome<()> = bb
                .call(
                    pool,
                    guarded::<DB>(
                        bank.clone(),
                        gid.clone(),
                        handler.to_string(),
                        user,
                        part,
                        None,
                    ),
                )
                .await?;
            tracing::debug!(?out, "TransInTwice part");
        }
        return Ok(());
    }
    bb.call(pool, business).await?;
    Ok(())
}

/// One branch over two databases (DTM's `SagaMultiSource`): `TransMulti` debits `from` on
/// MariaDB and credits `to` on PostgreSQL, `TransMultiRevert` undoes both; each database's
/// part is its own guarded local transaction of the one barrier (barrier id 01 on MariaDB,
/// 02 on PostgreSQL), so a retried branch skips the parts already done.
async fn multi_source(
    bank: &Bank,
    handler: &str,
    info: TransInfo,
    req: BankReq,
) -> dtmcli::Result<()> {
    let sign = match handler {
        "TransMulti" => 1,
        "TransMultiRevert" => -1,
        other => return Err(dtmcli::Error::invalid(format!("unknown handler {other}"))),
    };
    let gid = info.gid.clone();
    let bb = BranchBarrier::new(info);
    let debit = guarded::<MySql>(
        bank.clone(),
        gid.clone(),
        format!("{handler}/mysql"),
        req.from,
        -sign * req.amount,
        None,
    );
    bb.call(&bank.0.mysql, debit).await?;
    let fail = (req.trans_in_result == "FAILURE").then(|| format!("{handler} told to fail"));
    let credit = guarded::<Postgres>(
        bank.clone(),
        gid,
        format!("{handler}/postgres"),
        req.to,
        sign * req.amount,
        fail,
    );
    bb.call(&bank.0.pg, credit).await?;
    Ok(())
}

/// The guarded business of a handler: counts its execution, adjusts the balance, and fails
/// after the write when told to (the gRPC bank's too).
pub(crate) fn guarded<DB: BankDb>(
    bank: Bank,
    gid: String,
    handler: String,
    user: i64,
    delta: i64,
    fail: Option<String>,
) -> impl for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, dtm_barrier::Result<()>> + Send {
    move |conn| {
        bank.count(&gid, &handler);
        Box::pin(async move {
            if delta != 0 {
                adjust_sql::<DB>(conn, user, delta).await?;
            }
            match fail {
                Some(msg) => Err(BError::failure(msg)),
                None => Ok(()),
            }
        })
    }
}
