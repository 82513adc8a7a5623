//! JSON-RPC, DTM's third protocol: `POST <dtm>/api/json-rpc` with
//! `{"jsonrpc":"2.0","id":..,"method":<op>,"params":<the HTTP body>}`.
//!
//! [`JsonRpcClient`] is one more [`Transport`]: saga, msg, TCC and XA run over it unchanged
//! ([`JsonRpcClient::saga`], [`JsonRpcClient::msg`], [`crate::Tcc::run`], [`crate::Xa::run`]). Transactions it creates carry `protocol: "json-rpc"`, so
//! DTM calls their branches with a JSON-RPC envelope when a branch URL names a `method`
//! query parameter (`http://svc/jrpc?method=TransIn`), and over plain HTTP otherwise;
//! [`BranchCall`] and [`answer`] are the branch side. DTM has no `prepareWorkflow` over
//! JSON-RPC, so workflows need HTTP or gRPC.
//!
//! Outcomes: error code [`FAILURE_CODE`] (-32901) is [`Error::Failure`], [`ONGOING_CODE`]
//! (-32902) is [`Error::Ongoing`], any other error object is [`Error::JsonRpc`] (retryable).
//! (DTM v1.19.0 itself compares a branch's error code as a float against an integer and so
//! never matches: it recognises a branch's FAILURE by the word in the answer, which
//! [`answer`] always writes in the message.)

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{truncate_body, Error, Result};
use crate::http::client::DtmClient;
use crate::limits::Limits;
use crate::msg::Msg;
use crate::redact::redact_url;
use crate::saga::Saga;
use crate::transport::BranchResponse;
use crate::transport::{BranchRegistration, DtmOp, Json, Transport};
use crate::types::TransInfo;
use crate::wire::{TransRequest, WorkflowProgress};

/// The JSON-RPC error code of DTM's FAILURE: roll back.
pub const FAILURE_CODE: i64 = -32901;
/// The JSON-RPC error code of DTM's ONGOING: ask again later.
pub const ONGOING_CODE: i64 = -32902;
/// The JSON-RPC error code of any other (retryable) error.
pub const INTERNAL_CODE: i64 = -32603;

/// The protocol name DTM stores for JSON-RPC transactions.
const PROTOCOL: &str = "json-rpc";
/// Where DTM serves JSON-RPC.
const JSON_RPC_PATH: &str = "/api/json-rpc";

/// A client of DTM's JSON-RPC API (`http://host:36789/api/json-rpc`). It is a
/// [`DtmClient`] pointed at that URL, so it has the same settings, bounds, trust rules and
/// connection pool; build one with [`JsonRpcClient::new`] or from a configured client with
/// [`JsonRpcClient::from_client`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JsonRpcClient {
    rpc: DtmClient,
    /// The same server's HTTP API (`/api/dtmsvr` next to `/api/json-rpc`), which answers
    /// `query` (DTM has none over JSON-RPC); `None` when the endpoint has another path.
    api: Option<DtmClient>,
}

/// A JSON-RPC answer, from DTM or from a branch.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    error: Option<RpcError>,
    #[serde(default)]
    result: Option<Value>,
}

#[derive(Deserialize)]
struct RpcError {
    code: i64,
    #[serde(default)]
    message: String,
}

/// Reads a JSON-RPC answer: its result, or its error mapped to DTM's outcomes.
fn read_envelope(url: &str, body: &[u8]) -> Result<Value> {
    let env: Envelope = serde_json::from_slice(body).map_err(|e| Error::Decode {
        url: redact_url(url).into_owned(),
        reason: format!("not a JSON-RPC answer: {e}"),
        body: truncate_body(&String::from_utf8_lossy(body)),
    })?;
    match env.error {
        None => Ok(env.result.unwrap_or(Value::Null)),
        Some(e) if e.code == FAILURE_CODE => Err(Error::Failure(e.message)),
        Some(e) if e.code == ONGOING_CODE => Err(Error::Ongoing(e.message)),
        Some(e) => Err(Error::JsonRpc {
            url: redact_url(url).into_owned(),
            code: e.code,
            message: truncate_body(&e.message),
        }),
    }
}

