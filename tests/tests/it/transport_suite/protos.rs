//! The transports as fixtures of the generic suite: a client, the bank service its
//! branches live on, and what that service recorded, in one form.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::OnceLock;

use crate::support::{busi, dtm, env, grpc_busi, grpc_dtm, grpc_url, url, BusiReq, Outcome};
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_testkit::{DtmServer, DtmServerConfig, Store};
use dtmcli::cluster::Cluster;
use dtmcli::transport::Encode;
use dtmcli::{DtmClient, JsonRpcClient, TransInfo, Transport};

/// One call a branch received.
#[derive(Debug, Clone)]
pub struct Seen<R> {
    /// Handler (method) name.
    pub handler: String,
    /// The transaction info it carried.
    pub info: TransInfo,
    /// Its body, decoded (None when it was not one).
    pub req: Option<R>,
    /// Its headers (HTTP) or metadata (gRPC), lower-case names.
    pub headers: BTreeMap<String, String>,
    /// Its HTTP method (None over gRPC, where every call is a POST).
    pub method: Option<String>,
}

/// A transport under test, with the bank whose branches its transactions call.
pub trait Proto: 'static {
    /// The client.
    type T: Transport;
    /// The bank's request in this transport's encoding.
    type Req: Encode<<Self::T as Transport>::Encoding>
        + Clone
        + Default
        + PartialEq
        + Debug
        + Send
        + Sync;
    /// Its name, in gids.
    const NAME: &'static str;
    /// The protocol DTM stores for its transactions.
    const PROTOCOL: &'static str;

    /// A client for the current test.
    fn client() -> Self::T;
    /// A client of the DTM store its transactions live in, to read them back.
    fn observer() -> DtmClient {
        dtm()
    }
    /// The URL of a bank handler.
    fn url(handler: &str) -> String;
    /// A request moving `amount` that succeeds everywhere.
    fn req(amount: i64) -> Self::Req;
    /// A request whose `TransOut` (`out`) or `TransIn` action and try answer FAILURE.
    fn refused(amount: i64, out: bool) -> Self::Req;
    /// The calls the bank received for `gid`, in arrival order.
    fn calls(gid: &str) -> Vec<Seen<Self::Req>>;
    /// Scripts the answers of `handler` for `gid`.
    fn script(gid: &str, handler: &str, outcomes: Vec<Outcome>);
}

/// The handler names called for `gid`, in arrival order.
pub fn handlers<P: Proto>(gid: &str) -> Vec<String> {
    P::calls(gid).into_iter().map(|c| c.handler).collect()
}

/// How often `handler` was called for `gid`.
pub fn count<P: Proto>(gid: &str, handler: &str) -> usize {
    P::calls(gid)
        .iter()
        .filter(|c| c.handler == handler)
        .count()
}

fn refused_json(amount: i64, out: bool) -> BusiReq {
    let mut r = BusiReq::new(amount);
    if out {
        r.trans_out_result = "FAILURE".into();
    } else {
        r.trans_in_result = "FAILURE".into();
    }
    r
}

/// The HTTP bank's calls.
fn http_calls(gid: &str) -> Vec<Seen<BusiReq>> {
    busi()
        .calls(gid)
        .into_iter()
        .filter_map(|c| {
            Some(Seen {
                req: serde_json::from_str(&c.body).ok(),
                info: c.info?,
                handler: c.handler,
                headers: c.headers,
                method: Some(c.method),
            })
        })
        .collect()
}

/// JSON over HTTP: `DtmClient`.
pub struct Http;

impl Proto for Http {
    type T = DtmClient;
    type Req = BusiReq;
    const NAME: &'static str = "http";
    const PROTOCOL: &'static str = "http";

    fn client() -> DtmClient {
        dtm()
    }
    fn url(handler: &str) -> String {
        url(handler)
    }
    fn req(amount: i64) -> BusiReq {
        BusiReq::new(amount)
    }
    fn refused(amount: i64, out: bool) -> BusiReq {
        refused_json(amount, out)
    }
    fn calls(gid: &str) -> Vec<Seen<BusiReq>> {
        http_calls(gid)
    }
    fn script(gid: &str, handler: &str, outcomes: Vec<Outcome>) {
        busi().script(gid, handler, outcomes)
    }
}

