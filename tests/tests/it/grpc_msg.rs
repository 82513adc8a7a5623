//! 2-phase messages over gRPC against the real DTM server, including DTM's back-check and
//! the outbox helper (with a barrier on MariaDB).

use crate::support;

use std::time::Duration;

use crate::support::*;
use dtm_examples::bank::Db;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtmcli::{Error, Op, TransOptions, TransType};
use prost::Message;

fn msg(dtm: &dtmgrpc::DtmGrpcClient, gid: &str, req: &ReqGrpc) -> dtmgrpc::Msg {
    dtm.msg(gid)
        .add(&grpc_url("TransOut"), req)
        .add(&grpc_url("TransIn"), req)
}

fn quick() -> TransOptions {
    TransOptions::default()
        .timeout_to_fail(Duration::from_secs(1))
        .retry_interval(Duration::from_secs(1))
}

#[tokio::test]
async fn submit_delivers_every_branch() {
    let dtm = grpc_dtm();
    let gid = gid("gmsg-ok");
    let req = ReqGrpc::amount(30);
    msg(&dtm, &gid, &req).submit().await.unwrap();
    let q = wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransIn"]);
    for c in grpc_busi().calls(&gid) {
        let info = c.info.unwrap();
        assert_eq!((info.trans_type, info.op), (TransType::Msg, Op::Action));
        assert_eq!(c.req, req);
    }
    assert_eq!(branch_rows(&q), ["01/action=succeed", "02/action=succeed"]);
    for b in &q.branches {
        assert_eq!(b.bin_data, req.encode_to_vec());
    }
}

