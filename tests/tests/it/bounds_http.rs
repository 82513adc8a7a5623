//! Bounds of the HTTP SDK against the real DTM server: a branch request naming an untrusted
//! DTM server is refused (nested TCC from the query), extreme durations go over the wire
//! without panicking, normal flows still pass with the strict success check, and the
//! workflow HTTP recorder caps and times out what it reads.
// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use dtm_workflow::{send_http, WfOptions, WorkflowMiddleware, Workflows};
use dtmcli::{DtmClient, Error, Op, TransInfo, TransOptions, TransType};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP server counting connections; `answer` is what it writes after reading a little of
/// each request (None: nothing, ever). Returns `127.0.0.1:<port>` and the counter.
async fn peer(answer: Option<&'static [u8]>, endless: bool) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = s.read(&mut buf).await;
                match answer {
                    Some(a) => {
                        if s.write_all(a).await.is_err() {
                            return;
                        }
                        if endless {
                            let mut frame = b"10000\r\n".to_vec();
                            frame.extend(std::iter::repeat_n(b'x', 0x10000));
                            frame.extend_from_slice(b"\r\n");
                            while s.write_all(&frame).await.is_ok() {}
                        }
                    }
                    None => tokio::time::sleep(Duration::from_secs(600)).await,
                }
            });
        }
    });
    (addr, count)
}

const CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";

#[tokio::test]
async fn nested_tcc_refuses_an_untrusted_dtm_named_by_the_query() {
    let (evil, contacted) = peer(None, false).await;
    let dtm = dtm();
    let mut info = TransInfo::new(gid("untrusted"), TransType::Tcc, "01", Op::Try);
    info.dtm = Some(format!("http://{evil}/api/dtmsvr"));
    let e = dtm
        .call_branch(
            &url("TransInTccNested"),
            &info,
            &BTreeMap::new(),
            Some(serde_json::to_string(&BusiReq::new(30)).unwrap()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Status { status: 400, ref body, .. } if body.contains("does not trust")),
        "{e:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        contacted.load(Ordering::SeqCst),
        0,
        "the branch called the untrusted server"
    );
}

#[tokio::test]
async fn extreme_durations_go_over_the_wire() {
    let dtm = DtmClient::builder(env().server.http_url())
        .limits(dtmcli::Limits::default().with_timeout(Duration::MAX))
        .build()
        .unwrap();
    let gid = gid("max-durations");
    let body = BusiReq::new(30);
    dtm.saga(&gid)
        .add(&url("TransOut"), &url("TransOutRevert"), &body)
        .add(&url("TransIn"), &url("TransInRevert"), &body)
        .with_options(
            TransOptions::default()
                .wait_result(true)
                .request_timeout(Duration::MAX)
                .timeout_to_fail(Duration::MAX),
        )
        .submit()
        .await
        .unwrap();
    let q = dtm.query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "succeed");

    // resetCronTime with an "after" of forever is accepted: sent as at most 100 years, which
    // DTM's Go duration holds (u64::MAX seconds used to reach DTM and fail its parsing).
    let r = dtm.reset_cron_time(Duration::MAX, 10).await.unwrap();
    assert!(!r.has_remaining, "{r:?}");

    // A msg delayed "forever" is accepted and held.
    let gid = crate::support::gid("max-delay");
    dtm.msg(&gid)
        .add(&url("TransIn"), &body)
        .delay(Duration::MAX)
        .submit()
        .await
        .unwrap();
    let q = dtm.query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "submitted");
    assert_eq!(busi().count(&gid, "TransIn"), 0);
}

#[tokio::test]
async fn msg_and_registered_branches_pass_the_strict_success_check() {
    let dtm = dtm();
    let gid = gid("strict-msg");
    let msg = prepared_credit(&dtm, &gid).await;
    // The admin calls accept DTM's real answers too.
    dtm.reset_next_cron_time(&gid).await.unwrap();
    msg.submit().await.unwrap();
    wait_status(&dtm, &gid, "succeed").await;

    // registerBranch through XA, and abort.
    let gid = crate::support::gid("strict-xa");
    let r: dtmcli::Result<()> = dtm
        .xa_global_transaction(&gid, TransOptions::default(), |xa| async move {
            xa.call_branch(&BusiReq::new(5), &url("TransOutXa")).await?;
            Err(Error::failure("roll back"))
        })
        .await;
    assert!(r.unwrap_err().is_failure());
    wait_status(&dtm, &gid, "failed").await;
}

