//! Reprocessing: transfers into one hot account row under contention, completed by the
//! reprocessing policy where the plain guarded call reports deadlocks and write conflicts.
//!
//! Twenty customers pay a shop at once. Each payment is a 2-phase message: the customer's
//! debit is the local transaction ([`dtm_barrier::do_and_submit`]), and the shop's credit
//! is the message's branch, which DTM calls for all twenty at about the same moment. The
//! credit reads the shop's balance with a shared lock, takes a moment to compute the new
//! one, and writes it (a read-modify-write under a lock, as much business code does), all
//! inside the barrier's local transaction. Twenty of them on one row:
//!
//! - on MariaDB, every one holds a shared lock and wants an exclusive one: InnoDB breaks the
//!   deadlock by killing transactions (error 1213);
//! - on MongoDB, the first writer wins and the others' transactions end with `WriteConflict`
//!   (error 112).
//!
//! Each store runs two rounds. With the plain [`BranchBarrier::call`], a loser's branch
//! answers the error and DTM calls it again later (after its retry interval, one at a time
//! from its cron), so the payments all complete, but later. With
//! [`BranchBarrier::call_reprocessing`] and a [`ReprocessPolicy`], the loser's whole local
//! transaction (barrier rows included) is rolled back and run again at once, with the
//! same barrier id: every payment completes in its first call from DTM. The scenario counts
//! how many times each business closure ran (a small histogram), and checks that the
//! balances are exact and that each payment is in the shop's ledger exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::any;
use axum::{Json, Router};
use dtm_barrier::reprocess::ReprocessPolicy;
use dtm_barrier::{BranchBarrier, Outcome, TransactionalStore};
use dtmcli::{DtmClient, TransInfo, TransOptions, TransStatus};
use futures_util::future::{join_all, BoxFuture};
use mongodb::bson::{doc, Document};
use mongodb::ClientSession;
use serde::{Deserialize, Serialize};
use sqlx::{MySqlConnection, MySqlPool};

use super::{ensure, final_status, mongo_client, mysql_pool, set_up_tables, ID_COLUMN};
use crate::demo::DemoError;

const ACCOUNTS: &str = "dtm_busi.example_hot_account";
const LEDGER: &str = "dtm_busi.example_hot_ledger";
/// How many customers pay the shop at once.
const PAYERS: i64 = 20;
/// What each customer has before paying.
const START: i64 = 100;
/// The shop's account: the hot row.
const SHOP: &str = "shop";
/// The time the credit takes between reading the balance and writing it.
const THINK: Duration = Duration::from_millis(20);

/// Twenty transactions on one row: the unluckiest loses many times (13 runs seen), so the
/// policy allows far more attempts than the default 5.
fn policy() -> ReprocessPolicy {
    ReprocessPolicy {
        max_attempts: 50,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(200),
    }
}

/// The store a round runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Db {
    Mariadb,
    Mongodb,
}

impl Db {
    fn as_str(self) -> &'static str {
        match self {
            Db::Mariadb => "mariadb",
            Db::Mongodb => "mongodb",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Db::Mariadb => "MariaDB",
            Db::Mongodb => "MongoDB",
        }
    }
}

/// How the credit is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `bb.call`: a conflict is the branch's answer, DTM retries later.
    Plain,
    /// `bb.call_reprocessing`: a conflict re-runs the local transaction at once.
    Reprocess,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Reprocess => "reprocess",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        [Mode::Plain, Mode::Reprocess]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// The body of the credit: who pays how much; `round` scopes the rows of one round.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    round: String,
    payer: String,
    amount: i64,
}

/// What happened to one payment's credit.
#[derive(Debug, Clone, Default)]
struct Stat {
    /// Calls from DTM.
    calls: u32,
    /// Runs of the business closure.
    attempts: u32,
    /// Calls answered with a deadlock or write conflict.
    conflicts: u32,
    /// Calls answered with another error.
    errors: u32,
}

