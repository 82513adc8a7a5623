//! The DTM HTTP client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tracing::Instrument;

use crate::branch::http_result;
use crate::error::{truncate_body, Error, Result};
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
#[derive(Debug, Clone)]
pub struct DtmClient {
    server: Arc<str>,
    http: reqwest::Client,
    timeout: Duration,
}

/// Builds a [`DtmClient`] with non-default settings.
#[derive(Debug)]
pub struct DtmClientBuilder {
    server: String,
    http: Option<reqwest::Client>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl DtmClientBuilder {
    /// Uses this `reqwest::Client` (with its middleware-free settings: proxies, TLS roots...)
    /// instead of building one.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Timeout of each call to DTM when the transaction sets no `request_timeout`
    /// (default 30 s). Calls with `wait_result` get this plus the transaction's own
    /// request timeout, since the server runs branches inside them.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Connect timeout of the built `reqwest::Client` (default 3 s). Ignored with
    /// [`DtmClientBuilder::http_client`].
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Validates the URL and builds the client.
    pub fn build(self) -> Result<DtmClient> {
        let server = normalize_server(&self.server)?;
        let http = match self.http {
            Some(h) => h,
            None => reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .build()
                .map_err(|e| Error::invalid(format!("cannot build HTTP client: {e}")))?,
        };
        Ok(DtmClient {
            server: server.into(),
            http,
            timeout: self.timeout,
        })
    }
}

fn normalize_server(s: &str) -> Result<String> {
    let parsed = url::Url::parse(s)
        .map_err(|e| Error::invalid(format!("DTM server URL {s:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid(format!(
            "DTM server URL {s:?} must be http(s)://host:port/api/dtmsvr"
        )));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// The DTM convention for a `message` field in error bodies.
#[derive(Deserialize)]
struct MessageBody {
    #[serde(default)]
    message: String,
}

impl DtmClient {
    /// A client for the server at `server` (for example `http://localhost:36789/api/dtmsvr`).
    pub fn new(server: impl Into<String>) -> Result<Self> {
        Self::builder(server).build()
    }

    /// A builder for a client of `server`.
    pub fn builder(server: impl Into<String>) -> DtmClientBuilder {
        DtmClientBuilder {
            server: server.into(),
            http: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
        }
    }

    /// A client of another DTM server sharing this one's connection pool (used for nested
    /// transactions whose branch request names the server).
    pub fn with_server(&self, server: &str) -> Result<Self> {
        Ok(DtmClient {
            server: normalize_server(server)?.into(),
            http: self.http.clone(),
            timeout: self.timeout,
        })
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The shared HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.server, path)
    }

    /// Sends a request to DTM and returns the raw body of a success answer.
    async fn send(
        &self,
        op: &'static str,
        req: reqwest::RequestBuilder,
        url: String,
        timeout: Duration,
        keyword_check: bool,
    ) -> Result<Bytes> {
        let span = tracing::debug_span!("dtm", op, url = %url);
        async move {
            let resp = req
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| Error::Transport {
                    url: url.clone(),
                    source: e,
                })?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(|e| Error::Transport {
                url: url.clone(),
                source: e,
            })?;
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
                    url,
                    status,
                    body: truncate_body(&text),
                }),
            }
        }
        .instrument(span)
        .await
    }

    fn decode<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| Error::Decode {
            url: url.to_string(),
            reason: e.to_string(),
            body: truncate_body(&String::from_utf8_lossy(body)),
        })
    }

    fn timeout_for(&self, req: &TransRequest) -> Duration {
        let own = if req.request_timeout > 0 {
            Duration::from_secs(req.request_timeout.unsigned_abs())
        } else {
            self.timeout
        };
        if req.wait_result {
            // The server runs the branches inside the call.
            own + self.timeout
        } else {
            own
        }
    }

    /// POSTs a global-transaction body to `<server>/<op>`.
    pub async fn call(&self, op: &'static str, body: &TransRequest) -> Result<Bytes> {
        let url = self.url(op);
        let req = self.http.post(&url).json(body);
        tracing::debug!(gid = %body.gid, trans_type = %body.trans_type, "call dtm {op}");
        self.send(op, req, url, self.timeout_for(body), true).await
    }

    /// `prepareWorkflow`: creates the workflow transaction, or returns the existing one and
    /// every recorded branch. Unlike the other calls, a body that merely mentions FAILURE (a
    /// stored rollback reason) is not an error.
    pub async fn prepare_workflow(&self, body: &TransRequest) -> Result<WorkflowProgress> {
        let url = self.url("prepareWorkflow");
        let req = self.http.post(&url).json(body);
        let answer = self
            .send(
                "prepareWorkflow",
                req,
                url.clone(),
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
        let url = self.url("newGid");
        let body = self
            .send(
                "newGid",
                self.http.get(&url),
                url.clone(),
                self.timeout,
                false,
            )
            .await?;
        let g: Gid = Self::decode(&url, &body)?;
        if g.gid.is_empty() {
            return Err(Error::Decode {
                url,
                reason: "empty gid".into(),
                body: truncate_body(&String::from_utf8_lossy(&body)),
            });
        }
        Ok(g.gid)
    }

    /// The transaction `gid` and its branches as the server stores them.
    pub async fn query(&self, gid: &str) -> Result<QueryResult> {
        let url = self.url("query");
        let req = self.http.get(&url).query(&[("gid", gid)]);
        let body = self
            .send("query", req, url.clone(), self.timeout, false)
            .await?;
        Self::decode(&url, &body)
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
        let url = self.url("registerBranch");
        let req = self.http.post(&url).json(fields);
        self.send("registerBranch", req, url, self.timeout, true)
            .await
            .map(drop)
    }

    /// Subscribes `url` to a msg topic.
    pub async fn subscribe(&self, topic: &str, url: &str, remark: &str) -> Result<()> {
        let u = self.url("subscribe");
        let req = self
            .http
            .get(&u)
            .query(&[("topic", topic), ("url", url), ("remark", remark)]);
        self.send("subscribe", req, u, self.timeout, false)
            .await
            .map(drop)
    }

    /// Removes a topic subscription.
    pub async fn unsubscribe(&self, topic: &str, url: &str) -> Result<()> {
        let u = self.url("unsubscribe");
        let req = self.http.get(&u).query(&[("topic", topic), ("url", url)]);
        self.send("unsubscribe", req, u, self.timeout, false)
            .await
            .map(drop)
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
        let req = self.http.delete(&u);
        self.send("deleteTopic", req, u, self.timeout, false)
            .await
            .map(drop)
    }

    /// Admin: makes the server process `gid` at its next cron pass instead of waiting for its
    /// retry interval.
    pub async fn reset_next_cron_time(&self, gid: &str) -> Result<()> {
        let u = self.url("resetNextCronTime");
        let req = self.http.post(&u).json(&BTreeMap::from([("gid", gid)]));
        self.send("resetNextCronTime", req, u, self.timeout, false)
            .await
            .map(drop)
    }

    /// Admin: marks an unfinished transaction `failed` without running anything.
    pub async fn force_stop(&self, gid: &str) -> Result<()> {
        let u = self.url("forceStop");
        let req = self.http.post(&u).json(&BTreeMap::from([("gid", gid)]));
        self.send("forceStop", req, u, self.timeout, false)
            .await
            .map(drop)
    }

    /// The server's version string (`v1.19.0`).
    pub async fn version(&self) -> Result<String> {
        #[derive(Deserialize)]
        struct V {
            version: String,
        }
        let u = self.url("version");
        let body = self
            .send("version", self.http.get(&u), u.clone(), self.timeout, false)
            .await?;
        Ok(Self::decode::<V>(&u, &body)?.version)
    }

    /// Calls a branch the way the SDK does for TCC try, XA action and msg back-checks:
    /// transaction info in the query, `branch_headers` as headers, the body as JSON text
    /// (POST) or nothing (GET). The answer is mapped with DTM's rules (see
    /// [`crate::branch::http_result`]).
    pub async fn call_branch(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Option<String>,
    ) -> Result<BranchResponse> {
        let span = tracing::debug_span!("branch", gid = %info.gid, branch_id = %info.branch_id, op = %info.op, url);
        async move {
            let mut req = match &body {
                Some(_) => self.http.post(url),
                None => self.http.get(url),
            };
            req = req.query(&info.query_pairs());
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b);
            }
            let resp = req.send().await.map_err(|e| Error::Transport {
                url: url.to_string(),
                source: e,
            })?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(|e| Error::Transport {
                url: url.to_string(),
                source: e,
            })?;
            tracing::debug!(status, "branch answered");
            http_result(url, status, &body)?;
            Ok(BranchResponse { status, body })
        }
        .instrument(span)
        .await
    }
}

/// A successful answer of a branch the SDK called itself.
#[derive(Debug, Clone)]
pub struct BranchResponse {
    /// HTTP status (always 200 for a success).
    pub status: u16,
    /// Raw body.
    pub body: Bytes,
}

impl BranchResponse {
    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            url: String::new(),
            reason: e.to_string(),
            body: truncate_body(&String::from_utf8_lossy(&self.body)),
        })
    }
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
