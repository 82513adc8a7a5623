//! The quick-start demo: three money transfers as DTM sagas against a real DTM server, each
//! branch guarded by the branch barrier on Redis. It prints the balances, every branch call
//! with what the barrier did, and DTM's final status, then checks them: it exits non-zero
//! when an outcome is not the expected one, so CI runs it.
//!
//! `scripts/demo.sh` installs DTM and starts Redis, then runs `cargo run -q -p dtm-demo`.
//! Redis: `$REDIS_URL` (default `redis://127.0.0.1:6379`); DTM: `dtm_testkit::find_binary`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use dtm_barrier::redis::RedisStore;
use dtm_barrier::redis_rs::aio::MultiplexedConnection;
use dtm_barrier::{BranchBarrier, Outcome};
use dtm_testkit::{DtmServer, DtmServerConfig};
use dtmcli::{TransInfo, TransOptions};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// B's rule: it accepts at most this much per transfer (saga 2 breaks it).
const LIMIT: i64 = 50;

/// What one branch call did, as the barrier reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Did {
    /// The barrier ran the business: the balance moved.
    Executed,
    /// Executed, then the handler answered 500 as if the answer had been lost.
    ExecutedAnswerLost,
    /// The barrier skipped it: this branch already ran.
    Duplicate,
    /// The barrier skipped it: a compensation whose action never ran.
    NullCompensation,
    /// The business refused (FAILURE) before anything was written.
    Refused,
}

impl Did {
    fn says(self) -> &'static str {
        match self {
            Did::Executed => "barrier: executed",
            Did::ExecutedAnswerLost => "barrier: executed, then the answer is lost (500)",
            Did::Duplicate => "barrier: DUPLICATE, skipped (it already ran)",
            Did::NullCompensation => "barrier: NULL COMPENSATION, skipped (its action never ran)",
            Did::Refused => "refused: FAILURE, nothing written",
        }
    }
}

/// One branch call DTM made.
#[derive(Debug, Clone)]
struct Call {
    handler: String,
    op: String,
    did: Did,
    /// The account it moved and by how much, when it moved one.
    moved: Option<(String, i64)>,
}

/// Every branch's body: move `amount` from the account `from` to the account `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Transfer {
    amount: i64,
    from: String,
    to: String,
}

/// The branch service: balances on Redis, the calls it saw by gid, and the gids whose
/// TransIn answer is lost once.
#[derive(Clone)]
struct Bank {
    store: RedisStore<MultiplexedConnection>,
    /// Account key -> its name in the story.
    names: Arc<HashMap<String, &'static str>>,
    calls: Arc<Mutex<HashMap<String, Vec<Call>>>>,
    lose_answer: Arc<Mutex<Vec<String>>>,
}

impl Bank {
    fn record(&self, gid: &str, call: Call) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(gid.to_string())
            .or_default()
            .push(call);
    }

    fn calls(&self, gid: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(gid)
            .cloned()
            .unwrap_or_default()
    }

    async fn balance(&self, key: &str) -> Result<i64, BoxError> {
        let mut conn = self.store.connection().clone();
        let v: Option<i64> = dtm_barrier::redis_rs::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await?;
        Ok(v.unwrap_or(0))
    }
}

/// One handler for the four branches. Each adjusts one balance with the Redis barrier's
/// `check_adjust_amount`: the barrier key and the balance change in one atomic script.
async fn branch(
    State(bank): State<Bank>,
    Path(handler): Path<String>,
    info: TransInfo,
    Json(t): Json<Transfer>,
) -> Result<Response, dtmcli::Error> {
    let (key, delta) = match handler.as_str() {
        "TransOut" => (&t.from, -t.amount),
        "TransOutRevert" => (&t.from, t.amount),
        "TransIn" => (&t.to, t.amount),
        "TransInRevert" => (&t.to, -t.amount),
        _ => return Err(dtmcli::Error::invalid(format!("no branch {handler}"))),
    };
    let call = |did, moved| Call {
        handler: handler.clone(),
        op: info.op.to_string(),
        did,
        moved,
    };
    // The rule depends on the request only, so every retry of this branch gets the same
    // answer: safe to check before the barrier.
    if handler == "TransIn" && t.amount > LIMIT {
        bank.record(&info.gid, call(Did::Refused, None));
        return Err(dtmcli::Error::failure(format!(
            "B accepts at most {LIMIT} per transfer"
        )));
    }
    let bb = BranchBarrier::new(info.clone());
    let outcome = bb.check_adjust_amount(&bank.store, key, delta).await?;
    let name = bank.names.get(key).copied().unwrap_or("?").to_string();
    let mut did = match outcome {
        Outcome::Executed(()) => Did::Executed,
        Outcome::Duplicate => Did::Duplicate,
        Outcome::NullCompensation => Did::NullCompensation,
        // Outcome may grow; this demo knows the three above.
        _ => Did::Duplicate,
    };
    let lost = did == Did::Executed && handler == "TransIn" && {
        let mut lose = bank.lose_answer.lock().unwrap_or_else(|p| p.into_inner());
        let before = lose.len();
        lose.retain(|g| g != &info.gid);
        lose.len() != before
    };
    if lost {
        did = Did::ExecutedAnswerLost;
    }
    let moved = matches!(did, Did::Executed | Did::ExecutedAnswerLost).then_some((name, delta));
    bank.record(&info.gid, call(did, moved));
    if lost {
        // Committed, but DTM hears a 500: it will call TransIn again.
        return Ok((StatusCode::INTERNAL_SERVER_ERROR, "answer lost").into_response());
    }
    Ok(Json(serde_json::json!({"dtm_result": "SUCCESS"})).into_response())
}

