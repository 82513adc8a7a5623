//! The DTM gRPC client.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dtmcli::limits::{clamp_timeout, Limits};
use dtmcli::redact::redact_url;
use dtmcli::transport::{BranchRegistration, DtmOp, Protobuf, RegistrationKind, Transport};
use dtmcli::{
    BranchResponse, Error, Result, TransBranch, TransGlobal, TransInfo, TransRequest,
    TrustedServers, WorkflowProgress,
};
use http::uri::PathAndQuery;
use prost::Message;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

use crate::channel::{GrpcChannel, Wrap};
use crate::codec::RawCodec;
use crate::http_api::HttpApi;
use crate::metadata::{branch_metadata, check_branch_headers, printable_ascii, TraceContext};
use crate::pb::dtmgimp::dtm_client::DtmClient as DtmStub;
use crate::pb::dtmgimp::{
    DtmBranchRequest, DtmProgressesReply, DtmRequest, DtmTopicRequest, DtmTransOptions,
};
use crate::status::{status_to_error, NoAnswer};
use crate::url::check_branch_url;
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
/// Every call it makes is bounded: in time ([`Limits::with_timeout`](dtmcli::Limits::with_timeout), or the
/// transaction's `request_timeout`) and in answer size
/// ([`Limits::with_max_answer_bytes`](dtmcli::Limits::with_max_answer_bytes); a longer answer is
/// [`Error::TooLarge`]). A branch request naming another DTM server is only followed to a
/// trusted one ([`DtmGrpcClientBuilder::trusted_servers`], [`DtmGrpcClient::with_server`]).
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
    /// `channel` as calls go through it (wrapped in the builder's layer).
    /// Shared by the client's clones (a transaction holds one): cloned, which boxes the
    /// service anew, only for a call, which needs one of its own.
    service: Arc<GrpcChannel>,
    shared: Arc<Shared>,
    /// The channel to DTM is one this client built without TLS (a given channel may be
    /// anything): only then may a broken call be probed in plaintext.
    plaintext: bool,
    /// The same server's HTTP API ([`DtmGrpcClientBuilder::http_api`]), which answers
    /// `query`: DTM has no gRPC query.
    api: Option<HttpApi>,
}

