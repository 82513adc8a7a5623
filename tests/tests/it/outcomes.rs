//! What a caller is told about a transaction is what DTM stored (dtmcli::outcome), on every
//! transport: HTTP, gRPC, JSON-RPC and a cluster of two DTM servers on one Redis store.
//!
//! Each scenario runs on each transport: a saga that commits, one that rolls back, one
//! whose branch answers 500 once, one whose branch answers ONGOING twice, a TCC whose
//! confirm answers 500 once, a msg whose branch answers 500 once (all with `wait_result`),
//! a second submit of a saga that committed, a saga under the gid of a msg, and
//! `wait_final` running out of time. DTM
//! v1.19.0 answers FAILURE (or HTTP 500) to the `wait_result` submits of the middle four
//! although it then commits them (dtm-protocol.md fact 19): the caller must be told "not
//! final", never "rolled back", and `wait_final` must then report the commit. Every report
//! is checked against DTM's stored status, when it is made and once the transaction is
//! final.

use std::time::Duration;

use crate::support::*;
use crate::transport_suite::protos::{cluster, cluster_servers};
use dtm_examples::grpc_busi::pb::{BusiReply, ReqGrpc};
use dtmcli::{DtmClient, Error, JsonRpcClient, Result, TransOptions, TransStatus};

/// The transports a scenario runs on.
#[derive(Debug, Clone, Copy)]
enum Via {
    Http,
    Grpc,
    JsonRpc,
    Cluster,
}

/// The bank's body for this transport's branches.
fn body() -> BusiReq {
    BusiReq::new(1)
}

fn grpc_body() -> ReqGrpc {
    ReqGrpc::amount(1)
}

fn json_rpc() -> JsonRpcClient {
    JsonRpcClient::new(env().server.json_rpc_url()).expect("json-rpc client")
}

/// Options of every transaction here: DTM retries a branch after a second.
fn opts(wait_result: bool) -> TransOptions {
    TransOptions::default()
        .wait_result(wait_result)
        .retry_interval(Duration::from_secs(1))
}

impl Via {
    /// A client of the DTM store this transport's transactions live in.
    fn observer(self) -> DtmClient {
        match self {
            Via::Cluster => DtmClient::new(cluster_servers().0.http_url()).expect("client"),
            _ => dtm(),
        }
    }

    fn script(self, gid: &str, handler: &str, outcomes: impl IntoIterator<Item = Outcome>) {
        match self {
            Via::Grpc => grpc_busi().script(gid, handler, outcomes),
            _ => busi().script(gid, handler, outcomes),
        }
    }

    fn count(self, gid: &str, handler: &str) -> usize {
        match self {
            Via::Grpc => grpc_busi().count(gid, handler),
            _ => busi().count(gid, handler),
        }
    }

    fn branch(self, handler: &str) -> String {
        match self {
            Via::Grpc => grpc_url(handler),
            _ => url(handler),
        }
    }

    /// A transfer saga: out of one account, into another.
    async fn saga(self, gid: &str, o: TransOptions) -> Result<()> {
        let (out, out_c) = (self.branch("TransOut"), self.branch("TransOutRevert"));
        let (inn, inn_c) = (self.branch("TransIn"), self.branch("TransInRevert"));
        match self {
            Via::Http => {
                let s = dtm().saga(gid).add(&out, &out_c, &body());
                s.add(&inn, &inn_c, &body()).with_options(o).submit().await
            }
            Via::Grpc => {
                let s = grpc_dtm().saga(gid).add(&out, &out_c, &grpc_body());
                s.add(&inn, &inn_c, &grpc_body())
                    .with_options(o)
                    .submit()
                    .await
            }
            Via::JsonRpc => {
                let s = json_rpc().saga(gid).add(&out, &out_c, &body());
                s.add(&inn, &inn_c, &body()).with_options(o).submit().await
            }
            Via::Cluster => {
                let s = cluster().saga(gid).add(&out, &out_c, &body());
                s.add(&inn, &inn_c, &body()).with_options(o).submit().await
            }
        }
    }

