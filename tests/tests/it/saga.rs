//! Saga over HTTP against the real DTM server.

use std::time::Duration;

use crate::support::*;
use dtmcli::{Op, TransOptions};

fn transfer(dtm: &dtmcli::DtmClient, gid: &str, req: &BusiReq) -> dtmcli::Saga {
    dtm.saga(gid)
        .add(&url("TransOut"), &url("TransOutRevert"), req)
        .add(&url("TransIn"), &url("TransInRevert"), req)
}

#[tokio::test]
async fn success_runs_actions_in_order_with_payloads() {
    let dtm = dtm();
    let gid = gid("saga-ok");
    transfer(&dtm, &gid, &BusiReq::new(30))
        .submit()
        .await
        .unwrap();
    let q = wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn"]);
    let calls = busi().calls(&gid);
    for (c, bid) in calls.iter().zip(["01", "02"]) {
        let info = c.info.as_ref().unwrap();
        assert_eq!(info.branch_id, bid);
        assert_eq!(info.op, Op::Action);
        assert_eq!(c.method, "POST");
        assert_eq!(
            serde_json::from_str::<BusiReq>(&c.body).unwrap(),
            BusiReq::new(30)
        );
    }
    let t = q.transaction.clone().unwrap();
    assert_eq!(t.trans_type, "saga");
    assert_eq!(t.protocol, "http");
    assert_eq!(
        branch_rows(&q),
        [
            "01/compensate=prepared",
            "01/action=succeed",
            "02/compensate=prepared",
            "02/action=succeed"
        ]
    );
    // DTM refuses a second submit of a finished saga (FAILURE, "cannot sumbmit"); the caller
    // is told what DTM stored: it succeeded. Nothing ran twice.
    transfer(&dtm, &gid, &BusiReq::new(30))
        .submit()
        .await
        .unwrap();
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn"]);
}

#[tokio::test]
async fn rollback_compensates_in_reverse_including_the_failed_branch() {
    let dtm = dtm();
    let gid = gid("saga-rb");
    let req = BusiReq {
        amount: 30,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    transfer(&dtm, &gid, &req).submit().await.unwrap();
    let q = wait_status(&dtm, &gid, "failed").await;
    assert_eq!(
        busi().handlers(&gid),
        ["TransOut", "TransIn", "TransInRevert", "TransOutRevert"]
    );
    let t = q.transaction.unwrap();
    assert!(
        t.rollback_reason.contains("TransIn refused"),
        "{}",
        t.rollback_reason
    );
    assert!(
        t.rollback_reason.contains("/TransIn"),
        "{}",
        t.rollback_reason
    );
    let c = busi().calls(&gid);
    assert_eq!(c[2].info.as_ref().unwrap().op, Op::Compensate);
    assert_eq!(c[2].info.as_ref().unwrap().branch_id, "02");
}

#[tokio::test]
async fn ongoing_then_success() {
    let dtm = dtm();
    let gid = gid("saga-ongoing");
    busi().script(&gid, "TransIn", [Outcome::Ongoing]);
    transfer(&dtm, &gid, &BusiReq::new(1))
        .with_options(TransOptions::default().retry_interval(Duration::from_secs(1)))
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn", "TransIn"]);
    assert_eq!(busi().count(&gid, "TransOutRevert"), 0);
}

#[tokio::test]
async fn erroring_compensation_is_retried() {
    let dtm = dtm();
    let gid = gid("saga-comp-err");
    busi().script(&gid, "TransIn", [Outcome::Failure]);
    busi().script(&gid, "TransOutRevert", [Outcome::Error, Outcome::Ongoing]);
    transfer(&dtm, &gid, &BusiReq::new(1))
        .with_options(TransOptions::default().retry_interval(Duration::from_secs(1)))
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, &gid, "failed").await;
    assert_eq!(busi().count(&gid, "TransOutRevert"), 3);
    assert_eq!(busi().count(&gid, "TransInRevert"), 1);
    assert_eq!(busi().count(&gid, "TransOut"), 1);
}

#[tokio::test]
async fn empty_branch_url_counts_as_success() {
    let dtm = dtm();
    let gid = gid("saga-empty");
    dtm.saga(&gid)
        .add("", &url("TransOutRevert"), &BusiReq::new(1))
        .add(&url("TransIn"), "", &BusiReq::new(1))
        .submit()
        .await
        .unwrap();
    let q = wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(busi().handlers(&gid), ["TransIn"]);
    assert!(branch_rows(&q).contains(&"01/action=succeed".to_string()));
}

fn four_steps(dtm: &dtmcli::DtmClient, gid: &str, req: &BusiReq) -> dtmcli::Saga {
    // 0: TransOut, 1: TransIn, 2: TransOutTry (after 0 and 1), 3: TransInTry (after 2)
    dtm.saga(gid)
        .add(&url("TransOut"), &url("TransOutRevert"), req)
        .add(&url("TransIn"), &url("TransInRevert"), req)
        .add(&url("TransOutTry"), &url("TransOutCancel"), req)
        .add(&url("TransInTry"), &url("TransInCancel"), req)
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
    let dtm = dtm();
    let gid = gid("saga-conc");
    four_steps(&dtm, &gid, &BusiReq::new(5))
        .submit()
        .await
        .unwrap();
    let q = wait_status(&dtm, &gid, "succeed").await;
    let h = busi().handlers(&gid);
    assert_eq!(h.len(), 4, "{h:?}");
    assert!(pos(&h, "TransOutTry") > pos(&h, "TransOut"));
    assert!(pos(&h, "TransOutTry") > pos(&h, "TransIn"));
    assert!(pos(&h, "TransInTry") > pos(&h, "TransOutTry"));
    let custom = q.transaction.unwrap().custom_data;
    assert!(custom.contains("\"concurrent\":true"), "{custom}");
}

#[tokio::test]
async fn concurrent_with_orders_rollback() {
    let dtm = dtm();
    let gid = gid("saga-conc-rb");
    busi().script(&gid, "TransOutTry", [Outcome::Failure]);
    four_steps(&dtm, &gid, &BusiReq::new(5))
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, &gid, "failed").await;
    let h = busi().handlers(&gid);
    // Step 3 never ran: its compensation does not run either.
    assert_eq!(busi().count(&gid, "TransInTry"), 0, "{h:?}");
    assert_eq!(busi().count(&gid, "TransInCancel"), 0, "{h:?}");
    for comp in ["TransOutCancel", "TransOutRevert", "TransInRevert"] {
        assert_eq!(busi().count(&gid, comp), 1, "{comp}: {h:?}");
    }
    // Reverse DAG order: step 2's compensation before those of steps 0 and 1.
    assert!(pos(&h, "TransOutRevert") > pos(&h, "TransOutCancel"));
    assert!(pos(&h, "TransInRevert") > pos(&h, "TransOutCancel"));
}
