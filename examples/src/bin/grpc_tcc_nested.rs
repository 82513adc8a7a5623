//! Nested TCC over gRPC: the TransIn try (`TransInTccNested`) rebuilds the TCC from its
//! incoming metadata and opens a sub-branch `0201` of the same global transaction.

use dtm_examples::demo::DemoError;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_examples::grpc_busi::GrpcDemo;
use dtmcli::TransOptions;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = GrpcDemo::start().await?;
    let gid = d.dtm.new_gid().await?;
    println!("== nested tcc {gid}");
    let req = ReqGrpc::amount(30);
    let u = |h: &str| d.url(h);
    d.dtm
        .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
            let _: () = tcc
                .call_branch(
                    &req,
                    &u("TransOutTry"),
                    &u("TransOutConfirm"),
                    &u("TransOutCancel"),
                )
                .await?;
            let _: () = tcc
                .call_branch(
                    &req,
                    &u("TransInTccNested"),
                    &u("TransInConfirm"),
                    &u("TransInCancel"),
                )
                .await?;
            Ok(())
        })
        .await?;
    d.tell(&gid).await?;
    Ok(())
}
