//! 2-phase messages over HTTP against the real DTM server: plain, topics, back-checks,
//! `do_and_submit`, delay and repeated calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use dtmcli::{DtmClient, Error, Op, TransInfo, TransOptions, TransType};

/// Options that make DTM back-check a prepared message after about one second.
fn fast() -> TransOptions {
    TransOptions::default()
        .timeout_to_fail(Duration::from_secs(1))
        .retry_interval(Duration::from_secs(1))
}

fn transfer(dtm: &DtmClient, gid: &str, req: &BusiReq) -> dtmcli::Msg {
    dtm.msg(gid)
        .add(&url("TransOut"), req)
        .add(&url("TransIn"), req)
}

/// The single recorded call of `handler` for `gid`.
fn only_call(gid: &str, handler: &str) -> Call {
    let calls: Vec<Call> = busi()
        .calls(gid)
        .into_iter()
        .filter(|c| c.handler == handler)
        .collect();
    assert_eq!(calls.len(), 1, "{handler} calls for {gid}: {calls:?}");
    calls.into_iter().next().unwrap()
}

/// Asserts a call is DTM delivering a msg action with `branch_id` and `req` as body.
fn assert_delivery(c: &Call, branch_id: &str, req: &BusiReq) {
    let info = c.info.as_ref().unwrap();
    assert_eq!(info.trans_type, TransType::Msg, "{c:?}");
    assert_eq!(info.op, Op::Action, "{c:?}");
    assert_eq!(info.branch_id, branch_id, "{c:?}");
    // DTM itself never sends `dtm` or `phase2_url`.
    assert_eq!(info.dtm, None, "{c:?}");
    assert_eq!(c.method, "POST", "{c:?}");
    assert_eq!(serde_json::from_str::<BusiReq>(&c.body).unwrap(), *req);
}

/// Asserts a call is a back-check made by DTM (no `dtm` query parameter).
fn assert_server_back_check(c: &Call) {
    let info = c.info.as_ref().unwrap();
    assert_eq!(c.method, "GET", "{c:?}");
    assert_eq!(info.trans_type, TransType::Msg, "{c:?}");
    assert_eq!(info.branch_id, "00", "{c:?}");
    assert_eq!(info.op, Op::Msg, "{c:?}");
    assert_eq!(info.dtm, None, "{c:?}");
    assert_eq!(c.body, "", "{c:?}");
}

#[tokio::test]
async fn success_delivers_every_branch_once() {
    let dtm = dtm();
    let gid = gid("msg-ok");
    let req = BusiReq::new(30);
    transfer(&dtm, &gid, &req).submit().await.unwrap();
    let q = wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn"]);
    assert_delivery(&only_call(&gid, "TransOut"), "01", &req);
    assert_delivery(&only_call(&gid, "TransIn"), "02", &req);
    let t = q.transaction.clone().unwrap();
    assert_eq!(t.trans_type, "msg");
    assert_eq!(t.query_prepared, "");
    assert_eq!(branch_rows(&q), ["01/action=succeed", "02/action=succeed"]);
    assert_eq!(q.branches[0].url, url("TransOut"));
    assert_eq!(q.branches[1].bin_data, serde_json::to_vec(&req).unwrap());
}