    /// A TCC of one branch, TransIn's try / confirm / cancel.
    async fn tcc(self, gid: &str, o: TransOptions) -> Result<()> {
        let urls = ["TransInTry", "TransInConfirm", "TransInCancel"].map(|h| self.branch(h));
        let [t, c, x] = &urls;
        match self {
            Via::Grpc => {
                let f = |tcc: dtmgrpc::Tcc| async move {
                    let _: BusiReply = tcc.call_branch(&grpc_body(), t, c, x).await?;
                    Ok(())
                };
                grpc_dtm().tcc_global_transaction(gid, o, f).await
            }
            _ => {
                async fn one<T: dtmcli::Transport<Encoding = dtmcli::transport::Json>>(
                    tcc: dtmcli::global::Tcc<T>,
                    [t, c, x]: [&str; 3],
                ) -> Result<()> {
                    tcc.call_branch(&body(), t, c, x).await.map(drop)
                }
                let urls = [t.as_str(), c.as_str(), x.as_str()];
                // The same face on every JSON transport.
                match self {
                    Via::Http => {
                        dtm()
                            .tcc_global_transaction(gid, o, |tcc| one(tcc, urls))
                            .await
                    }
                    Via::JsonRpc => {
                        let c = json_rpc();
                        c.tcc_global_transaction(gid, o, |tcc| one(tcc, urls)).await
                    }
                    _ => {
                        let c = cluster();
                        c.tcc_global_transaction(gid, o, |tcc| one(tcc, urls)).await
                    }
                }
            }
        }
    }

    /// A one-shot msg delivered to TransIn.
    async fn msg(self, gid: &str, o: TransOptions) -> Result<()> {
        let inn = self.branch("TransIn");
        match self {
            Via::Http => {
                dtm()
                    .msg(gid)
                    .add(&inn, &body())
                    .with_options(o)
                    .submit()
                    .await
            }
            Via::Grpc => {
                let m = grpc_dtm().msg(gid).add(&inn, &grpc_body());
                m.with_options(o).submit().await
            }
            Via::JsonRpc => {
                json_rpc()
                    .msg(gid)
                    .add(&inn, &body())
                    .with_options(o)
                    .submit()
                    .await
            }
            Via::Cluster => {
                cluster()
                    .msg(gid)
                    .add(&inn, &body())
                    .with_options(o)
                    .submit()
                    .await
            }
        }
    }

    async fn wait_final(self, gid: &str, timeout: Duration) -> Result<()> {
        match self {
            Via::Http => dtm().wait_final(gid, timeout).await,
            Via::Grpc => grpc_dtm().wait_final(gid, timeout).await,
            Via::JsonRpc => json_rpc().wait_final(gid, timeout).await,
            Via::Cluster => cluster().wait_final(gid, timeout).await,
        }
    }
}

/// DTM's stored status of `gid` now.
async fn stored(via: Via, gid: &str) -> TransStatus {
    via.observer()
        .query(gid)
        .await
        .expect("query")
        .transaction
        .expect("DTM holds the transaction")
        .status()
}

