//! A chain whose effects stay invisible until every step commits: the donation scenario of
//! the CTAS article, as a TCC global transaction on MariaDB.
//!
//! A donation is three steps: check or create the donor (a user), check or create the
//! product with its price, record who donated what and when. Each step is a TCC branch whose
//! try reserves invisibly (a row in state `pending`, tagged with the gid that created it),
//! whose confirm publishes (`confirmed`) and whose cancel removes what the try created.
//! Every handler runs its business inside [`BranchBarrier::call`], so a cancel whose try
//! never ran (null compensation), a try arriving after its cancel (hanging) and a repeated
//! confirm are harmless.
//!
//! **What readers see.** DTM v1.19.0 confirms the branches one at a time, in reverse
//! registration order (the record first, the donor last), and retries a confirm that
//! fails. Between two confirms a donation is half published, so the public read is three
//! views that publish it in one step:
//!
//! - `example_donation_public`: a confirmed donation whose donor and product are confirmed;
//! - `example_donation_user_public` / `_product_public`: a confirmed user or product that
//!   existed before (no creator) or whose creating donation is public.
//!
//! So the donation, and the user or product it created, appear in the same commit (the
//! last confirm), and never disappear: a cancel only removes `pending` rows its own gid
//! created, and a try only references a user or product that is already public. A try that
//! finds one being created by another in-flight donation waits (outside its local
//! transaction) until that one is public or gone; if another donation creates it in
//! the meantime, the try fails cleanly and its donation rolls back.
//!
//! The run: 20 donations at once, some failing at different steps (a blocked donor, a
//! wrong price, an amount over the limit, a try so slow that the caller gives up, which
//! then arrives after its cancel), one confirm answering 500 before committing and one
//! after (so DTM calls it again), several creating the same new user or product. A
//! reader reads the public views in a loop and fails the scenario if it ever sees a
//! partial donation. At the end: exactly the donations whose transaction succeeded are
//! public, no pending row remains, and the failed ones left no row.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use dtm_barrier::{BranchBarrier, Error as BError, Outcome};
use dtmcli::{DtmClient, Op, TransInfo, TransOptions, TransStatus};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use sqlx::{MySqlConnection, MySqlPool};

use super::{ensure, final_status, mysql_pool, poll, set_up_tables, ID_COLUMN};
use crate::demo::DemoError;

const USERS: &str = "dtm_busi.example_donation_user";
const PRODUCTS: &str = "dtm_busi.example_donation_product";
const DONATIONS: &str = "dtm_busi.example_donation";
const USERS_PUBLIC: &str = "dtm_busi.example_donation_user_public";
const PRODUCTS_PUBLIC: &str = "dtm_busi.example_donation_product_public";
const DONATIONS_PUBLIC: &str = "dtm_busi.example_donation_public";

/// Donations above this need a manual review: the record's try refuses them.
const LIMIT: i64 = 1000;
/// How long a try waits for a user or product another donation is creating.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(10);
/// How long the slow try sleeps, and how long its caller waits for it.
const SLOW_TRY: Duration = Duration::from_secs(4);
const SLOW_TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// The refusal of a try that lost a race for a new user or product (a clean failure).
const RACE_LOST: &str = "is being created by another donation";

/// The three steps of a donation, in registration (and try) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Step {
    User,
    Product,
    Record,
}

impl Step {
    const ALL: [Step; 3] = [Step::User, Step::Product, Step::Record];

    fn as_str(self) -> &'static str {
        match self {
            Step::User => "user",
            Step::Product => "product",
            Step::Record => "record",
        }
    }

    fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A fault the plan injects into one handler of one donation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Inject {
    #[default]
    Nothing,
    /// The confirm of this step answers 500 once, before committing anything.
    ConfirmFailsOnce(Step),
    /// The confirm of this step commits, then answers 500 once (the answer is lost).
    ConfirmAnswerLost(Step),
    /// The try of this step sleeps [`SLOW_TRY`] before doing anything, longer than its
    /// caller waits: the caller aborts, DTM cancels, and the try arrives after its cancel.
    SlowTry(Step),
}

/// The body of every branch of a donation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Donation {
    /// The run this donation belongs to (every row is scoped by it).
    run: String,
    donor: String,
    product: String,
    price: i64,
    #[serde(default)]
    inject: Inject,
}

/// One planned donation: who gives what at which price, and the fault injected.
struct Plan {
    donor: &'static str,
    product: &'static str,
    price: i64,
    inject: Inject,
    /// Where it must fail, if the plan makes it fail.
    fails: Option<&'static str>,
}

const fn ok(donor: &'static str, product: &'static str, price: i64) -> Plan {
    Plan {
        donor,
        product,
        price,
        inject: Inject::Nothing,
        fails: None,
    }
}

