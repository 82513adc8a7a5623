//! Several real DTM servers on one shared Redis store, reached through
//! `dtmcli::cluster::Cluster`: failover when a server is down or killed, and lost answers
//! (a proxy that forwards a request to DTM and drops the answer) resolved from DTM's stored
//! state instead of being reported as errors or sent twice.

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use dtm_testkit::{DtmServer, DtmServerConfig, Store};
use dtmcli::cluster::Cluster;
use dtmcli::{DtmClient, Error, TransOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Two DTM servers on one Redis store (a cluster), started on the services' runtime.
fn two_servers() -> (DtmServer, DtmServer) {
    let store = Store::local_redis();
    let cfg = DtmServerConfig::default().with_store(store);
    let a = DtmServer::start(cfg.clone()).expect("server a");
    let b = DtmServer::start(cfg).expect("server b");
    (a, b)
}

fn cluster(servers: &[&str]) -> Cluster<DtmClient> {
    let client = DtmClient::new(servers[0]).expect("client");
    Cluster::http(&client, servers).expect("cluster")
}

/// A TCP proxy to `upstream` that forwards every request; while `lose` is set, the answer
/// to each POST (the state-changing calls) is read from DTM and dropped, and the client's
/// connection closed: the request took effect, its answer is lost. GETs (`query`) pass.
/// `lost` counts the answers lost.
struct LossyProxy {
    url: String,
    /// `host:port`, for a gRPC client.
    addr: String,
    lose: Arc<AtomicBool>,
    lost: Arc<AtomicUsize>,
    /// Lose only every other POST's answer (the first, the third...), so that a call sent
    /// again gets through.
    every_other: Arc<AtomicBool>,
}

impl LossyProxy {
    async fn start(upstream: u16) -> LossyProxy {
        Self::start_on(upstream, Wire::Http1).await
    }

    /// The same for a gRPC port (HTTP/2).
    async fn start_grpc(upstream: u16) -> LossyProxy {
        Self::start_on(upstream, Wire::Http2).await
    }

    async fn start_on(upstream: u16, wire: Wire) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let rule = Rule::default();
        let (lose, lost, every_other) = (
            rule.lose.clone(),
            rule.lost.clone(),
            rule.every_other.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                match wire {
                    Wire::Http1 => tokio::spawn(relay(client, upstream, rule.clone())),
                    Wire::Http2 => tokio::spawn(relay_h2(client, upstream, rule.clone())),
                };
            }
        });
        LossyProxy {
            url: format!("http://{addr}/api/dtmsvr"),
            addr: addr.to_string(),
            lose,
            lost,
            every_other,
        }
    }

    /// Answers lost since the last call.
    fn take_lost(&self) -> usize {
        self.lost.swap(0, Ordering::SeqCst)
    }
}

/// The protocol a proxy relays.
#[derive(Clone, Copy)]
enum Wire {
    /// HTTP/1.1: DTM's HTTP API (and JSON-RPC).
    Http1,
    /// HTTP/2: DTM's gRPC API.
    Http2,
}

/// When the proxy loses an answer.
#[derive(Clone, Default)]
struct Rule {
    lose: Arc<AtomicBool>,
    every_other: Arc<AtomicBool>,
    /// POST answers seen while losing.
    posts: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
}

impl Rule {
    /// Whether to lose the answer to a POST that just began arriving.
    fn lose_this(&self) -> bool {
        if !self.lose.load(Ordering::SeqCst) {
            return false;
        }
        let n = self.posts.fetch_add(1, Ordering::SeqCst);
        let lose = !self.every_other.load(Ordering::SeqCst) || n.is_multiple_of(2);
        if lose {
            self.lost.fetch_add(1, Ordering::SeqCst);
        }
        lose
    }
}

