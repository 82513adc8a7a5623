//! Saga, TCC and msg over HTTP on the in-memory business service (`busi`), whose handlers
//! succeed unless the request says otherwise: what each mode calls, in which order, and
//! what DTM reports.

use std::time::Duration;

use dtmcli::{Saga, TransOptions};

use super::env::{expect, expect_failure, expect_test_header, Env};
use crate::busi::{BusiReq, Outcome};
use crate::demo::DemoError;

fn failing_in() -> BusiReq {
    BusiReq {
        amount: 30,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    }
}

fn transfer(env: &Env, gid: &str, req: &BusiReq) -> Saga<dtmcli::DtmClient> {
    env.dtm()
        .saga(gid)
        .add(&env.url("TransOut"), &env.url("TransOutRevert"), req)
        .add(&env.url("TransIn"), &env.url("TransInRevert"), req)
}

/// `http_saga`: two steps, both succeed.
pub async fn saga(env: &Env) -> Result<(), DemoError> {
    let gid = env.dtm().new_gid().await?;
    transfer(env, &gid, &BusiReq::new(30)).submit().await?;
    env.expect_final(&gid, "succeed").await?;
    env.expect_http_calls(&gid, &["TransOut", "TransIn"])
}

/// `http_saga_rollback`: TransIn refuses; DTM compensates in reverse order.
pub async fn saga_rollback(env: &Env) -> Result<(), DemoError> {
    let gid = env.dtm().new_gid().await?;
    transfer(env, &gid, &failing_in()).submit().await?;
    env.expect_final(&gid, "failed").await?;
    env.expect_http_calls(
        &gid,
        &["TransOut", "TransIn", "TransInRevert", "TransOutRevert"],
    )
}

/// `http_saga_wait`: with `wait_result`, submit returns once DTM ran the saga, with its
/// outcome: Ok when it succeeded, `Error::Failure` when it rolled back.
pub async fn saga_wait(env: &Env) -> Result<(), DemoError> {
    let wait = TransOptions::default().wait_result(true);
    let gid = env.dtm().new_gid().await?;
    transfer(env, &gid, &BusiReq::new(30))
        .with_options(wait.clone())
        .submit()
        .await?;
    let failed = env.dtm().new_gid().await?;
    let res = transfer(env, &failed, &failing_in())
        .with_options(wait)
        .submit()
        .await;
    env.expect_waited(&gid, &failed, res).await
}

/// `http_concurrent_saga`: branches 0 and 1 run in parallel, 2 after both, 3 after 2.
pub async fn concurrent_saga(env: &Env) -> Result<(), DemoError> {
    let gid = env.dtm().new_gid().await?;
    let req = BusiReq::new(10);
    env.dtm()
        .saga(&gid)
        .add(&env.url("TransOut"), &env.url("TransOutRevert"), &req)
        .add(&env.url("TransIn"), &env.url("TransInRevert"), &req)
        .add(&env.url("TransOutTry"), &env.url("TransOutCancel"), &req)
        .add(&env.url("TransInTry"), &env.url("TransInCancel"), &req)
        .add_branch_order(2, &[0, 1])
        .add_branch_order(3, &[2])
        .concurrent()
        .submit()
        .await?;
    env.expect_final(&gid, "succeed").await?;
    let calls = env.busi().handlers(&gid);
    println!("   HTTP calls: {}", calls.join(", "));
    let pos = |h: &str| calls.iter().position(|c| c == h);
    let (a, b, c, d) = (
        pos("TransOut"),
        pos("TransIn"),
        pos("TransOutTry"),
        pos("TransInTry"),
    );
    expect(
        calls.len() == 4 && a < c && b < c && c < d && a.is_some() && b.is_some(),
        "the branch orders were not kept",
    )
}

/// `http_saga_customHeaders`: headers given to the transaction reach every branch call.
pub async fn saga_custom_headers(env: &Env) -> Result<(), DemoError> {
    let gid = env.dtm().new_gid().await?;
    transfer(env, &gid, &BusiReq::new(30))
        .with_options(TransOptions::default().branch_header("test_header", "test"))
        .submit()
        .await?;
    env.expect_final(&gid, "succeed").await?;
    let calls = env.busi().calls(&gid);
    let seen = calls
        .iter()
        .map(|c| (c.handler.as_str(), c.headers.get("test_header")));
    expect_test_header(seen, 2, "header")
}

fn tcc_urls(env: &Env, side: &str) -> [String; 3] {
    ["Try", "Confirm", "Cancel"].map(|p| env.url(&format!("{side}{p}")))
}

