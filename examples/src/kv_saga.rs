//! The saga scenarios of the Redis and MongoDB barrier examples (`http_saga_redis`,
//! `http_saga_mongo`), and the business they share with the barrier tests: balances kept in
//! a barrier store ([`Balances`], implemented by `mongodb::Client` and
//! `RedisStore<MultiplexedConnection>`), one balance adjusted under the branch barrier per
//! branch (a guarded call around a MongoDB update; Redis's own guarded adjustment). This
//! module runs the same three scenarios on either store against a real DTM server:
//!
//! 1. a transfer that succeeds: the balances move once;
//! 2. a transfer whose second step fails (insufficient balance): DTM compensates both steps,
//!    the failed one as a null compensation, and the balances are back where they started;
//! 3. DTM calling an action again (a lost answer): the barrier skips it.

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Json;
use dtm_barrier::redis::RedisStore;
use dtm_barrier::{BarrierStore, BranchBarrier, Outcome};
use dtmcli::{Op, TransInfo, TransType};
use mongodb::bson::{doc, Document};
use mongodb::{ClientSession, Collection};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use crate::demo::{Demo, DemoError};

/// Balances kept in a barrier store: what is specific to the business.
pub trait Balances: BarrierStore + Clone + 'static {
    /// The store's name in messages and URLs (`redis`, `mongo`).
    const NAME: &'static str;

    /// Adds `delta` to the account `key` under the branch barrier `bb` (each call takes the
    /// barrier's next barrier id); a missing account or a balance that would go negative is
    /// a DTM failure.
    fn adjust(
        &self,
        bb: &BranchBarrier,
        key: String,
        delta: i64,
    ) -> impl Future<Output = dtm_barrier::Result<Outcome<()>>> + Send;

    /// Creates the account `key` with `balance`, or resets it.
    fn open(&self, key: &str, balance: i64) -> impl Future<Output = Result<(), DemoError>> + Send;

    /// The balance of `key`, if the account exists.
    fn balance(&self, key: &str) -> impl Future<Output = Result<Option<i64>, DemoError>> + Send;
}

/// The MongoDB accounts: documents `{_id: key, balance}`.
fn mongo_accounts(client: &mongodb::Client) -> Collection<Document> {
    client.database("dtm_busi").collection("example_account")
}

/// The MongoDB business: adds `delta` to the account `key` inside the session's
/// transaction; a missing account or a balance that would go negative is a DTM failure
/// (which rolls the barrier documents back with it).
pub async fn mongo_adjust(
    session: &mut ClientSession,
    key: &str,
    delta: i64,
) -> dtm_barrier::Result<()> {
    let r = mongo_accounts(&session.client())
        .update_one(
            doc! {"_id": key, "balance": {"$gte": -delta}},
            doc! {"$inc": {"balance": delta}},
        )
        .session(&mut *session)
        .await?;
    if r.matched_count == 0 {
        return Err(dtm_barrier::Error::failure(format!(
            "account {key}: missing, or adding {delta} would make it negative"
        )));
    }
    Ok(())
}

impl Balances for mongodb::Client {
    const NAME: &'static str = "mongo";

    /// One MongoDB transaction: the barrier documents and [`mongo_adjust`].
    async fn adjust(
        &self,
        bb: &BranchBarrier,
        key: String,
        delta: i64,
    ) -> dtm_barrier::Result<Outcome<()>> {
        bb.call(self, move |s| {
            Box::pin(async move { mongo_adjust(s, &key, delta).await })
        })
        .await
    }

    async fn open(&self, key: &str, balance: i64) -> Result<(), DemoError> {
        mongo_accounts(self)
            .replace_one(doc! {"_id": key}, doc! {"_id": key, "balance": balance})
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn balance(&self, key: &str) -> Result<Option<i64>, DemoError> {
        let d = mongo_accounts(self).find_one(doc! {"_id": key}).await?;
        Ok(d.and_then(|d| d.get_i64("balance").ok()))
    }
}

impl Balances for RedisStore<MultiplexedConnection> {
    const NAME: &'static str = "redis";

    /// Redis's guarded adjustment: the barrier key and the balance change in one Lua script.
    async fn adjust(
        &self,
        bb: &BranchBarrier,
        key: String,
        delta: i64,
    ) -> dtm_barrier::Result<Outcome<()>> {
        bb.check_adjust_amount(self, &key, delta).await
    }