struct Inner {
    pool: MySqlPool,
    mongo: mongodb::Client,
    stats: Mutex<HashMap<String, Stat>>,
    /// The first conflict's message, to show what the database said.
    first_conflict: Mutex<Option<String>>,
}

#[derive(Clone)]
struct App(Arc<Inner>);

impl App {
    fn stat(&self, gid: &str, f: impl FnOnce(&mut Stat)) {
        let mut stats = self.0.stats.lock().unwrap_or_else(|p| p.into_inner());
        f(stats.entry(gid.to_string()).or_default());
    }

    fn take_stats(&self) -> HashMap<String, Stat> {
        std::mem::take(&mut *self.0.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn key(round: &str, id: &str) -> String {
    format!("{round}:{id}")
}

fn mongo_accounts(c: &mongodb::Client) -> mongodb::Collection<Document> {
    c.database("dtm_busi").collection("example_hot_account")
}

fn mongo_ledger(c: &mongodb::Client) -> mongodb::Collection<Document> {
    c.database("dtm_busi").collection("example_hot_ledger")
}

/// One run of the shop's credit, inside the local transaction (a connection or a session).
type Credit<C> = for<'c> fn(&'c mut C, String, Payment) -> BoxFuture<'c, dtm_barrier::Result<()>>;

/// The shop's credit of payment `p` (its `gid`) as the business of a guarded call: a
/// closure that can run more than once, each run counted as an attempt.
fn counted<C>(
    app: App,
    gid: String,
    p: Payment,
    credit: Credit<C>,
) -> impl for<'c> FnMut(&'c mut C) -> BoxFuture<'c, dtm_barrier::Result<()>> + Send {
    move |c| {
        app.stat(&gid, |s| s.attempts += 1);
        credit(c, gid.clone(), p.clone())
    }
}

/// The shop's credit on MariaDB.
fn mariadb_credit(
    c: &mut MySqlConnection,
    gid: String,
    p: Payment,
) -> BoxFuture<'_, dtm_barrier::Result<()>> {
    Box::pin(async move {
        let balance: i64 = sqlx::query_scalar(&format!(
            "select balance from {ACCOUNTS} where run = ? and id = ? lock in share mode"
        ))
        .bind(&p.round)
        .bind(SHOP)
        .fetch_one(&mut *c)
        .await?;
        tokio::time::sleep(THINK).await;
        sqlx::query(&format!(
            "update {ACCOUNTS} set balance = ? where run = ? and id = ?"
        ))
        .bind(balance + p.amount)
        .bind(&p.round)
        .bind(SHOP)
        .execute(&mut *c)
        .await?;
        sqlx::query(&format!(
            "insert into {LEDGER}(run, gid, applied) values(?, ?, 1) \
                 on duplicate key update applied = applied + 1"
        ))
        .bind(&p.round)
        .bind(&gid)
        .execute(&mut *c)
        .await?;
        Ok(())
    })
}

/// The shop's credit on MongoDB, in the session's transaction.
fn mongodb_credit(
    s: &mut ClientSession,
    gid: String,
    p: Payment,
) -> BoxFuture<'_, dtm_barrier::Result<()>> {
    Box::pin(async move {
        let client = s.client();
        let shop = mongo_accounts(&client)
            .find_one(doc! {"_id": key(&p.round, SHOP)})
            .session(&mut *s)
            .await?
            .and_then(|d| d.get_i64("balance").ok())
            .ok_or_else(|| dtm_barrier::Error::business("the shop's account is missing"))?;
        tokio::time::sleep(THINK).await;
        mongo_accounts(&client)
            .update_one(
                doc! {"_id": key(&p.round, SHOP)},
                doc! {"$set": {"balance": shop + p.amount}},
            )
            .session(&mut *s)
            .await?;
        mongo_ledger(&client)
            .update_one(
                doc! {"_id": key(&p.round, &gid)},
                doc! {"$inc": {"applied": 1_i64}},
            )
            .upsert(true)
            .session(&mut *s)
            .await?;
        Ok(())
    })
}

