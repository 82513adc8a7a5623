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

    /// Answers as this outcome says (sleeping first for [`Outcome::Sleep`]): what the
    /// handler then does, or its refusal as a DTM error.
    pub(crate) async fn answer(&self, handler: &str) -> dtmcli::Result<()> {
        match self {
            Outcome::Success => Ok(()),
            Outcome::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            Outcome::Failure => Err(dtmcli::Error::failure(format!("{handler} refused"))),
            Outcome::Ongoing => Err(dtmcli::Error::ongoing(format!("{handler} not done yet"))),
            Outcome::Error => Err(dtmcli::Error::other(format!("{handler} broke"))),
        }
    }
}

/// What a recording service keeps, shared by its clones: every call (with its gid and
/// handler), the outcomes scripted per (gid, handler), answered in order before the
/// per-request rule, and the base URL the service is served at.
pub(crate) struct Recording<C> {
    state: Arc<Mutex<Recorder<C>>>,
    base: Arc<Mutex<String>>,
}

// Opaque: the recorded calls would fill any debug output of a service.
impl<C> std::fmt::Debug for Recording<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").finish_non_exhaustive()
    }
}

// Not derived: `C` need not be `Clone`.
impl<C> Clone for Recording<C> {
    fn clone(&self) -> Self {
        Recording {
            state: self.state.clone(),
            base: self.base.clone(),
        }
    }
}

impl<C> Default for Recording<C> {
    fn default() -> Self {
        Recording {
            state: Arc::new(Mutex::new(Recorder {
                calls: Vec::new(),
                scripts: HashMap::new(),
            })),
            base: Arc::default(),
        }
    }
}

/// The records behind a [`Recording`], under its lock.
#[derive(Debug)]
pub(crate) struct Recorder<C> {
    /// (gid, handler, call), in arrival order.
    calls: Vec<(String, String, C)>,
    scripts: HashMap<(String, String), VecDeque<Outcome>>,
}

impl<C: Clone> Recording<C> {
    /// The records (a poisoned lock is taken over: a panicking handler loses no record).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Recorder<C>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The base URL the service is served at ("" before it is).
    pub(crate) fn base(&self) -> String {
        self.base.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets the base URL, once the service is bound.
    pub(crate) fn set_base(&self, base: &str) {
        *self.base.lock().unwrap_or_else(|p| p.into_inner()) = base.to_string();
    }

    /// What `handler` answers for `gid`: the next scripted outcome, else the request's word
    /// for its side ([`Outcome::for_request`]).
    pub(crate) fn decide(
        &self,
        gid: &str,
        handler: &str,
        trans_out_result: &str,
        trans_in_result: &str,
    ) -> Outcome {
        let scripted = self
            .lock()
            .scripts
            .get_mut(&(gid.to_string(), handler.to_string()))
            .and_then(VecDeque::pop_front);
        scripted.unwrap_or_else(|| Outcome::for_request(handler, trans_out_result, trans_in_result))
    }
}

impl<C: Clone> Recorder<C> {
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

    pub(crate) fn record(&mut self, gid: &str, handler: &str, call: C) {
        self.calls
            .push((gid.to_string(), handler.to_string(), call));
    }

    /// The records (gid, handler, call) of `gid`, in arrival order.
    fn of<'a>(&'a self, gid: &'a str) -> impl Iterator<Item = &'a (String, String, C)> + 'a {
        self.calls.iter().filter(move |(g, _, _)| g == gid)
    }

    /// Every call for `gid`, in arrival order.
    pub(crate) fn calls(&self, gid: &str) -> Vec<C> {
        self.of(gid).map(|(_, _, c)| c.clone()).collect()
    }

    /// Every call that matches `pred`, in arrival order.
    pub(crate) fn calls_where(&self, pred: impl Fn(&C) -> bool) -> Vec<C> {
        self.calls
            .iter()
            .map(|(_, _, c)| c)
            .filter(|c| pred(c))
            .cloned()
            .collect()
    }

