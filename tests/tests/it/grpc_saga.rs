//! Saga over gRPC against the real DTM server: branches are the tonic service
//! `busi.Busi` built with dtmgrpc's helpers (and, for the mixed saga, the HTTP bank).

use crate::support;

use std::time::Duration;

use crate::support::*;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtmcli::{Error, Op, TransOptions, TransType};
use prost::Message;

fn transfer(dtm: &dtmgrpc::DtmGrpcClient, gid: &str, req: &ReqGrpc) -> dtmgrpc::Saga {
    dtm.saga(gid)
        .add(&grpc_url("TransOut"), &grpc_url("TransOutRevert"), req)
        .add(&grpc_url("TransIn"), &grpc_url("TransInRevert"), req)
}

fn opts() -> TransOptions {
    TransOptions::default().retry_interval(Duration::from_secs(1))
}

#[tokio::test]
async fn success_runs_actions_in_order_with_dtm_raw_calls() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-ok");
    let req = ReqGrpc::amount(30);
    transfer(&dtm, &gid, &req).submit().await.unwrap();
    let q = wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransIn"]);
    for (c, bid) in grpc_busi().calls(&gid).iter().zip(["01", "02"]) {
        let info = c.info.as_ref().unwrap();
        assert_eq!(
            (info.branch_id.as_str(), &info.op, info.trans_type),
            (bid, &Op::Action, TransType::Saga)
        );
        // DTM itself sends an empty dtm-dtm, and calls with its raw codec: the tonic service
        // accepted it as is.
        assert_eq!(info.dtm, None);
        assert_eq!(c.metadata["dtm-dtm"], "");
        assert_eq!(c.metadata["content-type"], "application/grpc+dtm_raw");
        assert_eq!(c.req, req);
    }
    let t = q.transaction.clone().unwrap();
    assert_eq!(
        (t.trans_type.as_str(), t.protocol.as_str()),
        ("saga", "grpc")
    );
    assert_eq!(
        branch_rows(&q),
        [
            "01/compensate=prepared",
            "01/action=succeed",
            "02/compensate=prepared",
            "02/action=succeed"
        ]
    );
    // DTM refuses a second submit of a finished saga (gRPC Aborted); the caller is told
    // what DTM stored: it succeeded.
    transfer(&dtm, &gid, &req).submit().await.unwrap();
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransIn"]);
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
async fn rollback_compensates_in_reverse_including_the_failed_branch() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-rb");
    let req = ReqGrpc {
        amount: 30,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    transfer(&dtm, &gid, &req).submit().await.unwrap();
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    assert_eq!(
        grpc_busi().handlers(&gid),
        ["TransOut", "TransIn", "TransInRevert", "TransOutRevert"]
    );
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("TransIn refused"), "{reason}");
    assert!(reason.contains("busi.Busi/TransIn"), "{reason}");
    let c = grpc_busi().calls(&gid);
    assert_eq!(c[2].info.as_ref().unwrap().op, Op::Compensate);
    assert_eq!(c[2].info.as_ref().unwrap().branch_id, "02");
    assert_eq!(
        c[2].req, req,
        "the compensation receives the step's message"
    );
}

#[tokio::test]
async fn ongoing_then_success() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-ongoing");
    grpc_busi().script(&gid, "TransIn", [Outcome::Ongoing]);
    transfer(&dtm, &gid, &ReqGrpc::amount(1))
        .with_options(opts())
        .submit()
        .await
        .unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(
        grpc_busi().handlers(&gid),
        ["TransOut", "TransIn", "TransIn"]
    );
    assert_eq!(grpc_busi().count(&gid, "TransOutRevert"), 0);
}

