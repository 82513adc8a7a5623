//! Saga options against the real DTM server: wait_result, retry_interval, timeout_to_fail,
//! request_timeout, retry_limit, branch_headers.

use std::time::Duration;

use crate::support::*;
use dtmcli::TransOptions;

fn transfer(gid: &str, req: &BusiReq, o: TransOptions) -> dtmcli::Saga {
    dtm()
        .saga(gid)
        .add(&url("TransOut"), &url("TransOutRevert"), req)
        .add(&url("TransIn"), &url("TransInRevert"), req)
        .with_options(o)
}

#[tokio::test]
async fn wait_result_success_returns_after_the_saga_finished() {
    let gid = gid("opt-wait-ok");
    transfer(
        &gid,
        &BusiReq::new(1),
        TransOptions::default().wait_result(true),
    )
    .submit()
    .await
    .unwrap();
    // No polling: the saga is already finished when submit returns.
    let q = dtm().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "succeed");
    assert_eq!(busi().handlers(&gid), ["TransOut", "TransIn"]);
}

#[tokio::test]
async fn wait_result_failure_returns_the_reason() {
    let gid = gid("opt-wait-fail");
    busi().script(&gid, "TransIn", [Outcome::Failure]);
    let err = transfer(
        &gid,
        &BusiReq::new(1),
        TransOptions::default().wait_result(true),
    )
    .submit()
    .await
    .unwrap_err();
    assert!(err.is_failure(), "{err}");
    assert!(err.to_string().contains("TransIn refused"), "{err}");
    let q = dtm().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "failed");
    assert_eq!(
        busi().handlers(&gid),
        ["TransOut", "TransIn", "TransInRevert", "TransOutRevert"]
    );
}

#[tokio::test]
async fn wait_result_ongoing_is_reported_as_not_final_then_completes() {
    let gid = gid("opt-wait-ongoing");
    busi().script(&gid, "TransIn", [Outcome::Ongoing]);
    let o = TransOptions::default()
        .wait_result(true)
        .retry_interval(Duration::from_secs(1));
    let err = transfer(&gid, &BusiReq::new(1), o)
        .submit()
        .await
        .unwrap_err();
    // DTM answers 409 FAILURE for an unfinished saga under wait_result (protocol §2.5,
    // fact 19); the caller is told what DTM stored: not final.
    assert!(
        matches!(
            err,
            dtmcli::Error::NotFinal {
                status: Some(dtmcli::TransStatus::Submitted),
                ..
            }
        ),
        "{err}"
    );
    dtm()
        .wait_final(&gid, Duration::from_secs(30))
        .await
        .unwrap();
    wait_status(&dtm(), &gid, "succeed").await;
}

#[tokio::test]
async fn retry_interval_is_stored_and_paces_retries() {
    let gid = gid("opt-retry");
    busi().script(&gid, "TransOut", [Outcome::Ongoing, Outcome::Ongoing]);
    let o = TransOptions::default().retry_interval(Duration::from_secs(2));
    let started = std::time::Instant::now();
    transfer(&gid, &BusiReq::new(1), o).submit().await.unwrap();
    let q = wait_status(&dtm(), &gid, "succeed").await;
    let t = q.transaction.unwrap();
    assert_eq!(t.retry_interval, 2);
    assert!(t.options.contains("\"retry_interval\":2"), "{}", t.options);
    assert_eq!(busi().count(&gid, "TransOut"), 3);
    // Two ONGOING answers kept the interval at 2 s: at least ~4 s elapsed.
    assert!(
        started.elapsed() >= Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn timeout_to_fail_aborts_and_compensates() {
    let gid = gid("opt-timeout");
    busi().script(&gid, "TransIn", std::iter::repeat_n(Outcome::Ongoing, 50));
    let o = TransOptions::default()
        .timeout_to_fail(Duration::from_secs(2))
        .retry_interval(Duration::from_secs(1));
    transfer(&gid, &BusiReq::new(1), o).submit().await.unwrap();
    let q = wait_status(&dtm(), &gid, "failed").await;
    let t = q.transaction.unwrap();
    assert!(
        t.rollback_reason.contains("Timeout after"),
        "{}",
        t.rollback_reason
    );
    assert_eq!(busi().count(&gid, "TransOutRevert"), 1);
    assert_eq!(busi().count(&gid, "TransOut"), 1);
}

#[tokio::test]
async fn request_timeout_cuts_a_slow_branch_which_is_retried() {
    let gid = gid("opt-reqtimeout");
    busi().script(&gid, "TransOut", [Outcome::Sleep(Duration::from_secs(3))]);
    let o = TransOptions::default()
        .request_timeout(Duration::from_secs(1))
        .retry_interval(Duration::from_secs(1));
    transfer(&gid, &BusiReq::new(1), o).submit().await.unwrap();
    let q = wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(q.transaction.unwrap().request_timeout, 1);
    // The first call was cut off by DTM after 1 s and retried.
    assert!(
        busi().count(&gid, "TransOut") >= 2,
        "{:?}",
        busi().handlers(&gid)
    );
}

#[tokio::test]
async fn retry_limit_aborts_after_n_retries() {
    let gid = gid("opt-retrylimit");
    busi().script(&gid, "TransIn", std::iter::repeat_n(Outcome::Error, 50));
    let o = TransOptions::default()
        .retry_limit(2)
        .retry_interval(Duration::from_secs(1));
    transfer(&gid, &BusiReq::new(1), o).submit().await.unwrap();
    let q = wait_status(&dtm(), &gid, "failed").await;
    let t = q.transaction.unwrap();
    assert!(
        t.rollback_reason.contains("RetryLimit"),
        "{}",
        t.rollback_reason
    );
    assert_eq!(
        busi().count(&gid, "TransIn"),
        3,
        "{:?}",
        busi().handlers(&gid)
    );
    assert_eq!(busi().count(&gid, "TransOutRevert"), 1);
}

#[tokio::test]
async fn retry_limit_not_reached_succeeds() {
    let gid = gid("opt-retrylimit-ok");
    busi().script(&gid, "TransIn", [Outcome::Error]);
    let o = TransOptions::default()
        .retry_limit(2)
        .retry_interval(Duration::from_secs(1));
    transfer(&gid, &BusiReq::new(1), o).submit().await.unwrap();
    wait_status(&dtm(), &gid, "succeed").await;
    assert_eq!(busi().count(&gid, "TransIn"), 2);
}

#[tokio::test]
async fn branch_headers_on_first_call_and_on_retry() {
    let gid = gid("opt-headers");
    busi().script(&gid, "TransIn", [Outcome::Error]);
    let o = TransOptions::default()
        .retry_interval(Duration::from_secs(1))
        .branch_header("test_header", "test_value")
        .branch_header("x-tenant", "t1");
    transfer(&gid, &BusiReq::new(1), o).submit().await.unwrap();
    wait_status(&dtm(), &gid, "succeed").await;
    let calls = busi().calls(&gid);
    assert_eq!(calls.len(), 3, "{:?}", busi().handlers(&gid));
    for c in &calls {
        assert_eq!(
            c.headers.get("test_header").map(String::as_str),
            Some("test_value"),
            "{}",
            c.handler
        );
        assert_eq!(c.headers.get("x-tenant").map(String::as_str), Some("t1"));
    }
    // The retry (cron pass) carries them too.
    assert_eq!(calls[2].handler, "TransIn");
}