/// What every client derived from one builder shares.
struct Shared {
    /// The address the builder was given: the one server trusted in any case.
    own: String,
    trusted: TrustedServers,
    /// Whether a target written without a scheme talks TLS (the builder's target was
    /// `https://`, or a TLS configuration was given).
    tls_default: bool,
    limits: Limits,
    #[cfg(feature = "http")]
    http: dtmcli::http_stack::HttpStack,
    branches: Mutex<HashMap<String, GrpcChannel>>,
    /// Wraps every channel opened (the builder's layer, or none).
    wrap: Wrap,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl std::fmt::Debug for DtmGrpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Written by hand: no field may print credentials (targets with them are refused,
        // but trusted-server lists are the user's text).
        f.debug_struct("DtmGrpcClient")
            .field("target", &redact_url(&self.target))
            .field("tls", &self.shared.tls_default)
            .field("limits", &self.shared.limits)
            .field("trusted", &self.shared.trusted)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DtmGrpcClient`] with non-default settings.
#[must_use]
pub struct DtmGrpcClientBuilder {
    target: String,
    channel: Option<Channel>,
    wrap: Wrap,
    limits: Limits,
    trusted: TrustedServers,
    #[cfg(feature = "http")]
    http: Option<reqwest::Client>,
    api: Option<String>,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl std::fmt::Debug for DtmGrpcClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtmGrpcClientBuilder")
            .field("target", &redact_url(&self.target))
            .field("limits", &self.limits)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl DtmGrpcClientBuilder {
    /// Uses this channel to DTM instead of building one (bring your own interceptors, load
    /// balancing, TLS...). `target` still names the server: it is sent to branches as
    /// `dtm-dtm` so nested TCC and XA branches can reach DTM.
    pub fn channel(mut self, channel: Channel) -> Self {
        self.channel = Some(channel);
        self
    }

    /// Wraps every channel the client opens, to DTM and to each gRPC branch it calls itself,
    /// in `layer` (a tower layer over tonic's `Channel`: tracing, metrics, auth, retries...).
    /// The SDK's timeouts, answer caps and trace context still apply inside it.
    pub fn layer<L, S, RB>(mut self, layer: L) -> Self
    where
        L: tower_layer::Layer<Channel, Service = S> + Send + Sync + 'static,
        S: tower_service::Service<http::Request<tonic::body::Body>, Response = http::Response<RB>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<crate::channel::BoxError>,
        RB: http_body::Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<crate::channel::BoxError>,
    {
        self.wrap = crate::channel::layered(layer);
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

    /// The HTTP client for `http://` branches the SDK calls itself (feature `http`).
    #[cfg(feature = "http")]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The same DTM server's HTTP API (`http://host:36789/api/dtmsvr`), through which the
    /// client reads a transaction's stored state: DTM answers `query` over HTTP only. With
    /// it, what DTM answers a submit is reported as what DTM stored (`dtmcli::outcome`): a
    /// saga that DTM retries is [`Error::NotFinal`], not a failure,
    /// [`DtmGrpcClient::wait_final`] works, and workflow resume callbacks can be checked
    /// against DTM (`dtm_workflow::Workflows::grpc`). Without it, a FAILURE answer is
    /// reported as [`Error::NotFinal`] without a status, since it may be a transaction DTM
    /// still retries. Its reads share this client's bounds (and, with the `http` feature,
    /// its HTTP client; without it, a plain HTTP/1.1 read over hyper, `http://` only).
    pub fn http_api(mut self, url: impl Into<String>) -> Self {
        self.api = Some(url.into());
        self
    }

    /// Talks TLS to DTM with this configuration (also for a target written without
    /// `https://`). Without it, an `https://` target uses the system's and the webpki roots.
    /// Branch channels stay plaintext, as in DTM itself.
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Validates the target and builds the client (connecting lazily).
    ///
    /// Errors ([`Error::InvalidInput`]): a target that is not `[http://|https://]host:port`,
    /// one carrying credentials, `https://` without the `tls` feature, or `http://` together
    /// with a TLS configuration.
    pub fn build(self) -> Result<DtmGrpcClient> {
        let target = parse_target(&self.target)?;
        #[cfg(feature = "tls")]
        let configured = self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let configured = false;
        if configured && target.tls == Some(false) {
            return Err(Error::invalid(format!(
                "DTM gRPC server {:?} is written http:// (plaintext) but a TLS configuration was given; write https:// or host:port",
                self.target
            )));
        }
        let shared = Arc::new(Shared {
            own: target.addr.clone(),
            trusted: self.trusted,
            tls_default: configured || target.tls == Some(true),
            limits: self.limits,
            #[cfg(feature = "http")]
            http: dtmcli::http_stack::HttpStack::new(match self.http {
                Some(h) => h,
                None => dtmcli::limits::http_client(&self.limits)?,
            }),
            branches: Mutex::new(HashMap::new()),
            wrap: self.wrap,
            #[cfg(feature = "tls")]
            tls: self.tls,
        });
        let api = match &self.api {
            #[cfg(feature = "http")]
            Some(url) => Some(HttpApi::new(url, &shared.limits, shared.http.client())?),
            #[cfg(not(feature = "http"))]
            Some(url) => Some(HttpApi::new(url, &shared.limits)?),
            None => None,
        };
        let plaintext = self.channel.is_none() && !target.tls.unwrap_or(shared.tls_default);
        let channel = match self.channel {
            Some(c) => c,
            None => dtm_channel(&shared, &target)?,
        };
        Ok(DtmGrpcClient {
            target: target.addr.into(),
            service: Arc::new((shared.wrap)(channel.clone())),
            channel,
            shared,
            plaintext,
            api,
        })
    }
}

/// A DTM server as written by the user or named by a branch request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `host:port`.
    addr: String,
    /// `Some(true)` for `https://`, `Some(false)` for `http://`, `None` without a scheme.
    tls: Option<bool>,
}

/// `[http://|https://]host:port[/]`. Credentials (`user:pw@`) are refused: gRPC does not
/// use them (they would silently not authenticate) and they would travel to every branch
/// in `dtm-dtm`.
fn parse_target(s: &str) -> Result<Target> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "DTM gRPC server {:?} {why}",
            redact_url(s)
        )))
    };
    let t = s.trim_end_matches('/');
    let (t, tls) = if let Some(rest) = t.strip_prefix("https://") {
        (rest, Some(true))
    } else if let Some(rest) = t.strip_prefix("http://") {
        (rest, Some(false))
    } else {
        (t, None)
    };
    if t.contains('@') {
        return bad("carries credentials (user:password@), which gRPC does not send; pass them as metadata from an interceptor on your own channel (DtmGrpcClientBuilder::channel)");
    }
    let ok = !t.is_empty()
        && !t.contains('/')
        && printable_ascii(t.as_bytes())
        && !t.contains(' ')
        && t.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !ok {
        return bad(
            "must be host:port (for example localhost:36790), optionally with http:// or https://",
        );
    }
    Ok(Target {
        addr: t.to_string(),
        tls,
    })
}

