//! XA, global side: two XA branches, then DTM commits both. The branches are the bank
//! service's XA stubs (they register themselves and record phase 2) until the barrier
//! crate's XA local transactions land.

use dtm_examples::busi::BusiReq;
use dtm_examples::demo::{Demo, DemoError};
use dtmcli::TransOptions;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let gid = d.dtm.new_gid().await?;
    println!("== xa {gid}");
    let req = BusiReq::new(30);
    let u = |h: &str| d.url(h);
    d.dtm
        .xa_global_transaction(&gid, TransOptions::default(), |xa| async move {
            xa.call_branch(&req, &u("TransOutXa")).await?;
            xa.call_branch(&req, &u("TransInXa")).await?;
            Ok(())
        })
        .await?;
    d.tell(&gid).await?;
    Ok(())
}
