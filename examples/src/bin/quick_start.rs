//! The quick-start demo: starts a real DTM server and the example bank service, runs a saga
//! that succeeds and one that rolls back, and tells what happened.

use dtm_examples::busi::BusiReq;
use dtm_examples::demo::{Demo, DemoError};

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;

    // 1. A transfer that succeeds.
    let gid = d.dtm.new_gid().await?;
    println!("== saga 1 ({gid}): move 30 from A (TransOut) to B (TransIn)");
    d.dtm
        .saga(&gid)
        .add(
            &d.url("TransOut"),
            &d.url("TransOutRevert"),
            &BusiReq::new(30),
        )
        .add(
            &d.url("TransIn"),
            &d.url("TransInRevert"),
            &BusiReq::new(30),
        )
        .submit()
        .await?;
    d.tell(&gid).await?;

    // 2. The second step fails: DTM compensates both steps, in reverse order.
    let gid = d.dtm.new_gid().await?;
    println!(
        "\n== saga 2 ({gid}): the same transfer, but B's bank refuses (TransIn answers FAILURE)"
    );
    let req = BusiReq {
        amount: 30,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    d.dtm
        .saga(&gid)
        .add(&d.url("TransOut"), &d.url("TransOutRevert"), &req)
        .add(&d.url("TransIn"), &d.url("TransInRevert"), &req)
        .submit()
        .await?;
    d.tell(&gid).await?;
    Ok(())
}
