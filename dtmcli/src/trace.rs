//! Tracing: the spans the SDK opens, and (feature `opentelemetry`) W3C trace context carried
//! through DTM, so that one global transaction is one trace across every service it touches.
//!
//! # Spans
//!
//! All at level INFO; names and fields follow OpenTelemetry's semantic conventions where one
//! exists (`otel.kind`, `rpc.system`, `rpc.method`, `server.address`, `url.full`, `url.path`),
//! DTM's own fields are `dtm.*`. Fields read from a peer are capped at 256 characters.
//!
//! | span | opened for | fields |
//! |---|---|---|
//! | `dtm.transaction` | each global transaction this process starts: saga and msg submit, msg prepare, TCC/XA `run`, workflow `execute` | `dtm.gid`, `dtm.trans_type`, `rpc.system` |
//! | `dtm.call` | each call to DTM (HTTP, gRPC, JSON-RPC) | `otel.kind = client`, `rpc.system`, `rpc.method`, `server.address`, `dtm.gid` |
//! | `dtm.branch.call` | each branch this SDK calls itself (TCC try, XA action, workflow steps) | `otel.kind = client`, `url.full` (redacted), `dtm.gid`, `dtm.branch_id`, `dtm.op` |
//! | `dtm.workflow.step` | each recorded workflow step (local, HTTP, gRPC, XA), run or replayed | `dtm.gid`, `dtm.branch_id`, `dtm.op`, `dtm.step.kind`, `dtm.step.replayed` |
//! | `dtm.branch` | each incoming branch call, opened by [`BranchSpanLayer`] on an axum or tonic server | `otel.kind = server`, `url.path`, `dtm.gid`, `dtm.trans_type`, `dtm.branch_id`, `dtm.op` |
//!
//! Spans cost one check per call site when no subscriber listens.
//!
//! # One trace per global transaction (feature `opentelemetry`)
//!
//! With a `tracing-opentelemetry` layer installed, the SDK writes the W3C `traceparent` and
//! `tracestate` of the current span:
//! - into the transaction's branch headers when it prepares or submits one (the context of
//!   its `dtm.transaction` span), which DTM stores and adds to every branch call it makes,
//!   retries hours later included (HTTP headers, gRPC metadata), and to the workflow resume
//!   callback; a `traceparent` the caller set in the branch headers is kept;
//! - into every call to DTM and every branch call the SDK makes (the context of its
//!   `dtm.call` / `dtm.branch.call` / `dtm.workflow.step` span).
//!
//! [`BranchSpanLayer`] reads them back on the branch side and makes its `dtm.branch` span a
//! child: the initiator's `dtm.transaction` span is the parent of every branch execution,
//! whichever process and protocol runs it. A malformed `traceparent` from a peer is ignored
//! (the span starts a new trace). Without the feature nothing is written or read, and the
//! bytes on the wire are the Go SDK's.

use std::collections::BTreeMap;
use std::task::{Context, Poll};

use tracing::field::Empty;
use tracing::instrument::Instrumented;
use tracing::{Instrument, Span};

use crate::types::TransInfo;

/// The W3C header carrying the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendor trace state.
pub const TRACESTATE: &str = "tracestate";

/// Longest value of a peer-supplied field recorded in a span.
const MAX_FIELD: usize = 256;

fn capped(s: &str) -> &str {
    match s.char_indices().nth(MAX_FIELD) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// OpenTelemetry's `rpc.system` for DTM's protocol name (`json-rpc` is `jsonrpc` there).
fn rpc_system_of(protocol: &str) -> &str {
    match protocol {
        "json-rpc" => "jsonrpc",
        p => p,
    }
}

/// The span of a global transaction this process starts over `protocol` (DTM's name:
/// `http`, `grpc`, `json-rpc`; see the module docs).
#[doc(hidden)]
pub fn transaction_span(trans_type: &str, gid: &str, protocol: &str) -> Span {
    let rpc_system = rpc_system_of(protocol);
    tracing::info_span!(
        "dtm.transaction",
        otel.name = %format_args!("dtm {trans_type}"),
        dtm.gid = %capped(gid),
        dtm.trans_type = %trans_type,
        rpc.system = %rpc_system,
    )
}

/// The span of one call to DTM: `method` is DTM's operation (`submit`, `registerBranch`...).
#[doc(hidden)]
pub fn call_span(rpc_system: &str, method: &str, gid: &str, server: &str) -> Span {
    tracing::info_span!(
        "dtm.call",
        otel.name = %format_args!("dtm {method}"),
        otel.kind = "client",
        rpc.system = %rpc_system,
        rpc.method = %method,
        server.address = %crate::redact::redact_url(server),
        dtm.gid = %capped(gid),
    )
}

/// The span of one branch call this SDK makes (TCC try, XA action, workflow step).
#[doc(hidden)]
pub fn branch_call_span(info: &TransInfo, url: &str) -> Span {
    tracing::info_span!(
        "dtm.branch.call",
        otel.name = %format_args!("dtm branch {}", info.op.as_str()),
        otel.kind = "client",
        url.full = %crate::redact::redact_url(url),
        dtm.gid = %capped(&info.gid),
        dtm.branch_id = %capped(&info.branch_id),
        dtm.op = %info.op.as_str(),
    )
}

/// Calls `set(name, value)` with the W3C trace context of the current span (nothing
/// without feature `opentelemetry`, or when the span has no OpenTelemetry context).
pub fn inject_current(set: impl FnMut(&str, String)) {
    #[cfg(feature = "opentelemetry")]
    otel::inject(&Span::current(), set);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = set;
}

/// The current span's W3C trace context as header pairs, for a request about to be sent
/// (empty without feature `opentelemetry` or without a context).
#[doc(hidden)]
pub fn context_headers() -> Vec<(String, String)> {
    let mut out = Vec::new();
    inject_current(|k, v| out.push((k.to_string(), v)));
    out
}

/// Writes the current span's W3C trace context into `headers`, replacing any there (nothing
/// without feature `opentelemetry` or without a context).
#[doc(hidden)]
pub fn put_context(headers: &mut http::HeaderMap) {
    for (k, v) in context_headers() {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            headers.insert(k, v);
        }
    }
}

