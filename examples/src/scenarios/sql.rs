//! The barrier-guarded bank on MariaDB and PostgreSQL over HTTP: balances move exactly
//! once, and a rollback puts them back (a failed step's compensation is a null
//! compensation, skipped by the barrier).

use dtmcli::{Error, TransOptions};

use super::env::{expect, expect_eq, final_status, Env};
use crate::bank::{adjust_sql, BankReq, Db};
use crate::demo::DemoError;

/// A saga moving 30 between fresh accounts on `db` through `trans_in` (`TransIn` or
/// `TransInTwice`); the balances and DTM's status are checked.
async fn barrier_saga(env: &Env, db: Db, trans_in: &str, fail: bool) -> Result<(), DemoError> {
    let (a, b) = env.accounts(db, 100).await?;
    let gid = env.dtm().new_gid().await?;
    println!(
        "   saga {gid} on {}: move 30 from {a} to {b}{}",
        db.as_str(),
        if fail { ", the credit fails" } else { "" }
    );
    let u = |h: &'static str| env.bank_url(db, h);
    env.dtm()
        .saga(&gid)
        .add(
            &u("TransOut").await?,
            &u("TransOutCompensate").await?,
            &BankReq::transfer(30, a, b, fail),
        )
        .add(
            &env.bank_url(db, trans_in).await?,
            &u("TransInCompensate").await?,
            &BankReq::transfer(30, a, b, fail),
        )
        .submit()
        .await?;
    env.expect_final(&gid, final_status(!fail)).await?;
    let bank = &env.bank().await?.0;
    let rows = bank.barrier_rows(db, &gid).await?;
    println!("   barrier rows: {}", rows.join(" "));
    if fail {
        // The credit's action rolled back with its barrier row, so its compensation found
        // no action: a null compensation (origin row written by the compensation itself).
        expect(
            rows.iter().any(|r| r.ends_with("02/action/01/compensate")),
            "the failed credit's compensation was not a null compensation",
        )?;
        expect_eq(
            "credit business runs",
            &bank.executed(&gid, "TransInCompensate"),
            &0,
        )?;
    }
    env.expect_moved(db, a, b, !fail).await
}

/// `http_saga_barrier`: a guarded saga on MariaDB, then one whose credit fails.
pub async fn saga_barrier(env: &Env) -> Result<(), DemoError> {
    barrier_saga(env, Db::Mysql, "TransIn", false).await?;
    barrier_saga(env, Db::Mysql, "TransIn", true).await
}

/// `http_saga_barrier_twice`: one branch makes two guarded local transactions (barrier ids
/// 01 and 02).
pub async fn saga_barrier_twice(env: &Env) -> Result<(), DemoError> {
    barrier_saga(env, Db::Mysql, "TransInTwice", false).await
}

/// `http_saga_gorm_barrier`: DTM's ORM variant; here sqlx on PostgreSQL.
pub async fn saga_gorm_barrier(env: &Env) -> Result<(), DemoError> {
    barrier_saga(env, Db::Postgres, "TransIn", false).await?;
    barrier_saga(env, Db::Postgres, "TransIn", true).await
}

/// `http_saga_multiSource`: one branch writes to MariaDB and PostgreSQL, each part guarded
/// by the same barrier.
pub async fn saga_multi_source(env: &Env) -> Result<(), DemoError> {
    let (a, b) = env.accounts_across().await?;
    let gid = env.dtm().new_gid().await?;
    let (base, bank) = (&env.bank().await?.1, &env.bank().await?.0);
    env.dtm()
        .saga(&gid)
        .add(
            &format!("{base}/multi/TransMulti"),
            &format!("{base}/multi/TransMultiRevert"),
            &BankReq::transfer(30, a, b, false),
        )
        .submit()
        .await?;
    env.expect_final(&gid, "succeed").await?;
    println!(
        "   barrier rows: MariaDB {:?}, PostgreSQL {:?}",
        bank.barrier_rows(Db::Mysql, &gid).await?,
        bank.barrier_rows(Db::Postgres, &gid).await?
    );
    env.expect_moved_across(a, b, true).await
}

