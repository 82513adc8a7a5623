//! The SQL barrier's XA local transactions, reprocessing and the caller's own transaction,
//! on MariaDB and PostgreSQL, with the real DTM server (the msg outbox is in the generic
//! `barrier_suite`).

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use dtm_barrier::reprocess::ReprocessPolicy;
use dtm_barrier::sql::DbKind;
use dtm_barrier::{BranchBarrier, Error as BError, Outcome};
use dtm_examples::bank::{mysql_url, pg_url, BankReq, Db, ACCOUNTS};
use dtm_tests::sql::{business, SqlDb};
use dtmcli::{Op, TransInfo, TransOptions, TransType};
use futures_util::future::BoxFuture;
use sqlx::Pool;

/// The bank's name of `DB`.
fn db<DB: SqlDb>() -> Db {
    match DB::KIND {
        DbKind::Mysql => Db::Mysql,
        _ => Db::Postgres,
    }
}

fn bank_url(db: Db, handler: &str) -> String {
    format!("{}/{}/{handler}", bank_env().base, db.as_str())
}

async fn accounts(db: Db, from: i64, to: i64) -> (i64, i64) {
    static N: AtomicI64 = AtomicI64::new(0);
    let a = (std::process::id() as i64) * 10_000_000
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
            % 1_000_000)
            * 4
        + N.fetch_add(2, Ordering::Relaxed) * 1_000_000_000;
    let bank = bank_env().bank.clone();
    on_env(async move {
        bank.open_account(db, a, from).await.unwrap();
        bank.open_account(db, a + 1, to).await.unwrap();
    })
    .await;
    (a, a + 1)
}

async fn balance(db: Db, user: i64) -> i64 {
    let bank = bank_env().bank.clone();
    on_env(async move { bank.balance(db, user).await.unwrap() }).await
}

async fn rows(db: Db, gid: &str) -> Vec<String> {
    let (bank, gid) = (bank_env().bank.clone(), gid.to_string());
    on_env(async move {
        let mut r = bank.barrier_rows(db, &gid).await.unwrap();
        r.sort();
        r
    })
    .await
}

/// A pool of the test's own runtime.
async fn pool<DB: SqlDb>() -> Pool<DB> {
    let url = match db::<DB>() {
        Db::Mysql => mysql_url(),
        Db::Postgres => pg_url(),
    };
    Pool::connect(&url).await.unwrap()
}

/// `amount` off `user`'s balance; one bind each.
fn debit_sql() -> String {
    format!("update {ACCOUNTS} set balance = balance - ? where user_id = ?")
}

/// The guarded debit of `amount` off `user`, refused after its write when `fail`.
fn debit<DB: SqlDb>(
    user: i64,
    amount: i64,
    fail: bool,
) -> impl for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, dtm_barrier::Result<()>> {
    business::<DB>(
        debit_sql(),
        vec![amount.into(), user.into()],
        fail.then_some("local business refused"),
    )
}

async fn guarded_debit<DB: SqlDb>(
    pool: &Pool<DB>,
    info: TransInfo,
    user: i64,
    amount: i64,
) -> dtm_barrier::Result<Outcome<()>> {
    BranchBarrier::new(info)
        .call(pool, debit::<DB>(user, amount, false))
        .await
}

/// In the caller's own transaction: first the caller's write (`pre` off `user`), then
/// the guarded debit of `amount`.
async fn in_callers_tx<DB: SqlDb>(
    pool: &Pool<DB>,
    info: TransInfo,
    user: i64,
    pre: i64,
    amount: i64,
    fail: bool,
) -> dtm_barrier::Result<Outcome<()>> {
    let mut tx = pool.begin().await?;
    debit::<DB>(user, pre, false)(&mut *tx).await?;
    BranchBarrier::new(info)
        .call_in_transaction(tx, debit::<DB>(user, amount, fail))
        .await
}

/// An XA transaction of 30 through the bank's XA branches on `db`, from a fresh account
/// holding 100 to one holding 0, its credit refused after its write when `fail_in`. The
/// two accounts, the gid (of `prefix`) and what the initiator was told.
async fn xa_transfer(
    db: Db,
    prefix: &str,
    fail_in: bool,
) -> (i64, i64, String, dtmcli::Result<()>) {
    let (a, b) = accounts(db, 100, 0).await;
    let gid = gid(prefix);
    let r = BankReq::transfer(30, a, b, fail_in);
    let (out, inn) = (bank_url(db, "TransOutXa"), bank_url(db, "TransInXa"));
    let told = dtm()
        .xa_global_transaction(&gid, TransOptions::default(), |xa| async move {
            xa.call_branch(&r, &out).await?;
            xa.call_branch(&r, &inn).await?;
            Ok(())
        })
        .await;
    (a, b, gid, told)
}