/// Runs `credit` under the barrier on `store` as `mode` says; also says whether a failure
/// was transient (a conflict).
async fn guarded<S, F>(
    bb: &BranchBarrier,
    store: &S,
    mode: Mode,
    credit: F,
) -> (dtm_barrier::Result<Outcome<()>>, bool)
where
    S: TransactionalStore,
    F: for<'c> FnMut(&'c mut S::Conn) -> BoxFuture<'c, dtm_barrier::Result<()>>,
{
    let r = match mode {
        Mode::Plain => bb.call(store, credit).await,
        Mode::Reprocess => bb.call_reprocessing(store, &policy(), credit).await,
    };
    let transient = matches!(&r, Err(e) if S::is_transient(e));
    (r, transient)
}

/// `POST /api/hot/{db}/{mode}/credit` (the branch) and `GET .../qp` (the back-check).
async fn handle(
    State(app): State<App>,
    Path((db, mode, op)): Path<(String, String, String)>,
    info: TransInfo,
    body: Bytes,
) -> Result<Json<serde_json::Value>, dtmcli::Error> {
    let db = [Db::Mariadb, Db::Mongodb]
        .into_iter()
        .find(|d| d.as_str() == db)
        .ok_or_else(|| dtmcli::Error::invalid("no such database"))?;
    let mode = Mode::parse(&mode).ok_or_else(|| dtmcli::Error::invalid("no such mode"))?;
    let gid = info.gid.clone();
    let bb = BranchBarrier::new(info);
    if op == "qp" {
        match db {
            Db::Mariadb => bb.query_prepared(&app.0.pool).await?,
            Db::Mongodb => bb.query_prepared(&app.0.mongo).await?,
        }
        return Ok(Json(serde_json::json!({"dtm_result": "SUCCESS"})));
    }
    let p: Payment = serde_json::from_slice(&body).map_err(dtmcli::Error::invalid)?;
    app.stat(&gid, |s| s.calls += 1);
    let (result, transient) = match db {
        Db::Mariadb => {
            let credit = counted(app.clone(), gid.clone(), p, mariadb_credit);
            guarded(&bb, &app.0.pool, mode, credit).await
        }
        Db::Mongodb => {
            let credit = counted(app.clone(), gid.clone(), p, mongodb_credit);
            guarded(&bb, &app.0.mongo, mode, credit).await
        }
    };
    if let Err(e) = &result {
        if transient {
            app.stat(&gid, |s| s.conflicts += 1);
            app.0
                .first_conflict
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(|| e.to_string());
        } else {
            app.stat(&gid, |s| s.errors += 1);
        }
    }
    // A conflict is answered as a retryable error (500): DTM calls the branch again later.
    result?;
    Ok(Json(serde_json::json!({"dtm_result": "SUCCESS"})))
}

async fn set_up(pool: &MySqlPool) -> Result<(), DemoError> {
    let id = ID_COLUMN;
    let ddl = [
        format!(
            "create table if not exists {ACCOUNTS}(run {id}, id varchar(32) not null, \
             balance bigint not null, created_at timestamp(6) not null default current_timestamp(6), \
             primary key(run, id)) engine=InnoDB"
        ),
        format!(
            "create table if not exists {LEDGER}(run {id}, gid {id}, applied int not null, \
             created_at timestamp(6) not null default current_timestamp(6), \
             primary key(run, gid)) engine=InnoDB"
        ),
    ];
    set_up_tables(pool, &ddl, &[ACCOUNTS, LEDGER]).await
}

fn payer(i: i64) -> String {
    format!("payer-{i:02}")
}

