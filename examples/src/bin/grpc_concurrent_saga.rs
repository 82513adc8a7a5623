//! Concurrent saga over gRPC: four steps as a DAG (step 2 after steps 0 and 1, step 3 after
//! step 2), with one step over HTTP, which receives the protobuf bytes as its body.

use dtm_examples::demo::DemoError;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_examples::grpc_busi::GrpcDemo;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = GrpcDemo::start().await?;
    let gid = d.dtm.new_gid().await?;
    println!("== concurrent saga {gid}");
    let req = ReqGrpc::amount(30);
    d.dtm
        .saga(&gid)
        .add(&d.url("TransOut"), &d.url("TransOutRevert"), &req)
        .add(&d.demo.url("TransIn"), &d.demo.url("TransInRevert"), &req)
        .add(&d.url("TransOutTry"), &d.url("TransOutCancel"), &req)
        .add(&d.url("TransInTry"), &d.url("TransInCancel"), &req)
        .add_branch_order(2, &[0, 1])
        .add_branch_order(3, &[2])
        .concurrent()
        .submit()
        .await?;
    d.tell(&gid).await?;
    Ok(())
}