async fn xa_two_branches_commit<DB: SqlDb>() {
    let db = db::<DB>();
    let (a, b, gid, told) = xa_transfer(db, "bbxa-ok", false).await;
    told.unwrap();
    wait_status(&dtm(), &gid, "succeed").await;
    // Phase 2 ran asynchronously: poll for the committed balances.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (balance(db, a).await, balance(db, b).await) != (70, 30) {
        assert!(
            std::time::Instant::now() < deadline,
            "balances not committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rows(db, &gid).await,
        ["xa/01/action/01/action", "xa/02/action/01/action"]
    );
    // A repeated commit is harmless.
    let commit = TransInfo::new(&gid, TransType::Xa, "01", Op::Commit);
    let url = bank_url(db, "TransOutXa");
    assert_eq!(
        branch_status(reqwest::Method::POST, &url, &commit).await,
        200
    );
    assert_eq!((balance(db, a).await, balance(db, b).await), (70, 30));
}

async fn xa_failing_branch_rolls_both_back<DB: SqlDb>() {
    let db = db::<DB>();
    let (a, b, gid, told) = xa_transfer(db, "bbxa-rb", true).await;
    let err = told.unwrap_err();
    assert!(err.is_failure(), "{err}");
    let q = wait_status(&dtm(), &gid, "failed").await;
    // Only the first branch registered; DTM rolled it back.
    assert_eq!(
        branch_rows(&q),
        ["01/rollback=succeed", "01/commit=prepared"]
    );
    assert_eq!((balance(db, a).await, balance(db, b).await), (100, 0));
    assert_eq!(rows(db, &gid).await, ["xa/01/action/01/rollback"]);
}

/// Run `k` of the deadlock's guarded business (counted in `attempts[k]`): debits 1 from
/// `first`, waits (the first time) until the other run holds its first row, then debits 1
/// from `second`.
fn crosswise<DB: SqlDb>(
    k: usize,
    first: i64,
    second: i64,
    attempts: Arc<[AtomicU32; 2]>,
    sync: Arc<tokio::sync::Barrier>,
) -> impl for<'c> FnMut(&'c mut DB::Connection) -> BoxFuture<'c, dtm_barrier::Result<()>> + Send {
    let waited = Arc::new(AtomicBool::new(false));
    move |conn| {
        attempts[k].fetch_add(1, Ordering::SeqCst);
        let (sync, waited) = (sync.clone(), waited.clone());
        Box::pin(async move {
            DB::execute(conn, &debit_sql(), vec![1.into(), first.into()]).await?;
            if !waited.swap(true, Ordering::SeqCst) {
                let _ = tokio::time::timeout(Duration::from_secs(5), sync.wait()).await;
            }
            DB::execute(conn, &debit_sql(), vec![1.into(), second.into()]).await?;
            Ok(())
        })
    }
}

/// Two guarded transactions that lock two rows in opposite orders: a real deadlock.
async fn deadlock<DB: SqlDb>(reprocess: bool) {
    let db = db::<DB>();
    let (x, y) = accounts(db, 1000, 1000).await;
    let p = Arc::new(pool::<DB>().await);
    let sync = Arc::new(tokio::sync::Barrier::new(2));
    let attempts = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let run = |k: usize, first: i64, second: i64| {
        let (p, sync, attempts) = (p.clone(), sync.clone(), attempts.clone());
        let gid = support::gid("bb-deadlock");
        tokio::spawn(async move {
            let bb = BranchBarrier::new(TransInfo::new(&gid, TransType::Saga, "01", Op::Action));
            let policy = ReprocessPolicy::default();
            let busi = crosswise::<DB>(k, first, second, attempts, sync);
            let r = if reprocess {
                bb.call_reprocessing(&*p, &policy, busi).await
            } else {
                bb.call(&*p, busi).await
            };
            (gid, r)
        })
    };
    let t1 = run(0, x, y);
    let t2 = run(1, y, x);
    let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
    let tries = attempts[0].load(Ordering::SeqCst) + attempts[1].load(Ordering::SeqCst);
    let bx = balance(db, x).await;
    let by = balance(db, y).await;
    if reprocess {
        assert!(r1.1.as_ref().is_ok_and(Outcome::is_executed), "{:?}", r1.1);
        assert!(r2.1.as_ref().is_ok_and(Outcome::is_executed), "{:?}", r2.1);
        assert_eq!(tries, 3, "the loser ran twice");
        // Both effects landed exactly once.
        assert_eq!((bx, by), (998, 998));
        assert_eq!(rows(db, &r1.0).await.len(), 1);
        assert_eq!(rows(db, &r2.0).await.len(), 1);
    } else {
        let errs: Vec<&BError> = [&r1.1, &r2.1]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
            .collect();
        assert_eq!(errs.len(), 1, "one loser: {:?} {:?}", r1.1, r2.1);
        assert!(matches!(errs[0], BError::Sql(_)), "{}", errs[0]);
        assert_eq!(tries, 2);
        assert_eq!((bx, by), (999, 999), "only the winner's effect");
        let loser = if r1.1.is_err() { &r1.0 } else { &r2.0 };
        assert!(rows(db, loser).await.is_empty());
    }
}

