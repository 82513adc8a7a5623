//! The DTM gRPC client.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dtmcli::{Error, Result, TransInfo, TransOptions, TransRequest, TransType};
use http::uri::PathAndQuery;
use prost::Message;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

use crate::codec::RawCodec;
use crate::metadata::{branch_metadata, check_branch_headers};
use crate::pb::dtmgimp::dtm_client::DtmClient as DtmStub;
use crate::pb::dtmgimp::{
    DtmBranchRequest, DtmProgressesReply, DtmRequest, DtmTopicRequest, DtmTransOptions,
};
use crate::status::status_to_error;
use crate::url::{is_http, parse_branch_url};

/// The default address of a local DTM server's gRPC API.
pub const DEFAULT_GRPC_SERVER: &str = "localhost:36790";

/// A client of one DTM server over gRPC.
///
/// It holds one tonic [`Channel`] to DTM (HTTP/2, multiplexed and reused), a cache of
/// channels to the gRPC branches the SDK calls itself (TCC try, XA action, msg back-check),
/// and a `reqwest::Client` for `http://` branches. Cloning is cheap and shares all of them;
/// build one per DTM server at start-up and pass it around. Channels connect lazily, so
/// building never fails because a server is down: the first call does.
///
/// ```no_run
/// # async fn demo() -> dtmcli::Result<()> {
/// let dtm = dtmgrpc::DtmGrpcClient::new("localhost:36790")?;
/// let gid = dtm.new_gid().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DtmGrpcClient {
    target: Arc<str>,
    channel: Channel,
    shared: Arc<Shared>,
}

/// What every client derived from one builder shares.
struct Shared {
    timeout: Duration,
    connect_timeout: Duration,
    http: reqwest::Client,
    branches: Mutex<HashMap<String, Channel>>,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl std::fmt::Debug for DtmGrpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtmGrpcClient")
            .field("target", &self.target)
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DtmGrpcClient`] with non-default settings.
#[derive(Debug)]
#[must_use]
pub struct DtmGrpcClientBuilder {
    target: String,
    channel: Option<Channel>,
    timeout: Duration,
    connect_timeout: Duration,
    http: Option<reqwest::Client>,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl DtmGrpcClientBuilder {
    /// Uses this channel to DTM instead of building one (bring your own interceptors, load
    /// balancing, TLS...). `target` still names the server: it is sent to branches as
    /// `dtm-dtm` so nested TCC and XA branches can reach DTM.
    pub fn channel(mut self, channel: Channel) -> Self {
        self.channel = Some(channel);
        self
    }

    /// Timeout of each call to DTM when the transaction sets no `request_timeout`, and of each
    /// call to a branch (default 30 s). Calls with `wait_result` get this plus the
    /// transaction's own request timeout, since the server runs branches inside them.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Connect timeout of the channels the client builds (default 3 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The HTTP client for `http://` branches the SDK calls itself.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Talks TLS to DTM (`https://`). Branch channels stay plaintext, as in DTM itself.
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Validates the target and builds the client (connecting lazily).
    pub fn build(self) -> Result<DtmGrpcClient> {
        let target = normalize_target(&self.target)?;
        let shared = Arc::new(Shared {
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            http: match self.http {
                Some(h) => h,
                None => reqwest::Client::builder()
                    .connect_timeout(self.connect_timeout)
                    .build()
                    .map_err(|e| Error::invalid(format!("cannot build HTTP client: {e}")))?,
            },
            branches: Mutex::new(HashMap::new()),
            #[cfg(feature = "tls")]
            tls: self.tls,
        });
        let channel = match self.channel {
            Some(c) => c,
            None => dtm_channel(&shared, &target)?,
        };
        Ok(DtmGrpcClient {
            target: target.into(),
            channel,
            shared,
        })
    }
}

