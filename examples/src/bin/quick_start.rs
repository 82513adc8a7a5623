//! The quick-start demo: starts a real DTM server and the example bank service, runs a saga
//! that succeeds and one that rolls back, and tells what happened.

use std::time::Duration;

use dtm_examples::busi::{Busi, BusiReq};
use dtm_examples::server::{DtmServer, DtmServerConfig};
use dtm_examples::wait;
use dtmcli::DtmClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    println!(
        "== starting a DTM server ({})",
        dtm_examples::server::dtm_binary().display()
    );
    let server = DtmServer::start(DtmServerConfig::default())?;
    let dtm = DtmClient::new(server.http_url())?;
    println!("   DTM {} at {}", dtm.version().await?, dtm.server());

    let busi = Busi::new(dtm.clone());
    let base = busi.serve(0).await?;
    println!("   bank service at {base}\n");

    // 1. A transfer that succeeds.
    let gid = dtm.new_gid().await?;
    println!("== saga 1 ({gid}): move 30 from A (TransOut) to B (TransIn)");
    dtm.saga(&gid)
        .add(
            &format!("{base}/TransOut"),
            &format!("{base}/TransOutRevert"),
            &BusiReq::new(30),
        )
        .add(
            &format!("{base}/TransIn"),
            &format!("{base}/TransInRevert"),
            &BusiReq::new(30),
        )
        .submit()
        .await?;
    let q = wait::until(&dtm, &gid, Duration::from_secs(20), |q| {
        q.transaction
            .as_ref()
            .is_some_and(|t| t.status().is_final())
    })
    .await?;
    story(&busi, &gid, &q);

    // 2. A transfer whose second step fails: DTM compensates both steps in reverse order.
    let gid = dtm.new_gid().await?;
    println!(
        "\n== saga 2 ({gid}): the same transfer, but B's bank refuses (TransIn answers FAILURE)"
    );
    let req = BusiReq {
        amount: 30,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    dtm.saga(&gid)
        .add(
            &format!("{base}/TransOut"),
            &format!("{base}/TransOutRevert"),
            &req,
        )
        .add(
            &format!("{base}/TransIn"),
            &format!("{base}/TransInRevert"),
            &req,
        )
        .submit()
        .await?;
    let q = wait::until(&dtm, &gid, Duration::from_secs(20), |q| {
        q.transaction
            .as_ref()
            .is_some_and(|t| t.status().is_final())
    })
    .await?;
    story(&busi, &gid, &q);
    drop(server);
    Ok(())
}

fn story(busi: &Busi, gid: &str, q: &dtmcli::QueryResult) {
    println!("   branches DTM called, in order:");
    for (i, c) in busi.calls(gid).iter().enumerate() {
        let op = c
            .info
            .as_ref()
            .map(|i| i.op.to_string())
            .unwrap_or_default();
        let bid = c
            .info
            .as_ref()
            .map(|i| i.branch_id.clone())
            .unwrap_or_default();
        println!(
            "     {}. {:<15} branch {bid} op {op:<10} -> {:?}",
            i + 1,
            c.handler,
            c.outcome
        );
    }
    if let Some(t) = &q.transaction {
        println!("   final status reported by DTM: {}", t.status);
        if !t.rollback_reason.is_empty() {
            println!("   rollback reason: {}", t.rollback_reason);
        }
    }
}
