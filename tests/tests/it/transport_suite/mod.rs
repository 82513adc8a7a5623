//! One scenario suite, generic over the transport: every scenario runs over HTTP, gRPC,
//! JSON-RPC, a cluster of two DTM servers and a transport of the user's own (a wrapper
//! around `DtmClient`, `protos::Noting`) (the [`protos::Proto`] fixtures), against the real
//! DTM server, with the bank of the examples recording every branch call. Workflows run
//! here too (`Workflows::with_transport`), except over JSON-RPC, which DTM does not offer
//! them on. What only one transport has (gRPC's raw codec and stored bytes, HTTP's methods,
//! mixed protocols) is tested in that transport's module.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod protos;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{branch_ids, branch_rows, gid, wait_status, Outcome};
use dtmcli::msg::Msg;
use dtmcli::outcome::wait_final;
use dtmcli::saga::Saga;
use dtmcli::{Encode, TransInfo, Transport};
use dtmcli::{Error, Op, QueryResult, TransOptions, TransStatus, TransType};
use protos::{count, handlers, Proto, Seen, TccStep, IN, IN_NESTED, OUT};

/// A gid for scenario `name` on transport `P`.
fn gid_of<P: Proto>(name: &str) -> String {
    gid(&format!("{}-{name}", P::NAME))
}

/// Waits until DTM stores `status` for `gid`.
async fn until<P: Proto>(gid: &str, status: &str) -> QueryResult {
    wait_status(&P::observer(), gid, status).await
}

