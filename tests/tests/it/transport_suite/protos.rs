//! The transports as fixtures of the generic suite: a client, the bank service its
//! branches live on, and what that service recorded, in one form.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::{busi, dtm, env, grpc_busi, grpc_dtm, grpc_url, url, BusiReq, Outcome};
use dtm_examples::grpc_busi::pb::BusiReply;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_testkit::{DtmServer, DtmServerConfig, Store};
use dtm_workflow::Workflows;
use dtmcli::cluster::Cluster;
use dtmcli::transport::Encode;
use dtmcli::transport::{BranchRegistration, BranchResponse, DtmOp, Json};
use dtmcli::{
    DtmClient, JsonRpcClient, Limits, QueryResult, TransInfo, TransOptions, TransRequest,
    Transport, WorkflowProgress,
};

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
    /// Runs an XA global transaction whose body calls the XA branch `handlers` in order,
    /// each with `req`, stopping at the first error.
    fn xa(
        gid: &str,
        options: TransOptions,
        req: Self::Req,
        handlers: Vec<&'static str>,
    ) -> impl Future<Output = dtmcli::Result<()>>;
    /// Runs a TCC global transaction whose body takes `steps` in order with `req`.
    fn tcc(
        gid: &str,
        options: TransOptions,
        req: Self::Req,
        steps: Vec<TccStep>,
    ) -> impl Future<Output = dtmcli::Result<()>>;
    /// A workflow registry on this transport, with the workflows `register` adds, its resume
    /// callback served on a free port (HTTP, unless the transport's protocol says otherwise).
    fn workflows(register: fn(&Workflows)) -> impl Future<Output = Workflows> + Send {
        http_workflows(Self::client(), register)
    }
}

/// [`Proto::workflows`] with an HTTP callback: the generic constructor, on any transport.
async fn http_workflows<T: Transport>(client: T, register: fn(&Workflows)) -> Workflows {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/wf", listener.local_addr().unwrap());
    let wfs = Workflows::with_transport(client, callback);
    register(&wfs);
    let app = wfs.callback_router("/wf");
    tokio::spawn(async move { axum::serve(listener, app).await });
    wfs
}

