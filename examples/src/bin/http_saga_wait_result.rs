//! Saga with `wait_result`: submit returns only once DTM has run the saga, with its outcome.

use dtm_examples::busi::BusiReq;
use dtm_examples::demo::{Demo, DemoError};
use dtmcli::TransOptions;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let gid = d.dtm.new_gid().await?;
    println!("== saga {gid} with wait_result: succeeds");
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
        .with_options(TransOptions::default().wait_result(true))
        .submit()
        .await?;
    println!("   submit returned Ok: the saga has already finished");
    d.tell(&gid).await?;

    let gid = d.dtm.new_gid().await?;
    println!("\n== saga {gid} with wait_result: TransIn fails");
    let req = BusiReq {
        amount: 30,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    let res = d
        .dtm
        .saga(&gid)
        .add(&d.url("TransOut"), &d.url("TransOutRevert"), &req)
        .add(&d.url("TransIn"), &d.url("TransInRevert"), &req)
        .with_options(TransOptions::default().wait_result(true))
        .submit()
        .await;
    println!("   submit returned: {res:?}");
    d.tell(&gid).await?;
    Ok(())
}
