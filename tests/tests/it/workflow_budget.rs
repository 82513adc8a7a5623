//! Deadlines and resume limits that roll back (`WfOptions::deadline`,
//! `WfOptions::resume_limit`), against the real DTM, which never times a workflow out.
//!
//! Every workflow here is the same transfer: branch 01 debits a MariaDB account through the
//! barrier-guarded bank (its rollback credits it back), branch 02 is a local step that
//! answers a retryable error as often as the test says. Only the budget differs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::support::*;
use crate::workflow_common::{counted_step_runs, recording_http};
use dtm_examples::bank::{BankReq, Db};
use dtm_tests::wf::{post_step, retrying_every_second};
use dtm_workflow::{Wf, WfOptions, Workflows};
use dtmcli::{DtmClient, Error, QueryResult};

/// Per gid: how many more times step 02 answers a retryable error.
type Failures = Arc<Mutex<HashMap<String, u32>>>;

struct Env {
    wfs: Workflows,
    failures: Failures,
    /// Runs of step 02, per gid.
    runs: Arc<Mutex<HashMap<String, usize>>>,
}

/// The budgets under test, by workflow name (each retried by DTM every second).
fn budgets() -> [(&'static str, Option<Duration>, Option<u32>); 5] {
    [
        ("budget-deadline", Some(Duration::from_secs(3)), None),
        ("budget-zero", Some(Duration::ZERO), None),
        ("budget-limit2", None, Some(2)),
        ("budget-limit0", None, Some(0)),
        ("budget-generous", Some(Duration::MAX), Some(5)),
    ]
}

fn wf_env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dtm_url = env().server.http_url();
        let bank = format!("{}/{}", bank_env().base, Db::Mysql.as_str());
        start_on_env(move || async move {
            let wfs = dtm_examples::demo::http_workflows(DtmClient::new(dtm_url).unwrap())
                .await
                .unwrap();
            let http = recording_http();
            let failures: Failures = Default::default();
            let runs: Arc<Mutex<HashMap<String, usize>>> = Default::default();
            for (name, deadline, resume_limit) in budgets() {
                let options = WfOptions {
                    deadline,
                    resume_limit,
                    ..retrying_every_second()
                };
                let (http, bank) = (http.clone(), bank.clone());
                let (failures, runs) = (failures.clone(), runs.clone());
                let transfer = move |wf: Wf, input: Vec<u8>| {
                    let (http, bank) = (http.clone(), bank.clone());
                    let (failures, runs) = (failures.clone(), runs.clone());
                    async move {
                        let (debit, undo) = (
                            format!("{bank}/TransOut"),
                            format!("{bank}/TransOutCompensate"),
                        );
                        post_step(&wf, &http, &debit, Some(&undo), input).await?;
                        wf.new_branch()?;
                        wf.do_(|info| async move { flaky_step(&failures, &runs, &info.gid) })
                            .await?;
                        Ok(Vec::new())
                    }
                };
                wfs.register_with_options(name, options, transfer).unwrap();
            }
            Env {
                wfs,
                failures,
                runs,
            }
        })
    })
}

/// Step 02: a retryable error while the test's count for `gid` lasts.
fn flaky_step(
    failures: &Failures,
    runs: &Arc<Mutex<HashMap<String, usize>>>,
    gid: &str,
) -> dtmcli::Result<Vec<u8>> {
    *runs.lock().unwrap().entry(gid.to_string()).or_default() += 1;
    let mut failures = failures.lock().unwrap();
    match failures.get_mut(gid) {
        Some(n) if *n > 0 => {
            *n -= 1;
            Err(Error::other("the downstream service is unavailable"))
        }
        _ => Ok(b"done".to_vec()),
    }
}

/// A transfer of 30 from a fresh account holding 100, run as workflow `name` with step 02
/// failing `failures` times; the account, the gid and the first run's outcome.
async fn start(name: &'static str, failures: u32) -> (i64, String, dtmcli::Result<Vec<u8>>) {
    let env = wf_env();
    let from = bank_account(Db::Mysql, 100).await;
    let gid = gid(name);
    env.failures.lock().unwrap().insert(gid.clone(), failures);
    let input = serde_json::to_vec(&BankReq::transfer(30, from, 0, false)).unwrap();
    let (wfs, g) = (env.wfs.clone(), gid.clone());
    let first = on_env(async move { wfs.execute(name, &g, &input).await }).await;
    (from, gid, first)
}

async fn balance(user: i64) -> i64 {
    let bank = bank_env().bank.clone();
    on_env(async move { bank.balance(Db::Mysql, user).await.unwrap() }).await
}

/// The bank's business runs for `gid`: (debits, credits back).
fn bank_runs(gid: &str) -> (usize, usize) {
    let bank = &bank_env().bank;
    (
        bank.executed(gid, "TransOut"),
        bank.executed(gid, "TransOutCompensate"),
    )
}