/// The database drops the connection in the middle of a guarded business: nothing of it is
/// applied (business write and barrier row roll back together), the retry DTM would send
/// applies it once, and a further retry is a duplicate.
async fn connection_dropped_mid_business<DB: SqlDb>() {
    let db = db::<DB>();
    let (a, _) = accounts(db, 100, 0).await;
    let p = pool::<DB>().await;
    let killer = pool::<DB>().await;
    let gid = gid("bb-dropped");
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let first = BranchBarrier::new(info.clone())
        .call(
            &p,
            move |c: &mut DB::Connection| -> BoxFuture<'_, dtm_barrier::Result<()>> {
                Box::pin(async move {
                    DB::execute(c, &debit_sql(), vec![30.into(), a.into()]).await?;
                    DB::kill(c, &killer).await?;
                    DB::execute(c, "select 1", Vec::new()).await?;
                    Ok(())
                })
            },
        )
        .await;
    let err = first.expect_err("the dropped connection must surface as an error");
    assert!(!err.is_failure(), "retryable, not a failure: {err}");
    assert_eq!(balance(db, a).await, 100, "nothing applied");
    assert!(rows(db, &gid).await.is_empty(), "no barrier row either");
    // DTM retries: applied once; and once more: a duplicate.
    let out = guarded_debit(&p, info.clone(), a, 30).await.unwrap();
    assert!(out.is_executed());
    let again = guarded_debit(&p, info, a, 30).await.unwrap();
    assert_eq!(again, Outcome::Duplicate);
    assert_eq!(balance(db, a).await, 70);
    assert_eq!(rows(db, &gid).await, ["saga/01/action/01/action"]);
}

/// The barrier in the caller's own transaction: the caller's write commits with the
/// barrier row and the business, or rolls back with them; a repeat is a duplicate (whose
/// transaction, the caller's write included, still commits).
async fn call_in_the_callers_transaction<DB: SqlDb>() {
    let db = db::<DB>();
    let (a, _) = accounts(db, 100, 0).await;
    let p = pool::<DB>().await;
    let gid = gid("bb-in-tx");
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let e = in_callers_tx(&p, info.clone(), a, 1, 30, true)
        .await
        .unwrap_err();
    assert!(e.is_failure(), "{e}");
    assert_eq!(balance(db, a).await, 100, "both writes rolled back");
    assert!(rows(db, &gid).await.is_empty());
    let out = in_callers_tx(&p, info.clone(), a, 1, 30, false)
        .await
        .unwrap();
    assert_eq!(out, Outcome::Executed(()));
    assert_eq!(balance(db, a).await, 69);
    let again = in_callers_tx(&p, info, a, 1, 30, false).await.unwrap();
    assert_eq!(again, Outcome::Duplicate);
    assert_eq!(balance(db, a).await, 68);
    assert_eq!(rows(db, &gid).await, ["saga/01/action/01/action"]);
}

async fn deadlock_reprocessed<DB: SqlDb>() {
    deadlock::<DB>(true).await
}

async fn deadlock_without_policy_returns_the_error<DB: SqlDb>() {
    deadlock::<DB>(false).await
}

macro_rules! per_db {
    ($($name:ident),* $(,)?) => {
        mod mysql {
            $( #[tokio::test] async fn $name() { super::$name::<sqlx::MySql>().await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name::<sqlx::Postgres>().await } )*
        }
    };
}

per_db!(
    xa_two_branches_commit,
    xa_failing_branch_rolls_both_back,
    deadlock_reprocessed,
    deadlock_without_policy_returns_the_error,
    connection_dropped_mid_business,
    call_in_the_callers_transaction,
);
