//! TCC over gRPC against the real DTM server.

use crate::support;

use std::time::Duration;

use crate::support::*;
use dtm_examples::grpc_busi::pb::{BusiReply, ReqGrpc};
use dtmcli::{Error, Op, TransOptions, TransType};
use prost::Message;

async fn out_and_in(tcc: &dtmgrpc::Tcc, req: &ReqGrpc, in_try: &str) -> dtmcli::Result<()> {
    let _: BusiReply = tcc
        .call_branch(
            req,
            &grpc_url("TransOutTry"),
            &grpc_url("TransOutConfirm"),
            &grpc_url("TransOutCancel"),
        )
        .await?;
    let _: BusiReply = tcc
        .call_branch(
            req,
            &grpc_url(in_try),
            &grpc_url("TransInConfirm"),
            &grpc_url("TransInCancel"),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn success_confirms_every_branch() {
    let dtm = grpc_dtm();
    let gid = gid("gtcc-ok");
    let req = ReqGrpc::amount(30);
    let r = req.clone();
    let reply: BusiReply = dtm
        .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
            let reply = tcc
                .call_branch(
                    &r,
                    &grpc_url("TransOutTry"),
                    &grpc_url("TransOutConfirm"),
                    &grpc_url("TransOutCancel"),
                )
                .await?;
            let _: () = tcc
                .call_branch(
                    &r,
                    &grpc_url("TransInTry"),
                    &grpc_url("TransInConfirm"),
                    &grpc_url("TransInCancel"),
                )
                .await?;
            Ok(reply)
        })
        .await
        .unwrap();
    // The try's answer is decoded for the caller.
    assert_eq!(reply.message, "TransOutTry done");
    let q = wait_status(&support::dtm(), &gid, "succeed").await;
    let h = grpc_busi().handlers(&gid);
    assert_eq!(&h[..2], ["TransOutTry", "TransInTry"]);
    let mut confirms = h[2..].to_vec();
    confirms.sort();
    assert_eq!(confirms, ["TransInConfirm", "TransOutConfirm"]);
    let calls = grpc_busi().calls(&gid);
    // The SDK's try calls carry the dtm-* metadata, dtm-dtm being DTM's gRPC address.
    let try0 = calls[0].info.clone().unwrap();
    assert_eq!((try0.op, try0.branch_id.as_str()), (Op::Try, "01"));
    assert_eq!(try0.trans_type, TransType::Tcc);
    assert_eq!(try0.dtm.as_deref(), Some(dtm.server()));
    assert_eq!(calls[0].metadata["content-type"], "application/grpc");
    assert_eq!(calls[1].info.as_ref().unwrap().branch_id, "02");
    // DTM's confirm calls get the registered bytes and no dtm address.
    for c in &calls[2..] {
        let info = c.info.as_ref().unwrap();
        assert_eq!((&info.op, info.dtm.as_deref()), (&Op::Confirm, None));
        assert_eq!(c.req, req);
    }
    assert_eq!(
        branch_rows(&q),
        [
            "01/cancel=prepared",
            "01/confirm=succeed",
            "02/cancel=prepared",
            "02/confirm=succeed"
        ]
    );
    for b in &q.branches {
        assert_eq!(b.bin_data, req.encode_to_vec(), "{}/{}", b.branch_id, b.op);
    }
    assert_eq!(
        grpc_busi().count(&gid, "TransOutCancel") + grpc_busi().count(&gid, "TransInCancel"),
        0
    );
}

#[tokio::test]
async fn rollback_cancels_every_registered_branch_including_the_failed_try() {
    let dtm = grpc_dtm();
    let gid = gid("gtcc-rb");
    let req = ReqGrpc {
        amount: 30,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    grpc_busi().script(&gid, "TransOutCancel", [Outcome::Ongoing]);
    let o = TransOptions::default().retry_interval(Duration::from_secs(1));
    let err = dtm
        .tcc_global_transaction(&gid, o, |tcc| async move {
            out_and_in(&tcc, &req, "TransInTry").await
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("TransInTry refused"), "{reason}");
    assert_eq!(grpc_busi().count(&gid, "TransInCancel"), 1);
    // The first cancel answered FailedPrecondition (ongoing) once and was retried.
    assert_eq!(grpc_busi().count(&gid, "TransOutCancel"), 2);
    assert_eq!(
        grpc_busi().count(&gid, "TransOutConfirm") + grpc_busi().count(&gid, "TransInConfirm"),
        0
    );
}

#[tokio::test]
async fn nested_tcc_registers_sub_branches_from_incoming_metadata() {
    let dtm = grpc_dtm();
    let gid = gid("gtcc-nested");
    let req = ReqGrpc::amount(7);
    dtm.tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
        out_and_in(&tcc, &req, "TransInTccNested").await
    })
    .await
    .unwrap();
    let q = wait_status(&support::dtm(), &gid, "succeed").await;
    let ids: Vec<String> = q
        .branches
        .iter()
        .filter(|b| b.op == "confirm")
        .map(|b| b.branch_id.clone())
        .collect();
    assert_eq!(ids, ["01", "02", "0201"]);
    let nested_try = grpc_busi()
        .calls(&gid)
        .into_iter()
        .find(|c| c.handler == "TransInTry")
        .expect("nested try called");
    let info = nested_try.info.unwrap();
    assert_eq!(info.branch_id, "0201");
    assert_eq!(info.dtm.as_deref(), Some(dtm.server()));
    assert_eq!(grpc_busi().count(&gid, "TransInConfirm"), 2);
    assert_eq!(grpc_busi().count(&gid, "TransOutConfirm"), 1);
}