#[tokio::test]
async fn workflow_http_recorder_caps_and_times_out() {
    let (endless, _) = peer(Some(CHUNKED), true).await;
    let (silent, _) = peer(None, false).await;
    let dtm = DtmClient::builder(env().server.http_url())
        .limits(dtmcli::Limits::default().with_max_answer_bytes(64 * 1024))
        .build()
        .unwrap();
    // Nothing serves the callback: the workflows stay unfinished, as they should.
    let wfs = Workflows::http(dtm, "http://127.0.0.1:1/api/wf/resume");
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(WorkflowMiddleware)
        .build();
    let options = WfOptions {
        trans: TransOptions::default()
            .request_timeout(Duration::from_secs(1))
            .retry_interval(Duration::from_secs(60)),
        ..Default::default()
    };
    let h = http.clone();
    wfs.register_with_options("call-peer", options, move |wf, input| {
        let http = h.clone();
        async move {
            let target = String::from_utf8_lossy(&input).into_owned();
            wf.new_branch()?;
            send_http(wf.http(&http, Method::POST, &target).body("{}")).await
        }
    })
    .unwrap();

    // A peer that answers without end, and one that never answers: each call is cut.
    let call = |name: &str, peer: String| {
        let (wfs, gid) = (wfs.clone(), gid(name));
        async move {
            let t = Instant::now();
            let e = wfs
                .execute("call-peer", &gid, format!("http://{peer}/x").as_bytes())
                .await
                .unwrap_err();
            assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
            e
        }
    };
    let e = call("wf-endless", endless.to_string()).await;
    assert!(
        matches!(e, Error::TooLarge { limit, .. } if limit == 64 * 1024),
        "{e:?}"
    );
    let e = call("wf-silent", silent.to_string()).await;
    assert!(e.is_transport(), "{e:?}");

    let e = wfs.execute("call-peer", "bad;gid", b"").await.unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
}

#[tokio::test]
async fn workflow_grpc_recorder_times_out() {
    use dtm_examples::grpc_busi::pb::busi_client::BusiClient;
    use dtm_examples::grpc_busi::pb::ReqGrpc;
    use tower_layer::Layer;

    // Accepts TCP, never speaks HTTP/2: a call waits forever without a deadline.
    let (silent, _) = peer(None, false).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{silent}"))
        .unwrap()
        .connect_lazy();
    let client = BusiClient::new(dtm_workflow::WorkflowLayer.layer(channel));
    let wfs = Workflows::http(dtm(), "http://127.0.0.1:1/api/wf/resume");
    let options = WfOptions {
        trans: TransOptions::default()
            .request_timeout(Duration::from_secs(1))
            .retry_interval(Duration::from_secs(60)),
        ..Default::default()
    };
    wfs.register_with_options("grpc-silent", options, move |wf, _input| {
        let mut c = client.clone();
        async move {
            wf.new_branch()?;
            c.trans_out(wf.grpc_request(ReqGrpc::default()))
                .await
                .map_err(|s| dtmgrpc::status_to_error("TransOut", &s))?;
            Ok(Vec::new())
        }
    })
    .unwrap();
    let t = Instant::now();
    let e = wfs
        .execute("grpc-silent", &gid("wf-grpc-silent"), b"")
        .await
        .unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    // The layer's own deadline is told as no answer, also through the caller's status_to_error.
    assert!(
        matches!(
            e,
            Error::Grpc {
                code: 4,
                answered: false,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    // The layer's deadline and the channel's own (from `grpc-timeout`) expire together:
    // either may report it ("within 1s" / "within its deadline").
    assert!(
        text.starts_with("no gRPC answer from TransOut: none came within"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

/// A timeout for branch calls apart from DTM's (`Limits::with_branch_timeout`): a TCC whose
/// try goes to a branch that never answers gives up on it after the branch timeout (1 s),
/// while calls to DTM keep theirs (30 s), and DTM, told to abort, holds the TCC `failed`.
#[tokio::test]
async fn branch_calls_have_a_timeout_of_their_own() {
    let (silent, tries) = peer(None, false).await;
    let limits = dtmcli::Limits::default()
        .with_timeout(Duration::from_secs(30))
        .with_branch_timeout(Duration::from_secs(1));
    let dtm = DtmClient::builder(env().server.http_url())
        .limits(limits)
        .build()
        .unwrap();
    let gid = gid("branch-timeout");
    let (d, g) = (dtm.clone(), gid.clone());
    let started = std::time::Instant::now();
    let r = on_env(async move {
        d.tcc_global_transaction(&g, TransOptions::default(), |tcc| async move {
            let try_url = format!("http://{silent}/TransOutTry");
            tcc.call_branch(
                &1,
                &try_url,
                &url("TransOutConfirm"),
                &url("TransOutCancel"),
            )
            .await
            .map(drop)
        })
        .await
    })
    .await;
    let took = started.elapsed();
    let e = r.unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    assert_eq!(tries.load(Ordering::SeqCst), 1);
    // The branch timeout, not the call timeout: far below 30 s.
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let q = wait_status(&dtm, &gid, "failed").await;
    assert!(
        branch_rows(&q).contains(&"01/cancel=succeed".to_string()),
        "{:?}",
        branch_rows(&q)
    );
}