/// The 20 donations: users `ana` and `ben` and products `book` (12) and `tree` (5) exist
/// before the run; every other name is created by the donations, several of them at once.
fn plan() -> Vec<Plan> {
    vec![
        ok("ana", "book", 12),
        ok("ben", "tree", 5),
        ok("chloe", "tree", 5),
        ok("chloe", "book", 12),
        ok("chloe", "well", 100),
        ok("dan", "well", 100),
        ok("dan", "book", 12),
        Plan {
            fails: Some("the product try: book costs 12"),
            ..ok("eve", "book", 10)
        },
        Plan {
            fails: Some("the user try: mallory is blocked"),
            ..ok("mallory", "tree", 5)
        },
        Plan {
            fails: Some("the record try: over the limit"),
            ..ok("fay", "yacht", 5000)
        },
        ok("fay", "tree", 5),
        Plan {
            inject: Inject::ConfirmFailsOnce(Step::Product),
            ..ok("gus", "kite", 8)
        },
        ok("ana", "kite", 8),
        Plan {
            inject: Inject::ConfirmAnswerLost(Step::User),
            ..ok("hana", "tree", 5)
        },
        Plan {
            inject: Inject::SlowTry(Step::User),
            fails: Some("the user try: too slow, the caller gave up"),
            ..ok("ivan", "book", 12)
        },
        ok("ben", "well", 100),
        ok("jo", "lamp", 30),
        ok("jo", "lamp", 30),
        Plan {
            inject: Inject::ConfirmFailsOnce(Step::Record),
            ..ok("kim", "lamp", 30)
        },
        ok("ana", "tree", 5),
    ]
}

/// What one handler call did, for the narrative and the checks.
#[derive(Debug, Clone)]
struct Event {
    gid: String,
    step: Step,
    op: String,
    what: String,
}

struct Inner {
    pool: MySqlPool,
    events: Mutex<Vec<Event>>,
    /// The injected one-time faults that already fired, by (gid, step).
    fired: Mutex<HashSet<(String, Step)>>,
    /// Donations whose try waited for another donation's user or product, and how long.
    waits: Mutex<Vec<(String, String, Duration)>>,
}

#[derive(Clone)]
struct App(Arc<Inner>);

impl App {
    fn event(&self, gid: &str, step: Step, op: &str, what: impl Into<String>) {
        self.0
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Event {
                gid: gid.to_string(),
                step,
                op: op.to_string(),
                what: what.into(),
            });
    }

    fn events(&self) -> Vec<Event> {
        self.0
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True the first time the fault of (gid, step) fires.
    fn fire_once(&self, gid: &str, step: Step) -> bool {
        self.0
            .fired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((gid.to_string(), step))
    }
}

/// A user or a product: the two "check or create" steps share their logic.
struct Entity {
    step: Step,
    table: &'static str,
    public: &'static str,
}

const USER: Entity = Entity {
    step: Step::User,
    table: USERS,
    public: USERS_PUBLIC,
};
const PRODUCT: Entity = Entity {
    step: Step::Product,
    table: PRODUCTS,
    public: PRODUCTS_PUBLIC,
};

impl Entity {
    fn name<'a>(&self, d: &'a Donation) -> &'a str {
        match self.step {
            Step::User => &d.donor,
            _ => &d.product,
        }
    }
}

/// Tables, views and the barrier table; rows of runs older than an hour are removed.
async fn set_up(pool: &MySqlPool) -> Result<(), DemoError> {
    let id = ID_COLUMN;
    let ddl = [
        format!(
            "create table if not exists {USERS}(run {id}, name varchar(64) not null, \
             state varchar(16) not null, created_by {id}, \
             created_at timestamp(6) not null default current_timestamp(6), \
             primary key(run, name)) engine=InnoDB"
        ),
        format!(
            "create table if not exists {PRODUCTS}(run {id}, name varchar(64) not null, \
             price bigint not null, state varchar(16) not null, created_by {id}, \
             created_at timestamp(6) not null default current_timestamp(6), \
             primary key(run, name)) engine=InnoDB"
        ),
        format!(
            "create table if not exists {DONATIONS}(run {id}, gid {id}, \
             donor varchar(64) not null, product varchar(64) not null, price bigint not null, \
             state varchar(16) not null, \
             created_at timestamp(6) not null default current_timestamp(6), \
             primary key(run, gid)) engine=InnoDB"
        ),
        // The public read. A donation: its row, donor and product all confirmed.
        format!(
            "create or replace view {DONATIONS_PUBLIC} as \
             select d.run, d.gid, d.donor, d.product, d.price, p.price as product_price, d.created_at \
             from {DONATIONS} d \
             join {USERS} u on u.run = d.run and u.name = d.donor and u.state = 'confirmed' \
             join {PRODUCTS} p on p.run = d.run and p.name = d.product and p.state = 'confirmed' \
             where d.state = 'confirmed'"
        ),
        // A user or product: confirmed, and pre-existing or created by a public donation.
        format!(
            "create or replace view {USERS_PUBLIC} as \
             select u.run, u.name, u.created_by from {USERS} u where u.state = 'confirmed' \
             and (u.created_by = '' or exists (select 1 from {DONATIONS_PUBLIC} d \
             where d.run = u.run and d.gid = u.created_by))"
        ),
        format!(
            "create or replace view {PRODUCTS_PUBLIC} as \
             select p.run, p.name, p.price, p.created_by from {PRODUCTS} p where p.state = 'confirmed' \
             and (p.created_by = '' or exists (select 1 from {DONATIONS_PUBLIC} d \
             where d.run = p.run and d.gid = p.created_by))"
        ),
    ];
    set_up_tables(pool, &ddl, &[USERS, PRODUCTS, DONATIONS]).await
}