/// The envelope of a call.
#[derive(Serialize)]
struct Call<'a, P: Serialize> {
    jsonrpc: &'static str,
    id: &'a str,
    method: &'a str,
    params: P,
}

impl JsonRpcClient {
    /// A client of the JSON-RPC API at `server` (for example
    /// `http://localhost:36789/api/json-rpc`).
    ///
    /// The URL must be `http(s)://` with a path: DTM's `/api/json-rpc`, or the path a reverse
    /// proxy maps to it. Without one, or with DTM's HTTP API path (`/api/dtmsvr`), it is
    /// [`Error::InvalidInput`], which names the expected form.
    pub fn new(server: impl Into<String>) -> Result<Self> {
        let server = server.into();
        crate::http::client::check_server_url(&server, JSON_RPC_PATH)?;
        if server.trim_end_matches('/').ends_with("/api/dtmsvr") {
            return Err(Error::invalid(format!(
                "{:?} is DTM's HTTP API, not its JSON-RPC endpoint: write http(s)://host:port{JSON_RPC_PATH} (or use DtmClient for the HTTP API)",
                redact_url(&server)
            )));
        }
        DtmClient::new(server).map(Self::from_client)
    }

    /// Uses `client` (built with [`DtmClient::builder`] for its timeouts, answer cap, trusted
    /// servers or `reqwest::Client`) as a JSON-RPC client: its server URL must be the
    /// JSON-RPC endpoint.
    ///
    /// Its transactions' stored state ([`Transport::query`], which decides what an answer
    /// means, see [`crate::outcome`]) is read from DTM's HTTP API on the same server: the
    /// endpoint with `/api/json-rpc` replaced by `/api/dtmsvr`. Behind a reverse proxy with
    /// other paths, it is not read, and a FAILURE answer is reported as
    /// [`Error::NotFinal`] without a status.
    pub fn from_client(client: DtmClient) -> Self {
        let api = client
            .server()
            .strip_suffix(JSON_RPC_PATH)
            .and_then(|host| {
                client
                    .for_server(format!("{host}/api/dtmsvr"), client.trusted_shared())
                    .ok()
            });
        JsonRpcClient {
            rpc: client.with_rpc_system("jsonrpc"),
            api,
        }
    }

    /// DTM's stored state of `gid`, read from the same server's HTTP API.
    pub async fn query(&self, gid: &str) -> Result<crate::QueryResult> {
        match &self.api {
            Some(api) => api.query(gid).await,
            None => Err(Error::invalid(format!(
                "the JSON-RPC endpoint {:?} does not end in {JSON_RPC_PATH}: its HTTP API, which answers query, is unknown",
                redact_url(self.rpc.server())
            ))),
        }
    }

    /// Waits until DTM holds transaction `gid` final, at most `timeout` (see
    /// [`crate::outcome::wait_final`]).
    pub async fn wait_final(&self, gid: &str, timeout: Duration) -> Result<()> {
        crate::outcome::wait_final(self, gid, timeout).await
    }

    /// The JSON-RPC endpoint.
    pub fn server(&self) -> &str {
        self.rpc.server()
    }

    /// Calls `method` with `params` and returns its result.
    async fn rpc(
        &self,
        method: &'static str,
        gid: &str,
        params: impl Serialize,
        timeout: Duration,
    ) -> Result<Value> {
        let url = self.rpc.server();
        let envelope = Call {
            jsonrpc: "2.0",
            id: "no-use",
            method,
            params,
        };
        let req = self.rpc.http().post(url).json(&envelope);
        let body = self.rpc.send(method, gid, req, url, timeout, false).await?;
        read_envelope(url, &body)
    }

