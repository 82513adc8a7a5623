//! XA over gRPC against the real DTM server: the global side (dtmgrpc's `Xa`), the
//! metadata it sends (checked on the recording service's XA stub), and real XA branches on
//! MariaDB and PostgreSQL (the barrier crate's `XaLocal` registering over gRPC, in the gRPC bank).

use crate::support;

use std::time::Duration;

use crate::support::*;
use dtm_examples::bank::Db;
use dtm_examples::grpc_busi::pb::{BusiReply, ReqGrpc};
use dtm_examples::grpc_busi::GrpcCall;
use dtmcli::transport::Protobuf;
use dtmcli::{Error, Op, TransOptions, TransType, Transport};

fn opts() -> TransOptions {
    TransOptions::default()
        .retry_interval(Duration::from_secs(1))
        .branch_header("x-test-header", "xa")
}

fn assert_phase2(c: &GrpcCall, branch_id: &str, op: Op) {
    let info = c.info.as_ref().unwrap();
    assert_eq!(
        (&info.op, info.branch_id.as_str()),
        (&op, branch_id),
        "{c:?}"
    );
    // DTM sends an empty message, no dtm address and no phase2 url.
    assert_eq!(c.req, ReqGrpc::default(), "{c:?}");
    assert_eq!(
        (info.dtm.as_deref(), info.phase2_url.as_deref()),
        (None, None)
    );
    assert_eq!(c.metadata["x-test-header"], "xa", "{c:?}");
    assert_eq!(c.metadata["content-type"], "application/grpc+dtm_raw");
}

/// The XA action of TransInXa (30): its answer, decoded.
async fn credit<T: Transport<Encoding = Protobuf>>(
    xa: dtmgrpc::Xa<T>,
) -> dtmcli::Result<BusiReply> {
    xa.call_branch(&ReqGrpc::amount(30), &grpc_url("TransInXa"))
        .await
}

/// Asserts that XA `gid` committed: its action answered `reply`, and DTM called phase 2.
async fn assert_committed(gid: &str, reply: BusiReply) {
    assert_eq!(reply.message, "TransInXa done");
    wait_status(&support::dtm(), gid, "succeed").await;
    let calls = grpc_busi().calls(gid);
    assert_eq!(calls.len(), 2);
    assert_phase2(&calls[1], "01", Op::Commit);
}

/// The action's answer is decoded for the caller, and DTM calls phase 2 with its raw codec
/// (the commit and rollback scenarios are in `transport_suite` (`xa_*`), over HTTP and
/// gRPC); a gRPC cluster's face hands its closure the same handle.
#[tokio::test]
async fn the_reply_is_decoded_and_phase2_uses_dtms_codec() {
    let gid = gid("gxa-reply");
    let reply = grpc_dtm()
        .xa_global_transaction(&gid, opts(), credit)
        .await
        .unwrap();
    assert_committed(&gid, reply).await;

    let gid = support::gid("gxa-reply-cluster");
    let reply = grpc_cluster()
        .xa_global_transaction(&gid, opts(), credit)
        .await
        .unwrap();
    assert_committed(&gid, reply).await;
}

async fn xa_transfer(
    out_db: Db,
    in_db: Db,
    fail_in: bool,
) -> (String, dtmcli::Result<()>, i64, i64) {
    let (a, _) = gbank_accounts(out_db, 100, 0).await;
    let (_, b) = gbank_accounts(in_db, 100, 0).await;
    let gid = gid("gxa-bank");
    let req = ReqGrpc {
        amount: 30,
        from_user: a,
        to_user: b,
        trans_in_result: if fail_in {
            "FAILURE".into()
        } else {
            String::new()
        },
        ..Default::default()
    };
    let res = grpc_dtm()
        .xa_global_transaction(&gid, opts(), |xa| async move {
            let _: () = xa
                .call_branch(&req, &grpc_bank_url(out_db, "TransOutXa"))
                .await?;
            let _: () = xa
                .call_branch(&req, &grpc_bank_url(in_db, "TransInXa"))
                .await?;
            Ok(())
        })
        .await;
    (gid, res, a, b)
}

async fn xa_commit(out_db: Db, in_db: Db) {
    let (gid, res, a, b) = xa_transfer(out_db, in_db, false).await;
    res.unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(gbank_balance(out_db, a).await, 70);
    assert_eq!(gbank_balance(in_db, b).await, 30);
    assert_eq!(gbank_executed(&gid, "TransOutXa"), 1);
    assert_eq!(gbank_executed(&gid, "TransInXa"), 1);
    assert_eq!(gbank_rows(out_db, &gid).await[0], "xa/01/action/01/action");
}

async fn xa_rollback(out_db: Db, in_db: Db) {
    let (gid, res, a, b) = xa_transfer(out_db, in_db, true).await;
    let err = res.unwrap_err();
    assert!(err.is_failure(), "{err}");
    wait_status(&support::dtm(), &gid, "failed").await;
    // The out branch was prepared then rolled back by DTM; the in branch never prepared.
    assert_eq!(gbank_balance(out_db, a).await, 100);
    assert_eq!(gbank_balance(in_db, b).await, 0);
    assert_eq!(gbank_executed(&gid, "TransInXa"), 1);
    let rows = gbank_rows(out_db, &gid).await;
    assert!(
        rows.contains(&"xa/01/action/01/rollback".to_string()),
        "{rows:?}"
    );
}

/// One test per database pair and outcome.
macro_rules! xa_cases {
    ($($name:ident: $run:ident($out_db:expr, $in_db:expr);)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                $run($out_db, $in_db).await;
            }
        )*
    };
}

xa_cases! {
    mariadb_commit: xa_commit(Db::Mysql, Db::Mysql);
    mariadb_rollback: xa_rollback(Db::Mysql, Db::Mysql);
    postgres_commit: xa_commit(Db::Postgres, Db::Postgres);
    postgres_rollback: xa_rollback(Db::Postgres, Db::Postgres);
}

#[tokio::test]
async fn across_mariadb_and_postgres() {
    xa_commit(Db::Mysql, Db::Postgres).await;
    xa_rollback(Db::Postgres, Db::Mysql).await;
}

#[tokio::test]
async fn phase2_without_phase1_is_harmless() {
    // DTM may repeat phase 2, or roll back a branch whose action never prepared.
    let gid = gid("gxa-p2");
    for db in [Db::Mysql, Db::Postgres] {
        for op in [Op::Commit, Op::Rollback, Op::Rollback] {
            let info = dtmcli::TransInfo::new(&gid, TransType::Xa, "01", op);
            grpc_call(&grpc_bank_url(db, "TransOutXa"), &info, &())
                .await
                .unwrap();
        }
        assert_eq!(gbank_rows(db, &gid).await, ["xa/01/action/01/rollback"]);
    }
    assert_eq!(gbank_executed(&gid, "TransOutXa"), 0);
    // An action without dtm-phase2_url cannot register: a clean error, nothing prepared.
    let info = dtmcli::TransInfo::new(&gid, TransType::Xa, "02", Op::Action);
    let err = grpc_call(
        &grpc_bank_url(Db::Mysql, "TransOutXa"),
        &info,
        &ReqGrpc::amount(1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Grpc { .. }), "{err}");
    assert!(err.to_string().contains("phase2_url"), "{err}");
}
