//! Branch-side helpers over gRPC follow `dtm-dtm` only to a trusted DTM server, against the
//! real DTM server.
//!
//! The transaction is started through `localhost:<port>`: the same server as the bank's
//! `127.0.0.1:<port>`, under another name, which is exactly what a branch cannot tell from
//! an attacker's server. The shared bank trusts only its own name and refuses; a bank that
//! lists `localhost:<port>` follows it.

use crate::support;

use crate::support::*;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_examples::grpc_busi::GrpcBusi;
use dtmcli::{Error, TransOptions, TrustedServers};
use dtmgrpc::DtmGrpcClient;

/// The test DTM server under the name `localhost:<port>`.
fn localhost_target() -> String {
    format!("localhost:{}", env().server.grpc_port())
}

/// A client of the test DTM server that calls itself `localhost:<port>`.
fn localhost_dtm() -> DtmGrpcClient {
    DtmGrpcClient::new(localhost_target()).expect("grpc client")
}

/// A second recording gRPC service whose client (`127.0.0.1:<port>`) also trusts
/// `localhost:<port>`.
fn trusting_busi() -> &'static GrpcBusi {
    static BUSI: std::sync::OnceLock<GrpcBusi> = std::sync::OnceLock::new();
    BUSI.get_or_init(|| {
        let target = env().server.grpc_addr();
        let trusted = TrustedServers::list([localhost_target()]);
        start_on_env(move || async move {
            let client = DtmGrpcClient::builder(target)
                .trusted_servers(trusted)
                .build()
                .expect("grpc client");
            let busi = GrpcBusi::new(client);
            busi.serve(0).await.expect("serve grpc busi");
            busi
        })
    })
}

/// TCC whose second try opens a nested TCC from its metadata.
async fn nested(dtm: &DtmGrpcClient, gid: &str, busi: &GrpcBusi) -> dtmcli::Result<()> {
    let req = ReqGrpc::amount(5);
    let (a, b, c, d, e, f) = (
        busi.url("TransOutTry"),
        busi.url("TransOutConfirm"),
        busi.url("TransOutCancel"),
        busi.url("TransInTccNested"),
        busi.url("TransInConfirm"),
        busi.url("TransInCancel"),
    );
    dtm.tcc_global_transaction(gid, TransOptions::default(), |tcc| async move {
        let _: () = tcc.call_branch(&req, &a, &b, &c).await?;
        let _: () = tcc.call_branch(&req, &d, &e, &f).await?;
        Ok(())
    })
    .await
}

/// Asserts that `err` is a branch's refusal of a DTM it does not trust (InvalidInput →
/// InvalidArgument, retryable for DTM; the transaction then rolls back).
fn assert_untrusted(err: &Error) {
    assert!(
        matches!(err, Error::Grpc { code: 3, message, .. } if message.contains("does not trust")),
        "{err:?}"
    );
}

#[tokio::test]
async fn nested_tcc_naming_an_untrusted_dtm_is_refused() {
    let gid = gid("gbounds-nested-refused");
    let err = nested(&localhost_dtm(), &gid, grpc_busi())
        .await
        .unwrap_err();
    assert_untrusted(&err);
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    assert!(
        q.branches.iter().all(|b| b.branch_id != "0201"),
        "{:?}",
        branch_rows(&q)
    );
    assert_eq!(grpc_busi().count(&gid, "TransInTry"), 0);
    assert_eq!(grpc_busi().count(&gid, "TransOutCancel"), 1);
}

#[tokio::test]
async fn nested_tcc_naming_a_listed_dtm_works() {
    let gid = gid("gbounds-nested-listed");
    let busi = trusting_busi();
    nested(&localhost_dtm(), &gid, busi).await.unwrap();
    let q = wait_status(&support::dtm(), &gid, "succeed").await;
    assert_eq!(branch_ids(&q, "confirm"), ["01", "02", "0201"]);
    let nested_try = busi
        .calls(&gid)
        .into_iter()
        .find(|c| c.handler == "TransInTry")
        .expect("nested try called");
    // The nested TCC talks to the server the request named.
    let info = nested_try.info.expect("trans info");
    assert_eq!(info.dtm.as_deref(), Some(localhost_target().as_str()));
}

#[tokio::test]
async fn xa_registration_naming_an_untrusted_dtm_is_refused() {
    let gid = gid("gbounds-xa-refused");
    let url = grpc_url("TransInXa");
    let err = localhost_dtm()
        .xa_global_transaction(&gid, TransOptions::default(), |xa| async move {
            let _: () = xa.call_branch(&ReqGrpc::amount(1), &url).await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert_untrusted(&err);
    let q = wait_status(&support::dtm(), &gid, "failed").await;
    assert!(q.branches.is_empty(), "{:?}", branch_rows(&q));
}

#[tokio::test]
async fn the_usual_name_is_trusted_by_default() {
    let gid = gid("gbounds-nested-own");
    nested(&grpc_dtm(), &gid, grpc_busi()).await.unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
}
