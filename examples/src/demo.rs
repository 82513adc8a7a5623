//! What every runnable scenario needs: a real DTM server, the bank service, and a way to
//! tell what happened.

use std::time::Duration;

use dtmcli::{DtmClient, QueryResult};

use crate::busi::Busi;
use dtm_testkit::{DtmServer, DtmServerConfig};

/// A running scenario environment. Dropping it stops the DTM server.
#[derive(Debug)]
pub struct Demo {
    /// The DTM server (a child process).
    pub server: DtmServer,
    /// A client of it.
    pub dtm: DtmClient,
    /// The bank service.
    pub busi: Busi,
    /// The bank service's base URL.
    pub base: String,
}

/// Error type of the scenarios.
pub type DemoError = Box<dyn std::error::Error + Send + Sync>;

impl Demo {
    /// Starts DTM (from `$DTM_BIN` or `.tools/bin/dtm`) and the bank service, with logs at
    /// `warn` unless `RUST_LOG` says otherwise; the SDK's warnings about retryable branch
    /// answers and re-run local transactions are left out, since the scenarios provoke
    /// them on purpose.
    pub async fn start() -> Result<Demo, DemoError> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,dtm_barrier=error,dtmcli::branch=error".into()),
            )
            .try_init();
        let server = DtmServer::start_async(DtmServerConfig::default()).await?;
        let dtm = DtmClient::new(server.http_url())?;
        println!(
            "== DTM {} at {} ({})",
            dtm.version().await?,
            dtm.server(),
            server.binary().display()
        );
        let busi = Busi::new(dtm.clone());
        let base = busi.serve(0).await?;
        println!("   bank service at {base}\n");
        Ok(Demo {
            server,
            dtm,
            busi,
            base,
        })
    }

    /// The URL of a bank handler.
    pub fn url(&self, handler: &str) -> String {
        format!("{}/{handler}", self.base)
    }

    /// Waits (up to 30 s) until DTM reports a final status for `gid`.
    pub async fn finish(&self, gid: &str) -> Result<QueryResult, DemoError> {
        Ok(dtm_testkit::wait::final_status(&self.dtm, gid, Duration::from_secs(30)).await?)
    }
}

/// Serves `router` in the background on a free port of 127.0.0.1; returns `http://<addr>`.
pub async fn serve(router: axum::Router) -> Result<String, DemoError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("example service stopped: {e}");
        }
    });
    Ok(base)
}
