//! DTM's gRPC API itself: NewGid and PrepareWorkflow, against the real server.

use crate::support;

use crate::support::*;
use dtmgrpc::pb::dtmgimp::{DtmBranchRequest, DtmRequest};

#[tokio::test]
async fn new_gid_gives_distinct_short_uuids() {
    let dtm = grpc_dtm();
    let a = dtm.new_gid().await.unwrap();
    let b = dtm.new_gid().await.unwrap();
    assert_ne!(a, b);
    // shortuuid: base57 without padding, so usually 22 characters, sometimes fewer.
    assert!((20..=22).contains(&a.len()), "{a}");
    assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
}

#[tokio::test]
async fn prepare_workflow_returns_the_recorded_progress_but_no_result() {
    let dtm = grpc_dtm();
    let gid = gid("gapi-wf");
    let req = DtmRequest {
        gid: gid.clone(),
        trans_type: "workflow".into(),
        customed_data: r#"{"data":null,"name":"wf"}"#.into(),
        query_prepared: grpc_url("QueryPrepared"),
        steps: "null".into(),
        ..Default::default()
    };
    let first = dtm.prepare_workflow(&req).await.unwrap();
    assert_eq!(first.transaction.as_ref().unwrap().status, "prepared");
    assert!(first.progresses.is_empty());
    // A recorded step, synchronously saved (`sync`) so that v1.19.0's default keeps it.
    dtm.register_branch(&DtmBranchRequest {
        gid: gid.clone(),
        trans_type: "workflow".into(),
        branch_id: "01".into(),
        data: [
            ("op".to_string(), "action".to_string()),
            ("status".to_string(), "succeed".to_string()),
            ("sync".to_string(), "1".to_string()),
        ]
        .into(),
        busi_payload: vec![0, 1, 2, 255].into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let again = dtm.prepare_workflow(&req).await.unwrap();
    assert_eq!(again.progresses.len(), 1);
    let p = &again.progresses[0];
    assert_eq!(
        (p.branch_id.as_str(), p.op.as_str(), p.status.as_str()),
        ("01", "action", "succeed")
    );
    assert_eq!(
        p.bin_data.as_ref(),
        [0, 1, 2, 255].as_slice(),
        "binary results survive over gRPC"
    );
    // Submit it as succeeded with a result: the gRPC API never returns `Result`.
    let mut done = req.clone();
    done.req_extra = [
        ("status".to_string(), "succeed".to_string()),
        ("result".to_string(), "aGk=".to_string()),
    ]
    .into();
    dtm.submit(&done).await.unwrap();
    let q = wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(q.transaction.unwrap().result, "aGk=", "HTTP query has it");
    let t = dtm
        .prepare_workflow(&req)
        .await
        .unwrap()
        .transaction
        .unwrap();
    assert_eq!((t.status.as_str(), t.result.as_str()), ("succeed", ""));
}