    /// Asks DTM for a new global id.
    pub async fn new_gid(&self) -> Result<String> {
        let r = self
            .rpc("newGid", "", Value::Null, self.rpc.timeout())
            .await?;
        match r.get("gid").and_then(Value::as_str) {
            Some(g) if !g.is_empty() => Ok(g.to_string()),
            _ => Err(Error::Decode {
                url: redact_url(self.rpc.server()).into_owned(),
                reason: "no gid in the answer".into(),
                body: truncate_body(&r.to_string()),
            }),
        }
    }

    /// Starts a saga with global id `gid` (see [`Saga`]).
    pub fn saga(&self, gid: impl Into<String>) -> Saga<Self> {
        Saga::new(self.clone(), gid)
    }

    /// Starts a 2-phase message with global id `gid` (see [`Msg`]).
    pub fn msg(&self, gid: impl Into<String>) -> Msg<Self> {
        Msg::new(self.clone(), gid)
    }
}

/// The `method` query parameter of a branch URL, if any: DTM then calls it over JSON-RPC.
fn branch_method(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "method")
        .map(|(_, v)| v.into_owned())
}

/// The `params` DTM sends a JSON-RPC branch: the body's fields plus the transaction info.
fn branch_params(body: Option<&Bytes>, info: &TransInfo) -> Result<Map<String, Value>> {
    let mut params =
        match body {
            Some(b) if !b.is_empty() => match serde_json::from_slice::<Value>(b) {
                Ok(Value::Object(m)) => m,
                Ok(_) | Err(_) => return Err(Error::invalid(
                    "a JSON-RPC branch body must be a JSON object (its fields become the params)",
                )),
            },
            _ => Map::new(),
        };
    for (k, v) in info.query_pairs() {
        params.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(params)
}

impl Transport for JsonRpcClient {
    type Encoding = Json;

    fn protocol(&self) -> &'static str {
        PROTOCOL
    }

    fn server(&self) -> &str {
        self.rpc.server()
    }

    fn limits(&self) -> &Limits {
        self.rpc.limits()
    }

    fn with_server(&self, server: &str) -> Result<Self> {
        let rpc = self.rpc.with_server(server)?;
        if rpc.server() == self.rpc.server() {
            return Ok(self.clone());
        }
        Ok(JsonRpcClient::from_client(rpc))
    }

    /// Payloads travel as JSON strings: they must be text.
    fn check_request(&self, req: &TransRequest) -> Result<()> {
        crate::wire::check_text_payloads(req)
    }

    fn check_branch_url(&self, _url: &str) -> Result<()> {
        Ok(())
    }

    async fn call_dtm(&self, op: DtmOp, mut req: TransRequest) -> Result<()> {
        req.protocol = PROTOCOL.to_string();
        let timeout = self
            .rpc
            .limits()
            .dtm_call_timeout(req.request_timeout, req.wait_result);
        self.rpc(op.as_str(), &req.gid, &req, timeout)
            .await
            .map(drop)
    }

    async fn register(&self, reg: &BranchRegistration) -> Result<()> {
        let fields = DtmClient::registration_fields(reg)?;
        self.rpc("registerBranch", &reg.gid, &fields, self.rpc.timeout())
            .await
            .map(drop)
    }

    async fn prepare_workflow_progress(&self, _req: &TransRequest) -> Result<WorkflowProgress> {
        Err(Error::invalid(
            "DTM has no prepareWorkflow over JSON-RPC: run workflows over HTTP or gRPC",
        ))
    }

    /// A URL with a `method` query parameter gets a JSON-RPC envelope, as DTM sends it; any
    /// other URL a plain HTTP call.
    async fn call_branch_bytes(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<BranchResponse> {
        let Some(method) = branch_method(url) else {
            return self
                .rpc
                .branch_call(url, info, headers, body, timeout)
                .await;
        };
        let envelope = Call {
            jsonrpc: "2.0",
            id: &info.branch_id,
            method: &method,
            params: branch_params(body.as_ref(), info)?,
        };
        let envelope = serde_json::to_vec(&envelope)
            .map_err(|e| Error::invalid(format!("JSON-RPC branch call: {e}")))?;
        let answer = self
            .rpc
            .branch_call(url, info, headers, Some(Bytes::from(envelope)), timeout)
            .await?;
        let result = read_envelope(url, &answer.body)?;
        Ok(BranchResponse {
            status: answer.status,
            body: Bytes::from(result.to_string()),
        })
    }

    fn query(
        &self,
        gid: &str,
    ) -> impl std::future::Future<Output = Result<crate::QueryResult>> + Send {
        JsonRpcClient::query(self, gid)
    }
}

/// A JSON-RPC call DTM (or this SDK) made to a branch: the method, the transaction info and
/// the business params.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BranchCall {
    /// The call's id, to repeat in the answer.
    pub id: Value,
    /// The method named in the branch URL (`?method=`).
    pub method: String,
    /// The transaction info (`gid`, `trans_type`, `branch_id`, `op`...) from the params.
    pub info: TransInfo,
    /// The params: the business body's fields (the transaction info included).
    pub params: Map<String, Value>,
}

