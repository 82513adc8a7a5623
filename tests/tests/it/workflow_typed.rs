//! Typed workflows against the real DTM (`register_typed`, `execute_typed`, `Wf::step`):
//! inputs, step values and results are serde types recorded as JSON; a resumed workflow
//! replays them typed; a record that no longer decodes into its step's type is a typed
//! error naming the gid, the branch and the type.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::support::*;
use crate::workflow_common::{counted_step_runs, recording_http};
use dtm_examples::busi::Outcome;
use dtm_tests::wf::{post, retrying_every_second};
use dtm_workflow::{Wf, WfOptions, Workflows};
use dtmcli::{DtmClient, Error, TransOptions};
use futures_util::future::BoxFuture;
use reqwest_middleware::ClientWithMiddleware;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Transfer {
    amount: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Quote {
    fee: i64,
    note: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    charged: i64,
    quote: Quote,
}

struct Env {
    wfs: Workflows,
    /// Runs of the quote step, per gid.
    quotes: Arc<Mutex<HashMap<String, usize>>>,
    /// The "new code" of `typed-change`: its first step returns a `u32`.
    changed: Arc<AtomicBool>,
}

/// `typed-transfer`: 01 a typed local step (a quote), 02 the bank's TransIn; its result is a
/// typed receipt. `typed-change`: the same first step, whose type the "new code" changes.
fn wf_env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dtm_url = env().server.http_url();
        start_on_env(move || async move {
            let dtm = DtmClient::new(dtm_url).unwrap();
            let wfs = dtm_examples::demo::http_workflows(dtm).await.unwrap();
            let http = recording_http();
            let quotes: Arc<Mutex<HashMap<String, usize>>> = Default::default();
            let changed = Arc::new(AtomicBool::new(false));

            let transfer = transfer(&http, &quotes);
            let opts = retrying_every_second();
            wfs.register_typed("typed-transfer", opts, transfer)
                .unwrap();

            // DTM calls it back only after a minute: the test changes the code meanwhile.
            let slow = WfOptions {
                trans: TransOptions::default().retry_interval(Duration::from_secs(60)),
                ..Default::default()
            };
            let (h, q, c) = (http.clone(), quotes.clone(), changed.clone());
            let change = move |wf: Wf, t: Transfer| {
                let (http, quotes, changed) = (h.clone(), q.clone(), c.clone());
                async move {
                    wf.new_branch()?;
                    if changed.load(Ordering::SeqCst) {
                        let _: u32 = wf.step(|_| async { Ok(7) }).await?;
                    } else {
                        quote_step(&wf, &quotes).await?;
                    }
                    wf.new_branch()?;
                    let body = serde_json::to_vec(&BusiReq::new(t.amount)).unwrap();
                    post(&wf, &http, &url("TransIn"), body).await?;
                    Ok(())
                }
            };
            wfs.register_typed("typed-change", slow, change).unwrap();
            Env {
                wfs,
                quotes,
                changed,
            }
        })
    })
}

/// The typed transfer: 01 a typed local step (a quote), 02 the bank's TransIn; its result
/// a typed receipt.
fn transfer(
    http: &ClientWithMiddleware,
    quotes: &Arc<Mutex<HashMap<String, usize>>>,
) -> impl Fn(Wf, Transfer) -> BoxFuture<'static, dtmcli::Result<Receipt>> + Clone + Send + Sync + 'static
{
    let (http, quotes) = (http.clone(), quotes.clone());
    move |wf: Wf, t: Transfer| {
        let (http, quotes) = (http.clone(), quotes.clone());
        Box::pin(async move {
            wf.new_branch()?;
            let quote = quote_step(&wf, &quotes).await?;
            wf.new_branch()?;
            let body = serde_json::to_vec(&BusiReq::new(t.amount)).unwrap();
            post(&wf, &http, &url("TransIn"), body).await?;
            let charged = t.amount + quote.fee;
            Ok(Receipt { charged, quote })
        })
    }
}

/// The typed local step: a quote, counted per gid.
async fn quote_step(wf: &Wf, quotes: &Arc<Mutex<HashMap<String, usize>>>) -> dtmcli::Result<Quote> {
    let (quotes, gid) = (quotes.clone(), wf.gid().to_string());
    wf.step(move |_info| async move {
        *quotes.lock().unwrap().entry(gid).or_default() += 1;
        Ok(Quote {
            fee: 2,
            note: "standard".into(),
        })
    })
    .await
}