#[tokio::test]
async fn erroring_compensation_is_retried() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-comp-err");
    grpc_busi().script(&gid, "TransIn", [Outcome::Failure]);
    grpc_busi().script(&gid, "TransOutRevert", [Outcome::Error, Outcome::Ongoing]);
    transfer(&dtm, &gid, &ReqGrpc::amount(1))
        .with_options(opts())
        .submit()
        .await
        .unwrap();
    wait_status(&support::dtm(), &gid, "failed").await;
    assert_eq!(grpc_busi().count(&gid, "TransOutRevert"), 3);
    assert_eq!(grpc_busi().count(&gid, "TransInRevert"), 1);
    assert_eq!(grpc_busi().count(&gid, "TransOut"), 1);
}

#[tokio::test]
async fn empty_branch_url_counts_as_success() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-empty");
    dtm.saga(&gid)
        .add("", &grpc_url("TransOutRevert"), &ReqGrpc::amount(1))
        .add(&grpc_url("TransIn"), "", &ReqGrpc::amount(1))
        .submit()
        .await
        .unwrap();
    let q = wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["TransIn"]);
    assert!(branch_rows(&q).contains(&"01/action=succeed".to_string()));
}

fn four_steps(dtm: &dtmgrpc::DtmGrpcClient, gid: &str, req: &ReqGrpc) -> dtmgrpc::Saga {
    // 0: TransOut, 1: TransIn, 2: TransOutTry (after 0 and 1), 3: TransInTry (after 2)
    dtm.saga(gid)
        .add(&grpc_url("TransOut"), &grpc_url("TransOutRevert"), req)
        .add(&grpc_url("TransIn"), &grpc_url("TransInRevert"), req)
        .add(&grpc_url("TransOutTry"), &grpc_url("TransOutCancel"), req)
        .add(&grpc_url("TransInTry"), &grpc_url("TransInCancel"), req)
        .add_branch_order(2, &[0, 1])
        .add_branch_order(3, &[2])
        .concurrent()
}

fn pos(h: &[String], name: &str) -> usize {
    h.iter()
        .position(|x| x == name)
        .unwrap_or_else(|| panic!("{name} not in {h:?}"))
}

#[tokio::test]
async fn concurrent_with_orders_success() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-conc");
    four_steps(&dtm, &gid, &ReqGrpc::amount(5))
        .submit()
        .await
        .unwrap();
    let q = wait_status(&support::dtm(), &gid, "succeed").await;
    let h = grpc_busi().handlers(&gid);
    assert_eq!(h.len(), 4, "{h:?}");
    assert!(pos(&h, "TransOutTry") > pos(&h, "TransOut"));
    assert!(pos(&h, "TransOutTry") > pos(&h, "TransIn"));
    assert!(pos(&h, "TransInTry") > pos(&h, "TransOutTry"));
    let custom = q.transaction.unwrap().custom_data;
    assert!(custom.contains("\"concurrent\":true"), "{custom}");
}

#[tokio::test]
async fn concurrent_with_orders_rollback() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-conc-rb");
    grpc_busi().script(&gid, "TransOutTry", [Outcome::Failure]);
    four_steps(&dtm, &gid, &ReqGrpc::amount(5))
        .submit()
        .await
        .unwrap();
    wait_status(&support::dtm(), &gid, "failed").await;
    let h = grpc_busi().handlers(&gid);
    assert_eq!(grpc_busi().count(&gid, "TransInTry"), 0, "{h:?}");
    assert_eq!(grpc_busi().count(&gid, "TransInCancel"), 0, "{h:?}");
    for comp in ["TransOutCancel", "TransOutRevert", "TransInRevert"] {
        assert_eq!(grpc_busi().count(&gid, comp), 1, "{comp}: {h:?}");
    }
    assert!(pos(&h, "TransOutRevert") > pos(&h, "TransOutCancel"));
    assert!(pos(&h, "TransInRevert") > pos(&h, "TransOutCancel"));
}

