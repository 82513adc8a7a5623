//! Balances in Redis and MongoDB moved by guarded HTTP branches, alone or together with
//! MariaDB in one saga, and the outbox pattern on Redis.

use dtm_barrier::redis::RedisStore;
use dtm_barrier::Outcome;
use dtmcli::{Op, TransInfo, TransType};

use super::env::{expect, expect_kv, final_status, kv_accounts, Env};
use crate::bank::{BankReq, Db};
use crate::demo::DemoError;
use crate::kv_bank::{Balances, KvBank, Transfer};

/// A saga moving 30 from an account holding `from_balance` (the debit is the second step,
/// so with 10 it fails after the credit ran, and both are compensated: the debit's as a
/// null compensation). With `resend`, DTM's debit is sent once more afterwards, as DTM
/// does when an answer is lost: the barrier skips it.
async fn kv_saga<S: Balances>(
    env: &Env,
    kv: &KvBank<S>,
    from_balance: i64,
    resend: bool,
) -> Result<(), DemoError> {
    let gid = env.dtm().new_gid().await?;
    let (a, b) = kv_accounts(kv, &gid, from_balance).await?;
    let t = Transfer::new(&gid, 30);
    println!(
        "   saga {gid} in {}: move 30 from {a} ({from_balance}) to {b}",
        S::NAME
    );
    env.dtm()
        .saga(&gid)
        .add(&kv.url("TransIn"), &kv.url("TransInRevert"), &t)
        .add(&kv.url("TransOut"), &kv.url("TransOutRevert"), &t)
        .submit()
        .await?;
    let ok = from_balance >= 30;
    env.expect_final(&gid, final_status(ok)).await?;
    let log = kv.tell(&gid);
    if !ok {
        expect(
            log.iter()
                .any(|l| l.contains("TransOutRevert") && l.contains("NullCompensation")),
            "the failed debit's compensation was not a null compensation",
        )?;
    }
    if resend {
        let info = TransInfo::new(&gid, TransType::Saga, "02", Op::Action);
        env.dtm()
            .call_branch(
                &kv.url("TransOut"),
                &info,
                &Default::default(),
                Some(serde_json::to_string(&t)?),
            )
            .await?;
        let log = kv.tell(&gid);
        expect(
            log.iter().any(|l| l.contains("Duplicate")),
            "the resent debit was not recognised as a duplicate",
        )?;
    }
    let want = if ok {
        [from_balance - 30, 30]
    } else {
        [from_balance, 0]
    };
    expect_kv(kv, &[&a, &b], &want).await
}

/// `http_saga_redis`: a saga on Redis balances (one Lua script per branch), then its debit
/// sent again.
pub async fn saga_redis(env: &Env) -> Result<(), DemoError> {
    kv_saga(env, env.redis().await?, 100, true).await
}

/// `http_saga_redis_rollback`: the debit fails (insufficient balance); both steps are
/// compensated, the debit's as a null compensation.
pub async fn saga_redis_rollback(env: &Env) -> Result<(), DemoError> {
    kv_saga(env, env.redis().await?, 10, false).await
}

/// `http_saga_mongo`: a saga on MongoDB balances (one transaction per branch), then its
/// debit sent again.
pub async fn saga_mongo(env: &Env) -> Result<(), DemoError> {
    kv_saga(env, env.mongo().await?, 100, true).await
}

/// `http_saga_mongo_rollback`: as `http_saga_redis_rollback`, on MongoDB.
pub async fn saga_mongo_rollback(env: &Env) -> Result<(), DemoError> {
    kv_saga(env, env.mongo().await?, 10, false).await
}

