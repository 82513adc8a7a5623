//! The decision table of `dtmcli::resolve` checked against the real DTM server: for each
//! state a lost answer can leave behind, what the table says, and what DTM answers when the
//! call is simply sent again. Where the table says "done", a blind resend is exactly what
//! must not happen (DTM reports a failure for a transaction it holds); where it says
//! "resend", sending again works; where it says "failed", DTM refuses the call.

use crate::support;

use crate::support::*;
use dtmcli::resolve::{resolve, Resolution, StateCall};
use dtmcli::transport::{BranchRegistration, DtmOp, RegistrationKind};
use dtmcli::{Error, TransOptions, TransRequest, TransType, Transport};

fn trans(op: DtmOp, trans_type: TransType) -> StateCall<'static> {
    StateCall::Trans {
        op,
        trans_type,
        workflow_status: None,
    }
}

#[tokio::test]
async fn a_finished_saga_is_done_and_a_blind_resubmit_would_report_failure() {
    let dtm = dtm();
    let gid = gid("resolve-saga");
    let saga = dtm
        .saga(&gid)
        .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(5));
    saga.submit().await.unwrap();
    let q = wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(
        resolve(trans(DtmOp::Submit, TransType::Saga), &q),
        Resolution::Done
    );
    let again = dtm.submit(&saga.request().unwrap()).await;
    assert!(
        matches!(&again, Err(Error::Failure(m)) if m.contains("cannot sumbmit")),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_prepared_msg_is_resent_and_an_aborted_one_has_failed() {
    let dtm = dtm();
    let gid = gid("resolve-msg");
    let msg = prepared_credit(&dtm, &gid).await;
    let q = dtm.query(&gid).await.unwrap();
    assert_eq!(
        resolve(trans(DtmOp::Prepare, TransType::Msg), &q),
        Resolution::Done
    );
    // A repeated prepare is harmless, a submit is still to be sent.
    msg.prepare(&url("QueryPrepared")).await.unwrap();
    assert_eq!(
        resolve(trans(DtmOp::Submit, TransType::Msg), &q),
        Resolution::Resend
    );
    msg.submit().await.unwrap();
    let q = wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(
        resolve(trans(DtmOp::Submit, TransType::Msg), &q),
        Resolution::Done
    );

    let gid = support::gid("resolve-msg-aborted");
    let msg = dtm.msg(&gid).add(&url("TransIn"), &BusiReq::new(5));
    msg.prepare(&url("QueryPrepared")).await.unwrap();
    dtm.abort(&msg.submit_request().unwrap()).await.unwrap();
    let q = wait_status(&dtm, &gid, "failed").await;
    assert!(matches!(
        resolve(trans(DtmOp::Submit, TransType::Msg), &q),
        Resolution::Failed(_)
    ));
    let again = msg.submit().await;
    assert!(matches!(again, Err(Error::Failure(_))), "{again:?}");
}

#[tokio::test]
async fn a_stored_tcc_branch_is_done_and_a_blind_register_would_fail() {
    let dtm = dtm();
    let gid = gid("resolve-tcc");
    let req = TransRequest::new(&gid, TransType::Tcc, &TransOptions::default());
    dtm.prepare(&req).await.unwrap();
    let reg = |branch: &str| {
        BranchRegistration::new(
            gid.clone(),
            branch,
            RegistrationKind::Tcc {
                confirm: url("TransOutConfirm"),
                cancel: url("TransOutCancel"),
                data: "{}".into(),
            },
        )
    };
    let (first, second) = (reg("01"), reg("02"));
    Transport::register(&dtm, &first).await.unwrap();
    let q = dtm.query(&gid).await.unwrap();
    assert_eq!(resolve(StateCall::Register(&first), &q), Resolution::Done);
    assert_eq!(
        resolve(StateCall::Register(&second), &q),
        Resolution::Resend
    );
    let again = Transport::register(&dtm, &first).await;
    assert!(again.is_err(), "DTM stored a branch twice: {again:?}");
    Transport::register(&dtm, &second).await.unwrap();

    // Abort: resend while prepared; done once aborting or failed; resending then fails.
    assert_eq!(
        resolve(trans(DtmOp::Abort, TransType::Tcc), &q),
        Resolution::Resend
    );
    dtm.abort(&req).await.unwrap();
    let q = wait_status(&dtm, &gid, "failed").await;
    assert_eq!(
        resolve(trans(DtmOp::Abort, TransType::Tcc), &q),
        Resolution::Done
    );
    assert!(matches!(
        resolve(StateCall::Register(&reg("03")), &q),
        Resolution::Failed(_)
    ));
    assert!(matches!(
        resolve(trans(DtmOp::Submit, TransType::Tcc), &q),
        Resolution::Failed(_)
    ));
    let again = dtm.submit(&req).await;
    assert!(matches!(again, Err(Error::Failure(_))), "{again:?}");
}
