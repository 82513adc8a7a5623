//! Saga over gRPC: two steps on the tonic service `busi.Busi`, both succeed; then the same
//! with a failing TransIn, which DTM compensates in reverse order.

use dtm_examples::demo::DemoError;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_examples::grpc_busi::GrpcDemo;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = GrpcDemo::start().await?;
    for (title, req) in [
        ("saga", ReqGrpc::amount(30)),
        (
            "saga whose TransIn fails",
            ReqGrpc {
                amount: 30,
                trans_in_result: "FAILURE".into(),
                ..Default::default()
            },
        ),
    ] {
        let gid = d.dtm.new_gid().await?;
        println!("== {title} {gid}");
        d.dtm
            .saga(&gid)
            .add(&d.url("TransOut"), &d.url("TransOutRevert"), &req)
            .add(&d.url("TransIn"), &d.url("TransInRevert"), &req)
            .submit()
            .await?;
        d.tell(&gid).await?;
        println!();
    }
    Ok(())
}
