//! One scenario suite, generic over the transport: every scenario runs over HTTP, gRPC,
//! JSON-RPC and a cluster of two DTM servers (the [`protos::Proto`] fixtures), against the
//! real DTM server, with the bank of the examples recording every branch call. What only
//! one transport has (gRPC's raw codec and stored bytes, HTTP's methods, mixed protocols)
//! is tested in that transport's module.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod protos;

use std::time::Duration;

use crate::support::{branch_rows, gid, wait_status, Outcome};
use dtmcli::outcome::wait_final;
use dtmcli::saga::Saga;
use dtmcli::{Error, Op, QueryResult, TransOptions, TransStatus, TransType};
use protos::{count, handlers, Proto};

/// A gid for scenario `name` on transport `P`.
fn gid_of<P: Proto>(name: &str) -> String {
    gid(&format!("{}-{name}", P::NAME))
}

/// Waits until DTM stores `status` for `gid`.
async fn until<P: Proto>(gid: &str, status: &str) -> QueryResult {
    wait_status(&P::observer(), gid, status).await
}

/// Options with DTM retrying a branch after a second.
fn opts() -> TransOptions {
    TransOptions::default().retry_interval(Duration::from_secs(1))
}

/// A transfer saga: TransOut then TransIn, each with its compensation.
fn transfer<P: Proto>(gid: &str, req: &P::Req) -> Saga<P::T> {
    Saga::new(P::client(), gid)
        .add(&P::url("TransOut"), &P::url("TransOutRevert"), req)
        .add(&P::url("TransIn"), &P::url("TransInRevert"), req)
}

/// Actions run in order with their payloads; DTM stores the steps; a second submit of the
/// finished saga is told what DTM stored (success) and runs nothing again.
pub async fn saga_success<P: Proto>() {
    let gid = gid_of::<P>("saga-ok");
    let req = P::req(30);
    transfer::<P>(&gid, &req).submit().await.unwrap();
    let q = until::<P>(&gid, "succeed").await;
    assert_eq!(handlers::<P>(&gid), ["TransOut", "TransIn"]);
    for (c, bid) in P::calls(&gid).iter().zip(["01", "02"]) {
        assert_eq!(
            (c.info.branch_id.as_str(), &c.info.op, c.info.trans_type),
            (bid, &Op::Action, TransType::Saga)
        );
        assert_eq!(c.req.as_ref(), Some(&req));
    }
    let t = q.transaction.clone().unwrap();
    assert_eq!(
        (t.trans_type.as_str(), t.protocol.as_str()),
        ("saga", P::PROTOCOL)
    );
    assert_eq!(
        branch_rows(&q),
        [
            "01/compensate=prepared",
            "01/action=succeed",
            "02/compensate=prepared",
            "02/action=succeed"
        ]
    );
    transfer::<P>(&gid, &req).submit().await.unwrap();
    assert_eq!(handlers::<P>(&gid), ["TransOut", "TransIn"]);
}

/// A refused action rolls back: the compensations run in reverse order, the failed
/// branch's included, with the step's payload; DTM stores the branch's reason.
pub async fn saga_rollback<P: Proto>() {
    let gid = gid_of::<P>("saga-rb");
    let req = P::refused(30, false);
    transfer::<P>(&gid, &req).submit().await.unwrap();
    let q = until::<P>(&gid, "failed").await;
    assert_eq!(
        handlers::<P>(&gid),
        ["TransOut", "TransIn", "TransInRevert", "TransOutRevert"]
    );
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("TransIn refused"), "{reason}");
    assert!(reason.contains("/TransIn"), "{reason}");
    let c = &P::calls(&gid)[2];
    assert_eq!(
        (c.info.op.clone(), c.info.branch_id.as_str()),
        (Op::Compensate, "02")
    );
    assert_eq!(
        c.req.as_ref(),
        Some(&req),
        "the compensation gets the step's payload"
    );
}

/// A branch answering ONGOING is retried until it succeeds; nothing is compensated.
pub async fn saga_ongoing_then_success<P: Proto>() {
    let gid = gid_of::<P>("saga-ongoing");
    P::script(&gid, "TransIn", vec![Outcome::Ongoing]);
    transfer::<P>(&gid, &P::req(1))
        .with_options(opts())
        .submit()
        .await
        .unwrap();
    until::<P>(&gid, "succeed").await;
    assert_eq!(handlers::<P>(&gid), ["TransOut", "TransIn", "TransIn"]);
    assert_eq!(count::<P>(&gid, "TransOutRevert"), 0);
}