/// Checks a report against DTM's status now and once final, and returns the final status:
/// `Ok` only for `succeed`, `Failure` only for `failed` (now, not later), `NotFinal` for a
/// status that is not final, naming the gid and that status.
async fn check_report(via: Via, gid: &str, report: &Result<()>) -> TransStatus {
    let now = stored(via, gid).await;
    match report {
        Ok(()) => assert!(
            matches!(now, TransStatus::Succeed | TransStatus::Submitted),
            "Ok while DTM holds {gid} {now:?}"
        ),
        Err(Error::Failure(_)) => assert_eq!(now, TransStatus::Failed, "Failure for {gid}"),
        Err(Error::NotFinal {
            gid: g,
            status: Some(s),
            ..
        }) => {
            assert_eq!(g, gid);
            assert!(!s.is_final(), "NotFinal naming a final status: {report:?}");
        }
        Err(e) => panic!("{gid}: no outcome a caller can act on: {e:?}"),
    }
    let end = dtm_testkit::wait::final_status(&via.observer(), gid, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .transaction
        .expect("final")
        .status();
    match report {
        Ok(()) => assert_eq!(end, TransStatus::Succeed, "{gid} reported Ok"),
        Err(Error::Failure(_)) => assert_eq!(end, TransStatus::Failed, "{gid} reported Failure"),
        _ => {}
    }
    end
}

/// The report must be "not final, DTM holds it submitted", and `wait_final` must then
/// report the commit DTM stores.
///
/// A cluster may instead report the commit itself: it takes DTM's HTTP 500 (a TCC whose
/// confirm failed, a msg whose branch failed) for a lost answer, finds the transaction
/// held, and a `wait_result` submit found held waits for the end within the call's
/// deadline (dtmcli::cluster). That `Ok` must be true: DTM holds the transaction
/// `succeed` when it is told.
async fn not_final_then_commits(via: Via, gid: &str, report: Result<()>) {
    if matches!(via, Via::Cluster) && report.is_ok() {
        assert_eq!(stored(via, gid).await, TransStatus::Succeed);
        return;
    }
    assert!(
        matches!(
            &report,
            Err(Error::NotFinal {
                status: Some(TransStatus::Submitted),
                ..
            })
        ),
        "{via:?} {gid}: {report:?}"
    );
    assert!(report.as_ref().unwrap_err().to_string().contains(gid));
    let waited = via.wait_final(gid, Duration::from_secs(60)).await;
    assert!(waited.is_ok(), "{via:?} {gid}: {waited:?}");
    assert_eq!(check_report(via, gid, &waited).await, TransStatus::Succeed);
}

async fn saga_commits(via: Via) {
    let gid = gid("out-ok");
    let report = via.saga(&gid, opts(true)).await;
    assert!(report.is_ok(), "{via:?}: {report:?}");
    assert_eq!(stored(via, &gid).await, TransStatus::Succeed);
    check_report(via, &gid, &report).await;
}

async fn saga_rolls_back(via: Via) {
    let gid = gid("out-rb");
    via.script(&gid, "TransIn", [Outcome::Failure]);
    let report = via.saga(&gid, opts(true)).await;
    match &report {
        Err(Error::Failure(reason)) => assert!(reason.contains("TransIn refused"), "{reason}"),
        other => panic!("{via:?}: {other:?}"),
    }
    assert_eq!(check_report(via, &gid, &report).await, TransStatus::Failed);
    assert_eq!(via.count(&gid, "TransOutRevert"), 1);
}

async fn saga_branch_500_once(via: Via) {
    let gid = gid("out-500");
    via.script(&gid, "TransIn", [Outcome::Error]);
    let report = via.saga(&gid, opts(true)).await;
    not_final_then_commits(via, &gid, report).await;
    assert_eq!(via.count(&gid, "TransIn"), 2);
    assert_eq!(via.count(&gid, "TransInRevert"), 0);
}

async fn saga_ongoing_twice(via: Via) {
    let gid = gid("out-ong");
    via.script(&gid, "TransIn", [Outcome::Ongoing, Outcome::Ongoing]);
    let report = via.saga(&gid, opts(true)).await;
    not_final_then_commits(via, &gid, report).await;
    assert_eq!(via.count(&gid, "TransIn"), 3);
}

async fn tcc_confirm_500_once(via: Via) {
    let gid = gid("out-tcc");
    via.script(&gid, "TransInConfirm", [Outcome::Error]);
    let report = via.tcc(&gid, opts(true)).await;
    not_final_then_commits(via, &gid, report).await;
    assert_eq!(via.count(&gid, "TransInConfirm"), 2);
    assert_eq!(via.count(&gid, "TransInCancel"), 0);
}

async fn msg_branch_500_once(via: Via) {
    let gid = gid("out-msg");
    via.script(&gid, "TransIn", [Outcome::Error]);
    let report = via.msg(&gid, opts(true)).await;
    not_final_then_commits(via, &gid, report).await;
    assert_eq!(via.count(&gid, "TransIn"), 2);
}

async fn second_submit_of_a_committed_saga(via: Via) {
    let gid = gid("out-again");
    via.saga(&gid, opts(true)).await.expect("first submit");
    // DTM answers FAILURE ("current status 'succeed', cannot sumbmit"): the saga committed.
    for wait in [true, false] {
        let again = via.saga(&gid, opts(wait)).await;
        assert!(again.is_ok(), "{via:?} wait_result {wait}: {again:?}");
    }
    assert_eq!(via.count(&gid, "TransIn"), 1);
}

/// DTM identifies a transaction by its gid: a saga submitted under the gid of a msg that
/// committed is refused by DTM (FAILURE), and the caller is told that the gid is another
/// transaction, not that the saga committed (the msg's status) or rolled back.
async fn a_gid_held_as_another_mode(via: Via) {
    let gid = gid("out-other");
    via.msg(&gid, opts(true)).await.expect("the msg");
    let report = via.saga(&gid, opts(true)).await;
    assert!(
        matches!(&report, Err(Error::InvalidInput(m)) if m.contains("\"msg\" transaction")),
        "{via:?}: {report:?}"
    );
    assert_eq!(via.count(&gid, "TransOut"), 0);
}

async fn wait_final_runs_out_of_time(via: Via) {
    let gid = gid("out-slow");
    via.script(&gid, "TransIn", std::iter::repeat_n(Outcome::Ongoing, 6));
    via.saga(&gid, opts(false)).await.expect("accepted");
    let started = std::time::Instant::now();
    let waited = via.wait_final(&gid, Duration::from_secs(2)).await;
    assert!(
        matches!(
            &waited,
            Err(Error::NotFinal {
                status: Some(TransStatus::Submitted),
                ..
            })
        ),
        "{via:?}: {waited:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // It commits after the sixth ONGOING.
    let waited = via.wait_final(&gid, Duration::from_secs(60)).await;
    assert!(waited.is_ok(), "{via:?}: {waited:?}");
}

/// One test per scenario and transport.
macro_rules! on_every_transport {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                use super::*;
                #[tokio::test]
                async fn http() {
                    super::$scenario(Via::Http).await
                }
                #[tokio::test]
                async fn grpc() {
                    super::$scenario(Via::Grpc).await
                }
                #[tokio::test]
                async fn json_rpc() {
                    super::$scenario(Via::JsonRpc).await
                }
                #[tokio::test]
                async fn cluster() {
                    super::$scenario(Via::Cluster).await
                }
            }
        )*
    };
}

