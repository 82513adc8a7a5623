//! The SDK's metrics for Prometheus: serves `GET /metrics` on 127.0.0.1:9464 (or `$PORT`)
//! while it submits a saga to the DTM server at `$DTM` (default
//! `http://127.0.0.1:36789/api/dtmsvr`) every 5 seconds (one with no branches, which DTM
//! finishes at once). Point a Prometheus server at it and query `dtm_transactions_total`.
//!
//! ```text
//! cargo run -p dtm-examples --features metrics --bin prometheus_metrics
//! ```

use std::time::Duration;

use dtm_examples::metrics::PrometheusMetrics;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let metrics = PrometheusMetrics::new()?;
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::MetricsLayer::new(metrics.provider()));
    tracing::subscriber::set_global_default(subscriber)?;
    let port = std::env::var("PORT").unwrap_or_else(|_| "9464".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("metrics at http://{}/metrics", listener.local_addr()?);
    let app = metrics.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dtm_url =
        std::env::var("DTM").unwrap_or_else(|_| "http://127.0.0.1:36789/api/dtmsvr".into());
    let dtm = dtmcli::DtmClient::new(dtm_url)?;
    loop {
        let gid = dtm.new_gid().await?;
        if let Err(e) = dtm.saga(&gid).submit().await {
            eprintln!("saga {gid}: {e}");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