#[tokio::test]
async fn nested_tcc_failure_cancels_the_sub_branch_too() {
    let dtm = grpc_dtm();
    let gid = gid("gtcc-nested-rb");
    grpc_busi().script(&gid, "TransInTry", [Outcome::Failure]);
    let req = ReqGrpc::amount(7);
    let err = dtm
        .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
            out_and_in(&tcc, &req, "TransInTccNested").await
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    let cancelled: Vec<String> = q
        .branches
        .iter()
        .filter(|b| b.op == "cancel" && b.status == "succeed")
        .map(|b| b.branch_id.clone())
        .collect();
    assert_eq!(cancelled, ["01", "02", "0201"]);
    assert_eq!(grpc_busi().count(&gid, "TransInCancel"), 2);
}

#[tokio::test]
async fn timeout_between_two_branches_rolls_back() {
    let dtm = grpc_dtm();
    let gid = gid("gtcc-timeout");
    let req = ReqGrpc::amount(1);
    let o = TransOptions::default()
        .timeout_to_fail(Duration::from_secs(1))
        .retry_interval(Duration::from_secs(1));
    let g2 = gid.clone();
    let err = dtm
        .tcc_global_transaction(&gid, o, |tcc| async move {
            let _: () = tcc
                .call_branch(
                    &req,
                    &grpc_url("TransOutTry"),
                    &grpc_url("TransOutConfirm"),
                    &grpc_url("TransOutCancel"),
                )
                .await?;
            let d = dtm_testkit::wait::until(&support::dtm(), &g2, Duration::from_secs(20), |q| {
                q.transaction
                    .as_ref()
                    .is_some_and(|t| t.status != "prepared")
            })
            .await;
            assert!(d.is_ok(), "{d:?}");
            let _: () = tcc
                .call_branch(
                    &req,
                    &grpc_url("TransInTry"),
                    &grpc_url("TransInConfirm"),
                    &grpc_url("TransInCancel"),
                )
                .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    // Registration refused over gRPC (Aborted): the transaction is no longer prepared.
    assert!(err.is_failure(), "{err}");
    assert!(err.to_string().contains("status: prepared"), "{err}");
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("Timeout after"), "{reason}");
    assert_eq!(grpc_busi().count(&gid, "TransInTry"), 0);
    assert_eq!(grpc_busi().count(&gid, "TransOutCancel"), 1);
}

#[tokio::test]
async fn closure_error_aborts_with_its_text_as_reason() {
    let dtm = grpc_dtm();
    let gid = gid("gtcc-closure-err");
    let req = ReqGrpc::amount(1);
    let err = dtm
        .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
            let _: () = tcc
                .call_branch(
                    &req,
                    &grpc_url("TransOutTry"),
                    &grpc_url("TransOutConfirm"),
                    &grpc_url("TransOutCancel"),
                )
                .await?;
            Err::<(), _>(Error::other("stock check said no"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "stock check said no");
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    assert_eq!(
        q.transaction.unwrap().rollback_reason,
        "stock check said no"
    );
    assert_eq!(grpc_busi().count(&gid, "TransOutCancel"), 1);
}

#[tokio::test]
async fn branch_headers_reach_try_and_confirm() {
    let dtm = grpc_dtm();
    let gid = gid("gtcc-headers");
    let req = ReqGrpc::amount(1);
    let o = TransOptions::default().branch_header("test_header", "tcc");
    dtm.tcc_global_transaction(&gid, o, |tcc| async move {
        let _: () = tcc
            .call_branch(
                &req,
                &grpc_url("TransOutTry"),
                &grpc_url("TransOutConfirm"),
                &grpc_url("TransOutCancel"),
            )
            .await?;
        Ok(())
    })
    .await
    .unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    let calls = grpc_busi().calls(&gid);
    assert_eq!(calls.len(), 2);
    for c in calls {
        assert_eq!(
            c.metadata.get("test_header").map(String::as_str),
            Some("tcc"),
            "{}",
            c.handler
        );
    }
}

#[tokio::test]
async fn malformed_branch_url_fails_before_registering() {
    let dtm = grpc_dtm();
    let gid = gid("gtcc-badurl");
    let err = dtm
        .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
            let _: () = tcc
                .call_branch(
                    &ReqGrpc::amount(1),
                    "127.0.0.1:1/busi.Busi",
                    &grpc_url("TransOutConfirm"),
                    &grpc_url("TransOutCancel"),
                )
                .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    assert!(q.branches.is_empty(), "{:?}", branch_rows(&q));
}
