//! A workflow whose process is killed (SIGKILL) between two steps completes in a new
//! process, when DTM calls it back, with every business effect applied exactly once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// A child process, SIGKILLed when dropped (a failed test leaves none behind).
struct Proc(Child);

impl Proc {
    /// SIGKILLs it and waits for it to end.
    fn kill(&mut self) -> std::process::ExitStatus {
        let _ = self.0.kill();
        self.0.wait().expect("wait for the child")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn child(args: &[&str]) -> (Proc, std::sync::mpsc::Receiver<String>) {
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
    (Proc(c), rx)
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
    second.kill();
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
    let status = first.kill();
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
    v3.kill();
    assert_eq!(busi().handlers(&old), ["TransOut"]);

    // v2 resumes `old` (DTM calls it back) and runs `new` from its start.
    let (mut v2, rx) = child(&["serve", &dtm_url, &port, &base, &new, "--v2"]);
    let line = wait_line(&rx, "EXECUTED");
    assert!(line.starts_with("EXECUTED Ok"), "{line}");
    let q_old = wait_status(&dtm, &old, "succeed").await;
    v2.kill();
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

/// Workflows with concurrent branches (`fanout`: a debit, then three credits at once through
/// `Wf::branch`), their process SIGKILLed at a random moment, round after round: each next
/// process resumes what the last left (and is killed in turn), a last one finishes. Every
/// instance DTM holds ends final, with its money moved exactly once (succeed) or not at
/// all (failed: the credits that completed are taken back, the refused one is not);
/// instances DTM never heard of moved nothing. The seed is printed.
#[tokio::test]
async fn concurrent_branches_survive_sigkills_at_random_points() {
    use dtm_examples::bank::Db;
    use dtm_tests::wf::Fanout;
    // Round 0 measures a round; the others are killed.
    const ROUNDS: usize = 21;
    const PER_ROUND: usize = 3;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let port = dtm_testkit::free_port().unwrap().to_string();
    let (base, dtm_url) = (env().base.clone(), env().server.http_url());
    let bank = format!("{}/{}", bank_env().base, Db::Mysql.as_str());
    let dtm = dtm();
    let mut all: Vec<(String, Fanout)> = Vec::new();
    // Where each kill left each instance: DTM's rows right after it.
    let mut points: BTreeMap<String, usize> = BTreeMap::new();
    let mut span = 0;
    for round in 0..ROUNDS {
        let mut list = Vec::new();
        for k in 0..PER_ROUND {
            let from = bank_account(Db::Mysql, 100).await;
            let mut tos = Vec::new();
            for _ in 0..3 {
                tos.push(bank_account(Db::Mysql, 0).await);
            }
            let fail = (k == 0 && round % 3 == 0).then_some(1);
            let (bank, amount) = (bank.clone(), 10);
            let input = Fanout {
                bank,
                from,
                tos,
                amount,
                fail,
            };
            list.push((gid(&format!("wf-fan-{round}-{k}")), input));
        }
        let json = serde_json::to_string(&list).unwrap();
        let (mut c, rx) = child(&["fanout", &dtm_url, &port, &base, &json]);
        wait_line(&rx, "READY");
        let started = std::time::Instant::now();
        if round == 0 {
            // Not killed: how long a round takes here, unhindered.
            wait_line(&rx, "EXECUTED");
            span = started.elapsed().as_millis() as u64;
            println!("an unhindered round takes {span} ms");
        } else {
            // The fault: a SIGKILL at a random moment of the round (before, during or
            // after the debit, the credits, the rollbacks, the submit), or just after it.
            let at = next() % (span * 5 / 4 + 1);
            tokio::time::sleep(Duration::from_millis(at)).await;
        }
        c.kill();
        for (g, _) in &list {
            let q = dtm.query(g).await.unwrap();
            *points.entry(kill_point(&q)).or_default() += 1;
        }
        all.extend(list);
    }
    println!("where the kills left the instances: {points:?}");

    // The last process: DTM resumes every unfinished instance there.
    let (mut last, rx) = child(&["serve", &dtm_url, &port, &base]);
    wait_line(&rx, "READY");
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for (g, f) in &all {
        let started = dtm.query(g).await.unwrap().transaction.is_some();
        let status = if started {
            let q = dtm_testkit::wait::final_status(&dtm, g, Duration::from_secs(60))
                .await
                .unwrap();
            if let Some(refused) = f.fail {
                // Exactly the branches whose actions completed were rolled back: the debit
                // (01) and every credit (02...) but the refused one.
                let refused = format!("{:02}", refused + 2);
                let mut want: Vec<String> = (1..=1 + f.tos.len())
                    .map(|b| format!("{b:02}"))
                    .filter(|b| *b != refused)
                    .map(|b| format!("{b}/rollback=succeed"))
                    .collect();
                want.sort();
                let mut got: Vec<String> = branch_rows(&q)
                    .into_iter()
                    .filter(|r| r.contains("/rollback"))
                    .collect();
                got.sort();
                assert_eq!(got, want, "{g}");
            }
            q.transaction.unwrap().status
        } else {
            "never started".to_string()
        };
        let moved = status == "succeed";
        match (f.fail.is_some(), status.as_str()) {
            (false, "succeed") | (true, "failed") | (_, "never started") => {}
            other => panic!("{g}: {other:?}"),
        }
        let want_from = if moved { 100 - 30 } else { 100 };
        let want_to = if moved { 10 } else { 0 };
        let bank = bank_env().bank.clone();
        let (from, tos) = (f.from, f.tos.clone());
        let got = on_env(async move {
            let mut b = vec![bank.balance(Db::Mysql, from).await.unwrap()];
            for to in tos {
                b.push(bank.balance(Db::Mysql, to).await.unwrap());
            }
            b
        })
        .await;
        assert_eq!(
            got,
            [want_from, want_to, want_to, want_to],
            "{g} ({status})"
        );
        *outcomes
            .entry(if moved {
                "succeed"
            } else if started {
                "failed"
            } else {
                "never started"
            })
            .or_default() += 1;
    }
    last.kill();
    let kills = ROUNDS - 1;
    println!(
        "{} instances over {kills} SIGKILLs: {outcomes:?}",
        all.len()
    );
}

/// What DTM held of an instance right after a kill: not created, or its rows.
fn kill_point(q: &dtmcli::QueryResult) -> String {
    match &q.transaction {
        None => "not created".into(),
        Some(t) if t.status().is_final() => format!("{} before the kill", t.status),
        Some(_) => {
            let rows = branch_rows(q);
            let credits = rows
                .iter()
                .filter(|r| r.ends_with("/action=succeed"))
                .count();
            let rollbacks = rows.iter().filter(|r| r.contains("/rollback=")).count();
            format!("prepared, {credits} actions, {rollbacks} rollbacks recorded")
        }
    }
}
