//! Replay tests (`Workflows::export_history`, `Workflows::replay`, `dtm_testkit::history`):
//! histories exported from real runs on DTM replay against the code with no DTM and no
//! services; a change that takes another path, another outcome or another result fails the
//! replay, naming where; a change guarded by `Wf::patched` replays.
//!
//! `tests/histories/` holds histories exported from real runs, replayed here without any
//! server (`committed_histories_replay_without_dtm`). Run with `DTM_WRITE_HISTORIES=1` to
//! write them again from this test's runs.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::support::*;
use crate::workflow_common::recording_http;
use dtm_tests::wf::post;
use dtm_workflow::{History, Wf, WfOptions, Workflows};
use dtmcli::{DtmClient, Error};
use reqwest_middleware::ClientWithMiddleware;
use serde::{Deserialize, Serialize};

/// The workflow's input: where the bank is (recorded with the input, so a replay asks for
/// the very URLs the recorded run called) and how much.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    busi: String,
    amount: i64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    fee: i64,
    paid: i64,
}

/// The code of workflow `order`, in the versions the tests replay.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Version {
    /// 01 a typed local step (the fee; its rollback a local refund), 02 the bank's TransIn
    /// (rollback TransInRevert).
    V1,
    /// V1 with a local step added before TransIn, unguarded.
    Unguarded,
    /// V1 with that step guarded by `patched("audit")`.
    Patched,
    /// V1 computing another result.
    OtherResult,
    /// V1 that never calls TransIn.
    NoCredit,
    /// V1 that takes a refused TransIn as done: it commits where V1 rolls back.
    Forgiving,
}

/// Registers `order` in version `v` on `wfs`.
fn register(wfs: &Workflows, http: ClientWithMiddleware, v: Version, options: WfOptions) {
    let order = move |wf: Wf, o: Order| {
        let http = http.clone();
        async move {
            wf.new_branch()?;
            // Its rollback (the fee refunded, a local step) is recorded when the order fails.
            wf.on_rollback(|_| async { Ok(()) })?;
            let fee: i64 = wf.step(|_| async { Ok(2) }).await?;
            let audit = match v {
                Version::Unguarded => true,
                Version::Patched => wf.patched("audit").await?,
                _ => false,
            };
            if audit {
                wf.new_branch()?;
                wf.do_(|_| async { Ok(b"audited".to_vec()) }).await?;
            }
            if v != Version::NoCredit {
                wf.new_branch()?;
                let body = serde_json::to_vec(&BusiReq::new(o.amount)).unwrap();
                let (w, h, b, undo) = (
                    wf.clone(),
                    http.clone(),
                    body.clone(),
                    format!("{}/TransInRevert", o.busi),
                );
                wf.on_rollback(move |_| async move { post(&w, &h, &undo, b).await.map(drop) })?;
                let credited = post(&wf, &http, &format!("{}/TransIn", o.busi), body).await;
                match credited {
                    Err(e) if e.is_failure() && v == Version::Forgiving => {}
                    other => drop(other?),
                }
            }
            let paid = o.amount + fee + i64::from(v == Version::OtherResult);
            Ok(Receipt { fee, paid })
        }
    };
    wfs.register_typed("order", options, order).unwrap();
}

/// The live registry, on the shared DTM (retried every second).
fn live() -> &'static Workflows {
    static LIVE: OnceLock<Workflows> = OnceLock::new();
    LIVE.get_or_init(|| {
        let dtm_url = env().server.http_url();
        start_on_env(move || async move {
            let wfs = dtm_examples::demo::http_workflows(DtmClient::new(dtm_url).unwrap())
                .await
                .unwrap();
            register(
                &wfs,
                recording_http(),
                Version::V1,
                dtm_tests::wf::retrying_every_second(),
            );
            wfs
        })
    })
}

/// An offline registry with `order` in version `v` (nothing to send to, nothing to call).
fn offline(v: Version) -> Workflows {
    let wfs = Workflows::offline();
    register(&wfs, recording_http(), v, WfOptions::default());
    wfs
}

/// Runs `order` for `amount` on the live registry with TransIn answering `script` first,
/// waits until DTM holds it `status`; its history.
async fn recorded(name: &str, script: Vec<Outcome>, status: &str) -> History {
    let gid = gid(name);
    busi().script(&gid, "TransIn", script);
    let order = Order {
        busi: env().base.clone(),
        amount: 30,
    };
    let (wfs, g) = (live().clone(), gid.clone());
    let _ = on_env(async move { wfs.execute_typed::<_, Receipt>("order", &g, &order).await }).await;
    wait_status(&dtm(), &gid, status).await;
    let (wfs, g) = (live().clone(), gid.clone());
    on_env(async move { wfs.export_history(&g).await })
        .await
        .unwrap()
}

async fn replay(v: Version, h: &History) -> dtmcli::Result<()> {
    offline(v).replay(h).await
}

