//! The DTM HTTP client.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tracing::Instrument;

use crate::error::{truncate_body, Error, Result};
use crate::http::stack::HttpStack;
use crate::limits::{call_http_branch, clamp_timeout, read_answer, Limits};
use crate::redact::redact_url;
use crate::transport::{
    BranchRegistration, BranchResponse, DtmOp, Json, RegistrationKind, Transport,
};
use crate::trust::TrustedServers;
use crate::types::TransInfo;
use crate::wire::{QueryResult, TransRequest, WorkflowProgress};

/// The default URL of a local DTM server's HTTP API.
pub const DEFAULT_SERVER: &str = "http://localhost:36789/api/dtmsvr";

/// A client of one DTM server over HTTP.
///
/// It holds the server URL (including `/api/dtmsvr`) and one shared [`reqwest::Client`], so
/// connections are reused. Cloning is cheap and shares both; build one per server at start-up
/// and pass it around.
///
/// ```no_run
/// # async fn demo() -> dtmcli::Result<()> {
/// let dtm = dtmcli::DtmClient::new("http://localhost:36789/api/dtmsvr")?;
/// let gid = dtm.new_gid().await?;
/// dtm.saga(&gid)
///     .add("http://busi/TransOut", "http://busi/TransOutRevert", &serde_json::json!({"amount": 30}))
///     .add("http://busi/TransIn", "http://busi/TransInRevert", &serde_json::json!({"amount": 30}))
///     .submit()
///     .await?;
/// # Ok(()) }
/// ```
///
/// Every call it makes, to DTM and to branches, is bounded in time
/// ([`Limits::with_timeout`](crate::Limits::with_timeout)) and in answer size
/// ([`Limits::with_max_answer_bytes`](crate::Limits::with_max_answer_bytes)). Its `Debug` output and its errors show the
/// server URL without credentials. Calls DTM merely acknowledges (`prepare`, `submit`,
/// `abort`, `registerBranch`, the topic and admin calls) succeed only on DTM's own answer,
/// 200 with `{"dtm_result":"SUCCESS"}`; any other 200 (a proxy's page, an empty body) is
/// [`Error::Decode`].
#[derive(Clone)]
pub struct DtmClient {
    server: Arc<str>,
    /// `rpc.system` of its spans: `http`, or `jsonrpc` inside a JsonRpcClient.
    rpc_system: &'static str,
    /// The hot endpoints, parsed once.
    endpoints: Arc<Endpoints>,
    http: HttpStack,
    limits: Limits,
    trusted: Arc<TrustedServers>,
}

