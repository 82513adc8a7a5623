//! 2-phase message with the outbox helper: prepare, run the local transaction, submit.

use dtm_examples::busi::BusiReq;
use dtm_examples::demo::{Demo, DemoError};

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let gid = d.dtm.new_gid().await?;
    println!("== msg {gid}: local debit, then DTM delivers TransIn");
    d.dtm
        .msg(&gid)
        .add(&d.url("TransIn"), &BusiReq::new(30))
        .do_and_submit(&d.url("QueryPrepared"), |info| async move {
            // The local transaction goes here; with the barrier crate it writes the barrier
            // row of `info` in the same database transaction.
            println!(
                "   local business runs for {} / {} / {}",
                info.gid, info.branch_id, info.op
            );
            Ok(())
        })
        .await?;
    d.tell(&gid).await?;
    Ok(())
}
