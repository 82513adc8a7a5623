//! The example business service: bank transfers as DTM branches over HTTP.
//!
//! Every route is `POST|GET /api/busi/<Handler>`:
//!
//! | handler | used as |
//! |---|---|
//! | `TransOut`, `TransIn` | saga / msg actions |
//! | `TransOutRevert`, `TransInRevert` | saga compensations |
//! | `TransOutTry`, `TransOutConfirm`, `TransOutCancel` (and `TransIn*`) | TCC |
//! | `TransInTccNested` | a TCC try that opens a nested TCC (`TransInTry`/`Confirm`/`Cancel`) |
//! | `TransOutXa`, `TransInXa` | XA branches (a stub until the barrier crate's XA lands: it registers the branch with DTM and records phase 2) |
//! | `QueryPrepared` | msg back-check |
//!
//! A handler answers success unless told otherwise, either per request by the JSON body
//! (`{"amount":30,"trans_out_result":"FAILURE"}`: `trans_out_result` applies to
//! `TransOut`/`TransOutTry`/`TransOutXa`, `trans_in_result` to the `TransIn` ones; values
//! `SUCCESS`, `FAILURE`, `ONGOING`, `ERROR`), or by a script of outcomes for one gid and
//! handler set with [`Busi::script`]. Every call is recorded ([`Busi::calls`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use dtmcli::{DtmClient, Op, Tcc, TransInfo};
use serde::{Deserialize, Serialize};

/// The request body of the bank operations.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BusiReq {
    /// Amount to move.
    pub amount: i64,
    /// Outcome the `TransOut*` action/try handlers give.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trans_out_result: String,
    /// Outcome the `TransIn*` action/try handlers give.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trans_in_result: String,
}

impl BusiReq {
    /// A request moving `amount` that succeeds everywhere.
    pub fn new(amount: i64) -> Self {
        BusiReq {
            amount,
            ..Default::default()
        }
    }
}

/// The `trans_out_result` / `trans_in_result` that makes a handler answer FAILURE when
/// `fail`, and succeed otherwise.
pub fn fails_if(fail: bool) -> String {
    if fail {
        "FAILURE".to_string()
    } else {
        String::new()
    }
}

/// What a handler answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200.
    Success,
    /// 409 FAILURE.
    Failure,
    /// 425 ONGOING.
    Ongoing,
    /// 500.
    Error,
    /// Sleep, then answer success (to provoke DTM's request timeout).
    Sleep(Duration),
}

impl Outcome {
    /// The outcome a bank handler gives when nothing is scripted: the action/try handlers
    /// of each side answer the word of the request for that side (`SUCCESS`, `FAILURE`,
    /// `ONGOING`, `ERROR`); undo handlers (`*Revert`, `*Cancel`, `*Confirm`) and unknown
    /// words answer success. Shared by the HTTP and the gRPC services.
    pub fn for_request(handler: &str, trans_out_result: &str, trans_in_result: &str) -> Outcome {
        let undo = handler.ends_with("Revert")
            || handler.ends_with("Cancel")
            || handler.ends_with("Confirm");
        let word = if undo {
            ""
        } else if handler.starts_with("TransOut") {
            trans_out_result
        } else if handler.starts_with("TransIn") {
            trans_in_result
        } else {
            ""
        };
        match word {
            "FAILURE" => Outcome::Failure,
            "ONGOING" => Outcome::Ongoing,
            "ERROR" => Outcome::Error,
            _ => Outcome::Success,
        }
    }
}

/// A recorded call of one of the example services.
pub(crate) trait Recorded: Clone {
    /// The gid of the call ("" if absent).
    fn gid(&self) -> &str;
    /// The handler (method) called.
    fn handler(&self) -> &str;
}

/// What a recording service keeps: every call, and the outcomes scripted per
/// (gid, handler), answered in order before the per-request rule.
#[derive(Debug)]
pub(crate) struct Recorder<C> {
    calls: Vec<C>,
    scripts: HashMap<(String, String), VecDeque<Outcome>>,
}