/// Waits until DTM stores `failed` for `gid`; returns the reason it stored.
async fn rolled_back<P: Proto>(gid: &str) -> String {
    let q = until::<P>(gid, "failed").await;
    q.transaction.unwrap().rollback_reason
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
        assert!(matches!(c.method.as_deref(), None | Some("POST")), "{c:?}");
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
    // Two ONGOING answers kept the interval at 2 s: about 4 s went by (DTM schedules by
    // whole seconds, so allow for its rounding; a 1 s interval would take about 2 s).
    assert!(
        started.elapsed() >= Duration::from_millis(3000),
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
    let reason = rolled_back::<P>(&gid).await;
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
    let reason = rolled_back::<P>(&gid).await;
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

/// Options that make DTM back-check a prepared message after about one second.
fn fast() -> TransOptions {
    TransOptions::default()
        .timeout_to_fail(Duration::from_secs(1))
        .retry_interval(Duration::from_secs(1))
}

/// A transfer message: TransOut and TransIn.
fn transfer_msg<P: Proto>(gid: &str, req: &P::Req) -> Msg<P::T> {
    Msg::new(P::client(), gid)
        .add(&P::url("TransOut"), req)
        .add(&P::url("TransIn"), req)
}

/// Asserts `c` is DTM delivering a msg action of `branch_id` with `req`.
pub fn assert_delivery<P: Proto>(c: &Seen<P::Req>, branch_id: &str, req: &P::Req) {
    let i = &c.info;
    assert_eq!(
        (i.trans_type, &i.op, i.branch_id.as_str()),
        (TransType::Msg, &Op::Action, branch_id),
        "{c:?}"
    );
    // DTM itself never sends `dtm` or `phase2_url`.
    assert_eq!((&i.dtm, &i.phase2_url), (&None, &None), "{c:?}");
    assert_eq!(c.req.as_ref(), Some(req), "{c:?}");
    assert!(matches!(c.method.as_deref(), None | Some("POST")), "{c:?}");
}

/// Asserts `c` is a back-check: branch 00, op msg, an empty body; made by DTM (no `dtm`)
/// or by the SDK (`dtm` naming the server).
fn assert_back_check<P: Proto>(c: &Seen<P::Req>, by_sdk: bool) {
    let i = &c.info;
    assert_eq!(c.handler, "QueryPrepared", "{c:?}");
    assert_eq!(
        (i.trans_type, &i.op, i.branch_id.as_str()),
        (TransType::Msg, &Op::Msg, "00"),
        "{c:?}"
    );
    let dtm = by_sdk.then(|| P::client().server().to_string());
    assert_eq!(i.dtm, dtm, "{c:?}");
    assert!(c.req.is_none() || c.req == Some(P::Req::default()), "{c:?}");
    assert!(matches!(c.method.as_deref(), None | Some("GET")), "{c:?}");
}

/// A submitted message delivers every branch once, with its payload as DTM stored it.
pub async fn msg_submit_delivers_every_branch_once<P: Proto>() {
    let gid = gid_of::<P>("msg-ok");
    let req = P::req(30);
    transfer_msg::<P>(&gid, &req).submit().await.unwrap();
    let q = until::<P>(&gid, "succeed").await;
    assert_eq!(handlers::<P>(&gid), ["TransOut", "TransIn"]);
    let calls = P::calls(&gid);
    assert_delivery::<P>(&calls[0], "01", &req);
    assert_delivery::<P>(&calls[1], "02", &req);
    let t = q.transaction.clone().unwrap();
    assert_eq!(
        (t.trans_type.as_str(), t.query_prepared.as_str()),
        ("msg", "")
    );
    assert_eq!(branch_rows(&q), ["01/action=succeed", "02/action=succeed"]);
    assert_eq!(q.branches[0].url, P::url("TransOut"));
    let encoded = Encode::encode(&req).unwrap();
    for b in &q.branches {
        assert_eq!(b.bin_data, encoded.as_ref());
    }
}

/// A prepared message never submitted is back-checked by DTM; "committed" delivers it.
pub async fn msg_back_check_success_delivers<P: Proto>() {
    let gid = gid_of::<P>("msg-qp-ok");
    P::script(&gid, "QueryPrepared", vec![Outcome::Success]);
    let req = P::req(11);
    let msg = transfer_msg::<P>(&gid, &req).with_options(fast());
    msg.prepare(&P::url("QueryPrepared")).await.unwrap();
    let q = P::observer().query(&gid).await.unwrap();
    let t = q.transaction.clone().unwrap();
    assert_eq!(t.status, "prepared");
    assert_eq!(t.query_prepared, P::url("QueryPrepared"));
    assert_eq!(
        branch_rows(&q),
        ["01/action=prepared", "02/action=prepared"]
    );
    until::<P>(&gid, "succeed").await;
    assert_eq!(
        handlers::<P>(&gid),
        ["QueryPrepared", "TransOut", "TransIn"]
    );
    let calls = P::calls(&gid);
    assert_back_check::<P>(&calls[0], false);
    assert_delivery::<P>(&calls[1], "01", &req);
    assert_delivery::<P>(&calls[2], "02", &req);
}

/// A back-check answering "not committed" fails the message, which cannot be submitted
/// any more.
pub async fn msg_back_check_failure_fails<P: Proto>() {
    let gid = gid_of::<P>("msg-qp-fail");
    P::script(&gid, "QueryPrepared", vec![Outcome::Failure]);
    let msg = transfer_msg::<P>(&gid, &P::req(1)).with_options(fast());
    msg.prepare(&P::url("QueryPrepared")).await.unwrap();
    let q = until::<P>(&gid, "failed").await;
    assert_eq!(handlers::<P>(&gid), ["QueryPrepared"]);
    assert_back_check::<P>(&P::calls(&gid)[0], false);
    assert_eq!(
        branch_rows(&q),
        ["01/action=prepared", "02/action=prepared"]
    );
    let err = msg.submit().await.unwrap_err();
    assert!(err.is_failure(), "{err}");
}

/// A back-check answering ONGOING is asked again; the branches run after "committed".
pub async fn msg_back_check_ongoing_is_asked_again<P: Proto>() {
    let gid = gid_of::<P>("msg-qp-ongoing");
    P::script(
        &gid,
        "QueryPrepared",
        vec![Outcome::Ongoing, Outcome::Success],
    );
    let msg = transfer_msg::<P>(&gid, &P::req(1)).with_options(fast());
    msg.prepare(&P::url("QueryPrepared")).await.unwrap();
    until::<P>(&gid, "succeed").await;
    assert_eq!(
        handlers::<P>(&gid),
        ["QueryPrepared", "QueryPrepared", "TransOut", "TransIn"]
    );
    for c in &P::calls(&gid)[..2] {
        assert_back_check::<P>(c, false);
    }
}

/// Runs `do_and_submit` with a business closure that records its `TransInfo`, checks the
/// message is prepared while it runs, and returns `result`.
async fn do_and_submit<P: Proto>(
    gid: &str,
    options: TransOptions,
    result: dtmcli::Result<()>,
) -> (dtmcli::Result<()>, TransInfo) {
    let seen = Arc::new(Mutex::new(None));
    let (seen2, gid2) = (seen.clone(), gid.to_string());
    let out = transfer_msg::<P>(gid, &P::req(5))
        .with_options(options)
        .do_and_submit(&P::url("QueryPrepared"), move |info| async move {
            let t = P::observer().query(&gid2).await?.transaction;
            assert_eq!(t.map(|t| t.status).as_deref(), Some("prepared"));
            *seen2.lock().unwrap() = Some(info);
            result
        })
        .await;
    let info = seen.lock().unwrap().take().expect("business closure ran");
    let mut expected = TransInfo::new(gid, TransType::Msg, "00", Op::Msg);
    expected.dtm = Some(P::client().server().to_string());
    assert_eq!(info, expected);
    (out, info)
}

/// The outbox: a local transaction that succeeds submits without a back-check.
pub async fn msg_do_and_submit_ok<P: Proto>() {
    let gid = gid_of::<P>("msg-das-ok");
    // DTM's own retry interval (10 s), not `opts()`'s 1 s: on a cluster, the other server's
    // cron would deliver the branches a second time (at least once, as DTM promises) when
    // the first server's delivery takes over a second on a loaded machine (seen in CI).
    let (out, _) = do_and_submit::<P>(&gid, TransOptions::default(), Ok(())).await;
    out.unwrap();
    until::<P>(&gid, "succeed").await;
    assert_eq!(handlers::<P>(&gid), ["TransOut", "TransIn"]);
}

/// A local transaction that fails aborts the message: no branch, no back-check.
pub async fn msg_do_and_submit_failure_aborts<P: Proto>() {
    let gid = gid_of::<P>("msg-das-fail");
    let (out, _) = do_and_submit::<P>(&gid, opts(), Err(Error::failure("no money"))).await;
    let err = out.unwrap_err();
    assert!(
        matches!(err, Error::Failure(ref m) if m == "no money"),
        "{err}"
    );
    let q = until::<P>(&gid, "failed").await;
    assert_eq!(
        branch_rows(&q),
        ["01/action=prepared", "02/action=prepared"]
    );
    assert!(P::calls(&gid).is_empty(), "{:?}", handlers::<P>(&gid));
}

/// A local transaction with an unknown outcome: the SDK asks the back-check itself (with
/// the branch headers) and submits, aborts, or leaves the message prepared by its answer;
/// the business error is returned in every case.
pub async fn msg_do_and_submit_unknown_outcome_back_checks<P: Proto>() {
    let lost = || Err(Error::other("connection lost"));
    let o = opts().branch_header("test_header", "msg");
    let gid = gid_of::<P>("msg-das-err-ok");
    P::script(&gid, "QueryPrepared", vec![Outcome::Success]);
    let (out, _) = do_and_submit::<P>(&gid, o.clone(), lost()).await;
    assert_eq!(out.unwrap_err().to_string(), "connection lost");
    until::<P>(&gid, "succeed").await;
    assert_eq!(
        handlers::<P>(&gid),
        ["QueryPrepared", "TransOut", "TransIn"]
    );
    let check = &P::calls(&gid)[0];
    assert_back_check::<P>(check, true);
    assert_eq!(
        check.headers.get("test_header").map(String::as_str),
        Some("msg")
    );

    let gid = gid_of::<P>("msg-das-err-fail");
    P::script(&gid, "QueryPrepared", vec![Outcome::Failure]);
    let (out, _) = do_and_submit::<P>(&gid, o.clone(), lost()).await;
    assert!(matches!(out, Err(Error::Other(_))), "{out:?}");
    until::<P>(&gid, "failed").await;
    assert_eq!(handlers::<P>(&gid), ["QueryPrepared"]);
    assert_back_check::<P>(&P::calls(&gid)[0], true);

    // Neither submitted nor aborted: DTM's own back-check (35 s default) decides later.
    let gid = gid_of::<P>("msg-das-err-ongoing");
    P::script(&gid, "QueryPrepared", vec![Outcome::Ongoing]);
    let (out, _) = do_and_submit::<P>(&gid, o, lost()).await;
    assert!(matches!(out, Err(Error::Other(_))), "{out:?}");
    let t = P::observer()
        .query(&gid)
        .await
        .unwrap()
        .transaction
        .unwrap();
    assert_eq!(t.status, "prepared");
    assert_eq!(handlers::<P>(&gid), ["QueryPrepared"]);
    P::observer().force_stop(&gid).await.unwrap();
    until::<P>(&gid, "failed").await;
}

/// Prepare twice, submit, then prepare and submit again after the message was delivered:
/// a submit is told what DTM stored (delivered), a prepare that the gid is taken; nothing
/// is delivered twice.
pub async fn msg_repeated_prepare_then_calls_after_success<P: Proto>() {
    let gid = gid_of::<P>("msg-repeat");
    let msg = transfer_msg::<P>(&gid, &P::req(2));
    msg.prepare(&P::url("QueryPrepared")).await.unwrap();
    msg.prepare(&P::url("QueryPrepared")).await.unwrap();
    let q = P::observer().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, "prepared");
    assert_eq!(q.branches.len(), 2);
    msg.submit().await.unwrap();
    until::<P>(&gid, "succeed").await;
    assert_eq!(handlers::<P>(&gid), ["TransOut", "TransIn"]);
    msg.submit().await.unwrap();
    let err = msg.prepare(&P::url("QueryPrepared")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(
        err.to_string().contains("already finished (succeed)"),
        "{err}"
    );
    assert!(
        err.to_string().contains("cannot prepare"),
        "DTM's refusal: {err}"
    );
    assert_eq!(handlers::<P>(&gid), ["TransOut", "TransIn"]);
}

/// A TCC whose tries succeed: DTM confirms every branch with the registered payload; the
/// SDK's try calls carry the transaction info and DTM's address.
pub async fn tcc_success_confirms_every_branch<P: Proto>() {
    let gid = gid_of::<P>("tcc-ok");
    let req = P::req(30);
    P::tcc(&gid, TransOptions::default(), req.clone(), vec![OUT, IN])
        .await
        .unwrap();
    let q = until::<P>(&gid, "succeed").await;
    let h = handlers::<P>(&gid);
    assert_eq!(&h[..2], ["TransOutTry", "TransInTry"]);
    let mut confirms = h[2..].to_vec();
    confirms.sort();
    assert_eq!(confirms, ["TransInConfirm", "TransOutConfirm"]);
    let calls = P::calls(&gid);
    let try0 = &calls[0].info;
    assert_eq!(
        (&try0.op, try0.branch_id.as_str(), try0.trans_type),
        (&Op::Try, "01", TransType::Tcc)
    );
    assert_eq!(try0.dtm.as_deref(), Some(P::client().server()));
    assert_eq!(calls[1].info.branch_id, "02");
    // DTM's confirm calls get the registered payload and no dtm address.
    for c in &calls[2..] {
        assert_eq!((&c.info.op, c.info.dtm.as_deref()), (&Op::Confirm, None));
        assert_eq!(c.req.as_ref(), Some(&req));
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
    let encoded = Encode::encode(&req).unwrap();
    for b in &q.branches {
        assert_eq!(b.bin_data, encoded.as_ref(), "{}/{}", b.branch_id, b.op);
    }
    assert_eq!(
        count::<P>(&gid, "TransOutCancel") + count::<P>(&gid, "TransInCancel"),
        0
    );
}

/// A refused try rolls the TCC back: every registered branch is cancelled, the failed
/// try's included, a cancel answering ONGOING is retried, nothing is confirmed.
pub async fn tcc_rollback_cancels_every_registered_branch<P: Proto>() {
    let gid = gid_of::<P>("tcc-rb");
    P::script(&gid, "TransOutCancel", vec![Outcome::Ongoing]);
    let err = P::tcc(&gid, opts(), P::refused(30, false), vec![OUT, IN])
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    let reason = rolled_back::<P>(&gid).await;
    assert!(reason.contains("TransInTry refused"), "{reason}");
    assert_eq!(count::<P>(&gid, "TransInCancel"), 1);
    assert_eq!(count::<P>(&gid, "TransOutCancel"), 2);
    assert_eq!(
        count::<P>(&gid, "TransOutConfirm") + count::<P>(&gid, "TransInConfirm"),
        0
    );
}

/// A try that opens a nested TCC registers its sub-branch (`0201`) from the incoming
/// request, with DTM's address, and DTM confirms all three.
pub async fn tcc_nested_registers_sub_branches<P: Proto>() {
    let gid = gid_of::<P>("tcc-nested");
    P::tcc(
        &gid,
        TransOptions::default(),
        P::req(7),
        vec![OUT, IN_NESTED],
    )
    .await
    .unwrap();
    let q = until::<P>(&gid, "succeed").await;
    assert_eq!(branch_ids(&q, "confirm"), ["01", "02", "0201"]);
    let calls = P::calls(&gid);
    let nested = calls
        .iter()
        .find(|c| c.handler == "TransInTry")
        .expect("nested try");
    assert_eq!(nested.info.branch_id, "0201");
    assert_eq!(nested.info.dtm.as_deref(), Some(P::client().server()));
    assert_eq!(count::<P>(&gid, "TransInConfirm"), 2);
    assert_eq!(count::<P>(&gid, "TransOutConfirm"), 1);
}

/// A nested try that fails cancels the sub-branch with the others.
pub async fn tcc_nested_failure_cancels_the_sub_branch_too<P: Proto>() {
    let gid = gid_of::<P>("tcc-nested-rb");
    P::script(&gid, "TransInTry", vec![Outcome::Failure]);
    let err = P::tcc(
        &gid,
        TransOptions::default(),
        P::req(7),
        vec![OUT, IN_NESTED],
    )
    .await
    .unwrap_err();
    assert!(err.is_failure(), "{err}");
    let q = until::<P>(&gid, "failed").await;
    let cancelled: Vec<&str> = q
        .branches
        .iter()
        .filter(|b| b.op == "cancel" && b.status == "succeed")
        .map(|b| b.branch_id.as_str())
        .collect();
    assert_eq!(cancelled, ["01", "02", "0201"]);
    assert_eq!(count::<P>(&gid, "TransInCancel"), 2);
}

/// DTM times the TCC out between two branches: the second registration is refused (the
/// transaction is no longer prepared) and the first branch is cancelled.
pub async fn tcc_timeout_between_two_branches_rolls_back<P: Proto>() {
    let gid = gid_of::<P>("tcc-timeout");
    // A 30 s branch timeout: on a loaded machine DTM must not cut a slow cancel and call it
    // again, which the count below would see.
    let o = opts()
        .timeout_to_fail(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(30));
    let err = P::tcc(&gid, o, P::req(1), vec![OUT, TccStep::UntilNotPrepared, IN])
        .await
        .unwrap_err();
    // DTM's refusal names the status the registration needs.
    assert!(err.is_failure(), "{err}");
    assert!(err.to_string().contains("status: prepared"), "{err}");
    let reason = rolled_back::<P>(&gid).await;
    assert!(reason.contains("Timeout after"), "{reason}");
    assert_eq!(count::<P>(&gid, "TransInTry"), 0);
    assert_eq!(count::<P>(&gid, "TransOutCancel"), 1);
}

/// An error of the body aborts the TCC with its text as DTM's reason.
pub async fn tcc_body_error_aborts_with_its_text_as_reason<P: Proto>() {
    let gid = gid_of::<P>("tcc-body-err");
    let steps = vec![OUT, TccStep::Fail("stock check said no")];
    let err = P::tcc(&gid, TransOptions::default(), P::req(1), steps)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "stock check said no");
    let reason = rolled_back::<P>(&gid).await;
    assert_eq!(reason, "stock check said no");
    assert_eq!(count::<P>(&gid, "TransOutCancel"), 1);
}

/// Branch headers reach the SDK's try and DTM's confirm.
pub async fn tcc_branch_headers_reach_try_and_confirm<P: Proto>() {
    let gid = gid_of::<P>("tcc-headers");
    let o = TransOptions::default().branch_header("test_header", "tcc");
    P::tcc(&gid, o, P::req(1), vec![OUT]).await.unwrap();
    until::<P>(&gid, "succeed").await;
    let calls = P::calls(&gid);
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

/// XA options: DTM retries after a second; a header every call must carry.
fn xa_opts() -> TransOptions {
    opts().branch_header("x-test-header", "xa")
}

/// Asserts `c` is the SDK's phase-1 call of the XA branch `handler`.
fn assert_xa_action<P: Proto>(c: &Seen<P::Req>, branch_id: &str, handler: &str, req: &P::Req) {
    let i = &c.info;
    assert_eq!(c.handler, handler, "{c:?}");
    assert_eq!(
        (&i.op, i.trans_type, i.branch_id.as_str()),
        (&Op::Action, TransType::Xa, branch_id),
        "{c:?}"
    );
    assert_eq!(i.dtm.as_deref(), Some(P::client().server()), "{c:?}");
    assert_eq!(
        i.phase2_url.as_deref(),
        Some(P::url(handler).as_str()),
        "{c:?}"
    );
    assert_eq!(c.req.as_ref(), Some(req), "{c:?}");
    assert!(matches!(c.method.as_deref(), None | Some("POST")), "{c:?}");
    assert_eq!(
        c.headers.get("x-test-header").map(String::as_str),
        Some("xa"),
        "{c:?}"
    );
}

/// Asserts `c` is DTM's phase-2 call (`commit` or `rollback`) of XA branch `branch_id`: an
/// empty body, neither `dtm` nor `phase2_url`, the branch headers.
fn assert_xa_phase2<P: Proto>(c: &Seen<P::Req>, branch_id: &str, op: Op) {
    let i = &c.info;
    assert_eq!(
        (&i.op, i.trans_type, i.branch_id.as_str()),
        (&op, TransType::Xa, branch_id),
        "{c:?}"
    );
    assert_eq!((&i.dtm, &i.phase2_url), (&None, &None), "{c:?}");
    assert!(c.req.is_none() || c.req == Some(P::Req::default()), "{c:?}");
    assert!(matches!(c.method.as_deref(), None | Some("POST")), "{c:?}");
    assert_eq!(
        c.headers.get("x-test-header").map(String::as_str),
        Some("xa"),
        "{c:?}"
    );
}

/// An XA transfer with `req`: the debit's XA branch, then the credit's.
async fn xa_transfer<P: Proto>(gid: &str, req: &P::Req) -> dtmcli::Result<()> {
    P::xa(gid, xa_opts(), req.clone(), vec!["TransOutXa", "TransInXa"]).await
}

/// An XA whose branches prepare: DTM commits them one by one in registration order.
pub async fn xa_success_commits_every_branch<P: Proto>() {
    let gid = gid_of::<P>("xa-ok");
    let req = P::req(30);
    xa_transfer::<P>(&gid, &req).await.unwrap();
    let q = until::<P>(&gid, "succeed").await;
    assert_eq!(
        handlers::<P>(&gid),
        ["TransOutXa", "TransInXa", "TransOutXa", "TransInXa"]
    );
    let calls = P::calls(&gid);
    assert_xa_action::<P>(&calls[0], "01", "TransOutXa", &req);
    assert_xa_action::<P>(&calls[1], "02", "TransInXa", &req);
    assert_xa_phase2::<P>(&calls[2], "01", Op::Commit);
    assert_xa_phase2::<P>(&calls[3], "02", Op::Commit);
    let t = q.transaction.clone().unwrap();
    assert_eq!(
        (t.trans_type.as_str(), t.rollback_reason.as_str()),
        ("xa", "")
    );
    assert_eq!(
        branch_rows(&q),
        [
            "01/rollback=prepared",
            "01/commit=succeed",
            "02/rollback=prepared",
            "02/commit=succeed"
        ]
    );
    let urls: Vec<&str> = q.branches.iter().map(|b| b.url.as_str()).collect();
    let (o, i) = (P::url("TransOutXa"), P::url("TransInXa"));
    assert_eq!(urls, [o.as_str(), o.as_str(), i.as_str(), i.as_str()]);
    assert!(q.branches.iter().all(|b| b.bin_data.is_empty()));
}

/// A branch that refuses rolls back the ones registered before it (it answered before
/// registering itself), with its reason.
pub async fn xa_failing_branch_rolls_back_the_registered_ones<P: Proto>() {
    let gid = gid_of::<P>("xa-rb");
    P::script(&gid, "TransInXa", vec![Outcome::Failure]);
    let req = P::req(30);
    let err = xa_transfer::<P>(&gid, &req).await.unwrap_err();
    assert!(err.is_failure(), "{err}");
    assert!(err.to_string().contains("TransInXa refused"), "{err}");
    let q = until::<P>(&gid, "failed").await;
    assert_eq!(
        branch_rows(&q),
        ["01/rollback=succeed", "01/commit=prepared"]
    );
    assert_eq!(
        handlers::<P>(&gid),
        ["TransOutXa", "TransInXa", "TransOutXa"]
    );
    let calls = P::calls(&gid);
    assert_xa_action::<P>(&calls[0], "01", "TransOutXa", &req);
    assert_xa_action::<P>(&calls[1], "02", "TransInXa", &req);
    assert_xa_phase2::<P>(&calls[2], "01", Op::Rollback);
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("TransInXa refused"), "{reason}");
}

/// A commit answering ONGOING is retried until it succeeds.
pub async fn xa_ongoing_commit_is_retried<P: Proto>() {
    let gid = gid_of::<P>("xa-commit-ongoing");
    // 1st call: the action; 2nd: the commit, which answers ONGOING once.
    P::script(&gid, "TransOutXa", vec![Outcome::Success, Outcome::Ongoing]);
    P::xa(&gid, xa_opts(), P::req(1), vec!["TransOutXa"])
        .await
        .unwrap();
    until::<P>(&gid, "succeed").await;
    assert_eq!(count::<P>(&gid, "TransOutXa"), 3);
}

// ---------------------------------------------------------------------------------------
// Workflows: the same function on every transport (local steps, so that only the
// transport differs): prepare, records, submit, DTM's resume callback, the budget.

/// Runs of each step, per gid: `(gid, step)` → count.
fn wf_runs() -> &'static Mutex<std::collections::HashMap<(String, String), usize>> {
    static RUNS: std::sync::OnceLock<Mutex<std::collections::HashMap<(String, String), usize>>> =
        std::sync::OnceLock::new();
    RUNS.get_or_init(Default::default)
}

fn wf_count(gid: &str, step: &str) -> usize {
    let runs = wf_runs().lock().unwrap();
    runs.get(&(gid.to_string(), step.to_string()))
        .copied()
        .unwrap_or(0)
}

fn wf_ran(gid: &str, step: &str) -> usize {
    let mut runs = wf_runs().lock().unwrap();
    let n = runs.entry((gid.to_string(), step.to_string())).or_default();
    *n += 1;
    *n
}

/// The suite's workflows: `suite-wf` (and `suite-wf-deadline`, the same with a 2 s
/// deadline): 01 a local step with a rollback, 02 a local step that, by its input, succeeds,
/// errors once (retryable), fails (FAILURE) or errors every time; its result is `done`.
fn register_suite_workflows(wfs: &dtm_workflow::Workflows) {
    for (name, deadline) in [
        ("suite-wf", None),
        ("suite-wf-deadline", Some(Duration::from_secs(2))),
    ] {
        let options = dtm_workflow::WfOptions {
            trans: opts(),
            deadline,
            ..Default::default()
        };
        let registered = wfs.register_with_options(name, options, |wf, input| async move {
            let gid = wf.gid().to_string();
            wf.new_branch()?;
            let g = gid.clone();
            wf.on_rollback(move |_| async move {
                wf_ran(&g, "rollback-01");
                Ok(())
            })?;
            let g = gid.clone();
            wf.do_(|_| async move {
                wf_ran(&g, "01");
                Ok(b"one".to_vec())
            })
            .await?;
            wf.new_branch()?;
            wf.do_(|_| async move {
                let n = wf_ran(&gid, "02");
                match (input.as_slice(), n) {
                    (b"error-once", 1) | (b"error-always", _) => Err(Error::other("02 is down")),
                    (b"failure", _) => Err(Error::failure("02 refused")),
                    _ => Ok(b"two".to_vec()),
                }
            })
            .await?;
            Ok(b"done".to_vec())
        });
        registered.unwrap();
    }
}

/// The suite's workflow registry on transport `P` (one per transport, started once).
fn suite_workflows<P: Proto>() -> dtm_workflow::Workflows {
    static BY_PROTO: std::sync::OnceLock<
        Mutex<std::collections::HashMap<&'static str, dtm_workflow::Workflows>>,
    > = std::sync::OnceLock::new();
    let mut all = BY_PROTO.get_or_init(Default::default).lock().unwrap();
    all.entry(P::NAME)
        .or_insert_with(|| crate::support::start_on_env(|| P::workflows(register_suite_workflows)))
        .clone()
}

async fn wf_execute<P: Proto>(name: &str, gid: &str, input: &[u8]) -> dtmcli::Result<Vec<u8>> {
    let (wfs, name, gid, input) = (
        suite_workflows::<P>(),
        name.to_string(),
        gid.to_string(),
        input.to_vec(),
    );
    crate::support::on_env(async move { wfs.execute(&name, &gid, &input).await }).await
}

/// A workflow whose second step errors once ends unfinished; DTM calls it back (on this
/// transport's callback), the first step is replayed from its record and the second runs
/// again; DTM stores the result. Executed again, it returns that result and runs nothing.
pub async fn wf_resumed_by_dtm_replays_its_records<P: Proto>() {
    let gid = gid_of::<P>("wf-resume");
    let first = wf_execute::<P>("suite-wf", &gid, b"error-once").await;
    assert!(!first.unwrap_err().is_failure());
    let q = until::<P>(&gid, "succeed").await;
    assert_eq!((wf_count(&gid, "01"), wf_count(&gid, "02")), (1, 2));
    assert_eq!(q.transaction.as_ref().unwrap().protocol, P::PROTOCOL);
    let (copy, steps): (Vec<String>, Vec<String>) = branch_rows(&q)
        .into_iter()
        .partition(|r| r.starts_with("00/"));
    assert_eq!(steps, ["01/action=succeed", "02/action=succeed"]);
    // DTM's gRPC API never returns a workflow's result: the SDK keeps a copy.
    let want: &[&str] = if P::PROTOCOL == "grpc" {
        &["00/result=succeed"]
    } else {
        &[]
    };
    assert_eq!(copy, want);
    let again = crate::support::settled(|| wf_execute::<P>("suite-wf", &gid, b"error-once")).await;
    assert_eq!(again.unwrap(), b"done");
    assert_eq!((wf_count(&gid, "01"), wf_count(&gid, "02")), (1, 2));
    assert_eq!(wf_count(&gid, "rollback-01"), 0);
}

/// A step that fails for good rolls the workflow back: the first branch's rollback runs
/// once, the failed branch has none; DTM stores the reason.
pub async fn wf_failure_rolls_back<P: Proto>() {
    let gid = gid_of::<P>("wf-rb");
    let err = wf_execute::<P>("suite-wf", &gid, b"failure")
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err}");
    let reason = rolled_back::<P>(&gid).await;
    assert!(reason.contains("02 refused"), "{reason}");
    assert_eq!(wf_count(&gid, "rollback-01"), 1);
}

