//! The branch service of the chaos suite (`tests/tests/chaos_suite/chaos.rs`), run as a child process
//! so that the suite can SIGKILL it and start it again on the same port.
//!
//! `chaos_bank <port>` serves on 127.0.0.1:
//! - `POST /leg/{backend}/{out|in}?gid=..&trans_type=..&branch_id=..&op=..` with a
//!   [`Leg`] body: the guarded debit (`out`) or credit (`in`) of the leg's account on
//!   `backend` (`mysql`, `postgres`, `redis`, `mongo`); undo ops (compensate, cancel,
//!   rollback) reverse it, confirm only writes its barrier record;
//! - `GET|POST /qp/{backend}?gid=..`: the msg back-check on `backend`.
//!
//! Faults, drawn per request with the probabilities of `$CHAOS_P_500_BEFORE`,
//! `$CHAOS_P_500_AFTER` and `$CHAOS_P_KILL_CONN`: a 500 before the handler runs, a 500 after
//! it committed, and (MariaDB and PostgreSQL) the local transaction's connection killed from
//! a second connection before the commit. A leg with `fail: true` answers FAILURE on its
//! `in` action / try, after its write. Each injected fault is printed as `FAULT <kind> <gid> <branch_id>/<op>`;
//! `READY` once it serves.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use dtm_barrier::BranchBarrier;
use dtm_tests::chaos::{leg_delta, Backend, Leg, Sabotage, Stores};
use dtmcli::{Op, TransInfo};
use tracing::Instrument;

struct App {
    stores: Stores,
    rng: AtomicU64,
    p_500_before: f64,
    p_500_after: f64,
    p_kill_conn: f64,
}

impl App {
    /// A uniform number in [0, 1) (splitmix64 on an atomic counter).
    fn roll(&self) -> f64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.roll() < p
    }
}

fn fault(kind: &str, info: &TransInfo) {
    println!("FAULT {kind} {} {}/{}", info.gid, info.branch_id, info.op);
    let _ = std::io::stdout().flush();
}

fn injected_500(when: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": format!("chaos: injected 500 {when}") })),
    )
        .into_response()
}

fn success() -> Response {
    Json(serde_json::json!({ "dtm_result": "SUCCESS" })).into_response()
}

async fn leg(
    State(app): State<Arc<App>>,
    Path((backend, dir)): Path<(String, String)>,
    info: TransInfo,
    body: Bytes,
) -> Response {
    if app.chance(app.p_500_before) {
        fault("500_before", &info);
        return injected_500("before the handler");
    }
    // Names the transaction in every line logged below (the harness greps the log by gid).
    let span = tracing::warn_span!("leg", gid = %info.gid, branch = %info.branch_id, op = %info.op);
    async move { leg_inner(&app, &backend, &dir, info, body).await }
        .instrument(span)
        .await
}

async fn leg_inner(app: &App, backend: &str, dir: &str, info: TransInfo, body: Bytes) -> Response {
    let result = async {
        let backend = Backend::parse(backend)
            .ok_or_else(|| dtmcli::Error::invalid(format!("unknown backend {backend}")))?;
        let leg: Leg = serde_json::from_slice(&body).map_err(dtmcli::Error::invalid)?;
        let delta = leg_delta(dir, &info.op, leg.amount)
            .ok_or_else(|| dtmcli::Error::invalid(format!("no {dir} leg for op {}", info.op)))?;
        let sabotage = Sabotage {
            fail: leg.fail && dir == "in" && matches!(info.op, Op::Action | Op::Try),
            kill_connection: backend.is_sql() && delta != 0 && app.chance(app.p_kill_conn),
        };
        if sabotage.kill_connection {
            fault("db_conn_kill", &info);
        }
        let bb = BranchBarrier::new(info.clone());
        app.stores
            .adjust(&bb, backend, &leg.account, delta, sabotage)
            .await
            .map_err(dtmcli::Error::from)
    }
    .await;
    match result {
        Ok(_) if app.chance(app.p_500_after) => {
            fault("500_after", &info);
            injected_500("after the handler committed")
        }
        Ok(_) => success(),
        Err(e) => e.into_response(),
    }
}

async fn query_prepared(
    State(app): State<Arc<App>>,
    Path(backend): Path<String>,
    info: TransInfo,
) -> Response {
    if app.chance(app.p_500_before) {
        fault("500_before", &info);
        return injected_500("before the back-check");
    }
    let bb = BranchBarrier::new(info);
    let result = match Backend::parse(&backend) {
        Some(b) => app.stores.query_prepared(&bb, b).await,
        None => Err(dtm_barrier::Error::Config(format!(
            "unknown backend {backend}"
        ))),
    };
    match result {
        Ok(()) => success(),
        Err(e) => dtmcli::Error::from(e).into_response(),
    }
}

fn probability(name: &str) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or("usage: chaos_bank <port>")?
        .parse()?;
    // Warnings (a branch's hidden internal error, for one) go to stderr: the harness keeps it
    // as the bank log it prints with a failure.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let stores = Stores::connect(40).await?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        ^ u64::from(std::process::id()) << 32;
    let app = Arc::new(App {
        stores,
        rng: AtomicU64::new(seed),
        p_500_before: probability("CHAOS_P_500_BEFORE"),
        p_500_after: probability("CHAOS_P_500_AFTER"),
        p_kill_conn: probability("CHAOS_P_KILL_CONN"),
    });
    let router = Router::new()
        .route("/leg/{backend}/{dir}", post(leg))
        .route("/qp/{backend}", any(query_prepared))
        .with_state(app);
    // The previous process on this port was just killed: its port may take a moment.
    let mut attempt = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(e) if attempt < 100 => {
                attempt += 1;
                eprintln!("chaos_bank: bind 127.0.0.1:{port}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    println!("READY");
    let _ = std::io::stdout().flush();
    axum::serve(listener, router).await?;
    Ok(())
}
