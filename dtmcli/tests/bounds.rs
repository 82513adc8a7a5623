//! The client against hostile peers, without a DTM server: a branch that accepts and never
//! answers, answers that never end, 200s that are not DTM's answer, extreme durations,
//! credentials in the server URL, untrusted servers named by a request, invalid gids.
// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dtmcli::{DtmClient, Error, Op, Tcc, TransInfo, TransOptions, TransType, TrustedServers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one request (head and `Content-Length` body) so the client is done sending.
async fn read_request(s: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut have = buf.len() - end - 4;
            while have < len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => have += n,
                }
            }
            return;
        }
    }
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// Accepts, reads the request, never answers.
    Silent,
    /// 200 with a chunked body that never ends.
    Endless,
    /// 200 announcing a 1 TiB body.
    HugeLength,
    /// This exact answer, then close.
    Fixed(&'static str),
}

/// A local HTTP server behaving as told; returns `http://127.0.0.1:<port>`.
async fn hostile(b: Behaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                read_request(&mut s).await;
                match b {
                    Behaviour::Silent => {
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    }
                    Behaviour::Endless => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                        if s.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let data = vec![b'x'; 64 * 1024];
                        let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
                        frame.extend_from_slice(&data);
                        frame.extend_from_slice(b"\r\n");
                        while s.write_all(&frame).await.is_ok() {}
                    }
                    Behaviour::HugeLength => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-length: 1099511627776\r\n\r\n{";
                        let _ = s.write_all(head.as_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    }
                    Behaviour::Fixed(answer) => {
                        let _ = s.write_all(answer.as_bytes()).await;
                        let _ = s.shutdown().await;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn ok(content_type: &str, body: &str) -> &'static str {
    Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    )
}

const SUCCESS: &str = r#"{"dtm_result":"SUCCESS"}"#;

fn info(op: Op) -> TransInfo {
    TransInfo::new("g-bounds", TransType::Tcc, "01", op)
}

/// A client of `server` with these bounds.
fn bounded(server: &str, limits: dtmcli::Limits) -> DtmClient {
    DtmClient::builder(server).limits(limits).build().unwrap()
}

/// The error of a branch call that must fail: `body` to `url`, as a TCC try.
async fn branch_error(dtm: &DtmClient, url: &str, body: Option<&str>) -> Error {
    dtm.call_branch(url, &info(Op::Try), &BTreeMap::new(), body.map(Into::into))
        .await
        .unwrap_err()
}

/// Submits a one-step saga `gid`.
async fn submit_saga(dtm: &DtmClient, gid: &str) -> dtmcli::Result<()> {
    dtm.saga(gid).add("http://a", "http://b", &1).submit().await
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------- time

#[tokio::test]
async fn a_branch_that_never_answers_times_out() {
    let branch = hostile(Behaviour::Silent).await;
    let limits = dtmcli::Limits::default().with_timeout(Duration::from_secs(2));
    let dtm = bounded("http://127.0.0.1:1/api/dtmsvr", limits);
    let t = Instant::now();
    let e = branch_error(&dtm, &format!("{branch}/TransOutTry"), Some("{}")).await;
    let took = t.elapsed();
    assert!(e.is_transport(), "{e:?}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    // It hung for 150 s and more before calls to branches had a timeout.
    assert!(took < Duration::from_secs(20), "{took:?}");

    // The msg back-check of do_and_submit, with the transaction's request_timeout.
    let fake_dtm = hostile(Behaviour::Fixed(ok("application/json", SUCCESS))).await;
    let dtm = DtmClient::new(format!("{fake_dtm}/api/dtmsvr")).unwrap();
    let t = Instant::now();
    let e = dtm
        .msg("g-bounds-msg")
        .add("http://127.0.0.1:1/a", &1)
        .with_options(TransOptions::default().request_timeout(Duration::from_secs(1)))
        .do_and_submit(&format!("{branch}/QueryPrepared"), |_| async {
            Err(Error::other("unknown outcome"))
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Other(_)), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[tokio::test]
async fn tcc_try_uses_the_transactions_request_timeout() {
    let branch = hostile(Behaviour::Silent).await;
    let fake_dtm = hostile(Behaviour::Fixed(ok("application/json", SUCCESS))).await;
    let dtm = DtmClient::new(format!("{fake_dtm}/api/dtmsvr")).unwrap();
    let t = Instant::now();
    let r: dtmcli::Result<()> = dtm
        .tcc_global_transaction(
            "g-bounds-tcc",
            TransOptions::default().request_timeout(Duration::from_secs(1)),
            |tcc| async move {
                tcc.call_branch(&1, &format!("{branch}/Try"), "http://c", "http://x")
                    .await
                    .map(drop)
            },
        )
        .await;
    let e = r.unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[tokio::test]
async fn extreme_durations_do_not_panic() {
    let fake_dtm = hostile(Behaviour::Fixed(ok("application/json", SUCCESS))).await;
    let max = dtmcli::Limits::default()
        .with_timeout(Duration::MAX)
        .with_connect_timeout(Duration::MAX);
    let dtm = bounded(&format!("{fake_dtm}/api/dtmsvr"), max);
    assert_eq!(dtm.timeout(), dtmcli::MAX_TIMEOUT);
    let options = TransOptions::default()
        .wait_result(true)
        .request_timeout(Duration::MAX)
        .timeout_to_fail(Duration::MAX)
        .retry_interval(Duration::MAX);
    dtm.saga("g-max")
        .add("http://a", "http://b", &1)
        .with_options(options.clone())
        .submit()
        .await
        .unwrap();
    let msg = dtm
        .msg("g-max-msg")
        .add("http://a", &1)
        .delay(Duration::MAX)
        .with_options(options.clone());
    let req = msg.submit_request().unwrap();
    let max = i64::try_from(dtmcli::MAX_WIRE_DURATION.as_secs()).unwrap();
    assert_eq!(req.custom_data(), format!(r#"{{"delay":{max}}}"#));
    assert_eq!(req.request_timeout(), max);
    msg.submit().await.unwrap();
    assert_eq!(dtm.call_timeout(Some(Duration::MAX)), dtmcli::MAX_TIMEOUT);
}

// ---------------------------------------------------------------- size

#[tokio::test]
async fn endless_answers_are_too_large() {
    for b in [Behaviour::Endless, Behaviour::HugeLength] {
        let peer = hostile(b).await;
        let limit = 256 * 1024;
        let capped = dtmcli::Limits::default().with_max_answer_bytes(limit);
        let dtm = bounded(&format!("{peer}/api/dtmsvr"), capped);
        let t = Instant::now();
        let e = branch_error(&dtm, &format!("{peer}/TransOutTry"), None).await;
        assert!(
            matches!(e, Error::TooLarge { limit: l, ref url } if l == limit && url.ends_with("/TransOutTry")),
            "{e:?}"
        );
        let e = dtm.new_gid().await.unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
        let e = submit_saga(&dtm, "g-big").await.unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }
    assert_eq!(
        DtmClient::new("http://h/api/dtmsvr")
            .unwrap()
            .max_answer_bytes(),
        dtmcli::DEFAULT_MAX_ANSWER_BYTES
    );
}

// ---------------------------------------------------------------- shape

#[tokio::test]
async fn a_200_that_is_not_dtms_answer_is_a_decode_error() {
    for answer in [
        ok(
            "text/html",
            "<html><body><h1>Welcome to nginx!</h1></body></html>",
        ),
        ok("application/json", ""),
        ok("application/json", "{}"),
        ok("application/json", r#"{"dtm_result":"MAYBE"}"#),
    ] {
        let peer = hostile(Behaviour::Fixed(answer)).await;
        let dtm = DtmClient::new(format!("{peer}/api/dtmsvr")).unwrap();
        let e = submit_saga(&dtm, "g-html").await.unwrap_err();
        assert!(matches!(e, Error::Decode { .. }), "{answer}: {e:?}");
        let m = dtm.msg("g-html").add("http://a", &1);
        assert!(matches!(
            m.prepare("http://q").await,
            Err(Error::Decode { .. })
        ));
        let fields = BTreeMap::from([("gid".to_string(), "g".to_string())]);
        assert!(matches!(
            dtm.register_branch(&fields).await,
            Err(Error::Decode { .. })
        ));
        let req = dtmcli::TransRequest::new("g", TransType::Tcc, &TransOptions::default());
        assert!(matches!(dtm.abort(&req).await, Err(Error::Decode { .. })));
        for r in [
            dtm.subscribe("t", "http://x", "").await,
            dtm.unsubscribe("t", "http://x").await,
            dtm.delete_topic("t").await,
            dtm.force_stop("g").await,
            dtm.reset_next_cron_time("g").await,
        ] {
            assert!(matches!(r, Err(Error::Decode { .. })), "{answer}: {r:?}");
        }
    }
    // DTM's own answer still passes.
    let peer = hostile(Behaviour::Fixed(ok("application/json", SUCCESS))).await;
    let dtm = DtmClient::new(format!("{peer}/api/dtmsvr")).unwrap();
    submit_saga(&dtm, "g-ok").await.unwrap();
}

// ---------------------------------------------------------------- secrets

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains("s3cret"),
        "{what} shows the password: {text}"
    );
}

fn assert_error_clean(what: &str, e: &Error) {
    assert_no_secret(what, &e.to_string());
    assert_no_secret(what, &format!("{e:?}"));
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        assert_no_secret(what, &s.to_string());
        src = s.source();
    }
}

#[tokio::test]
async fn credentials_never_show() {
    // Transport: connection refused.
    let refused = format!("http://admin:s3cret@127.0.0.1:{}/api/dtmsvr", free_port());
    let builder = DtmClient::builder(refused.clone()).trusted_servers(TrustedServers::list([
        "http://admin:s3cret@dtm2:36789/api/dtmsvr",
    ]));
    assert_no_secret("builder Debug", &format!("{builder:?}"));
    let dtm = builder.build().unwrap();
    assert_no_secret("client Debug", &format!("{dtm:?}"));
    let e = dtm.new_gid().await.unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    assert_error_clean("transport (newGid)", &e);
    let e = submit_saga(&dtm, "g-secret").await.unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    assert_error_clean("transport (submit)", &e);
    // A branch URL with credentials.
    let url = format!("http://u:s3cret@127.0.0.1:{}/b", free_port());
    let e = branch_error(&dtm, &url, None).await;
    assert_error_clean("transport (branch)", &e);

    // Status: a 500.
    let peer = hostile(Behaviour::Fixed(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"message\":\"x\"}",
    ))
    .await;
    let with_pw = peer.replace("http://", "http://admin:s3cret@");
    let dtm = DtmClient::new(format!("{with_pw}/api/dtmsvr")).unwrap();
    let e = dtm.new_gid().await.unwrap_err();
    assert!(matches!(e, Error::Status { status: 500, .. }), "{e:?}");
    assert_error_clean("status", &e);

    // Decode: a proxy's page.
    let peer = hostile(Behaviour::Fixed(ok("text/html", "<html>proxy</html>"))).await;
    let with_pw = peer.replace("http://", "http://admin:s3cret@");
    let dtm = DtmClient::new(format!("{with_pw}/api/dtmsvr")).unwrap();
    for e in [
        dtm.new_gid().await.unwrap_err(),
        submit_saga(&dtm, "g-secret").await.unwrap_err(),
    ] {
        assert!(matches!(e, Error::Decode { .. }), "{e:?}");
        assert_error_clean("decode", &e);
    }

    // TooLarge.
    let peer = hostile(Behaviour::Endless).await;
    let with_pw = peer.replace("http://", "http://admin:s3cret@");
    let capped = dtmcli::Limits::default().with_max_answer_bytes(1024);
    let dtm = bounded(&format!("{with_pw}/api/dtmsvr"), capped);
    let e = dtm.new_gid().await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    assert_error_clean("too large", &e);

    // Transaction info naming a server with credentials.
    let mut i = info(Op::Action);
    i.dtm = Some(with_pw.clone());
    i.phase2_url = Some(with_pw.clone());
    assert_no_secret("TransInfo Debug", &format!("{i:?}"));

    // Untrusted and malformed server URLs.
    let e = dtm
        .with_server("http://evil:s3cret@127.0.0.1:9/api/dtmsvr")
        .unwrap_err();
    assert_error_clean("untrusted", &e);
    let e = DtmClient::new("ftp://admin:s3cret@h/api").unwrap_err();
    assert_error_clean("bad scheme", &e);
}

// ---------------------------------------------------------------- trust

#[test]
fn with_server_follows_only_trusted_servers() {
    let own = "http://dtm:36789/api/dtmsvr";
    let other = "http://attacker:8080/api/dtmsvr";
    let dtm = DtmClient::new(own).unwrap();
    assert_eq!(dtm.trusted_servers(), &TrustedServers::Own);
    assert_eq!(dtm.with_server(own).unwrap().server(), own);
    assert_eq!(dtm.with_server(&format!("{own}/")).unwrap().server(), own);
    let e = dtm.with_server(other).unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");

    let mut info = info(Op::Try);
    info.dtm = Some(other.to_string());
    let e = Tcc::nested(&dtm, &info).unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    info.dtm = Some(own.to_string());
    Tcc::nested(&dtm, &info).unwrap();

    let listed = DtmClient::builder(own)
        .trusted_servers(TrustedServers::list([format!("{other}/")]))
        .build()
        .unwrap();
    let switched = listed.with_server(other).unwrap();
    assert_eq!(switched.server(), other);
    // The switched client keeps the same trust.
    assert_eq!(switched.trusted_servers(), listed.trusted_servers());
    assert!(listed.with_server("http://third:1/api/dtmsvr").is_err());

    let any = DtmClient::builder(own)
        .trusted_servers(TrustedServers::Any)
        .build()
        .unwrap();
    any.with_server(other).unwrap();
}

// ---------------------------------------------------------------- gids

#[tokio::test]
async fn invalid_gids_are_refused_before_sending() {
    // Nothing listens there: a request would be a transport error.
    let dtm = DtmClient::new(format!("http://127.0.0.1:{}/api/dtmsvr", free_port())).unwrap();
    for gid in ["", "a;b", "a\nb", " a", &"x".repeat(129)] {
        let e = submit_saga(&dtm, gid).await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "saga {gid:?}: {e:?}");
        let e = dtm
            .msg(gid)
            .add("http://a", &1)
            .prepare("http://q")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "msg {gid:?}: {e:?}");
        let e = dtm
            .tcc_global_transaction(gid, TransOptions::default(), |_| async { Ok(()) })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "tcc {gid:?}: {e:?}");
        let e = dtm
            .xa_global_transaction(gid, TransOptions::default(), |_| async { Ok(()) })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "xa {gid:?}: {e:?}");
    }
}
