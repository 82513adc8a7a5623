//! Unit tests of the client's bounds against hostile local peers: a TCP port that accepts
//! and never speaks, a gRPC server whose calls never end, one whose answers are huge, an
//! HTTP branch streaming a huge body; and extreme settings, TLS, trust and redaction.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dtmcli::{Error, Op, TransInfo, TransOptions, TransType, TrustedServers};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::pb::dtmgimp::dtm_server::{Dtm, DtmServer};
use crate::pb::dtmgimp::{
    DtmBranchRequest, DtmGidReply, DtmProgressesReply, DtmRequest, DtmTopicRequest,
};
use crate::DtmGrpcClient;

/// A fake DTM (and branch: any `/dtmgimp.Dtm/<Rpc>` path works as a branch URL):
/// `NewGid` answers a `gid_len`-byte gid, `Submit` and `PrepareWorkflow` never answer,
/// everything else answers OK at once.
struct Hostile {
    gid_len: usize,
}

type Answer<T> = Result<tonic::Response<T>, tonic::Status>;

impl Hostile {
    async fn gid(&self) -> Answer<DtmGidReply> {
        Ok(tonic::Response::new(DtmGidReply {
            gid: "x".repeat(self.gid_len),
        }))
    }
    async fn ok<T: Default>(&self) -> Answer<T> {
        Ok(tonic::Response::new(T::default()))
    }
    async fn never<T>(&self) -> Answer<T> {
        std::future::pending().await
    }
}

/// `impl Dtm for Hostile`, each rpc answered by the `Hostile` method named after it (a
/// macro: the trait's methods can only be written out one by one).
macro_rules! hostile_rpcs {
    ($($rpc:ident($req:ty) -> $resp:ty: $answer:ident;)*) => {
        #[tonic::async_trait]
        impl Dtm for Hostile {
            $(async fn $rpc(&self, _: tonic::Request<$req>) -> Answer<$resp> {
                self.$answer().await
            })*
        }
    };
}

hostile_rpcs! {
    new_gid(()) -> DtmGidReply: gid;
    submit(DtmRequest) -> (): never;
    prepare(DtmRequest) -> (): ok;
    abort(DtmRequest) -> (): ok;
    register_branch(DtmBranchRequest) -> (): ok;
    prepare_workflow(DtmRequest) -> DtmProgressesReply: never;
    subscribe(DtmTopicRequest) -> (): ok;
    unsubscribe(DtmTopicRequest) -> (): ok;
    delete_topic(DtmTopicRequest) -> (): ok;
}

/// A listener on a free port of 127.0.0.1, and its `127.0.0.1:<port>`.
async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

/// Starts a [`Hostile`] gRPC server; returns `127.0.0.1:<port>`.
async fn hostile_grpc(gid_len: usize) -> String {
    let (listener, addr) = listen().await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DtmServer::new(Hostile { gid_len }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

/// A TCP port that accepts connections, reads, and never writes a byte.
async fn mute_tcp() -> String {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// An HTTP/1.1 server answering 200 with a `len`-byte body to every request.
#[cfg(feature = "http")]
async fn huge_http(len: usize) -> String {
    use tokio::io::AsyncWriteExt;
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&vec![b'x'; len]).await;
            });
        }
    });
    addr
}

fn info() -> TransInfo {
    TransInfo::new("g1", TransType::Tcc, "01", Op::Try)
}

/// A client of `target` with these bounds.
fn bounded(target: &str, limits: dtmcli::Limits) -> DtmGrpcClient {
    DtmGrpcClient::builder(target)
        .limits(limits)
        .build()
        .unwrap()
}

fn client(target: &str, timeout: Duration) -> DtmGrpcClient {
    let limits = dtmcli::Limits::default()
        .with_timeout(timeout)
        .with_connect_timeout(Duration::from_secs(2));
    bounded(target, limits)
}

/// The error of a branch call that must fail: `body` to `url`, with the transaction info.
async fn branch_error(c: &DtmGrpcClient, url: &str, body: &'static [u8]) -> Error {
    c.call_branch_raw(url, &info(), &BTreeMap::new(), Bytes::from_static(body))
        .await
        .unwrap_err()
}

