//! A workflow whose process is killed (SIGKILL) between two steps completes in a new
//! process, when DTM calls it back, with every business effect applied exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn child(args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wf_crash_child"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let out = c.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (c, rx)
}

/// The first line the child prints that starts with `want`.
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, want: &str) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.starts_with(want) => return l,
            Ok(_) => {}
            Err(e) => panic!("child never printed {want}: {e}"),
        }
    }
}

/// What the bank's `TransOut` answers, the first step's result.
const BANK_OK: &[u8] = br#"{"dtm_result":"SUCCESS"}"#;

#[tokio::test]
async fn killed_between_two_steps_then_resumed_by_dtm() {
    let (_, q) = killed_and_resumed("wf-crash", &[]).await;
    // The default record of step 1: the checked format's header, then the answer.
    let rec = &q.branches[0].bin_data;
    assert!(rec.starts_with(b"rs1 http t POST "), "{rec:?}");
    assert!(rec.ends_with(BANK_OK), "{rec:?}");
}

#[tokio::test]
async fn killed_then_resumed_with_go_records() {
    let (gid, q) = killed_and_resumed("wf-crash-go", &["--go"]).await;
    // Step 1's record is exactly the answer, as the Go SDK writes it...
    assert_eq!(q.branches[0].bin_data, BANK_OK);
    // ...and the second process replayed it: the workflow's result is step 1's result.
    let stored = dtm().query(&gid).await.unwrap();
    let result = stored.transaction.unwrap().result;
    assert_eq!(
        result, "eyJkdG1fcmVzdWx0IjoiU1VDQ0VTUyJ9",
        "base64 of {BANK_OK:?}"
    );
}

/// Runs workflow `crash` in a child process killed between its two steps, checks what DTM
/// holds then, lets a second child finish it; returns the gid and the query taken after
/// the crash.
async fn killed_and_resumed(name: &str, extra: &[&str]) -> (String, dtmcli::QueryResult) {
    let dtm = dtm();
    let gid = gid(name);
    let port = dtm_testkit::free_port().unwrap().to_string();
    let base = env().base.clone();
    let dtm_url = env().server.http_url();

    let q = killed_after_step_1(&gid, &port, extra).await;

    // A new process on the same callback address; DTM resumes the workflow there.
    let serve = [&["serve", &dtm_url, &port, &base][..], extra].concat();
    let (mut second, rx2) = child(&serve);
    wait_line(&rx2, "READY");
    wait_status(&dtm, &gid, "succeed").await;
    let _ = second.kill();
    let _ = second.wait();
    // Every effect exactly once: step 1 was replayed, not re-sent.
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn"]);
    (gid, q)
}

/// Starts workflow `crash` as `gid` in a child serving on `port`, SIGKILLed between its two
/// steps; what DTM holds then.
async fn killed_after_step_1(gid: &str, port: &str, extra: &[&str]) -> dtmcli::QueryResult {
    let (base, dtm_url) = (env().base.clone(), env().server.http_url());
    let run = [&["run", &dtm_url, port, &base, gid][..], extra].concat();
    let (mut first, rx) = child(&run);
    wait_line(&rx, "STEP1_DONE");
    first.kill().expect("SIGKILL");
    let status = first.wait().unwrap();
    assert!(!status.success(), "killed: {status:?}");
    assert_eq!(busi().handlers(gid), ["TransOut"]);
    let q = dtm().query(gid).await.unwrap();
    assert_eq!(q.transaction.as_ref().unwrap().status, "prepared");
    assert_eq!(
        branch_rows(&q),
        ["01/action=succeed"],
        "step 1 was recorded before the crash"
    );
    q
}

/// Versioning in flight: v1 is killed after step 1; a version changed without a guard
/// cannot resume it (the replay check); v2, which adds a step guarded by
/// `Wf::patched("audit")` right where v1 stopped, resumes it on v1's path, and runs a new
/// instance on its own.
#[tokio::test]
async fn a_patch_keeps_an_old_instance_on_the_old_path() {
    let dtm = dtm();
    let (old, new) = (gid("wf-v1"), gid("wf-v2"));
    let port = dtm_testkit::free_port().unwrap().to_string();
    let (base, dtm_url) = (env().base.clone(), env().server.http_url());
    killed_after_step_1(&old, &port, &[]).await;

    // v3 put `Audit` before step 1 with no guard: the replay of `old` stops at once.
    let (mut v3, rx) = child(&["serve", &dtm_url, &port, &base, "--v3"]);
    let line = wait_line(&rx, "WF_ERROR");
    assert!(
        line.contains("recorded as http") && line.contains("Audit"),
        "{line}"
    );
    let _ = v3.kill();
    let _ = v3.wait();
    assert_eq!(busi().handlers(&old), ["TransOut"]);

    // v2 resumes `old` (DTM calls it back) and runs `new` from its start.
    let (mut v2, rx) = child(&["serve", &dtm_url, &port, &base, &new, "--v2"]);
    let line = wait_line(&rx, "EXECUTED");
    assert!(line.starts_with("EXECUTED Ok"), "{line}");
    let q_old = wait_status(&dtm, &old, "succeed").await;
    let _ = v2.kill();
    let _ = v2.wait();
    assert_eq!(busi().handlers(&old), ["TransOut", "TransIn"]);
    assert_eq!(
        branch_rows(&q_old),
        ["01/action=succeed", "02/action=succeed"]
    );
    assert_eq!(busi().handlers(&new), ["TransOut", "Audit", "TransIn"]);
    let q_new = wait_status(&dtm, &new, "succeed").await;
    let rows = branch_rows(&q_new);
    assert!(
        rows.contains(&"00/patch-audit=succeed".to_string()),
        "{rows:?}"
    );
    assert!(rows.contains(&"03/action=succeed".to_string()), "{rows:?}");
}