impl BranchCall {
    /// Parses a branch call's body; an envelope that is not JSON-RPC 2.0, or params without
    /// valid transaction info, is [`Error::InvalidInput`].
    pub fn parse(body: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Incoming {
            jsonrpc: String,
            #[serde(default)]
            id: Value,
            method: String,
            #[serde(default)]
            params: Option<Map<String, Value>>,
        }
        let c: Incoming = serde_json::from_slice(body)
            .map_err(|e| Error::invalid(format!("not a JSON-RPC call: {e}")))?;
        if c.jsonrpc != "2.0" {
            return Err(Error::invalid("not a JSON-RPC 2.0 call"));
        }
        let params = c.params.unwrap_or_default();
        let info = TransInfo::from_pairs(
            params
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.as_str(), s))),
        )?;
        // The branch span (trace::BranchSpanLayer) could not read the body: name it now.
        crate::trace::record_identity(&info);
        Ok(BranchCall {
            id: c.id,
            method: c.method,
            info,
            params,
        })
    }

    /// The business params as a `T`, without the transaction info DTM adds to them (`gid`,
    /// `trans_type`, `branch_id`, `op`, `dtm`): what the transaction's step was given. Params
    /// that are not a `T` are [`Error::InvalidInput`], naming the type and where (never the
    /// values).
    pub fn body<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        const INFO: [&str; 5] = ["gid", "trans_type", "branch_id", "op", "dtm"];
        let business: Map<String, Value> = self
            .params
            .iter()
            .filter(|(k, _)| !INFO.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_json::from_value(Value::Object(business)).map_err(|e| {
            Error::invalid(format!(
                "the params of JSON-RPC method {:?} are not a {}: {}",
                self.method,
                std::any::type_name::<T>(),
                crate::redact::json_error(&e)
            ))
        })
    }
}

