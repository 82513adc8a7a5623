//! What only HTTP messages have here (the scenarios every transport shares are in
//! `transport_suite`): topics with their subscription API, and delayed delivery.

use std::time::{Duration, Instant};

use crate::support::*;
use crate::transport_suite::assert_delivery;
use crate::transport_suite::protos::{count, Http, Proto};
use dtmcli::{Error, TransOptions};

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
    for (handler, branch_id) in [("TransOut", "01-01"), ("TransIn", "01-02")] {
        assert_eq!(count::<Http>(&gid, handler), 1);
        let calls = Http::calls(&gid);
        let c = calls.iter().find(|c| c.handler == handler).unwrap();
        assert_delivery::<Http>(c, branch_id, &req);
    }

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
