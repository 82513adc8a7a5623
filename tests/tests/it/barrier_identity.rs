//! Barrier identities are exact on every backend (issue 8, item 1), against the real servers
//! (`MYSQL_URL`, `PG_URL`, `REDIS_URL`, `MONGO_URL`; scripts/start-dbs.sh starts them).
//!
//! Two transactions whose identities differ only in case, accents, a trailing space, past
//! 128 characters, by a NUL, or by where a `-` splits gid and branch id, used to share one
//! barrier row or key: the second one's business was skipped as a "duplicate" and answered
//! success. Every test here asserts that the second business either RUNS (distinct rows) or
//! is REFUSED with `InvalidInput` before anything is written (no row, business not run) —
//! never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use redis::AsyncCommands;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dtm_barrier::redis::RedisStore;
use dtm_barrier::sql::{
    barrier_ddl, check_mysql_barrier_table, create_barrier_table, BarrierDatabase, DbKind,
};
use dtm_barrier::{BarrierConfig, BranchBarrier, Outcome, TableName};
use dtmcli::{Op, TransInfo, TransType};
use sqlx::{MySqlPool, PgPool, Pool};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A suffix unique to this test run, so reruns never meet earlier rows.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}{:x}", std::process::id(), nanos % 0xffff_ffff_ffff)
}

async fn mysql() -> MySqlPool {
    MySqlPool::connect(&env("MYSQL_URL", "mysql://root@127.0.0.1:3306"))
        .await
        .expect("connect to MariaDB (scripts/start-dbs.sh)")
}

