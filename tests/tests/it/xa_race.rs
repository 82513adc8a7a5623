//! XA phase 2 never answers "done" for an xid that is still prepared (issue 8, item 2),
//! against the real MariaDB and PostgreSQL (`MYSQL_URL`, `PG_URL`; scripts/start-dbs.sh).
//!
//! MariaDB answers `XA COMMIT` from another session with XAER_NOTA while the session that
//! prepared the xid is still attached. Reading that as "already committed" let DTM record
//! a commit whose effect never landed. The race is reproduced deterministically by keeping
//! the preparing connection open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dtm_barrier::xa::XaLocal;
use dtm_barrier::Error;
use dtmcli::{DtmClient, Op, TransInfo, TransType};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A gid unique to this run, short enough for MySQL's 64-byte xid.
fn gid(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{:x}",
        std::process::id(),
        nanos % 0xffff_ffff_ffff
    )
}

/// Phase 2 never talks to DTM; the client is only needed to build the `XaLocal`.
fn dtm() -> DtmClient {
    DtmClient::new("http://127.0.0.1:36789/api/dtmsvr").unwrap()
}

fn info(gid: &str, op: Op) -> TransInfo {
    TransInfo::new(gid, TransType::Xa, "01", op)
}

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn mariadb_commit_waits_for_the_preparing_session_to_detach() {
    let opts =
        MySqlConnectOptions::from_str(&env("MYSQL_URL", "mysql://root@127.0.0.1:3306")).unwrap();
    let mut admin = opts
        .connect()
        .await
        .expect("MariaDB (scripts/start-dbs.sh)");
    admin
        .execute("create database if not exists dtm_busi")
        .await
        .unwrap();
    admin
        .execute("create table if not exists dtm_busi.xa_race(gid varchar(128), n int)")
        .await
        .unwrap();
    let count = |gid: String| {
        let opts = opts.clone();
        async move {
            let mut c = opts.connect().await.unwrap();
            let n: i64 = sqlx::query_scalar("select count(*) from dtm_busi.xa_race where gid = ?")
                .bind(gid)
                .fetch_one(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            n
        }
    };

    let gid = gid("xarace");
    let xid = format!("{gid}-01");
    // Phase 1 by hand, on a connection that stays attached.
    let mut preparing = opts.connect().await.unwrap();
    preparing
        .execute(format!("xa start '{xid}'").as_str())
        .await
        .unwrap();
    sqlx::query("insert into dtm_busi.xa_race(gid, n) values(?, 1)")
        .bind(&gid)
        .execute(&mut preparing)
        .await
        .unwrap();
    preparing
        .execute(format!("xa end '{xid}'").as_str())
        .await
        .unwrap();
    preparing
        .execute(format!("xa prepare '{xid}'").as_str())
        .await
        .unwrap();

    let xa = XaLocal::<sqlx::MySql, _>::new(opts.clone(), dtm());
    let commit = info(&gid, Op::Commit);
    // The server answers XAER_NOTA now, but the xid is prepared: not done.
    match xa.phase2(&commit).await {
        Err(Error::XaStillPrepared { xid: x, op }) => {
            assert_eq!((x.as_str(), op.as_str()), (xid.as_str(), "commit"));
        }
        Err(e) => panic!("expected XaStillPrepared, got {e}"),
        Ok(()) => panic!("phase 2 reported a still-prepared xid as committed"),
    }
    let e = xa.phase2(&commit).await.unwrap_err();
    // Retryable for DTM (a database error, HTTP 500), not a failure or success.
    assert!(matches!(dtmcli::Error::from(e), dtmcli::Error::Database(_)));
    assert_eq!(count(gid.clone()).await, 0, "the effect is not visible yet");

    // The preparing session goes away; phase 2 goes through once the server detached it.
    preparing.close().await.unwrap();
    let start = Instant::now();
    loop {
        match xa.phase2(&commit).await {
            Ok(()) => break,
            Err(Error::XaStillPrepared { .. }) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("phase 2 commit did not succeed within {DEADLINE:?}: {e}"),
        }
    }
    assert_eq!(count(gid.clone()).await, 1, "committed exactly once");
    // A repeat (DTM retrying after a lost answer) is harmless.
    xa.phase2(&commit).await.unwrap();
    assert_eq!(count(gid.clone()).await, 1);
    // So is an xid that was never prepared.
    xa.phase2(&info(&format!("{gid}n"), Op::Commit))
        .await
        .unwrap();
    admin.close().await.unwrap();
}

#[tokio::test]
async fn postgres_commit_prepared_and_repeats() {
    let opts = PgConnectOptions::from_str(&env(
        "PG_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    ))
    .unwrap();
    let mut admin = opts
        .connect()
        .await
        .expect("PostgreSQL (scripts/start-dbs.sh)");
    admin
        .execute("create table if not exists public.xa_race(gid varchar(128), n int)")
        .await
        .unwrap();

    let gid = gid("xarace");
    let xid = format!("{gid}-01");
    // PostgreSQL detaches a prepared transaction from its session at once: phase 2 commits
    // even while the preparing connection stays open.
    let mut preparing = opts.connect().await.unwrap();
    preparing.execute("begin").await.unwrap();
    sqlx::query("insert into public.xa_race(gid, n) values($1, 1)")
        .bind(&gid)
        .execute(&mut preparing)
        .await
        .unwrap();
    preparing
        .execute(format!("prepare transaction '{xid}'").as_str())
        .await
        .unwrap();

    let xa = XaLocal::<sqlx::Postgres, _>::new(opts.clone(), dtm());
    let commit = info(&gid, Op::Commit);
    xa.phase2(&commit).await.unwrap();
    let n: i64 = sqlx::query_scalar("select count(*) from public.xa_race where gid = $1")
        .bind(&gid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Repeats and unknown xids: "does not exist" and not in pg_prepared_xacts -> done.
    xa.phase2(&commit).await.unwrap();
    xa.phase2(&info(&format!("{gid}n"), Op::Commit))
        .await
        .unwrap();
    preparing.close().await.unwrap();
    admin.close().await.unwrap();
}