/// A compensation that errors, then answers ONGOING, is retried until it succeeds.
pub async fn saga_erroring_compensation_is_retried<P: Proto>() {
    let gid = gid_of::<P>("saga-comp-err");
    P::script(&gid, "TransIn", vec![Outcome::Failure]);
    P::script(
        &gid,
        "TransOutRevert",
        vec![Outcome::Error, Outcome::Ongoing],
    );
    transfer::<P>(&gid, &P::req(1))
        .with_options(opts())
        .submit()
        .await
        .unwrap();
    until::<P>(&gid, "failed").await;
    assert_eq!(count::<P>(&gid, "TransOutRevert"), 3);
    assert_eq!(count::<P>(&gid, "TransInRevert"), 1);
    assert_eq!(count::<P>(&gid, "TransOut"), 1);
}

/// An empty action or compensation URL counts as a success that calls nothing.
pub async fn saga_empty_branch_url_counts_as_success<P: Proto>() {
    let gid = gid_of::<P>("saga-empty");
    Saga::new(P::client(), &gid)
        .add("", &P::url("TransOutRevert"), &P::req(1))
        .add(&P::url("TransIn"), "", &P::req(1))
        .submit()
        .await
        .unwrap();
    let q = until::<P>(&gid, "succeed").await;
    assert_eq!(handlers::<P>(&gid), ["TransIn"]);
    assert!(branch_rows(&q).contains(&"01/action=succeed".to_string()));
}

/// Four steps, concurrent, with orders: 2 after 0 and 1, 3 after 2.
fn four_steps<P: Proto>(gid: &str) -> Saga<P::T> {
    let req = P::req(5);
    Saga::new(P::client(), gid)
        .add(&P::url("TransOut"), &P::url("TransOutRevert"), &req)
        .add(&P::url("TransIn"), &P::url("TransInRevert"), &req)
        .add(&P::url("TransOutTry"), &P::url("TransOutCancel"), &req)
        .add(&P::url("TransInTry"), &P::url("TransInCancel"), &req)
        .add_branch_order(2, &[0, 1])
        .add_branch_order(3, &[2])
        .concurrent()
}

fn pos(h: &[String], name: &str) -> usize {
    h.iter()
        .position(|x| x == name)
        .unwrap_or_else(|| panic!("{name} not in {h:?}"))
}

/// A concurrent saga runs each step after those it is ordered after.
pub async fn saga_concurrent_with_orders_success<P: Proto>() {
    let gid = gid_of::<P>("saga-conc");
    four_steps::<P>(&gid).submit().await.unwrap();
    let q = until::<P>(&gid, "succeed").await;
    let h = handlers::<P>(&gid);
    assert_eq!(h.len(), 4, "{h:?}");
    assert!(pos(&h, "TransOutTry") > pos(&h, "TransOut"));
    assert!(pos(&h, "TransOutTry") > pos(&h, "TransIn"));
    assert!(pos(&h, "TransInTry") > pos(&h, "TransOutTry"));
    let custom = q.transaction.unwrap().custom_data;
    assert!(custom.contains("\"concurrent\":true"), "{custom}");
}

/// A concurrent saga rolls back in reverse order of its DAG; a step that never ran is not
/// compensated.
pub async fn saga_concurrent_with_orders_rollback<P: Proto>() {
    let gid = gid_of::<P>("saga-conc-rb");
    P::script(&gid, "TransOutTry", vec![Outcome::Failure]);
    four_steps::<P>(&gid).submit().await.unwrap();
    until::<P>(&gid, "failed").await;
    let h = handlers::<P>(&gid);
    assert_eq!(count::<P>(&gid, "TransInTry"), 0, "{h:?}");
    assert_eq!(count::<P>(&gid, "TransInCancel"), 0, "{h:?}");
    for comp in ["TransOutCancel", "TransOutRevert", "TransInRevert"] {
        assert_eq!(count::<P>(&gid, comp), 1, "{comp}: {h:?}");
    }
    assert!(pos(&h, "TransOutRevert") > pos(&h, "TransOutCancel"));
    assert!(pos(&h, "TransInRevert") > pos(&h, "TransOutCancel"));
}