fn histories_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("histories")
}

/// Keeps `h` in `tests/histories/<file>` when asked to (`DTM_WRITE_HISTORIES=1`).
fn keep(h: &History, file: &str) {
    if std::env::var_os("DTM_WRITE_HISTORIES").is_some() {
        h.save(histories_dir().join(file)).unwrap();
    }
}

#[tokio::test]
async fn a_resumed_run_replays_and_changes_are_caught() {
    // A run that DTM resumed once (TransIn erred first), then committed.
    let h = recorded("wf-replay-ok", vec![Outcome::Error], "succeed").await;
    assert_eq!((h.name.as_str(), h.status.as_str()), ("order", "succeed"));
    keep(&h, "order-succeed.json");
    // Saved and loaded, it replays with no DTM and no bank.
    let file = std::env::temp_dir().join(format!("{}.json", h.gid));
    h.save(&file).unwrap();
    let wfs = offline(Version::V1);
    dtm_testkit::history::replay_file(&wfs, &file)
        .await
        .unwrap();
    let _ = std::fs::remove_file(&file);
    // A guarded change replays (the recorded run has no marker: the old path).
    replay(Version::Patched, &h).await.unwrap();
    // An unguarded change: branch 02 is now a local step where TransIn was recorded.
    let e = replay(Version::Unguarded, &h).await.unwrap_err();
    assert!(matches!(e, Error::NonDeterministic(_)), "{e:?}");
    assert!(e.to_string().contains("02-action"), "{e}");
    // Another result than the one DTM stored.
    let e = replay(Version::OtherResult, &h).await.unwrap_err();
    assert!(e.to_string().contains("another result"), "{e}");
    // A branch fewer: the recorded TransIn is never asked for.
    let e = replay(Version::NoCredit, &h).await.unwrap_err();
    assert!(e.to_string().contains("02-action"), "{e}");
    // Nothing was called again by any replay.
    assert_eq!(busi().handlers(&h.gid), ["TransIn", "TransIn"]);
}

#[tokio::test]
async fn a_rolled_back_run_replays_with_its_rollbacks() {
    let h = recorded("wf-replay-rb", vec![Outcome::Failure], "failed").await;
    keep(&h, "order-failed.json");
    replay(Version::V1, &h).await.unwrap();
    // Code that commits where the recorded run rolled back.
    let e = replay(Version::Forgiving, &h).await.unwrap_err();
    assert!(
        e.to_string().contains("ended failed, the code commits"),
        "{e}"
    );
    // Code that no longer asks for the recorded (failed) credit.
    let e = replay(Version::NoCredit, &h).await.unwrap_err();
    assert!(matches!(e, Error::NonDeterministic(_)), "{e:?}");
    assert!(e.to_string().contains("02-action"), "{e}");
    // Branch 01's rollback is in the history (the failed credit has none), and the replay
    // asked for it; nothing was called again.
    let rollbacks: Vec<&str> = h
        .records
        .iter()
        .filter(|r| r.op == "rollback")
        .map(|r| r.branch_id.as_str())
        .collect();
    assert_eq!(rollbacks, ["01"]);
    assert_eq!(busi().handlers(&h.gid), ["TransIn"]);
}

#[tokio::test]
async fn an_unfinished_run_replays_as_far_as_it_went() {
    // TransIn keeps erring: DTM holds the workflow prepared with step 01 recorded.
    let gid = gid("wf-replay-open");
    busi().script(&gid, "TransIn", vec![Outcome::Error; 50]);
    let order = Order {
        busi: env().base.clone(),
        amount: 5,
    };
    let (wfs, g) = (live().clone(), gid.clone());
    let first =
        on_env(async move { wfs.execute_typed::<_, Receipt>("order", &g, &order).await }).await;
    assert!(!first.unwrap_err().is_failure());
    let (wfs, g) = (live().clone(), gid.clone());
    let h = on_env(async move { wfs.export_history(&g).await })
        .await
        .unwrap();
    assert_eq!(h.status, "prepared");
    replay(Version::V1, &h).await.unwrap();
    // A change beyond the history's last record cannot be judged by it: it replays.
    replay(Version::Unguarded, &h).await.unwrap();
    dtm().force_stop(&gid).await.unwrap();
}

/// The histories in `tests/histories/`, exported from real runs of `order`, replay with no
/// server at all (this test starts none).
#[tokio::test]
async fn committed_histories_replay_without_dtm() {
    let wfs = offline(Version::V1);
    let n = dtm_testkit::history::replay_dir(&wfs, histories_dir())
        .await
        .unwrap();
    assert_eq!(n, 2);
    // The same files against the unguarded change: the first (by name) fails, naming it.
    let wfs = offline(Version::Unguarded);
    let e = dtm_testkit::history::replay_dir(&wfs, histories_dir())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("order-failed.json"), "{e}");
}
