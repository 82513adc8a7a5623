//! A Stepping-style job: ordered steps started inside a local database transaction, run one
//! after another only after it commits, each retried until it succeeds, across MariaDB,
//! Redis and MongoDB, and not lost when the service running them crashes between steps.
//!
//! Built on DTM's 2-phase message. The job (an order to fulfil) is created in a MariaDB
//! local transaction together with the msg barrier row (the outbox:
//! [`dtm_barrier::do_and_submit`]); only then does DTM run the message's branches, in
//! order, stopping at the first one that does not succeed and retrying it later (DTM
//! v1.19.0 `dtmsvr/trans_type_msg.go`):
//!
//! 1. reserve the items (MariaDB);
//! 2. credit the customer's loyalty points (Redis, the barrier's atomic adjustment);
//! 3. create the shipment (MongoDB), noting what steps 1 and 2 had done when it ran.
//!
//! The steps are served by a separate worker process (this program run as
//! `__worker stepping <port> <mode>`), each guarded by the barrier in its own store, so a
//! step DTM runs again is skipped. The scenario shows:
//!
//! - **a crash between steps**: the worker is SIGKILLed after step 1 committed, while it
//!   holds step 2; a new worker starts on the same port; DTM's retries run step 2 (which
//!   first answers ONGOING, then 500) and step 3; every step applied exactly once;
//! - **a starter that dies after its local commit, before submitting**: DTM's back-check
//!   (`query_prepared`) finds the committed barrier row and the job runs anyway;
//! - **a starter whose local transaction rolled back**: the back-check answers FAILURE,
//!   DTM fails the message, and no step runs.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use dtm_barrier::redis::RedisStore;
use dtm_barrier::{BranchBarrier, Outcome};
use dtmcli::{DtmClient, Msg, TransInfo, TransOptions, TransStatus};
use mongodb::bson::{doc, Document};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use super::{
    ensure, final_status, mongo_client, mysql_pool, poll, redis_url, set_up_tables, ID_COLUMN,
};
use crate::demo::DemoError;

const JOBS: &str = "dtm_busi.example_stepping_job";
const RESERVATIONS: &str = "dtm_busi.example_stepping_reservation";
/// Redis barrier keys live this long: longer than any job.
const EXPIRE: Duration = Duration::from_secs(7 * 86400);

/// The customer's loyalty points of the job `gid` (outside the `<gid>-*` barrier keys).
fn points_key(gid: &str) -> String {
    format!("dtm-example:stepping:points:{gid}")
}

fn shipments(client: &mongodb::Client) -> mongodb::Collection<Document> {
    client
        .database("dtm_busi")
        .collection("example_stepping_shipment")
}

/// The payload of every step of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    items: i64,
    points: i64,
    /// How many calls of step 2 answer a transient error first (ONGOING, then 500).
    flaky: u32,
}

/// How a worker treats step 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Holds every call of step 2 without answering: the worker about to be killed.
    Hold,
    /// Runs it (after the job's transient failures).
    Run,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Hold => "hold",
            Mode::Run => "run",
        }
    }
}

struct WorkerInner {
    pool: MySqlPool,
    redis: RedisStore<MultiplexedConnection>,
    mongo: mongodb::Client,
    mode: Mode,
    /// Calls of step 2 per gid, for the transient failures.
    step2_calls: Mutex<HashMap<String, u32>>,
}

#[derive(Clone)]
struct Worker(Arc<WorkerInner>);

impl Worker {
    fn say(&self, line: String) {
        println!("     worker {}: {line}", std::process::id());
    }

    /// Says what became of a step's call of `gid` (`step` names it and its store): `done`
    /// when its business ran, else why the barrier skipped it.
    fn report<T>(&self, step: &str, gid: &str, o: &Outcome<T>, done: &str) {
        let what = match o {
            Outcome::Executed(_) => done,
            Outcome::Duplicate => "already done: skipped by the barrier",
            Outcome::NullCompensation => "null compensation",
            _ => "skipped by the barrier",
        };
        self.say(format!("{step} of {gid}: {what}"));
    }
}