/// With `wait_result`, a saga that commits is `Ok` once finished, and one that rolls back
/// is a `Failure` with DTM's reason.
pub async fn saga_wait_result_returns_the_outcome<P: Proto>() {
    let gid = gid_of::<P>("saga-wait-ok");
    let wait = TransOptions::default().wait_result(true);
    transfer::<P>(&gid, &P::req(3))
        .with_options(wait.clone())
        .submit()
        .await
        .unwrap();
    let q = P::observer().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "succeed");
    assert_eq!(handlers::<P>(&gid), ["TransOut", "TransIn"]);

    let gid = gid_of::<P>("saga-wait-rb");
    let err = transfer::<P>(&gid, &P::refused(3, true))
        .with_options(wait)
        .submit()
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    assert!(err.to_string().contains("TransOut refused"), "{err}");
    let q = P::observer().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "failed");
    assert_eq!(handlers::<P>(&gid), ["TransOut", "TransOutRevert"]);
}

/// The options reach DTM and are stored.
pub async fn saga_options_are_stored<P: Proto>() {
    let gid = gid_of::<P>("saga-opts");
    let o = TransOptions::default()
        .retry_interval(Duration::from_secs(2))
        .timeout_to_fail(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(5))
        .retry_limit(3);
    transfer::<P>(&gid, &P::req(1))
        .with_options(o)
        .submit()
        .await
        .unwrap();
    let t = until::<P>(&gid, "succeed").await.transaction.unwrap();
    assert_eq!(
        (
            t.retry_interval,
            t.timeout_to_fail,
            t.request_timeout,
            t.retry_limit
        ),
        (2, 60, 5, 3)
    );
}

/// Under `wait_result`, a saga still running when DTM answers is reported as not final
/// (what DTM stored, never "rolled back"), and `wait_final` then sees it commit.
pub async fn saga_wait_result_ongoing_is_not_final<P: Proto>() {
    let gid = gid_of::<P>("saga-wait-ongoing");
    P::script(&gid, "TransIn", vec![Outcome::Ongoing]);
    let err = transfer::<P>(&gid, &P::req(1))
        .with_options(opts().wait_result(true))
        .submit()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFinal {
                status: Some(TransStatus::Submitted),
                ..
            }
        ),
        "{err}"
    );
    wait_final(&P::client(), &gid, Duration::from_secs(30))
        .await
        .unwrap();
    until::<P>(&gid, "succeed").await;
}