fn assert_deadline(e: &Error, started: Instant, limit: Duration) {
    assert!(e.is_transport(), "{e:?}");
    if let Error::Grpc { answered, .. } = e {
        // Said as what happened: the peer answered nothing.
        assert!(!answered, "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with("no gRPC answer from "), "{text}");
        assert!(text.contains("none came within 300ms"), "{text}");
        assert!(!text.contains("answered gRPC status"), "{text}");
    }
    assert!(
        started.elapsed() < limit,
        "took {:?}: {e}",
        started.elapsed()
    );
}

/// [`assert_deadline`] of a gRPC call: `DeadlineExceeded`.
fn assert_grpc_deadline(e: &Error, started: Instant, limit: Duration) {
    assert!(matches!(e, Error::Grpc { code: 4, .. }), "{e:?}");
    assert_deadline(e, started, limit);
}

#[tokio::test]
async fn calls_to_silent_peers_end_within_the_timeout() {
    let t = Duration::from_millis(300);
    let limit = Duration::from_secs(3);
    // Accepts TCP and never speaks HTTP/2.
    let mute = mute_tcp().await;
    let c = client(&mute, t);
    let started = Instant::now();
    let e = c.new_gid().await.unwrap_err();
    assert_grpc_deadline(&e, started, limit);
    let started = Instant::now();
    let e = branch_error(&c, &format!("{mute}/busi.Busi/TransIn"), b"").await;
    assert_grpc_deadline(&e, started, limit);
    // An http:// branch that never answers (the SDK calls http:// branches itself only
    // with the `http` feature).
    #[cfg(feature = "http")]
    {
        let started = Instant::now();
        let e = branch_error(&c, &format!("http://{mute}/api/busi/TransIn"), b"{}").await;
        assert_deadline(&e, started, limit);
    }

    // Speaks HTTP/2 and gRPC, but the call never ends.
    let grpc = hostile_grpc(8).await;
    let c = client(&grpc, t);
    let req = DtmRequest::from(&c.saga("g1").request().unwrap());
    let started = Instant::now();
    let e = c.submit(&req).await.unwrap_err();
    assert_grpc_deadline(&e, started, limit);
    let started = Instant::now();
    let e = branch_error(&c, &format!("{grpc}/dtmgimp.Dtm/Submit"), b"").await;
    assert_grpc_deadline(&e, started, limit);
}

#[tokio::test]
async fn a_transactions_request_timeout_bounds_its_branch_calls() {
    let grpc = hostile_grpc(8).await;
    // The client's own timeout is long; the transaction's is short.
    let c = client(&grpc, Duration::from_secs(120));
    let o = TransOptions::default().request_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let e = c
        .tcc_global_transaction("g-tcc-timeout", o.clone(), |tcc| async move {
            let _: () = tcc
                .call_branch(
                    &(),
                    &format!("{grpc}/dtmgimp.Dtm/Submit"),
                    &format!("{grpc}/dtmgimp.Dtm/Prepare"),
                    &format!("{grpc}/dtmgimp.Dtm/Prepare"),
                )
                .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert_grpc_deadline(&e, started, Duration::from_secs(5));
}

#[tokio::test]
async fn answers_above_the_cap_are_too_large() {
    let grpc = hostile_grpc(64 * 1024).await;
    let small = bounded(&grpc, dtmcli::Limits::default().with_max_answer_bytes(1024));
    let e = small.new_gid().await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 1024, .. }), "{e:?}");
    let e = branch_error(&small, &format!("{grpc}/dtmgimp.Dtm/NewGid"), b"").await;
    assert!(matches!(e, Error::TooLarge { limit: 1024, .. }), "{e:?}");
    // Under the default cap the same answer passes.
    let gid = DtmGrpcClient::new(&grpc).unwrap().new_gid().await.unwrap();
    assert_eq!(gid.len(), 64 * 1024);
    // An http:// branch's body is capped too (feature `http`).
    #[cfg(feature = "http")]
    {
        let http = huge_http(100_000).await;
        let e = branch_error(&small, &format!("http://{http}/api/busi/TransIn"), b"{}").await;
        assert!(matches!(e, Error::TooLarge { limit: 1024, .. }), "{e:?}");
    }
}

#[tokio::test]
async fn extreme_durations_do_not_panic() {
    let grpc = hostile_grpc(8).await;
    let max = dtmcli::Limits::default()
        .with_timeout(Duration::MAX)
        .with_connect_timeout(Duration::MAX);
    let c = bounded(&grpc, max);
    assert_eq!(c.timeout(), dtmcli::MAX_TIMEOUT);
    let o = TransOptions::default()
        .wait_result(true)
        .request_timeout(Duration::MAX)
        .timeout_to_fail(Duration::MAX)
        .retry_interval(Duration::MAX);
    let req = DtmRequest::from(&c.saga("g1").with_options(o.clone()).request().unwrap());
    assert_eq!(c.timeout_for(&req), dtmcli::MAX_TIMEOUT);
    assert_eq!(
        c.limits().branch_call_timeout(o.request_timeout),
        dtmcli::MAX_TIMEOUT
    );
    // A real call with these settings (wait_result: the timeout is summed).
    c.prepare(&req).await.unwrap();
    // A wire value DTM could never have sent through this SDK still does not overflow.
    let mut raw = req.clone();
    if let Some(t) = raw.trans_options.as_mut() {
        t.request_timeout = i64::MAX;
    }
    assert_eq!(c.timeout_for(&raw), dtmcli::MAX_TIMEOUT);
    let m = c
        .msg("g1")
        .add_raw(&format!("{grpc}/a.B/C"), vec![1])
        .delay(Duration::MAX)
        .with_options(o.clone());
    let s = m.submit_request().unwrap();
    assert!(s.custom_data().contains("delay"), "{}", s.custom_data());
    let s = DtmRequest::from(&c.saga("g1").with_options(o).request().unwrap());
    assert!(s.trans_options.unwrap().request_timeout > 0);
}