fn success() -> Json<serde_json::Value> {
    Json(serde_json::json!({"dtm_result": "SUCCESS"}))
}

/// `POST /api/stepping/{step}`: the steps of the job, in the worker process.
async fn step(
    State(w): State<Worker>,
    Path(step): Path<String>,
    info: TransInfo,
    body: Bytes,
) -> Result<Json<serde_json::Value>, dtmcli::Error> {
    let job: Job = serde_json::from_slice(&body).map_err(dtmcli::Error::invalid)?;
    let gid = info.gid.clone();
    let bb = BranchBarrier::new(info);
    match step.as_str() {
        "step1" => {
            let (g, items) = (gid.clone(), job.items);
            let o = bb
                .call(&w.0.pool, move |c| {
                    Box::pin(async move {
                        // The job exists: the steps run only after its transaction committed.
                        let jobs: i64 = sqlx::query_scalar(&format!(
                            "select count(*) from {JOBS} where gid = ?"
                        ))
                        .bind(&g)
                        .fetch_one(&mut *c)
                        .await?;
                        if jobs != 1 {
                            return Err(dtm_barrier::Error::business(format!(
                                "job {g} not committed"
                            )));
                        }
                        sqlx::query(&format!(
                            "insert into {RESERVATIONS}(gid, items, applied) values(?, ?, 1) \
                             on duplicate key update applied = applied + 1"
                        ))
                        .bind(&g)
                        .bind(items)
                        .execute(&mut *c)
                        .await?;
                        Ok(())
                    })
                })
                .await?;
            w.report(
                "step 1 (MariaDB)",
                &gid,
                &o,
                &format!("reserved {items} items"),
            );
        }
        "step2" => {
            if w.0.mode == Mode::Hold {
                w.say(format!(
                    "step 2 (Redis) of {gid}: received, and held (this worker is about to crash)"
                ));
                std::future::pending::<()>().await;
            }
            let n = {
                let mut calls = w.0.step2_calls.lock().unwrap_or_else(|p| p.into_inner());
                let n = calls.entry(gid.clone()).or_default();
                *n += 1;
                *n
            };
            if n <= job.flaky {
                return Err(if n == 1 {
                    w.say(format!(
                        "step 2 (Redis) of {gid}: answers ONGOING (rate limited, injected)"
                    ));
                    dtmcli::Error::ongoing("rate limited, try again")
                } else {
                    w.say(format!(
                        "step 2 (Redis) of {gid}: answers 500 (a blip, injected)"
                    ));
                    dtmcli::Error::other("injected transient error")
                });
            }
            // In order: step 1 is done before step 2 runs.
            if reserved(&w.0.pool, &gid).await? != 1 {
                return Err(dtmcli::Error::other("step 2 called before step 1"));
            }
            let o = bb
                .check_adjust_amount(&w.0.redis, &points_key(&gid), job.points)
                .await?;
            w.report(
                "step 2 (Redis)",
                &gid,
                &o,
                &format!("credited {} points", job.points),
            );
        }
        "step3" => {
            // What steps 1 and 2 had done when step 3 ran, kept in the shipment.
            let step1 = reserved(&w.0.pool, &gid).await?;
            let points = read_points(w.0.redis.connection(), &gid)
                .await
                .map_err(dtmcli::Error::other)?;
            let g = gid.clone();
            let o = bb
                .call(&w.0.mongo, move |s| {
                    Box::pin(async move {
                        shipments(&s.client())
                            .update_one(
                                doc! {"_id": &g},
                                doc! {
                                    "$inc": {"applied": 1},
                                    "$set": {"saw_step1": step1 == 1, "saw_points": points},
                                },
                            )
                            .upsert(true)
                            .session(&mut *s)
                            .await?;
                        Ok(())
                    })
                })
                .await?;
            w.report("step 3 (MongoDB)", &gid, &o, "shipment created");
        }
        other => return Err(dtmcli::Error::invalid(format!("no step {other}"))),
    }
    Ok(success())
}

