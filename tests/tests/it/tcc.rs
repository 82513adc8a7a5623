//! TCC over HTTP against the real DTM server.

use crate::support;

use std::time::Duration;

use crate::support::*;
use dtmcli::{Error, Op, TransOptions};

#[tokio::test]
async fn success_confirms_every_branch() {
    let dtm = dtm();
    let gid = gid("tcc-ok");
    let req = BusiReq::new(30);
    dtm.tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
        tcc.call_branch(
            &req,
            &url("TransOutTry"),
            &url("TransOutConfirm"),
            &url("TransOutCancel"),
        )
        .await?;
        tcc.call_branch(
            &req,
            &url("TransInTry"),
            &url("TransInConfirm"),
            &url("TransInCancel"),
        )
        .await?;
        Ok(())
    })
    .await
    .unwrap();
    let q = wait_status(&dtm, &gid, "succeed").await;
    let h = busi().handlers(&gid);
    assert_eq!(&h[..2], ["TransOutTry", "TransInTry"]);
    let mut confirms = h[2..].to_vec();
    confirms.sort();
    assert_eq!(confirms, ["TransInConfirm", "TransOutConfirm"]);
    // The try carries the transaction info and the dtm URL; confirm gets the registered body.
    let calls = busi().calls(&gid);
    let try0 = calls[0].info.clone().unwrap();
    assert_eq!((try0.op, try0.branch_id.as_str()), (Op::Try, "01"));
    assert_eq!(try0.dtm.as_deref(), Some(dtm.server()));
    assert_eq!(calls[1].info.as_ref().unwrap().branch_id, "02");
    for c in &calls[2..] {
        assert_eq!(c.info.as_ref().unwrap().op, Op::Confirm);
        assert_eq!(
            serde_json::from_str::<BusiReq>(&c.body).unwrap(),
            BusiReq::new(30)
        );
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
    assert_eq!(
        busi().count(&gid, "TransOutCancel") + busi().count(&gid, "TransInCancel"),
        0
    );
}

#[tokio::test]
async fn rollback_cancels_every_registered_branch_including_the_failed_try() {
    let dtm = dtm();
    let gid = gid("tcc-rb");
    let req = BusiReq {
        amount: 30,
        trans_in_result: "FAILURE".into(),
        ..Default::default()
    };
    busi().script(&gid, "TransOutCancel", [Outcome::Ongoing]);
    let o = TransOptions::default().retry_interval(Duration::from_secs(1));
    let err = dtm
        .tcc_global_transaction(&gid, o, |tcc| async move {
            tcc.call_branch(
                &req,
                &url("TransOutTry"),
                &url("TransOutConfirm"),
                &url("TransOutCancel"),
            )
            .await?;
            tcc.call_branch(
                &req,
                &url("TransInTry"),
                &url("TransInConfirm"),
                &url("TransInCancel"),
            )
            .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    let q = wait_status(&dtm, &gid, "failed").await;
    let t = q.transaction.unwrap();
    assert!(
        t.rollback_reason.contains("TransInTry refused"),
        "{}",
        t.rollback_reason
    );
    assert_eq!(busi().count(&gid, "TransInCancel"), 1);
    // The first cancel answered ONGOING once and was retried.
    assert_eq!(busi().count(&gid, "TransOutCancel"), 2);
    assert_eq!(
        busi().count(&gid, "TransOutConfirm") + busi().count(&gid, "TransInConfirm"),
        0
    );
}

#[tokio::test]
async fn nested_tcc_registers_sub_branches() {
    let dtm = dtm();
    let gid = gid("tcc-nested");
    let req = BusiReq::new(7);
    dtm.tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
        tcc.call_branch(
            &req,
            &url("TransOutTry"),
            &url("TransOutConfirm"),
            &url("TransOutCancel"),
        )
        .await?;
        tcc.call_branch(
            &req,
            &url("TransInTccNested"),
            &url("TransInConfirm"),
            &url("TransInCancel"),
        )
        .await?;
        Ok(())
    })
    .await
    .unwrap();
    let q = wait_status(&dtm, &gid, "succeed").await;
    let ids: Vec<String> = q
        .branches
        .iter()
        .filter(|b| b.op == "confirm")
        .map(|b| b.branch_id.clone())
        .collect();
    assert_eq!(ids, ["01", "02", "0201"]);
    let nested_try = busi()
        .calls(&gid)
        .into_iter()
        .find(|c| c.handler == "TransInTry")
        .expect("nested try called");
    assert_eq!(nested_try.info.unwrap().branch_id, "0201");
    assert_eq!(busi().count(&gid, "TransInConfirm"), 2);
    assert_eq!(busi().count(&gid, "TransOutConfirm"), 1);
}