#[tokio::test]
async fn https_targets_never_dial_plaintext() {
    let grpc = hostile_grpc(8).await;
    let r = DtmGrpcClient::new(format!("https://{grpc}"));
    #[cfg(not(feature = "tls"))]
    {
        let e = r.unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        assert!(e.to_string().contains("`tls` feature"), "{e}");
    }
    #[cfg(feature = "tls")]
    {
        // TLS against a plaintext server: the call fails instead of talking in clear.
        let c = r.unwrap();
        assert!(format!("{c:?}").contains("tls: true"), "{c:?}");
        let e = c.new_gid().await.unwrap_err();
        assert!(matches!(e, Error::Grpc { .. }), "{e:?}");
    }
    // http:// and bare host:port stay plaintext.
    for t in [format!("http://{grpc}"), grpc.clone()] {
        let c = DtmGrpcClient::new(t).unwrap();
        assert_eq!(c.new_gid().await.unwrap(), "xxxxxxxx");
    }
}

#[tokio::test]
async fn credentials_never_show() {
    let e = DtmGrpcClient::new("https://user:s3cret@dtm:36790").unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    assert!(!e.to_string().contains("s3cret"), "{e}");
    let b = DtmGrpcClient::builder("https://user:s3cret@dtm:36790")
        .trusted_servers(TrustedServers::list(["http://u:s3cret@dtm2:1"]));
    assert!(!format!("{b:?}").contains("s3cret"), "{b:?}");
    let c = DtmGrpcClient::builder("127.0.0.1:1")
        .trusted_servers(TrustedServers::list(["http://u:s3cret@dtm2:1"]))
        .limits(dtmcli::Limits::default().with_connect_timeout(Duration::from_secs(1)))
        .build()
        .unwrap();
    assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
    let e = c.with_server("u:s3cret@evil:1").unwrap_err();
    assert!(!e.to_string().contains("s3cret"), "{e}");
    // A branch URL with credentials: the transport error does not repeat them.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://u:s3cret@127.0.0.1:{port}/api/busi/TransIn");
    let e = branch_error(&c, &url, b"{}").await;
    assert!(!e.to_string().contains("s3cret"), "{e}");
    assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
    let e = branch_error(&c, "u:s3cret@h:1/a.B/C", b"").await;
    assert!(!e.to_string().contains("s3cret"), "{e}");
}

#[tokio::test]
async fn with_server_follows_only_trusted_servers() {
    let own = DtmGrpcClient::new("127.0.0.1:36790").unwrap();
    assert_eq!(
        own.with_server("127.0.0.1:36790").unwrap().server(),
        own.server()
    );
    assert!(own.with_server("http://127.0.0.1:36790/").is_ok());
    for other in ["evil:36790", "localhost:36790", "127.0.0.1:36791"] {
        let e = own.with_server(other).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{other}: {e:?}");
    }
    let listed = DtmGrpcClient::builder("127.0.0.1:36790")
        .trusted_servers(TrustedServers::list(["http://localhost:36790"]))
        .build()
        .unwrap();
    let nested = listed.with_server("localhost:36790").unwrap();
    assert_eq!(nested.server(), "localhost:36790");
    // The derived client keeps the first client's trust (and its own server).
    assert!(nested.with_server("127.0.0.1:36790").is_ok());
    assert!(nested.with_server("evil:1").is_err());
    let any = DtmGrpcClient::builder("127.0.0.1:36790")
        .trusted_servers(TrustedServers::Any)
        .build()
        .unwrap();
    assert!(any.with_server("evil:1").is_ok());
    // Nested TCC from metadata naming an untrusted server: refused before any call.
    let mut info = info();
    info.dtm = Some("evil:1".into());
    let e = crate::Tcc::nested(&own, &info).unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
}

#[tokio::test]
async fn gids_are_checked_before_anything_is_sent() {
    // A dead DTM: a call would give Unavailable, a refusal InvalidInput.
    let dead = dtmcli::Limits::default().with_connect_timeout(Duration::from_millis(200));
    let c = bounded("127.0.0.1:1", dead);
    for bad in ["", "a\tb", "caf\u{e9}", "a;b", " a", &"x".repeat(129)] {
        let e = c.saga(bad).submit().await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "saga {bad:?}: {e:?}");
        let e = c.msg(bad).submit().await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "msg {bad:?}: {e:?}");
        let e = c
            .msg(bad)
            .do_and_submit("h:1/a.B/Q", |_| async { Ok(()) })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "msg {bad:?}: {e:?}");
        let e = c
            .tcc_global_transaction(bad, TransOptions::default(), |_| async { Ok(()) })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "tcc {bad:?}: {e:?}");
        let e = c
            .xa_global_transaction(bad, TransOptions::default(), |_| async { Ok(()) })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "xa {bad:?}: {e:?}");
    }
    assert!(c.saga("order-1").request().is_ok());
}