/// One saga over three stores: debit 30 in MongoDB (or 30000 when `fail`, which it cannot
/// cover), debit 20 in Redis, credit 50 on MariaDB.
async fn multidb(env: &Env, fail: bool) -> Result<(), DemoError> {
    let (mongo, redis) = (env.mongo().await?, env.redis().await?);
    let gid = env.dtm().new_gid().await?;
    let (m, _) = kv_accounts(mongo, &gid, 100).await?;
    let (r, _) = kv_accounts(redis, &gid, 100).await?;
    let (_, s) = env.accounts(Db::Mysql, 0).await?;
    let leg = |from: &str, amount| Transfer {
        amount,
        from: from.to_string(),
        to: String::new(),
    };
    let mongo_step = (
        mongo.url("TransOut"),
        mongo.url("TransOutRevert"),
        leg(&m, if fail { 30_000 } else { 30 }),
    );
    let redis_step = (
        redis.url("TransOut"),
        redis.url("TransOutRevert"),
        leg(&r, 20),
    );
    let credit = BankReq {
        amount: 50,
        to: s,
        ..Default::default()
    };
    let (cin, ccom) = (
        env.bank_url(Db::Mysql, "TransIn").await?,
        env.bank_url(Db::Mysql, "TransInCompensate").await?,
    );
    let mut saga = env.dtm().saga(&gid);
    if fail {
        // DTM's order for the rollback case: Redis, MariaDB, then the failing MongoDB step.
        saga = saga
            .add(&redis_step.0, &redis_step.1, &redis_step.2)
            .add(&cin, &ccom, &credit)
            .add(&mongo_step.0, &mongo_step.1, &mongo_step.2);
    } else {
        saga = saga
            .add(&mongo_step.0, &mongo_step.1, &mongo_step.2)
            .add(&redis_step.0, &redis_step.1, &redis_step.2)
            .add(&cin, &ccom, &credit);
    }
    saga.submit().await?;
    env.expect_final(&gid, final_status(!fail)).await?;
    mongo.tell(&gid);
    redis.tell(&gid);
    if fail {
        expect_kv(mongo, &[&m], &[100]).await?;
        expect_kv(redis, &[&r], &[100]).await?;
        env.expect_balances(Db::Mysql, &[s], &[0]).await
    } else {
        expect_kv(mongo, &[&m], &[70]).await?;
        expect_kv(redis, &[&r], &[80]).await?;
        env.expect_balances(Db::Mysql, &[s], &[50]).await
    }
}

/// `http_saga_multidb`: one saga over MongoDB, Redis and MariaDB.
pub async fn saga_multidb(env: &Env) -> Result<(), DemoError> {
    multidb(env, false).await
}

/// `http_saga_multidb_rollback`: its last step (MongoDB) cannot be covered: all undone.
pub async fn saga_multidb_rollback(env: &Env) -> Result<(), DemoError> {
    multidb(env, true).await
}

/// The outbox pattern on Redis: the local debit is one guarded Lua adjustment together
/// with the msg barrier key; DTM then runs the credit at `credit_url` with `body`, and
/// the back-check reads the key.
async fn redis_outbox(
    env: &Env,
    gid: &str,
    debit: &str,
    credit_url: &str,
    body: &impl serde::Serialize,
) -> Result<(), DemoError> {
    let redis = env.redis().await?;
    let msg = env.dtm().msg(gid).add(credit_url, body);
    let key = debit.to_string();
    let store: &RedisStore<_> = redis.store();
    dtm_barrier::do_and_submit(&msg, &redis.url("QueryPrepared"), store, move |guard| {
        Box::pin(async move {
            let out = guard.check_adjust_amount(&key, -30).await?;
            println!(
                "   local debit of {key}: {}",
                if matches!(out, Outcome::Executed(_)) {
                    "executed"
                } else {
                    "skipped"
                }
            );
            Ok(())
        })
    })
    .await?;
    env.expect_final(gid, "succeed").await.map(drop)
}

/// `http_msg_barrier_redis`: debit in Redis with the msg barrier, credit in Redis by DTM.
pub async fn msg_barrier_redis(env: &Env) -> Result<(), DemoError> {
    let redis = env.redis().await?;
    let gid = env.dtm().new_gid().await?;
    let (a, b) = kv_accounts(redis, &gid, 100).await?;
    let t = Transfer::new(&gid, 30);
    redis_outbox(env, &gid, &a, &redis.url("TransIn"), &t).await?;
    redis.tell(&gid);
    expect_kv(redis, &[&a, &b], &[70, 30]).await
}

/// `http_msg_barrier_redis_db`: debit in Redis with the msg barrier, credit on MariaDB.
pub async fn msg_barrier_redis_db(env: &Env) -> Result<(), DemoError> {
    let redis = env.redis().await?;
    let gid = env.dtm().new_gid().await?;
    let (a, _) = kv_accounts(redis, &gid, 100).await?;
    let (_, s) = env.accounts(Db::Mysql, 0).await?;
    let credit = BankReq {
        amount: 30,
        to: s,
        ..Default::default()
    };
    let url = env.bank_url(Db::Mysql, "TransIn").await?;
    redis_outbox(env, &gid, &a, &url, &credit).await?;
    expect_kv(redis, &[&a], &[70]).await?;
    env.expect_balances(Db::Mysql, &[s], &[30]).await
}
