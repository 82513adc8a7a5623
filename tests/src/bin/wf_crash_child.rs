//! The child process of the workflow crash test.
//!
//! `wf_crash_child run <dtm> <port> <busi> <gid>` starts workflow `crash` as `gid` and stops
//! forever between its two steps (the test SIGKILLs it there);
//! `wf_crash_child serve <dtm> <port> <busi> [gid]` serves DTM's resume callbacks on the
//! same port, so the workflow completes in a fresh process (and runs `gid` to its end, when
//! given). The workflow's result is what its first step returned (replayed, in the second
//! process). Flags, last:
//! - `--go` stores the step records in the Go SDK's format (`RecordFormat::Go`);
//! - `--v2` is the code's next version: a step `Audit` between the two, guarded by
//!   `Wf::patched("audit")`;
//! - `--v3` is a version changed without a guard: `Audit` before the first step.
//!
//! Every workflow error is printed (`WF_ERROR <error>`).
//!
//! `wf_crash_child fanout <dtm> <port> <busi> <json>` also serves the callbacks, and runs
//! workflow `fanout` (`dtm_tests::wf::register_fanout`, concurrent branches) for each
//! `[gid, input]` of the JSON list at once; the test SIGKILLs it at a random moment.

use std::io::Write;
use std::time::Duration;

use dtm_tests::wf::post_step;
use dtm_workflow::{RecordFormat, WorkflowMiddleware, Workflows};
use dtmcli::DtmClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, dtm, port, busi, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: wf_crash_child run|serve <dtm> <port> <busi> [gid] [--go|--v2|--v3]".into(),
        );
    };
    let flag = |f: &str| rest.iter().any(|a| a == f);
    let format = if flag("--go") {
        RecordFormat::Go
    } else {
        RecordFormat::Checked
    };
    let (v2, v3) = (flag("--v2"), flag("--v3"));
    let gid = rest.iter().find(|a| !a.starts_with("--"));
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
    let fanout_http = http.clone();
    let options = dtm_tests::wf::retrying_every_second();
    wfs.register_with_options("crash", options, move |wf, input| {
        let (http, busi) = (http.clone(), busi.clone());
        async move {
            let step = |handler: &str| {
                let (wf, http, input) = (wf.clone(), http.clone(), input.clone());
                let url = format!("{busi}/{handler}");
                async move { post_step(&wf, &http, &url, None, input).await }
            };
            let run = async {
                if v3 {
                    step("Audit").await?;
                }
                let first = step("TransOut").await?;
                println!("STEP1_DONE");
                let _ = std::io::stdout().flush();
                if crash {
                    // Killed here by the test.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                if v2 && wf.patched("audit").await? {
                    step("Audit").await?;
                }
                step("TransIn").await?;
                Ok(first)
            };
            let r: dtmcli::Result<Vec<u8>> = run.await;
            if let Err(e) = &r {
                println!("WF_ERROR {e}");
                let _ = std::io::stdout().flush();
            }
            r
        }
    })?;
    dtm_tests::wf::register_fanout(&wfs, fanout_http);
    let app = wfs.callback_router("/resume");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("READY");
    let _ = std::io::stdout().flush();
    if let (true, Some(list)) = (mode == "fanout", gid) {
        let list: Vec<(String, dtm_tests::wf::Fanout)> = serde_json::from_str(list)?;
        let runs = list.iter().map(|(gid, input)| {
            let (wfs, input) = (wfs.clone(), serde_json::to_vec(input));
            async move {
                wfs.execute("fanout", gid, &input?)
                    .await
                    .map_err(Into::into)
            }
        });
        let done: Vec<Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>>> =
            futures_util::future::join_all(runs).await;
        println!("EXECUTED {} fanouts", done.len());
    } else if let Some(gid) = gid {
        let r = wfs.execute("crash", gid, br#"{"amount":7}"#).await;
        println!("EXECUTED {r:?}");
    }
    server.await??;
    Ok(())
}
