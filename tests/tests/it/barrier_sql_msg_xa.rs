//! The SQL barrier's XA local transactions, reprocessing and the caller's own transaction,
//! on MariaDB and PostgreSQL, with the real DTM server (the msg outbox is in the generic
//! `barrier_suite`).

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use dtm_barrier::reprocess::ReprocessPolicy;
use dtm_barrier::{BranchBarrier, Error as BError, Outcome};
use dtm_examples::bank::{mysql_url, pg_url, BankReq, Db, ACCOUNTS};
use dtmcli::{Op, TransInfo, TransOptions, TransType};
use futures_util::future::BoxFuture;
use sqlx::{MySqlPool, PgPool};

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
enum Pool {
    My(MySqlPool),
    Pg(PgPool),
}

async fn pool(db: Db) -> Pool {
    match db {
        Db::Mysql => Pool::My(MySqlPool::connect(&mysql_url()).await.unwrap()),
        Db::Postgres => Pool::Pg(PgPool::connect(&pg_url()).await.unwrap()),
    }
}

fn debit_my(
    user: i64,
    amount: i64,
    fail: bool,
) -> impl for<'c> FnOnce(&'c mut sqlx::MySqlConnection) -> BoxFuture<'c, dtm_barrier::Result<()>> {
    move |conn| {
        Box::pin(async move {
            sqlx::query(&format!(
                "update {ACCOUNTS} set balance = balance - ? where user_id = ?"
            ))
            .bind(amount)
            .bind(user)
            .execute(&mut *conn)
            .await?;
            if fail {
                return Err(BError::failure("local business refused"));
            }
            Ok(())
        })
    }
}

fn debit_pg(
    user: i64,
    amount: i64,
    fail: bool,
) -> impl for<'c> FnOnce(&'c mut sqlx::PgConnection) -> BoxFuture<'c, dtm_barrier::Result<()>> {
    move |conn| {
        Box::pin(async move {
            sqlx::query(&format!(
                "update {ACCOUNTS} set balance = balance - $1 where user_id = $2"
            ))
            .bind(amount)
            .bind(user)
            .execute(&mut *conn)
            .await?;
            if fail {
                return Err(BError::failure("local business refused"));
            }
            Ok(())
        })
    }
}

impl Pool {
    async fn guarded_debit(
        &self,
        info: TransInfo,
        user: i64,
        amount: i64,
    ) -> dtm_barrier::Result<Outcome<()>> {
        let bb = BranchBarrier::new(info);
        match self {
            Pool::My(p) => bb.call(p, debit_my(user, amount, false)).await,
            Pool::Pg(p) => bb.call(p, debit_pg(user, amount, false)).await,
        }
    }
}

impl Pool {
    /// In the caller's own transaction: first the caller's write (`pre` off `user`), then
    /// the guarded debit of `amount`.
    async fn in_callers_tx(
        &self,
        info: TransInfo,
        user: i64,
        pre: i64,
        amount: i64,
        fail: bool,
    ) -> dtm_barrier::Result<Outcome<()>> {
        let bb = BranchBarrier::new(info);
        match self {
            Pool::My(p) => {
                let mut tx = p.begin().await?;
                debit_my(user, pre, false)(&mut tx).await?;
                bb.call_in_transaction(tx, debit_my(user, amount, fail))
                    .await
            }
            Pool::Pg(p) => {
                let mut tx = p.begin().await?;
                debit_pg(user, pre, false)(&mut tx).await?;
                bb.call_in_transaction(tx, debit_pg(user, amount, fail))
                    .await
            }
        }
    }
}

async fn xa_two_branches_commit(db: Db) {
    let (a, b) = accounts(db, 100, 0).await;
    let dtm = dtm();
    let gid = gid("bbxa-ok");
    let r = BankReq {
        amount: 30,
        from: a,
        to: b,
        ..Default::default()
    };
    let (out, inn) = (bank_url(db, "TransOutXa"), bank_url(db, "TransInXa"));
    dtm.xa_global_transaction(&gid, TransOptions::default(), |xa| async move {
        xa.call_branch(&r, &out).await?;
        xa.call_branch(&r, &inn).await?;
        Ok(())
    })
    .await
    .unwrap();
    wait_status(&dtm, &gid, "succeed").await;
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
    let status = reqwest::Client::new()
        .post(bank_url(db, "TransOutXa"))
        .query(&commit.query_pairs())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    assert_eq!((balance(db, a).await, balance(db, b).await), (70, 30));
}