    async fn open(&self, key: &str, balance: i64) -> Result<(), DemoError> {
        let mut conn = self.connection().clone();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(balance)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn balance(&self, key: &str) -> Result<Option<i64>, DemoError> {
        let mut conn = self.connection().clone();
        Ok(redis::cmd("GET").arg(key).query_async(&mut conn).await?)
    }
}

/// The body of every branch: move `amount` from the account `from` to the account `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transfer {
    /// Amount to move.
    pub amount: i64,
    /// Debited account.
    pub from: String,
    /// Credited account.
    pub to: String,
}

impl Transfer {
    /// A transfer of `amount` between two accounts named after the gid (`acct-<gid>-from`,
    /// `acct-<gid>-to`: outside the `<gid>-*` space of the Redis barrier keys).
    pub fn new(gid: &str, amount: i64) -> Self {
        Transfer {
            amount,
            from: format!("acct-{gid}-from"),
            to: format!("acct-{gid}-to"),
        }
    }

    /// The account `handler` adjusts and by how much: `TransOut` / `TransIn` (saga
    /// actions) and `TransOutRevert` / `TransInRevert` (their compensations).
    pub fn leg(&self, handler: &str) -> Option<(&str, i64)> {
        match handler {
            "TransOut" => Some((&self.from, -self.amount)),
            "TransOutRevert" => Some((&self.from, self.amount)),
            "TransIn" => Some((&self.to, self.amount)),
            "TransInRevert" => Some((&self.to, -self.amount)),
            _ => None,
        }
    }
}

#[derive(Clone)]
struct App<S> {
    store: S,
    calls: Arc<Mutex<Vec<String>>>,
}

impl<S> App<S> {
    fn record(&self, line: String) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    /// Prints and forgets the calls recorded so far.
    fn tell_calls(&self) {
        for c in self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            println!("     {c}");
        }
    }
}

/// One guarded branch handler for the four operations.
async fn branch<S: Balances>(
    State(app): State<App<S>>,
    Path(handler): Path<String>,
    info: TransInfo,
    body: Bytes,
) -> Result<Json<serde_json::Value>, dtmcli::Error> {
    let t: Transfer = serde_json::from_slice(&body).map_err(dtmcli::Error::invalid)?;
    let (key, amount) = t
        .leg(&handler)
        .ok_or_else(|| dtmcli::Error::invalid(format!("no handler {handler}")))?;
    let bb = BranchBarrier::new(info.clone());
    let result = app.store.adjust(&bb, key.to_string(), amount).await;
    let said = match &result {
        Ok(Outcome::Executed(())) => format!("adjusted {key} by {amount}"),
        Ok(other) => format!("{other:?}: skipped"),
        Err(e) => format!("error: {e}"),
    };
    app.record(format!(
        "{handler:<15} branch {} op {:<10} -> {said}",
        info.branch_id, info.op
    ));
    result?;
    Ok(Json(serde_json::json!({"dtm_result": "SUCCESS"})))
}

async fn balances<S: Balances>(store: &S, t: &Transfer) -> Result<String, DemoError> {
    let (from, to) = (store.balance(&t.from).await?, store.balance(&t.to).await?);
    Ok(format!("{} = {from:?}, {} = {to:?}", t.from, t.to))
}

/// Starts DTM and the guarded branches on `store`, then runs the three scenarios.
pub async fn run<S: Balances>(store: S) -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let app = App {
        store: store.clone(),
        calls: Arc::default(),
    };
    let path = format!("/api/{}-busi", S::NAME);
    let router = axum::Router::new()
        .route(&format!("{path}/{{handler}}"), post(branch::<S>))
        .with_state(app.clone());
    let base = format!("{}{path}", crate::demo::serve(router).await?);
    println!("   guarded {} branches at {base}\n", S::NAME);
    let u = |h: &str| format!("{base}/{h}");

    for (title, from_balance) in [
        ("saga that succeeds", 100),
        ("saga that rolls back (TransOut: insufficient balance)", 10),
    ] {
        let gid = d.dtm.new_gid().await?;
        let t = Transfer::new(&gid, 30);
        store.open(&t.from, from_balance).await?;
        store.open(&t.to, 0).await?;
        println!("== {title}: {gid}");
        println!("   before: {}", balances(&store, &t).await?);
        d.dtm
            .saga(&gid)
            .add(&u("TransIn"), &u("TransInRevert"), &t)
            .add(&u("TransOut"), &u("TransOutRevert"), &t)
            .submit()
            .await?;
        let q = d.finish(&gid).await?;
        app.tell_calls();
        let status = q.transaction.map(|t| t.status).unwrap_or_default();
        println!("   final status: {status}");
        println!("   after:  {}", balances(&store, &t).await?);

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
            app.tell_calls();
            println!("   after:  {}", balances(&store, &t).await?);
        }
        println!();
    }
    Ok(())
}