impl<C> Default for Recorder<C> {
    fn default() -> Self {
        Recorder {
            calls: Vec::new(),
            scripts: HashMap::new(),
        }
    }
}

impl<C: Recorded> Recorder<C> {
    pub(crate) fn script(
        &mut self,
        gid: &str,
        handler: &str,
        outcomes: impl IntoIterator<Item = Outcome>,
    ) {
        self.scripts
            .entry((gid.to_string(), handler.to_string()))
            .or_default()
            .extend(outcomes);
    }

    /// The next scripted outcome of `handler` for `gid`, if any is left.
    pub(crate) fn next_scripted(&mut self, gid: &str, handler: &str) -> Option<Outcome> {
        self.scripts
            .get_mut(&(gid.to_string(), handler.to_string()))
            .and_then(VecDeque::pop_front)
    }

    pub(crate) fn record(&mut self, call: C) {
        self.calls.push(call);
    }

    /// Every call for `gid`, in arrival order.
    pub(crate) fn calls(&self, gid: &str) -> Vec<C> {
        self.calls
            .iter()
            .filter(|c| c.gid() == gid)
            .cloned()
            .collect()
    }

    /// Every call that matches `pred`, in arrival order.
    pub(crate) fn calls_where(&self, pred: impl Fn(&C) -> bool) -> Vec<C> {
        self.calls.iter().filter(|c| pred(c)).cloned().collect()
    }

    /// How often `handler` was called for `gid`.
    pub(crate) fn count(&self, gid: &str, handler: &str) -> usize {
        self.calls
            .iter()
            .filter(|c| c.gid() == gid && c.handler() == handler)
            .count()
    }
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Handler name (`TransOut`...).
    pub handler: String,
    /// HTTP method.
    pub method: String,
    /// The transaction info of the query, when complete.
    pub info: Option<TransInfo>,
    /// The raw query string.
    pub query: String,
    /// The body as text.
    pub body: String,
    /// Request headers (lower-case names).
    pub headers: BTreeMap<String, String>,
    /// What the handler answered.
    pub outcome: Outcome,
}

impl Call {
    /// The gid of the call ("" if absent).
    pub fn gid(&self) -> &str {
        self.info.as_ref().map(|i| i.gid.as_str()).unwrap_or("")
    }
}

impl Recorded for Call {
    fn gid(&self) -> &str {
        Call::gid(self)
    }
    fn handler(&self) -> &str {
        &self.handler
    }
}

/// The service's state: a value, cloned into the router.
#[derive(Clone)]
pub struct Busi {
    state: Arc<Mutex<Recorder<Call>>>,
    dtm: DtmClient,
    base: Arc<Mutex<String>>,
}

impl std::fmt::Debug for Busi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Busi").finish_non_exhaustive()
    }
}

impl Busi {
    /// A service that uses `dtm` (its connection pool) for nested transactions.
    pub fn new(dtm: DtmClient) -> Self {
        Busi {
            state: Arc::new(Mutex::new(Recorder::default())),
            dtm,
            base: Arc::new(Mutex::new(String::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorder<Call>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The axum router serving `/api/busi/{handler}`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/busi/{handler}", any(handle))
            .with_state(self.clone())
            .layer(dtmcli::trace::BranchSpanLayer::http())
    }

    /// Serves on 127.0.0.1 (port 0 picks a free one) in a background task; returns the
    /// base URL (`http://127.0.0.1:<port>/api/busi`).
    pub async fn serve(&self, port: u16) -> std::io::Result<String> {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let addr = listener.local_addr()?;
        let base = format!("http://{addr}/api/busi");
        *self.base.lock().unwrap_or_else(|p| p.into_inner()) = base.clone();
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!("busi server stopped: {e}");
            }
        });
        Ok(base)
    }

    /// Makes the next calls of `handler` for `gid` answer these outcomes, in order.
    pub fn script(&self, gid: &str, handler: &str, outcomes: impl IntoIterator<Item = Outcome>) {
        self.lock().script(gid, handler, outcomes);
    }

