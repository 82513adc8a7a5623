//! The HTTP stack the SDK sends with: requests are built with a plain `reqwest::Client` and
//! sent through it, or (feature `middleware`) through the caller's
//! `reqwest_middleware::ClientWithMiddleware` (retries, auth, metrics, their own tracing...).

use crate::error::{Error, Result};

/// A `reqwest::Client`, and optionally the middleware stack requests go through.
#[derive(Debug, Clone)]
pub struct HttpStack {
    client: reqwest::Client,
    #[cfg(feature = "middleware")]
    middleware: Option<reqwest_middleware::ClientWithMiddleware>,
}

impl HttpStack {
    /// Sends with `client`.
    pub fn new(client: reqwest::Client) -> Self {
        HttpStack {
            client,
            #[cfg(feature = "middleware")]
            middleware: None,
        }
    }

    /// Sends through `middleware`. Its own inner `reqwest::Client` connects, so build that
    /// one with [`crate::limits::http_client`] to keep the SDK's connect timeout and pool
    /// bounds; every request still carries the SDK's timeout, and answers are still read
    /// with its cap.
    #[cfg(feature = "middleware")]
    pub fn with_middleware(mut self, middleware: reqwest_middleware::ClientWithMiddleware) -> Self {
        self.middleware = Some(middleware);
        self
    }

    /// The client requests are built with.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `req` (built with [`HttpStack::client`]) to `url` (for errors only).
    pub async fn send(&self, url: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        #[cfg(feature = "middleware")]
        if let Some(m) = &self.middleware {
            let req = req.build().map_err(|e| Error::transport(url, e))?;
            return m.execute(req).await.map_err(|e| match e {
                reqwest_middleware::Error::Reqwest(e) => Error::transport(url, e),
                reqwest_middleware::Error::Middleware(e) => Error::other(format!(
                    "HTTP middleware failed calling {}: {}",
                    crate::redact::redact_url(url),
                    crate::redact::redact_urls_in(&format!("{e:#}"))
                )),
            });
        }
        req.send().await.map_err(|e| Error::transport(url, e))
    }
}