/// `http_tcc_barrier`: a guarded TCC (try reserves, confirm keeps, cancel undoes), then one
/// whose credit try fails: its cancel is a null compensation.
pub async fn tcc_barrier(env: &Env) -> Result<(), DemoError> {
    for fail in [false, true] {
        let db = Db::Mysql;
        let (a, b) = env.accounts(db, 100).await?;
        let gid = env.dtm().new_gid().await?;
        let mut urls: [String; 6] = Default::default();
        let handlers = [
            "TransOutTry",
            "TransOutConfirm",
            "TransOutCancel",
            "TransInTry",
            "TransInConfirm",
            "TransInCancel",
        ];
        for (url, h) in urls.iter_mut().zip(handlers) {
            *url = env.bank_url(db, h).await?;
        }
        let body = BankReq::transfer(30, a, b, fail);
        let res = env
            .dtm()
            .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
                tcc.call_branch(&body, &urls[0], &urls[1], &urls[2]).await?;
                tcc.call_branch(&body, &urls[3], &urls[4], &urls[5]).await?;
                Ok(())
            })
            .await;
        println!("   tcc {gid}: returned {res:?}");
        expect(res.is_ok() != fail, "unexpected TCC outcome")?;
        env.expect_final(&gid, final_status(!fail)).await?;
        env.expect_moved(db, a, b, !fail).await?;
    }
    Ok(())
}

/// `http_msg_doAndCommit`: the outbox pattern: the debit commits in a MariaDB transaction
/// together with the msg barrier; DTM then runs the credit. The back-check reads the
/// barrier.
pub async fn msg_do_and_commit(env: &Env) -> Result<(), DemoError> {
    let db = Db::Mysql;
    let (a, b) = env.accounts(db, 100).await?;
    let gid = env.dtm().new_gid().await?;
    let bank = &env.bank().await?.0;
    let msg = env.dtm().msg(&gid).add(
        &env.bank_url(db, "TransIn").await?,
        &BankReq::transfer(30, a, b, false),
    );
    dtm_barrier::do_and_submit(
        &msg,
        &env.bank_url(db, "QueryPrepared").await?,
        bank.mysql(),
        move |conn| adjust_sql::<sqlx::MySql>(conn, a, -30),
    )
    .await?;
    env.expect_final(&gid, "succeed").await?;
    env.expect_balances(db, &[a, b], &[70, 30]).await?;

    // A local transaction that fails: nothing is debited and the message is aborted.
    let (a, b) = env.accounts(db, 10).await?;
    let gid = env.dtm().new_gid().await?;
    let msg = env.dtm().msg(&gid).add(
        &env.bank_url(db, "TransIn").await?,
        &BankReq::transfer(30, a, b, false),
    );
    let res = dtm_barrier::do_and_submit(
        &msg,
        &env.bank_url(db, "QueryPrepared").await?,
        bank.mysql(),
        move |conn| adjust_sql::<sqlx::MySql>(conn, a, -30),
    )
    .await;
    println!("   a debit the balance cannot cover: do_and_submit returned {res:?}");
    expect(
        res.is_err(),
        "an insufficient balance must fail the local transaction",
    )?;
    env.expect_final(&gid, "failed").await?;
    env.expect_balances(db, &[a, b], &[10, 0]).await
}

async fn xa(env: &Env, db: Db) -> Result<(), DemoError> {
    for fail in [false, true] {
        let (a, b) = env.accounts(db, 100).await?;
        let gid = env.dtm().new_gid().await?;
        let body = BankReq::transfer(30, a, b, fail);
        let (out, inn) = (
            env.bank_url(db, "TransOutXa").await?,
            env.bank_url(db, "TransInXa").await?,
        );
        let res = env
            .dtm()
            .xa_global_transaction(&gid, TransOptions::default(), |xa| async move {
                xa.call_branch(&body, &out).await?;
                xa.call_branch(&body, &inn).await?;
                Ok(())
            })
            .await;
        println!("   xa {gid} on {}: returned {res:?}", db.as_str());
        expect(
            if fail {
                matches!(res, Err(Error::Failure(_)))
            } else {
                res.is_ok()
            },
            "unexpected XA outcome",
        )?;
        env.expect_final(&gid, final_status(!fail)).await?;
        env.expect_moved(db, a, b, !fail).await?;
    }
    Ok(())
}

/// `http_xa`: XA local transactions on MariaDB committed (or rolled back) by DTM.
pub async fn xa_mysql(env: &Env) -> Result<(), DemoError> {
    xa(env, Db::Mysql).await
}

/// `http_xa_gorm`: DTM's ORM variant of XA; here sqlx on PostgreSQL.
pub async fn xa_postgres(env: &Env) -> Result<(), DemoError> {
    xa(env, Db::Postgres).await
}
