//! What every runnable scenario needs: a real DTM server, the bank service, and a way to
//! tell what happened.

use std::time::Duration;

use dtmcli::{DtmClient, QueryResult};

use crate::busi::Busi;
use crate::server::{DtmServer, DtmServerConfig};

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
        println!(
            "== starting a DTM server ({})",
            crate::server::dtm_binary().display()
        );
        let server = DtmServer::start(DtmServerConfig::default())?;
        let dtm = DtmClient::new(server.http_url())?;
        println!("   DTM {} at {}", dtm.version().await?, dtm.server());
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
        Ok(
            crate::wait::until(&self.dtm, gid, Duration::from_secs(30), |q| {
                q.transaction
                    .as_ref()
                    .is_some_and(|t| t.status().is_final())
            })
            .await?,
        )
    }

    /// Waits for the final status and prints the branches called and the outcome.
    pub async fn tell(&self, gid: &str) -> Result<QueryResult, DemoError> {
        let q = self.finish(gid).await?;
        println!("   branches called, in order:");
        for (i, c) in self.busi.calls(gid).iter().enumerate() {
            let (bid, op) = c
                .info
                .as_ref()
                .map(|i| (i.branch_id.clone(), i.op.to_string()))
                .unwrap_or_default();
            println!(
                "     {}. {:<17} branch {bid:<5} op {op:<10} -> {:?}",
                i + 1,
                c.handler,
                c.outcome
            );
        }
        if let Some(t) = &q.transaction {
            println!("   final status reported by DTM: {}", t.status);
            if !t.rollback_reason.is_empty() {
                println!("   rollback reason: {}", t.rollback_reason);
            }
        }
        Ok(q)
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
