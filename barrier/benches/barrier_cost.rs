//! The barrier's added cost per call, on each backend: the same business local transaction
//! with and without the barrier, for an action and for a compensation.
//!
//! Needs the servers of `scripts/start-dbs.sh` (URLs from `MYSQL_URL`, `PG_URL`,
//! `REDIS_URL`, `MONGO_URL`). Run with
//! `cargo bench -p dtm-barrier --all-features --bench barrier_cost` (`BENCH_ITERS` sets the
//! iterations per case, default 300). Prints a table of latencies in microseconds.

use std::time::{Duration, Instant};

use dtm_barrier::redis::RedisStore;
use dtm_barrier::{BranchBarrier, Outcome};
use dtmcli::{Op, TransInfo, TransType};
use futures_util::future::BoxFuture;
use mongodb::bson::doc;
use sqlx::{MySqlPool, PgPool};

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
/// alike): a warm-up, then `iters()` timed iterations of each.
async fn measure<P, PF, G, GF>(mut plain: P, mut guarded: G) -> Result<(Stats, Stats), BoxError>
where
    P: FnMut(usize) -> PF,
    PF: std::future::Future<Output = Result<(), BoxError>>,
    G: FnMut(usize) -> GF,
    GF: std::future::Future<Output = Result<(), BoxError>>,
{
    let n = iters();
    for i in 0..n / 10 {
        plain(1_000_000 + i).await?;
        guarded(1_000_000 + i).await?;
    }
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let t = Instant::now();
        plain(i).await?;
        a.push(t.elapsed());
        let t = Instant::now();
        guarded(i).await?;
        b.push(t.elapsed());
    }
    Ok((stats(a), stats(b)))
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

fn upd_my(
    delta: i64,
) -> impl for<'c> FnOnce(&'c mut sqlx::MySqlConnection) -> BoxFuture<'c, dtm_barrier::Result<()>> {
    move |c| {
        Box::pin(async move {
            sqlx::query("update dtm_busi.bench_account set balance = balance + ? where id = 1")
                .bind(delta)
                .execute(&mut *c)
                .await?;
            Ok(())
        })
    }
}

