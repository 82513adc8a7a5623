//! The HTTP side of the bounds: the HTTP client a builder makes, branch calls within a
//! timeout, answers read up to a cap.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::branch::http_result;
use crate::error::{Error, Result};
use crate::limits::{clamp_timeout, Limits, IDLE_TIMEOUT};
use crate::redact::redact_url;
use crate::types::TransInfo;

/// The HTTP client a builder makes when the user brings none: bounded connects, a bounded
/// idle pool.
pub fn http_client(limits: &Limits) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(limits.connect_timeout())
        .pool_max_idle_per_host(limits.max_idle_per_host())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .build()
        .map_err(|e| Error::invalid(format!("cannot build HTTP client: {e}")))
}

/// Reads the body of `resp` (from a call to `url`) in chunks, refusing with
/// [`Error::TooLarge`] once it exceeds `limit` bytes. A body's `Content-Length` above the
/// limit is refused before reading. The time it takes is bounded by the request's timeout.
pub async fn read_answer(url: &str, mut resp: reqwest::Response, limit: usize) -> Result<Bytes> {
    let too_large = || Error::TooLarge {
        url: redact_url(url).into_owned(),
        limit,
    };
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::transport(url, e))? {
        if buf.len().saturating_add(chunk.len()) > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// One call the SDK makes to an HTTP branch itself (TCC try, XA action, msg back-check, an
/// `http(s)://` branch of a gRPC transaction): the transaction info in the query, `headers`
/// as headers, `body` POSTed as `application/json` (DTM's content type for every payload) or
/// a GET without one. Bounded by `timeout` (reqwest's per-request timeout covers connect,
/// send and the whole body) and `limits`' answer cap; the answer is mapped with DTM's rules
/// ([`http_result`]). Returns the status and body of a success.
pub async fn call_http_branch(
    http: &crate::http::stack::HttpStack,
    limits: &Limits,
    url: &str,
    info: &TransInfo,
    headers: &BTreeMap<String, String>,
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<(u16, Bytes)> {
    let mut req = match body {
        Some(b) => http
            .client()
            .post(url)
            .header("content-type", "application/json")
            .body(b),
        None => http.client().get(url),
    };
    req = req
        .query(&info.query_pairs())
        .timeout(clamp_timeout(timeout));
    // The parent of the branch is this call's span: its context replaces any in the
    // branch headers.
    let trace = crate::trace::context_headers();
    for (k, v) in headers {
        if trace.is_empty() || !crate::trace::is_context_header(k) {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    for (k, v) in trace {
        req = req.header(k, v);
    }
    let resp = http.send(url, req).await?;
    let status = resp.status().as_u16();
    let body = read_answer(url, resp, limits.max_answer_bytes()).await?;
    tracing::debug!(status, "branch answered");
    http_result(&redact_url(url), status, &body)?;
    Ok((status, body))
}
