//! Custom headers over gRPC: `branch_headers` travel as gRPC metadata on every call DTM
//! makes to a branch, the first call and the retry after an ONGOING alike.

use std::time::Duration;

use dtm_examples::busi::Outcome;
use dtm_examples::demo::DemoError;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_examples::grpc_busi::GrpcDemo;
use dtmcli::TransOptions;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = GrpcDemo::start().await?;
    let gid = d.dtm.new_gid().await?;
    println!("== saga with custom headers {gid} (TransIn answers ONGOING once)");
    d.busi.script(&gid, "TransIn", [Outcome::Ongoing]);
    let req = ReqGrpc::amount(30);
    d.dtm
        .saga(&gid)
        .add(&d.url("TransOut"), &d.url("TransOutRevert"), &req)
        .add(&d.url("TransIn"), &d.url("TransInRevert"), &req)
        .with_options(
            TransOptions::default()
                .branch_header("x-request-source", "grpc_saga_custom_headers")
                .branch_header("test_header", "yes")
                .retry_interval(Duration::from_secs(1)),
        )
        .submit()
        .await?;
    d.tell(&gid).await?;
    Ok(())
}