/// The retry interval is stored and paces DTM's retries.
pub async fn saga_retry_interval_paces_retries<P: Proto>() {
    let gid = gid_of::<P>("saga-retry");
    P::script(&gid, "TransOut", vec![Outcome::Ongoing, Outcome::Ongoing]);
    let started = std::time::Instant::now();
    transfer::<P>(&gid, &P::req(1))
        .with_options(TransOptions::default().retry_interval(Duration::from_secs(2)))
        .submit()
        .await
        .unwrap();
    let t = until::<P>(&gid, "succeed").await.transaction.unwrap();
    assert_eq!(t.retry_interval, 2);
    assert!(t.options.contains("\"retry_interval\":2"), "{}", t.options);
    assert_eq!(count::<P>(&gid, "TransOut"), 3);
    // Two ONGOING answers kept the interval at 2 s: at least ~4 s went by.
    assert!(
        started.elapsed() >= Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
}

/// A branch that keeps erroring past the retry limit aborts the saga; one that recovers
/// within it commits.
pub async fn saga_retry_limit<P: Proto>() {
    let gid = gid_of::<P>("saga-retry-limit");
    P::script(&gid, "TransIn", vec![Outcome::Error; 50]);
    transfer::<P>(&gid, &P::req(1))
        .with_options(opts().retry_limit(2))
        .submit()
        .await
        .unwrap();
    let reason = until::<P>(&gid, "failed")
        .await
        .transaction
        .unwrap()
        .rollback_reason;
    assert!(reason.contains("RetryLimit"), "{reason}");
    assert_eq!(count::<P>(&gid, "TransIn"), 3, "{:?}", handlers::<P>(&gid));
    assert_eq!(count::<P>(&gid, "TransOutRevert"), 1);

    let gid = gid_of::<P>("saga-retry-limit-ok");
    P::script(&gid, "TransIn", vec![Outcome::Error]);
    transfer::<P>(&gid, &P::req(1))
        .with_options(opts().retry_limit(2))
        .submit()
        .await
        .unwrap();
    until::<P>(&gid, "succeed").await;
    assert_eq!(count::<P>(&gid, "TransIn"), 2);
}

/// A saga still running at its timeout is compensated.
pub async fn saga_timeout_to_fail_compensates<P: Proto>() {
    let gid = gid_of::<P>("saga-timeout");
    P::script(&gid, "TransIn", vec![Outcome::Ongoing; 50]);
    transfer::<P>(&gid, &P::req(1))
        .with_options(opts().timeout_to_fail(Duration::from_secs(2)))
        .submit()
        .await
        .unwrap();
    let reason = until::<P>(&gid, "failed")
        .await
        .transaction
        .unwrap()
        .rollback_reason;
    assert!(reason.contains("Timeout after"), "{reason}");
    assert_eq!(count::<P>(&gid, "TransOutRevert"), 1);
    assert_eq!(count::<P>(&gid, "TransOut"), 1);
}

/// DTM cuts a branch slower than the request timeout and retries it.
pub async fn saga_request_timeout_retries_a_slow_branch<P: Proto>() {
    let gid = gid_of::<P>("saga-req-timeout");
    P::script(
        &gid,
        "TransOut",
        vec![Outcome::Sleep(Duration::from_secs(3))],
    );
    transfer::<P>(&gid, &P::req(1))
        .with_options(opts().request_timeout(Duration::from_secs(1)))
        .submit()
        .await
        .unwrap();
    let t = until::<P>(&gid, "succeed").await.transaction.unwrap();
    assert_eq!(t.request_timeout, 1);
    assert!(
        count::<P>(&gid, "TransOut") >= 2,
        "{:?}",
        handlers::<P>(&gid)
    );
    assert_eq!(count::<P>(&gid, "TransOutRevert"), 0);
}

/// Branch headers reach every call, DTM's retry included.
pub async fn saga_branch_headers_on_every_call<P: Proto>() {
    let gid = gid_of::<P>("saga-headers");
    P::script(&gid, "TransIn", vec![Outcome::Error]);
    let o = opts()
        .branch_header("test_header", P::NAME)
        .branch_header("x-tenant", "t1");
    transfer::<P>(&gid, &P::req(1))
        .with_options(o)
        .submit()
        .await
        .unwrap();
    until::<P>(&gid, "succeed").await;
    let calls = P::calls(&gid);
    assert_eq!(calls.len(), 3, "{:?}", handlers::<P>(&gid));
    assert_eq!(calls[2].handler, "TransIn", "the retry");
    for c in &calls {
        let h = |k: &str| c.headers.get(k).map(String::as_str);
        assert_eq!(
            (h("test_header"), h("x-tenant")),
            (Some(P::NAME), Some("t1")),
            "{} {:?}",
            c.handler,
            c.headers
        );
    }
}

/// One module per transport, one test per scenario that applies to it.
macro_rules! transport_suite {
    ($proto:ident: $ty:ty => $($scenario:ident),* $(,)?) => {
        mod $proto {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario::<$ty>().await
                }
            )*
        }
    };
}

/// The saga scenarios.
macro_rules! saga_scenarios {
    ($proto:ident: $ty:ty) => {
        transport_suite!($proto: $ty =>
            saga_success,
            saga_rollback,
            saga_ongoing_then_success,
            saga_erroring_compensation_is_retried,
            saga_empty_branch_url_counts_as_success,
            saga_concurrent_with_orders_success,
            saga_concurrent_with_orders_rollback,
            saga_wait_result_returns_the_outcome,
            saga_options_are_stored,
            saga_wait_result_ongoing_is_not_final,
            saga_retry_interval_paces_retries,
            saga_retry_limit,
            saga_timeout_to_fail_compensates,
            saga_request_timeout_retries_a_slow_branch,
            saga_branch_headers_on_every_call,
        );
    };
}

saga_scenarios!(http: crate::transport_suite::protos::Http);
saga_scenarios!(grpc: crate::transport_suite::protos::Grpc);
saga_scenarios!(json_rpc: crate::transport_suite::protos::JsonRpc);
saga_scenarios!(cluster: crate::transport_suite::protos::ClusterHttp);
