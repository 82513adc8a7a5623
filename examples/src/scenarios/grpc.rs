//! Saga, TCC, msg and XA over gRPC: DTM reached over gRPC, branches on the in-memory tonic
//! service `busi.Busi` (and on the barrier-guarded gRPC bank), a saga mixing gRPC and HTTP
//! branches, custom metadata, and waiting for the result.

use std::time::Duration;

use dtmcli::{Error, TransOptions};
use dtmgrpc::{DtmGrpcClient, Saga};

use super::env::{expect, expect_failure, expect_test_header, final_status, Env};
use crate::bank::Db;
use crate::busi::{fails_if, BusiReq, Outcome};
use crate::demo::DemoError;
use crate::grpc_busi::pb::{BusiReply, ReqGrpc};
use crate::grpc_busi::{GrpcBank, GrpcBusi};

fn req(fail_in: bool) -> ReqGrpc {
    ReqGrpc {
        amount: 30,
        trans_in_result: fails_if(fail_in),
        ..Default::default()
    }
}

fn transfer(dtm: &DtmGrpcClient, busi: &GrpcBusi, gid: &str, r: &ReqGrpc) -> Saga {
    dtm.saga(gid)
        .add(&busi.url("TransOut"), &busi.url("TransOutRevert"), r)
        .add(&busi.url("TransIn"), &busi.url("TransInRevert"), r)
}

/// `grpc_saga`: two gRPC steps, both succeed.
pub async fn saga(env: &Env) -> Result<(), DemoError> {
    let (dtm, busi) = env.grpc().await?;
    let gid = dtm.new_gid().await?;
    transfer(dtm, busi, &gid, &req(false)).submit().await?;
    env.expect_final(&gid, "succeed").await?;
    env.expect_grpc_calls(&gid, &["TransOut", "TransIn"]).await
}

/// `grpc_saga_rollback`: TransIn refuses (gRPC `Aborted`); DTM compensates both.
pub async fn saga_rollback(env: &Env) -> Result<(), DemoError> {
    let (dtm, busi) = env.grpc().await?;
    let gid = dtm.new_gid().await?;
    transfer(dtm, busi, &gid, &req(true)).submit().await?;
    env.expect_final(&gid, "failed").await?;
    env.expect_grpc_calls(
        &gid,
        &["TransOut", "TransIn", "TransInRevert", "TransOutRevert"],
    )
    .await
}

/// `grpc_saga_wait`: with `wait_result`, submit returns once DTM ran the saga.
pub async fn saga_wait(env: &Env) -> Result<(), DemoError> {
    let (dtm, busi) = env.grpc().await?;
    let wait = TransOptions::default().wait_result(true);
    let gid = dtm.new_gid().await?;
    transfer(dtm, busi, &gid, &req(false))
        .with_options(wait.clone())
        .submit()
        .await?;
    let failed = dtm.new_gid().await?;
    let res = transfer(dtm, busi, &failed, &req(true))
        .with_options(wait)
        .submit()
        .await;
    env.expect_waited(&gid, &failed, res).await
}

/// `grpc_saga_customHeaders`: headers given to the saga arrive as gRPC metadata on every
/// branch call, retries included (TransIn answers `Unavailable`... once: ONGOING).
pub async fn saga_custom_headers(env: &Env) -> Result<(), DemoError> {
    let (dtm, busi) = env.grpc().await?;
    let gid = dtm.new_gid().await?;
    busi.script(&gid, "TransIn", [Outcome::Ongoing]);
    transfer(dtm, busi, &gid, &req(false))
        .with_options(
            TransOptions::default()
                .branch_header("test_header", "test")
                .retry_interval(Duration::from_secs(1)),
        )
        .submit()
        .await?;
    env.expect_final(&gid, "succeed").await?;
    let calls = busi.calls(&gid);
    let seen = calls
        .iter()
        .map(|c| (c.handler.as_str(), c.metadata.get("test_header")));
    expect_test_header(seen, 3, "metadata")
}

/// `grpc_saga_hybrid`: one gRPC saga with a gRPC step and an HTTP step (its payload is
/// the JSON body DTM posts).
pub async fn saga_hybrid(env: &Env) -> Result<(), DemoError> {
    let (dtm, busi) = env.grpc().await?;
    let gid = dtm.new_gid().await?;
    dtm.saga(&gid)
        .add(
            &busi.url("TransOut"),
            &busi.url("TransOutRevert"),
            &req(false),
        )
        .add_raw(
            &env.url("TransIn"),
            &env.url("TransInRevert"),
            serde_json::to_vec(&BusiReq::new(30))?,
        )
        .submit()
        .await?;
    env.expect_final(&gid, "succeed").await?;
    env.expect_grpc_calls(&gid, &["TransOut"]).await?;
    env.expect_http_calls(&gid, &["TransIn"])
}

