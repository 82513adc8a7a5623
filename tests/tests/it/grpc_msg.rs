//! What only gRPC messages have (the scenarios every transport shares are in
//! `transport_suite`): the outbox and back-check with a barrier behind a gRPC bank on
//! MariaDB, and topics whose subscribers mix gRPC and HTTP.

use crate::support;

use std::time::Duration;

use crate::support::*;
use dtm_examples::bank::Db;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtmcli::{Error, TransOptions};
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