#[tokio::test]
async fn topic_with_two_subscribers_delivers_to_both() {
    let dtm = dtm();
    let topic = gid("topic");
    let subscribers = [url("TransOut"), url("TransIn")];
    for s in &subscribers {
        dtm.subscribe(&topic, s, "msg test").await.unwrap();
    }
    // The same URL twice is refused (a plain 500).
    let dup = dtm
        .subscribe(&topic, &subscribers[0], "again")
        .await
        .unwrap_err();
    assert!(
        matches!(dup, Error::Status { status: 500, ref body, .. } if body.contains("this url exists")),
        "{dup}"
    );

    // DTM reloads its topic map every ConfigUpdateInterval (3 s): probe with throw-away
    // messages until the topic resolves to both subscribers.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut probes = 0;
    loop {
        let probe = gid("msg-topic-probe");
        probes += 1;
        match dtm
            .msg(&probe)
            .add_topic(&topic, &BusiReq::new(0))
            .submit()
            .await
        {
            Ok(()) => {
                if dtm.query(&probe).await.unwrap().branches.len() == subscribers.len() {
                    break;
                }
            }
            Err(Error::Status {
                status: 500,
                ref body,
                ..
            }) if body.contains("topic not found") => {}
            Err(e) => panic!("probe submit: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} never resolved to 2 subscribers"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("topic resolved after {probes} probe(s)");

    let gid = gid("msg-topic");
    let req = BusiReq::new(7);
    dtm.msg(&gid)
        .add_topic(&topic, &req)
        .submit()
        .await
        .unwrap();
    let q = wait_status(&dtm, &gid, "succeed").await;
    // The real server numbers the subscribers of step 1 as 01-01, 01-02 (in subscription order).
    assert_eq!(
        branch_rows(&q),
        ["01-01/action=succeed", "01-02/action=succeed"]
    );
    assert_eq!(q.branches[0].url, subscribers[0]);
    assert_eq!(q.branches[1].url, subscribers[1]);
    assert_eq!(
        q.transaction.unwrap().steps[0]["action"],
        format!("topic://{topic}")
    );
    assert_delivery(&only_call(&gid, "TransOut"), "01-01", &req);
    assert_delivery(&only_call(&gid, "TransIn"), "01-02", &req);

    // Clean up: unsubscribe both, then delete the (now empty) topic.
    for s in &subscribers {
        dtm.unsubscribe(&topic, s).await.unwrap();
    }
    let again = dtm.unsubscribe(&topic, &subscribers[0]).await.unwrap_err();
    assert!(
        matches!(again, Error::Status { status: 500, .. }),
        "{again}"
    );
    dtm.delete_topic(&topic).await.unwrap();
    let gone = dtm.delete_topic(&topic).await.unwrap_err();
    assert!(matches!(gone, Error::Status { status: 500, .. }), "{gone}");
    let gone = dtm.unsubscribe(&topic, &subscribers[0]).await.unwrap_err();
    assert!(
        matches!(gone, Error::Status { status: 500, ref body, .. } if body.contains("no such a topic")),
        "{gone}"
    );
}

#[tokio::test]
async fn topic_without_subscribers_is_refused() {
    let dtm = dtm();
    let topic = gid("nobody-listens");
    let gid = gid("msg-no-topic");
    let err = dtm
        .msg(&gid)
        .add_topic(&topic, &BusiReq::new(1))
        .submit()
        .await
        .unwrap_err();
    // The server answers a plain 500 "topic not found": retryable, not a failure.
    assert!(
        matches!(err, Error::Status { status: 500, ref body, .. } if body.contains("topic not found")),
        "{err}"
    );
    assert_eq!(err.kind(), dtmcli::ErrorKind::Retryable);
    assert!(dtm.query(&gid).await.unwrap().transaction.is_none());
}

#[tokio::test]
async fn back_check_success_delivers_the_message() {
    let dtm = dtm();
    let gid = gid("msg-qp-ok");
    busi().script(&gid, "QueryPrepared", [Outcome::Success]);
    let req = BusiReq::new(11);
    let msg = transfer(&dtm, &gid, &req).with_options(fast());
    msg.prepare(&url("QueryPrepared")).await.unwrap();
    let q = dtm.query(&gid).await.unwrap();
    let t = q.transaction.clone().unwrap();
    assert_eq!(t.status, "prepared");
    assert_eq!(t.query_prepared, url("QueryPrepared"));
    assert_eq!(
        branch_rows(&q),
        ["01/action=prepared", "02/action=prepared"]
    );
    // Never submitted: DTM asks the back-check after timeout_to_fail and then delivers.
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(
        busi().handlers(&gid),
        ["QueryPrepared", "TransOut", "TransIn"]
    );
    assert_server_back_check(&only_call(&gid, "QueryPrepared"));
    assert_delivery(&only_call(&gid, "TransOut"), "01", &req);
    assert_delivery(&only_call(&gid, "TransIn"), "02", &req);
}

#[tokio::test]
async fn back_check_failure_fails_the_message() {
    let dtm = dtm();
    let gid = gid("msg-qp-fail");
    busi().script(&gid, "QueryPrepared", [Outcome::Failure]);
    let msg = transfer(&dtm, &gid, &BusiReq::new(1)).with_options(fast());
    msg.prepare(&url("QueryPrepared")).await.unwrap();
    let q = wait_status(&dtm, &gid, "failed").await;
    assert_eq!(busi().handlers(&gid), ["QueryPrepared"]);
    assert_server_back_check(&busi().calls(&gid)[0]);
    assert_eq!(
        branch_rows(&q),
        ["01/action=prepared", "02/action=prepared"]
    );
    // A failed message cannot be submitted any more.
    let err = msg.submit().await.unwrap_err();
    assert!(err.is_failure(), "{err}");
}

#[tokio::test]
async fn back_check_ongoing_is_asked_again() {
    let dtm = dtm();
    let gid = gid("msg-qp-ongoing");
    busi().script(&gid, "QueryPrepared", [Outcome::Ongoing, Outcome::Success]);
    let msg = transfer(&dtm, &gid, &BusiReq::new(1)).with_options(fast());
    msg.prepare(&url("QueryPrepared")).await.unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    let checks = busi().count(&gid, "QueryPrepared");
    assert_eq!(checks, 2, "{:?}", busi().handlers(&gid));
    for c in busi()
        .calls(&gid)
        .iter()
        .filter(|c| c.handler == "QueryPrepared")
    {
        assert_server_back_check(c);
    }
    assert_eq!(busi().count(&gid, "TransOut"), 1);
    assert_eq!(busi().count(&gid, "TransIn"), 1);
    // The branches ran only after the successful check.
    let h = busi().handlers(&gid);
    assert_eq!(h, ["QueryPrepared", "QueryPrepared", "TransOut", "TransIn"]);
}

/// Runs `do_and_submit` with a business closure that records its `TransInfo`, checks the
/// message is prepared while it runs, and returns `result`.
async fn do_and_submit(
    dtm: &DtmClient,
    gid: &str,
    result: dtmcli::Result<()>,
) -> (dtmcli::Result<()>, TransInfo) {
    let seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    let dtm2 = dtm.clone();
    let gid2 = gid.to_string();
    let out = transfer(dtm, gid, &BusiReq::new(5))
        .do_and_submit(&url("QueryPrepared"), move |info| async move {
            let status = dtm2.query(&gid2).await?.transaction.map(|t| t.status);
            assert_eq!(status.as_deref(), Some("prepared"));
            *seen2.lock().unwrap() = Some(info);
            result
        })
        .await;
    let info = seen.lock().unwrap().take().expect("business closure ran");
    (out, info)
}

fn assert_local_info(info: &TransInfo, dtm: &DtmClient, gid: &str) {
    assert_eq!(info.gid, gid);
    assert_eq!(info.trans_type, TransType::Msg);
    assert_eq!(info.branch_id, "00");
    assert_eq!(info.op, Op::Msg);
    assert_eq!(info.dtm.as_deref(), Some(dtm.server()));
    assert_eq!(info.phase2_url, None);
}

/// Asserts the back-check was made once, by the SDK: GET with the `dtm` parameter.
fn assert_sdk_back_check(dtm: &DtmClient, gid: &str) {
    let c = only_call(gid, "QueryPrepared");
    assert_eq!(c.method, "GET");
    assert!(c.query.contains("dtm="), "{}", c.query);
    let info = c.info.unwrap();
    assert_eq!(info.dtm.as_deref(), Some(dtm.server()));
    assert_eq!((info.branch_id.as_str(), info.op), ("00", Op::Msg));
    assert_eq!(info.trans_type, TransType::Msg);
}

#[tokio::test]
async fn do_and_submit_ok_submits_without_back_check() {
    let dtm = dtm();
    let gid = gid("msg-das-ok");
    let (out, info) = do_and_submit(&dtm, &gid, Ok(())).await;
    out.unwrap();
    assert_local_info(&info, &dtm, &gid);
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn"]);
    assert_eq!(busi().count(&gid, "QueryPrepared"), 0);
}

#[tokio::test]
async fn do_and_submit_failure_aborts() {
    let dtm = dtm();
    let gid = gid("msg-das-fail");
    let (out, info) = do_and_submit(&dtm, &gid, Err(Error::failure("no money"))).await;
    let err = out.unwrap_err();
    assert!(
        matches!(err, Error::Failure(ref m) if m == "no money"),
        "{err}"
    );
    assert_local_info(&info, &dtm, &gid);
    let q = wait_status(&dtm, &gid, "failed").await;
    assert_eq!(
        branch_rows(&q),
        ["01/action=prepared", "02/action=prepared"]
    );
    // Neither the branches nor the back-check ran.
    assert!(busi().calls(&gid).is_empty(), "{:?}", busi().handlers(&gid));
}

#[tokio::test]
async fn do_and_submit_unknown_outcome_back_checks_success_and_submits() {
    let dtm = dtm();
    let gid = gid("msg-das-err-ok");
    busi().script(&gid, "QueryPrepared", [Outcome::Success]);
    let (out, info) = do_and_submit(&dtm, &gid, Err(Error::other("connection lost"))).await;
    // The business error is returned even though the message was submitted (as in Go).
    let err = out.unwrap_err();
    assert!(matches!(err, Error::Other(_)), "{err}");
    assert_eq!(err.to_string(), "connection lost");
    assert_local_info(&info, &dtm, &gid);
    wait_status(&dtm, &gid, "succeed").await;
    assert_sdk_back_check(&dtm, &gid);
    assert_eq!(
        busi().handlers(&gid),
        ["QueryPrepared", "TransOut", "TransIn"]
    );
}

#[tokio::test]
async fn do_and_submit_unknown_outcome_back_checks_failure_and_aborts() {
    let dtm = dtm();
    let gid = gid("msg-das-err-fail");
    busi().script(&gid, "QueryPrepared", [Outcome::Failure]);
    let (out, _) = do_and_submit(&dtm, &gid, Err(Error::other("connection lost"))).await;
    let err = out.unwrap_err();
    assert!(matches!(err, Error::Other(_)), "{err}");
    wait_status(&dtm, &gid, "failed").await;
    assert_sdk_back_check(&dtm, &gid);
    assert_eq!(busi().handlers(&gid), ["QueryPrepared"]);
}

#[tokio::test]
async fn do_and_submit_unknown_outcome_back_check_ongoing_leaves_it_prepared() {
    let dtm = dtm();
    let gid = gid("msg-das-err-ongoing");
    busi().script(&gid, "QueryPrepared", [Outcome::Ongoing]);
    let (out, _) = do_and_submit(&dtm, &gid, Err(Error::other("connection lost"))).await;
    assert!(matches!(out, Err(Error::Other(_))), "{out:?}");
    assert_sdk_back_check(&dtm, &gid);
    // Neither submitted nor aborted: DTM's own back-check (35 s default) decides later.
    let t = dtm.query(&gid).await.unwrap().transaction.unwrap();
    assert_eq!(t.status, "prepared");
    assert_eq!(busi().handlers(&gid), ["QueryPrepared"]);
    dtm.force_stop(&gid).await.unwrap();
    wait_status(&dtm, &gid, "failed").await;
}

#[tokio::test]
async fn delay_holds_the_branches_back() {
    let dtm = dtm();
    let gid = gid("msg-delay");
    let start = Instant::now();
    dtm.msg(&gid)
        .add(&url("TransOut"), &BusiReq::new(3))
        .delay(Duration::from_secs(3))
        .with_options(TransOptions::default().retry_interval(Duration::from_secs(1)))
        .submit()
        .await
        .unwrap();
    let t = dtm.query(&gid).await.unwrap().transaction.unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&t.custom_data).unwrap(),
        serde_json::json!({"delay": 3})
    );
    // Checking that something has not happened yet needs a fixed wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(busi().count(&gid, "TransOut"), 0);
    assert_eq!(
        dtm.query(&gid).await.unwrap().transaction.unwrap().status,
        "submitted"
    );
    wait_calls(&gid, "TransOut", 1).await;
    let waited = start.elapsed();
    println!("delayed branch called after {waited:?}");
    assert!(waited >= Duration::from_millis(2900), "{waited:?}");
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(busi().count(&gid, "TransOut"), 1);
}

#[tokio::test]
async fn repeated_prepare_then_calls_after_success() {
    let dtm = dtm();
    let gid = gid("msg-repeat");
    let msg = transfer(&dtm, &gid, &BusiReq::new(2));
    msg.prepare(&url("QueryPrepared")).await.unwrap();
    msg.prepare(&url("QueryPrepared")).await.unwrap();
    let q = dtm.query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "prepared");
    assert_eq!(q.branches.len(), 2);
    msg.submit().await.unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn"]);
    // DTM refuses both (FAILURE: "cannot sumbmit", "cannot prepare"), but the message was
    // delivered: a submit reports that (dtmcli::outcome), a prepare that the gid is taken.
    msg.submit().await.unwrap();
    let err = msg.prepare(&url("QueryPrepared")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("cannot prepare"), "{err}");
    // Nothing was delivered twice.
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn"]);
}