/// `host:port`, accepting (and stripping) an `http://` prefix and trailing `/`.
fn normalize_target(s: &str) -> Result<String> {
    let t = s.trim_end_matches('/');
    let t = t.strip_prefix("http://").unwrap_or(t);
    #[cfg(feature = "tls")]
    let t = t.strip_prefix("https://").unwrap_or(t);
    let ok = !t.is_empty()
        && !t.contains('/')
        && t.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !ok {
        return Err(Error::invalid(format!(
            "DTM gRPC server {s:?} must be host:port (for example localhost:36790)"
        )));
    }
    Ok(t.to_string())
}

fn endpoint(shared: &Shared, target: &str, scheme: &str) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("{scheme}://{target}"))
        .map_err(|e| Error::invalid(format!("bad gRPC target {target:?}: {e}")))?
        .connect_timeout(shared.connect_timeout)
        .tcp_nodelay(true))
}

/// A lazily connecting channel. Its background worker needs a tokio runtime: outside one,
/// an error instead of tonic's panic.
fn lazy(endpoint: &Endpoint) -> Result<Channel> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::invalid(
            "a DtmGrpcClient must be built inside a tokio runtime",
        ));
    }
    Ok(endpoint.connect_lazy())
}

fn dtm_channel(shared: &Shared, target: &str) -> Result<Channel> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.tls {
        return lazy(
            &endpoint(shared, target, "https")?
                .tls_config(tls.clone())
                .map_err(|e| Error::invalid(format!("TLS configuration: {e}")))?,
        );
    }
    lazy(&endpoint(shared, target, "http")?)
}

/// Copies the options into their gRPC message (whole seconds, as in HTTP).
pub(crate) fn trans_options(o: &TransOptions) -> DtmTransOptions {
    options_of(&TransRequest::new("", TransType::Saga, o))
}

/// The gRPC options message of a wire body's flat options.
fn options_of(r: &TransRequest) -> DtmTransOptions {
    DtmTransOptions {
        wait_result: r.wait_result,
        timeout_to_fail: r.timeout_to_fail,
        retry_interval: r.retry_interval,
        branch_headers: r.branch_headers.clone(),
        request_timeout: r.request_timeout,
        retry_limit: r.retry_limit,
    }
}

/// The gRPC form of an HTTP global-transaction body, field for field (steps `"null"` when
/// there are none, as the Go SDK sends them; payloads as bytes).
impl From<&TransRequest> for DtmRequest {
    fn from(r: &TransRequest) -> Self {
        let steps = if r.steps.is_empty() {
            "null".to_string()
        } else {
            serde_json::to_string(&r.steps).unwrap_or_else(|_| "null".to_string())
        };
        DtmRequest {
            gid: r.gid.clone(),
            trans_type: r.trans_type.clone(),
            trans_options: Some(options_of(r)),
            customed_data: r.custom_data.clone(),
            bin_payloads: r.payloads.iter().map(|p| p.clone().into_bytes()).collect(),
            query_prepared: r.query_prepared.clone(),
            steps,
            req_extra: r.req_extra.clone().into_iter().collect(),
            rollback_reason: r.rollback_reason.clone(),
        }
    }
}

/// The `DtmRequest` of a global transaction, as the Go SDK builds it (steps `"null"` when
/// there are none). Branch headers are checked to be valid metadata.
pub(crate) fn dtm_request(
    gid: &str,
    trans_type: TransType,
    options: &TransOptions,
    steps: &[BTreeMap<String, String>],
) -> Result<DtmRequest> {
    check_branch_headers(&options.branch_headers)?;
    let steps = if steps.is_empty() {
        "null".to_string()
    } else {
        serde_json::to_string(steps).map_err(|e| Error::invalid(format!("steps: {e}")))?
    };
    Ok(DtmRequest {
        gid: gid.to_string(),
        trans_type: trans_type.as_str().to_string(),
        trans_options: Some(trans_options(options)),
        steps,
        ..Default::default()
    })
}

impl DtmGrpcClient {
    /// A client of the DTM server at `target` (`host:port`, for example `localhost:36790`).
    /// Must be called inside a tokio runtime (the channel's worker runs on it).
    pub fn new(target: impl Into<String>) -> Result<Self> {
        Self::builder(target).build()
    }

