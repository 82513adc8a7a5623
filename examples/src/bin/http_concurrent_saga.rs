//! Concurrent saga: four steps as a DAG (step 2 after 0 and 1, step 3 after 2).

use dtm_examples::busi::BusiReq;
use dtm_examples::demo::{Demo, DemoError};

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let gid = d.dtm.new_gid().await?;
    println!("== concurrent saga {gid}: 0 and 1 in parallel, then 2, then 3");
    let req = BusiReq::new(10);
    d.dtm
        .saga(&gid)
        .add(&d.url("TransOut"), &d.url("TransOutRevert"), &req)
        .add(&d.url("TransIn"), &d.url("TransInRevert"), &req)
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
