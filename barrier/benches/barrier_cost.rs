//! The barrier's added cost per call, on each backend: the same business local transaction
//! with and without the barrier, for an action and for a compensation.
//!
//! Needs the servers of `scripts/start-dbs.sh` (URLs from `MYSQL_URL`, `PG_URL`,
//! `REDIS_URL`, `MONGO_URL`). Run with
//! `cargo bench -p dtm-barrier --all-features --bench barrier_cost` (`BENCH_ITERS` sets the
//! iterations per case, default 300). Prints a table of latencies in microseconds.

use std::future::Future;
use std::time::{Duration, Instant};

use dtm_barrier::redis::RedisStore;
use dtm_barrier::sql::DbKind;
use dtm_barrier::{BranchBarrier, Outcome};
use dtmcli::{Op, TransInfo, TransType};
use futures_util::future::BoxFuture;
use mongodb::bson::doc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Stats {
    mean: f64,
    p50: f64,
    p99: f64,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = v.iter().map(|d| us(*d)).sum::<f64>() / v.len() as f64;
    let at = |q: f64| us(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    Stats {
        mean,
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn iters() -> usize {
    std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

/// Runs `plain(i)` and `guarded(i)` alternately (so drift and background load hit both
/// alike): a warm-up, then `iters()` timed iterations of each. Every guarded call must
/// execute its business (a fresh gid each time).
async fn measure<P, PF, G, GF>(mut plain: P, mut guarded: G) -> Result<(Stats, Stats), BoxError>
where
    P: FnMut(usize) -> PF,
    PF: Future<Output = Result<(), BoxError>>,
    G: FnMut(usize) -> GF,
    GF: Future<Output = dtm_barrier::Result<Outcome<()>>>,
{
    let executed = |out: Outcome<()>| assert!(matches!(out, Outcome::Executed(())), "{out:?}");
    let n = iters();
    for i in 0..n / 10 {
        plain(1_000_000 + i).await?;
        executed(guarded(1_000_000 + i).await?);
    }
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let t = Instant::now();
        plain(i).await?;
        a.push(t.elapsed());
        let t = Instant::now();
        let out = guarded(i).await?;
        b.push(t.elapsed());
        executed(out);
    }
    Ok((stats(a), stats(b)))
}

/// Measures the two cases on `backend`, an action (a debit of 1) and a compensation (a
/// credit of 1): `plain(delta)` and `guarded(op, delta)` make the business of one
/// iteration without and with the barrier.
async fn bench_cases<PM, P, PF, GM, G, GF>(
    rows: &mut Vec<Row>,
    backend: &'static str,
    plain: PM,
    guarded: GM,
) -> Result<(), BoxError>
where
    PM: Fn(i64) -> P,
    P: FnMut(usize) -> PF,
    PF: Future<Output = Result<(), BoxError>>,
    GM: Fn(Op, i64) -> G,
    G: FnMut(usize) -> GF,
    GF: Future<Output = dtm_barrier::Result<Outcome<()>>>,
{
    for (case, op, delta) in [
        ("action", Op::Action, -1),
        ("compensate", Op::Compensate, 1),
    ] {
        let (plain, guarded) = measure(plain(delta), guarded(op, delta)).await?;
        rows.push(Row {
            backend,
            case,
            plain,
            guarded,
        });
    }
    Ok(())
}

fn run_id() -> String {
    format!(
        "bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    )
}

fn info(gid: String, op: Op) -> TransInfo {
    TransInfo::new(gid, TransType::Saga, "01", op)
}

/// The business of the SQL bench: `sql` (the one placeholder is the delta) on the account
/// row, in the caller's local transaction.
fn upd<DB>(
    sql: &'static str,
    delta: i64,
) -> impl for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, dtm_barrier::Result<()>>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    move |c| {
        Box::pin(async move {
            sqlx::query(sql).bind(delta).execute(&mut *c).await?;
            Ok(())
        })
    }
}

struct Row {
    backend: &'static str,
    case: &'static str,
    plain: Stats,
    guarded: Stats,
}

/// The plain and guarded business on one SQL database: a set-up script that creates the
/// account row, and the business update (its one placeholder is the delta), per dialect.
async fn sql_bench<DB>(rows: &mut Vec<Row>) -> Result<(), BoxError>
where
    DB: dtm_barrier::sql::BarrierDatabase,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let table = "create table if not exists dtm_busi.bench_account(id bigint primary key, balance bigint not null)";
    let (backend, url, setup, update) = match DB::KIND {
        DbKind::Mysql => (
            "MariaDB",
            env_url("MYSQL_URL", "mysql://root@127.0.0.1:3306"),
            format!("create database if not exists dtm_busi; {table}; replace into dtm_busi.bench_account values(1, 0)"),
            "update dtm_busi.bench_account set balance = balance + ? where id = 1",
        ),
        DbKind::Postgres => (
            "PostgreSQL",
            env_url("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
            format!("create schema if not exists dtm_busi; {table}; insert into dtm_busi.bench_account values(1, 0) on conflict (id) do nothing"),
            "update dtm_busi.bench_account set balance = balance + $1 where id = 1",
        ),
        other => return Err(format!("no bench for {other:?}").into()),
    };
    let pool = sqlx::Pool::<DB>::connect(&url).await?;
    dtm_barrier::sql::create_barrier_table(&pool, &Default::default()).await?;
    sqlx::raw_sql(&setup).execute(&pool).await?;
    let id = run_id();
    let plain = |delta: i64| {
        let pool = pool.clone();
        move |_i: usize| {
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await?;
                upd::<DB>(update, delta)(&mut tx).await?;
                tx.commit().await?;
                Ok::<(), BoxError>(())
            }
        }
    };
    let guarded = |op: Op, delta: i64| {
        let (pool, id) = (pool.clone(), id.clone());
        move |i: usize| {
            let (pool, bb) = (
                pool.clone(),
                BranchBarrier::new(info(format!("{id}-{backend}-{i}"), op.clone())),
            );
            async move { bb.call(&pool, upd::<DB>(update, delta)).await }
        }
    };
    bench_cases(rows, backend, plain, guarded).await
}

/// `$var`, or `default`.
fn env_url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

async fn redis_backend(rows: &mut Vec<Row>) -> Result<(), BoxError> {
    let client = redis::Client::open(env_url("REDIS_URL", "redis://127.0.0.1:6379"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let store = RedisStore::new(conn.clone(), Duration::from_secs(600));
    let id = run_id();
    let key = format!("{id}-balance");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(1_000_000_000_i64)
        .query_async(&mut conn)
        .await?;
    let plain = |delta: i64| {
        let (conn, key) = (conn.clone(), key.clone());
        move |_i: usize| {
            let (mut c, key) = (conn.clone(), key.clone());
            async move {
                let _: i64 = redis::cmd("INCRBY")
                    .arg(&key)
                    .arg(delta)
                    .query_async(&mut c)
                    .await?;
                Ok(())
            }
        }
    };
    let guarded = |op: Op, delta: i64| {
        let (store, key, id) = (&store, key.clone(), id.clone());
        move |i: usize| {
            let key = key.clone();
            let bb = BranchBarrier::new(info(format!("{id}-{i}"), op.clone()));
            async move { bb.check_adjust_amount(store, &key, delta).await }
        }
    };
    bench_cases(rows, "Redis", plain, guarded).await
}

async fn mongo_backend(rows: &mut Vec<Row>) -> Result<(), BoxError> {
    let url = env_url(
        "MONGO_URL",
        "mongodb://127.0.0.1:27017/?directConnection=true",
    );
    let client = mongodb::Client::with_uri_str(&url).await?;
    dtm_barrier::mongo::create_barrier_index(&client, &Default::default()).await?;
    let coll = client
        .database("dtm_busi")
        .collection::<mongodb::bson::Document>("bench_account");
    coll.update_one(doc! {"_id": 1}, doc! {"$setOnInsert": {"balance": 0_i64}})
        .upsert(true)
        .await?;
    let id = run_id();
    let plain = |delta: i64| {
        let (client, coll) = (client.clone(), coll.clone());
        move |_i: usize| {
            let (client, coll) = (client.clone(), coll.clone());
            async move {
                let mut s = client.start_session().await?;
                s.start_transaction().await?;
                coll.update_one(doc! {"_id": 1}, doc! {"$inc": {"balance": delta}})
                    .session(&mut s)
                    .await?;
                s.commit_transaction().await?;
                Ok(())
            }
        }
    };
    let guarded = |op: Op, delta: i64| {
        let (client, coll, id) = (client.clone(), coll.clone(), id.clone());
        move |i: usize| {
            let (client, coll) = (client.clone(), coll.clone());
            let bb = BranchBarrier::new(info(format!("{id}-{i}"), op.clone()));
            async move {
                bb.call(&client, move |s| {
                    Box::pin(async move {
                        coll.update_one(doc! {"_id": 1}, doc! {"$inc": {"balance": delta}})
                            .session(&mut *s)
                            .await?;
                        Ok(())
                    })
                })
                .await
            }
        }
    };
    bench_cases(rows, "MongoDB-wire (SecantusDB)", plain, guarded).await
}

#[tokio::main]
async fn main() {
    let mut rows = Vec::new();
    for (name, r) in [
        ("MariaDB", sql_bench::<sqlx::MySql>(&mut rows).await),
        ("PostgreSQL", sql_bench::<sqlx::Postgres>(&mut rows).await),
        ("Redis", redis_backend(&mut rows).await),
        ("MongoDB", mongo_backend(&mut rows).await),
    ] {
        if let Err(e) = r {
            eprintln!("{name}: skipped ({e})");
        }
    }
    println!(
        "\nbarrier cost per call, {} iterations per case, latencies in µs",
        iters()
    );
    println!(
        "| {:<26} | {:<10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {:>9} |",
        "backend",
        "case",
        "plain mean",
        "plain p50",
        "plain p99",
        "guard mean",
        "guard p50",
        "guard p99",
        "added"
    );
    println!("|{}|", ["-"; 9].map(|_| "---").join("|"));
    for r in &rows {
        println!(
            "| {:<26} | {:<10} | {:>10.0} | {:>10.0} | {:>10.0} | {:>10.0} | {:>10.0} | {:>10.0} | {:>+9.0} |",
            r.backend, r.case, r.plain.mean, r.plain.p50, r.plain.p99, r.guarded.mean, r.guarded.p50, r.guarded.p99,
            r.guarded.mean - r.plain.mean
        );
    }
}