#[tokio::test]
async fn prepared_then_submitted() {
    let dtm = grpc_dtm();
    let gid = gid("gmsg-prep");
    let m = msg(&dtm, &gid, &ReqGrpc::amount(1));
    m.prepare(&grpc_url("QueryPrepared")).await.unwrap();
    let q = support::dtm().query(&gid).await.unwrap();
    let t = q.transaction.unwrap();
    assert_eq!(t.status, "prepared");
    assert_eq!(t.query_prepared, grpc_url("QueryPrepared"));
    // Prepare again is a no-op success; then submit.
    m.prepare(&grpc_url("QueryPrepared")).await.unwrap();
    m.submit().await.unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransIn"]);
    // Prepare after success is refused, and not reported as a failure the message did not
    // have: the gid names a finished transaction.
    let err = m.prepare(&grpc_url("QueryPrepared")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(
        err.to_string().contains("already finished (succeed)"),
        "{err}"
    );
}

#[tokio::test]
async fn back_check_ongoing_then_success_delivers() {
    let dtm = grpc_dtm();
    let gid = gid("gmsg-backcheck");
    grpc_busi().script(&gid, "QueryPrepared", [Outcome::Ongoing]);
    msg(&dtm, &gid, &ReqGrpc::amount(1))
        .with_options(quick())
        .prepare(&grpc_url("QueryPrepared"))
        .await
        .unwrap();
    // Never submitted: DTM asks the back-check, which first says ongoing, then success.
    wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(
        grpc_busi().handlers(&gid),
        ["QueryPrepared", "QueryPrepared", "TransOut", "TransIn"]
    );
    let check = &grpc_busi().calls(&gid)[0];
    let info = check.info.as_ref().unwrap();
    assert_eq!(
        (info.branch_id.as_str(), &info.op, info.trans_type),
        ("00", &Op::Msg, TransType::Msg)
    );
    // DTM sends the back-check an empty message.
    assert_eq!(check.req, ReqGrpc::default());
}

#[tokio::test]
async fn back_check_failure_fails_the_message() {
    let dtm = grpc_dtm();
    let gid = gid("gmsg-backcheck-fail");
    grpc_busi().script(&gid, "QueryPrepared", [Outcome::Failure]);
    msg(&dtm, &gid, &ReqGrpc::amount(1))
        .with_options(quick())
        .prepare(&grpc_url("QueryPrepared"))
        .await
        .unwrap();
    wait_status(&support::dtm(), &gid, "failed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["QueryPrepared"]);
}

#[tokio::test]
async fn do_and_submit_success() {
    let dtm = grpc_dtm();
    let gid = gid("gmsg-das-ok");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let s2 = seen.clone();
    msg(&dtm, &gid, &ReqGrpc::amount(1))
        .do_and_submit(&grpc_url("QueryPrepared"), |info| async move {
            *s2.lock().unwrap() = Some(info);
            Ok(())
        })
        .await
        .unwrap();
    let info = seen.lock().unwrap().clone().unwrap();
    assert_eq!((info.branch_id.as_str(), &info.op), ("00", &Op::Msg));
    wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransIn"]);
}

#[tokio::test]
async fn do_and_submit_failure_aborts() {
    let dtm = grpc_dtm();
    let gid = gid("gmsg-das-fail");
    let err = msg(&dtm, &gid, &ReqGrpc::amount(1))
        .do_and_submit(&grpc_url("QueryPrepared"), |_| async {
            Err(Error::failure("local business refused"))
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    wait_status(&support::dtm(), &gid, "failed").await;
    assert!(grpc_busi().handlers(&gid).is_empty());
}

#[tokio::test]
async fn do_and_submit_error_asks_the_back_check_itself() {
    let dtm = grpc_dtm();
    // The back-check says the local transaction committed: submitted anyway.
    let gid = gid("gmsg-das-err-ok");
    let err = msg(&dtm, &gid, &ReqGrpc::amount(1))
        .with_options(TransOptions::default().branch_header("test_header", "msg"))
        .do_and_submit(&grpc_url("QueryPrepared"), |_| async {
            Err(Error::other("connection lost after commit"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "connection lost after commit");
    wait_status(&support::dtm(), &gid, "succeed").await;
    let calls = grpc_busi().calls(&gid);
    assert_eq!(calls[0].handler, "QueryPrepared");
    let info = calls[0].info.as_ref().unwrap();
    // The SDK's own back-check: like DTM's, plus dtm-dtm and the branch headers.
    assert_eq!((info.branch_id.as_str(), &info.op), ("00", &Op::Msg));
    assert_eq!(info.dtm.as_deref(), Some(dtm.server()));
    assert_eq!(calls[0].metadata["test_header"], "msg");

    // The back-check says it did not commit: aborted.
    let gid = support::gid("gmsg-das-err-fail");
    grpc_busi().script(&gid, "QueryPrepared", [Outcome::Failure]);
    let err = msg(&dtm, &gid, &ReqGrpc::amount(1))
        .do_and_submit(&grpc_url("QueryPrepared"), |_| async {
            Err(Error::other("connection lost"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "connection lost");
    wait_status(&support::dtm(), &gid, "failed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["QueryPrepared"]);
}

#[tokio::test]
async fn do_and_submit_with_a_barrier_and_grpc_back_check_on_mariadb() {
    let dtm = grpc_dtm();
    let pool = bank_env().bank.mysql().clone();
    let qp = grpc_bank_url(Db::Mysql, "QueryPrepared");
    // The local transaction commits with its barrier row, then the caller loses the answer:
    // the SDK asks the bank's barrier back-check over gRPC, which finds the row.
    let gid = gid("gmsg-das-barrier");
    let p2 = pool.clone();
    let err = msg(&dtm, &gid, &ReqGrpc::amount(1))
        .do_and_submit(&qp, |info| async move {
            let bb = dtm_barrier::BranchBarrier::new(info);
            on_env(async move {
                bb.call(&p2, |_conn| Box::pin(async { Ok(()) }))
                    .await
                    .map(drop)
            })
            .await?;
            Err(Error::other("lost the commit answer"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "lost the commit answer");
    wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransIn"]);

    // DTM's back-check ran first (the local transaction never started): the barrier makes
    // it FAILURE (gRPC Aborted), the message fails, and the late local transaction is
    // refused as duplicated.
    let gid = support::gid("gmsg-das-barrier-late");
    msg(&dtm, &gid, &ReqGrpc::amount(1))
        .with_options(quick())
        .prepare(&qp)
        .await
        .unwrap();
    wait_status(&support::dtm(), &gid, "failed").await;
    let info = dtm_barrier::msg_query_info(&gid);
    let late = on_env(async move {
        dtm_barrier::BranchBarrier::new(info)
            .call(&pool, |_conn| Box::pin(async { Ok(()) }))
            .await
    })
    .await
    .unwrap_err();
    assert!(late.is_duplicated(), "{late}");
    assert!(grpc_busi().handlers(&gid).is_empty());
}

/// The barrier's one outbox entry point takes a gRPC message as it takes an HTTP one: the
/// local transaction commits with its barrier row, the message is delivered, and the
/// back-check finds the row.
#[tokio::test]
async fn barrier_outbox_takes_a_grpc_message() {
    let dtm = grpc_dtm();
    let pool = sqlx::MySqlPool::connect(&dtm_examples::bank::mysql_url())
        .await
        .unwrap();
    let gid = gid("gmsg-outbox");
    let qp = grpc_bank_url(Db::Mysql, "QueryPrepared");
    dtm_barrier::do_and_submit(&msg(&dtm, &gid, &ReqGrpc::amount(1)), &qp, &pool, |_conn| {
        Box::pin(async { Ok(()) })
    })
    .await
    .unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(grpc_busi().handlers(&gid), ["TransOut", "TransIn"]);
    dtm_barrier::BranchBarrier::new(dtm_barrier::msg_query_info(&gid))
        .query_prepared(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn topic_subscribers_receive_the_message() {
    let dtm = grpc_dtm();
    let topic = gid("gtopic");
    dtm.subscribe(&topic, &grpc_url("TransIn"), "grpc in")
        .await
        .unwrap();
    dtm.subscribe(&topic, &url("TransIn"), "http in")
        .await
        .unwrap();
    let gid = gid("gmsg-topic");
    let req = ReqGrpc::amount(9);
    // DTM reloads its topic map every few seconds: retry until it knows the topic.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match dtm.msg(&gid).add_topic(&topic, &req).submit().await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("topic not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let q = wait_status(&support::dtm(), &gid, "succeed").await;
    let mut ids: Vec<String> = q.branches.iter().map(|b| b.branch_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["01-01", "01-02"]);
    assert_eq!(grpc_busi().handlers(&gid), ["TransIn"]);
    assert_eq!(busi().handlers(&gid), ["TransIn"]);
    assert_eq!(
        busi().calls(&gid)[0].body.as_bytes(),
        req.encode_to_vec().as_slice()
    );
    dtm.unsubscribe(&topic, &grpc_url("TransIn")).await.unwrap();
    dtm.unsubscribe(&topic, &url("TransIn")).await.unwrap();
    let err = dtm.unsubscribe(&topic, &url("TransIn")).await.unwrap_err();
    assert!(matches!(err, Error::Grpc { .. }), "{err}");
    dtm.delete_topic(&topic).await.unwrap();
}
