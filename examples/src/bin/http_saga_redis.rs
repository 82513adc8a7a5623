//! Saga over HTTP whose branches keep balances in Redis, guarded by the Redis branch barrier.
//!
//! Three scenarios against a real DTM server and Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`):
//! 1. a transfer that succeeds: the balances move once;
//! 2. a transfer whose second step fails (insufficient balance): DTM compensates both steps,
//!    the failed one as a null compensation, and the balances are back where they started;
//! 3. DTM calling an action again (a lost answer): the barrier skips it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Json;
use dtm_barrier::{BranchBarrier, Outcome};
use dtm_examples::demo::{Demo, DemoError};
use dtmcli::{Op, TransInfo, TransType};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

/// How long barrier keys live: longer than any transaction.
const EXPIRE: Duration = Duration::from_secs(7 * 86400);

/// The body of every branch: move `amount` from the account `from` to the account `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Transfer {
    amount: i64,
    from: String,
    to: String,
}

#[derive(Clone)]
struct App {
    conn: MultiplexedConnection,
    calls: Arc<Mutex<Vec<String>>>,
}

/// `TransOut` / `TransIn` (saga actions) and `TransOutRevert` / `TransInRevert`
/// (compensations), each one guarded Redis adjustment.
async fn branch(
    State(app): State<App>,
    Path(handler): Path<String>,
    info: TransInfo,
    body: Bytes,
) -> Result<Json<serde_json::Value>, dtmcli::Error> {
    let t: Transfer = serde_json::from_slice(&body).map_err(dtmcli::Error::invalid)?;
    let (key, amount) = match handler.as_str() {
        "TransOut" => (&t.from, -t.amount),
        "TransOutRevert" => (&t.from, t.amount),
        "TransIn" => (&t.to, t.amount),
        "TransInRevert" => (&t.to, -t.amount),
        other => return Err(dtmcli::Error::invalid(format!("no handler {other}"))),
    };
    let bb = BranchBarrier::new(info.clone());
    let mut conn = app.conn.clone();
    let result = bb
        .redis_check_adjust_amount(&mut conn, key, amount, EXPIRE)
        .await;
    let said = match &result {
        Ok(Outcome::Executed(())) => format!("adjusted {key} by {amount}"),
        Ok(other) => format!("{other:?}: skipped"),
        Err(e) => format!("error: {e}"),
    };
    app.calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!(
            "{handler:<15} branch {} op {:<10} -> {said}",
            info.branch_id, info.op
        ));
    result?;
    Ok(Json(serde_json::json!({"dtm_result": "SUCCESS"})))
}

/// Serves the guarded branches on a free port; returns the base URL.
async fn serve(app: App) -> Result<String, DemoError> {
    let router = axum::Router::new()
        .route("/api/redis-busi/{handler}", post(branch))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/api/redis-busi", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("redis busi stopped: {e}");
        }
    });
    Ok(base)
}

async fn balances(conn: &mut MultiplexedConnection, t: &Transfer) -> Result<String, DemoError> {
    let from: Option<i64> = redis::cmd("GET").arg(&t.from).query_async(conn).await?;
    let to: Option<i64> = redis::cmd("GET").arg(&t.to).query_async(conn).await?;
    Ok(format!("{} = {from:?}, {} = {to:?}", t.from, t.to))
}

/// Prints and forgets the calls recorded so far.
fn tell_calls(app: &App) {
    for c in app
        .calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
    {
        println!("     {c}");
    }
}

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let app = App {
        conn: conn.clone(),
        calls: Arc::default(),
    };
    let base = serve(app.clone()).await?;
    println!("   guarded Redis branches at {base}\n");
    let u = |h: &str| format!("{base}/{h}");

    for (title, from_balance) in [
        ("saga that succeeds", 100),
        ("saga that rolls back (TransOut: insufficient balance)", 10),
    ] {
        let gid = d.dtm.new_gid().await?;
        let t = Transfer {
            amount: 30,
            from: format!("example:{gid}:from"),
            to: format!("example:{gid}:to"),
        };
        let _: () = redis::cmd("SET")
            .arg(&t.from)
            .arg(from_balance)
            .query_async(&mut conn)
            .await?;
        let _: () = redis::cmd("SET")
            .arg(&t.to)
            .arg(0)
            .query_async(&mut conn)
            .await?;
        println!("== {title}: {gid}");
        println!("   before: {}", balances(&mut conn, &t).await?);
        d.dtm
            .saga(&gid)
            .add(&u("TransIn"), &u("TransInRevert"), &t)
            .add(&u("TransOut"), &u("TransOutRevert"), &t)
            .submit()
            .await?;
        let q = d.finish(&gid).await?;
        tell_calls(&app);
        let status = q.transaction.map(|t| t.status).unwrap_or_default();
        println!("   final status: {status}");
        println!("   after:  {}", balances(&mut conn, &t).await?);

        if from_balance == 100 {
            println!("   DTM calls TransOut of {gid} again (its answer was lost):");
            let info = TransInfo::new(&gid, TransType::Saga, "02", Op::Action);
            d.dtm
                .call_branch(
                    &u("TransOut"),
                    &info,
                    &Default::default(),
                    Some(serde_json::to_string(&t)?),
                )
                .await?;
            tell_calls(&app);
            println!("   after:  {}", balances(&mut conn, &t).await?);
        }
        println!();
    }
    Ok(())
}
