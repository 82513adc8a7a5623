//! `Wf::do_xa`: XA local transactions on MariaDB and PostgreSQL as workflow branches.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use crate::support::*;
use dtm_barrier::xa::XaLocal;
use dtm_barrier::{BranchBarrier, Error as BError};
use dtm_examples::bank::{mysql_url, pg_url, Db, ACCOUNTS};
use dtm_tests::sql::{business, SqlDb};
use dtm_tests::wf::retrying_every_second;
use dtm_workflow::{WfOptions, Workflows};
use dtmcli::DtmClient;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Input {
    from: i64,
    to: i64,
    amount: i64,
    fail_second: bool,
}

static WFS: OnceLock<Workflows> = OnceLock::new();

fn wfs() -> &'static Workflows {
    WFS.get_or_init(|| {
        let _ = bank_env();
        let handle = env().handle.clone();
        let dtm_url = env().server.http_url();
        std::thread::spawn(move || {
            handle.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let cb = format!("http://{}/wf", listener.local_addr().unwrap());
                let dtm = DtmClient::new(dtm_url).unwrap();
                let wfs = Workflows::http(dtm.clone(), cb);
                let my: XaLocal<sqlx::MySql, _> =
                    XaLocal::new(mysql_url().parse().unwrap(), dtm.clone());
                let pg: XaLocal<sqlx::Postgres, _> = XaLocal::new(pg_url().parse().unwrap(), dtm);
                let options = retrying_every_second();
                wfs.register_with_options("xa", options, move |wf, input| {
                    let (my, pg) = (my.clone(), pg.clone());
                    async move {
                        let i: Input =
                            serde_json::from_slice(&input).map_err(dtmcli::Error::other)?;
                        // Branch 01: debit on MariaDB.
                        wf.new_branch()?;
                        wf.do_xa(&my, move |conn| {
                            Box::pin(async move {
                                let binds = vec![(-i.amount).into(), i.from.into()];
                                sqlx::MySql::execute(conn, &adjust_sql(), binds).await?;
                                Ok(b"debited".to_vec())
                            })
                        })
                        .await?;
                        // Branch 02: credit on PostgreSQL, or fail.
                        wf.new_branch()?;
                        wf.do_xa(&pg, move |conn| {
                            Box::pin(async move {
                                let binds = vec![i.amount.into(), i.to.into()];
                                sqlx::Postgres::execute(conn, &adjust_sql(), binds).await?;
                                if i.fail_second {
                                    return Err(BError::failure("credit refused"));
                                }
                                Ok(b"credited".to_vec())
                            })
                        })
                        .await?;
                        Ok(Vec::new())
                    }
                })
                .unwrap();
                // Saga style with barrier-guarded steps: the action debits, the rollback
                // credits back, both through the barrier (op action / rollback).
                let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
                for (name, compensate_failed) in [("saga_bb", false), ("saga_bb_cef", true)] {
                    let pool = pool.clone();
                    let options = WfOptions {
                        compensate_error_branch: compensate_failed,
                        ..retrying_every_second()
                    };
                    wfs.register_with_options(name, options, move |wf, input| {
                        let pool = pool.clone();
                        async move {
                            let i: Input =
                                serde_json::from_slice(&input).map_err(dtmcli::Error::other)?;
                            wf.new_branch()?;
                            let p2 = pool.clone();
                            wf.on_rollback(move |info| async move {
                                BranchBarrier::new(info)
                                    .call(&p2, adjust(i.from, i.amount, false))
                                    .await?;
                                Ok(())
                            })?;
                            // With `fail_second` in the compensate-error-branch variant, the
                            // action itself fails after its write: its rollback then finds
                            // no action row (null compensation) and must not credit.
                            let fail_here = compensate_failed && i.fail_second;
                            wf.do_(|info| async move {
                                BranchBarrier::new(info)
                                    .call(&pool, adjust(i.from, -i.amount, fail_here))
                                    .await?;
                                Ok(Vec::new())
                            })
                            .await?;
                            wf.new_branch()?;
                            wf.do_(|_| async move {
                                if i.fail_second {
                                    Err(dtmcli::Error::failure("second step refused"))
                                } else {
                                    Ok(Vec::new())
                                }
                            })
                            .await?;
                            Ok(Vec::new())
                        }
                    })
                    .unwrap();
                }
                let app = wfs.callback_router("/wf");
                tokio::spawn(async move { axum::serve(listener, app).await });
                wfs
            })
        })
        .join()
        .unwrap()
    })
}

/// `delta` added to `user`'s balance; one bind each.
fn adjust_sql() -> String {
    format!("update {ACCOUNTS} set balance = balance + ? where user_id = ?")
}

/// The guarded adjustment of `user` by `delta` on PostgreSQL, refused after its write when
/// `fail`.
fn adjust(
    user: i64,
    delta: i64,
    fail: bool,
) -> impl for<'c> FnOnce(
    &'c mut sqlx::PgConnection,
) -> futures_util::future::BoxFuture<'c, dtm_barrier::Result<()>> {
    business::<sqlx::Postgres>(
        adjust_sql(),
        vec![delta.into(), user.into()],
        fail.then_some("debit refused after its write"),
    )
}

