//! What only gRPC TCCs have (the scenarios every transport shares are in
//! `transport_suite`): the try's answer decoded for the caller. Malformed and unreachable
//! try URLs are in `grpc_bad_input`.

use crate::support;

use crate::support::*;
use dtm_examples::grpc_busi::pb::{BusiReply, ReqGrpc};
use dtmcli::TransOptions;

/// The SDK calls a try with the plain gRPC codec and decodes its answer for the caller.
#[tokio::test]
async fn the_try_answer_is_decoded_for_the_caller() {
    let dtm = grpc_dtm();
    let gid = gid("gtcc-reply");
    let reply: BusiReply = dtm
        .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
            tcc.call_branch(
                &ReqGrpc::amount(30),
                &grpc_url("TransOutTry"),
                &grpc_url("TransOutConfirm"),
                &grpc_url("TransOutCancel"),
            )
            .await
        })
        .await
        .unwrap();
    assert_eq!(reply.message, "TransOutTry done");
    wait_status(&support::dtm(), &gid, "succeed").await;
    let calls = grpc_busi().calls(&gid);
    assert_eq!(calls[0].handler, "TransOutTry");
    assert_eq!(calls[0].metadata["content-type"], "application/grpc");
}