on_every_transport!(
    saga_commits,
    saga_rolls_back,
    saga_branch_500_once,
    saga_ongoing_twice,
    tcc_confirm_500_once,
    msg_branch_500_once,
    second_submit_of_a_committed_saga,
    a_gid_held_as_another_mode,
    wait_final_runs_out_of_time,
);

/// A gRPC client without the server's HTTP API cannot read what DTM stored: a FAILURE
/// answer may be a saga DTM retries, so it is reported as not final (without a status),
/// never as a rollback; `wait_final` says what it lacks.
#[tokio::test]
async fn grpc_without_the_http_api_never_claims_an_outcome_it_cannot_read() {
    let blind = dtmgrpc::DtmGrpcClient::new(env().server.grpc_addr()).expect("client");
    let gid = gid("out-blind");
    grpc_busi().script(&gid, "TransIn", [Outcome::Failure]);
    let (out, inn) = (grpc_url("TransOut"), grpc_url("TransIn"));
    let report = blind
        .saga(&gid)
        .add(&out, &grpc_url("TransOutRevert"), &grpc_body())
        .add(&inn, &grpc_url("TransInRevert"), &grpc_body())
        .with_options(opts(true))
        .submit()
        .await;
    assert!(
        matches!(&report, Err(Error::NotFinal { status: None, .. })),
        "{report:?}"
    );
    let waited = blind.wait_final(&gid, Duration::from_secs(5)).await;
    assert!(matches!(waited, Err(Error::InvalidInput(_))), "{waited:?}");
    // What it could not read: the saga rolled back.
    wait_status(&dtm(), &gid, "failed").await;
}