/// One saga of the story and what it must end with.
struct Scenario {
    title: &'static str,
    amount: i64,
    lose_answer: bool,
    status: &'static str,
    balances: (i64, i64),
    calls: &'static [(&'static str, Did)],
    note: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        title: "Saga 1: move 30 from A to B.",
        amount: 30,
        lose_answer: false,
        status: "succeed",
        balances: (70, 130),
        calls: &[("TransOut", Did::Executed), ("TransIn", Did::Executed)],
        note: "the money moved once",
    },
    Scenario {
        title: "Saga 2: move 60 from A to B; B accepts at most 50, so TransIn refuses (FAILURE)\n        and DTM compensates.",
        amount: 60,
        lose_answer: false,
        status: "failed",
        balances: (70, 130),
        calls: &[
            ("TransOut", Did::Executed),
            ("TransIn", Did::Refused),
            ("TransInRevert", Did::NullCompensation),
            ("TransOutRevert", Did::Executed),
        ],
        note: "back where they started: B was not debited for money it never got",
    },
    Scenario {
        title: "Saga 3: move 20 from A to B; TransIn commits, then its answer is lost (500),\n        so DTM calls it again.",
        amount: 20,
        lose_answer: true,
        status: "succeed",
        balances: (50, 150),
        calls: &[
            ("TransOut", Did::Executed),
            ("TransIn", Did::ExecutedAnswerLost),
            ("TransIn", Did::Duplicate),
        ],
        note: "B got 20 once, though TransIn was called twice",
    },
];

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(problems) if problems.is_empty() => {
            println!("All three outcomes are the expected ones.\n");
            println!("Next:");
            println!("  cargo run -p dtm-examples -- list                # every DTM scenario, one command each");
            println!("  cargo run -p dtm-examples -- http_saga_barrier   # a saga guarded by the barrier on MariaDB");
            println!("Docs: README.md (crates, Cargo.toml per use case), examples/README.md (the scenarios),");
            println!("      cargo doc --open -p dtmcli -p dtm-barrier -p dtm-testkit");
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            eprintln!("The demo did not end as it should:");
            for p in problems {
                eprintln!("  - {p}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the three sagas; returns what did not end as expected.
async fn run() -> Result<Vec<String>, BoxError> {
    println!("Three transfers between the accounts A and B. Each is a DTM saga of two branches:");
    println!("TransOut takes from A, TransIn gives to B; each has a compensation (TransOutRevert,");
    println!("TransInRevert). Every branch is guarded by the branch barrier on Redis.\n");

    let dtm = DtmServer::start_async(DtmServerConfig::default()).await?;
    let client = dtm.http_client()?;
    println!(
        "DTM {} at {} ({})",
        client.version().await?,
        dtm.http_url(),
        dtm.binary().display()
    );

    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let conn = dtm_barrier::redis_rs::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("Redis at {redis_url}: {e} (scripts/start-dbs.sh redis starts it)"))?;
    // Barrier keys live a day: DTM retries a branch well within that.
    let store = RedisStore::new(conn, Duration::from_secs(24 * 3600));

    // Accounts of this run only, so that the demo can run again and again.
    let run = format!("{}-{:x}", std::process::id(), nanos());
    let (a, b) = (format!("dtm-demo:{run}:A"), format!("dtm-demo:{run}:B"));
    let mut conn = store.connection().clone();
    for key in [&a, &b] {
        let _: () = dtm_barrier::redis_rs::cmd("SET")
            .arg(key)
            .arg(100)
            .arg("EX")
            .arg(24 * 3600)
            .query_async(&mut conn)
            .await?;
    }
    let bank = Bank {
        store,
        names: Arc::new(HashMap::from([(a.clone(), "A"), (b.clone(), "B")])),
        calls: Arc::default(),
        lose_answer: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/api/demo/{handler}", post(branch))
        .with_state(bank.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/api/demo", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("Branches at {base}; balances on Redis ({redis_url})\n");

    let mut problems = Vec::new();
    for s in SCENARIOS {
        println!("{}", s.title);
        let before = (bank.balance(&a).await?, bank.balance(&b).await?);
        println!("   balances before: A = {}, B = {}", before.0, before.1);
        let gid = client.new_gid().await?;
        if s.lose_answer {
            bank.lose_answer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(gid.clone());
        }
        let body = Transfer {
            amount: s.amount,
            from: a.clone(),
            to: b.clone(),
        };
        client
            .saga(&gid)
            .add(
                &format!("{base}/TransOut"),
                &format!("{base}/TransOutRevert"),
                &body,
            )
            .add(
                &format!("{base}/TransIn"),
                &format!("{base}/TransInRevert"),
                &body,
            )
            // DTM retries a branch that answered neither success nor FAILURE after this.
            .with_options(TransOptions::default().retry_interval(Duration::from_secs(1)))
            .submit()
            .await?;
        println!("   gid {gid}; the branch calls DTM made, in order:");
        let q = dtm.wait_final(&gid, Duration::from_secs(30)).await?;
        let calls = bank.calls(&gid);
        for c in &calls {
            let moved = c
                .moved
                .as_ref()
                .map(|(name, d)| format!("  {name} {d:+}"))
                .unwrap_or_default();
            println!(
                "     {:<15} {:<11} {}{moved}",
                c.handler,
                c.op,
                c.did.says()
            );
        }
        let t = q
            .transaction
            .ok_or("DTM answered without the transaction")?;
        let reason = if t.rollback_reason.is_empty() {
            String::new()
        } else {
            format!(" (rollback reason: {})", short_reason(&t.rollback_reason))
        };
        println!("   DTM's final status: {}{reason}", t.status);
        let after = (bank.balance(&a).await?, bank.balance(&b).await?);
        println!(
            "   balances after:  A = {}, B = {}: {}\n",
            after.0, after.1, s.note
        );

        if t.status != s.status {
            problems.push(format!(
                "{gid}: DTM's final status is {}, expected {}",
                t.status, s.status
            ));
        }
        if after != s.balances {
            problems.push(format!(
                "{gid}: balances A = {}, B = {}, expected A = {}, B = {}",
                after.0, after.1, s.balances.0, s.balances.1
            ));
        }
        let seen: Vec<(&str, Did)> = calls.iter().map(|c| (c.handler.as_str(), c.did)).collect();
        if seen != s.calls {
            problems.push(format!(
                "{gid}: branch calls {seen:?}, expected {:?}",
                s.calls
            ));
        }
    }
    dtm.stop()?;
    Ok(problems)
}

/// The branch's own message from DTM's rollback reason (which also holds the URL and the
/// whole answer), or the reason as it is.
fn short_reason(reason: &str) -> &str {
    const KEY: &str = r#""message":""#;
    reason
        .find(KEY)
        .map(|i| &reason[i + KEY.len()..])
        .and_then(|rest| rest.find('"').map(|end| &rest[..end]))
        .unwrap_or(reason)
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_reasons_are_shortened() {
        let dtm = r#"url:http://x/TransIn return failed: {"dtm_result":"FAILURE","message":"B accepts at most 50"} FAILURE"#;
        assert_eq!(short_reason(dtm), "B accepts at most 50");
        assert_eq!(short_reason("something else"), "something else");
    }

    /// The story's numbers add up: each scenario's expected balances follow from the
    /// previous ones and its amount (or stay, for the rollback).
    #[test]
    fn scenarios_are_consistent() {
        let mut balances = (100, 100);
        for s in SCENARIOS {
            if s.status == "succeed" {
                balances = (balances.0 - s.amount, balances.1 + s.amount);
            }
            assert_eq!(s.balances, balances, "{}", s.title);
            assert_eq!(s.amount > LIMIT, s.status == "failed", "{}", s.title);
        }
    }
}
