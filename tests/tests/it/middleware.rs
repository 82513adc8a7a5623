//! A caller's reqwest-middleware stack under `DtmClient` (feature `middleware`): every call
//! to DTM and every branch call the SDK makes goes through it, and a middleware's error
//! reaches the caller typed and without credentials.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::*;
use axum::http::Extensions;
use dtmcli::DtmClient;
use reqwest_middleware::{Middleware, Next};

/// Counts the requests it passes on, by path.
#[derive(Clone, Default)]
struct Count(Arc<std::sync::Mutex<Vec<String>>>);

#[async_trait::async_trait]
impl Middleware for Count {
    async fn handle(
        &self,
        req: reqwest::Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let path = req
            .url()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        self.0.lock().unwrap().push(path);
        next.run(req, ext).await
    }
}

/// Refuses every request, naming a URL with credentials in its error.
struct Refuse(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Middleware for Refuse {
    async fn handle(
        &self,
        _req: reqwest::Request,
        _ext: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(reqwest_middleware::Error::middleware(
            std::io::Error::other("proxy http://admin:s3cret@gateway:8080/ refused"),
        ))
    }
}

fn client_with(m: impl Middleware) -> DtmClient {
    let stack = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(m)
        .build();
    DtmClient::builder(env().server.http_url())
        .middleware(stack)
        .build()
        .unwrap()
}

#[tokio::test]
async fn every_call_of_a_tcc_goes_through_the_stack() {
    let count = Count::default();
    let dtm = client_with(count.clone());
    let gid = gid("mw-tcc");
    tcc_transfer(&dtm, &gid).await.unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    let seen = count.0.lock().unwrap().clone();
    assert_eq!(
        seen[..6],
        [
            "prepare",
            "registerBranch",
            "TransOutTry",
            "registerBranch",
            "TransInTry",
            "submit"
        ]
    );
}

#[tokio::test]
async fn a_middleware_error_is_retryable_and_has_no_credentials() {
    let n = Arc::new(AtomicUsize::new(0));
    let dtm = client_with(Refuse(n.clone()));
    let gid = gid("mw-refused");
    let err = dtm
        .saga(&gid)
        .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(30))
        .submit()
        .await
        .unwrap_err();
    // The submit, then the query that asks DTM what it holds (dtmcli::outcome): both
    // refused by the middleware.
    assert_eq!(n.load(Ordering::SeqCst), 2);
    assert_eq!(err.kind(), dtmcli::ErrorKind::Retryable, "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("HTTP middleware failed calling"), "{text}");
    assert!(text.contains("gateway:8080"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    // Nothing reached DTM.
    assert_dtm_holds_nothing(&gid).await;
}