async fn relay(mut client: TcpStream, upstream: u16, rule: Rule) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    // Whether the request in flight on this connection is a POST.
    let post = AtomicBool::new(false);
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = cr.read(&mut buf).await.unwrap_or(0);
            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            if buf[..n].starts_with(b"POST ") {
                post.store(true, Ordering::SeqCst);
            } else if buf[..n].starts_with(b"GET ") {
                post.store(false, Ordering::SeqCst);
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sr.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            // The first bytes of an answer to a POST decide its fate.
            if post.swap(false, Ordering::SeqCst) && rule.lose_this() {
                break;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Relays HTTP/2 (gRPC) frame by frame. Every call that reaches a gRPC proxy changes
/// state (a cluster's queries go to the HTTP API), and a tonic server sends an answer's
/// first HEADERS frame once its handler has returned: when that answer is to be lost, the
/// connection is cut instead of forwarding it. The server's SETTINGS, PINGs and window
/// updates pass, so the connection itself is sound until then.
async fn relay_h2(mut client: TcpStream, upstream: u16, rule: Rule) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up = tokio::io::copy(&mut cr, &mut sw);
    let down = async {
        // Streams whose answer began: their trailers (a second HEADERS) are not new answers.
        let mut answering = std::collections::HashSet::new();
        let mut head = [0u8; 9];
        loop {
            if sr.read_exact(&mut head).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if sr.read_exact(&mut payload).await.is_err() {
                break;
            }
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            const HEADERS: u8 = 1;
            if head[3] == HEADERS && stream != 0 && answering.insert(stream) && rule.lose_this() {
                break;
            }
            if cw.write_all(&head).await.is_err() || cw.write_all(&payload).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Both branches of `gid` ran, in order. A branch DTM was calling when its server was
/// SIGKILLed may run again when another server takes the saga over (DTM's at-least-once
/// delivery: the barrier makes that harmless); nothing else repeats.
fn expect_branches_ran(gid: &str) {
    let mut ran = busi().handlers(gid);
    let calls = ran.len();
    ran.dedup();
    assert_eq!(ran, ["TransOut", "TransIn"], "{gid}");
    assert!(calls <= 3, "{gid}: {:?}", busi().handlers(gid));
}

/// Both tries ran in order, then each branch's `phase` (`Confirm` or `Cancel`) once, last
/// branch first (DTM runs a TCC's second phase one branch at a time, in reverse).
fn expect_tcc_ran(ran: Vec<String>, phase: &str) {
    let want = [
        "TransOutTry".to_string(),
        "TransInTry".into(),
        format!("TransIn{phase}"),
        format!("TransOut{phase}"),
    ];
    assert_eq!(ran, want);
}

/// A port nothing listens on: a server that is down.
fn dead_server() -> String {
    let port = dtm_testkit::free_port().expect("port");
    format!("http://127.0.0.1:{port}/api/dtmsvr")
}

#[tokio::test]
async fn calls_fail_over_from_a_dead_server_and_a_killed_one() {
    let (mut a, b) = two_servers();
    let (ua, ub) = (a.http_url(), b.http_url());
    let dead = dead_server();
    let c = cluster(&[&dead, &ua, &ub]);
    let mut gids = Vec::new();
    for i in 0..12 {
        if i == 6 {
            a.kill().expect("kill a");
        }
        let gid = support::gid("cluster-failover");
        c.saga(&gid)
            .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(1))
            .add(&url("TransIn"), &url("TransInRevert"), &BusiReq::new(1))
            .submit()
            .await
            .unwrap_or_else(|e| panic!("saga {i} failed although server b was up: {e}"));
        gids.push(gid);
    }
    // Every saga finishes (those a held are taken over by b's cron).
    let b_client = DtmClient::new(&ub).expect("client");
    for gid in &gids {
        wait_status(&b_client, gid, "succeed").await;
        expect_branches_ran(gid);
    }
}

#[tokio::test]
async fn lost_answers_are_resolved_from_what_dtm_stores() {
    let (a, b) = two_servers();
    let proxy = LossyProxy::start(a.http_port()).await;
    // One member only: every call goes through the proxy; so do the resolving queries,
    // whose answers pass.
    let c = cluster(&[&proxy.url]);
    let dtm_b = DtmClient::new(b.http_url()).expect("client");
    let plain = DtmClient::new(&proxy.url).expect("client");
    proxy.lose.store(true, Ordering::SeqCst);

    // A plain client: the answer is lost; what DTM stored (dtmcli::outcome, a query that
    // passes the proxy) says the saga was accepted.
    let gid = support::gid("cluster-lost-plain");
    let plain_res = plain
        .saga(&gid)
        .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(1))
        .submit()
        .await;
    assert!(plain_res.is_ok(), "{plain_res:?}");
    assert_eq!(proxy.take_lost(), 1, "the proxy did not lose the answer");
    wait_status(&dtm_b, &gid, "succeed").await;

    // The cluster: the same loss, resolved as done; nothing is sent twice.
    let gid = support::gid("cluster-lost-saga");
    c.saga(&gid)
        .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(1))
        .submit()
        .await
        .expect("a saga DTM holds is submitted");
    assert_eq!(proxy.take_lost(), 1);
    wait_status(&dtm_b, &gid, "succeed").await;
    assert_eq!(busi().handlers(&gid), ["TransOut"]);

    // wait_result: found done, the call waits for the end as DTM would have.
    let gid = support::gid("cluster-lost-wait");
    let failing_in = BusiReq {
        amount: 1,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    let res = c
        .saga(&gid)
        .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(1))
        .add(&url("TransIn"), &url("TransInRevert"), &failing_in)
        .with_options(TransOptions::default().wait_result(true))
        .submit()
        .await;
    assert!(matches!(res, Err(Error::Failure(_))), "{res:?}");
    assert_eq!(proxy.take_lost(), 1);

    // A msg: prepare and submit both lose their answers; the message runs once.
    let gid = support::gid("cluster-lost-msg");
    let msg = c.msg(&gid).add(&url("TransIn"), &BusiReq::new(1));
    msg.prepare(&url("QueryPrepared")).await.expect("prepare");
    msg.submit().await.expect("submit");
    assert_eq!(proxy.take_lost(), 2);
    wait_status(&dtm_b, &gid, "succeed").await;
    assert_eq!(busi().handlers(&gid), ["TransIn"]);

    // TCC: prepare, both branch registrations and the submit lose their answers.
    let gid = support::gid("cluster-lost-tcc");
    let (out, inn) = tcc_urls(url);
    dtmcli::Tcc::run(&c, &gid, TransOptions::default(), |tcc| async move {
        tcc.call_branch(&BusiReq::new(1), &out[0], &out[1], &out[2])
            .await?;
        tcc.call_branch(&BusiReq::new(1), &inn[0], &inn[1], &inn[2])
            .await?;
        Ok(())
    })
    .await
    .expect("tcc");
    assert_eq!(proxy.take_lost(), 4);
    wait_status(&dtm_b, &gid, "succeed").await;
    expect_tcc_ran(busi().handlers(&gid), "Confirm");

    // A TCC whose second try fails: its abort's answer is lost too; the caller gets the
    // try's failure, DTM cancels both branches once.
    let gid = support::gid("cluster-lost-abort");
    let (out, inn) = tcc_urls(url);
    let failing_in = BusiReq {
        amount: 1,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    let res = dtmcli::Tcc::run(&c, &gid, TransOptions::default(), |tcc| async move {
        tcc.call_branch(&BusiReq::new(1), &out[0], &out[1], &out[2])
            .await?;
        tcc.call_branch(&failing_in, &inn[0], &inn[1], &inn[2])
            .await?;
        Ok(())
    })
    .await;
    assert!(matches!(res, Err(Error::Failure(_))), "{res:?}");
    // prepare, two registrations, abort.
    assert_eq!(proxy.take_lost(), 4);
    wait_status(&dtm_b, &gid, "failed").await;
    expect_tcc_ran(busi().handlers(&gid), "Cancel");
}

#[tokio::test]
async fn a_grpc_cluster_resolves_lost_answers() {
    use dtm_examples::grpc_busi::pb::{BusiReply, ReqGrpc};
    let (a, b) = two_servers();
    let proxy = LossyProxy::start_grpc(a.grpc_port()).await;
    // One member, reached through the proxy; its lost answers are resolved on its HTTP API.
    let member = dtmcli::cluster::WithQuery::new(
        dtmgrpc::DtmGrpcClient::new(&proxy.addr).expect("grpc client"),
        DtmClient::new(a.http_url()).expect("client"),
    );
    let c = Cluster::new([member]).expect("cluster");
    let dtm_b = DtmClient::new(b.http_url()).expect("client");
    proxy.lose.store(true, Ordering::SeqCst);

    // A plain gRPC client through the proxy: DTM holds the saga, the client sees an error.
    let plain = dtmgrpc::DtmGrpcClient::new(&proxy.addr).expect("grpc client");
    let gid = support::gid("gcluster-lost-plain");
    let res = plain
        .saga(&gid)
        .add(
            &grpc_url("TransOut"),
            &grpc_url("TransOutRevert"),
            &ReqGrpc::amount(1),
        )
        .submit()
        .await;
    assert!(res.is_err(), "the proxy did not lose the answer");
    assert_eq!(proxy.take_lost(), 1);
    wait_status(&dtm_b, &gid, "succeed").await;

    // submit
    let gid = support::gid("gcluster-lost-saga");
    grpc_transfer(c.saga(&gid), 1)
        .submit()
        .await
        .expect("a saga DTM holds is submitted");
    assert_eq!(proxy.take_lost(), 1);
    wait_status(&dtm_b, &gid, "succeed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransIn"]);

    // prepare and submit of a msg
    let gid = support::gid("gcluster-lost-msg");
    let msg = c.msg(&gid).add(&grpc_url("TransIn"), &ReqGrpc::amount(1));
    msg.prepare(&grpc_url("QueryPrepared"))
        .await
        .expect("prepare");
    msg.submit().await.expect("submit");
    assert_eq!(proxy.take_lost(), 2);
    wait_status(&dtm_b, &gid, "succeed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["TransIn"]);

    // prepare, registerBranch twice and submit of a TCC
    let gid = support::gid("gcluster-lost-tcc");
    let (out, inn) = tcc_urls(grpc_url);
    dtmgrpc::Tcc::run(&c, &gid, TransOptions::default(), |tcc| async move {
        let _: BusiReply = tcc
            .call_branch(&ReqGrpc::amount(1), &out[0], &out[1], &out[2])
            .await?;
        let _: BusiReply = tcc
            .call_branch(&ReqGrpc::amount(1), &inn[0], &inn[1], &inn[2])
            .await?;
        Ok(())
    })
    .await
    .expect("tcc");
    assert_eq!(proxy.take_lost(), 4);
    wait_status(&dtm_b, &gid, "succeed").await;
    expect_tcc_ran(grpc_busi().handlers(&gid), "Confirm");

    // abort: the second try fails; the caller gets its failure, DTM cancels both once.
    let gid = support::gid("gcluster-lost-abort");
    let (out, inn) = tcc_urls(grpc_url);
    let failing_in = ReqGrpc {
        amount: 1,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    let res = dtmgrpc::Tcc::run(&c, &gid, TransOptions::default(), |tcc| async move {
        let _: BusiReply = tcc
            .call_branch(&ReqGrpc::amount(1), &out[0], &out[1], &out[2])
            .await?;
        let _: BusiReply = tcc
            .call_branch(&failing_in, &inn[0], &inn[1], &inn[2])
            .await?;
        Ok(())
    })
    .await;
    assert!(res.as_ref().is_err_and(Error::is_failure), "{res:?}");
    assert_eq!(proxy.take_lost(), 4);
    wait_status(&dtm_b, &gid, "failed").await;
    expect_tcc_ran(grpc_busi().handlers(&gid), "Cancel");
}

#[tokio::test]
async fn a_grpc_cluster_fails_over_and_resolves_through_the_http_api() {
    let (mut a, b) = two_servers();
    let dead_grpc = format!("127.0.0.1:{}", dtm_testkit::free_port().expect("port"));
    let dead = dead_server();
    let (ga, ha, gb, hb) = (a.grpc_addr(), a.http_url(), b.grpc_addr(), b.http_url());
    let c = dtmgrpc::DtmGrpcClient::cluster(&[(&dead_grpc, &dead), (&ga, &ha), (&gb, &hb)])
        .expect("cluster");
    let dtm_b = DtmClient::new(&hb).expect("client");
    let body = serde_json::to_vec(&BusiReq::new(1)).expect("json");
    let mut gids = Vec::new();
    for i in 0..8 {
        if i == 4 {
            a.kill().expect("kill a");
        }
        let gid = support::gid("cluster-grpc");
        // HTTP branches in a gRPC saga: DTM posts the raw payload.
        c.saga(&gid)
            .add_raw(&url("TransOut"), &url("TransOutRevert"), body.clone())
            .add_raw(&url("TransIn"), &url("TransInRevert"), body.clone())
            .submit()
            .await
            .unwrap_or_else(|e| panic!("gRPC saga {i} failed although server b was up: {e}"));
        gids.push(gid);
    }
    for gid in &gids {
        wait_status(&dtm_b, gid, "succeed").await;
        expect_branches_ran(gid);
    }
}

#[tokio::test]
async fn a_json_rpc_cluster_resolves_lost_answers() {
    let (a, _b) = two_servers();
    let proxy = LossyProxy::start(a.http_port()).await;
    let rpc_url = proxy.url.replace("/api/dtmsvr", "/api/json-rpc");
    let member = dtmcli::cluster::WithQuery::new(
        dtmcli::JsonRpcClient::new(&rpc_url).expect("json-rpc client"),
        DtmClient::new(a.http_url()).expect("client"),
    );
    let c = Cluster::new([member]).expect("cluster");
    let dtm_a = DtmClient::new(a.http_url()).expect("client");
    proxy.lose.store(true, Ordering::SeqCst);

    let gid = support::gid("cluster-jrpc-saga");
    c.saga(&gid)
        .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(1))
        .submit()
        .await
        .expect("a saga DTM holds is submitted");
    assert_eq!(proxy.take_lost(), 1);
    wait_status(&dtm_a, &gid, "succeed").await;

    let gid = support::gid("cluster-jrpc-msg");
    let msg = c.msg(&gid).add(&url("TransIn"), &BusiReq::new(1));
    msg.prepare(&url("QueryPrepared")).await.expect("prepare");
    msg.submit().await.expect("submit");
    assert_eq!(proxy.take_lost(), 2);
    wait_status(&dtm_a, &gid, "succeed").await;
    assert_eq!(busi().handlers(&gid), ["TransIn"]);
}

#[tokio::test]
async fn a_discovered_member_list_is_followed() {
    let (a, b) = two_servers();
    let (ua, ub) = (a.http_url(), b.http_url());
    let (tx, rx) = tokio::sync::watch::channel(vec![dead_server()]);
    let c = Cluster::discovered(rx, |s: &str| DtmClient::new(s), Duration::from_secs(3))
        .expect("cluster");
    let saga = |gid: &str| {
        c.saga(gid)
            .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(1))
    };
    let gid = support::gid("cluster-discovery-none");
    let res = saga(&gid).submit().await;
    assert!(
        res.as_ref().is_err_and(|e| e.is_transport()),
        "no server is up: {res:?}"
    );

    tx.send(vec![ua.clone(), ub.clone()]).expect("send");
    let gid = support::gid("cluster-discovery");
    saga(&gid).submit().await.expect("submit after discovery");
    assert_eq!(c.servers(), [ua, ub.clone()]);
    wait_status(&DtmClient::new(&ub).expect("client"), &gid, "succeed").await;

    // An empty list is ignored: the cluster keeps the servers it has.
    tx.send(Vec::new()).expect("send");
    assert_eq!(c.servers().len(), 2);
    tx.send(vec![ub.clone()]).expect("send");
    assert_eq!(c.servers(), [ub]);
}

/// Registers `name`: a workflow of two HTTP steps, TransOut then TransIn, each posting the
/// workflow's input through the recording middleware.
fn register_transfer(wfs: &dtm_workflow::Workflows, name: &str, options: dtm_workflow::WfOptions) {
    use dtm_workflow::{send_http, Wf, WorkflowMiddleware};
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(WorkflowMiddleware)
        .build();
    let (out, inn) = (url("TransOut"), url("TransIn"));
    wfs.register_with_options(name, options, move |wf: Wf, input: Vec<u8>| {
        let (http, out, inn) = (http.clone(), out.clone(), inn.clone());
        async move {
            for u in [out, inn] {
                wf.new_branch()?;
                let req = wf
                    .http(&http, reqwest::Method::POST, &u)
                    .header("content-type", "application/json")
                    .body(input.clone());
                send_http(req).await?;
            }
            Ok(Vec::new())
        }
    })
    .expect("register");
}

/// A transfer workflow whose answers `proxy` lost (every other one of prepareWorkflow, the
/// step records and the submit) succeeded, each step recorded once and run once (`ran`: the
/// handlers the service saw).
async fn expect_transfer_workflow_done(
    proxy: &LossyProxy,
    b: &DtmServer,
    gid: &str,
    ran: impl Fn() -> Vec<String>,
) {
    assert!(proxy.take_lost() >= 2);
    let dtm_b = DtmClient::new(b.http_url()).expect("client");
    let q = wait_status(&dtm_b, gid, "succeed").await;
    assert_eq!(ran(), ["TransOut", "TransIn"]);
    assert_eq!(
        q.branches.iter().filter(|b| b.op == "action").count(),
        2,
        "{:?}",
        branch_rows(&q)
    );
}

#[tokio::test]
async fn a_workflow_on_a_cluster_survives_lost_answers() {
    use dtm_workflow::{WfOptions, Workflows};
    let (a, b) = two_servers();
    let proxy = LossyProxy::start(a.http_port()).await;
    let c = cluster(&[&proxy.url]);
    let wfs = Workflows::http_cluster(c, "http://127.0.0.1:1/unused-callback");
    register_transfer(&wfs, "cluster-transfer", WfOptions::default());
    proxy.every_other.store(true, Ordering::SeqCst);
    proxy.lose.store(true, Ordering::SeqCst);
    let gid = support::gid("cluster-wf");
    let input = serde_json::to_vec(&BusiReq::new(1)).expect("json");
    wfs.execute("cluster-transfer", &gid, &input)
        .await
        .expect("a workflow DTM holds finishes");
    expect_transfer_workflow_done(&proxy, &b, &gid, || busi().handlers(&gid)).await;
}

/// A workflow whose submit took effect but whose answer was lost (the connection closed
/// after DTM committed): the submit's error is read against what DTM stored, and the
/// caller gets the workflow's result, not the lost answer's error.
#[tokio::test]
async fn a_workflow_submit_whose_answer_was_lost_reports_what_dtm_stored() {
    use dtm_workflow::{Wf, Workflows};
    let (a, _b) = two_servers();
    let proxy = LossyProxy::start(a.http_port()).await;
    let wfs = Workflows::http(
        DtmClient::new(&proxy.url).expect("client"),
        "http://127.0.0.1:1/unused-callback",
    );
    let lose = proxy.lose.clone();
    wfs.register_with_result("lost-submit", move |_wf: Wf, input: Vec<u8>| {
        let lose = lose.clone();
        async move {
            // From here on, DTM's answers to POSTs are lost: the next one is the submit.
            lose.store(true, Ordering::SeqCst);
            Ok(input)
        }
    })
    .expect("register");
    let gid = support::gid("wf-lost-submit");
    let result = wfs
        .execute("lost-submit", &gid, b"paid")
        .await
        .expect("DTM holds the workflow succeed");
    assert_eq!(result, b"paid");
    assert_eq!(
        proxy.take_lost(),
        1,
        "the proxy did not lose the submit's answer"
    );
    let dtm_a = DtmClient::new(a.http_url()).expect("client");
    wait_status(&dtm_a, &gid, "succeed").await;
}

#[tokio::test]
async fn a_workflow_is_resumed_through_the_cluster_after_its_first_server_died() {
    use dtm_workflow::{WfOptions, Workflows};
    let (mut a, b) = two_servers();
    let (ua, ub) = (a.http_url(), b.http_url());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let callback = format!("http://{}/wf", listener.local_addr().expect("addr"));
    let wfs = Workflows::http_cluster(cluster(&[&ua, &ub]), callback);
    let options = WfOptions {
        trans: TransOptions::default().retry_interval(Duration::from_secs(1)),
        ..Default::default()
    };
    register_transfer(&wfs, "cluster-resume", options);
    let app = wfs.callback_router("/wf");
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The second step fails once (a 500): the workflow stays unfinished, step 1 recorded.
    let gid = support::gid("cluster-wf-resume");
    busi().script(&gid, "TransIn", [Outcome::Error]);
    let input = serde_json::to_vec(&BusiReq::new(1)).expect("json");
    let err = wfs
        .execute("cluster-resume", &gid, &input)
        .await
        .expect_err("the second step failed");
    assert!(!err.is_failure(), "{err}");
    // The cluster's first server dies: b calls the workflow back, and the resumed run
    // reaches DTM through b.
    a.kill().expect("kill a");
    wait_status(&DtmClient::new(&ub).expect("client"), &gid, "succeed").await;
    // Step 1 was replayed from its record, not run again.
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn", "TransIn"]);
}

#[tokio::test]
async fn a_grpc_workflow_on_a_cluster_survives_lost_answers() {
    use dtm_examples::grpc_busi::pb::busi_client::BusiClient;
    use dtm_examples::grpc_busi::pb::ReqGrpc;
    use dtm_workflow::{Wf, WorkflowLayer, Workflows};
    use prost::Message;
    use tower_layer::Layer;
    let (a, b) = two_servers();
    let proxy = LossyProxy::start_grpc(a.grpc_port()).await;
    let member = dtmcli::cluster::WithQuery::new(
        dtmgrpc::DtmGrpcClient::new(&proxy.addr).expect("grpc client"),
        DtmClient::new(a.http_url()).expect("client"),
    );
    let c = Cluster::new([member]).expect("cluster");
    // Nothing resumes this workflow: it finishes in the call.
    let wfs = Workflows::grpc_cluster(c, "127.0.0.1:1");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", grpc_env().base))
        .expect("endpoint")
        .connect_lazy();
    let busi = BusiClient::new(WorkflowLayer.layer(channel));
    wfs.register("gcluster-transfer", move |wf: Wf, input: Vec<u8>| {
        let busi = busi.clone();
        async move {
            let req = ReqGrpc::decode(input.as_slice()).map_err(dtmcli::Error::invalid)?;
            wf.new_branch()?;
            busi.clone()
                .trans_out(wf.grpc_request(req.clone()))
                .await
                .map_err(|s| dtmgrpc::status_to_error("TransOut", &s))?;
            wf.new_branch()?;
            busi.clone()
                .trans_in(wf.grpc_request(req))
                .await
                .map_err(|s| dtmgrpc::status_to_error("TransIn", &s))?;
            Ok(())
        }
    })
    .expect("register");
    proxy.every_other.store(true, Ordering::SeqCst);
    proxy.lose.store(true, Ordering::SeqCst);
    let gid = support::gid("gcluster-wf");
    wfs.execute(
        "gcluster-transfer",
        &gid,
        &ReqGrpc::amount(1).encode_to_vec(),
    )
    .await
    .expect("a workflow DTM holds finishes");
    expect_transfer_workflow_done(&proxy, &b, &gid, || grpc_busi().handlers(&gid)).await;
}

/// A TCC try that opens a nested TCC through the service's own cluster: its sub-branch
/// registers with a member that is up, whichever member the request names as `dtm`.
async fn nested_try(
    axum::extract::State(c): axum::extract::State<Cluster<DtmClient>>,
    info: dtmcli::TransInfo,
    body: axum::body::Bytes,
) -> Result<&'static str, dtmcli::Error> {
    let req: BusiReq = serde_json::from_slice(&body).map_err(dtmcli::Error::invalid)?;
    let tcc = dtmcli::Tcc::nested(&c, &info)?;
    let [t, co, ca] = ["TransInTry", "TransInConfirm", "TransInCancel"].map(url);
    tcc.call_branch(&req, &t, &co, &ca).await?;
    Ok(r#"{"dtm_result":"SUCCESS"}"#)
}

#[tokio::test]
async fn nested_tcc_branches_register_through_the_cluster_whichever_member_is_named() {
    let (mut a, b) = two_servers();
    let (ua, ub) = (a.http_url(), b.http_url());
    // The branch service's cluster, and a caller that lists b first (its tries name b).
    let service = cluster(&[&ua, &ub]);
    let caller_b = cluster(&[&ub, &ua]);
    let router = axum::Router::new()
        .route("/nested-try", axum::routing::post(nested_try))
        .with_state(service.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let nested = format!("http://{}/nested-try", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let dtm_b = DtmClient::new(&ub).expect("client");
    for i in 0..4 {
        if i == 2 {
            // From now on the requests that name a as dtm name a dead server.
            a.kill().expect("kill a");
        }
        let caller = if i % 2 == 0 { &service } else { &caller_b };
        let gid = support::gid("cluster-nested");
        let out = ["TransOutTry", "TransOutConfirm", "TransOutCancel"].map(url);
        let (nested, co, ca) = (nested.clone(), url("TransInConfirm"), url("TransInCancel"));
        dtmcli::Tcc::run(caller, &gid, TransOptions::default(), |tcc| async move {
            tcc.call_branch(&BusiReq::new(1), &out[0], &out[1], &out[2])
                .await?;
            tcc.call_branch(&BusiReq::new(1), &nested, &co, &ca).await?;
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("nested TCC {i} failed although server b was up: {e}"));
        let q = wait_status(&dtm_b, &gid, "succeed").await;
        // The nested sub-branch (0201) was registered, tried and confirmed once.
        assert!(
            branch_rows(&q)
                .iter()
                .any(|r| r.starts_with("0201/confirm")),
            "{i}: {:?}",
            branch_rows(&q)
        );
        wait_calls(&gid, "TransInConfirm", 2).await;
        let mut ran = busi().handlers(&gid);
        ran.sort();
        assert_eq!(
            ran,
            [
                "TransInConfirm",
                "TransInConfirm",
                "TransInTry",
                "TransOutConfirm",
                "TransOutTry"
            ],
            "{i}"
        );
    }
}

/// An XA branch on MariaDB whose local transaction registers through the cluster: phase 1
/// adds `delta` (from the path) to account `user` (from the query's `user`), DTM's phase 2
/// commits or rolls it back, whichever server runs it.
async fn xa_branch(
    axum::extract::State(xa): axum::extract::State<
        dtm_barrier::xa::XaLocal<sqlx::MySql, Cluster<DtmClient>>,
    >,
    axum::extract::Path(delta): axum::extract::Path<i64>,
    info: dtmcli::TransInfo,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<&'static str, dtmcli::Error> {
    let user: i64 = q
        .get("user")
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| dtmcli::Error::invalid("no user"))?;
    xa.handle(&info, move |c| {
        Box::pin(async move {
            sqlx::query("update dtm_busi.user_account set balance = balance + ? where user_id = ?")
                .bind(delta)
                .bind(user)
                .execute(&mut *c)
                .await?;
            Ok(())
        })
    })
    .await?;
    Ok(r#"{"dtm_result":"SUCCESS"}"#)
}

#[tokio::test]
async fn xa_branches_register_through_the_cluster_while_a_server_dies() {
    let (mut a, b) = two_servers();
    let c = cluster(&[&a.http_url(), &b.http_url()]);
    let xa: dtm_barrier::xa::XaLocal<sqlx::MySql, _> = dtm_barrier::xa::XaLocal::new(
        dtm_examples::bank::mysql_url().parse().expect("mysql url"),
        c.clone(),
    );
    let router = axum::Router::new()
        .route("/xa/{delta}", axum::routing::any(xa_branch))
        .with_state(xa);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });

    let bank = bank_env().bank.clone();
    let first = 9_300_000_000 + i64::from(std::process::id() % 10_000) * 100;
    let mut done = Vec::new();
    for i in 0..6i64 {
        if i == 3 {
            a.kill().expect("kill a");
        }
        let (from, to) = (first + 2 * i, first + 2 * i + 1);
        let bank2 = bank.clone();
        on_env(async move {
            bank2
                .open_account(dtm_examples::bank::Db::Mysql, from, 100)
                .await
                .expect("account");
            bank2
                .open_account(dtm_examples::bank::Db::Mysql, to, 0)
                .await
                .expect("account");
        })
        .await;
        let gid = support::gid("cluster-xa");
        let (out, inn) = (
            format!("{base}/xa/-30?user={from}"),
            format!("{base}/xa/30?user={to}"),
        );
        dtmcli::Xa::run(&c, &gid, TransOptions::default(), |xa| async move {
            xa.call_branch(&serde_json::json!({}), &out).await?;
            xa.call_branch(&serde_json::json!({}), &inn).await?;
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("xa {i} failed although server b was up: {e}"));
        done.push((gid, from, to));
    }
    let dtm_b = DtmClient::new(b.http_url()).expect("client");
    for (gid, from, to) in done {
        wait_status(&dtm_b, &gid, "succeed").await;
        let bank2 = bank.clone();
        let balances = on_env(async move {
            (
                bank2
                    .balance(dtm_examples::bank::Db::Mysql, from)
                    .await
                    .expect("balance"),
                bank2
                    .balance(dtm_examples::bank::Db::Mysql, to)
                    .await
                    .expect("balance"),
            )
        })
        .await;
        assert_eq!(balances, (70, 30), "{gid}");
    }
}

/// A cluster fed by DNS (`dtmcli::discovery::resolve_every`, as for a Kubernetes headless
/// service): `localhost` resolves to the shared DTM server's addresses, and a saga runs
/// through the cluster that list made.
#[tokio::test]
async fn a_cluster_found_through_dns_runs_a_saga() {
    let port = env().server.http_port();
    let gid = gid("dns-cluster");
    let g = gid.clone();
    on_env(async move {
        let servers =
            dtmcli::discovery::resolve_every("localhost", port, Duration::from_secs(1), |a| {
                format!("http://{a}/api/dtmsvr")
            })
            .await
            .unwrap();
        let listed = servers.borrow().clone();
        assert!(
            !listed.is_empty() && listed.iter().all(|s| s.contains(&format!(":{port}/"))),
            "{listed:?}"
        );
        let cluster = Cluster::discovered(
            servers,
            |s| DtmClient::new(s),
            dtmcli::cluster::DEFAULT_COOLDOWN,
        )
        .unwrap();
        cluster
            .saga(&g)
            .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(1))
            .submit()
            .await
            .unwrap();
    })
    .await;
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(busi().handlers(&gid), ["TransOut"]);
}
