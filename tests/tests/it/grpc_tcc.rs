//! What only gRPC TCCs have (the scenarios every transport shares are in
//! `transport_suite`): the try's answer decoded for the caller. Malformed and unreachable
//! try URLs are in `grpc_bad_input`.

use crate::support;

use crate::support::*;
use dtm_examples::grpc_busi::pb::{BusiReply, ReqGrpc};
use dtmcli::transport::Protobuf;
use dtmcli::{Result, TransOptions, Transport};

/// The try of TransOut (30): its answer, decoded.
async fn try_out<T: Transport<Encoding = Protobuf>>(tcc: dtmgrpc::Tcc<T>) -> Result<BusiReply> {
    let (t, x) = (grpc_url("TransOutTry"), grpc_url("TransOutCancel"));
    tcc.call_branch(&ReqGrpc::amount(30), &t, &grpc_url("TransOutConfirm"), &x)
        .await
}

/// Asserts that TCC `gid` committed, and that its try, called with the plain gRPC codec,
/// answered `reply`.
async fn assert_try_answered(gid: &str, reply: BusiReply) {
    assert_eq!(reply.message, "TransOutTry done");
    wait_status(&support::dtm(), gid, "succeed").await;
    assert_eq!(
        grpc_busi().handlers(gid),
        ["TransOutTry", "TransOutConfirm"]
    );
    let calls = grpc_busi().calls(gid);
    assert_eq!(calls[0].metadata["content-type"], "application/grpc");
}

/// The SDK calls a try with the plain gRPC codec and decodes its answer for the caller; a
/// gRPC cluster's face hands its closure the same handle.
#[tokio::test]
async fn the_try_answer_is_decoded_for_the_caller() {
    let gid = gid("gtcc-reply");
    let reply = grpc_dtm()
        .tcc_global_transaction(&gid, TransOptions::default(), try_out)
        .await
        .unwrap();
    assert_try_answered(&gid, reply).await;

    let gid = support::gid("gtcc-reply-cluster");
    let reply = grpc_cluster()
        .tcc_global_transaction(&gid, TransOptions::default(), try_out)
        .await
        .unwrap();
    assert_try_answered(&gid, reply).await;
}