fn upd_pg(
    delta: i64,
) -> impl for<'c> FnOnce(&'c mut sqlx::PgConnection) -> BoxFuture<'c, dtm_barrier::Result<()>> {
    move |c| {
        Box::pin(async move {
            sqlx::query("update dtm_busi.bench_account set balance = balance + $1 where id = 1")
                .bind(delta)
                .execute(&mut *c)
                .await?;
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

/// The plain and guarded business on one SQL database: `upd(delta)` is the business.
async fn sql_bench<DB, U, F>(
    rows: &mut Vec<Row>,
    backend: &'static str,
    pool: sqlx::Pool<DB>,
    upd: U,
) -> Result<(), BoxError>
where
    DB: dtm_barrier::sql::BarrierDatabase,
    U: Fn(i64) -> F + Copy,
    F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, dtm_barrier::Result<()>>,
{
    let id = run_id();
    let plain = |delta: i64| {
        let pool = pool.clone();
        move |_i: usize| {
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await?;
                upd(delta)(&mut tx).await?;
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
            async move {
                let out = bb.call(&pool, upd(delta)).await?;
                assert!(matches!(out, Outcome::Executed(())), "{out:?}");
                Ok::<(), BoxError>(())
            }
        }
    };
    for (case, op, delta) in [
        ("action", Op::Action, -1),
        ("compensate", Op::Compensate, 1),
    ] {
        let (plain_s, guarded_s) = measure(plain(delta), guarded(op, delta)).await?;
        rows.push(Row {
            backend,
            case,
            plain: plain_s,
            guarded: guarded_s,
        });
    }
    Ok(())
}

async fn sql_mysql(rows: &mut Vec<Row>) -> Result<(), BoxError> {
    let url = std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let pool = MySqlPool::connect(&url).await?;
    dtm_barrier::sql::create_barrier_table(&pool, &Default::default()).await?;
    sqlx::raw_sql("create database if not exists dtm_busi; create table if not exists dtm_busi.bench_account(id bigint primary key, balance bigint not null); replace into dtm_busi.bench_account values(1, 0)")
        .execute(&pool)
        .await?;
    sql_bench(rows, "MariaDB", pool, upd_my).await
}

async fn sql_pg(rows: &mut Vec<Row>) -> Result<(), BoxError> {
    let url = std::env::var("PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pool = PgPool::connect(&url).await?;
    dtm_barrier::sql::create_barrier_table(&pool, &Default::default()).await?;
    sqlx::raw_sql("create schema if not exists dtm_busi; create table if not exists dtm_busi.bench_account(id bigint primary key, balance bigint not null); insert into dtm_busi.bench_account values(1, 0) on conflict (id) do nothing")
        .execute(&pool)
        .await?;
    sql_bench(rows, "PostgreSQL", pool, upd_pg).await
}

async fn redis_backend(rows: &mut Vec<Row>) -> Result<(), BoxError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let store = RedisStore::new(conn.clone(), Duration::from_secs(600));
    let id = run_id();
    let key = format!("{id}-balance");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(1_000_000_000_i64)
        .query_async(&mut conn)
        .await?;
    for (case, op, delta) in [
        ("action", Op::Action, -1_i64),
        ("compensate", Op::Compensate, 1),
    ] {
        let (plain, guarded) = measure(
            |_i| {
                let (mut c, key) = (conn.clone(), key.clone());
                async move {
                    let _: i64 = redis::cmd("INCRBY")
                        .arg(&key)
                        .arg(delta)
                        .query_async(&mut c)
                        .await?;
                    Ok(())
                }
            },
            |i| {
                let (store, key) = (&store, key.clone());
                let bb = BranchBarrier::new(info(format!("{id}-{i}"), op.clone()));
                async move {
                    let out = bb.check_adjust_amount(store, &key, delta).await?;
                    assert!(matches!(out, Outcome::Executed(())), "{out:?}");
                    Ok(())
                }
            },
        )
        .await?;
        rows.push(Row {
            backend: "Redis",
            case,
            plain,
            guarded,
        });
    }
    Ok(())
}

async fn mongo_backend(rows: &mut Vec<Row>) -> Result<(), BoxError> {
    let url = std::env::var("MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into());
    let client = mongodb::Client::with_uri_str(&url).await?;
    dtm_barrier::mongo::create_barrier_index(&client, &Default::default()).await?;
    let coll = client
        .database("dtm_busi")
        .collection::<mongodb::bson::Document>("bench_account");
    coll.update_one(doc! {"_id": 1}, doc! {"$setOnInsert": {"balance": 0_i64}})
        .upsert(true)
        .await?;
    let id = run_id();
    for (case, op, delta) in [
        ("action", Op::Action, -1_i64),
        ("compensate", Op::Compensate, 1),
    ] {
        let (plain, guarded) = measure(
            |_i| {
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
            },
            |i| {
                let (client, coll) = (client.clone(), coll.clone());
                let bb = BranchBarrier::new(info(format!("{id}-{i}"), op.clone()));
                async move {
                    let out = bb
                        .call(&client, move |s| {
                            Box::pin(async move {
                                coll.update_one(doc! {"_id": 1}, doc! {"$inc": {"balance": delta}})
                                    .session(&mut *s)
                                    .await?;
                                Ok(())
                            })
                        })
                        .await?;
                    assert!(matches!(out, Outcome::Executed(())), "{out:?}");
                    Ok(())
                }
            },
        )
        .await?;
        rows.push(Row {
            backend: "MongoDB-wire (SecantusDB)",
            case,
            plain,
            guarded,
        });
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let mut rows = Vec::new();
    for (name, r) in [
        ("MariaDB", sql_mysql(&mut rows).await),
        ("PostgreSQL", sql_pg(&mut rows).await),
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
