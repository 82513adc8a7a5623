//! TCC over HTTP: try both accounts, then DTM confirms both.

use dtm_examples::busi::BusiReq;
use dtm_examples::demo::{Demo, DemoError};
use dtmcli::TransOptions;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let gid = d.dtm.new_gid().await?;
    println!("== tcc {gid}");
    let req = BusiReq::new(30);
    let u = |h: &str| d.url(h);
    d.dtm
        .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
            tcc.call_branch(
                &req,
                &u("TransOutTry"),
                &u("TransOutConfirm"),
                &u("TransOutCancel"),
            )
            .await?;
            tcc.call_branch(
                &req,
                &u("TransInTry"),
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