/// The users and products that exist before the run.
async fn seed(pool: &MySqlPool, run: &str) -> Result<(), DemoError> {
    for u in ["ana", "ben"] {
        sqlx::query(&format!(
            "insert into {USERS}(run, name, state, created_by) values(?, ?, 'confirmed', '')"
        ))
        .bind(run)
        .bind(u)
        .execute(pool)
        .await?;
    }
    for (p, price) in [("book", 12_i64), ("tree", 5)] {
        sqlx::query(&format!(
            "insert into {PRODUCTS}(run, name, price, state, created_by) values(?, ?, ?, 'confirmed', '')"
        ))
        .bind(run)
        .bind(p)
        .bind(price)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Removes every row of the run.
async fn clean(pool: &MySqlPool, run: &str) -> Result<(), DemoError> {
    for t in [USERS, PRODUCTS, DONATIONS] {
        sqlx::query(&format!("delete from {t} where run = ?"))
            .bind(run)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// One branch call: `POST /api/donation/{step}/{op}`.
async fn branch(
    State(app): State<App>,
    Path((step, op)): Path<(String, String)>,
    info: TransInfo,
    body: Bytes,
) -> Result<Json<serde_json::Value>, dtmcli::Error> {
    let step = Step::parse(&step).ok_or_else(|| dtmcli::Error::invalid("no such step"))?;
    if op != info.op.as_str() {
        return Err(dtmcli::Error::invalid(format!(
            "{op} handler called with op {}",
            info.op
        )));
    }
    let d: Donation = serde_json::from_slice(&body).map_err(dtmcli::Error::invalid)?;
    let gid = info.gid.clone();
    match (info.op.clone(), d.inject) {
        (Op::Confirm, Inject::ConfirmFailsOnce(s)) if s == step && app.fire_once(&gid, step) => {
            app.event(&gid, step, &op, "answered 500 before committing (injected)");
            return Err(dtmcli::Error::other("injected: the confirm crashed"));
        }
        (Op::Try, Inject::SlowTry(s)) if s == step => {
            // A slow service keeps working after its caller gave up: the try runs in its own
            // task, which finishes even when the caller's connection is gone.
            let task = tokio::spawn(async move {
                tokio::time::sleep(SLOW_TRY).await;
                guarded(&app, step, info, &d).await
            });
            return match task.await {
                Ok(r) => r.map(|()| success()),
                Err(e) => Err(dtmcli::Error::other(e.to_string())),
            };
        }
        (Op::Confirm, Inject::ConfirmAnswerLost(s)) if s == step => {
            guarded(&app, step, info, &d).await?;
            if app.fire_once(&gid, step) {
                app.event(&gid, step, &op, "committed, then answered 500 (injected)");
                return Err(dtmcli::Error::other("injected: the answer was lost"));
            }
            return Ok(success());
        }
        _ => {}
    }
    guarded(&app, step, info, &d).await?;
    Ok(success())
}

fn success() -> Json<serde_json::Value> {
    Json(serde_json::json!({"dtm_result": "SUCCESS"}))
}

/// Runs the business of (step, op) under the barrier and records what happened.
///
/// The try of the user or product step first waits while another donation is creating the
/// same name; if another one wins the race to create it in the meantime, the local
/// transaction is refused (rolled back, its barrier row with it) and the try waits and runs
/// again, with a fresh barrier for the same request: nothing of the refused attempt
/// remains.
async fn guarded(app: &App, step: Step, info: TransInfo, d: &Donation) -> dtmcli::Result<()> {
    let gid = info.gid.clone();
    let op = info.op.clone();
    let entity: Option<&'static Entity> = match step {
        Step::User => Some(&USER),
        Step::Product => Some(&PRODUCT),
        Step::Record => None,
    };
    let started = Instant::now();
    let result = loop {
        if let (Op::Try, Some(e)) = (&op, entity) {
            wait_until_settled(app, e, d, &gid).await?;
        }
        let result = business(app, entity, BranchBarrier::new(info.clone()), d).await;
        match &result {
            Err(e) if lost_race(e) && started.elapsed() < WAIT_FOR_OTHER => {
                app.event(
                    &gid,
                    step,
                    op.as_str(),
                    "lost the race to create it: waits again",
                );
            }
            _ => break result,
        }
    };
    let what = match &result {
        Ok(Outcome::Executed(what)) => format!("executed: {what}"),
        Ok(Outcome::Duplicate) => "skipped by the barrier: duplicate or after its cancel".into(),
        Ok(Outcome::NullCompensation) => "skipped by the barrier: null compensation".into(),
        // (Outcome may grow: a later barrier's outcome is reported as skipped.)
        Ok(_) => "skipped by the barrier".into(),
        Err(e) if e.is_failure() => format!("refused: {e}"),
        Err(e) => format!("error: {e}"),
    };
    app.event(&gid, step, op.as_str(), what);
    result?;
    Ok(())
}

fn lost_race(e: &BError) -> bool {
    e.is_failure() && e.to_string().contains(RACE_LOST)
}

/// One guarded local transaction: the business of the request's op on `entity` (the user
/// or product step) or on the donation record (`None`).
async fn business(
    app: &App,
    entity: Option<&'static Entity>,
    bb: BranchBarrier,
    d: &Donation,
) -> dtm_barrier::Result<Outcome<String>> {
    let op = bb.info().op.clone();
    // Refused before the barrier opens a local transaction for it.
    if !matches!(op, Op::Try | Op::Confirm | Op::Cancel) {
        return Err(dtmcli::Error::invalid(format!("no handler for op {op}")).into());
    }
    // The business closure owns what it uses: it must outlive any borrow of the
    // transaction's connection.
    let (d, g) = (d.clone(), bb.info().gid.clone());
    bb.call(&app.0.pool, move |c| {
        Box::pin(async move {
            match (op, entity) {
                (Op::Try, Some(e)) => check_or_create(c, e, &d, &g).await,
                (Op::Try, None) => record(c, &d, &g).await,
                (op, Some(e)) => settle(c, e, &d, &g, op == Op::Confirm).await,
                (op, None) => settle_record(c, &d, &g, op == Op::Confirm).await,
            }
        })
    })
    .await
}

/// Before the try's local transaction: while the user or product is being created by
/// another donation (pending, or confirmed but that donation not yet public), wait until it
/// is public or gone. Outside the transaction, so that the other donation's confirm or
/// cancel is not blocked by our locks.
async fn wait_until_settled(app: &App, e: &Entity, d: &Donation, gid: &str) -> dtmcli::Result<()> {
    let name = e.name(d);
    let started = Instant::now();
    let mut waited = false;
    loop {
        let row: Option<(Vec<u8>, i64)> = sqlx::query_as(&format!(
            "select t.created_by, (select count(*) from {} p where p.run = t.run and p.name = t.name) \
             from {} t where t.run = ? and t.name = ?",
            e.public, e.table
        ))
        .bind(&d.run)
        .bind(name)
        .fetch_optional(&app.0.pool)
        .await
        .map_err(dtmcli::Error::other)?;
        let settled = match &row {
            None => true,
            Some((_, public)) if *public > 0 => true,
            Some((by, _)) => by.as_slice() == gid.as_bytes(),
        };
        if settled {
            break;
        }
        if started.elapsed() > WAIT_FOR_OTHER {
            return Err(dtmcli::Error::failure(format!(
                "{} {name} {RACE_LOST} for too long",
                e.step.as_str()
            )));
        }
        waited = true;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if waited {
        app.0.waits.lock().unwrap_or_else(|p| p.into_inner()).push((
            gid.to_string(),
            name.to_string(),
            started.elapsed(),
        ));
    }
    Ok(())
}

/// Try of the user or product step: create it `pending` (tagged with our gid), or reference
/// it if it is public (with the same price, for a product).
async fn check_or_create(
    c: &mut MySqlConnection,
    e: &Entity,
    d: &Donation,
    gid: &str,
) -> dtm_barrier::Result<String> {
    let name = e.name(d);
    if e.step == Step::User && name == "mallory" {
        return Err(BError::failure("mallory is on the blocklist"));
    }
    let sql = match e.step {
        Step::Product => format!(
            "insert ignore into {}(run, name, price, state, created_by) values(?, ?, ?, 'pending', ?)",
            e.table
        ),
        _ => format!(
            "insert ignore into {}(run, name, state, created_by) values(?, ?, 'pending', ?)",
            e.table
        ),
    };
    let mut insert = sqlx::query(&sql).bind(&d.run).bind(name);
    if e.step == Step::Product {
        insert = insert.bind(d.price);
    }
    let inserted = insert.bind(gid).execute(&mut *c).await?.rows_affected();
    if inserted == 1 {
        return Ok(format!("{} {name} created (pending)", e.step.as_str()));
    }
    // It exists. Locking reads see the latest committed state (not a snapshot), and the
    // shared locks keep it as it is until we commit.
    let price: Option<i64> = sqlx::query_scalar(&format!(
        "select {} from {} where run = ? and name = ? lock in share mode",
        if e.step == Step::Product {
            "price"
        } else {
            "cast(0 as signed)"
        },
        e.table
    ))
    .bind(&d.run)
    .bind(name)
    .fetch_optional(&mut *c)
    .await?;
    let public: i64 = sqlx::query_scalar(&format!(
        "select count(*) from {} where run = ? and name = ? lock in share mode",
        e.public
    ))
    .bind(&d.run)
    .bind(name)
    .fetch_one(&mut *c)
    .await?;
    if price.is_none() || public == 0 {
        return Err(BError::failure(format!(
            "{} {name} {RACE_LOST}",
            e.step.as_str()
        )));
    }
    if e.step == Step::Product && price != Some(d.price) {
        return Err(BError::failure(format!(
            "{name} costs {}, not {}",
            price.unwrap_or_default(),
            d.price
        )));
    }
    Ok(format!("{} {name} exists", e.step.as_str()))
}

/// Try of the record step: the donation row, `pending`.
async fn record(c: &mut MySqlConnection, d: &Donation, gid: &str) -> dtm_barrier::Result<String> {
    if d.price > LIMIT {
        return Err(BError::failure(format!(
            "a donation of {} needs a manual review (limit {LIMIT})",
            d.price
        )));
    }
    sqlx::query(&format!(
        "insert into {DONATIONS}(run, gid, donor, product, price, state) values(?, ?, ?, ?, ?, 'pending')"
    ))
    .bind(&d.run)
    .bind(gid)
    .bind(&d.donor)
    .bind(&d.product)
    .bind(d.price)
    .execute(&mut *c)
    .await?;
    Ok("donation recorded (pending)".into())
}

/// Confirm (`confirm`) or cancel of the user or product step: publishes, or removes, the
/// row if this donation created it (a pending row tagged with our gid); what others
/// created or confirmed is never touched.
async fn settle(
    c: &mut MySqlConnection,
    e: &Entity,
    d: &Donation,
    gid: &str,
    confirm: bool,
) -> dtm_barrier::Result<String> {
    let own = "where run = ? and name = ? and created_by = ? and state = 'pending'";
    let (sql, done, nothing) = if confirm {
        (
            format!("update {} set state = 'confirmed' {own}", e.table),
            "confirmed",
            "nothing to confirm",
        )
    } else {
        (
            format!("delete from {} {own}", e.table),
            "removed",
            "nothing to remove",
        )
    };
    let n = sqlx::query(&sql)
        .bind(&d.run)
        .bind(e.name(d))
        .bind(gid)
        .execute(&mut *c)
        .await?
        .rows_affected();
    Ok(if n == 1 { done } else { nothing }.into())
}

/// Confirm (`confirm`) or cancel of the record step: publishes, or removes, the pending
/// donation row.
async fn settle_record(
    c: &mut MySqlConnection,
    d: &Donation,
    gid: &str,
    confirm: bool,
) -> dtm_barrier::Result<String> {
    let (sql, done) = if confirm {
        (
            format!("update {DONATIONS} set state = 'confirmed' where run = ? and gid = ?"),
            "confirmed",
        )
    } else {
        (
            format!("delete from {DONATIONS} where run = ? and gid = ? and state = 'pending'"),
            "removed",
        )
    };
    sqlx::query(&sql)
        .bind(&d.run)
        .bind(gid)
        .execute(&mut *c)
        .await?;
    Ok(done.into())
}

/// One consistent snapshot of the public read.
#[derive(Debug, Default)]
struct Snapshot {
    /// gid -> (donor, product, price, product's price)
    donations: BTreeMap<String, (String, String, i64, i64)>,
    /// name -> creator gid ('' before the run)
    users: BTreeMap<String, String>,
    /// name -> (price, creator gid)
    products: BTreeMap<String, (i64, String)>,
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

/// Reads the three public views in one transaction (one snapshot).
async fn read_public(pool: &MySqlPool, run: &str) -> Result<Snapshot, DemoError> {
    let mut tx = pool.begin().await?;
    let donations: Vec<(Vec<u8>, String, String, i64, i64)> = sqlx::query_as(&format!(
        "select gid, donor, product, price, product_price from {DONATIONS_PUBLIC} where run = ?"
    ))
    .bind(run)
    .fetch_all(&mut *tx)
    .await?;
    let users: Vec<(String, Vec<u8>)> = sqlx::query_as(&format!(
        "select name, created_by from {USERS_PUBLIC} where run = ?"
    ))
    .bind(run)
    .fetch_all(&mut *tx)
    .await?;
    let products: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(&format!(
        "select name, price, created_by from {PRODUCTS_PUBLIC} where run = ?"
    ))
    .bind(run)
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(Snapshot {
        donations: donations
            .into_iter()
            .map(|(g, u, p, pr, ppr)| (text(g), (u, p, pr, ppr)))
            .collect(),
        users: users.into_iter().map(|(n, c)| (n, text(c))).collect(),
        products: products
            .into_iter()
            .map(|(n, pr, c)| (n, (pr, text(c))))
            .collect(),
    })
}

/// What the reader saw.
#[derive(Debug, Default)]
struct ReaderReport {
    reads: u64,
    /// Every donation gid it ever saw.
    seen: HashSet<String>,
}

/// Checks one snapshot against the invariants and against what was seen before.
fn check_snapshot(s: &Snapshot, prev: &Snapshot, failed: &HashSet<String>) -> Result<(), String> {
    for (gid, (donor, product, price, product_price)) in &s.donations {
        if !s.users.contains_key(donor) {
            return Err(format!("donation {gid} visible without its donor {donor}"));
        }
        match s.products.get(product) {
            None => {
                return Err(format!(
                    "donation {gid} visible without its product {product}"
                ))
            }
            Some((p, _)) if p != price || product_price != price => {
                return Err(format!(
                    "donation {gid} of {product} recorded at {price}, product costs {p}"
                ))
            }
            _ => {}
        }
        if failed.contains(gid) {
            return Err(format!("donation {gid} of a failed transaction is visible"));
        }
    }
    for (name, by) in s
        .users
        .iter()
        .chain(s.products.iter().map(|(n, (_, by))| (n, by)))
    {
        if !by.is_empty() && !s.donations.contains_key(by) {
            return Err(format!(
                "{name} visible before the donation {by} that created it"
            ));
        }
    }
    for (gid, d) in &prev.donations {
        if s.donations.get(gid) != Some(d) {
            return Err(format!(
                "donation {gid} was visible and then changed or vanished"
            ));
        }
    }
    for name in prev.users.keys() {
        if !s.users.contains_key(name) {
            return Err(format!("user {name} was visible and then vanished"));
        }
    }
    for (name, p) in &prev.products {
        if s.products.get(name) != Some(p) {
            return Err(format!(
                "product {name} was visible and then changed or vanished"
            ));
        }
    }
    Ok(())
}

/// Reads the public views continuously until `stop`; the first violation is an error.
async fn reader(
    pool: MySqlPool,
    run: String,
    stop: Arc<AtomicBool>,
    failed: Arc<Mutex<HashSet<String>>>,
) -> Result<ReaderReport, DemoError> {
    let mut report = ReaderReport::default();
    let mut prev = Snapshot::default();
    while !stop.load(Ordering::SeqCst) {
        let s = read_public(&pool, &run).await?;
        report.reads += 1;
        let failed_now = failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        check_snapshot(&s, &prev, &failed_now)
            .map_err(|v| format!("invariant violated: the reader saw {v}"))?;
        report.seen.extend(s.donations.keys().cloned());
        prev = s;
        tokio::task::yield_now().await;
    }
    Ok(report)
}

/// How one donation ended, from its caller's side.
struct Result1 {
    gid: String,
    /// The error of `tcc_global_transaction`, if it aborted.
    error: Option<String>,
}

/// Runs one donation as a TCC global transaction: three branches, tried in order.
async fn donate(
    dtm: &DtmClient,
    base: &str,
    run: &str,
    p: &Plan,
    failed: &Mutex<HashSet<String>>,
) -> Result<Result1, DemoError> {
    let gid = dtm.new_gid().await?;
    let body = Donation {
        run: run.to_string(),
        donor: p.donor.to_string(),
        product: p.product.to_string(),
        price: p.price,
        inject: p.inject,
    };
    // A confirm that fails is retried after a second (DTM's default is 10 s).
    let mut options = TransOptions::default().retry_interval(Duration::from_secs(1));
    if matches!(p.inject, Inject::SlowTry(_)) {
        options = options.request_timeout(SLOW_TRY_TIMEOUT);
    }
    let url = |s: Step, op: &str| format!("{base}/api/donation/{}/{op}", s.as_str());
    let r = dtm
        .tcc_global_transaction(&gid, options, |tcc| async move {
            for s in Step::ALL {
                tcc.call_branch(&body, &url(s, "try"), &url(s, "confirm"), &url(s, "cancel"))
                    .await
                    .map_err(|e| {
                        dtmcli::Error::failure(format!("{} try: {}", s.as_str(), reason(&e)))
                    })?;
            }
            Ok(())
        })
        .await;
    if r.is_err() {
        failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(gid.clone());
    }
    Ok(Result1 {
        gid,
        error: r.err().map(|e| e.to_string()),
    })
}

/// Runs the donation scenario against the DTM server of `dtm` (see the module docs).
pub async fn run(dtm: &DtmClient) -> Result<(), DemoError> {
    let started = Instant::now();
    let pool = mysql_pool(40).await?;
    set_up(&pool).await?;
    // Every row of this run carries its tag, so runs never see each other's rows.
    let run = dtm.new_gid().await?;
    seed(&pool, &run).await?;
    let app = App(Arc::new(Inner {
        pool: pool.clone(),
        events: Mutex::default(),
        fired: Mutex::default(),
        waits: Mutex::default(),
    }));
    let router = Router::new()
        .route("/api/donation/{step}/{op}", post(branch))
        .with_state(app.clone());
    let base = crate::demo::serve(router).await?;
    let plan = plan();
    println!("== donations: a TCC chain that stays invisible until all of it is confirmed");
    println!("   each donation: 1. check or create the donor, 2. check or create the product");
    println!("   with its price, 3. record the donation; try = a pending row, confirm =");
    println!("   publish, cancel = remove. Readers query views that show a donation, and a");
    println!("   user or product it created, only once all three are confirmed.");
    println!("   branches at {base}/api/donation, run tag {run}");
    println!(
        "   {} donations at once (users ana, ben and products book 12, tree 5 exist),",
        plan.len()
    );
    println!("   while a reader checks every snapshot of the public views.\n");

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(HashSet::new()));
    let reading = tokio::spawn(reader(
        pool.clone(),
        run.clone(),
        stop.clone(),
        failed.clone(),
    ));

    let results = join_all(plan.iter().map(|p| donate(dtm, &base, &run, p, &failed))).await;
    let results = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut statuses = Vec::new();
    for r in &results {
        statuses.push(final_status(dtm, &r.gid, Duration::from_secs(30)).await?);
    }
    // The slow try of the plan finishes after its transaction did; wait for it too.
    for (p, r) in plan.iter().zip(&results) {
        if let Inject::SlowTry(step) = p.inject {
            let gid = r.gid.clone();
            poll("the slow try to arrive", SLOW_TRY * 3, || {
                let events = app.events();
                let gid = gid.clone();
                async move {
                    Ok(events
                        .iter()
                        .any(|e| e.gid == gid && e.step == step && e.op == "try")
                        .then_some(()))
                }
            })
            .await?;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let report = reading.await??;

    // The story, one line per donation.
    let events = app.events();
    let waits = app
        .0
        .waits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut succeeded = HashSet::new();
    for (i, ((p, r), status)) in plan.iter().zip(&results).zip(&statuses).enumerate() {
        let outcome = match (status, &r.error) {
            (TransStatus::Succeed, None) => {
                succeeded.insert(r.gid.clone());
                "confirmed".to_string()
            }
            (TransStatus::Failed, Some(e)) => format!("rolled back ({})", short(e)),
            (s, e) => {
                return Err(format!(
                    "donation {} ({}): caller got {e:?} but DTM says {s:?}",
                    i + 1,
                    r.gid
                )
                .into())
            }
        };
        println!(
            "   #{:02} {:<8} gives {:<6} ({:>4}): {outcome}",
            i + 1,
            p.donor,
            p.product,
            p.price
        );
        for e in events.iter().filter(|e| {
            e.gid == r.gid
                && (e.what.contains("injected")
                    || e.what.contains("race")
                    || e.what.starts_with("skipped"))
        }) {
            println!("       {} {}: {}", e.step.as_str(), e.op, e.what);
        }
        for (_, name, took) in waits.iter().filter(|w| w.0 == r.gid) {
            println!("       waited {took:.1?} for another donation creating {name}");
        }
        match (p.fails, status) {
            (Some(_), TransStatus::Succeed) => {
                return Err(format!("donation {} should have failed but succeeded", i + 1).into())
            }
            (None, TransStatus::Failed)
                if !r.error.as_deref().unwrap_or_default().contains(RACE_LOST) =>
            {
                return Err(format!("donation {} failed unexpectedly: {:?}", i + 1, r.error).into())
            }
            _ => {}
        }
    }

    // The order DTM called the confirms in, for a donation that created its donor.
    if let Some((p, r)) = plan
        .iter()
        .zip(&results)
        .find(|(p, r)| p.donor == "chloe" && succeeded.contains(&r.gid))
    {
        let order: Vec<&str> = events
            .iter()
            .filter(|e| e.gid == r.gid && e.op == "confirm" && e.what.starts_with("executed"))
            .map(|e| e.step.as_str())
            .collect();
        println!(
            "\n   DTM confirmed {}'s donation of {} in the order {}: the donation is public",
            p.donor,
            p.product,
            order.join(", ")
        );
        println!("   from the last one on, together with what it created");
    }

    // The checks at the end.
    let end = read_public(&pool, &run).await?;
    let visible: HashSet<String> = end.donations.keys().cloned().collect();
    ensure(visible == succeeded, || {
        format!("public donations {visible:?} differ from the succeeded ones {succeeded:?}")
    })?;
    for ((p, r), _) in plan.iter().zip(&results).zip(&statuses) {
        if let Some(d) = end.donations.get(&r.gid) {
            ensure(
                (d.0.as_str(), d.1.as_str(), d.2) == (p.donor, p.product, p.price),
                || format!("donation {} is public as {d:?}", r.gid),
            )?;
        }
    }
    check_snapshot(&end, &Snapshot::default(), &HashSet::new())
        .map_err(|v| format!("invariant violated at the end: {v}"))?;
    let pending: i64 = sqlx::query_scalar(&format!(
        "select (select count(*) from {USERS} where run = ? and state <> 'confirmed') \
         + (select count(*) from {PRODUCTS} where run = ? and state <> 'confirmed') \
         + (select count(*) from {DONATIONS} where run = ? and state <> 'confirmed')"
    ))
    .bind(&run)
    .bind(&run)
    .bind(&run)
    .fetch_one(&pool)
    .await?;
    ensure(pending == 0, || format!("{pending} pending rows remain"))?;
    let failed_gids: Vec<&String> = results
        .iter()
        .map(|r| &r.gid)
        .filter(|g| !succeeded.contains(*g))
        .collect();
    for gid in &failed_gids {
        let traces: i64 = sqlx::query_scalar(&format!(
            "select (select count(*) from {USERS} where run = ? and created_by = ?) \
             + (select count(*) from {PRODUCTS} where run = ? and created_by = ?) \
             + (select count(*) from {DONATIONS} where run = ? and gid = ?)"
        ))
        .bind(&run)
        .bind(gid.as_str())
        .bind(&run)
        .bind(gid.as_str())
        .bind(&run)
        .bind(gid.as_str())
        .fetch_one(&pool)
        .await?;
        ensure(traces == 0, || {
            format!("failed donation {gid} left {traces} rows")
        })?;
    }
    let unexpected: Vec<&String> = report.seen.difference(&succeeded).collect();
    ensure(unexpected.is_empty(), || {
        format!("the reader saw donations that did not succeed: {unexpected:?}")
    })?;
    // The barrier's work: every skip the plan provokes happened.
    let count = |f: &dyn Fn(&Event) -> bool| events.iter().filter(|e| f(e)).count();
    let null_comp = count(&|e| e.what.contains("null compensation"));
    let late_try = count(&|e| e.op == "try" && e.what.starts_with("skipped"));
    let dup_confirm = count(&|e| e.op == "confirm" && e.what.starts_with("skipped"));
    ensure(late_try == 1 && dup_confirm >= 1 && null_comp >= 4, || {
        format!("barrier skips: {late_try} late tries, {dup_confirm} duplicate confirms, {null_comp} null compensations")
    })?;
    let new_users = end.users.values().filter(|c| !c.is_empty()).count();
    let new_products = end.products.values().filter(|(_, c)| !c.is_empty()).count();
    println!(
        "\n   {} donations confirmed, {} rolled back; {new_users} users and {new_products} products created",
        succeeded.len(),
        failed_gids.len()
    );
    println!(
        "   the reader did {} reads and never saw a partial donation ({} distinct donations seen)",
        report.reads,
        report.seen.len()
    );
    println!(
        "   barrier: {null_comp} null compensations, {dup_confirm} duplicate confirm, {late_try} try after its cancel: all skipped"
    );
    println!("   no pending rows remain; the rolled-back donations left no row");
    println!("   ({:.1?})", started.elapsed());
    clean(&pool, &run).await?;
    Ok(())
}

/// Why a try failed, in a few words: a branch's refusal message, or what went wrong.
fn reason(e: &dtmcli::Error) -> String {
    match e {
        dtmcli::Error::Failure(body) => serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| body.clone()),
        e if e.is_transport() => "no answer in time, the caller gave up".into(),
        e => e.to_string(),
    }
}

/// The reason of a rolled-back donation as the caller reported it.
fn short(e: &str) -> &str {
    e.trim_start_matches("FAILURE: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(
        donations: &[(&str, &str, &str, i64)],
        users: &[(&str, &str)],
        products: &[(&str, i64, &str)],
    ) -> Snapshot {
        Snapshot {
            donations: donations
                .iter()
                .map(|(g, u, p, pr)| (g.to_string(), (u.to_string(), p.to_string(), *pr, *pr)))
                .collect(),
            users: users
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect(),
            products: products
                .iter()
                .map(|(n, pr, c)| (n.to_string(), (*pr, c.to_string())))
                .collect(),
        }
    }

    #[test]
    fn partial_donations_are_caught() {
        let none = HashSet::new();
        let empty = Snapshot::default();
        let good = snap(
            &[("g1", "ana", "well", 100)],
            &[("ana", "")],
            &[("well", 100, "g1")],
        );
        assert!(check_snapshot(&good, &empty, &none).is_ok());
        // Without its donor, with another price, a creator not public, a vanished row.
        let no_user = snap(&[("g1", "ana", "well", 100)], &[], &[("well", 100, "g1")]);
        assert!(check_snapshot(&no_user, &empty, &none).is_err());
        let price = snap(
            &[("g1", "ana", "well", 90)],
            &[("ana", "")],
            &[("well", 100, "g1")],
        );
        assert!(check_snapshot(&price, &empty, &none).is_err());
        let early = snap(&[], &[("ana", "")], &[("well", 100, "g1")]);
        assert!(check_snapshot(&early, &empty, &none).is_err());
        assert!(check_snapshot(&empty, &good, &none).is_err());
        let failed = HashSet::from(["g1".to_string()]);
        assert!(check_snapshot(&good, &empty, &failed).is_err());
    }
}