async fn pg_account(balance: i64) -> i64 {
    let (a, _) = accounts().await;
    let bank = bank_env().bank.clone();
    on_env(async move { bank.open_account(Db::Postgres, a, balance).await.unwrap() }).await;
    a
}

async fn pg_balance(a: i64) -> i64 {
    let bank = bank_env().bank.clone();
    on_env(async move { bank.balance(Db::Postgres, a).await.unwrap() }).await
}

async fn pg_rows(gid: &str) -> Vec<String> {
    let (bank, gid) = (bank_env().bank.clone(), gid.to_string());
    on_env(async move {
        let mut r = bank.barrier_rows(Db::Postgres, &gid).await.unwrap();
        r.sort();
        r
    })
    .await
}

async fn accounts() -> (i64, i64) {
    static N: AtomicI64 = AtomicI64::new(0);
    let a = 700_000_000
        + (std::process::id() as i64 % 1000) * 100_000
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            % 1000)
            * 10
        + N.fetch_add(2, Ordering::Relaxed);
    let bank = bank_env().bank.clone();
    on_env(async move {
        bank.open_account(Db::Mysql, a, 100).await.unwrap();
        bank.open_account(Db::Postgres, a + 1, 0).await.unwrap();
    })
    .await;
    (a, a + 1)
}

async fn balances(a: i64, b: i64) -> (i64, i64) {
    let bank = bank_env().bank.clone();
    on_env(async move {
        (
            bank.balance(Db::Mysql, a).await.unwrap(),
            bank.balance(Db::Postgres, b).await.unwrap(),
        )
    })
    .await
}

async fn run(gid: &str, input: &Input) -> dtmcli::Result<Vec<u8>> {
    run_named("xa", gid, input).await
}

async fn run_named(name: &str, gid: &str, input: &Input) -> dtmcli::Result<Vec<u8>> {
    let (wfs, name, gid, input) = (
        wfs().clone(),
        name.to_string(),
        gid.to_string(),
        serde_json::to_vec(input).unwrap(),
    );
    on_env(async move { wfs.execute(&name, &gid, &input).await }).await
}

/// Runs the saga-style workflow `name` on a fresh account holding 100: its first step
/// debits 30, its second is refused, so DTM ends it `failed`. The account's balance and
/// barrier rows then.
async fn refused_saga_bb(name: &str, gid: &str) -> (i64, Vec<String>) {
    let a = pg_account(100).await;
    let input = Input {
        from: a,
        to: 0,
        amount: 30,
        fail_second: true,
    };
    let err = run_named(name, gid, &input).await.unwrap_err();
    assert!(err.is_failure(), "{err}");
    wait_status(&dtm(), gid, "failed").await;
    (pg_balance(a).await, pg_rows(gid).await)
}

#[tokio::test]
async fn saga_rollback_with_barrier_guarded_compensation() {
    let gid = gid("wfbb-rb");
    let (balance, rows) = refused_saga_bb("saga_bb", &gid).await;
    assert_eq!(balance, 100, "debited, then credited back once");
    assert_eq!(
        rows,
        [
            "workflow/01/action/01/action",
            "workflow/01/rollback/01/rollback"
        ]
    );
}

#[tokio::test]
async fn compensate_error_branch_meets_a_null_compensation() {
    let gid = gid("wfbb-cef");
    let (balance, rows) = refused_saga_bb("saga_bb_cef", &gid).await;
    // The failed action's write and barrier row were rolled back; its rollback ran (the
    // option asks for it) but the barrier saw a null compensation and did not credit.
    assert_eq!(balance, 100);
    assert_eq!(
        rows,
        [
            "workflow/01/action/01/rollback",
            "workflow/01/rollback/01/rollback"
        ]
    );
}

#[tokio::test]
async fn do_xa_commits_both_databases() {
    let (a, b) = accounts().await;
    let gid = gid("wfxa-ok");
    run(
        &gid,
        &Input {
            from: a,
            to: b,
            amount: 30,
            fail_second: false,
        },
    )
    .await
    .unwrap();
    let q = wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(balances(a, b).await, (70, 30));
    let rows = branch_rows(&q);
    for r in [
        "01/business=succeed",
        "01/action=succeed",
        "01/commit=succeed",
        "02/action=succeed",
        "02/commit=succeed",
    ] {
        assert!(rows.contains(&r.to_string()), "{r} missing in {rows:?}");
    }
    let bank = bank_env().bank.clone();
    let g = gid.clone();
    let my_rows = on_env(async move { bank.barrier_rows(Db::Mysql, &g).await.unwrap() }).await;
    assert_eq!(my_rows, ["workflow/01/action/01/action"]);
}

#[tokio::test]
async fn do_xa_failure_rolls_both_back() {
    let (a, b) = accounts().await;
    let gid = gid("wfxa-rb");
    let err = run(
        &gid,
        &Input {
            from: a,
            to: b,
            amount: 30,
            fail_second: true,
        },
    )
    .await
    .unwrap_err();
    assert!(err.is_failure(), "{err}");
    let q = wait_status(&dtm(), &gid, "failed").await;
    assert_eq!(balances(a, b).await, (100, 0));
    let rows = branch_rows(&q);
    assert!(
        rows.contains(&"01/rollback=succeed".to_string()),
        "{rows:?}"
    );
    assert!(rows.contains(&"02/action=failed".to_string()), "{rows:?}");
}
