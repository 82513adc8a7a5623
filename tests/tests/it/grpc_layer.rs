//! A caller's tower layer over every channel of `DtmGrpcClient`
//! (`DtmGrpcClientBuilder::layer`): the calls to DTM and the gRPC branch calls the SDK makes
//! all go through it.

use crate::support;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::support::*;

/// Records the gRPC method of every call it passes on.
#[derive(Clone, Default)]
struct Record(Arc<Mutex<Vec<String>>>);

impl<S> tower_layer::Layer<S> for Record {
    type Service = Recorded<S>;
    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded {
            inner,
            seen: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Recorded<S> {
    inner: S,
    seen: Arc<Mutex<Vec<String>>>,
}

impl<S, B> tower_service::Service<axum::http::Request<B>> for Recorded<S>
where
    S: tower_service::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> S::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        self.seen.lock().unwrap().push(method);
        self.inner.call(req)
    }
}

#[tokio::test]
async fn every_call_of_a_tcc_goes_through_the_layer() {
    let record = Record::default();
    let dtm = dtmgrpc::DtmGrpcClient::builder(env().server.grpc_addr())
        .layer(record.clone())
        .build()
        .unwrap();
    let gid = gid("glayer-tcc");
    grpc_tcc_transfer(&dtm, &gid).await.unwrap();
    wait_status(&support::dtm(), &gid, "succeed").await;
    let seen = record.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "Prepare",
            "RegisterBranch",
            "TransOutTry",
            "RegisterBranch",
            "TransInTry",
            "Submit"
        ]
    );
}
