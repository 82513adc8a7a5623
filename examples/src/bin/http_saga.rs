//! Saga over HTTP: two steps, both succeed.

use dtm_examples::busi::BusiReq;
use dtm_examples::demo::{Demo, DemoError};

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let gid = d.dtm.new_gid().await?;
    println!("== saga {gid}");
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
    Ok(())
}