/// How many reservations step 1 committed for `gid` (0 or 1), read outside any barrier.
async fn reserved(pool: &MySqlPool, gid: &str) -> dtmcli::Result<i64> {
    sqlx::query_scalar(&format!(
        "select count(*) from {RESERVATIONS} where gid = ?"
    ))
    .bind(gid)
    .fetch_one(pool)
    .await
    .map_err(dtmcli::Error::other)
}

async fn read_points(conn: &MultiplexedConnection, gid: &str) -> Result<i64, redis::RedisError> {
    let mut conn = conn.clone();
    let v: Option<i64> = redis::cmd("GET")
        .arg(points_key(gid))
        .query_async(&mut conn)
        .await?;
    Ok(v.unwrap_or(-1))
}

/// The worker process: serves the steps on 127.0.0.1:`args[0]`, step 2 according to
/// `args[1]` (`hold`: never answers, the worker waiting to be killed; `run`). `args` are
/// the arguments after `__worker stepping`. The worker exits when its standard input closes
/// (its parent is gone).
pub async fn worker(args: &[String]) -> Result<(), DemoError> {
    let [port, mode] = args else {
        return Err("usage: __worker stepping <port> hold|run".into());
    };
    let port: u16 = port.parse()?;
    let mode = match mode.as_str() {
        "hold" => Mode::Hold,
        "run" => Mode::Run,
        other => return Err(format!("unknown worker mode {other}").into()),
    };
    // A worker never outlives the scenario that started it.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let redis = redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let w = Worker(Arc::new(WorkerInner {
        pool: mysql_pool(5).await?,
        redis: RedisStore::new(redis, EXPIRE),
        mongo: mongo_client().await?,
        mode,
        step2_calls: Mutex::default(),
    }));
    let router = Router::new()
        .route("/api/stepping/health", get(|| async { "ok" }))
        .route("/api/stepping/{step}", post(step))
        .with_state(w.clone());
    // The killed worker's port may take a moment to be free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("port {port} not free yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    w.say(format!(
        "serving the steps on port {port} (step 2: {})",
        mode.as_str()
    ));
    axum::serve(listener, router).await?;
    Ok(())
}

/// A worker process started by the scenario; killed (SIGKILL) when dropped.
struct WorkerProcess {
    child: tokio::process::Child,
}

impl WorkerProcess {
    /// Starts this program as a worker on `port` and waits until it answers.
    async fn start(port: u16, mode: Mode) -> Result<WorkerProcess, DemoError> {
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["__worker", "stepping", &port.to_string(), mode.as_str()])
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let worker = WorkerProcess { child };
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/api/stepping/health");
        poll("the worker to answer", Duration::from_secs(20), || {
            let req = http.get(&url).send();
            async move { Ok(req.await.ok().filter(|r| r.status().is_success()).map(drop)) }
        })
        .await?;
        Ok(worker)
    }

    /// SIGKILL: no cleanup, open requests cut.
    async fn kill(mut self) -> Result<(), DemoError> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

async fn set_up(pool: &MySqlPool) -> Result<(), DemoError> {
    let id = ID_COLUMN;
    let ddl = [
        format!(
            "create table if not exists {JOBS}(gid {id} primary key, items bigint not null, \
             points bigint not null, created_at timestamp(6) not null default current_timestamp(6)) engine=InnoDB"
        ),
        format!(
            "create table if not exists {RESERVATIONS}(gid {id} primary key, items bigint not null, \
             applied int not null, created_at timestamp(6) not null default current_timestamp(6)) engine=InnoDB"
        ),
    ];
    set_up_tables(pool, &ddl, &[JOBS, RESERVATIONS]).await
}

