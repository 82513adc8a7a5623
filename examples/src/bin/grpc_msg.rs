//! 2-phase message over gRPC: the outbox helper `do_and_submit` (prepare, local business,
//! submit), then a prepared message that is never submitted, which DTM resolves by calling
//! the `QueryPrepared` back-check.

use std::time::Duration;

use dtm_examples::demo::DemoError;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_examples::grpc_busi::GrpcDemo;
use dtmcli::TransOptions;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = GrpcDemo::start().await?;
    let req = ReqGrpc::amount(30);

    let gid = d.dtm.new_gid().await?;
    println!("== msg with do_and_submit {gid}");
    d.dtm
        .msg(&gid)
        .add(&d.url("TransOut"), &req)
        .add(&d.url("TransIn"), &req)
        .do_and_submit(&d.url("QueryPrepared"), |info| async move {
            println!(
                "   local business runs for {} (branch {}, op {})",
                info.gid, info.branch_id, info.op
            );
            Ok(())
        })
        .await?;
    d.tell(&gid).await?;

    let gid = d.dtm.new_gid().await?;
    println!("\n== prepared msg, never submitted: DTM back-checks {gid}");
    d.dtm
        .msg(&gid)
        .add(&d.url("TransOut"), &req)
        .add(&d.url("TransIn"), &req)
        .with_options(TransOptions::default().timeout_to_fail(Duration::from_secs(1)))
        .prepare(&d.url("QueryPrepared"))
        .await?;
    d.tell(&gid).await?;
    Ok(())
}