fn endpoint(shared: &Shared, target: &str, scheme: &str) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("{scheme}://{target}"))
        .map_err(|e| Error::invalid(format!("bad gRPC target {:?}: {e}", redact_url(target))))?
        .connect_timeout(shared.limits.connect_timeout())
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

/// The channel to a DTM server: TLS for `https://` (or a scheme-less target when the client
/// talks TLS), plaintext otherwise. Never plaintext for `https://`: without the `tls`
/// feature that is an error.
fn dtm_channel(shared: &Shared, target: &Target) -> Result<Channel> {
    if target.tls.unwrap_or(shared.tls_default) {
        #[cfg(feature = "tls")]
        {
            let tls = shared
                .tls
                .clone()
                .unwrap_or_else(|| tonic::transport::ClientTlsConfig::new().with_enabled_roots());
            return lazy(
                &endpoint(shared, &target.addr, "https")?
                    .tls_config(tls)
                    .map_err(|e| Error::invalid(format!("TLS configuration: {e}")))?,
            );
        }
        #[cfg(not(feature = "tls"))]
        return Err(Error::invalid(format!(
            "DTM gRPC server https://{} asks for TLS, but dtmgrpc was built without its `tls` feature: enable it, or write http:// for plaintext",
            target.addr
        )));
    }
    lazy(&endpoint(shared, &target.addr, "http")?)
}

/// The error of an answer larger than `limit`, or the status read the DTM way. tonic
/// refuses such a message (with `OutOfRange`) from its length prefix, before reading it; the
/// message text is what tells it from a peer's own status.
fn answer_error(target: &str, status: &tonic::Status, limit: usize) -> Error {
    if matches!(
        status.code(),
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
    ) && status
        .message()
        .contains("decoded message length too large")
    {
        return Error::TooLarge {
            url: redact_url(target).into_owned(),
            limit,
        };
    }
    status_to_error(&redact_url(target), status)
}

/// The error of a call that did not end within `timeout`: no answer, not a status.
fn deadline_error(target: &str, timeout: Duration) -> Error {
    Error::grpc_no_answer(
        redact_url(target),
        tonic::Code::DeadlineExceeded as i32,
        format!("none came within {timeout:?}"),
    )
}

/// The gRPC form of an HTTP global-transaction body, field for field (steps `"null"` when
/// there are none, as the Go SDK sends them; payloads as bytes), built by moving the
/// request's fields: only the steps are written anew, as the JSON text DTM's gRPC API takes.
impl From<TransRequest> for DtmRequest {
    fn from(r: TransRequest) -> Self {
        let p = r.into_parts();
        let steps = if p.steps.is_empty() {
            "null".to_string()
        } else {
            serde_json::to_string(p.steps.as_slice()).unwrap_or_else(|_| "null".to_string())
        };
        DtmRequest {
            gid: p.gid,
            trans_type: p.trans_type,
            trans_options: Some(DtmTransOptions {
                wait_result: p.wait_result,
                timeout_to_fail: p.timeout_to_fail,
                retry_interval: p.retry_interval,
                branch_headers: p.branch_headers.into_iter().collect(),
                request_timeout: p.request_timeout,
                retry_limit: p.retry_limit,
            }),
            customed_data: p.custom_data,
            // The builder usually still holds the payloads: then they are shared (a
            // reference count each), not copied.
            bin_payloads: Arc::try_unwrap(p.payloads).unwrap_or_else(|shared| shared.to_vec()),
            query_prepared: p.query_prepared,
            steps,
            req_extra: p.req_extra.into_iter().collect(),
            rollback_reason: p.rollback_reason,
        }
    }
}

/// [`From<TransRequest>`] of a copy, for a request that is still needed.
impl From<&TransRequest> for DtmRequest {
    fn from(r: &TransRequest) -> Self {
        r.clone().into()
    }
}

/// What gRPC adds to the gid rules the modes already checked
/// ([`dtmcli::identity::check_gid`]): printable ASCII, since the gid travels to branches as
/// gRPC metadata (`dtm-gid`).
fn check_gid_is_metadata(gid: &str) -> Result<()> {
    if !printable_ascii(gid.as_bytes()) {
        return Err(Error::invalid(format!(
            "gid {gid:?} must be printable ASCII: it travels to branches as gRPC metadata"
        )));
    }
    Ok(())
}

