//! The three scenarios this project was founded on, each runnable against a real DTM server
//! and real databases, each checking its own outcome (an invariant that does not hold is an
//! error, so CI can run them):
//!
//! - [`donation`]: a TCC chain (check or create the user, check or create the product with
//!   its price, record the donation) whose effects stay invisible to a concurrent reader
//!   until every step is confirmed, and leave no trace when any step fails.
//! - [`stepping`]: a Stepping-style job: ordered steps on MariaDB, Redis and MongoDB,
//!   started inside a local MariaDB transaction (a 2-phase message with the outbox), run
//!   one after another only after it commits, each retried until it succeeds, surviving a
//!   SIGKILL of the worker between steps and a starter that dies before submitting.
//! - [`reprocessing`]: transfers into one hot account row under contention, first with the
//!   plain guarded call (deadlocks and write conflicts are answered as errors, which DTM
//!   retries later), then with `call_reprocessing` (each transfer completes in its call).
//!
//! Each scenario is `run(&DtmClient)`: it needs a running DTM server (HTTP) and starts the
//! services it uses itself, on free ports. The databases come from `MYSQL_URL`,
//! `REDIS_URL` and `MONGO_URL` (`scripts/env.sh`), defaulting to the local servers. Rows
//! are keyed by gids or by a per-run tag (itself a DTM gid), so runs are repeatable and two
//! runs at once do not meet; each run removes its rows, and rows older than an hour.
//!
//! A program that runs [`stepping`] must also be its worker: the scenario starts
//! `std::env::current_exe()` with the arguments `__worker stepping <port> <mode>`, which
//! the program hands (the arguments after `__worker stepping`) to [`stepping::worker`].
//!
//! The story is printed on stdout. The SDK logs each retryable answer of a branch
//! (`dtmcli::branch`) and each re-run of a local transaction (`dtm_barrier`) at `warn`;
//! the scenarios provoke dozens of both on purpose, so a subscriber filter such as
//! `warn,dtm_barrier=error,dtmcli::branch=error` keeps the story readable.

use std::future::Future;
use std::time::{Duration, Instant};

use dtmcli::{DtmClient, TransStatus};

use crate::demo::DemoError;

pub mod donation;
pub mod reprocessing;
pub mod stepping;

/// The names of the founding scenarios, as [`run`] takes them.
pub const SCENARIOS: [&str; 3] = ["donation", "stepping", "reprocessing"];

/// Runs the founding scenario `name` (one of [`SCENARIOS`]) against the DTM server of `dtm`.
pub async fn run(name: &str, dtm: &DtmClient) -> Result<(), DemoError> {
    match name {
        "donation" => donation::run(dtm).await,
        "stepping" => stepping::run(dtm).await,
        "reprocessing" => reprocessing::run(dtm).await,
        other => Err(format!(
            "unknown founding scenario {other:?}; one of {}",
            SCENARIOS.join(", ")
        )
        .into()),
    }
}

/// The Redis URL of the examples (`$REDIS_URL`, default 127.0.0.1:6379).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The MongoDB URL of the examples (`$MONGO_URL`, default 127.0.0.1:27017, direct).
pub fn mongo_url() -> String {
    std::env::var("MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into())
}

/// A MariaDB pool of `max` connections on [`crate::bank::mysql_url`], with the `dtm_busi`
/// database and the default barrier table created if missing.
pub(crate) async fn mysql_pool(max: u32) -> Result<sqlx::MySqlPool, DemoError> {
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(max)
        .connect(&crate::bank::mysql_url())
        .await?;
    dtm_barrier::sql::create_barrier_table(&pool, &Default::default()).await?;
    sqlx::raw_sql("create database if not exists dtm_busi")
        .execute(&pool)
        .await?;
    Ok(pool)
}

/// The type of the identity columns (run tags, gids): compared exactly, since DTM gids
/// differ by case.
pub(crate) const ID_COLUMN: &str =
    "varchar(128) character set utf8mb4 collate utf8mb4_bin not null";

/// A scenario's tables: runs `ddl` (each statement creates a table or view if missing),
/// then removes the rows older than an hour (by `created_at`) of `tables`, earlier runs'.
pub(crate) async fn set_up_tables(
    pool: &sqlx::MySqlPool,
    ddl: &[String],
    tables: &[&str],
) -> Result<(), DemoError> {
    for sql in ddl {
        sqlx::raw_sql(sql).execute(pool).await?;
    }
    for t in tables {
        sqlx::query(&format!(
            "delete from {t} where created_at < now(6) - interval 1 hour"
        ))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// A MongoDB client on [`mongo_url`] with the barrier's unique index created if missing.
pub(crate) async fn mongo_client() -> Result<mongodb::Client, DemoError> {
    let client = mongodb::Client::with_uri_str(mongo_url()).await?;
    dtm_barrier::mongo::create_barrier_index(&client, &Default::default()).await?;
    Ok(client)
}

/// An error unless `ok`: how a scenario reports a violated invariant.
pub(crate) fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), DemoError> {
    if ok {
        Ok(())
    } else {
        Err(format!("invariant violated: {}", what()).into())
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, or fails after `timeout` saying
/// what was awaited.
pub(crate) async fn poll<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<T, DemoError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, DemoError>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until DTM reports a final status for `gid`; returns it (`succeed` or `failed`).
pub(crate) async fn final_status(
    dtm: &DtmClient,
    gid: &str,
    timeout: Duration,
) -> Result<TransStatus, DemoError> {
    let q = dtm_testkit::wait::until(dtm, gid, timeout, |q| {
        q.transaction
            .as_ref()
            .is_some_and(|t| t.status().is_final())
    })
    .await?;
    Ok(q.transaction
        .map(|t| t.status())
        .unwrap_or(TransStatus::Failed))
}