/// Opens the shop (0) and the payers (100 each) of a round.
async fn open_accounts(app: &App, db: Db, round: &str) -> Result<(), DemoError> {
    let accounts =
        std::iter::once((SHOP.to_string(), 0)).chain((1..=PAYERS).map(|i| (payer(i), START)));
    for (id, balance) in accounts {
        match db {
            Db::Mariadb => {
                sqlx::query(&format!(
                    "insert into {ACCOUNTS}(run, id, balance) values(?, ?, ?)"
                ))
                .bind(round)
                .bind(&id)
                .bind(balance)
                .execute(&app.0.pool)
                .await?;
            }
            Db::Mongodb => {
                mongo_accounts(&app.0.mongo)
                    .insert_one(doc! {"_id": key(round, &id), "balance": balance})
                    .await?;
            }
        }
    }
    Ok(())
}

/// The balances of a round (id -> balance) and its ledger (gid -> times applied).
async fn read_round(
    app: &App,
    db: Db,
    round: &str,
) -> Result<(BTreeMap<String, i64>, BTreeMap<String, i64>), DemoError> {
    match db {
        Db::Mariadb => {
            let accounts: Vec<(String, i64)> =
                sqlx::query_as(&format!("select id, balance from {ACCOUNTS} where run = ?"))
                    .bind(round)
                    .fetch_all(&app.0.pool)
                    .await?;
            let ledger: Vec<(Vec<u8>, i32)> =
                sqlx::query_as(&format!("select gid, applied from {LEDGER} where run = ?"))
                    .bind(round)
                    .fetch_all(&app.0.pool)
                    .await?;
            Ok((
                accounts.into_iter().collect(),
                ledger
                    .into_iter()
                    .map(|(g, n)| (String::from_utf8_lossy(&g).into_owned(), i64::from(n)))
                    .collect(),
            ))
        }
        Db::Mongodb => {
            let prefix = format!("{round}:");
            let read = |c: mongodb::Collection<Document>, field: &'static str| {
                let prefix = prefix.clone();
                async move {
                    let mut out = BTreeMap::new();
                    let mut cursor = c
                        .find(doc! {"_id": {"$regex": format!("^{}", regex_escape(&prefix))}})
                        .await?;
                    while cursor.advance().await? {
                        let d = cursor.deserialize_current()?;
                        let id = d.get_str("_id").unwrap_or_default();
                        out.insert(
                            id.trim_start_matches(&prefix).to_string(),
                            d.get_i64(field).unwrap_or(-1),
                        );
                    }
                    Ok::<_, DemoError>(out)
                }
            };
            let accounts = read(mongo_accounts(&app.0.mongo), "balance").await?;
            let ledger = read(mongo_ledger(&app.0.mongo), "applied").await?;
            Ok((accounts, ledger))
        }
    }
}

/// Round tags are DTM gids (letters and digits); escaped anyway.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc = !c.is_ascii_alphanumeric() && c != ':' && c != '-';
            esc.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

async fn clean(app: &App, db: Db, round: &str) -> Result<(), DemoError> {
    match db {
        Db::Mariadb => {
            for t in [ACCOUNTS, LEDGER] {
                sqlx::query(&format!("delete from {t} where run = ?"))
                    .bind(round)
                    .execute(&app.0.pool)
                    .await?;
            }
        }
        Db::Mongodb => {
            let filter =
                doc! {"_id": {"$regex": format!("^{}", regex_escape(&format!("{round}:")))}};
            mongo_accounts(&app.0.mongo)
                .delete_many(filter.clone())
                .await?;
            mongo_ledger(&app.0.mongo).delete_many(filter).await?;
        }
    }
    Ok(())
}