    /// Every call recorded for `gid`, in arrival order.
    pub fn calls(&self, gid: &str) -> Vec<Call> {
        self.lock().calls(gid)
    }

    /// The handler names called for `gid`, in arrival order.
    pub fn handlers(&self, gid: &str) -> Vec<String> {
        self.calls(gid).into_iter().map(|c| c.handler).collect()
    }

    /// How often `handler` was called for `gid`.
    pub fn count(&self, gid: &str, handler: &str) -> usize {
        self.lock().count(gid, handler)
    }

    fn decide(&self, gid: &str, handler: &str, body: &str) -> Outcome {
        if let Some(o) = self.lock().next_scripted(gid, handler) {
            return o;
        }
        let req: BusiReq = serde_json::from_str(body).unwrap_or_default();
        Outcome::for_request(handler, &req.trans_out_result, &req.trans_in_result)
    }
}

async fn handle(
    State(busi): State<Busi>,
    Path(handler): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = query.unwrap_or_default();
    let info = TransInfo::from_query(&query).ok();
    let body = String::from_utf8_lossy(&body).into_owned();
    let gid = info.as_ref().map(|i| i.gid.clone()).unwrap_or_default();
    let outcome = busi.decide(&gid, &handler, &body);
    tracing::info!(%handler, gid, op = info.as_ref().map(|i| i.op.to_string()).unwrap_or_default(), ?outcome, "busi called");
    let headers_map = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    busi.lock().record(Call {
        handler: handler.clone(),
        method: method.to_string(),
        info: info.clone(),
        query,
        body: body.clone(),
        headers: headers_map,
        outcome: outcome.clone(),
    });
    if let Outcome::Sleep(d) = outcome {
        // Recorded before sleeping: a caller that times out drops this future.
        tokio::time::sleep(d).await;
    }
    let mut result: dtmcli::Result<()> = match outcome {
        Outcome::Success | Outcome::Sleep(_) => Ok(()),
        Outcome::Failure => Err(dtmcli::Error::failure(format!("{handler} refused"))),
        Outcome::Ongoing => Err(dtmcli::Error::ongoing(format!("{handler} not done yet"))),
        Outcome::Error => Err(dtmcli::Error::other(format!("{handler} broke"))),
    };
    if result.is_ok() {
        result = match (handler.as_str(), info) {
            ("TransInTccNested", Some(info)) => nested_tcc(&busi, &info, &body).await,
            ("TransOutXa" | "TransInXa", Some(info)) if info.op == Op::Action => {
                register_xa(&busi, &info).await
            }
            _ => Ok(()),
        };
    }
    match result {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"dtm_result":"SUCCESS"}"#,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// A try that opens sub-branches `<branch>01`... of the same global TCC.
async fn nested_tcc(busi: &Busi, info: &TransInfo, body: &str) -> dtmcli::Result<()> {
    let tcc = Tcc::nested(&busi.dtm, info)?;
    let base = busi.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let req: BusiReq = serde_json::from_str(body).unwrap_or_default();
    tcc.call_branch(
        &req,
        &format!("{base}/TransInTry"),
        &format!("{base}/TransInConfirm"),
        &format!("{base}/TransInCancel"),
    )
    .await
    .map(drop)
}

/// The XA stub: registers the branch with DTM (as the barrier crate's XA local transaction
/// will, between its local prepare and answer) so that DTM calls phase 2 on it.
async fn register_xa(busi: &Busi, info: &TransInfo) -> dtmcli::Result<()> {
    let dtm = info
        .dtm
        .as_deref()
        .ok_or_else(|| dtmcli::Error::invalid("XA branch called without `dtm`"))?;
    let url = info
        .phase2_url
        .as_deref()
        .ok_or_else(|| dtmcli::Error::invalid("XA branch called without `phase2_url`"))?;
    let client = busi.dtm.with_server(dtm)?;
    let fields = [
        ("gid", info.gid.as_str()),
        ("trans_type", "xa"),
        ("branch_id", info.branch_id.as_str()),
        ("url", url),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    client.register_branch(&fields).await
}
