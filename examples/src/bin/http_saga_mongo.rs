//! Saga over HTTP whose branches keep balances in MongoDB, each branch one MongoDB
//! transaction guarded by the MongoDB branch barrier.
//!
//! Three scenarios against a real DTM server and MongoDB (`MONGO_URL`, default
//! `mongodb://127.0.0.1:27017/?directConnection=true`; a replica set, for transactions):
//! 1. a transfer that succeeds: the balances move once;
//! 2. a transfer whose second step fails (insufficient balance, so its transaction and its
//!    barrier document are rolled back): DTM compensates both steps, the failed one as a
//!    null compensation, and the balances are back where they started;
//! 3. DTM calling an action again (a lost answer): the barrier skips it.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Json;
use dtm_barrier::{BranchBarrier, Outcome, TableName};
use dtm_examples::demo::{Demo, DemoError};
use dtmcli::{Op, TransInfo, TransType};
use mongodb::bson::{doc, Document};
use mongodb::{Client, ClientSession, Collection};
use serde::{Deserialize, Serialize};

fn accounts(client: &Client) -> Collection<Document> {
    client.database("dtm_busi").collection("example_account")
}

/// The business: add `delta` to the account `key`, inside the session's transaction.
async fn adjust(s: &mut ClientSession, key: &str, delta: i64) -> dtm_barrier::Result<()> {
    let r = accounts(&s.client())
        .update_one(
            doc! {"_id": key, "balance": {"$gte": -delta}},
            doc! {"$inc": {"balance": delta}},
        )
        .session(&mut *s)
        .await?;
    if r.matched_count == 0 {
        return Err(dtm_barrier::Error::failure(format!(
            "account {key}: missing, or adding {delta} would make it negative"
        )));
    }
    Ok(())
}

/// The body of every branch: move `amount` from the account `from` to the account `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Transfer {
    amount: i64,
    from: String,
    to: String,
}

#[derive(Clone)]
struct App {
    client: Client,
    calls: Arc<Mutex<Vec<String>>>,
}

/// `TransOut` / `TransIn` (saga actions) and `TransOutRevert` / `TransInRevert`
/// (compensations), each one guarded MongoDB transaction.
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
    let k = key.clone();
    let result = bb
        .mongo_call(&app.client, move |s| {
            Box::pin(async move { adjust(s, &k, amount).await })
        })
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
        .route("/api/mongo-busi/{handler}", post(branch))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/api/mongo-busi", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("mongo busi stopped: {e}");
        }
    });
    Ok(base)
}

async fn balances(client: &Client, t: &Transfer) -> Result<String, DemoError> {
    let mut v = Vec::new();
    for key in [&t.from, &t.to] {
        let d = accounts(client).find_one(doc! {"_id": key}).await?;
        v.push(d.and_then(|d| d.get_i64("balance").ok()));
    }
    Ok(format!("{} = {:?}, {} = {:?}", t.from, v[0], t.to, v[1]))
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
    let url = std::env::var("MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into());
    let client = Client::with_uri_str(&url).await?;
    // The unique index the barrier relies on (dtm_barrier.barrier), as Go's mongo.js.
    dtm_barrier::mongo::create_barrier_index(&client, &TableName::default()).await?;
    let app = App {
        client: client.clone(),
        calls: Arc::default(),
    };
    let base = serve(app.clone()).await?;
    println!("   guarded MongoDB branches at {base}\n");
    let u = |h: &str| format!("{base}/{h}");

    for (title, from_balance) in [
        ("saga that succeeds", 100_i64),
        ("saga that rolls back (TransOut: insufficient balance)", 10),
    ] {
        let gid = d.dtm.new_gid().await?;
        let t = Transfer {
            amount: 30,
            from: format!("example:{gid}:from"),
            to: format!("example:{gid}:to"),
        };
        accounts(&client)
            .insert_many([
                doc! {"_id": &t.from, "balance": from_balance},
                doc! {"_id": &t.to, "balance": 0_i64},
            ])
            .await?;
        println!("== {title}: {gid}");
        println!("   before: {}", balances(&client, &t).await?);
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
        println!("   after:  {}", balances(&client, &t).await?);

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
            println!("   after:  {}", balances(&client, &t).await?);
        }
        println!();
    }
    Ok(())
}
