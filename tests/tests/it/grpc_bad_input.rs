//! Failure modes over gRPC: DTM's gRPC port down, unreachable or unknown branches, malformed
//! metadata, branch URLs and headers. Every one is a typed error, never a panic.

use crate::support;

use std::time::Duration;

use crate::support::*;
use dtm_examples::grpc_busi::pb::busi_client::BusiClient;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtmcli::{Error, Op, TransInfo, TransOptions, TransType};
use dtmgrpc::DtmGrpcClient;

/// A client of a port nobody listens on.
fn dead_dtm() -> DtmGrpcClient {
    let port = dtm_testkit::free_port().unwrap();
    DtmGrpcClient::builder(format!("127.0.0.1:{port}"))
        .limits(dtmcli::Limits::default().with_connect_timeout(Duration::from_secs(1)))
        .build()
        .unwrap()
}

fn assert_unavailable(e: &Error) {
    assert!(
        matches!(
            e,
            Error::Grpc {
                code: 14,
                answered: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transport(), "{e}");
    assert_eq!(e.kind(), dtmcli::ErrorKind::Retryable);
    // Nobody answered: the error says what happened, not "answered status 14".
    let text = e.to_string();
    println!("{text}");
    assert!(text.starts_with("no gRPC answer from "), "{text}");
    assert!(text.contains("could not connect"), "{text}");
}

#[tokio::test]
async fn dtm_grpc_port_down_is_a_typed_transport_error() {
    let dtm = dead_dtm();
    let e = dtm.new_gid().await.unwrap_err();
    assert_unavailable(&e);
    assert!(e.to_string().contains("dtmgimp.Dtm/NewGid"), "{e}");
    let e = dtm
        .saga("g")
        .add(&grpc_url("TransIn"), "", &ReqGrpc::amount(1))
        .submit()
        .await
        .unwrap_err();
    assert_unavailable(&e);
    let ran = std::sync::atomic::AtomicBool::new(false);
    let e = dtm
        .tcc_global_transaction("g", TransOptions::default(), |_tcc| async {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
        .await
        .unwrap_err();
    assert_unavailable(&e);
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "prepare failed first"
    );
    let e = dtm
        .msg("g")
        .add(&grpc_url("TransIn"), &ReqGrpc::amount(1))
        .do_and_submit(&grpc_url("QueryPrepared"), |_| async { Ok(()) })
        .await
        .unwrap_err();
    assert_unavailable(&e);
}

/// A gRPC TCC whose one try is at `try_url` (TransOut's confirm and cancel): its error.
async fn tcc_with_try_at(gid: &str, try_url: String) -> Error {
    grpc_dtm()
        .tcc_global_transaction(gid, TransOptions::default(), |tcc| async move {
            let _: () = tcc
                .call_branch(
                    &ReqGrpc::amount(1),
                    &try_url,
                    &grpc_url("TransOutConfirm"),
                    &grpc_url("TransOutCancel"),
                )
                .await?;
            Ok(())
        })
        .await
        .unwrap_err()
}

#[tokio::test]
async fn unreachable_try_branch_aborts_the_tcc() {
    let gid = gid("gbad-dead-branch");
    let port = dtm_testkit::free_port().unwrap();
    let err = tcc_with_try_at(&gid, format!("127.0.0.1:{port}/busi.Busi/TransOutTry")).await;
    assert_unavailable(&err);
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    assert_eq!(
        branch_rows(&q),
        ["01/cancel=succeed", "01/confirm=prepared"]
    );
    assert_eq!(grpc_busi().handlers(&gid), ["TransOutCancel"]);
}

#[tokio::test]
async fn malformed_branch_url_fails_before_registering() {
    let gid = gid("gtcc-badurl");
    let err = tcc_with_try_at(&gid, "127.0.0.1:1/busi.Busi".into()).await;
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    assert!(q.branches.is_empty(), "{:?}", branch_rows(&q));
}

#[tokio::test]
async fn unknown_branch_method_is_retried_not_failed() {
    let dtm = grpc_dtm();
    // Called by the SDK: Unimplemented, a retryable error.
    let info = TransInfo::new("g", TransType::Saga, "01", Op::Action);
    let u = grpc_url("NoSuchMethod");
    let e = dtm
        .call_branch_raw(&u, &info, &Default::default(), Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Grpc { code: 12, .. }), "{e:?}");
    // Called by DTM: the saga neither fails nor succeeds, it keeps retrying.
    let gid = gid("gbad-unimplemented");
    dtm.saga(&gid)
        .add(&u, "", &ReqGrpc::amount(1))
        .with_options(TransOptions::default().retry_interval(Duration::from_secs(1)))
        .submit()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let q = support::dtm().query(&gid).await.unwrap();
    assert_eq!(q.transaction.as_ref().unwrap().status, "submitted");
    assert_eq!(
        branch_rows(&q),
        ["01/compensate=prepared", "01/action=prepared"]
    );
    support::dtm().force_stop(&gid).await.unwrap();
}

#[tokio::test]
async fn malformed_metadata_gets_invalid_argument() {
    let mut client = BusiClient::connect(format!("http://{}", grpc_env().base))
        .await
        .unwrap();
    let status = client.trans_in(ReqGrpc::amount(1)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("dtm-gid"), "{}", status.message());
    let r = grpc_request(
        ReqGrpc::amount(1),
        &[
            ("dtm-gid", "gbad-md"),
            ("dtm-trans_type", "saga"),
            ("dtm-branch_id", "01"),
        ],
    );
    let status = client.trans_in(r).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("dtm-op"), "{}", status.message());
    let bad = grpc_busi().bad_calls();
    assert!(bad.len() >= 2);
    assert!(bad
        .iter()
        .any(|c| c.info_error.as_deref().unwrap_or("").contains("dtm-op")));
    // Nested TCC needs dtm-dtm: without it, a clean error.
    let info = TransInfo::new("g", TransType::Tcc, "01", Op::Try);
    let e = dtmgrpc::Tcc::nested(&grpc_dtm(), &info).unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert!(e.to_string().contains("dtm-dtm"), "{e}");
}

#[tokio::test]
async fn malformed_branch_urls_and_headers_are_typed_errors() {
    for bad in [
        "localhost:58081",
        "localhost:58081/",
        "etcd://busi/busi.Busi/TransIn",
        "localhost/busi.Busi/TransIn",
        "localhost:1/busi.Busi/Trans/In",
    ] {
        let e = invalid_input(bad, dtmgrpc::parse_branch_url(bad));
        assert!(e.to_string().contains(bad), "{e}");
    }
    let dtm = grpc_dtm();
    let gid = gid("gbad-headers");
    for (k, v) in [
        ("Upper", "v"),
        ("x-bin", "v"),
        ("ok", "caf\u{e9}"),
        ("ok", "a\nb"),
    ] {
        let e = dtm
            .saga(&gid)
            .add(&grpc_url("TransIn"), "", &ReqGrpc::amount(1))
            .with_options(TransOptions::default().branch_header(k, v))
            .submit()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{k}={v:?}: {e}");
    }
    let e = dtm
        .msg(&gid)
        .add(&grpc_url("TransIn"), &ReqGrpc::amount(1))
        .prepare("no-slash-here")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert_dtm_holds_nothing(&gid).await;
}

#[test]
fn bad_targets_and_no_runtime_are_typed_errors() {
    for bad in ["", "localhost", "http://h:1/api/dtmsvr", "h:port"] {
        let e = DtmGrpcClient::new(bad).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{bad}: {e}");
    }
    // Outside a tokio runtime tonic would panic; the SDK answers an error.
    let e = DtmGrpcClient::new("127.0.0.1:36790").unwrap_err();
    assert!(e.to_string().contains("tokio runtime"), "{e}");
}

#[tokio::test]
async fn an_empty_gid_is_refused_before_anything_is_sent() {
    let dtm = dead_dtm();
    let body = ReqGrpc::amount(1);
    let branch = "127.0.0.1:1/busi.Busi/TransIn";
    // Every mode, and the raw API.
    let raw = dtmgrpc::pb::dtmgimp::DtmRequest::default();
    assert_modes_refuse_an_empty_gid!(dtm, branch, body, raw: raw);
    let mut info = TransInfo::new("", TransType::Tcc, "01", Op::Try);
    info.dtm = Some(dtm.server().to_string());
    let e = match dtmgrpc::Tcc::nested(&dtm, &info) {
        Err(e) => e,
        Ok(tcc) => {
            let r: dtmcli::Result<()> = tcc.call_branch(&body, branch, branch, branch).await;
            r.unwrap_err()
        }
    };
    assert_empty_gid("nested tcc", &e);
    let reg = dtmgrpc::pb::dtmgimp::DtmBranchRequest::default();
    assert_empty_gid(
        "register_branch",
        &dtm.register_branch(&reg).await.unwrap_err(),
    );
    // Workflows.
    let wfs = dtm_workflow::Workflows::grpc(dtm.clone(), "127.0.0.1:1");
    wfs.register("w", |_wf, _input| async { panic!("must not run") })
        .unwrap();
    assert_empty_gid("workflow", &wfs.execute("w", "", b"{}").await.unwrap_err());
}

#[tokio::test]
async fn a_grpc_client_on_an_http_port_says_so() {
    // DTM's HTTP port answers the HTTP/2 preface with `HTTP/1.1 404`; tonic alone reports
    // "transport error" or "operation was canceled", depending on timing.
    let http = format!("127.0.0.1:{}", env().server.http_port());
    let dtm = DtmGrpcClient::new(http.clone()).unwrap();
    let assert_http_port = |what: &str, e: &Error, hint: &str| {
        assert!(
            matches!(
                e,
                Error::Grpc {
                    answered: false,
                    ..
                }
            ),
            "{what}: {e:?}"
        );
        assert_eq!(e.kind(), dtmcli::ErrorKind::Retryable, "{what}");
        let text = e.to_string();
        println!("{what}: {text}");
        assert!(
            text.starts_with(&format!("no gRPC answer from {http}/")),
            "{what}: {text}"
        );
        assert!(
            text.contains("answered like an HTTP/1.1 server, not gRPC"),
            "{what}: {text}"
        );
        assert!(text.contains(hint), "{what}: {text}");
    };
    let hint = "is this DTM's HTTP port (36789 by default)? DTM's gRPC port is 36790 by default";
    assert_http_port("new_gid", &dtm.new_gid().await.unwrap_err(), hint);
    let e = dtm
        .saga(gid("gbad-http-port"))
        .add(&grpc_url("TransIn"), "", &ReqGrpc::amount(1))
        .submit()
        .await
        .unwrap_err();
    assert_http_port("saga", &e, hint);
    // A gRPC branch URL naming an HTTP/1.1 port.
    let info = TransInfo::new("g", TransType::Saga, "01", Op::Action);
    let e = grpc_dtm()
        .call_branch_raw(
            &format!("{http}/busi.Busi/TransIn"),
            &info,
            &Default::default(),
            Default::default(),
        )
        .await
        .unwrap_err();
    assert_http_port("branch", &e, "an HTTP branch is written http://");
    // The real gRPC port still works.
    assert!(!grpc_dtm().new_gid().await.unwrap().is_empty());
}
