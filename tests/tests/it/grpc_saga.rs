//! What only gRPC sagas have (the scenarios every transport shares are in
//! `transport_suite`): DTM's raw codec and deadlines, the stored bytes, sagas mixing gRPC
//! and HTTP branches, and URLs refused before DTM.

use crate::support;

use std::time::Duration;

use crate::support::*;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtmcli::{Error, Op, TransOptions, TransType};
use prost::Message;

/// DTM calls gRPC branches with its raw codec and an empty `dtm-dtm`, and passes the
/// request timeout as the call's deadline: the tonic service takes all of it as is.
#[tokio::test]
async fn dtm_calls_branches_with_its_raw_codec_and_deadline() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-raw");
    grpc_transfer(dtm.saga(&gid), 30)
        .with_options(TransOptions::default().request_timeout(Duration::from_secs(5)))
        .submit()
        .await
        .unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    let calls = grpc_busi().calls(&gid);
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(c.info.as_ref().unwrap().dtm, None);
        assert_eq!(c.metadata["dtm-dtm"], "");
        assert_eq!(c.metadata["content-type"], "application/grpc+dtm_raw");
        let deadline = c.metadata["grpc-timeout"].trim_end_matches('u');
        let micros: u64 = deadline.parse().unwrap();
        assert!(micros > 4_000_000 && micros <= 5_000_000, "{micros}");
    }
}

#[tokio::test]
async fn stored_bytes_are_exactly_the_encoded_requests() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-bytes");
    let reqs = [
        ReqGrpc::amount(1),
        ReqGrpc {
            amount: 2,
            trans_in_result: "SUCCESS".into(),
            from_user: 7,
            to_user: 8,
            ..Default::default()
        },
        ReqGrpc::default(),
    ];
    let mut saga = dtm.saga(&gid);
    for r in &reqs {
        saga = saga.add(&grpc_url("TransIn"), &grpc_url("TransInRevert"), r);
    }
    assert_eq!(
        saga.request().unwrap().payloads().to_vec(),
        reqs.iter()
            .map(|r| prost::bytes::Bytes::from(r.encode_to_vec()))
            .collect::<Vec<_>>()
    );
    saga.submit().await.unwrap();
    let q = wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(q.branches.len(), 6);
    for b in &q.branches {
        let i: usize = b.branch_id.parse().unwrap();
        assert_eq!(
            b.bin_data,
            reqs[i - 1].encode_to_vec(),
            "{}/{}",
            b.branch_id,
            b.op
        );
    }
    // And the service decoded exactly these messages, in order.
    let got: Vec<ReqGrpc> = grpc_busi().calls(&gid).into_iter().map(|c| c.req).collect();
    assert_eq!(got, reqs);
}

#[tokio::test]
async fn mixed_grpc_and_http_branches() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-mixed");
    let req = ReqGrpc::amount(42);
    dtm.saga(&gid)
        .add(&grpc_url("TransOut"), &grpc_url("TransOutRevert"), &req)
        .add(&url("TransIn"), &url("TransInRevert"), &req)
        .with_options(TransOptions::default().branch_header("test_header", "mixed"))
        .submit()
        .await
        .unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut"]);
    let http = busi().calls(&gid);
    assert_eq!(http.len(), 1);
    let c = &http[0];
    // The HTTP branch received the protobuf bytes as body, the transaction info as query.
    assert_eq!(c.handler, "TransIn");
    assert_eq!(c.method, "POST");
    assert_eq!(c.body.as_bytes(), req.encode_to_vec().as_slice());
    let info = c.info.as_ref().unwrap();
    assert_eq!((info.branch_id.as_str(), &info.op), ("02", &Op::Action));
    assert_eq!(info.trans_type, TransType::Saga);
    assert_eq!(
        c.headers.get("test_header").map(String::as_str),
        Some("mixed")
    );

    // And a failing HTTP branch rolls back the gRPC one.
    let gid = support::gid("gsaga-mixed-rb");
    busi().script(&gid, "TransIn", [Outcome::Failure]);
    dtm.saga(&gid)
        .add(&grpc_url("TransOut"), &grpc_url("TransOutRevert"), &req)
        .add(&url("TransIn"), &url("TransInRevert"), &req)
        .submit()
        .await
        .unwrap();
    wait_status(&support::dtm(), &gid, "failed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransOutRevert"]);
    assert_eq!(busi().handlers(&gid), ["TransIn", "TransInRevert"]);
    assert_eq!(
        busi().calls(&gid)[1].body.as_bytes(),
        req.encode_to_vec().as_slice()
    );
}

#[tokio::test]
async fn malformed_branch_urls_are_refused_before_dtm() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-badurl");
    for bad in [
        "127.0.0.1:1",
        "discov://busi/busi.Busi/TransIn",
        "127.0.0.1/busi.Busi/TransIn",
        "127.0.0.1:1/busi.Busi",
    ] {
        let err = dtm
            .saga(&gid)
            .add(bad, &grpc_url("TransOutRevert"), &ReqGrpc::amount(1))
            .submit()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{bad}: {err}");
    }
    let q = support::dtm().query(&gid).await.unwrap();
    assert!(q.transaction.is_none(), "nothing reached DTM");
}