/// `grpc_saga_barrier`: the barrier-guarded gRPC bank on MariaDB, then a failing credit.
pub async fn saga_barrier(env: &Env) -> Result<(), DemoError> {
    let (dtm, _) = env.grpc().await?;
    let base = env.grpc_bank().await?;
    for fail in [false, true] {
        let (a, b) = env.accounts(Db::Mysql, 100).await?;
        let gid = dtm.new_gid().await?;
        let r = ReqGrpc::transfer(30, a, b, fail);
        let u = |h| GrpcBank::url(base, Db::Mysql, h);
        dtm.saga(&gid)
            .add(&u("TransOut"), &u("TransOutCompensate"), &r)
            .add(&u("TransIn"), &u("TransInCompensate"), &r)
            .submit()
            .await?;
        env.expect_final(&gid, final_status(!fail)).await?;
        env.expect_moved(Db::Mysql, a, b, !fail).await?;
    }
    Ok(())
}

/// `grpc_msg`: a message whose local business runs between prepare and submit
/// (`do_and_submit`); DTM then runs both steps.
pub async fn msg(env: &Env) -> Result<(), DemoError> {
    let (dtm, busi) = env.grpc().await?;
    let gid = dtm.new_gid().await?;
    let r = req(false);
    dtm.msg(&gid)
        .add(&busi.url("TransOut"), &r)
        .add(&busi.url("TransIn"), &r)
        .do_and_submit(&busi.url("QueryPrepared"), |info| async move {
            println!("   local business runs for {}", info.gid);
            Ok(())
        })
        .await?;
    env.expect_final(&gid, "succeed").await?;
    env.expect_grpc_calls(&gid, &["TransOut", "TransIn"]).await
}

async fn tcc(env: &Env, gid: &str, r: ReqGrpc, options: TransOptions) -> dtmcli::Result<()> {
    let (dtm, busi) = env.grpc().await.map_err(|e| Error::other(e.to_string()))?;
    let u = |h: &str| busi.url(h);
    dtm.tcc_global_transaction(gid, options, |tcc| async move {
        let _: BusiReply = tcc
            .call_branch(
                &r,
                &u("TransOutTry"),
                &u("TransOutConfirm"),
                &u("TransOutCancel"),
            )
            .await?;
        let _: BusiReply = tcc
            .call_branch(
                &r,
                &u("TransInTry"),
                &u("TransInConfirm"),
                &u("TransInCancel"),
            )
            .await?;
        Ok(())
    })
    .await
}

/// `grpc_tcc`: both tries succeed; DTM confirms both.
pub async fn tcc_ok(env: &Env) -> Result<(), DemoError> {
    let gid = env.grpc().await?.0.new_gid().await?;
    tcc(env, &gid, req(false), TransOptions::default()).await?;
    env.expect_final(&gid, "succeed").await?;
    env.expect_grpc_calls(
        &gid,
        &[
            "TransOutTry",
            "TransInTry",
            "TransInConfirm",
            "TransOutConfirm",
        ],
    )
    .await
}

/// `grpc_tcc_rollback`: TransIn's try refuses; DTM cancels both.
pub async fn tcc_rollback(env: &Env) -> Result<(), DemoError> {
    let gid = env.grpc().await?.0.new_gid().await?;
    let res = tcc(env, &gid, req(true), TransOptions::default()).await;
    expect_failure("tcc_global_transaction", &res)?;
    env.expect_final(&gid, "failed").await?;
    env.expect_grpc_calls(
        &gid,
        &[
            "TransOutTry",
            "TransInTry",
            "TransInCancel",
            "TransOutCancel",
        ],
    )
    .await
}

/// `grpc_tcc_customHeaders`: headers given to the TCC reach the confirms as metadata.
pub async fn tcc_custom_headers(env: &Env) -> Result<(), DemoError> {
    let (dtm, busi) = env.grpc().await?;
    let gid = dtm.new_gid().await?;
    let options = TransOptions::default().branch_header("test_header", "test");
    tcc(env, &gid, req(false), options).await?;
    env.expect_final(&gid, "succeed").await?;
    let calls = busi.calls(&gid);
    let confirms = calls
        .iter()
        .filter(|c| c.handler.ends_with("Confirm"))
        .map(|c| (c.handler.as_str(), c.metadata.get("test_header")));
    expect_test_header(confirms, 2, "metadata")
}

/// `grpc_xa`: the gRPC bank's XA branches, a debit on MariaDB and a credit on PostgreSQL,
/// registering over gRPC; DTM commits both, or rolls both back when the credit fails.
pub async fn xa(env: &Env) -> Result<(), DemoError> {
    let (dtm, _) = env.grpc().await?;
    let base = env.grpc_bank().await?;
    for fail in [false, true] {
        let (a, b) = env.accounts_across().await?;
        let gid = dtm.new_gid().await?;
        let r = ReqGrpc::transfer(30, a, b, fail);
        let (out, inn) = (
            GrpcBank::url(base, Db::Mysql, "TransOutXa"),
            GrpcBank::url(base, Db::Postgres, "TransInXa"),
        );
        let res = dtm
            .xa_global_transaction(&gid, TransOptions::default(), |xa| async move {
                let _: () = xa.call_branch(&r, &out).await?;
                let _: () = xa.call_branch(&r, &inn).await?;
                Ok(())
            })
            .await;
        println!("   xa {gid}: returned {res:?}");
        expect(res.is_ok() != fail, "unexpected XA outcome")?;
        env.expect_final(&gid, final_status(!fail)).await?;
        env.expect_moved_across(a, b, !fail).await?;
    }
    Ok(())
}
