//! JSON shapes exchanged with the DTM server, exactly as the Go SDK writes them.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::options::{secs, TransOptions};
use crate::types::TransType;

/// A list a builder and the requests it makes share: cloned by reference count, changed
/// in place while only one holds it ([`Arc::make_mut`]).
pub(crate) type Shared<T> = Arc<Vec<T>>;

fn is_empty<T>(v: &Shared<T>) -> bool {
    v.is_empty()
}

fn shared_as_seq<S: serde::Serializer, T: Serialize>(
    v: &Shared<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    v.as_slice().serialize(s)
}

fn shared_from_seq<'de, D, T>(d: D) -> Result<Shared<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Arc::new(
        Option::<Vec<T>>::deserialize(d)?.unwrap_or_default(),
    ))
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The global-transaction body of `prepare`, `submit`, `abort` and `prepareWorkflow`.
///
/// Field order, key names and omission rules follow the Go SDK's `TransBase`: options are
/// flat top-level keys, zero options are omitted, `concurrent` and `protocol` are always
/// present.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransRequest {
    /// Global id.
    pub(crate) gid: String,
    /// `saga`, `msg`, `tcc`, `xa` or `workflow`.
    pub(crate) trans_type: String,
    /// Mode-specific JSON text (saga concurrency and orders, msg delay, workflow name/data).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) custom_data: String,
    /// Run synchronously inside the request.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) wait_result: bool,
    /// Seconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) timeout_to_fail: i64,
    /// Seconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) request_timeout: i64,
    /// Seconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) retry_interval: i64,
    /// Headers for branch calls.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) branch_headers: BTreeMap<String, String>,
    /// msg: run branches concurrently. Always sent.
    #[serde(default)]
    pub(crate) concurrent: bool,
    /// Saga retry limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) retry_limit: i64,
    /// Server-side counter; clients leave it 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) retry_count: i64,
    /// Steps: `{"action":..,"compensate":..}` (saga) or `{"action":..}` (msg). Shared: a
    /// request cloned per send (a cluster's attempts, a builder submitted again) does not
    /// copy them.
    #[serde(
        default,
        skip_serializing_if = "is_empty",
        serialize_with = "shared_as_seq",
        deserialize_with = "shared_from_seq"
    )]
    pub(crate) steps: Shared<BTreeMap<String, String>>,
    /// One payload per step, as encoded by the transaction's encoding: JSON text travels as
    /// strings over HTTP (a payload that is not UTF-8 cannot be sent there), bytes over gRPC.
    /// Shared like the steps.
    #[serde(
        default,
        skip_serializing_if = "is_empty",
        serialize_with = "payloads_as_text",
        deserialize_with = "payloads_from_text"
    )]
    pub(crate) payloads: Shared<Bytes>,
    /// msg back-check URL / workflow callback URL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) query_prepared: String,
    /// `""`/`http`, `grpc`, `json-rpc`. Always sent.
    #[serde(default)]
    pub(crate) protocol: String,
    /// Reason recorded on abort.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) rollback_reason: String,
    /// Workflow submit: status, rollback_reason and result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) req_extra: BTreeMap<String, String>,
}

/// A [`TransRequest`] taken apart ([`TransRequest::into_parts`]), its fields moved out: for
/// a transport that lays a request out its own way (gRPC's `DtmRequest`, a user's own
/// transport) without copying its strings, steps or payloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransParts {
    /// Global id.
    pub gid: String,
    /// `saga`, `msg`, `tcc`, `xa` or `workflow`.
    pub trans_type: String,
    /// Mode-specific JSON text.
    pub custom_data: String,
    /// Run synchronously inside the request.
    pub wait_result: bool,
    /// Seconds (0: DTM's default).
    pub timeout_to_fail: i64,
    /// Seconds (0: DTM's default).
    pub request_timeout: i64,
    /// Seconds (0: DTM's default).
    pub retry_interval: i64,
    /// Headers for branch calls.
    pub branch_headers: BTreeMap<String, String>,
    /// msg: run branches concurrently.
    pub concurrent: bool,
    /// Saga retry limit.
    pub retry_limit: i64,
    /// The steps, shared with the builder that made them.
    pub steps: Arc<Vec<BTreeMap<String, String>>>,
    /// One payload per step, shared likewise.
    pub payloads: Arc<Vec<Bytes>>,
    /// msg back-check URL / workflow callback URL.
    pub query_prepared: String,
    /// `""`/`http`, `grpc`, `json-rpc`.
    pub protocol: String,
    /// Reason recorded on abort.
    pub rollback_reason: String,
    /// Workflow submit: status, rollback_reason and result.
    pub req_extra: BTreeMap<String, String>,
}