/// Whether `name` is a W3C trace-context header (`traceparent`, `tracestate`).
#[doc(hidden)]
pub fn is_context_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(TRACEPARENT) || name.eq_ignore_ascii_case(TRACESTATE)
}

/// Adds the current span's W3C trace context to a transaction's branch headers, so that DTM
/// carries it to every branch; a `traceparent` already there (set by the caller) is kept.
#[doc(hidden)]
pub fn inject_branch_headers(headers: &mut BTreeMap<String, String>) {
    let present = headers.keys().any(|k| k.eq_ignore_ascii_case(TRACEPARENT));
    if present {
        return;
    }
    inject_current(|k, v| {
        headers.insert(k.to_string(), v);
    });
}

/// Makes `span` a child of the W3C trace context in `headers` (no-op without feature
/// `opentelemetry` or without a valid `traceparent`).
pub fn set_parent_from_headers(span: &Span, headers: &http::HeaderMap) {
    #[cfg(feature = "opentelemetry")]
    otel::set_parent(span, headers);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, headers);
}

/// Where an incoming branch call carries its transaction's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentitySource {
    /// The query string (`gid`, `trans_type`, `branch_id`, `op`): DTM's HTTP branch calls.
    /// A JSON-RPC branch call carries them in its body instead: the span's fields stay
    /// empty until [`crate::jsonrpc::BranchCall::parse`] records them.
    Query,
    /// Request headers with these names: gRPC metadata (`dtm-gid`, ...; see dtmgrpc).
    Headers {
        /// Header of the gid.
        gid: &'static str,
        /// Header of the transaction type.
        trans_type: &'static str,
        /// Header of the branch id.
        branch_id: &'static str,
        /// Header of the op.
        op: &'static str,
    },
}

/// A tower layer for axum and tonic servers of branch handlers: each branch call runs in a
/// `dtm.branch` span (see the module docs), whose parent is the trace context the request
/// carries (feature `opentelemetry`). Only requests that carry a branch call's identity get
/// one (DTM's `gid` in the query or metadata, or a JSON-RPC `?method=`): on a whole router,
/// its ordinary routes (`GET /balances`) pass through without a span.
///
/// ```no_run
/// # #[cfg(feature = "axum")]
/// # fn app(router: axum::Router) -> axum::Router {
/// // HTTP branch handlers: the identity comes from the query.
/// router.layer(dtmcli::trace::BranchSpanLayer::http())
/// # }
/// ```
///
/// For tonic servers, `dtmgrpc::branch_span_layer()` reads DTM's gRPC metadata instead.
#[derive(Debug, Clone, Copy)]
pub struct BranchSpanLayer {
    source: IdentitySource,
}

impl BranchSpanLayer {
    /// For HTTP and JSON-RPC branch handlers.
    pub fn http() -> Self {
        BranchSpanLayer {
            source: IdentitySource::Query,
        }
    }

    /// Reading the identity from `source`.
    pub fn new(source: IdentitySource) -> Self {
        BranchSpanLayer { source }
    }
}

impl<S> tower_layer::Layer<S> for BranchSpanLayer {
    type Service = BranchSpan<S>;

    fn layer(&self, inner: S) -> BranchSpan<S> {
        BranchSpan {
            inner,
            source: self.source,
        }
    }
}

/// The service of [`BranchSpanLayer`].
#[derive(Debug, Clone)]
pub struct BranchSpan<S> {
    inner: S,
    source: IdentitySource,
}

impl<S, B> tower_service::Service<http::Request<B>> for BranchSpan<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let uri = req.uri();
        if !is_branch_call(self.source, uri.query(), req.headers()) {
            // An ordinary route of the same router (`GET /balances`): no branch span.
            return self.inner.call(req).instrument(Span::none());
        }
        let span = incoming_span(self.source, uri.path(), uri.query(), req.headers());
        let _entered = span.enter();
        let fut = self.inner.call(req);
        drop(_entered);
        fut.instrument(span)
    }
}