/// One payment: the payer's debit as the local transaction, the shop's credit as the
/// message's branch.
async fn pay(
    dtm: &DtmClient,
    app: &App,
    base: &str,
    db: Db,
    mode: Mode,
    p: Payment,
) -> Result<String, DemoError> {
    let gid = dtm.new_gid().await?;
    let url = |op: &str| format!("{base}/api/hot/{}/{}/{op}", db.as_str(), mode.as_str());
    let options = if mode == Mode::Plain {
        // The losers are retried after 1 s (DTM's default is 10 s).
        TransOptions::default()
            .request_timeout(Duration::from_secs(10))
            .retry_interval(Duration::from_secs(1))
    } else {
        // With reprocessing, DTM must not call a credit again while its first call still
        // runs: its cron does once the retry interval has passed, and its request timeout
        // cuts the call. On a loaded machine a first call (several attempts with back-off)
        // took longer than 10 s: both are a minute here (the barrier would make a second
        // call harmless, but the point is that the first one completes).
        TransOptions::default()
            .request_timeout(Duration::from_secs(60))
            .retry_interval(Duration::from_secs(60))
    };
    let msg = dtm.msg(&gid).add(&url("credit"), &p).with_options(options);
    let (amount, round, who) = (p.amount, p.round.clone(), p.payer.clone());
    match db {
        Db::Mariadb => {
            dtm_barrier::do_and_submit(&msg, &url("qp"), &app.0.pool, move |c| {
                Box::pin(async move {
                    sqlx::query(&format!(
                        "update {ACCOUNTS} set balance = balance - ? where run = ? and id = ? and balance >= ?"
                    ))
                    .bind(amount)
                    .bind(&round)
                    .bind(&who)
                    .bind(amount)
                    .execute(&mut *c)
                    .await?;
                    Ok(())
                })
            })
            .await?
        }
        Db::Mongodb => {
            dtm_barrier::do_and_submit(&msg, &url("qp"), &app.0.mongo, move |s| {
                Box::pin(async move {
                    mongo_accounts(&s.client())
                        .update_one(
                            doc! {"_id": key(&round, &who)},
                            doc! {"$inc": {"balance": -amount}},
                        )
                        .session(&mut *s)
                        .await?;
                    Ok(())
                })
            })
            .await?
        }
    }
    Ok(gid)
}

/// The database's words in a conflict error, without the drivers' wrapping.
fn said(e: &str) -> String {
    let e = e
        .trim_start_matches("sql: error returned from database: ")
        .trim_start_matches("mongodb: Kind: Command failed: ");
    let end = e.find(". ").map_or(e.len(), |i| i + 1);
    e[..end].chars().take(120).collect()
}

/// A bar per count: how many payments needed how many calls or runs.
fn histogram(label: &str, counts: impl IntoIterator<Item = u32>) {
    let mut h = BTreeMap::new();
    for c in counts {
        *h.entry(c).or_insert(0_usize) += 1;
    }
    println!("     {label}:");
    for (n, payments) in h {
        println!("       {n:>2} | {:<20} {payments}", "#".repeat(payments));
    }
}