    /// A builder for a client of `target`.
    pub fn builder(target: impl Into<String>) -> DtmGrpcClientBuilder {
        DtmGrpcClientBuilder {
            target: target.into(),
            channel: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            http: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The DTM server's address (`host:port`), as sent to branches in `dtm-dtm`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The channel to DTM.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// A client of another DTM server (named by a branch request's `dtm-dtm`) sharing this
    /// one's settings and branch channels; this client itself when it is the same server.
    pub fn with_target(&self, target: &str) -> Result<Self> {
        let target = normalize_target(target)?;
        if target == *self.target {
            return Ok(self.clone());
        }
        Ok(DtmGrpcClient {
            channel: dtm_channel(&self.shared, &target)?,
            target: target.into(),
            shared: self.shared.clone(),
        })
    }

    /// The call timeout for a transaction request.
    fn timeout_for(&self, req: &DtmRequest) -> Duration {
        let o = req.trans_options.as_ref();
        let own = match o.map(|o| o.request_timeout) {
            Some(t) if t > 0 => Duration::from_secs(t.unsigned_abs()),
            _ => self.shared.timeout,
        };
        if o.is_some_and(|o| o.wait_result) {
            own + self.shared.timeout
        } else {
            own
        }
    }

    /// Runs one call to DTM with a span, a timeout and DTM's status mapping.
    async fn call<T, F, Fut>(
        &self,
        rpc: &'static str,
        gid: &str,
        timeout: Duration,
        f: F,
    ) -> Result<T>
    where
        F: FnOnce(DtmStub<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        // Only errors name the method's full target: no formatting on the success path.
        let target = || format!("{}/dtmgimp.Dtm/{rpc}", self.target);
        let span = tracing::debug_span!("dtm_grpc", rpc, gid, target = %self.target);
        async move {
            let stub = DtmStub::new(self.channel.clone());
            match tokio::time::timeout(timeout, f(stub)).await {
                Ok(Ok(resp)) => {
                    tracing::debug!("dtm answered OK");
                    Ok(resp.into_inner())
                }
                Ok(Err(status)) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "dtm answered");
                    Err(status_to_error(&target(), &status))
                }
                Err(_) => Err(Error::Grpc {
                    target: target(),
                    code: tonic::Code::DeadlineExceeded as i32,
                    message: format!("no answer within {timeout:?}"),
                }),
            }
        }
        .instrument(span)
        .await
    }

    /// Asks DTM for a new global id.
    pub async fn new_gid(&self) -> Result<String> {
        let reply = self
            .call("NewGid", "", self.shared.timeout, |mut s| async move {
                s.new_gid(()).await
            })
            .await?;
        if reply.gid.is_empty() {
            return Err(Error::Grpc {
                target: format!("{}/dtmgimp.Dtm/NewGid", self.target),
                code: tonic::Code::Internal as i32,
                message: "DTM answered an empty gid".into(),
            });
        }
        Ok(reply.gid)
    }

    /// `Prepare`: creates the transaction in status `prepared`.
    pub async fn prepare(&self, req: &DtmRequest) -> Result<()> {
        let r = req.clone();
        self.call(
            "Prepare",
            &req.gid,
            self.timeout_for(req),
            |mut s| async move { s.prepare(r).await },
        )
        .await
    }

    /// `Submit`: creates or submits the transaction.
    pub async fn submit(&self, req: &DtmRequest) -> Result<()> {
        let r = req.clone();
        self.call(
            "Submit",
            &req.gid,
            self.timeout_for(req),
            |mut s| async move { s.submit(r).await },
        )
        .await
    }

    /// `Abort`: rolls back a prepared TCC/XA transaction or fails a prepared msg.
    pub async fn abort(&self, req: &DtmRequest) -> Result<()> {
        let r = req.clone();
        self.call(
            "Abort",
            &req.gid,
            self.timeout_for(req),
            |mut s| async move { s.abort(r).await },
        )
        .await
    }

    /// `RegisterBranch` (tcc: `Data {confirm, cancel}` and the try message as
    /// `BusiPayload`; xa: `Data {url}`; workflow: `Data {op, status}` and the result).
    pub async fn register_branch(&self, req: &DtmBranchRequest) -> Result<()> {
        let r = req.clone();
        self.call(
            "RegisterBranch",
            &req.gid,
            self.shared.timeout,
            |mut s| async move { s.register_branch(r).await },
        )
        .await
    }

    /// `PrepareWorkflow`: creates the workflow transaction or returns it with its recorded
    /// progress. (Over gRPC, DTM never fills `Transaction.Result`.)
    pub async fn prepare_workflow(&self, req: &DtmRequest) -> Result<DtmProgressesReply> {
        let r = req.clone();
        self.call(
            "PrepareWorkflow",
            &req.gid,
            self.timeout_for(req),
            |mut s| async move { s.prepare_workflow(r).await },
        )
        .await
    }

    /// Subscribes `url` (a gRPC branch URL or an `http://` URL) to a msg topic.
    pub async fn subscribe(&self, topic: &str, url: &str, remark: &str) -> Result<()> {
        let r = DtmTopicRequest {
            topic: topic.to_string(),
            url: url.to_string(),
            remark: remark.to_string(),
        };
        self.call("Subscribe", "", self.shared.timeout, |mut s| async move {
            s.subscribe(r).await
        })
        .await
    }

    /// Removes a topic subscription.
    pub async fn unsubscribe(&self, topic: &str, url: &str) -> Result<()> {
        let r = DtmTopicRequest {
            topic: topic.to_string(),
            url: url.to_string(),
            remark: String::new(),
        };
        self.call("Unsubscribe", "", self.shared.timeout, |mut s| async move {
            s.unsubscribe(r).await
        })
        .await
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let r = DtmTopicRequest {
            topic: topic.to_string(),
            ..Default::default()
        };
        self.call("DeleteTopic", "", self.shared.timeout, |mut s| async move {
            s.delete_topic(r).await
        })
        .await
    }

    /// The (cached) channel to a branch's gRPC server.
    fn branch_channel(&self, target: &str) -> Result<Channel> {
        let mut map = self
            .shared
            .branches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(target) {
            return Ok(c.clone());
        }
        let c = lazy(&endpoint(&self.shared, target, "http")?)?;
        map.insert(target.to_string(), c.clone());
        Ok(c)
    }

    /// Calls a branch the way the SDK does for TCC try, XA action and msg back-checks, with
    /// already-encoded message bytes, and returns the answer's bytes.
    ///
    /// A gRPC branch URL (`host:port/pkg.Service/Method`) gets a unary call with the
    /// transaction info and `headers` as metadata ([`crate::branch_metadata`]); its status is
    /// read with [`status_to_error`]. An `http(s)://` URL gets the query, headers and the
    /// bytes as body (POST, or GET when there are none and it is not XA), read with DTM's HTTP
    /// rules.
    pub async fn call_branch_raw(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Bytes,
    ) -> Result<Bytes> {
        let span = tracing::debug_span!("branch", gid = %info.gid, branch_id = %info.branch_id, op = %info.op, url);
        async move {
            if is_http(url) {
                return self.call_http_branch(url, info, headers, body).await;
            }
            let u = parse_branch_url(url)?;
            let path = PathAndQuery::try_from(u.method.as_str())
                .map_err(|e| Error::invalid(format!("bad gRPC method in {url:?}: {e}")))?;
            let mut req = tonic::Request::new(body);
            *req.metadata_mut() = branch_metadata(info, headers)?;
            let mut grpc = tonic::client::Grpc::new(self.branch_channel(&u.target)?);
            let call = async {
                grpc.ready().await.map_err(|e| {
                    tonic::Status::unavailable(format!("branch channel not ready: {e}"))
                })?;
                grpc.unary(req, path, RawCodec).await
            };
            let timeout = self.shared.timeout;
            let out = match tokio::time::timeout(timeout, call).await {
                Ok(Ok(resp)) => Ok(resp.into_inner()),
                Ok(Err(status)) => Err(status_to_error(url, &status)),
                Err(_) => Err(Error::Grpc {
                    target: url.to_string(),
                    code: tonic::Code::DeadlineExceeded as i32,
                    message: format!("no answer within {timeout:?}"),
                }),
            };
            tracing::debug!(ok = out.is_ok(), "branch answered");
            out
        }
        .instrument(span)
        .await
    }

    async fn call_http_branch(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Bytes,
    ) -> Result<Bytes> {
        let post = !body.is_empty() || info.trans_type == TransType::Xa;
        let mut req = if post {
            self.shared
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
        } else {
            self.shared.http.get(url)
        };
        req = req.query(&info.query_pairs()).timeout(self.shared.timeout);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.map_err(|e| Error::Transport {
            url: url.to_string(),
            source: e,
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| Error::Transport {
            url: url.to_string(),
            source: e,
        })?;
        dtmcli::branch::http_result(url, status, &bytes)?;
        Ok(bytes)
    }

    /// Calls a branch with a protobuf request and decodes its protobuf answer (see
    /// [`DtmGrpcClient::call_branch_raw`]). The body of an `http(s)://` branch is not
    /// protobuf and is not decoded: the answer is then `Resp::default()`.
    pub async fn call_branch<Resp: Message + Default>(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Bytes,
    ) -> Result<Resp> {
        let bytes = self.call_branch_raw(url, info, headers, body).await?;
        if is_http(url) {
            return Ok(Resp::default());
        }
        Resp::decode(bytes.clone()).map_err(|e| Error::Decode {
            url: url.to_string(),
            reason: format!("not a protobuf {}: {e}", std::any::type_name::<Resp>()),
            body: format!("{} bytes", bytes.len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies_convert_field_for_field() {
        let mut r = TransRequest::new(
            "g",
            TransType::Workflow,
            &TransOptions::default()
                .retry_interval(Duration::from_millis(1500))
                .branch_header("h", "v"),
        );
        r.custom_data = r#"{"name":"w"}"#.into();
        r.req_extra.insert("result".into(), "cmVz".into());
        let d = DtmRequest::from(&r);
        assert_eq!((d.gid.as_str(), d.trans_type.as_str()), ("g", "workflow"));
        assert_eq!(d.steps, "null");
        assert_eq!(d.customed_data, r#"{"name":"w"}"#);
        assert_eq!(d.req_extra.get("result").map(String::as_str), Some("cmVz"));
        let o = d.trans_options.unwrap_or_default();
        assert_eq!(o.retry_interval, 2);
        assert_eq!(o.branch_headers.get("h").map(String::as_str), Some("v"));
        r.steps = vec![BTreeMap::from([("action".into(), "a".into())])];
        r.payloads = vec!["p".into()];
        let d = DtmRequest::from(&r);
        assert_eq!(d.steps, r#"[{"action":"a"}]"#);
        assert_eq!(d.bin_payloads, vec![b"p".to_vec()]);
    }

    #[test]
    fn targets() {
        assert_eq!(
            normalize_target("localhost:36790").unwrap(),
            "localhost:36790"
        );
        assert_eq!(
            normalize_target("http://127.0.0.1:1/").unwrap(),
            "127.0.0.1:1"
        );
        for bad in ["", "localhost", "h:x", "h:1/api", ":1"] {
            assert!(normalize_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_like_go() {
        let o = TransOptions::default()
            .wait_result(true)
            .timeout_to_fail(Duration::from_millis(1500))
            .retry_interval(Duration::from_secs(3))
            .request_timeout(Duration::from_secs(4))
            .retry_limit(5)
            .branch_header("test_header", "v");
        let r = dtm_request("g", TransType::Tcc, &o, &[]).unwrap();
        assert_eq!(r.steps, "null");
        assert_eq!(r.trans_type, "tcc");
        let t = r.trans_options.unwrap();
        assert_eq!(
            (
                t.wait_result,
                t.timeout_to_fail,
                t.retry_interval,
                t.request_timeout,
                t.retry_limit
            ),
            (true, 2, 3, 4, 5)
        );
        assert_eq!(t.branch_headers["test_header"], "v");
        let bad = TransOptions::default().branch_header("Bad Key", "v");
        assert!(dtm_request("g", TransType::Saga, &bad, &[]).is_err());
    }
}