/// True when a request carries a branch call's identity: DTM's `gid` in the query (HTTP) or
/// in the metadata (gRPC), or a JSON-RPC `method` in the query (DTM's JSON-RPC branch calls,
/// whose identity is in the body).
fn is_branch_call(source: IdentitySource, query: Option<&str>, headers: &http::HeaderMap) -> bool {
    match source {
        IdentitySource::Query => form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .any(|(k, v)| (k == "gid" || k == "method") && !v.is_empty()),
        IdentitySource::Headers { gid, .. } => headers.get(gid).is_some_and(|v| !v.is_empty()),
    }
}

/// The `dtm.branch` span of an incoming branch call to `path` (with `query`, and `headers`
/// where gRPC metadata travels), a child of the trace context the headers carry (feature
/// `opentelemetry`). [`BranchSpanLayer`] opens it for every branch call; a handler outside
/// such a layer (a tonic service method) can open it itself.
#[doc(hidden)]
pub fn incoming_span(
    source: IdentitySource,
    path: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
) -> Span {
    let path = capped(path);
    let span = tracing::info_span!(
        "dtm.branch",
        otel.name = %format_args!("dtm branch {path}"),
        otel.kind = "server",
        url.path = %path,
        dtm.gid = Empty,
        dtm.trans_type = Empty,
        dtm.branch_id = Empty,
        dtm.op = Empty,
    );
    let record = |field: &str, value: &str| {
        if !value.is_empty() {
            span.record(field, capped(value));
        }
    };
    match source {
        IdentitySource::Query => {
            for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
                match &*k {
                    "gid" => record("dtm.gid", &v),
                    "trans_type" => record("dtm.trans_type", &v),
                    "branch_id" => record("dtm.branch_id", &v),
                    "op" => record("dtm.op", &v),
                    _ => {}
                }
            }
        }
        IdentitySource::Headers {
            gid,
            trans_type,
            branch_id,
            op,
        } => {
            for (field, name) in [
                ("dtm.gid", gid),
                ("dtm.trans_type", trans_type),
                ("dtm.branch_id", branch_id),
                ("dtm.op", op),
            ] {
                if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                    record(field, v);
                }
            }
        }
    }
    set_parent_from_headers(&span, headers);
    span
}

/// Records a JSON-RPC branch call's identity on the current `dtm.branch` span (the layer
/// cannot read the body).
#[cfg(feature = "http")]
pub(crate) fn record_identity(info: &TransInfo) {
    let span = Span::current();
    span.record("dtm.gid", capped(&info.gid));
    span.record("dtm.trans_type", info.trans_type.as_str());
    span.record("dtm.branch_id", capped(&info.branch_id));
    span.record("dtm.op", info.op.as_str());
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    struct Setter<F>(F);

    impl<F: FnMut(&str, String)> Injector for Setter<F> {
        fn set(&mut self, key: &str, value: String) {
            (self.0)(key, value)
        }
    }

    struct Headers<'a>(&'a http::HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }

    pub(super) fn inject(span: &Span, set: impl FnMut(&str, String)) {
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return;
        }
        TraceContextPropagator::new().inject_context(&cx, &mut Setter(set));
    }

    pub(super) fn set_parent(span: &Span, headers: &http::HeaderMap) {
        let cx = TraceContextPropagator::new().extract(&Headers(headers));
        if cx.span().span_context().is_valid() {
            // Fails only when the span is disabled or already started elsewhere: no parent then.
            let _ = span.set_parent(cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_with_a_branch_identity_are_branch_calls() {
        let q = IdentitySource::Query;
        let none = http::HeaderMap::new();
        assert!(is_branch_call(q, Some("gid=g1&op=action"), &none));
        assert!(is_branch_call(q, Some("method=TransOut"), &none));
        assert!(!is_branch_call(q, None, &none));
        assert!(!is_branch_call(q, Some("x=1&gid="), &none));
        let h = IdentitySource::Headers {
            gid: "dtm-gid",
            trans_type: "dtm-trans_type",
            branch_id: "dtm-branch_id",
            op: "dtm-op",
        };
        assert!(!is_branch_call(h, Some("gid=g1"), &none));
        let mut md = http::HeaderMap::new();
        md.insert("dtm-gid", "g1".parse().unwrap());
        assert!(is_branch_call(h, None, &md));
    }

    #[test]
    fn caps_peer_fields_on_char_boundaries() {
        assert_eq!(capped("abc"), "abc");
        let long = "é".repeat(300);
        assert_eq!(capped(&long).chars().count(), MAX_FIELD);
    }

    #[test]
    fn a_caller_traceparent_is_kept() {
        let mut h = BTreeMap::from([("TraceParent".to_string(), "00-x".to_string())]);
        inject_branch_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["TraceParent"], "00-x");
    }

    #[test]
    fn without_a_trace_nothing_is_added() {
        let mut h = BTreeMap::new();
        inject_branch_headers(&mut h);
        assert!(h.is_empty());
    }
}