impl DtmGrpcClient {
    /// A client of the DTM server at `server` (`host:port`, for example `localhost:36790`;
    /// `http://host:port` is the same, `https://host:port` talks TLS and needs the `tls`
    /// feature). Must be called inside a tokio runtime (the channel's worker runs on it).
    pub fn new(server: impl Into<String>) -> Result<Self> {
        Self::builder(server).build()
    }

    /// A builder for a client of `server`.
    pub fn builder(server: impl Into<String>) -> DtmGrpcClientBuilder {
        DtmGrpcClientBuilder {
            target: server.into(),
            channel: None,
            wrap: crate::channel::plain(),
            limits: Limits::default(),
            trusted: TrustedServers::Own,
            #[cfg(feature = "http")]
            http: None,
            api: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The DTM server's address (`host:port`), as sent to branches in `dtm-dtm`.
    pub fn server(&self) -> &str {
        &self.target
    }

    /// The channel to DTM.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// A client of another DTM server, named by a branch request's `dtm-dtm`, sharing this
    /// one's settings and branch channels; this client itself when it is the same server.
    ///
    /// The metadata comes from whoever reached the branch, so the server must be one this
    /// client trusts ([`DtmGrpcClientBuilder::trusted_servers`]; by default only its own):
    /// otherwise [`Error::InvalidInput`], and nothing is sent. See [`dtmcli::trust`].
    pub fn with_server(&self, server: &str) -> Result<Self> {
        let named = parse_target(server)?;
        self.shared
            .trusted
            .check(&self.shared.own, &named.addr, |s| {
                parse_target(s).map_or_else(|_| s.to_string(), |t| t.addr)
            })?;
        if named.addr == *self.target {
            return Ok(self.clone());
        }
        let channel = dtm_channel(&self.shared, &named)?;
        Ok(DtmGrpcClient {
            service: Arc::new((self.shared.wrap)(channel.clone())),
            channel,
            plaintext: !named.tls.unwrap_or(self.shared.tls_default),
            target: named.addr.into(),
            shared: self.shared.clone(),
            // Another server's HTTP API is unknown.
            api: None,
        })
    }

    /// The servers [`DtmGrpcClient::with_server`] accepts.
    pub fn trusted_servers(&self) -> &TrustedServers {
        &self.shared.trusted
    }

    /// The server's HTTP API given to [`DtmGrpcClientBuilder::http_api`] (credentials
    /// redacted), if any.
    pub fn http_api(&self) -> Option<String> {
        self.api.as_ref().map(HttpApi::server)
    }

    /// DTM's stored state of `gid`, read through the server's HTTP API
    /// ([`DtmGrpcClientBuilder::http_api`]); without one, [`Error::InvalidInput`].
    pub async fn query(&self, gid: &str) -> Result<dtmcli::QueryResult> {
        match &self.api {
            Some(api) => api.query(gid).await,
            None => Err(Error::invalid(format!(
                "the gRPC client of {} cannot read DTM's stored state: DTM answers query over HTTP only; give the client the server's HTTP API (DtmGrpcClientBuilder::http_api)",
                redact_url(&self.target)
            ))),
        }
    }

    /// Waits until DTM holds transaction `gid` final, at most `timeout`: `Ok` once it is
    /// `succeed`, [`Error::Failure`] once it is `failed`, [`Error::NotFinal`] when `timeout`
    /// passes first (see `dtmcli::outcome::wait_final`). Needs the server's HTTP API
    /// ([`DtmGrpcClientBuilder::http_api`]).
    pub async fn wait_final(&self, gid: &str, timeout: Duration) -> Result<()> {
        dtmcli::outcome::wait_final(self, gid, timeout).await
    }

    /// The timeout of a call when the transaction sets none.
    pub fn timeout(&self) -> Duration {
        self.shared.limits.timeout()
    }

    /// The client's bounds: call and connect timeouts, answer cap.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The largest answer the client accepts, in bytes.
    pub fn max_answer_bytes(&self) -> usize {
        self.shared.limits.max_answer_bytes()
    }

    /// The call timeout for a transaction request: its `request_timeout` or the client's,
    /// plus the client's with `wait_result` (saturating: no overflow on huge settings).
    pub(crate) fn timeout_for(&self, req: &DtmRequest) -> Duration {
        let o = req.trans_options.as_ref();
        self.shared.limits.dtm_call_timeout(
            o.map_or(0, |o| o.request_timeout),
            o.is_some_and(|o| o.wait_result),
        )
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
        F: FnOnce(DtmStub<InterceptedService<GrpcChannel, TraceContext>>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        // Only errors name the method's full target: no formatting on the success path.
        let target = || format!("{}/dtmgimp.Dtm/{rpc}", self.target);
        let span = dtmcli::trace::call_span("grpc", rpc, gid, &self.target);
        let call = async move {
            let limit = self.shared.limits.max_answer_bytes();
            let stub = DtmStub::with_interceptor(GrpcChannel::clone(&self.service), TraceContext)
                .max_decoding_message_size(limit);
            match tokio::time::timeout(timeout, f(stub)).await {
                Ok(Ok(resp)) => {
                    tracing::debug!("dtm answered OK");
                    Ok(resp.into_inner())
                }
                Ok(Err(status)) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "dtm answered");
                    let addr = self.plaintext.then_some(&*self.target);
                    Err(self.status_error(&target(), &status, addr, true).await)
                }
                Err(_) => Err(deadline_error(&target(), timeout)),
            }
        };
        dtmcli::metrics::dtm_call(rpc, "grpc", call)
            .instrument(span)
            .await
    }

    /// The error of a call to `label` that ended with `status`. When the connection to
    /// `addr` (a plaintext one) broke before any answer, `addr` is asked whether it is an
    /// HTTP/1.1 server, and the error says so if it is (a client pointed at DTM's HTTP port):
    /// tonic's own words for that case are "transport error" or "operation was canceled".
    async fn status_error(
        &self,
        label: &str,
        status: &tonic::Status,
        addr: Option<&str>,
        dtm: bool,
    ) -> Error {
        let limits = &self.shared.limits;
        let err = answer_error(label, status, limits.max_answer_bytes());
        match addr {
            Some(addr) if crate::status::no_answer(status) == Some(NoAnswer::Broken) => {
                crate::probe::explain_broken(err, addr, dtm, limits.connect_timeout()).await
            }
            _ => err,
        }
    }

    /// Asks DTM for a new global id.
    pub async fn new_gid(&self) -> Result<String> {
        let reply = self
            .call(
                "NewGid",
                "",
                self.shared.limits.timeout(),
                |mut s| async move { s.new_gid(()).await },
            )
            .await?;
        if reply.gid.is_empty() {
            return Err(Error::grpc(
                format!("{}/dtmgimp.Dtm/NewGid", self.target),
                tonic::Code::Internal as i32,
                "DTM answered an empty gid",
            ));
        }
        Ok(reply.gid)
    }

    /// `Prepare`: creates the transaction in status `prepared`.
    ///
    /// Like `Submit`, `Abort` and `PrepareWorkflow`, it refuses a gid
    /// [`dtmcli::identity::check_gid`] refuses (an empty one...) with
    /// [`Error::InvalidInput`] before sending; `RegisterBranch` refuses an empty gid.
    pub async fn prepare(&self, req: &DtmRequest) -> Result<()> {
        dtmcli::identity::check_gid(&req.gid)?;
        self.trans_call(DtmOp::Prepare, req.clone()).await
    }

    /// `Submit`: creates or submits the transaction.
    pub async fn submit(&self, req: &DtmRequest) -> Result<()> {
        dtmcli::identity::check_gid(&req.gid)?;
        self.trans_call(DtmOp::Submit, req.clone()).await
    }

    /// `Abort`: rolls back a prepared TCC/XA transaction or fails a prepared msg.
    pub async fn abort(&self, req: &DtmRequest) -> Result<()> {
        dtmcli::identity::check_gid(&req.gid)?;
        self.trans_call(DtmOp::Abort, req.clone()).await
    }

    /// `Prepare`, `Submit` or `Abort` with a request it owns (moved into the call, not
    /// copied).
    /// The gid is checked by the callers: the raw API above, and the modes before they
    /// build a request.
    async fn trans_call(&self, op: DtmOp, r: DtmRequest) -> Result<()> {
        let timeout = self.timeout_for(&r);
        let gid = r.gid.clone();
        match op {
            DtmOp::Prepare => {
                self.call("Prepare", &gid, timeout, |mut s| async move {
                    s.prepare(r).await
                })
                .await
            }
            DtmOp::Submit => {
                self.call(
                    "Submit",
                    &gid,
                    timeout,
                    |mut s| async move { s.submit(r).await },
                )
                .await
            }
            DtmOp::Abort => {
                self.call(
                    "Abort",
                    &gid,
                    timeout,
                    |mut s| async move { s.abort(r).await },
                )
                .await
            }
            other => Err(Error::invalid(format!(
                "{} has no gRPC form in this version of dtmgrpc",
                other.as_str()
            ))),
        }
    }

    /// `RegisterBranch` (tcc: `Data {confirm, cancel}` and the try message as
    /// `BusiPayload`; xa: `Data {url}`; workflow: `Data {op, status}` and the result).
    pub async fn register_branch(&self, req: &DtmBranchRequest) -> Result<()> {
        dtmcli::identity::check_gid_not_empty(&req.gid)?;
        let r = req.clone();
        self.call(
            "RegisterBranch",
            &req.gid,
            self.shared.limits.timeout(),
            |mut s| async move { s.register_branch(r).await },
        )
        .await
    }

    /// `PrepareWorkflow`: creates the workflow transaction or returns it with its recorded
    /// progress. (Over gRPC, DTM never fills `Transaction.Result`.)
    pub async fn prepare_workflow(&self, req: &DtmRequest) -> Result<DtmProgressesReply> {
        dtmcli::identity::check_gid(&req.gid)?;
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
        self.call(
            "Subscribe",
            "",
            self.shared.limits.timeout(),
            |mut s| async move { s.subscribe(r).await },
        )
        .await
    }

    /// Removes a topic subscription.
    pub async fn unsubscribe(&self, topic: &str, url: &str) -> Result<()> {
        let r = DtmTopicRequest {
            topic: topic.to_string(),
            url: url.to_string(),
            remark: String::new(),
        };
        self.call(
            "Unsubscribe",
            "",
            self.shared.limits.timeout(),
            |mut s| async move { s.unsubscribe(r).await },
        )
        .await
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let r = DtmTopicRequest {
            topic: topic.to_string(),
            ..Default::default()
        };
        self.call(
            "DeleteTopic",
            "",
            self.shared.limits.timeout(),
            |mut s| async move { s.delete_topic(r).await },
        )
        .await
    }

    /// The (cached) channel to a branch's gRPC server.
    fn branch_channel(&self, target: &str) -> Result<GrpcChannel> {
        let mut map = self
            .shared
            .branches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(target) {
            return Ok(c.clone());
        }
        let c = (self.shared.wrap)(lazy(&endpoint(&self.shared, target, "http")?)?);
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
    /// rules. The call gets the client's timeout
    /// ([`Error::Grpc`] with code 4, `DeadlineExceeded`, and `answered: false` when it runs
    /// out; so for a branch that cannot be reached, code 14) and answers longer
    /// than [`Limits::with_max_answer_bytes`](dtmcli::Limits::with_max_answer_bytes) are [`Error::TooLarge`].
    pub async fn call_branch_raw(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Bytes,
    ) -> Result<Bytes> {
        self.call_branch_within(url, info, headers, body, self.shared.limits.timeout())
            .await
    }

    /// [`DtmGrpcClient::call_branch_raw`] with this timeout.
    pub(crate) async fn call_branch_within(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let timeout = clamp_timeout(timeout);
        let span = dtmcli::trace::branch_call_span(info, url);
        let call = async move {
            if is_http(url) {
                return self
                    .call_http_branch(url, info, headers, body, timeout)
                    .await;
            }
            let u = parse_branch_url(url)?;
            let path = PathAndQuery::try_from(u.method.as_str()).map_err(|e| {
                Error::invalid(format!("bad gRPC method in {:?}: {e}", redact_url(url)))
            })?;
            let mut req = tonic::Request::new(body);
            *req.metadata_mut() = branch_metadata(info, headers)?;
            // The parent of the branch is this call's span.
            crate::metadata::put_trace_context(req.metadata_mut());
            let limit = self.shared.limits.max_answer_bytes();
            let mut grpc = tonic::client::Grpc::new(self.branch_channel(&u.address)?)
                .max_decoding_message_size(limit);
            // Err(Ok(status)): the call's status; Err(Err(e)): the channel failed first.
            let call = async {
                if let Err(e) = grpc.ready().await {
                    return Err(Err(crate::status::no_answer_error(
                        &redact_url(url),
                        tonic::Code::Unavailable,
                        &e,
                    )));
                }
                grpc.unary(req, path, RawCodec).await.map_err(Ok)
            };
            let out = match tokio::time::timeout(timeout, call).await {
                Ok(Ok(resp)) => Ok(resp.into_inner()),
                Ok(Err(Ok(status))) => Err(self
                    .status_error(url, &status, Some(&u.address), false)
                    .await),
                Ok(Err(Err(e))) => Err(e),
                Err(_) => Err(deadline_error(url, timeout)),
            };
            tracing::debug!(ok = out.is_ok(), "branch answered");
            out
        };
        dtmcli::metrics::branch_call("grpc", call)
            .instrument(span)
            .await
    }

    /// An `http(s)://` branch: POST when there is a body or the branch is XA (phase 2 is a
    /// POST), as DTM does; the shared HTTP branch call otherwise.
    #[cfg(feature = "http")]
    async fn call_http_branch(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let post = !body.is_empty() || info.trans_type == dtmcli::TransType::Xa;
        let body = post.then_some(body);
        let limits = &self.shared.limits;
        let http = &self.shared.http;
        dtmcli::limits::call_http_branch(http, limits, url, info, headers, body, timeout)
            .await
            .map(|(_, bytes)| bytes)
    }

    /// Without the `http` feature, the SDK does not call `http://` branches itself.
    #[cfg(not(feature = "http"))]
    async fn call_http_branch(
        &self,
        url: &str,
        _info: &TransInfo,
        _headers: &BTreeMap<String, String>,
        _body: Bytes,
        _timeout: Duration,
    ) -> Result<Bytes> {
        Err(Error::invalid(format!(
            "{:?} is an http:// branch: calling it needs dtmgrpc's `http` feature",
            redact_url(url)
        )))
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
        self.call_branch_decoded(url, info, headers, body, self.shared.limits.timeout())
            .await
    }

    /// [`DtmGrpcClient::call_branch`] with this timeout.
    pub(crate) async fn call_branch_decoded<Resp: Message + Default>(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Resp> {
        let body = self
            .call_branch_within(url, info, headers, body, timeout)
            .await?;
        decode_answer(url, BranchResponse::new(200, body))
    }
}

/// A branch's answer as the protobuf message `Resp`; an `http(s)://` branch's body is not
/// protobuf, and gives `Resp::default()`.
pub(crate) fn decode_answer<Resp: Message + Default>(
    url: &str,
    answer: BranchResponse,
) -> Result<Resp> {
    if is_http(url) {
        return Ok(Resp::default());
    }
    Resp::decode(answer.body.clone()).map_err(|e| Error::Decode {
        url: redact_url(url).into_owned(),
        reason: format!("not a protobuf {}: {e}", std::any::type_name::<Resp>()),
        body: format!("{} bytes", answer.body.len()),
    })
}

/// gRPC: DTM's gRPC API (`dtmgimp.Dtm`), branch bodies as protobuf messages.
impl Transport for DtmGrpcClient {
    type Encoding = Protobuf;

    fn protocol(&self) -> &'static str {
        "grpc"
    }

    fn server(&self) -> &str {
        &self.target
    }

    fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    fn with_server(&self, server: &str) -> Result<Self> {
        DtmGrpcClient::with_server(self, server)
    }

    /// The gid and the branch headers travel to branches as metadata: both must be valid
    /// there.
    fn check_request(&self, req: &TransRequest) -> Result<()> {
        check_gid_is_metadata(req.gid())?;
        check_branch_headers(req.branch_headers())
    }

    fn check_branch_url(&self, url: &str) -> Result<()> {
        check_branch_url(url)
    }

    fn call_dtm(&self, op: DtmOp, req: TransRequest) -> impl Future<Output = Result<()>> + Send {
        // Converted now, by moving: one message in memory while the call waits.
        self.trans_call(op, DtmRequest::from(req))
    }

    async fn register(&self, reg: &BranchRegistration) -> Result<()> {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (op, data, payload) = match &reg.kind {
            RegistrationKind::Tcc {
                confirm,
                cancel,
                data,
            } => (
                "",
                map(&[("confirm", confirm), ("cancel", cancel)]),
                data.clone(),
            ),
            RegistrationKind::Xa { url } => ("", map(&[("url", url)]), Bytes::new()),
            RegistrationKind::Workflow { op, status, data } => (
                op.as_str(),
                map(&[("status", status), ("op", op), ("sync", "1")]),
                data.clone(),
            ),
            _ => {
                return Err(Error::invalid(
                    "this branch registration has no gRPC form yet",
                ))
            }
        };
        let req = DtmBranchRequest {
            gid: reg.gid.clone(),
            trans_type: reg.trans_type().as_str().to_string(),
            branch_id: reg.branch_id.clone(),
            op: op.to_string(),
            data,
            busi_payload: payload,
        };
        self.register_branch(&req).await
    }

    /// (Over gRPC, DTM never fills the transaction's `result`.)
    async fn prepare_workflow_progress(&self, req: &TransRequest) -> Result<WorkflowProgress> {
        let reply = self.prepare_workflow(&req.into()).await?;
        let mut progress = WorkflowProgress::default();
        progress.transaction = reply.transaction.map(|t| {
            let mut g = TransGlobal::default();
            g.gid = t.gid;
            g.status = t.status;
            g.rollback_reason = t.rollback_reason;
            g.result = t.result;
            g
        });
        progress.progresses = reply
            .progresses
            .into_iter()
            .map(|p| {
                let mut b = TransBranch::default();
                b.branch_id = p.branch_id;
                b.op = p.op;
                b.status = p.status;
                b.bin_data = p.bin_data.to_vec();
                b
            })
            .collect();
        Ok(progress)
    }

    async fn call_branch_bytes(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<BranchResponse> {
        let body = self
            .call_branch_within(url, info, headers, body.unwrap_or_default(), timeout)
            .await?;
        Ok(BranchResponse::new(200, body))
    }

    fn query(&self, gid: &str) -> impl Future<Output = Result<dtmcli::QueryResult>> + Send {
        DtmGrpcClient::query(self, gid)
    }
}

#[cfg(feature = "http")]
impl DtmGrpcClient {
    /// A cluster of DTM servers reached over gRPC: each member is a `(gRPC target, HTTP API
    /// URL)` pair of one server (`("127.0.0.1:36790", "http://127.0.0.1:36789/api/dtmsvr")`),
    /// the HTTP API being what resolves a lost answer (DTM has no gRPC `query`). Each gRPC
    /// member trusts the others. For TLS, layers or other settings, build the members with
    /// [`DtmGrpcClient::builder`] and pair them with [`dtmcli::cluster::WithQuery::new`].
    pub fn cluster(
        servers: &[(&str, &str)],
    ) -> Result<dtmcli::cluster::Cluster<dtmcli::cluster::WithQuery<DtmGrpcClient>>> {
        let trusted = TrustedServers::list(servers.iter().map(|(g, _)| *g));
        let mut members = Vec::with_capacity(servers.len());
        for (grpc, http) in servers {
            let client = DtmGrpcClient::builder(*grpc)
                .trusted_servers(trusted.clone())
                .build()?;
            members.push(dtmcli::cluster::WithQuery::new(
                client,
                dtmcli::DtmClient::new(*http)?,
            ));
        }
        dtmcli::cluster::Cluster::new(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtmcli::{TransOptions, TransType};

    #[test]
    fn http_bodies_convert_field_for_field() {
        let mut r = TransRequest::new(
            "g",
            TransType::Workflow,
            &TransOptions::default()
                .retry_interval(Duration::from_millis(1500))
                .branch_header("h", "v"),
        );
        r.set_custom_data(r#"{"name":"w"}"#);
        r.set_req_extra("result", "cmVz");
        let d = DtmRequest::from(&r);
        assert_eq!((d.gid.as_str(), d.trans_type.as_str()), ("g", "workflow"));
        assert_eq!(d.steps, "null");
        assert_eq!(d.customed_data, r#"{"name":"w"}"#);
        assert_eq!(d.req_extra.get("result").map(String::as_str), Some("cmVz"));
        let o = d.trans_options.unwrap_or_default();
        assert_eq!(o.retry_interval, 2);
        assert_eq!(o.branch_headers.get("h").map(String::as_str), Some("v"));
        r.push_step(BTreeMap::from([("action".into(), "a".into())]), "p");
        let d = DtmRequest::from(&r);
        assert_eq!(d.steps, r#"[{"action":"a"}]"#);
        assert_eq!(d.bin_payloads, vec![b"p".to_vec()]);
    }

    #[test]
    fn targets() {
        let t = |s: &str| parse_target(s).unwrap();
        assert_eq!(t("localhost:36790").addr, "localhost:36790");
        assert_eq!(t("localhost:36790").tls, None);
        assert_eq!(t("http://127.0.0.1:1/").addr, "127.0.0.1:1");
        assert_eq!(t("http://127.0.0.1:1/").tls, Some(false));
        assert_eq!(t("https://dtm:1").tls, Some(true));
        for bad in [
            "",
            "localhost",
            "h:x",
            "h:1/api",
            ":1",
            "h :1",
            "h\t:1",
            "grpc://h:1",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
        // Credentials are refused, and the refusal does not repeat them.
        let e = parse_target("https://user:s3cret@dtm:1").unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[tokio::test]
    async fn request_like_go() {
        let o = TransOptions::default()
            .wait_result(true)
            .timeout_to_fail(Duration::from_millis(1500))
            .retry_interval(Duration::from_secs(3))
            .request_timeout(Duration::from_secs(4))
            .retry_limit(5)
            .branch_header("test_header", "v");
        let c = DtmGrpcClient::new("localhost:1").unwrap();
        let r = DtmRequest::from(&c.saga("g").with_options(o).request().unwrap());
        assert_eq!(r.steps, "null");
        assert_eq!(r.trans_type, "saga");
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
        assert!(c.saga("g").with_options(bad).request().is_err());
    }
}