#[tokio::test]
async fn wait_result_returns_the_outcome() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-wait-ok");
    transfer(&dtm, &gid, &ReqGrpc::amount(3))
        .with_options(TransOptions::default().wait_result(true))
        .submit()
        .await
        .unwrap();
    // Finished inside the submit call.
    let q = support::dtm().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "succeed");
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransIn"]);

    let gid = support::gid("gsaga-wait-rb");
    let req = ReqGrpc {
        amount: 3,
        trans_out_result: "FAILURE".into(),
        ..Default::default()
    };
    let err = transfer(&dtm, &gid, &req)
        .with_options(TransOptions::default().wait_result(true))
        .submit()
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    assert!(err.to_string().contains("TransOut refused"), "{err}");
    let q = support::dtm().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "failed");
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransOutRevert"]);
}

#[tokio::test]
async fn options_travel_and_are_stored() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-opts");
    let o = TransOptions::default()
        .retry_interval(Duration::from_secs(2))
        .timeout_to_fail(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(5))
        .retry_limit(3);
    transfer(&dtm, &gid, &ReqGrpc::amount(1))
        .with_options(o)
        .submit()
        .await
        .unwrap();
    let q = wait_status(&support::dtm(), &gid, "succeed").await;
    let t = q.transaction.unwrap();
    assert_eq!(
        (
            t.retry_interval,
            t.timeout_to_fail,
            t.request_timeout,
            t.retry_limit
        ),
        (2, 60, 5, 3)
    );
    // DTM uses request_timeout as the deadline of its calls to the branches.
    let c = &grpc_busi().calls(&gid)[0];
    let deadline = c.metadata["grpc-timeout"].trim_end_matches('u');
    let micros: u64 = deadline.parse().unwrap();
    assert!(micros > 4_000_000 && micros <= 5_000_000, "{micros}");
}

#[tokio::test]
async fn retry_limit_aborts_the_saga() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-retry-limit");
    grpc_busi().script(
        &gid,
        "TransIn",
        [Outcome::Error, Outcome::Error, Outcome::Error],
    );
    transfer(&dtm, &gid, &ReqGrpc::amount(1))
        .with_options(opts().retry_limit(1))
        .submit()
        .await
        .unwrap();
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("RetryLimit"), "{reason}");
    assert_eq!(grpc_busi().count(&gid, "TransIn"), 2);
    assert_eq!(grpc_busi().count(&gid, "TransOutRevert"), 1);
}

#[tokio::test]
async fn timeout_to_fail_compensates() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-timeout");
    grpc_busi().script(&gid, "TransIn", vec![Outcome::Ongoing; 20]);
    transfer(&dtm, &gid, &ReqGrpc::amount(1))
        .with_options(opts().timeout_to_fail(Duration::from_secs(2)))
        .submit()
        .await
        .unwrap();
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("Timeout after"), "{reason}");
    assert_eq!(grpc_busi().count(&gid, "TransOutRevert"), 1);
}

#[tokio::test]
async fn request_timeout_makes_a_slow_branch_retry() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-req-timeout");
    grpc_busi().script(&gid, "TransIn", [Outcome::Sleep(Duration::from_secs(3))]);
    transfer(&dtm, &gid, &ReqGrpc::amount(1))
        .with_options(opts().request_timeout(Duration::from_secs(1)))
        .submit()
        .await
        .unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    assert!(grpc_busi().count(&gid, "TransIn") >= 2);
    assert_eq!(grpc_busi().count(&gid, "TransOutRevert"), 0);
}

#[tokio::test]
async fn branch_headers_on_first_call_and_on_retry() {
    let dtm = grpc_dtm();
    let gid = gid("gsaga-headers");
    grpc_busi().script(&gid, "TransIn", [Outcome::Ongoing]);
    transfer(&dtm, &gid, &ReqGrpc::amount(1))
        .with_options(opts().branch_header("test_header", "grpc-saga"))
        .submit()
        .await
        .unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    let calls = grpc_busi().calls(&gid);
    assert_eq!(calls.len(), 3, "{:?}", grpc_busi().handlers(&gid));
    for c in &calls {
        assert_eq!(
            c.metadata.get("test_header").map(String::as_str),
            Some("grpc-saga"),
            "{} {:?}",
            c.handler,
            c.metadata
        );
    }
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
