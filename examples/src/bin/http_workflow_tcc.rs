//! Workflow, TCC style, over HTTP: each branch registers confirm (on_commit) and cancel
//! (on_rollback), then runs its try through the recording HTTP client.

use dtm_examples::busi::{fails_if, BusiReq};
use dtm_examples::demo::{Demo, DemoError};
use dtm_workflow::{send_http, Wf, WorkflowMiddleware, Workflows};
use reqwest::Method;
use reqwest_middleware::ClientWithMiddleware;

async fn call(wf: &Wf, http: &ClientWithMiddleware, url: &str, body: &[u8]) -> dtmcli::Result<()> {
    let request = wf
        .http(http, Method::POST, url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    send_http(request).await.map(drop)
}

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let wfs = Workflows::http(
        d.dtm.clone(),
        format!("http://{}/workflow/resume", listener.local_addr()?),
    );
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(WorkflowMiddleware)
        .build();
    let base = d.base.clone();
    wfs.register("tcc", move |wf: Wf, input: Vec<u8>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            for side in ["TransOut", "TransIn"] {
                wf.new_branch()?;
                for (phase, commit) in [("Confirm", true), ("Cancel", false)] {
                    let (wf2, h, url, body) = (
                        wf.clone(),
                        http.clone(),
                        format!("{base}/{side}{phase}"),
                        input.clone(),
                    );
                    let f = move |_| async move { call(&wf2, &h, &url, &body).await };
                    if commit {
                        wf.on_commit(f)?
                    } else {
                        wf.on_rollback(f)?
                    }
                }
                call(&wf, &http, &format!("{base}/{side}Try"), &input).await?;
            }
            Ok(())
        }
    })?;
    let app = wfs.callback_router("/workflow/resume");
    tokio::spawn(async move { axum::serve(listener, app).await });

    for fail in [false, true] {
        let gid = d.dtm.new_gid().await?;
        let req = BusiReq {
            amount: 30,
            trans_in_result: fails_if(fail),
            ..Default::default()
        };
        println!(
            "== tcc workflow {gid}{}",
            if fail { " (TransInTry fails)" } else { "" }
        );
        let r = wfs.execute("tcc", &gid, &serde_json::to_vec(&req)?).await;
        println!("   execute returned {r:?}");
        d.tell(&gid).await?;
        println!();
    }
    Ok(())
}