/// Protobuf over gRPC: `DtmGrpcClient`, branches on the tonic bank `busi.Busi`.
pub struct Grpc;

impl Proto for Grpc {
    type T = dtmgrpc::DtmGrpcClient;
    type Req = ReqGrpc;
    const NAME: &'static str = "grpc";
    const PROTOCOL: &'static str = "grpc";

    fn client() -> dtmgrpc::DtmGrpcClient {
        grpc_dtm()
    }
    fn url(handler: &str) -> String {
        grpc_url(handler)
    }
    fn req(amount: i64) -> ReqGrpc {
        ReqGrpc::amount(amount)
    }
    fn refused(amount: i64, out: bool) -> ReqGrpc {
        let mut r = ReqGrpc::amount(amount);
        if out {
            r.trans_out_result = "FAILURE".into();
        } else {
            r.trans_in_result = "FAILURE".into();
        }
        r
    }
    fn calls(gid: &str) -> Vec<Seen<ReqGrpc>> {
        grpc_busi()
            .calls(gid)
            .into_iter()
            .filter_map(|c| {
                Some(Seen {
                    info: c.info?,
                    handler: c.handler,
                    req: Some(c.req),
                    headers: c.metadata,
                    method: None,
                })
            })
            .collect()
    }
    fn script(gid: &str, handler: &str, outcomes: Vec<Outcome>) {
        grpc_busi().script(gid, handler, outcomes)
    }
}

/// JSON-RPC: `JsonRpcClient`, branches on the HTTP bank.
pub struct JsonRpc;

impl Proto for JsonRpc {
    type T = JsonRpcClient;
    type Req = BusiReq;
    const NAME: &'static str = "jsonrpc";
    const PROTOCOL: &'static str = "json-rpc";

    fn client() -> JsonRpcClient {
        JsonRpcClient::new(env().server.json_rpc_url()).expect("json-rpc client")
    }
    fn url(handler: &str) -> String {
        url(handler)
    }
    fn req(amount: i64) -> BusiReq {
        BusiReq::new(amount)
    }
    fn refused(amount: i64, out: bool) -> BusiReq {
        refused_json(amount, out)
    }
    /// DTM calls a branch URL without `?method=` with the payload alone, as over HTTP.
    fn calls(gid: &str) -> Vec<Seen<BusiReq>> {
        Http::calls(gid)
    }
    fn script(gid: &str, handler: &str, outcomes: Vec<Outcome>) {
        busi().script(gid, handler, outcomes)
    }
}

/// The cluster's two DTM servers, on one Redis store of their own.
pub fn cluster_servers() -> &'static (DtmServer, DtmServer) {
    static SERVERS: OnceLock<(DtmServer, DtmServer)> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let config = DtmServerConfig::default().with_store(Store::local_redis());
        let a = DtmServer::start(config.clone()).expect("first DTM of the cluster");
        let b = DtmServer::start(config).expect("second DTM of the cluster");
        (a, b)
    })
}

/// A cluster of the two servers over HTTP.
pub fn cluster() -> Cluster<DtmClient> {
    let (a, b) = cluster_servers();
    let (a, b) = (a.http_url(), b.http_url());
    Cluster::http(
        &DtmClient::new(&a).expect("client"),
        &[a.as_str(), b.as_str()],
    )
    .expect("cluster")
}

/// A `Cluster` of two DTM servers sharing a store, over HTTP; branches on the HTTP bank.
pub struct ClusterHttp;

impl Proto for ClusterHttp {
    type T = Cluster<DtmClient>;
    type Req = BusiReq;
    const NAME: &'static str = "cluster";
    const PROTOCOL: &'static str = "http";

    fn client() -> Cluster<DtmClient> {
        cluster()
    }
    fn observer() -> DtmClient {
        DtmClient::new(cluster_servers().0.http_url()).expect("client")
    }
    fn url(handler: &str) -> String {
        url(handler)
    }
    fn req(amount: i64) -> BusiReq {
        BusiReq::new(amount)
    }
    fn refused(amount: i64, out: bool) -> BusiReq {
        refused_json(amount, out)
    }
    fn calls(gid: &str) -> Vec<Seen<BusiReq>> {
        Http::calls(gid)
    }
    fn script(gid: &str, handler: &str, outcomes: Vec<Outcome>) {
        busi().script(gid, handler, outcomes)
    }
}