fn reason(q: &QueryResult) -> String {
    q.transaction.as_ref().unwrap().rollback_reason.clone()
}

fn step_runs(gid: &str) -> usize {
    counted_step_runs(&wf_env().runs, gid)
}

#[tokio::test]
async fn a_deadline_rolls_back_a_workflow_that_keeps_retrying() {
    let (from, gid, first) = start("budget-deadline", u32::MAX).await;
    assert!(!first.as_ref().unwrap_err().is_failure(), "{first:?}");
    assert_eq!(balance(from).await, 70);
    // DTM resumes it every second; once 3 s have passed since DTM created it, step 02 no
    // longer runs and the workflow rolls back: the debit is credited back.
    let q = wait_status(&dtm(), &gid, "failed").await;
    let why = reason(&q);
    assert!(
        why.contains("deadline of 3s") && why.contains(&gid),
        "{why}"
    );
    assert_eq!(balance(from).await, 100);
    assert_eq!(bank_runs(&gid), (1, 1));
    // Branch 01 rolled back; branch 02 has no record (it never succeeded) and no rollback.
    assert_eq!(
        branch_rows(&q),
        ["01/action=succeed", "01/rollback=succeed"]
    );
    // Step 02 ran while the deadline allowed (at least the first run), never after.
    let ran = step_runs(&gid);
    assert!(ran >= 1, "{ran}");
    // Executed again: the stored failure, and nothing runs.
    let again = settled(|| {
        let (wfs, g, input) = (wf_env().wfs.clone(), gid.clone(), transfer_input(from));
        on_env(async move { wfs.execute("budget-deadline", &g, &input).await })
    })
    .await;
    assert!(again.unwrap_err().to_string().contains("deadline of 3s"));
    assert_eq!((step_runs(&gid), bank_runs(&gid)), (ran, (1, 1)));
}

fn transfer_input(from: i64) -> Vec<u8> {
    serde_json::to_vec(&BankReq::transfer(30, from, 0, false)).unwrap()
}

#[tokio::test]
async fn a_zero_deadline_runs_no_action() {
    let (from, gid, first) = start("budget-zero", 0).await;
    // Rolled back within the first run: nothing was debited, and the rollback of the
    // refused branch 01 is a null compensation at the bank's barrier.
    let err = first.unwrap_err();
    assert!(
        err.is_failure() && err.to_string().contains("deadline of 0ns"),
        "{err}"
    );
    let q = wait_status(&dtm(), &gid, "failed").await;
    assert!(reason(&q).contains("deadline of 0ns"));
    assert_eq!(balance(from).await, 100);
    assert_eq!((bank_runs(&gid), step_runs(&gid)), ((0, 0), 0));
}

#[tokio::test]
async fn a_resume_limit_rolls_back_after_that_many_resumes() {
    let (from, gid, first) = start("budget-limit2", u32::MAX).await;
    assert!(!first.unwrap_err().is_failure());
    let q = wait_status(&dtm(), &gid, "failed").await;
    // The first run and two resumes ran step 02; the third unfinished run gave up.
    assert_eq!(step_runs(&gid), 3);
    let why = reason(&q);
    assert!(
        why.contains("after 2 resumes") && why.contains("downstream service is unavailable"),
        "{why}"
    );
    let rows = branch_rows(&q);
    for n in 1..=3 {
        assert!(
            rows.contains(&format!("00/unfinished-{n}=succeed")),
            "{rows:?}"
        );
    }
    assert!(
        !rows.iter().any(|r| r.starts_with("00/unfinished-4")),
        "{rows:?}"
    );
    assert_eq!(balance(from).await, 100);
    assert_eq!(bank_runs(&gid), (1, 1));
}

#[tokio::test]
async fn a_resume_limit_of_zero_rolls_back_in_the_first_run() {
    let (from, gid, first) = start("budget-limit0", u32::MAX).await;
    let err = first.unwrap_err();
    assert!(
        err.is_failure() && err.to_string().contains("after 0 resumes"),
        "{err}"
    );
    let q = wait_status(&dtm(), &gid, "failed").await;
    assert!(branch_rows(&q).contains(&"00/unfinished-1=succeed".to_string()));
    assert_eq!(step_runs(&gid), 1);
    assert_eq!(balance(from).await, 100);
    assert_eq!(bank_runs(&gid), (1, 1));
}

#[tokio::test]
async fn a_budget_not_spent_changes_nothing() {
    // Deadline Duration::MAX, resume limit 5: step 02 fails once, the resume commits.
    let (from, gid, first) = start("budget-generous", 1).await;
    assert!(!first.unwrap_err().is_failure());
    let q = wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(step_runs(&gid), 2);
    let rows = branch_rows(&q);
    assert!(
        rows.contains(&"00/unfinished-1=succeed".to_string()),
        "{rows:?}"
    );
    assert_eq!(balance(from).await, 70);
    assert_eq!(bank_runs(&gid), (1, 0));
}