impl TransRequest {
    /// The request's fields, moved out (see [`TransParts`]).
    pub fn into_parts(self) -> TransParts {
        TransParts {
            gid: self.gid,
            trans_type: self.trans_type,
            custom_data: self.custom_data,
            wait_result: self.wait_result,
            timeout_to_fail: self.timeout_to_fail,
            request_timeout: self.request_timeout,
            retry_interval: self.retry_interval,
            branch_headers: self.branch_headers,
            concurrent: self.concurrent,
            retry_limit: self.retry_limit,
            steps: self.steps,
            payloads: self.payloads,
            query_prepared: self.query_prepared,
            protocol: self.protocol,
            rollback_reason: self.rollback_reason,
            req_extra: self.req_extra,
        }
    }

    /// A body for `gid` / `trans_type` carrying `options`, and (feature `opentelemetry`) the
    /// current span's trace context in its branch headers, which DTM adds to every branch
    /// call ([`crate::trace`]).
    pub fn new(gid: &str, trans_type: TransType, options: &TransOptions) -> Self {
        let mut r = TransRequest {
            gid: gid.to_string(),
            trans_type: trans_type.as_str().to_string(),
            ..Default::default()
        };
        r.apply_options(options);
        crate::trace::inject_branch_headers(&mut r.branch_headers);
        r
    }

    /// Global id.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// `saga`, `msg`, `tcc`, `xa` or `workflow`.
    pub fn trans_type(&self) -> &str {
        &self.trans_type
    }

    /// Mode-specific JSON text (saga concurrency and orders, msg delay, workflow name/data).
    pub fn custom_data(&self) -> &str {
        &self.custom_data
    }

    /// Sets the mode-specific JSON text.
    pub fn set_custom_data(&mut self, custom_data: impl Into<String>) {
        self.custom_data = custom_data.into();
    }

    /// Whether DTM runs the transaction inside the request.
    pub fn wait_result(&self) -> bool {
        self.wait_result
    }

    /// `timeout_to_fail` in whole seconds (0: DTM's default).
    pub fn timeout_to_fail(&self) -> i64 {
        self.timeout_to_fail
    }

    /// `request_timeout` in whole seconds (0: DTM's default).
    pub fn request_timeout(&self) -> i64 {
        self.request_timeout
    }

    /// `retry_interval` in whole seconds (0: DTM's default).
    pub fn retry_interval(&self) -> i64 {
        self.retry_interval
    }

    /// Headers DTM adds to its branch calls.
    pub fn branch_headers(&self) -> &BTreeMap<String, String> {
        &self.branch_headers
    }

    /// msg: whether DTM runs the branches concurrently.
    pub fn concurrent(&self) -> bool {
        self.concurrent
    }

    /// The retry limit (0: none).
    pub fn retry_limit(&self) -> i64 {
        self.retry_limit
    }

    /// Steps: `{"action":..,"compensate":..}` (saga) or `{"action":..}` (msg).
    pub fn steps(&self) -> &[BTreeMap<String, String>] {
        &self.steps
    }

    /// Appends a step and its payload (they stay one payload per step).
    pub fn push_step(&mut self, step: BTreeMap<String, String>, payload: impl Into<Bytes>) {
        Arc::make_mut(&mut self.steps).push(step);
        Arc::make_mut(&mut self.payloads).push(payload.into());
    }

    /// One payload per step, as the transaction's encoding wrote it.
    pub fn payloads(&self) -> &[Bytes] {
        &self.payloads
    }

    /// msg back-check URL / workflow callback URL.
    pub fn query_prepared(&self) -> &str {
        &self.query_prepared
    }

    /// Sets the msg back-check URL / workflow callback URL.
    pub fn set_query_prepared(&mut self, url: impl Into<String>) {
        self.query_prepared = url.into();
    }

    /// `""`/`http`, `grpc`, `json-rpc`.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// Sets the protocol DTM uses to call the branches back.
    pub fn set_protocol(&mut self, protocol: impl Into<String>) {
        self.protocol = protocol.into();
    }

    /// Reason recorded on abort.
    pub fn rollback_reason(&self) -> &str {
        &self.rollback_reason
    }

    /// Sets the reason recorded on abort.
    pub fn set_rollback_reason(&mut self, reason: impl Into<String>) {
        self.rollback_reason = reason.into();
    }