/// The answer to a JSON-RPC branch call: `result` on success; an error object with
/// [`FAILURE_CODE`] or [`ONGOING_CODE`] (and the word FAILURE / ONGOING, which is what DTM
/// v1.19.0 reads), or [`INTERNAL_CODE`] for a retryable error, whose text stays in the
/// branch's log ([`crate::branch::INTERNAL_ERROR_TEXT`]).
pub fn answer(id: &Value, result: Result<Value>) -> Value {
    let error = |code: i64, message: String| serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    match result {
        Ok(v) => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(Error::Failure(m)) => error(FAILURE_CODE, format!("FAILURE: {m}")),
        Err(Error::Ongoing(m)) => error(ONGOING_CODE, format!("ONGOING: {m}")),
        Err(e @ Error::NotFinal { .. }) => error(ONGOING_CODE, format!("ONGOING: {e}")),
        Err(e) => {
            tracing::warn!(error = %e, "JSON-RPC branch answers a retryable error");
            error(
                INTERNAL_CODE,
                crate::branch::INTERNAL_ERROR_TEXT.to_string(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Op, TransType};

    #[test]
    fn envelopes_map_to_outcomes() {
        let r = |s: &str| read_envelope("http://u:pw@h/api/json-rpc", s.as_bytes());
        assert_eq!(
            r(r#"{"jsonrpc":"2.0","id":"1","error":null,"result":{"gid":"g"}}"#).unwrap()["gid"],
            "g"
        );
        assert!(r(r#"{"error":{"code":-32901,"message":"FAILURE"}}"#)
            .unwrap_err()
            .is_failure());
        assert!(matches!(
            r(r#"{"error":{"code":-32902,"message":"x"}}"#),
            Err(Error::Ongoing(_))
        ));
        let e = r(r#"{"error":{"code":-32601,"message":"no such method"}}"#).unwrap_err();
        assert!(matches!(e, Error::JsonRpc { code: -32601, .. }), "{e:?}");
        assert!(!e.to_string().contains("pw"), "{e}");
        assert!(matches!(r("<html>"), Err(Error::Decode { .. })));
    }

    #[test]
    fn the_business_params_decode_without_the_transaction_info() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Transfer {
            amount: i64,
        }
        let body = serde_json::json!({"jsonrpc": "2.0", "id": "1", "method": "TransIn",
            "params": {"amount": 30, "gid": "g", "trans_type": "saga", "branch_id": "01",
                       "op": "action", "dtm": "http://dtm"}});
        let call = BranchCall::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(call.body::<Transfer>().unwrap(), Transfer { amount: 30 });
        // Params of another type: the type is named, the value is not.
        let body = serde_json::json!({"jsonrpc": "2.0", "id": "1", "method": "TransIn",
            "params": {"amount": "s3cret", "gid": "g", "trans_type": "saga",
                       "branch_id": "01", "op": "action"}});
        let call = BranchCall::parse(body.to_string().as_bytes()).unwrap();
        let e = call.body::<Transfer>().unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("Transfer") && !text.contains("s3cret"),
            "{text}"
        );
    }

    #[test]
    fn branch_calls_round_trip() {
        let mut info = TransInfo::new("g1", TransType::Saga, "01", Op::Action);
        info.dtm = Some("http://d/api/json-rpc".into());
        let params = branch_params(Some(&Bytes::from_static(br#"{"amount":30}"#)), &info).unwrap();
        let call = serde_json::json!({"jsonrpc":"2.0","id":"7","method":"TransIn","params":params});
        let c = BranchCall::parse(call.to_string().as_bytes()).unwrap();
        assert_eq!((c.method.as_str(), c.info.gid.as_str()), ("TransIn", "g1"));
        assert_eq!(c.info.op, Op::Action);
        assert_eq!(c.params["amount"], 30);
        assert!(branch_params(Some(&Bytes::from_static(b"[1]")), &info).is_err());
        assert!(BranchCall::parse(br#"{"jsonrpc":"1.0","method":"m","params":{}}"#).is_err());
        assert!(BranchCall::parse(br#"{"jsonrpc":"2.0","method":"m","params":{}}"#).is_err());
        assert_eq!(
            branch_method("http://h/jrpc?method=TransIn&x=1").as_deref(),
            Some("TransIn")
        );
        assert_eq!(branch_method("http://h/TransIn"), None);
        let a = answer(&Value::from("7"), Err(Error::failure("no money")));
        assert_eq!(a["error"]["code"], FAILURE_CODE);
        assert!(a["error"]["message"].as_str().unwrap().contains("FAILURE"));
        let a = answer(&Value::from("7"), Err(Error::invalid("secret detail")));
        assert!(!a.to_string().contains("secret"), "{a}");
    }
}
