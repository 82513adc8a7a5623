//! The guarded business service of the barrier suite: the same handlers and call log over
//! any barrier store, with the business of the examples ([`Balances`]: one guarded
//! adjustment of a balance).
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::any;
use axum::Json;
use dtm_barrier::{BarrierConfig, BranchBarrier, Outcome};
pub use dtm_examples::kv_bank::{Balances, Transfer};
use dtmcli::{Op, TransInfo};

/// The barrier table of the retention scenario, apart from the one every other scenario
/// shares (a purge there would remove their rows under their feet). In a schema of its own:
/// on PostgreSQL the Go SDK's DDL names its unique constraint `uniq_barrier`, once per
/// schema.
pub const RETENTION_TABLE: &str = "dtm_barrier_retention.barrier";

/// One handled request: gid, handler, op, and what the barrier said.
#[derive(Debug, Clone)]
pub struct Rec {
    pub gid: String,
    pub handler: String,
    pub op: Op,
    pub result: Result<Vec<Outcome<()>>, String>,
}

#[derive(Clone)]
struct App<S> {
    store: S,
    log: Arc<Mutex<Vec<Rec>>>,
    /// The barrier's table, when not the default one.
    config: Option<BarrierConfig>,
}

/// What every guarded service of the binary recorded (one per store).
fn log() -> &'static Arc<Mutex<Vec<Rec>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<Rec>>>> = OnceLock::new();
    LOG.get_or_init(Default::default)
}

/// Starts (once per test binary and `path`) the guarded service at `path` on its own
/// runtime, which outlives every test's, over the store `connect` makes there; returns its
/// base URL.
fn service<S, F, Fut>(path: &'static str, connect: F) -> String
where
    S: Balances,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = S>,
{
    static SERVICES: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());
    let mut services = SERVICES.lock().unwrap();
    if let Some((_, base)) = services.iter().find(|(p, _)| *p == path) {
        return base.clone();
    }
    let app_log = log().clone();
    let base = crate::support::on_own_runtime(move || async move {
        let app = App {
            store: connect().await,
            log: app_log,
            config: None,
        };
        let retention = App {
            config: Some(BarrierConfig::with_table(RETENTION_TABLE).unwrap()),
            ..app.clone()
        };
        let path_retention = format!("{path}/retention/{{handler}}");
        let router = axum::Router::new()
            .route(&format!("{path}/{{handler}}"), any(handle::<S>))
            .with_state(app)
            .merge(
                axum::Router::new()
                    .route(&path_retention, any(handle::<S>))
                    .with_state(retention),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}{path}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        base
    });
    services.push((path, base.clone()));
    base
}

/// The URL of `handler` on the service (started on first use).
pub fn url<S, F, Fut>(path: &'static str, connect: F, handler: &str) -> String
where
    S: Balances,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = S>,
{
    format!("{}/{handler}", service(path, connect))
}

/// What the services recorded for `gid`, in arrival order.
pub fn recs(gid: &str) -> Vec<Rec> {
    log()
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.gid == gid)
        .cloned()
        .collect()
}

/// The outcomes of the calls of `handler` for `gid`.
pub fn outcomes(gid: &str, handler: &str) -> Vec<Result<Vec<Outcome<()>>, String>> {
    recs(gid)
        .into_iter()
        .filter(|r| r.handler == handler)
        .map(|r| r.result)
        .collect()
}

async fn handle<S: Balances>(
    State(app): State<App<S>>,
    Path(handler): Path<String>,
    info: TransInfo,
    body: Bytes,
) -> Result<Json<serde_json::Value>, dtmcli::Error> {
    let bb = match &app.config {
        Some(c) => BranchBarrier::with_config(info.clone(), c.clone()),
        None => BranchBarrier::new(info.clone()),
    };
    let t: Option<Transfer> = serde_json::from_slice(&body).ok();
    let result = run(&app.store, &bb, &handler, t).await;
    app.log.lock().unwrap().push(Rec {
        gid: info.gid.clone(),
        handler,
        op: info.op.clone(),
        result: result
            .as_ref()
            .map(Clone::clone)
            .map_err(ToString::to_string),
    });
    result.map(|_| Json(serde_json::json!({"dtm_result": "SUCCESS"})))
}

async fn run<S: Balances>(
    store: &S,
    bb: &BranchBarrier,
    handler: &str,
    t: Option<Transfer>,
) -> Result<Vec<Outcome<()>>, dtmcli::Error> {
    let need = || {
        t.clone()
            .ok_or_else(|| dtmcli::Error::invalid("no transfer body"))
    };
    Ok(match handler {
        "TransOut" | "TransOutTry" => {
            let t = need()?;
            vec![store.adjust(bb, t.from, -t.amount).await?]
        }
        "TransOutRevert" | "TransOutCancel" => {
            let t = need()?;
            vec![store.adjust(bb, t.from, t.amount).await?]
        }
        "TransIn" => {
            let t = need()?;
            vec![store.adjust(bb, t.to, t.amount).await?]
        }
        "TransInRevert" => {
            let t = need()?;
            vec![store.adjust(bb, t.to, -t.amount).await?]
        }
        // The same barrier guards two local transactions: barrier ids 01 and 02.
        "TransInTwice" => {
            let t = need()?;
            let half = t.amount / 2;
            vec![
                store.adjust(bb, t.to.clone(), half).await?,
                store.adjust(bb, t.to, t.amount - half).await?,
            ]
        }
        "TransInTwiceRevert" => {
            let t = need()?;
            let half = t.amount / 2;
            vec![
                store.adjust(bb, t.to.clone(), -half).await?,
                store.adjust(bb, t.to, -(t.amount - half)).await?,
            ]
        }
        "TransOutConfirm" => vec![],
        "QueryPrepared" => {
            bb.query_prepared(store).await?;
            vec![]
        }
        other => return Err(dtmcli::Error::invalid(format!("no handler {other}"))),
    })
}