/// A workflow past its deadline rolls back (the creation time read from this transport's
/// answer, or through its query).
pub async fn wf_deadline_rolls_back<P: Proto>() {
    let gid = gid_of::<P>("wf-deadline");
    let first = wf_execute::<P>("suite-wf-deadline", &gid, b"error-always").await;
    assert!(!first.unwrap_err().is_failure());
    let reason = rolled_back::<P>(&gid).await;
    assert!(reason.contains("deadline of 2s"), "{reason}");
    assert_eq!(wf_count(&gid, "rollback-01"), 1);
    assert_eq!(wf_count(&gid, "01"), 1);
}

/// Every scenario, on one transport.
macro_rules! every_scenario {
    ($proto:ident: $ty:ty $(, $extra:ident)*) => {
        instantiate!($proto: $ty =>
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
            msg_submit_delivers_every_branch_once,
            msg_back_check_success_delivers,
            msg_back_check_failure_fails,
            msg_back_check_ongoing_is_asked_again,
            msg_do_and_submit_ok,
            msg_do_and_submit_failure_aborts,
            msg_do_and_submit_unknown_outcome_back_checks,
            msg_repeated_prepare_then_calls_after_success,
            tcc_success_confirms_every_branch,
            tcc_rollback_cancels_every_registered_branch,
            tcc_timeout_between_two_branches_rolls_back,
            tcc_body_error_aborts_with_its_text_as_reason,
            tcc_branch_headers_reach_try_and_confirm,
            wf_resumed_by_dtm_replays_its_records,
            wf_failure_rolls_back,
            wf_deadline_rolls_back,
            $($extra),*
        );
    };
}