async fn xa_failing_branch_rolls_both_back(db: Db) {
    let (a, b) = accounts(db, 100, 0).await;
    let dtm = dtm();
    let gid = gid("bbxa-rb");
    let r = BankReq {
        amount: 30,
        from: a,
        to: b,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    let (out, inn) = (bank_url(db, "TransOutXa"), bank_url(db, "TransInXa"));
    let err = dtm
        .xa_global_transaction(&gid, TransOptions::default(), |xa| async move {
            xa.call_branch(&r, &out).await?;
            xa.call_branch(&r, &inn).await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    let q = wait_status(&dtm, &gid, "failed").await;
    // Only the first branch registered; DTM rolled it back.
    assert_eq!(
        branch_rows(&q),
        ["01/rollback=succeed", "01/commit=prepared"]
    );
    assert_eq!((balance(db, a).await, balance(db, b).await), (100, 0));
    assert_eq!(rows(db, &gid).await, ["xa/01/action/01/rollback"]);
}

/// Two guarded transactions that lock two rows in opposite orders: a real deadlock.
async fn deadlock(db: Db, reprocess: bool) {
    let (x, y) = accounts(db, 1000, 1000).await;
    let p = Arc::new(pool(db).await);
    let sync = Arc::new(tokio::sync::Barrier::new(2));
    let attempts = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let run = |k: usize, first: i64, second: i64| {
        let (p, sync, attempts) = (p.clone(), sync.clone(), attempts.clone());
        let gid = support::gid("bb-deadlock");
        tokio::spawn(async move {
            let bb = BranchBarrier::new(TransInfo::new(&gid, TransType::Saga, "01", Op::Action));
            let policy = ReprocessPolicy::default();
            let waited = Arc::new(AtomicBool::new(false));
            macro_rules! busi {
                ($conn:ty, $upd:expr) => {
                    |conn: &mut $conn| -> BoxFuture<'_, dtm_barrier::Result<()>> {
                        attempts[k].fetch_add(1, Ordering::SeqCst);
                        let (sync, waited) = (sync.clone(), waited.clone());
                        Box::pin(async move {
                            sqlx::query($upd)
                                .bind(1_i64)
                                .bind(first)
                                .execute(&mut *conn)
                                .await?;
                            if !waited.swap(true, Ordering::SeqCst) {
                                let _ =
                                    tokio::time::timeout(Duration::from_secs(5), sync.wait()).await;
                            }
                            sqlx::query($upd)
                                .bind(1_i64)
                                .bind(second)
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    }
                };
            }
            let r = match (&*p, reprocess) {
                (Pool::My(pool), true) => bb.call_reprocessing(pool, &policy, busi!(sqlx::MySqlConnection, "update dtm_busi.user_account set balance = balance - ? where user_id = ?")).await,
                (Pool::My(pool), false) => bb.call(pool, busi!(sqlx::MySqlConnection, "update dtm_busi.user_account set balance = balance - ? where user_id = ?")).await,
                (Pool::Pg(pool), true) => bb.call_reprocessing(pool, &policy, busi!(sqlx::PgConnection, "update dtm_busi.user_account set balance = balance - $1 where user_id = $2")).await,
                (Pool::Pg(pool), false) => bb.call(pool, busi!(sqlx::PgConnection, "update dtm_busi.user_account set balance = balance - $1 where user_id = $2")).await,
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
async fn connection_dropped_mid_business(db: Db) {
    let (a, _) = accounts(db, 100, 0).await;
    let p = pool(db).await;
    let killer = pool(db).await;
    let gid = gid("bb-dropped");
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let first = match (&p, &killer) {
        (Pool::My(pool), Pool::My(k)) => {
            let k = k.clone();
            BranchBarrier::new(info.clone())
                .call(
                    pool,
                    move |c: &mut sqlx::MySqlConnection| -> BoxFuture<'_, dtm_barrier::Result<()>> {
                        Box::pin(async move {
                            sqlx::query(&format!(
                                "update {ACCOUNTS} set balance = balance - 30 where user_id = ?"
                            ))
                            .bind(a)
                            .execute(&mut *c)
                            .await?;
                            let id: u64 = sqlx::query_scalar("select connection_id()")
                                .fetch_one(&mut *c)
                                .await?;
                            sqlx::raw_sql(&format!("kill connection {id}"))
                                .execute(&k)
                                .await?;
                            sqlx::query("select 1").execute(&mut *c).await?;
                            Ok(())
                        })
                    },
                )
                .await
        }
        (Pool::Pg(pool), Pool::Pg(k)) => {
            let k = k.clone();
            BranchBarrier::new(info.clone())
                .call(
                    pool,
                    move |c: &mut sqlx::PgConnection| -> BoxFuture<'_, dtm_barrier::Result<()>> {
                        Box::pin(async move {
                            sqlx::query(&format!(
                                "update {ACCOUNTS} set balance = balance - 30 where user_id = $1"
                            ))
                            .bind(a)
                            .execute(&mut *c)
                            .await?;
                            let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
                                .fetch_one(&mut *c)
                                .await?;
                            sqlx::query("select pg_terminate_backend($1)")
                                .bind(pid)
                                .execute(&k)
                                .await?;
                            sqlx::query("select 1").execute(&mut *c).await?;
                            Ok(())
                        })
                    },
                )
                .await
        }
        _ => unreachable!(),
    };
    let err = first.expect_err("the dropped connection must surface as an error");
    assert!(!err.is_failure(), "retryable, not a failure: {err}");
    assert_eq!(balance(db, a).await, 100, "nothing applied");
    assert!(rows(db, &gid).await.is_empty(), "no barrier row either");
    // DTM retries: applied once; and once more: a duplicate.
    let out = p.guarded_debit(info.clone(), a, 30).await.unwrap();
    assert!(out.is_executed());
    let again = p.guarded_debit(info, a, 30).await.unwrap();
    assert_eq!(again, Outcome::Duplicate);
    assert_eq!(balance(db, a).await, 70);
    assert_eq!(rows(db, &gid).await, ["saga/01/action/01/action"]);
}

/// The barrier in the caller's own transaction: the caller's write commits with the
/// barrier row and the business, or rolls back with them; a repeat is a duplicate (whose
/// transaction, the caller's write included, still commits).
async fn call_in_the_callers_transaction(db: Db) {
    let (a, _) = accounts(db, 100, 0).await;
    let p = pool(db).await;
    let gid = gid("bb-in-tx");
    let info = TransInfo::new(&gid, TransType::Saga, "01", Op::Action);
    let e = p
        .in_callers_tx(info.clone(), a, 1, 30, true)
        .await
        .unwrap_err();
    assert!(e.is_failure(), "{e}");
    assert_eq!(balance(db, a).await, 100, "both writes rolled back");
    assert!(rows(db, &gid).await.is_empty());
    let out = p
        .in_callers_tx(info.clone(), a, 1, 30, false)
        .await
        .unwrap();
    assert_eq!(out, Outcome::Executed(()));
    assert_eq!(balance(db, a).await, 69);
    let again = p.in_callers_tx(info, a, 1, 30, false).await.unwrap();
    assert_eq!(again, Outcome::Duplicate);
    assert_eq!(balance(db, a).await, 68);
    assert_eq!(rows(db, &gid).await, ["saga/01/action/01/action"]);
}

async fn deadlock_reprocessed(db: Db) {
    deadlock(db, true).await
}

async fn deadlock_without_policy_returns_the_error(db: Db) {
    deadlock(db, false).await
}

macro_rules! per_db {
    ($($name:ident),* $(,)?) => {
        mod mysql {
            $( #[tokio::test] async fn $name() { super::$name(super::Db::Mysql).await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name(super::Db::Postgres).await } )*
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