    /// The handlers called for `gid`, in arrival order.
    pub(crate) fn handlers(&self, gid: &str) -> Vec<String> {
        self.of(gid).map(|(_, h, _)| h.clone()).collect()
    }

    /// How often `handler` was called for `gid`.
    pub(crate) fn count(&self, gid: &str, handler: &str) -> usize {
        self.of(gid).filter(|(_, h, _)| h == handler).count()
    }
}

/// The recording API of a service whose field `state` is its [`Recording`] of `$call`s:
/// the same on the HTTP and the gRPC service.
macro_rules! recording_api {
    ($call:ty) => {
        /// Makes the next calls of `handler` for `gid` answer these outcomes, in order.
        pub fn script(
            &self,
            gid: &str,
            handler: &str,
            outcomes: impl IntoIterator<Item = $crate::busi::Outcome>,
        ) {
            self.state.lock().script(gid, handler, outcomes);
        }

        /// Every call recorded for `gid`, in arrival order.
        pub fn calls(&self, gid: &str) -> Vec<$call> {
            self.state.lock().calls(gid)
        }

        /// The handler names called for `gid`, in arrival order.
        pub fn handlers(&self, gid: &str) -> Vec<String> {
            self.state.lock().handlers(gid)
        }

        /// How often `handler` was called for `gid`.
        pub fn count(&self, gid: &str, handler: &str) -> usize {
            self.state.lock().count(gid, handler)
        }
    };
}
pub(crate) use recording_api;

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

/// The service's state: a value, cloned into the router.
#[derive(Debug, Clone)]
pub struct Busi {
    state: Recording<Call>,
    dtm: DtmClient,
}

impl Busi {
    /// A service that uses `dtm` (its connection pool) for nested transactions.
    pub fn new(dtm: DtmClient) -> Self {
        Busi {
            state: Recording::default(),
            dtm,
        }
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
        let (listener, addr) = crate::demo::bind(port).await?;
        let base = format!("http://{addr}/api/busi");
        // Known before the first call: the nested TCC try builds its URLs from it.
        self.state.set_base(&base);
        crate::demo::spawn_http(listener, self.router(), "busi server");
        Ok(base)
    }

    recording_api!(Call);
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
    let req: BusiReq = serde_json::from_str(&body).unwrap_or_default();
    let outcome = busi
        .state
        .decide(&gid, &handler, &req.trans_out_result, &req.trans_in_result);
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
    busi.state.lock().record(
        &gid,
        &handler,
        Call {
            handler: handler.clone(),
            method: method.to_string(),
            info: info.clone(),
            query,
            body: body.clone(),
            headers: headers_map,
            outcome: outcome.clone(),
        },
    );
    // Recorded before answering: a caller that times out drops this future.
    let mut result = outcome.answer(&handler).await;
    if result.is_ok() {
        result = match (handler.as_str(), info) {
            ("TransInTccNested", Some(info)) => nested_tcc(&busi, &info, &req).await,
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
async fn nested_tcc(busi: &Busi, info: &TransInfo, req: &BusiReq) -> dtmcli::Result<()> {
    let tcc = Tcc::nested(&busi.dtm, info)?;
    let base = busi.state.base();
    tcc.call_branch(
        req,
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
    let (dtm, url) = xa_registration(info)?;
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

/// The DTM server and the phase-2 URL an XA branch call carries: where the XA stubs of the
/// HTTP and the gRPC service register the branch.
pub(crate) fn xa_registration(info: &TransInfo) -> dtmcli::Result<(&str, &str)> {
    let missing = |what: &str| dtmcli::Error::invalid(format!("XA branch called without {what}"));
    let dtm = info
        .dtm
        .as_deref()
        .ok_or_else(|| missing("its DTM server (dtm)"))?;
    let url = info
        .phase2_url
        .as_deref()
        .ok_or_else(|| missing("its phase-2 URL (phase2_url)"))?;
    Ok((dtm, url))
}