every_scenario!(http: crate::transport_suite::protos::Http,
    tcc_nested_registers_sub_branches, tcc_nested_failure_cancels_the_sub_branch_too,
    xa_success_commits_every_branch, xa_failing_branch_rolls_back_the_registered_ones,
    xa_ongoing_commit_is_retried);
every_scenario!(grpc: crate::transport_suite::protos::Grpc,
    tcc_nested_registers_sub_branches, tcc_nested_failure_cancels_the_sub_branch_too,
    xa_success_commits_every_branch, xa_failing_branch_rolls_back_the_registered_ones,
    xa_ongoing_commit_is_retried);
// Not the nested TCC, nor XA: the bank's nested try and XA branches reach DTM over HTTP and
// trust only the bank's own server, so they refuse a transaction of DTM's JSON-RPC API
// (and of the cluster's servers) by design. XA over those is in `jsonrpc` and `cluster`,
// with branches that trust their servers.
// Not workflows either: DTM has no prepareWorkflow over JSON-RPC.
instantiate!(json_rpc: crate::transport_suite::protos::JsonRpc =>
    saga_success, saga_rollback, saga_ongoing_then_success,
    saga_erroring_compensation_is_retried, saga_empty_branch_url_counts_as_success,
    saga_concurrent_with_orders_success, saga_concurrent_with_orders_rollback,
    saga_wait_result_returns_the_outcome, saga_options_are_stored,
    saga_wait_result_ongoing_is_not_final, saga_retry_interval_paces_retries,
    saga_retry_limit, saga_timeout_to_fail_compensates,
    saga_request_timeout_retries_a_slow_branch, saga_branch_headers_on_every_call,
    msg_submit_delivers_every_branch_once, msg_back_check_success_delivers,
    msg_back_check_failure_fails, msg_back_check_ongoing_is_asked_again,
    msg_do_and_submit_ok, msg_do_and_submit_failure_aborts,
    msg_do_and_submit_unknown_outcome_back_checks,
    msg_repeated_prepare_then_calls_after_success, tcc_success_confirms_every_branch,
    tcc_rollback_cancels_every_registered_branch,
    tcc_timeout_between_two_branches_rolls_back,
    tcc_body_error_aborts_with_its_text_as_reason,
    tcc_branch_headers_reach_try_and_confirm);
every_scenario!(cluster: crate::transport_suite::protos::ClusterHttp);
// A transport of the user's own (a wrapper noting each DTM call): one scenario of each
// mode, and every workflow scenario (`Workflows::with_transport`).
instantiate!(custom: crate::transport_suite::protos::Custom =>
    saga_success, msg_submit_delivers_every_branch_once, tcc_success_confirms_every_branch,
    wf_resumed_by_dtm_replays_its_records, wf_failure_rolls_back, wf_deadline_rolls_back,
    custom_transport_carries_every_call);

/// Every call of a workflow on a transport of the user's own goes through it.
pub async fn custom_transport_carries_every_call<P: Proto>() {
    let gid = gid_of::<P>("wf-noted");
    assert_eq!(
        wf_execute::<P>("suite-wf", &gid, b"ok").await.unwrap(),
        b"done"
    );
    assert_eq!(
        protos::noted_for(&gid),
        [
            "prepareWorkflow",
            "registerBranch",
            "registerBranch",
            "submit"
        ]
    );
}