async fn tcc(env: &Env, gid: &str, req: &BusiReq, options: TransOptions) -> dtmcli::Result<()> {
    let (out, inn) = (tcc_urls(env, "TransOut"), tcc_urls(env, "TransIn"));
    env.dtm()
        .tcc_global_transaction(gid, options, |tcc| async move {
            tcc.call_branch(req, &out[0], &out[1], &out[2]).await?;
            tcc.call_branch(req, &inn[0], &inn[1], &inn[2]).await?;
            Ok(())
        })
        .await
}

/// `http_tcc`: both tries succeed, DTM confirms both (the later branch first).
pub async fn tcc_ok(env: &Env) -> Result<(), DemoError> {
    let gid = env.dtm().new_gid().await?;
    tcc(env, &gid, &BusiReq::new(30), TransOptions::default()).await?;
    env.expect_final(&gid, "succeed").await?;
    env.expect_http_calls(
        &gid,
        &[
            "TransOutTry",
            "TransInTry",
            "TransInConfirm",
            "TransOutConfirm",
        ],
    )
}

/// `http_tcc_rollback`: TransIn's try refuses; DTM cancels both.
pub async fn tcc_rollback(env: &Env) -> Result<(), DemoError> {
    let gid = env.dtm().new_gid().await?;
    let res = tcc(env, &gid, &failing_in(), TransOptions::default()).await;
    expect_failure("tcc_global_transaction", &res)?;
    env.expect_final(&gid, "failed").await?;
    env.expect_http_calls(
        &gid,
        &[
            "TransOutTry",
            "TransInTry",
            "TransInCancel",
            "TransOutCancel",
        ],
    )
}

/// `http_tcc_customHeaders`: headers given to the TCC reach the confirms DTM calls.
pub async fn tcc_custom_headers(env: &Env) -> Result<(), DemoError> {
    let gid = env.dtm().new_gid().await?;
    let options = TransOptions::default().branch_header("test_header", "test");
    tcc(env, &gid, &BusiReq::new(30), options).await?;
    env.expect_final(&gid, "succeed").await?;
    let calls = env.busi().calls(&gid);
    let confirms = calls
        .iter()
        .filter(|c| c.handler.ends_with("Confirm"))
        .map(|c| (c.handler.as_str(), c.headers.get("test_header")));
    expect_test_header(confirms, 2, "header")
}

/// `http_tcc_nested`: TransIn's try (`TransInTccNested`) opens a nested branch of the same
/// global TCC; DTM confirms all three.
pub async fn tcc_nested(env: &Env) -> Result<(), DemoError> {
    let gid = env.dtm().new_gid().await?;
    let req = BusiReq::new(30);
    let out = tcc_urls(env, "TransOut");
    let inn = tcc_urls(env, "TransIn");
    let nested = env.url("TransInTccNested");
    env.dtm()
        .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
            tcc.call_branch(&req, &out[0], &out[1], &out[2]).await?;
            tcc.call_branch(&req, &nested, &inn[1], &inn[2]).await?;
            Ok(())
        })
        .await?;
    let q = env.expect_final(&gid, "succeed").await?;
    expect(
        q.branches.iter().any(|b| b.branch_id == "0201"),
        "no nested branch 0201",
    )?;
    env.expect_http_calls(
        &gid,
        &[
            "TransOutTry",
            "TransInTccNested",
            "TransInTry",
            "TransInConfirm",
            "TransInConfirm",
            "TransOutConfirm",
        ],
    )
}

/// `http_msg`: a 2-phase message, prepared then submitted: DTM runs both steps.
pub async fn msg(env: &Env) -> Result<(), DemoError> {
    let gid = env.dtm().new_gid().await?;
    let req = BusiReq::new(30);
    let msg = env
        .dtm()
        .msg(&gid)
        .add(&env.url("TransOut"), &req)
        .add(&env.url("TransIn"), &req);
    msg.prepare(&env.url("QueryPrepared")).await?;
    msg.submit().await?;
    env.expect_final(&gid, "succeed").await?;
    env.expect_http_calls(&gid, &["TransOut", "TransIn"])?;

    // A message prepared and never submitted (its sender died): DTM asks QueryPrepared.
    let gid = env.dtm().new_gid().await?;
    env.busi().script(&gid, "QueryPrepared", [Outcome::Failure]);
    env.dtm()
        .msg(&gid)
        .add(&env.url("TransOut"), &req)
        .with_options(TransOptions::default().timeout_to_fail(Duration::from_secs(1)))
        .prepare(&env.url("QueryPrepared"))
        .await?;
    println!("   a prepared msg whose local transaction rolled back:");
    env.expect_final(&gid, "failed").await?;
    env.expect_http_calls(&gid, &["QueryPrepared"])
}