impl std::fmt::Debug for DtmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtmClient")
            .field("server", &redact_url(&self.server))
            .field("limits", &self.limits)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DtmClient`] with non-default settings.
pub struct DtmClientBuilder {
    server: String,
    http: Option<reqwest::Client>,
    #[cfg(feature = "middleware")]
    middleware: Option<reqwest_middleware::ClientWithMiddleware>,
    limits: Limits,
    trusted: TrustedServers,
}

impl std::fmt::Debug for DtmClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtmClientBuilder")
            .field("server", &redact_url(&self.server))
            .field("limits", &self.limits)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl DtmClientBuilder {
    /// Uses this `reqwest::Client` (with its middleware-free settings: proxies, TLS roots...)
    /// instead of building one.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Sends every call (to DTM and to branches) through this middleware stack, e.g. retries
    /// or auth; see [`HttpStack::with_middleware`] for how the bounds still apply.
    #[cfg(feature = "middleware")]
    pub fn middleware(mut self, client: reqwest_middleware::ClientWithMiddleware) -> Self {
        self.middleware = Some(client);
        self
    }

    /// The client's bounds: call and connect timeouts, answer cap, idle connections (see
    /// [`Limits`]; default `Limits::default()`).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The DTM servers the client agrees to switch to when a branch request names one
    /// (`dtm=` / `dtm-dtm`; default `TrustedServers::Own`: only this client's server). See
    /// `dtmcli::trust` for why.
    pub fn trusted_servers(mut self, trusted: TrustedServers) -> Self {
        self.trusted = trusted;
        self
    }

    /// Validates the URL and builds the client.
    pub fn build(self) -> Result<DtmClient> {
        let server = normalize_server(&self.server)?;
        let http = HttpStack::new(match self.http {
            Some(h) => h,
            None => crate::limits::http_client(&self.limits)?,
        });
        #[cfg(feature = "middleware")]
        let http = match self.middleware {
            Some(m) => http.with_middleware(m),
            None => http,
        };
        Ok(DtmClient {
            endpoints: Arc::new(Endpoints::new(&server)?),
            server: server.into(),
            rpc_system: "http",
            http,
            limits: self.limits,
            trusted: Arc::new(self.trusted),
        })
    }
}

fn normalize_server(s: &str) -> Result<String> {
    check_server_url(s, "/api/dtmsvr")?;
    Ok(s.trim_end_matches('/').to_string())
}

/// Checks a DTM URL whose API lives at `api_path` (`/api/dtmsvr`, `/api/json-rpc`): http(s),
/// and a path, since every call appends its operation to it. A server without one
/// (`http://localhost:36789`) would only fail later, with a 404 on the first call. Any other
/// path is accepted: a reverse proxy may map its own prefix to DTM's API.
pub(crate) fn check_server_url(s: &str, api_path: &str) -> Result<()> {
    let expected = format!("http(s)://host:port{api_path}");
    let parsed = url::Url::parse(s).map_err(|e| {
        Error::invalid(format!(
            "DTM server URL {:?} is not a URL ({e}): write {expected}",
            redact_url(s)
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid(format!(
            "DTM server URL {:?} must be {expected}",
            redact_url(s)
        )));
    }
    if parsed.path().trim_end_matches('/').is_empty() {
        return Err(Error::invalid(format!(
            "DTM server URL {:?} has no path: DTM's API is at {expected} (DTM's default is http://localhost:36789{api_path}), or at the path a reverse proxy maps to it",
            redact_url(s)
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Error::invalid(format!(
            "DTM server URL {:?} has a query or fragment, which the operation appended to it would follow: write {expected}",
            redact_url(s)
        )));
    }
    Ok(())
}

/// The URLs of the calls every transaction makes, parsed once per server rather than
/// formatted and parsed again on every call. No `Debug`: the URLs may carry credentials.
struct Endpoints {
    prepare: reqwest::Url,
    submit: reqwest::Url,
    abort: reqwest::Url,
    register_branch: reqwest::Url,
    prepare_workflow: reqwest::Url,
}

impl Endpoints {
    fn new(server: &str) -> Result<Self> {
        let url = |op: &str| {
            reqwest::Url::parse(&format!("{server}/{op}")).map_err(|e| {
                Error::invalid(format!("DTM server URL {:?}: {e}", redact_url(server)))
            })
        };
        Ok(Endpoints {
            prepare: url("prepare")?,
            submit: url("submit")?,
            abort: url("abort")?,
            register_branch: url("registerBranch")?,
            prepare_workflow: url("prepareWorkflow")?,
        })
    }

    fn get(&self, op: &str) -> Option<&reqwest::Url> {
        Some(match op {
            "prepare" => &self.prepare,
            "submit" => &self.submit,
            "abort" => &self.abort,
            "registerBranch" => &self.register_branch,
            "prepareWorkflow" => &self.prepare_workflow,
            _ => return None,
        })
    }
}

/// DTM's answer to `prepare`, `submit`, `abort` and `registerBranch`:
/// `{"dtm_result":"SUCCESS"}`.
#[derive(Deserialize)]
struct ResultBody {
    dtm_result: String,
}

/// DTM's answer to `resetCronTime` ([`DtmClient::reset_cron_time`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct CronReset {
    /// How many transactions were rescheduled for now.
    pub succeed_count: u64,
    /// More transactions matched than `limit` allowed.
    pub has_remaining: bool,
}

/// The DTM convention for a `message` field in error bodies.
#[derive(Deserialize)]
struct MessageBody {
    #[serde(default)]
    message: String,
}

impl DtmClient {
    /// A client for the server at `server` (for example `http://localhost:36789/api/dtmsvr`).
    ///
    /// The URL must be `http(s)://` with a path: DTM's `/api/dtmsvr`, or the prefix a
    /// reverse proxy maps to it. Without one (`http://localhost:36789`) it is
    /// [`Error::InvalidInput`], which names the expected form.
    pub fn new(server: impl Into<String>) -> Result<Self> {
        Self::builder(server).build()
    }

    /// A builder for a client of `server`.
    pub fn builder(server: impl Into<String>) -> DtmClientBuilder {
        DtmClientBuilder {
            server: server.into(),
            http: None,
            #[cfg(feature = "middleware")]
            middleware: None,
            limits: Limits::default(),
            trusted: TrustedServers::Own,
        }
    }

    /// A client of another DTM server sharing this one's connection pool and settings, for
    /// nested transactions and XA branches whose request names the server (`dtm=`).
    ///
    /// The request comes from whoever reached the branch, so the server must be one this
    /// client trusts ([`DtmClientBuilder::trusted_servers`]; by default only its own):
    /// otherwise [`Error::InvalidInput`], and nothing is sent. See [`crate::trust`].
    pub fn with_server(&self, server: &str) -> Result<Self> {
        let named = normalize_server(server)?;
        self.trusted.check(&self.server, &named, |s| {
            s.trim_end_matches('/').to_string()
        })?;
        if named == *self.server {
            return Ok(self.clone());
        }
        self.for_server(named, self.trusted.clone())
    }

    /// A client of `server` with this one's settings that also trusts every server of
    /// `cluster` (for [`crate::cluster::Cluster::http`]).
    pub(crate) fn member(&self, server: &str, cluster: &[&str]) -> Result<Self> {
        let named = normalize_server(server)?;
        let trusted = match &*self.trusted {
            TrustedServers::Any => TrustedServers::Any,
            TrustedServers::List(list) => TrustedServers::List(
                list.iter()
                    .cloned()
                    .chain(cluster.iter().map(|s| s.to_string()))
                    .collect(),
            ),
            _ => TrustedServers::list(cluster.iter().copied()),
        };
        self.for_server(named, Arc::new(trusted))
    }

    /// A client of the (normalised) server `named` with this one's settings and `trusted`.
    pub(crate) fn for_server(&self, named: String, trusted: Arc<TrustedServers>) -> Result<Self> {
        Ok(DtmClient {
            endpoints: Arc::new(Endpoints::new(&named)?),
            server: named.into(),
            rpc_system: self.rpc_system,
            http: self.http.clone(),
            limits: self.limits,
            trusted,
        })
    }

    /// The servers [`DtmClient::with_server`] accepts.
    pub fn trusted_servers(&self) -> &TrustedServers {
        &self.trusted
    }

    /// [`DtmClient::trusted_servers`], shared.
    pub(crate) fn trusted_shared(&self) -> Arc<TrustedServers> {
        self.trusted.clone()
    }

    /// The client's bounds: call and connect timeouts, answer cap.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The timeout of a call when the transaction sets none.
    pub fn timeout(&self) -> Duration {
        self.limits.timeout()
    }

    /// The largest answer body the client reads.
    pub fn max_answer_bytes(&self) -> usize {
        self.limits.max_answer_bytes()
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The same client, naming `system` as the `rpc.system` of its spans.
    pub(crate) fn with_rpc_system(mut self, system: &'static str) -> Self {
        self.rpc_system = system;
        self
    }

    /// The client requests are built with.
    pub fn http(&self) -> &reqwest::Client {
        self.http.client()
    }

    /// The HTTP stack calls are sent through (for the sibling crates).
    #[doc(hidden)]
    pub fn http_stack(&self) -> &HttpStack {
        &self.http
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.server, path)
    }

    /// Sends a request to DTM and returns the raw body of a success answer.
    /// `gid` names the transaction in the call's span ("" for calls about none).
    pub(crate) async fn send(
        &self,
        op: &'static str,
        gid: &str,
        req: reqwest::RequestBuilder,
        url: &str,
        timeout: Duration,
        keyword_check: bool,
    ) -> Result<Bytes> {
        let span = self.call_span(op, gid);
        let send = self.send_in(span, req, url, timeout, keyword_check);
        crate::metrics::dtm_call(op, self.rpc_system, send).await
    }

    /// The `dtm.call` span of a call to DTM.
    fn call_span(&self, op: &str, gid: &str) -> tracing::Span {
        crate::trace::call_span(self.rpc_system, op, gid, &self.server)
    }

    /// [`DtmClient::send`] in a span the caller made (so that it need not keep the gid).
    async fn send_in(
        &self,
        span: tracing::Span,
        req: reqwest::RequestBuilder,
        url: &str,
        timeout: Duration,
        keyword_check: bool,
    ) -> Result<Bytes> {
        async move {
            let mut req = req;
            for (k, v) in crate::trace::context_headers() {
                req = req.header(k, v);
            }
            let resp = self
                .http
                .send(url, req.timeout(clamp_timeout(timeout)))
                .await?;
            let status = resp.status().as_u16();
            let body = read_answer(url, resp, self.limits.max_answer_bytes()).await?;
            let text = String::from_utf8_lossy(&body);
            tracing::debug!(status, "dtm answered");
            let message = || {
                serde_json::from_slice::<MessageBody>(&body)
                    .ok()
                    .map(|m| m.message)
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| truncate_body(&text))
            };
            match status {
                409 => Err(Error::Failure(message())),
                425 => Err(Error::Ongoing(message())),
                200 if keyword_check && text.contains("FAILURE") => Err(Error::Failure(message())),
                200 => Ok(body.clone()),
                _ => Err(Error::Status {
                    url: redact_url(url).into_owned(),
                    status,
                    body: truncate_body(&text),
                }),
            }
        }
        .instrument(span)
        .await
    }

    pub(crate) fn decode<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| Error::Decode {
            url: redact_url(url).into_owned(),
            reason: e.to_string(),
            body: truncate_body(&String::from_utf8_lossy(body)),
        })
    }

    /// Accepts only DTM's success answer, `{"dtm_result":"SUCCESS"}`: a 200 from something
    /// else (a proxy's HTML page, an empty body) must not pass for a submitted transaction
    /// (or a done subscription, force-stop...).
    fn expect_success(url: &str, body: &[u8]) -> Result<()> {
        let r: ResultBody = Self::decode(url, body)?;
        if r.dtm_result == "SUCCESS" {
            return Ok(());
        }
        Err(Error::Decode {
            url: redact_url(url).into_owned(),
            reason: format!("dtm_result is {:?}, not \"SUCCESS\"", r.dtm_result),
            body: truncate_body(&String::from_utf8_lossy(body)),
        })
    }

    /// The timeout of a call for a transaction: its `request_timeout`, else the client's
    /// (see [`Limits::call_timeout`]).
    pub fn call_timeout(&self, request_timeout: Option<Duration>) -> Duration {
        self.limits.call_timeout(request_timeout)
    }

    fn timeout_for(&self, req: &TransRequest) -> Duration {
        self.limits
            .dtm_call_timeout(req.request_timeout, req.wait_result)
    }

    /// POSTs a global-transaction body to `<server>/<op>` and checks that DTM answered
    /// `{"dtm_result":"SUCCESS"}` (anything else is [`Error::Decode`]); returns that body.
    /// A gid [`crate::identity::check_gid`] refuses (an empty one...) is
    /// [`Error::InvalidInput`], and nothing is sent; so for `prepare`, `submit`, `abort` and
    /// `prepare_workflow`. The reads and admin calls refuse only an empty gid.
    pub async fn call(&self, op: &'static str, body: &TransRequest) -> Result<Bytes> {
        // Checked for the raw API; the modes checked before building the body. DTM would
        // answer an empty gid with a retryable 500.
        crate::identity::check_gid(&body.gid)?;
        self.trans_call(op, body).await
    }

    /// [`DtmClient::call`], with the body encoded before the returned future is first
    /// polled: the future does not borrow `body`, so a caller can drop it while waiting.
    fn trans_call<'a>(
        &'a self,
        op: &'static str,
        body: &TransRequest,
    ) -> impl Future<Output = Result<Bytes>> + Send + 'a {
        let (req, url) = self.post(op);
        let req = req.json(body);
        let timeout = self.timeout_for(body);
        let span = self.call_span(op, &body.gid);
        let call = async move {
            let answer = self.send_in(span, req, &url, timeout, true).await?;
            Self::expect_success(&url, &answer)?;
            Ok(answer)
        };
        crate::metrics::dtm_call(op, self.rpc_system, call)
    }

    /// A POST to `<server>/<op>`: a parsed endpoint for the calls every transaction makes.
    fn post(&self, op: &str) -> (reqwest::RequestBuilder, std::borrow::Cow<'_, str>) {
        match self.endpoints.get(op) {
            Some(u) => (self.http.client().post(u.clone()), u.as_str().into()),
            None => {
                let u = self.url(op);
                (self.http.client().post(&u), u.into())
            }
        }
    }

    /// `prepareWorkflow`: creates the workflow transaction, or returns the existing one and
    /// every recorded branch. Unlike the other calls, a body that merely mentions FAILURE (a
    /// stored rollback reason) is not an error.
    pub async fn prepare_workflow(&self, body: &TransRequest) -> Result<WorkflowProgress> {
        crate::identity::check_gid(&body.gid)?;
        let (req, url) = self.post("prepareWorkflow");
        let answer = self
            .send(
                "prepareWorkflow",
                &body.gid,
                req.json(body),
                &url,
                self.timeout_for(body),
                false,
            )
            .await?;
        Self::decode(&url, &answer)
    }

    /// Asks DTM for a new global id.
    pub async fn new_gid(&self) -> Result<String> {
        #[derive(Deserialize)]
        struct Gid {
            gid: String,
        }
        let (url, body, g) = self.get_json::<Gid>("newGid").await?;
        if g.gid.is_empty() {
            return Err(Error::Decode {
                url: redact_url(&url).into_owned(),
                reason: "empty gid".into(),
                body: truncate_body(&String::from_utf8_lossy(&body)),
            });
        }
        Ok(g.gid)
    }

    /// The transaction `gid` and its branches as the server stores them.
    pub async fn query(&self, gid: &str) -> Result<QueryResult> {
        crate::identity::check_gid_not_empty(gid)?;
        let url = self.url("query");
        let req = self.http.client().get(&url).query(&[("gid", gid)]);
        let body = self
            .send("query", gid, req, &url, self.limits.timeout(), false)
            .await?;
        Self::decode(&url, &body)
    }

    /// Waits until DTM holds transaction `gid` final, at most `timeout`: `Ok` once it is
    /// `succeed`, [`Error::Failure`] once it is `failed`, [`Error::NotFinal`] when `timeout`
    /// passes first (see [`crate::outcome::wait_final`]). For a submit that answered
    /// [`Error::NotFinal`]: `dtm.wait_final(&gid, Duration::from_secs(60))`.
    pub async fn wait_final(&self, gid: &str, timeout: Duration) -> Result<()> {
        crate::outcome::wait_final(self, gid, timeout).await
    }

    /// `prepare`: creates the transaction in status `prepared`.
    pub async fn prepare(&self, body: &TransRequest) -> Result<()> {
        self.call("prepare", body).await.map(drop)
    }

    /// `submit`: creates or submits the transaction.
    pub async fn submit(&self, body: &TransRequest) -> Result<()> {
        self.call("submit", body).await.map(drop)
    }

    /// `abort`: rolls back a prepared TCC/XA transaction or fails a prepared msg.
    pub async fn abort(&self, body: &TransRequest) -> Result<()> {
        self.call("abort", body).await.map(drop)
    }

    /// `registerBranch` with its flat string map (see the protocol: tcc `data`, `confirm`,
    /// `cancel`; xa `url`; workflow `op`, `status`, `data`).
    pub async fn register_branch(&self, fields: &BTreeMap<String, String>) -> Result<()> {
        crate::identity::check_gid_not_empty(fields.get("gid").map_or("", String::as_str))?;
        let (req, url) = self.post("registerBranch");
        let answer = self
            .send(
                "registerBranch",
                fields.get("gid").map_or("", String::as_str),
                req.json(fields),
                &url,
                self.limits.timeout(),
                true,
            )
            .await?;
        Self::expect_success(&url, &answer)
    }

    /// Subscribes `url` to a msg topic.
    pub async fn subscribe(&self, topic: &str, url: &str, remark: &str) -> Result<()> {
        let u = self.url("subscribe");
        let req =
            self.http
                .client()
                .get(&u)
                .query(&[("topic", topic), ("url", url), ("remark", remark)]);
        self.send_expecting_success("subscribe", "", req, &u).await
    }

    /// Removes a topic subscription.
    pub async fn unsubscribe(&self, topic: &str, url: &str) -> Result<()> {
        let u = self.url("unsubscribe");
        let req = self
            .http
            .client()
            .get(&u)
            .query(&[("topic", topic), ("url", url)]);
        self.send_expecting_success("unsubscribe", "", req, &u)
            .await
    }

    /// Deletes a topic. (DTM v1.19.0 deletes it even with subscribers left, and keeps
    /// delivering to them until it restarts.)
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let mut u = url::Url::parse(&self.url("topic"))
            .map_err(|e| Error::invalid(format!("bad server URL: {e}")))?;
        u.path_segments_mut()
            .map_err(|_| Error::invalid("bad server URL"))?
            .push(topic);
        let u = u.to_string();
        let req = self.http.client().delete(&u);
        self.send_expecting_success("deleteTopic", "", req, &u)
            .await
    }

    /// Admin: makes the server process `gid` at its next cron pass instead of waiting for its
    /// retry interval.
    ///
    /// Only DTM's SQL stores (MySQL, PostgreSQL) act on it. v1.19.0's Redis and BoltDB stores
    /// rewrite the transaction's record but not the schedule their cron reads (Redis's sorted
    /// set, BoltDB's index), so the cron does not pick the transaction sooner (seen on BoltDB:
    /// a workflow with a 60 s retry interval, reset every 100 ms, was not resumed within
    /// 30 s). [`reset_cron_time`](Self::reset_cron_time) works on every store, for every
    /// transaction at once.
    pub async fn reset_next_cron_time(&self, gid: &str) -> Result<()> {
        self.post_gid("resetNextCronTime", gid).await
    }

    /// Admin (`resetCronTime`): schedules up to `limit` unfinished transactions whose next
    /// retry lies more than `after` ahead for now, so that work held back by retry backoff
    /// during an outage resumes at once. Returns how many were rescheduled and whether more
    /// remain (call again until it says none). `after` is sent in whole seconds, rounded up
    /// and at most [`crate::MAX_WIRE_DURATION`].
    pub async fn reset_cron_time(&self, after: Duration, limit: u32) -> Result<CronReset> {
        let u = self.url("resetCronTime");
        let req = self.http.client().get(&u).query(&[
            // Whole seconds, at most 100 years: DTM multiplies them into a Go duration.
            ("timeout", crate::options::secs(Some(after)).to_string()),
            ("limit", limit.to_string()),
        ]);
        let answer = self
            .send("resetCronTime", "", req, &u, self.limits.timeout(), false)
            .await?;
        Self::decode(&u, &answer)
    }

    /// Admin: marks an unfinished transaction `failed` without running anything.
    pub async fn force_stop(&self, gid: &str) -> Result<()> {
        self.post_gid("forceStop", gid).await
    }

    /// An admin call about one transaction: POSTs `{"gid": gid}` to DTM's `op`.
    async fn post_gid(&self, op: &'static str, gid: &str) -> Result<()> {
        crate::identity::check_gid_not_empty(gid)?;
        let u = self.url(op);
        let req = self
            .http
            .client()
            .post(&u)
            .json(&BTreeMap::from([("gid", gid)]));
        self.send_expecting_success(op, gid, req, &u).await
    }

    /// Sends a topic or admin call (the client's timeout; a 200 is never read as FAILURE)
    /// and accepts only DTM's success answer.
    async fn send_expecting_success(
        &self,
        op: &'static str,
        gid: &str,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<()> {
        let answer = self
            .send(op, gid, req, url, self.limits.timeout(), false)
            .await?;
        Self::expect_success(url, &answer)
    }

    /// The server's version string (`v1.19.0`).
    pub async fn version(&self) -> Result<String> {
        #[derive(Deserialize)]
        struct V {
            version: String,
        }
        Ok(self.get_json::<V>("version").await?.2.version)
    }

    /// GETs DTM's `op` (no gid, the client's timeout) and decodes its JSON answer; returns
    /// the URL asked and the answer too, for the caller's own errors.
    async fn get_json<T: DeserializeOwned>(&self, op: &'static str) -> Result<(String, Bytes, T)> {
        let url = self.url(op);
        let request = self.http.client().get(&url);
        let body = self
            .send(op, "", request, &url, self.limits.timeout(), false)
            .await?;
        let value = Self::decode(&url, &body)?;
        Ok((url, body, value))
    }

    /// Calls a branch the way the SDK does for TCC try, XA action and msg back-checks:
    /// transaction info in the query, `branch_headers` as headers, the body as JSON text
    /// (POST) or nothing (GET). The answer is mapped with DTM's rules (see
    /// [`crate::branch::http_result`]). The call gets the client's branch timeout
    /// ([`crate::Limits::branch_timeout`]); see
    /// [`DtmClient::call_branch_with_timeout`].
    pub async fn call_branch(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Option<String>,
    ) -> Result<BranchResponse> {
        self.call_branch_with_timeout(url, info, headers, body, self.limits.branch_timeout())
            .await
    }

    /// [`DtmClient::call_branch`] with this timeout (clamped to [`crate::MAX_TIMEOUT`]); TCC, XA
    /// and msg pass their transaction's `request_timeout` when it is set. The answer is read
    /// up to [`Limits::with_max_answer_bytes`](crate::Limits::with_max_answer_bytes).
    pub async fn call_branch_with_timeout(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<BranchResponse> {
        self.branch_call(url, info, headers, body.map(Bytes::from), timeout)
            .await
    }

    pub(crate) async fn branch_call(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<BranchResponse> {
        let span = crate::trace::branch_call_span(info, url);
        let call = async move {
            let (status, body) =
                call_http_branch(&self.http, &self.limits, url, info, headers, body, timeout)
                    .await?;
            Ok(BranchResponse { status, body })
        };
        crate::metrics::branch_call(self.rpc_system, call)
            .instrument(span)
            .await
    }

    /// The flat string map of `registerBranch` over HTTP.
    pub(crate) fn registration_fields(
        reg: &BranchRegistration,
    ) -> Result<BTreeMap<String, String>> {
        let text = |b: &Bytes| {
            std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|_| Error::invalid("a branch body sent over HTTP must be UTF-8 text"))
        };
        let mut f = BTreeMap::from([
            ("gid".to_string(), reg.gid.clone()),
            (
                "trans_type".to_string(),
                reg.trans_type().as_str().to_string(),
            ),
            ("branch_id".to_string(), reg.branch_id.clone()),
        ]);
        match &reg.kind {
            RegistrationKind::Tcc {
                confirm,
                cancel,
                data,
            } => {
                f.insert("confirm".into(), confirm.clone());
                f.insert("cancel".into(), cancel.clone());
                f.insert("data".into(), text(data)?);
            }
            RegistrationKind::Xa { url } => {
                f.insert("url".into(), url.clone());
            }
            RegistrationKind::Workflow { op, status, data } => {
                f.insert("op".into(), op.clone());
                f.insert("status".into(), status.clone());
                f.insert("sync".into(), "1".into());
                f.insert("data".into(), text(data)?);
            }
        }
        Ok(f)
    }
}

/// HTTP: DTM's JSON API, branch bodies as JSON text.
impl Transport for DtmClient {
    type Encoding = Json;

    fn protocol(&self) -> &'static str {
        "http"
    }

    fn server(&self) -> &str {
        &self.server
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn with_server(&self, server: &str) -> Result<Self> {
        DtmClient::with_server(self, server)
    }

    /// Payloads travel as JSON strings: they must be text.
    fn check_request(&self, req: &TransRequest) -> Result<()> {
        crate::wire::check_text_payloads(req)
    }

    /// Any URL: DTM itself calls a branch over gRPC when its URL is not `http(s)://`, so one
    /// HTTP transaction may have gRPC branches.
    fn check_branch_url(&self, _url: &str) -> Result<()> {
        Ok(())
    }

    fn call_dtm(&self, op: DtmOp, req: TransRequest) -> impl Future<Output = Result<()>> + Send {
        // Encoded now, so that only the body is held while the call waits.
        let call = self.trans_call(op.as_str(), &req);
        drop(req);
        async move { call.await.map(drop) }
    }

    async fn register(&self, reg: &BranchRegistration) -> Result<()> {
        self.register_branch(&Self::registration_fields(reg)?).await
    }

    async fn prepare_workflow_progress(&self, req: &TransRequest) -> Result<WorkflowProgress> {
        self.prepare_workflow(req).await
    }

    async fn call_branch_bytes(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<BranchResponse> {
        self.branch_call(url, info, headers, body, timeout).await
    }

    fn query(&self, gid: &str) -> impl Future<Output = Result<QueryResult>> + Send {
        DtmClient::query(self, gid)
    }
}