/// The stores the scenario reads back.
struct Stores {
    pool: MySqlPool,
    redis: MultiplexedConnection,
    mongo: mongodb::Client,
}

impl Stores {
    /// The customer's points start at 0 (the Redis adjustment needs the key).
    async fn open_points(&self, gid: &str) -> Result<(), DemoError> {
        let mut conn = self.redis.clone();
        let _: () = redis::cmd("SET")
            .arg(points_key(gid))
            .arg(0)
            .arg("EX")
            .arg(3600)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// (job rows, step 1 applications, points, step 3 applications, step 3 saw step 1,
    /// points step 3 saw)
    async fn effects(&self, gid: &str) -> Result<Effects, DemoError> {
        let jobs: i64 = sqlx::query_scalar(&format!("select count(*) from {JOBS} where gid = ?"))
            .bind(gid)
            .fetch_one(&self.pool)
            .await?;
        let step1: Option<i32> =
            sqlx::query_scalar(&format!("select applied from {RESERVATIONS} where gid = ?"))
                .bind(gid)
                .fetch_optional(&self.pool)
                .await?;
        let points = read_points(&self.redis, gid).await?;
        let ship = shipments(&self.mongo).find_one(doc! {"_id": gid}).await?;
        let step3 = ship.as_ref().and_then(|d| d.get_i32("applied").ok());
        Ok(Effects {
            jobs,
            step1: step1.unwrap_or(0),
            points,
            step3: step3.unwrap_or(0),
            saw_step1: ship.as_ref().and_then(|d| d.get_bool("saw_step1").ok()),
            saw_points: ship.as_ref().and_then(|d| d.get_i64("saw_points").ok()),
        })
    }

    async fn clean(&self, gid: &str) -> Result<(), DemoError> {
        for t in [JOBS, RESERVATIONS] {
            sqlx::query(&format!("delete from {t} where gid = ?"))
                .bind(gid)
                .execute(&self.pool)
                .await?;
        }
        let mut conn = self.redis.clone();
        let _: () = redis::cmd("DEL")
            .arg(points_key(gid))
            .query_async(&mut conn)
            .await?;
        shipments(&self.mongo).delete_one(doc! {"_id": gid}).await?;
        Ok(())
    }
}

/// What a job left in the three stores.
#[derive(Debug, PartialEq, Eq)]
struct Effects {
    jobs: i64,
    step1: i32,
    points: i64,
    step3: i32,
    saw_step1: Option<bool>,
    saw_points: Option<i64>,
}

impl Effects {
    /// Every step applied exactly once, in order.
    fn check_done(&self, gid: &str, job: &Job) -> Result<(), DemoError> {
        let want = Effects {
            jobs: 1,
            step1: 1,
            points: job.points,
            step3: 1,
            saw_step1: Some(true),
            saw_points: Some(job.points),
        };
        ensure(*self == want, || {
            format!("job {gid}: expected {want:?}, found {self:?}")
        })?;
        println!(
            "   {gid}: job row 1; MariaDB reservation applied {}x; Redis points {} (once); \
             MongoDB shipment applied {}x, after steps 1 and 2",
            self.step1, self.points, self.step3
        );
        Ok(())
    }
}

/// `GET /api/stepping/QueryPrepared`: the back-check, in the scenario's own process (the
/// service that starts the jobs).
async fn query_prepared(
    State(pool): State<MySqlPool>,
    info: TransInfo,
) -> Result<Json<serde_json::Value>, dtmcli::Error> {
    let gid = info.gid.clone();
    let r = BranchBarrier::new(info).query_prepared(&pool).await;
    println!(
        "     back-check of {gid}: {}",
        match &r {
            Ok(()) => "the local transaction committed: go on".to_string(),
            Err(e) if e.is_failure() => "it did not commit: abort".to_string(),
            Err(e) => format!("error {e}"),
        }
    );
    r?;
    Ok(success())
}

/// The job's message: three steps in order.
fn job_msg(
    dtm: &DtmClient,
    gid: &str,
    worker: &str,
    job: &Job,
    options: TransOptions,
) -> Msg<DtmClient> {
    dtm.msg(gid)
        .add(&format!("{worker}/step1"), job)
        .add(&format!("{worker}/step2"), job)
        .add(&format!("{worker}/step3"), job)
        .with_options(options)
}

/// The job's local transaction: the job row (with the msg barrier row, by the caller).
async fn insert_job(
    c: &mut sqlx::MySqlConnection,
    gid: &str,
    job: &Job,
) -> dtm_barrier::Result<()> {
    sqlx::query(&format!(
        "insert into {JOBS}(gid, items, points) values(?, ?, ?)"
    ))
    .bind(gid)
    .bind(job.items)
    .bind(job.points)
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn branches(dtm: &DtmClient, gid: &str) -> Result<String, DemoError> {
    let q = dtm.query(gid).await?;
    let status = q.transaction.map(|t| t.status).unwrap_or_default();
    let b: Vec<String> = q
        .branches
        .iter()
        .map(|b| format!("{} {}", b.branch_id, b.status))
        .collect();
    Ok(format!("{status}; steps: {}", b.join(", ")))
}

/// Runs the stepping scenario against the DTM server of `dtm` (see the module docs).
pub async fn run(dtm: &DtmClient) -> Result<(), DemoError> {
    let started = Instant::now();
    let pool = mysql_pool(10).await?;
    set_up(&pool).await?;
    let stores = Stores {
        pool: pool.clone(),
        redis: redis::Client::open(redis_url())?
            .get_multiplexed_async_connection()
            .await?,
        mongo: mongo_client().await?,
    };
    let router = Router::new()
        .route("/api/stepping/QueryPrepared", get(query_prepared))
        .with_state(pool.clone());
    let qp = format!(
        "{}/api/stepping/QueryPrepared",
        crate::demo::serve(router).await?
    );
    let port = dtm_testkit::free_port()?;
    let worker_url = format!("http://127.0.0.1:{port}/api/stepping");

    println!("== stepping: a job of ordered steps across MariaDB, Redis and MongoDB");
    println!("   the job is created in a MariaDB transaction with DTM's msg barrier row; after");
    println!("   it commits, DTM runs step 1 (MariaDB: reserve items), step 2 (Redis: loyalty");
    println!("   points), step 3 (MongoDB: shipment) one after another, each retried until it");
    println!("   succeeds; the steps run in a separate worker process on port {port}.\n");

    println!("-- 1. the worker crashes between steps");
    let a = WorkerProcess::start(port, Mode::Hold).await?;
    let gid = dtm.new_gid().await?;
    let job = Job {
        items: 3,
        points: 40,
        flaky: 2,
    };
    stores.open_points(&gid).await?;
    // A failed step is retried after 1 s (DTM's default: 10 s), doubling on errors.
    let options = TransOptions::default().retry_interval(Duration::from_secs(1));
    let msg = job_msg(dtm, &gid, &worker_url, &job, options);
    let j = job.clone();
    let g = gid.clone();
    dtm_barrier::do_and_submit(&msg, &qp, &pool, move |c| {
        Box::pin(async move { insert_job(c, &g, &j).await })
    })
    .await?;
    println!("   job {gid} created and its local transaction committed; DTM starts the steps");
    poll("step 1 to commit", Duration::from_secs(20), || async {
        Ok((stores.effects(&gid).await?.step1 > 0).then_some(()))
    })
    .await?;
    a.kill().await?;
    println!("   step 1 committed: the worker is SIGKILLed while it holds step 2");
    println!("   DTM: {}", branches(dtm, &gid).await?);
    let b = WorkerProcess::start(port, Mode::Run).await?;
    println!("   a new worker serves the same port; DTM retries step 2 on its own schedule");
    let status = final_status(dtm, &gid, Duration::from_secs(40)).await?;
    ensure(status == TransStatus::Succeed, || {
        format!("job {gid} ended {status:?}")
    })?;
    println!("   DTM: {}", branches(dtm, &gid).await?);
    stores.effects(&gid).await?.check_done(&gid, &job)?;

    println!("\n-- 2. the starter dies after its local commit, before submitting");
    println!("-- 3. the starter's local transaction rolls back (it never submits or aborts)");
    let committed = dtm.new_gid().await?;
    let rolled_back = dtm.new_gid().await?;
    let job = Job {
        items: 1,
        points: 15,
        flaky: 0,
    };
    for gid in [&committed, &rolled_back] {
        stores.open_points(gid).await?;
    }
    // DTM back-checks a prepared msg once `timeout_to_fail` (2 s; default 35 s) has passed.
    // A cron pass that comes earlier reschedules it at the server's retry interval (10 s),
    // so the first pass is set after the timeout: `retry_interval` 3 s.
    let options = TransOptions::default()
        .timeout_to_fail(Duration::from_secs(2))
        .retry_interval(Duration::from_secs(3));
    let msg = job_msg(dtm, &committed, &worker_url, &job, options.clone());
    msg.prepare(&qp).await?;
    let (g, j) = (committed.clone(), job.clone());
    let o = BranchBarrier::new(msg.local_info())
        .call(&pool, move |c| {
            Box::pin(async move { insert_job(c, &g, &j).await })
        })
        .await?;
    ensure(o.is_executed(), || {
        format!("job {committed}: local transaction {o:?}")
    })?;
    println!("   job {committed}: prepared, local transaction committed, never submitted");
    let msg = job_msg(dtm, &rolled_back, &worker_url, &job, options);
    msg.prepare(&qp).await?;
    let (g, j) = (rolled_back.clone(), job.clone());
    let r = BranchBarrier::new(msg.local_info())
        .call(&pool, move |c| {
            Box::pin(async move {
                insert_job(c, &g, &j).await?;
                Err::<(), _>(dtm_barrier::Error::business(
                    "the starter crashed mid-transaction",
                ))
            })
        })
        .await;
    ensure(r.is_err(), || {
        format!("job {rolled_back}: local transaction {r:?}")
    })?;
    println!("   job {rolled_back}: prepared, local transaction rolled back, never submitted");
    println!("   DTM back-checks both after their timeout_to_fail (2 s)");
    let s2 = final_status(dtm, &committed, Duration::from_secs(40)).await?;
    let s3 = final_status(dtm, &rolled_back, Duration::from_secs(40)).await?;
    ensure(s2 == TransStatus::Succeed, || {
        format!("job {committed} ended {s2:?}")
    })?;
    ensure(s3 == TransStatus::Failed, || {
        format!("job {rolled_back} ended {s3:?}")
    })?;
    println!("   DTM: {committed}: {}", branches(dtm, &committed).await?);
    println!(
        "   DTM: {rolled_back}: {}",
        branches(dtm, &rolled_back).await?
    );
    stores
        .effects(&committed)
        .await?
        .check_done(&committed, &job)?;
    let none = stores.effects(&rolled_back).await?;
    let nothing = Effects {
        jobs: 0,
        step1: 0,
        points: 0,
        step3: 0,
        saw_step1: None,
        saw_points: None,
    };
    ensure(none == nothing, || {
        format!("job {rolled_back} rolled back but left {none:?}")
    })?;
    println!("   {rolled_back}: no job row, no reservation, no points, no shipment");
    b.kill().await?;
    for gid in [&gid, &committed, &rolled_back] {
        stores.clean(gid).await?;
    }
    println!("   ({:.1?})", started.elapsed());
    Ok(())
}