async fn pg() -> PgPool {
    PgPool::connect(&env(
        "PG_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    ))
    .await
    .expect("connect to PostgreSQL (scripts/start-dbs.sh)")
}

/// A fresh barrier table `<name>` (`schema.table`) created with the SDK's DDL (dropped first, so
/// the DDL of this build is the one tested).
async fn fresh_table<DB>(pool: &Pool<DB>, name: &str) -> TableName
where
    DB: BarrierDatabase,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let table = TableName::new(name).unwrap();
    // Other test binaries may create the schema at the same time: tolerate the race.
    for stmt in barrier_ddl(DB::KIND, &table).iter().take(1) {
        let _ = sqlx::raw_sql(stmt).execute(pool).await;
    }
    sqlx::raw_sql(&format!("drop table if exists {table}"))
        .execute(pool)
        .await
        .unwrap();
    create_barrier_table(pool, &table).await.unwrap();
    table
}

/// One test's barrier table on `pool`, and the count of the businesses it guarded that ran.
struct Case<DB: BarrierDatabase> {
    pool: Pool<DB>,
    table: TableName,
    ran: AtomicUsize,
}

impl<DB: BarrierDatabase> Case<DB> {
    fn new(pool: Pool<DB>, table: TableName) -> Self {
        Case {
            pool,
            table,
            ran: AtomicUsize::new(0),
        }
    }

    /// On a [`fresh_table`] `name`.
    async fn fresh(pool: Pool<DB>, name: &str) -> Self
    where
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    {
        let table = fresh_table(&pool, name).await;
        Case::new(pool, table)
    }

    /// Runs a barrier-guarded business that counts its runs.
    async fn run(&self, gid: &str, branch: &str, op: Op) -> dtm_barrier::Result<Outcome<()>> {
        let bb = BranchBarrier::with_config(
            TransInfo::new(gid, TransType::Saga, branch, op),
            BarrierConfig {
                table: self.table.clone(),
            },
        );
        bb.call(&self.pool, |_conn| {
            self.ran.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        })
        .await
    }

    /// How many of the guarded businesses ran.
    fn ran(&self) -> usize {
        self.ran.load(Ordering::SeqCst)
    }
}

type Row = (String, String, String, String);

/// Every row of `table` whose gid contains `marker`, compared exactly, sorted.
async fn mysql_rows(pool: &MySqlPool, table: &TableName, marker: &str) -> Vec<Row> {
    let mut v: Vec<Row> = sqlx::query_as(&format!(
        "select convert(gid using utf8mb4), convert(branch_id using utf8mb4), \
         convert(op using utf8mb4), convert(barrier_id using utf8mb4) from {table} where gid like ?"
    ))
    .bind(format!("%{marker}%"))
    .fetch_all(pool)
    .await
    .unwrap();
    v.sort();
    v
}

async fn pg_rows(pool: &PgPool, table: &TableName, marker: &str) -> Vec<Row> {
    let mut v: Vec<Row> = sqlx::query_as(&format!(
        "select gid, branch_id, op, barrier_id from {table} where strpos(gid, $1) > 0"
    ))
    .bind(marker)
    .fetch_all(pool)
    .await
    .unwrap();
    v.sort();
    v
}

fn row(gid: &str, op: &str) -> Row {
    (gid.into(), "01".into(), op.into(), "01".into())
}

fn assert_refused(r: dtm_barrier::Result<Outcome<()>>, what: &str) {
    match r {
        Err(e) => {
            assert!(e.is_invalid_input(), "{what}: not InvalidInput: {e}");
            assert!(
                matches!(dtmcli::Error::from(e), dtmcli::Error::InvalidInput(_)),
                "{what}"
            );
        }
        Ok(o) => panic!("{what}: expected a refusal, got {o:?}"),
    }
}

/// Gids differing only in case, or only in an accent, are two transactions: both
/// businesses run, each with its own row (the folding collation used to skip the second).
#[tokio::test]
async fn mysql_case_and_accent_pairs_are_distinct_rows() {
    let c = Case::fresh(mysql().await, "dtm_barrier.ident_fold").await;
    let id = run_id();
    let pairs = [
        (format!("Case-x-abc-{id}"), format!("case-x-ABC-{id}")),
        (format!("cafe-{id}"), format!("café-{id}")),
    ];
    for (a, b) in &pairs {
        let first = c.run(a, "01", Op::Action).await.unwrap();
        let second = c.run(b, "01", Op::Action).await.unwrap();
        assert_eq!(first, Outcome::Executed(()), "{a}");
        assert_eq!(
            second,
            Outcome::Executed(()),
            "{b} was skipped as {a}'s duplicate"
        );
    }
    assert_eq!(c.ran(), 4);
    let mut want: Vec<Row> = pairs
        .iter()
        .flat_map(|(a, b)| [row(a, "action"), row(b, "action")])
        .collect();
    want.sort();
    assert_eq!(mysql_rows(&c.pool, &c.table, &id).await, want);

    // Each one is still a duplicate of itself, and the undo ops keep their counts: a
    // compensation of `b` after its action runs, a cancel of a try that never ran is a null
    // compensation.
    let (a, b) = &pairs[0];
    let again = c.run(a, "01", Op::Action).await.unwrap();
    assert_eq!(again, Outcome::Duplicate);
    let comp = c.run(b, "01", Op::Compensate).await.unwrap();
    assert_eq!(comp, Outcome::Executed(()));
    let null = c.run(a, "02", Op::Cancel).await.unwrap();
    assert_eq!(null, Outcome::NullCompensation);
    assert_eq!(c.ran(), 5);
}

/// A trailing space, a gid past 128 characters and a NUL are refused before any write on
/// MariaDB (PAD SPACE and truncation used to map them onto another gid's row).
#[tokio::test]
async fn mysql_refuses_what_it_cannot_hold_exactly() {
    let c = Case::fresh(mysql().await, "dtm_barrier.ident_refuse").await;
    let id = run_id();

    let base = format!("pad-{id}");
    assert!(c.run(&base, "01", Op::Action).await.unwrap().is_executed());
    assert_refused(
        c.run(&format!("{base} "), "01", Op::Action).await,
        "trailing space",
    );

    // Two gids equal in their first 128 characters.
    let long = format!("long-{id}-{}", "x".repeat(128));
    for tail in ["1", "2"] {
        assert_refused(
            c.run(&format!("{long}{tail}"), "01", Op::Action).await,
            "gid past 128 characters",
        );
    }
    assert_refused(
        c.run(&format!("nul-{id}\0x"), "01", Op::Action).await,
        "NUL",
    );
    // The same refusal for the msg back-check.
    let qp = BranchBarrier::with_config(
        dtm_barrier::msg_query_info(&format!("{base} ")),
        BarrierConfig {
            table: c.table.clone(),
        },
    )
    .query_prepared(&c.pool)
    .await
    .unwrap_err();
    assert!(qp.is_invalid_input(), "{qp}");

    assert_eq!(c.ran(), 1, "only the legal gid ran");
    assert_eq!(
        mysql_rows(&c.pool, &c.table, &id).await,
        vec![row(&base, "action")],
        "nothing written for the refused ones"
    );
    // Exactly 128 characters is legal.
    let edge: String = format!("e{id}-")
        .chars()
        .chain(std::iter::repeat('é'))
        .take(128)
        .collect();
    assert!(c.run(&edge, "01", Op::Action).await.unwrap().is_executed());
    assert_eq!(
        mysql_rows(&c.pool, &c.table, &format!("e{id}-")).await,
        vec![row(&edge, "action")]
    );
}

/// A table created with the Go SDK's DDL (default utf8mb4 collation, which folds case and
/// accents): a second identity that folds onto an existing row is refused with the
/// migration statement, never skipped; real duplicates are still duplicates.
#[tokio::test]
async fn mysql_legacy_folding_table_refuses_collisions_with_a_migration_hint() {
    let pool = mysql().await;
    let table = TableName::new("dtm_barrier.ident_legacy_go").unwrap();
    let _ = sqlx::raw_sql("create database if not exists dtm_barrier")
        .execute(&pool)
        .await;
    sqlx::raw_sql(&format!("drop table if exists {table}"))
        .execute(&pool)
        .await
        .unwrap();
    // The Go SDK's sqls/dtmcli.barrier.mysql.sql.
    sqlx::raw_sql(&format!(
        "create table {table}(
  id bigint(22) PRIMARY KEY AUTO_INCREMENT,
  trans_type varchar(45) default '',
  gid varchar(128) default '',
  branch_id varchar(128) default '',
  op varchar(45) default '',
  barrier_id varchar(45) default '',
  reason varchar(45) default '' comment 'the branch type who insert this record',
  create_time datetime DEFAULT now(),
  update_time datetime DEFAULT now(),
  key(create_time),
  key(update_time),
  UNIQUE key(gid, branch_id, op, barrier_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
    ))
    .execute(&pool)
    .await
    .unwrap();

    // The startup check finds the table at once.
    let e = check_mysql_barrier_table(&pool, &table).await.unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    assert!(
        e.to_string().contains("gid is utf8mb4/utf8mb4_general_ci"),
        "{e}"
    );
    assert!(e.to_string().contains("ALTER TABLE"), "{e}");

    let c = Case::new(pool, table);
    let id = run_id();
    let (a, b) = (format!("Case-x-abc-{id}"), format!("case-x-ABC-{id}"));
    assert!(c.run(&a, "01", Op::Action).await.unwrap().is_executed());

    let check = |r: dtm_barrier::Result<Outcome<()>>, what: &str| {
        let e = match r {
            Err(e) => e,
            Ok(o) => panic!("{what}: the folded identity was not refused: {o:?}"),
        };
        let msg = e.to_string();
        assert!(e.is_invalid_input(), "{what}: {msg}");
        assert!(
            msg.contains(c.table.as_str()),
            "{what}: names the table: {msg}"
        );
        assert!(
            msg.contains("ALTER TABLE") && msg.contains("COLLATE utf8mb4_bin"),
            "{what}: gives the migration: {msg}"
        );
    };
    // The action of `b` folds onto `a`'s row.
    check(c.run(&b, "01", Op::Action).await, "action");
    // A compensation of `b` inserts its own row but `a`'s action row holds the origin key:
    // neither a null compensation nor a compensation of the wrong transaction.
    check(c.run(&b, "01", Op::Compensate).await, "compensate");
    assert_eq!(c.ran(), 1, "b's business never ran");
    assert_eq!(
        mysql_rows(&c.pool, &c.table, &id).await,
        vec![row(&a, "action")],
        "b's refused transactions left no row"
    );

    // The same identity again is still a plain duplicate, and `a`'s compensation runs.
    let again = c.run(&a, "01", Op::Action).await.unwrap();
    assert_eq!(again, Outcome::Duplicate);
    let comp = c.run(&a, "01", Op::Compensate).await.unwrap();
    assert_eq!(comp, Outcome::Executed(()));
    assert_eq!(c.ran(), 2);

    // After the migration the two are distinct transactions.
    sqlx::raw_sql(&dtm_barrier::sql::mysql_exact_collation_migration(&c.table))
        .execute(&c.pool)
        .await
        .unwrap();
    check_mysql_barrier_table(&c.pool, &c.table).await.unwrap();
    let now = c.run(&b, "01", Op::Action).await.unwrap();
    assert_eq!(now, Outcome::Executed(()));
    assert_eq!(c.ran(), 3);
}

/// The DDL the SDK ships compares the identity columns exactly.
#[tokio::test]
async fn mysql_ddl_uses_binary_collation_for_the_identity() {
    assert_eq!(barrier_ddl(DbKind::Mysql, &TableName::default()).len(), 2);
    let pool = mysql().await;
    let table = fresh_table(&pool, "dtm_barrier.ident_ddl").await;
    let cols: Vec<(String, Option<String>)> = sqlx::query_as(
        "select cast(column_name as char), cast(collation_name as char) from information_schema.columns \
         where table_schema = 'dtm_barrier' and table_name = ? order by ordinal_position",
    )
    .bind(table.table())
    .fetch_all(&pool)
    .await
    .unwrap();
    for name in ["gid", "branch_id", "op", "barrier_id"] {
        let c = cols.iter().find(|(n, _)| n == name).unwrap();
        assert_eq!(c.1.as_deref(), Some("utf8mb4_bin"), "{name}");
    }
    check_mysql_barrier_table(&pool, &table).await.unwrap();
    let missing = TableName::new("dtm_barrier.ident_no_such_table").unwrap();
    assert!(check_mysql_barrier_table(&pool, &missing)
        .await
        .is_err_and(|e| e.is_invalid_input()));
}

/// PostgreSQL compares exactly; a too-long gid or a NUL used to come back as a database
/// error (with the database's message) on every retry: now refused as invalid input.
#[tokio::test]
async fn postgres_identities() {
    // Own schema: PostgreSQL constraint names (`uniq_barrier`, which the insert names) are
    // unique per schema, so one barrier table per schema.
    let c = Case::fresh(pg().await, "ident_pg.barrier").await;
    let id = run_id();
    let (a, b) = (format!("Case-x-abc-{id}"), format!("case-x-ABC-{id}"));
    for g in [&a, &b] {
        assert!(c.run(g, "01", Op::Action).await.unwrap().is_executed());
    }
    let long = format!("long-{id}-{}", "x".repeat(128));
    assert_refused(
        c.run(&long, "01", Op::Action).await,
        "gid past 128 characters",
    );
    assert_refused(c.run(&format!("nul-{id}\0"), "01", Op::Action).await, "NUL");
    assert_refused(
        c.run(&format!("tab-{id}"), "0\t1", Op::Action).await,
        "control character in the branch id",
    );
    assert_eq!(c.ran(), 2);
    let mut want = vec![row(&a, "action"), row(&b, "action")];
    want.sort();
    assert_eq!(pg_rows(&c.pool, &c.table, &id).await, want);
}

/// Redis keys `<gid>-<branch>-<op>-<bid>`: `g-01`+`01` and `g`+`01-01` used to be one key,
/// so the second adjustment was skipped as a duplicate. A branch id with `-` is refused.
#[tokio::test]
async fn redis_dash_in_branch_id_is_refused() {
    let client = redis::Client::open(env("REDIS_URL", "redis://127.0.0.1:6379")).unwrap();
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis (scripts/start-dbs.sh)");
    let id = run_id();
    let account = format!("ident-acct-{id}");
    let _: () = c.set(&account, 100).await.unwrap();
    let redis = RedisStore::new(c.clone(), Duration::from_secs(600));
    let bb = |gid: String, branch: &str| {
        BranchBarrier::new(TransInfo::new(gid, TransType::Saga, branch, Op::Action))
    };
    let first = bb(format!("rg{id}-01"), "01")
        .check_adjust_amount(&redis, &account, -10)
        .await
        .unwrap();
    assert_eq!(first, Outcome::Executed(()));
    let second = bb(format!("rg{id}"), "01-01")
        .check_adjust_amount(&redis, &account, -10)
        .await;
    match second {
        Err(e) => assert!(e.is_invalid_input(), "{e}"),
        Ok(o) => panic!("g+01-01 was not refused: {o:?}"),
    }
    let balance: i64 = redis::cmd("GET")
        .arg(&account)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(balance, 90, "adjusted once, by the legal branch only");
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("rg{id}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys, vec![format!("rg{id}-01-01-action-01")]);

    // A gid Redis would hold but the SQL tables could not is refused everywhere alike.
    let long = bb(format!("rg{id}-{}", "x".repeat(128)), "01")
        .check_adjust_amount(&redis, &account, -10)
        .await;
    assert!(long.is_err_and(|e| e.is_invalid_input()));
    let qp = BranchBarrier::new(dtm_barrier::msg_query_info(&format!("rg{id} ")))
        .query_prepared(&redis)
        .await;
    assert!(qp.is_err_and(|e| e.is_invalid_input()));
}

/// MongoDB compares exactly already; the identity check refuses the same values as the SQL
/// stores, before a document is written.
#[tokio::test]
async fn mongo_identities() {
    use mongodb::bson::doc;
    let client = mongodb::Client::with_uri_str(env(
        "MONGO_URL",
        "mongodb://127.0.0.1:27017/?directConnection=true",
    ))
    .await
    .unwrap();
    let table = TableName::new("dtm_barrier.ident_mongo").unwrap();
    dtm_barrier::mongo::create_barrier_index(&client, &table)
        .await
        .expect("MongoDB-wire server (scripts/start-dbs.sh)");
    let id = run_id();
    let ran = AtomicUsize::new(0);
    let call = |gid: String| {
        let bb = BranchBarrier::with_config(
            TransInfo::new(gid, TransType::Saga, "01", Op::Action),
            BarrierConfig {
                table: table.clone(),
            },
        );
        let client = client.clone();
        let ran = &ran;
        async move {
            bb.call(&client, |_s| {
                ran.fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Ok(()) })
            })
            .await
        }
    };
    let (a, b) = (format!("Case-x-abc-{id}"), format!("case-x-ABC-{id}"));
    assert!(call(a.clone()).await.unwrap().is_executed());
    assert!(call(b.clone()).await.unwrap().is_executed());
    assert_refused(call(format!("{a} ")).await, "trailing space");
    assert_refused(call(format!("nul-{id}\0")).await, "NUL");
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    let n = client
        .database("dtm_barrier")
        .collection::<mongodb::bson::Document>("ident_mongo")
        .count_documents(doc! {"gid": {"$regex": id.as_str()}})
        .await
        .unwrap();
    assert_eq!(n, 2);
}