/// One step of a TCC's body.
#[derive(Debug, Clone, Copy)]
pub enum TccStep {
    /// A branch: its try, confirm and cancel handlers.
    Branch(&'static str, &'static str, &'static str),
    /// Waits until DTM no longer holds the transaction as prepared (it timed it out).
    UntilNotPrepared,
    /// Ends the body with this error.
    Fail(&'static str),
}

/// The debit branch.
pub const OUT: TccStep = TccStep::Branch("TransOutTry", "TransOutConfirm", "TransOutCancel");
/// The credit branch.
pub const IN: TccStep = TccStep::Branch("TransInTry", "TransInConfirm", "TransInCancel");
/// The credit branch whose try opens a nested branch (`0201`: TransInTry).
pub const IN_NESTED: TccStep =
    TccStep::Branch("TransInTccNested", "TransInConfirm", "TransInCancel");

/// Takes `step` of a TCC body: `branch` calls a branch's try with its URLs.
async fn tcc_step<F, Fut>(
    observer: &DtmClient,
    gid: &str,
    step: TccStep,
    branch: F,
) -> dtmcli::Result<()>
where
    F: FnOnce(String, String, String) -> Fut,
    Fut: Future<Output = dtmcli::Result<()>>,
{
    match step {
        TccStep::Branch(t, c, x) => branch(t.to_string(), c.to_string(), x.to_string()).await,
        TccStep::UntilNotPrepared => {
            let d = dtm_testkit::wait::until(observer, gid, Duration::from_secs(20), |q| {
                q.transaction
                    .as_ref()
                    .is_some_and(|t| t.status != "prepared")
            })
            .await;
            assert!(d.is_ok(), "{d:?}");
            Ok(())
        }
        TccStep::Fail(m) => Err(dtmcli::Error::other(m)),
    }
}

/// [`Proto::tcc`] over a JSON transport.
async fn json_tcc<P: Proto<Req = BusiReq>>(
    transport: P::T,
    gid: &str,
    options: TransOptions,
    req: BusiReq,
    steps: Vec<TccStep>,
) -> dtmcli::Result<()>
where
    P::T: Transport<Encoding = Json>,
{
    dtmcli::Tcc::run(&transport, gid, options, |tcc| async move {
        for step in steps {
            tcc_step(&P::observer(), tcc.gid(), step, |t, c, x| {
                let (tcc, req) = (tcc.clone(), &req);
                async move {
                    tcc.call_branch(req, &P::url(&t), &P::url(&c), &P::url(&x))
                        .await
                        .map(drop)
                }
            })
            .await?;
        }
        Ok(())
    })
    .await
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

/// The items of [`Proto`] for a transport whose branches are on the HTTP bank.
macro_rules! on_the_http_bank {
    () => {
        type Req = BusiReq;

        fn url(handler: &str) -> String {
            url(handler)
        }
        fn req(amount: i64) -> BusiReq {
            BusiReq::new(amount)
        }
        fn refused(amount: i64, out: bool) -> BusiReq {
            let mut r = BusiReq::new(amount);
            if out {
                r.trans_out_result = "FAILURE".into();
            } else {
                r.trans_in_result = "FAILURE".into();
            }
            r
        }
        fn calls(gid: &str) -> Vec<Seen<BusiReq>> {
            http_calls(gid)
        }
        fn script(gid: &str, handler: &str, outcomes: Vec<Outcome>) {
            busi().script(gid, handler, outcomes)
        }
        fn tcc(
            gid: &str,
            options: TransOptions,
            req: BusiReq,
            steps: Vec<TccStep>,
        ) -> impl Future<Output = dtmcli::Result<()>> {
            json_tcc::<Self>(Self::client(), gid, options, req, steps)
        }
        fn xa(
            gid: &str,
            options: TransOptions,
            req: BusiReq,
            handlers: Vec<&'static str>,
        ) -> impl Future<Output = dtmcli::Result<()>> {
            json_xa::<Self>(Self::client(), gid, options, req, handlers)
        }
    };
}

/// [`Proto::xa`] over a JSON transport.
async fn json_xa<P: Proto<Req = BusiReq>>(
    transport: P::T,
    gid: &str,
    options: TransOptions,
    req: BusiReq,
    handlers: Vec<&'static str>,
) -> dtmcli::Result<()>
where
    P::T: Transport<Encoding = Json>,
{
    dtmcli::Xa::run(&transport, gid, options, |xa| async move {
        for h in handlers {
            xa.call_branch(&req, &P::url(h)).await?;
        }
        Ok(())
    })
    .await
}

/// A fixture whose branches are on the HTTP bank: `$name` (gids say `$n`) on transport `$t`
/// made by `$client`, with DTM storing `$protocol`, and any `$extra` items of [`Proto`].
macro_rules! on_the_http_bank_fixture {
    ($(#[$doc:meta])* $name:ident: $t:ty = $client:expr, $n:literal, $protocol:literal $(, $extra:item)*) => {
        $(#[$doc])*
        pub struct $name;

        impl Proto for $name {
            const NAME: &'static str = $n;
            const PROTOCOL: &'static str = $protocol;
            type T = $t;

            fn client() -> $t {
                $client
            }
            $($extra)*
            on_the_http_bank!();
        }
    };
}

on_the_http_bank_fixture!(
    /// JSON over HTTP: `DtmClient`.
    Http: DtmClient = dtm(), "http", "http"
);

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
    async fn tcc(
        gid: &str,
        options: TransOptions,
        req: ReqGrpc,
        steps: Vec<TccStep>,
    ) -> dtmcli::Result<()> {
        dtmgrpc::Tcc::run(&grpc_dtm(), gid, options, |tcc| async move {
            for step in steps {
                tcc_step(&dtm(), tcc.gid(), step, |t, c, x| {
                    let (tcc, req) = (tcc.clone(), &req);
                    async move {
                        let _: BusiReply = tcc
                            .call_branch(req, &grpc_url(&t), &grpc_url(&c), &grpc_url(&x))
                            .await?;
                        Ok(())
                    }
                })
                .await?;
            }
            Ok(())
        })
        .await
    }
    async fn xa(
        gid: &str,
        options: TransOptions,
        req: ReqGrpc,
        handlers: Vec<&'static str>,
    ) -> dtmcli::Result<()> {
        dtmgrpc::Xa::run(&grpc_dtm(), gid, options, |xa| async move {
            for h in handlers {
                let _: BusiReply = xa.call_branch(&req, &grpc_url(h)).await?;
            }
            Ok(())
        })
        .await
    }
    async fn workflows(register: fn(&Workflows)) -> Workflows {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let wfs = Workflows::grpc(grpc_dtm(), &listener.local_addr().unwrap().to_string());
        register(&wfs);
        tokio::spawn(wfs.serve_grpc(listener));
        wfs
    }
}

on_the_http_bank_fixture!(
    /// JSON-RPC: `JsonRpcClient`, branches on the HTTP bank (DTM calls a branch URL without
    /// `?method=` with the payload alone, as over HTTP).
    JsonRpc: JsonRpcClient =
        JsonRpcClient::new(env().server.json_rpc_url()).expect("json-rpc client"),
    "jsonrpc", "json-rpc"
);

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

on_the_http_bank_fixture!(
    /// A `Cluster` of two DTM servers sharing a store, over HTTP; branches on the HTTP bank.
    ClusterHttp: Cluster<DtmClient> = cluster(), "cluster", "http",
    fn observer() -> DtmClient {
        DtmClient::new(cluster_servers().0.http_url()).expect("client")
    }
);

/// A user's own transport: it passes every call to a [`DtmClient`] and notes which DTM
/// operation it carried for which gid (what a team adds for its own metrics or audit).
#[derive(Debug, Clone)]
pub struct Noting(DtmClient);

/// The `(operation, gid)` pairs [`Noting`] carried.
fn noted() -> &'static std::sync::Mutex<Vec<(String, String)>> {
    static NOTED: OnceLock<std::sync::Mutex<Vec<(String, String)>>> = OnceLock::new();
    NOTED.get_or_init(Default::default)
}

/// The DTM operations [`Noting`] carried for `gid`, in order.
pub fn noted_for(gid: &str) -> Vec<String> {
    let noted = noted().lock().unwrap();
    noted
        .iter()
        .filter(|(_, g)| g == gid)
        .map(|(op, _)| op.clone())
        .collect()
}

impl Noting {
    fn note(&self, op: &str, gid: &str) {
        noted()
            .lock()
            .unwrap()
            .push((op.to_string(), gid.to_string()));
    }
}

impl Transport for Noting {
    type Encoding = Json;

    fn protocol(&self) -> &'static str {
        self.0.protocol()
    }
    fn server(&self) -> &str {
        Transport::server(&self.0)
    }
    fn limits(&self) -> &Limits {
        Transport::limits(&self.0)
    }
    fn with_server(&self, server: &str) -> dtmcli::Result<Self> {
        self.0.with_server(server).map(Noting)
    }
    fn check_request(&self, req: &TransRequest) -> dtmcli::Result<()> {
        self.0.check_request(req)
    }
    fn check_branch_url(&self, url: &str) -> dtmcli::Result<()> {
        self.0.check_branch_url(url)
    }
    async fn call_dtm(&self, op: DtmOp, req: TransRequest) -> dtmcli::Result<()> {
        self.note(op.as_str(), req.gid());
        self.0.call_dtm(op, req).await
    }
    async fn register(&self, reg: &BranchRegistration) -> dtmcli::Result<()> {
        self.note("registerBranch", &reg.gid);
        Transport::register(&self.0, reg).await
    }
    async fn prepare_workflow_progress(
        &self,
        req: &TransRequest,
    ) -> dtmcli::Result<WorkflowProgress> {
        self.note("prepareWorkflow", req.gid());
        self.0.prepare_workflow_progress(req).await
    }
    async fn call_branch_bytes(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &BTreeMap<String, String>,
        body: Option<bytes::Bytes>,
        timeout: Duration,
    ) -> dtmcli::Result<BranchResponse> {
        self.0
            .call_branch_bytes(url, info, headers, body, timeout)
            .await
    }
    async fn query(&self, gid: &str) -> dtmcli::Result<QueryResult> {
        self.note("query", gid);
        Transport::query(&self.0, gid).await
    }
}

on_the_http_bank_fixture!(
    /// A transport of the user's own ([`Noting`], over a `DtmClient`); branches on the HTTP
    /// bank.
    Custom: Noting = Noting(dtm()), "custom", "http"
);