async fn execute<O>(name: &'static str, gid: &str, input: Transfer) -> dtmcli::Result<O>
where
    O: serde::de::DeserializeOwned + Send + 'static,
{
    let (wfs, gid) = (wf_env().wfs.clone(), gid.to_string());
    on_env(async move { wfs.execute_typed(name, &gid, &input).await }).await
}

fn quotes(gid: &str) -> usize {
    counted_step_runs(&wf_env().quotes, gid)
}

#[tokio::test]
async fn typed_values_are_recorded_and_replayed() {
    let gid = gid("wf-typed");
    busi().script(&gid, "TransIn", [Outcome::Error]);
    let err = execute::<Receipt>("typed-transfer", &gid, Transfer { amount: 30 })
        .await
        .unwrap_err();
    assert!(!err.is_failure() && !err.is_ongoing(), "{err}");
    // DTM resumes it: the quote is replayed from its JSON record, not asked again.
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(quotes(&gid), 1);
    assert_eq!(busi().handlers(&gid), ["TransIn", "TransIn"]);
    let q = dtm().query(&gid).await.unwrap();
    let rows = branch_rows(&q);
    assert!(rows.contains(&"01/action=succeed".to_string()), "{rows:?}");
    // Executed again: the typed result DTM stored, and nothing runs.
    let receipt: Receipt = settled(|| execute("typed-transfer", &gid, Transfer { amount: 30 }))
        .await
        .unwrap();
    let quote = Quote {
        fee: 2,
        note: "standard".into(),
    };
    assert_eq!(receipt, Receipt { charged: 32, quote });
    assert_eq!(quotes(&gid), 1);
    assert_eq!(busi().calls(&gid).len(), 2);
}

#[tokio::test]
async fn a_record_of_another_type_is_a_typed_error() {
    let gid = gid("wf-typed-change");
    busi().script(&gid, "TransIn", [Outcome::Error]);
    let err = execute::<()>("typed-change", &gid, Transfer { amount: 1 })
        .await
        .unwrap_err();
    assert!(!err.is_failure(), "{err}");
    assert_eq!(quotes(&gid), 1);

    // The new code's first step returns a u32: the recorded quote does not decode into it.
    wf_env().changed.store(true, Ordering::SeqCst);
    let err = execute::<()>("typed-change", &gid, Transfer { amount: 1 })
        .await
        .unwrap_err();
    wf_env().changed.store(false, Ordering::SeqCst);
    match &err {
        Error::RecordType {
            gid: g,
            branch,
            op,
            type_name,
            ..
        } => {
            assert_eq!(
                (g.as_str(), branch.as_str(), op.as_str()),
                (gid.as_str(), "01", "action")
            );
            assert_eq!(*type_name, "u32");
        }
        other => panic!("expected RecordType: {other:?}"),
    }
    assert!(err.to_string().contains("is not a u32"), "{err}");
    // Nothing ran again: TransIn was called once (by the first run).
    assert_eq!(busi().handlers(&gid), ["TransIn"]);

    // The old code again: the workflow goes on from its records and commits.
    execute::<()>("typed-change", &gid, Transfer { amount: 1 })
        .await
        .unwrap();
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(quotes(&gid), 1);
}

#[tokio::test]
async fn an_input_of_another_type_is_refused_before_any_step() {
    let gid = gid("wf-typed-input");
    let (wfs, g) = (wf_env().wfs.clone(), gid.clone());
    let err = on_env(async move { wfs.execute("typed-change", &g, b"[1, 2]").await })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("typed-change") && text.contains(&gid),
        "{text}"
    );
    assert!(text.contains("Transfer"), "{text}");
    assert_eq!(quotes(&gid), 0);
    assert!(busi().calls(&gid).is_empty());
    // DTM holds it prepared (the input is stored before the function runs): stop it.
    dtm().force_stop(&gid).await.unwrap();
}

/// A workflow DTM would resume only after a minute finishes within seconds when the test
/// fast-forwards DTM's retry schedule (`dtm_testkit::wait::fast_forward`), on a DTM of its
/// own with a SQL store (the stores that act on a per-gid reschedule).
#[tokio::test]
async fn a_minute_long_retry_is_fast_forwarded_on_a_sql_store() {
    use dtm_testkit::{DtmServer, DtmServerConfig, Store};
    let store = Store::local_mysql("dtm_typed_ff");
    store.prepare().await.unwrap();
    let config = DtmServerConfig::default().with_store(store);
    let server = DtmServer::start_async(config).await.unwrap();
    let dtm = server.http_client().unwrap();
    let wfs = dtm_examples::demo::http_workflows(dtm.clone())
        .await
        .unwrap();
    let http = recording_http();
    let quotes: Arc<Mutex<HashMap<String, usize>>> = Default::default();
    // DTM's first callback would come a minute after the first run.
    let slow = WfOptions {
        trans: TransOptions::default().retry_interval(Duration::from_secs(60)),
        ..Default::default()
    };
    wfs.register_typed("typed-ff", slow, transfer(&http, &quotes))
        .unwrap();

    let gid = gid("wf-typed-ff");
    busi().script(&gid, "TransIn", [Outcome::Error]);
    let err = wfs
        .execute_typed::<_, Receipt>("typed-ff", &gid, &Transfer { amount: 5 })
        .await
        .unwrap_err();
    assert!(!err.is_failure(), "{err}");
    // Within 40 s, well before the minute DTM would wait: only the fast-forward explains it
    // (with `wait::status` instead, this wait runs out: checked).
    let succeed = dtmcli::TransStatus::Succeed;
    let q = dtm_testkit::wait::fast_forward(&dtm, &gid, succeed, Duration::from_secs(40))
        .await
        .unwrap();
    assert_eq!(q.transaction.unwrap().status, "succeed");
    assert_eq!(counted_step_runs(&quotes, &gid), 1);
    assert_eq!(busi().handlers(&gid), ["TransIn", "TransIn"]);
}
