//! TCC over gRPC: register then try each branch (with the `dtm-*` metadata), DTM confirms
//! both; then a TCC whose TransIn try fails, which DTM cancels.

use dtm_examples::demo::DemoError;
use dtm_examples::grpc_busi::pb::{BusiReply, ReqGrpc};
use dtm_examples::grpc_busi::GrpcDemo;
use dtmcli::TransOptions;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = GrpcDemo::start().await?;
    for (title, req) in [
        ("tcc", ReqGrpc::amount(30)),
        (
            "tcc whose TransIn try fails",
            ReqGrpc {
                amount: 30,
                trans_in_result: "FAILURE".into(),
                ..Default::default()
            },
        ),
    ] {
        let gid = d.dtm.new_gid().await?;
        println!("== {title} {gid}");
        let u = |h: &str| d.url(h);
        let result = d
            .dtm
            .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
                let reply: BusiReply = tcc
                    .call_branch(
                        &req,
                        &u("TransOutTry"),
                        &u("TransOutConfirm"),
                        &u("TransOutCancel"),
                    )
                    .await?;
                println!("   TransOutTry answered {:?}", reply.message);
                let _: BusiReply = tcc
                    .call_branch(
                        &req,
                        &u("TransInTry"),
                        &u("TransInConfirm"),
                        &u("TransInCancel"),
                    )
                    .await?;
                Ok(())
            })
            .await;
        println!("   tcc_global_transaction returned {result:?}");
        d.tell(&gid).await?;
        println!();
    }
    Ok(())
}
