//! The child process of the workflow crash test.
//!
//! `wf_crash_child run <dtm> <port> <busi> <gid>` starts workflow `crash` as `gid` and stops
//! forever between its two steps (the test SIGKILLs it there);
//! `wf_crash_child serve <dtm> <port> <busi>` only serves DTM's resume callbacks on the same
//! port, so the workflow completes in a fresh process. A last argument `--go` stores the
//! step records in the Go SDK's format (`RecordFormat::Go`). The workflow's result is what
//! its first step returned (replayed, in the second process).

use std::io::Write;
use std::time::Duration;

use dtm_tests::wf::post_step;
use dtm_workflow::{RecordFormat, WorkflowMiddleware, Workflows};
use dtmcli::DtmClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, dtm, port, busi, rest @ ..] = args.as_slice() else {
        return Err("usage: wf_crash_child run|serve <dtm> <port> <busi> [gid] [--go]".into());
    };
    let (format, rest) = match rest {
        [rest @ .., last] if last == "--go" => (RecordFormat::Go, rest),
        _ => (RecordFormat::Checked, rest),
    };
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    let wfs = Workflows::http(
        DtmClient::new(dtm.as_str())?,
        format!("http://127.0.0.1:{port}/resume"),
    )
    .with_record_format(format);
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(WorkflowMiddleware)
        .build();
    let (busi, crash) = (busi.clone(), mode == "run");
    let options = dtm_tests::wf::retrying_every_second();
    wfs.register_with_options("crash", options, move |wf, input| {
        let (http, busi) = (http.clone(), busi.clone());
        async move {
            let first =
                post_step(&wf, &http, &format!("{busi}/TransOut"), None, input.clone()).await?;
            println!("STEP1_DONE");
            let _ = std::io::stdout().flush();
            if crash {
                // Killed here by the test.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            post_step(&wf, &http, &format!("{busi}/TransIn"), None, input).await?;
            Ok(first)
        }
    })?;
    let app = wfs.callback_router("/resume");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("READY");
    let _ = std::io::stdout().flush();
    if let (true, Some(gid)) = (crash, rest.first()) {
        let r = wfs.execute("crash", gid, br#"{"amount":7}"#).await;
        println!("EXECUTED {r:?}");
    }
    server.await??;
    Ok(())
}