#[tokio::test]
async fn timeout_between_two_branches_rolls_back() {
    let dtm = dtm();
    let gid = gid("tcc-timeout");
    let req = BusiReq::new(1);
    let o = TransOptions::default()
        .timeout_to_fail(Duration::from_secs(1))
        .retry_interval(Duration::from_secs(1));
    let g2 = gid.clone();
    let err = dtm
        .tcc_global_transaction(&gid, o, |tcc| async move {
            tcc.call_branch(
                &req,
                &url("TransOutTry"),
                &url("TransOutConfirm"),
                &url("TransOutCancel"),
            )
            .await?;
            // Wait until DTM has timed the transaction out and started the rollback.
            let d = dtm_testkit::wait::until(&support::dtm(), &g2, Duration::from_secs(20), |q| {
                q.transaction
                    .as_ref()
                    .is_some_and(|t| t.status != "prepared")
            })
            .await;
            assert!(d.is_ok(), "{d:?}");
            tcc.call_branch(
                &req,
                &url("TransInTry"),
                &url("TransInConfirm"),
                &url("TransInCancel"),
            )
            .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    // Registration refused: the transaction is no longer prepared.
    assert!(err.is_failure(), "{err}");
    let q = wait_status(&dtm, &gid, "failed").await;
    assert!(q
        .transaction
        .unwrap()
        .rollback_reason
        .contains("Timeout after"));
    assert_eq!(busi().count(&gid, "TransInTry"), 0);
    assert_eq!(busi().count(&gid, "TransOutCancel"), 1);
}

#[tokio::test]
async fn closure_error_aborts_with_its_text_as_reason() {
    let dtm = dtm();
    let gid = gid("tcc-closure-err");
    let req = BusiReq::new(1);
    let err = dtm
        .tcc_global_transaction(&gid, TransOptions::default(), |tcc| async move {
            tcc.call_branch(
                &req,
                &url("TransOutTry"),
                &url("TransOutConfirm"),
                &url("TransOutCancel"),
            )
            .await?;
            Err::<(), _>(Error::other("stock check said no"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "stock check said no");
    let q = wait_status(&dtm, &gid, "failed").await;
    assert_eq!(
        q.transaction.unwrap().rollback_reason,
        "stock check said no"
    );
    assert_eq!(busi().count(&gid, "TransOutCancel"), 1);
}

#[tokio::test]
async fn branch_headers_reach_try_and_confirm() {
    let dtm = dtm();
    let gid = gid("tcc-headers");
    let req = BusiReq::new(1);
    let o = TransOptions::default().branch_header("test_header", "tcc");
    dtm.tcc_global_transaction(&gid, o, |tcc| async move {
        tcc.call_branch(
            &req,
            &url("TransOutTry"),
            &url("TransOutConfirm"),
            &url("TransOutCancel"),
        )
        .await
    })
    .await
    .unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    let calls = busi().calls(&gid);
    assert_eq!(calls.len(), 2);
    for c in calls {
        assert_eq!(
            c.headers.get("test_header").map(String::as_str),
            Some("tcc"),
            "{}",
            c.handler
        );
    }
}
