//! Nested TCC: the TransIn try (`TransInTccNested`) opens a sub-branch `0201` of the same
//! global transaction.

use dtm_examples::busi::BusiReq;
use dtm_examples::demo::{Demo, DemoError};
use dtmcli::TransOptions;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let gid = d.dtm.new_gid().await?;
    println!("== nested tcc {gid}");
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