    /// Workflow submit: status, rollback_reason and result.
    pub fn req_extra(&self) -> &BTreeMap<String, String> {
        &self.req_extra
    }

    /// Sets one `req_extra` entry (workflow submit: status, rollback_reason, result).
    pub fn set_req_extra(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.req_extra.insert(key.into(), value.into());
    }

    /// Copies the options into their flat wire fields.
    pub fn apply_options(&mut self, o: &TransOptions) {
        self.wait_result = o.wait_result;
        self.timeout_to_fail = secs(o.timeout_to_fail);
        self.request_timeout = secs(o.request_timeout);
        self.retry_interval = secs(o.retry_interval);
        self.retry_limit = o.retry_limit.map(i64::from).unwrap_or(0);
        self.branch_headers = o.branch_headers.clone();
    }
}

/// A global transaction as `query` returns it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
#[non_exhaustive]
pub struct TransGlobal {
    /// Global id.
    pub gid: String,
    /// Mode.
    pub trans_type: String,
    /// `prepared`, `submitted`, `aborting`, `succeed` or `failed`.
    pub status: String,
    /// `http` or `grpc`.
    pub protocol: String,
    /// Steps as stored.
    #[serde(deserialize_with = "null_default")]
    pub steps: Vec<BTreeMap<String, String>>,
    /// Payloads as stored.
    #[serde(deserialize_with = "null_default")]
    pub payloads: Vec<String>,
    /// Back-check / callback URL.
    pub query_prepared: String,
    /// Custom data as stored.
    pub custom_data: String,
    /// Stored options (a JSON text).
    pub options: String,
    /// Why it rolled back.
    pub rollback_reason: String,
    /// Workflow result (base64).
    pub result: String,
    /// Creation time (RFC 3339).
    pub create_time: Option<String>,
    /// Finish time (RFC 3339).
    pub finish_time: Option<String>,
    /// When it was rolled back (RFC 3339): the end of a `failed` transaction.
    pub rollback_time: Option<String>,
    /// Next retry (RFC 3339).
    pub next_cron_time: Option<String>,
    /// Current retry interval in seconds.
    pub next_cron_interval: i64,
    /// Effective branch headers.
    #[serde(deserialize_with = "null_default")]
    pub branch_headers: BTreeMap<String, String>,
    /// Effective timeout_to_fail (seconds).
    pub timeout_to_fail: i64,
    /// Effective retry_interval (seconds).
    pub retry_interval: i64,
    /// Effective request_timeout (seconds).
    pub request_timeout: i64,
    /// Effective retry_limit.
    pub retry_limit: i64,
}

impl TransGlobal {
    /// The typed status.
    pub fn status(&self) -> TransStatus {
        TransStatus::parse(&self.status)
    }
}

/// A branch row as `query` returns it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
#[non_exhaustive]
pub struct TransBranch {
    /// Global id.
    pub gid: String,
    /// Branch id.
    pub branch_id: String,
    /// Op of this row.
    pub op: String,
    /// URL called for it.
    pub url: String,
    /// `prepared`, `succeed` or `failed`.
    pub status: String,
    /// Stored body (base64 on the wire, decoded here).
    #[serde(deserialize_with = "base64_bytes")]
    pub bin_data: Vec<u8>,
    /// Finish time (RFC 3339).
    pub finish_time: Option<String>,
}

/// The answer of `query`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
#[non_exhaustive]
pub struct QueryResult {
    /// The transaction; `None` when DTM does not know the gid.
    pub transaction: Option<TransGlobal>,
    /// Its branch rows in storage order.
    #[serde(deserialize_with = "null_default")]
    pub branches: Vec<TransBranch>,
}

/// The answer of `prepareWorkflow`: the workflow transaction and every branch result DTM
/// recorded for it (its "progresses").
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
#[non_exhaustive]
pub struct WorkflowProgress {
    /// The transaction (`None` if DTM answered without one).
    pub transaction: Option<TransGlobal>,
    /// The recorded branch rows.
    #[serde(deserialize_with = "null_default")]
    pub progresses: Vec<TransBranch>,
}

/// Global transaction status.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransStatus {
    /// Created, not submitted.
    Prepared,
    /// Submitted, being processed.
    Submitted,
    /// Rolling back.
    Aborting,
    /// Finished successfully.
    Succeed,
    /// Finished rolled back.
    Failed,
    /// Something this SDK does not know.
    Other(String),
}