/// One round: 20 payments at once on `db`, guarded the `mode` way; checks the balances.
async fn round(
    dtm: &DtmClient,
    app: &App,
    base: &str,
    db: Db,
    mode: Mode,
) -> Result<(), DemoError> {
    let round = dtm.new_gid().await?;
    open_accounts(app, db, &round).await?;
    *app.0
        .first_conflict
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = None;
    let how = match mode {
        Mode::Plain => "plain bb.call",
        Mode::Reprocess => "bb.call_reprocessing",
    };
    println!(
        "-- {} with {how}: {PAYERS} payments into the shop at once",
        db.name()
    );
    let started = Instant::now();
    let payments = (1..=PAYERS).map(|i| Payment {
        round: round.clone(),
        payer: payer(i),
        amount: i,
    });
    let gids = join_all(payments.map(|p| pay(dtm, app, base, db, mode, p)))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    for gid in &gids {
        let s = final_status(dtm, gid, Duration::from_secs(40)).await?;
        ensure(s == TransStatus::Succeed, || {
            format!("payment {gid} ended {s:?}")
        })?;
    }
    let took = started.elapsed();
    let stats = app.take_stats();
    let stat = |g: &String| stats.get(g).cloned().unwrap_or_default();
    let conflicts: u32 = gids.iter().map(|g| stat(g).conflicts).sum();
    let errors: u32 = gids.iter().map(|g| stat(g).errors).sum();
    let first = app
        .0
        .first_conflict
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default();

    // Exact: the shop got every amount once, each payer paid once, each payment is in the
    // ledger exactly once.
    let (accounts, ledger) = read_round(app, db, &round).await?;
    let total: i64 = (1..=PAYERS).sum();
    ensure(accounts.get(SHOP) == Some(&total), || {
        format!(
            "{}: the shop has {:?}, not {total}",
            db.name(),
            accounts.get(SHOP)
        )
    })?;
    for i in 1..=PAYERS {
        ensure(accounts.get(&payer(i)) == Some(&(START - i)), || {
            format!(
                "{}: {} has {:?}",
                db.name(),
                payer(i),
                accounts.get(&payer(i))
            )
        })?;
    }
    ensure(
        ledger.len() == gids.len() && gids.iter().all(|g| ledger.get(g) == Some(&1)),
        || format!("{}: the ledger is {ledger:?}", db.name()),
    )?;
    ensure(errors == 0, || {
        format!("{errors} credits failed with another error")
    })?;

    match mode {
        Mode::Plain => {
            ensure(conflicts > 0, || {
                format!("{}: no conflict was provoked", db.name())
            })?;
            println!("     {conflicts} credits answered a conflict; DTM called them again later");
            println!("     the database said: {}", said(&first));
            histogram("DTM calls per payment", gids.iter().map(|g| stat(g).calls));
        }
        Mode::Reprocess => {
            let calls: Vec<u32> = gids.iter().map(|g| stat(g).calls).collect();
            ensure(conflicts == 0 && calls.iter().all(|c| *c == 1), || {
                format!(
                    "{}: {conflicts} credits still answered a conflict; DTM calls {calls:?}",
                    db.name()
                )
            })?;
            let attempts: Vec<u32> = gids.iter().map(|g| stat(g).attempts).collect();
            ensure(attempts.iter().any(|a| *a > 1), || {
                format!("{}: no conflict was provoked", db.name())
            })?;
            println!("     every credit completed in its first call from DTM");
            histogram(
                "attempts (runs of the local transaction) per payment",
                attempts,
            );
        }
    }
    println!(
        "     all {PAYERS} done in {took:.1?}; shop balance {total} = the sum of the payments; \
         every payer debited once; each payment in the ledger once\n"
    );
    clean(app, db, &round).await?;
    Ok(())
}

/// Runs the reprocessing scenario against the DTM server of `dtm` (see the module docs).
pub async fn run(dtm: &DtmClient) -> Result<(), DemoError> {
    let started = Instant::now();
    let pool = mysql_pool(60).await?;
    set_up(&pool).await?;
    let app = App(Arc::new(Inner {
        pool,
        mongo: mongo_client().await?,
        stats: Mutex::default(),
        first_conflict: Mutex::default(),
    }));
    let router = Router::new()
        .route("/api/hot/{db}/{mode}/{op}", any(handle))
        .with_state(app.clone());
    let base = crate::demo::serve(router).await?;
    println!("== reprocessing: {PAYERS} payments into one hot account at once");
    println!("   each payment: a msg whose local transaction debits the payer and whose branch");
    println!("   credits the shop: read its balance with a shared lock, compute for {THINK:?},");
    println!("   write it, all in the barrier's local transaction\n");
    for db in [Db::Mariadb, Db::Mongodb] {
        for mode in [Mode::Plain, Mode::Reprocess] {
            round(dtm, &app, &base, db, mode).await?;
        }
    }
    println!("   ({:.1?})", started.elapsed());
    Ok(())
}