impl TransStatus {
    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Self {
        match s {
            "prepared" => TransStatus::Prepared,
            "submitted" => TransStatus::Submitted,
            "aborting" => TransStatus::Aborting,
            "succeed" => TransStatus::Succeed,
            "failed" => TransStatus::Failed,
            o => TransStatus::Other(o.to_string()),
        }
    }
    /// The wire spelling (`prepared`, `submitted`, `aborting`, `succeed`, `failed`, or
    /// what DTM sent).
    pub fn as_str(&self) -> &str {
        match self {
            TransStatus::Prepared => "prepared",
            TransStatus::Submitted => "submitted",
            TransStatus::Aborting => "aborting",
            TransStatus::Succeed => "succeed",
            TransStatus::Failed => "failed",
            TransStatus::Other(o) => o,
        }
    }

    /// True for `succeed` and `failed`.
    pub fn is_final(&self) -> bool {
        matches!(self, TransStatus::Succeed | TransStatus::Failed)
    }
}

/// Checks that every payload is text, as DTM's JSON API carries payloads: a typed
/// [`crate::Error::InvalidInput`] before anything is sent, rather than a serializer error
/// from inside the HTTP client.
#[cfg(feature = "http")]
pub(crate) fn check_text_payloads(req: &TransRequest) -> crate::Result<()> {
    match req.payloads.iter().position(|p| std::str::from_utf8(p).is_err()) {
        None => Ok(()),
        Some(i) => Err(crate::Error::invalid(format!(
            "payload {i} of {} is not UTF-8 text, which DTM's JSON API cannot carry: send it over gRPC",
            req.gid
        ))),
    }
}

fn payloads_as_text<S: serde::Serializer>(p: &Shared<Bytes>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::{Error, SerializeSeq};
    let mut seq = s.serialize_seq(Some(p.len()))?;
    for b in p.iter() {
        let text = std::str::from_utf8(b)
            .map_err(|_| S::Error::custom("a payload is not UTF-8 text: send it over gRPC"))?;
        seq.serialize_element(text)?;
    }
    seq.end()
}

fn payloads_from_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Shared<Bytes>, D::Error> {
    let v = Option::<Vec<String>>::deserialize(d)?.unwrap_or_default();
    Ok(Arc::new(v.into_iter().map(Bytes::from).collect()))
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn base64_bytes<'de, D>(d: D) -> Result<Vec<u8>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use base64::Engine;
    let s = Option::<String>::deserialize(d)?.unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(s.as_bytes())
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn saga_body_matches_go() {
        let mut r = TransRequest::new("g1", TransType::Saga, &TransOptions::default());
        Arc::make_mut(&mut r.steps).push(BTreeMap::from([
            ("action".to_string(), "http://h/TransOut".to_string()),
            (
                "compensate".to_string(),
                "http://h/TransOutRevert".to_string(),
            ),
        ]));
        Arc::make_mut(&mut r.payloads).push(Bytes::from_static(b"{\"amount\":30}"));
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"gid":"g1","trans_type":"saga","concurrent":false,"steps":[{"action":"http://h/TransOut","compensate":"http://h/TransOutRevert"}],"payloads":["{\"amount\":30}"],"protocol":""}"#
        );
    }

    #[test]
    fn options_are_flat() {
        let o = TransOptions::default()
            .wait_result(true)
            .timeout_to_fail(Duration::from_secs(5))
            .retry_interval(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(3))
            .retry_limit(4)
            .branch_header("test_header", "v");
        let r = TransRequest::new("g", TransType::Tcc, &o);
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"gid":"g","trans_type":"tcc","wait_result":true,"timeout_to_fail":5,"request_timeout":3,"retry_interval":2,"branch_headers":{"test_header":"v"},"concurrent":false,"retry_limit":4,"protocol":""}"#
        );
    }

    #[test]
    fn query_parses_leniently() {
        let q: QueryResult = serde_json::from_str(
            r#"{"branches":null,"transaction":{"gid":"g","status":"succeed","steps":null,"unknown":1}}"#,
        )
        .unwrap();
        assert_eq!(q.transaction.unwrap().status(), TransStatus::Succeed);
        let q: QueryResult =
            serde_json::from_str(r#"{"branches":[{"bin_data":"eyJhIjoxfQ==","op":"action"}]}"#)
                .unwrap();
        assert_eq!(q.branches[0].bin_data, br#"{"a":1}"#);
        assert!(q.transaction.is_none());
    }
}
