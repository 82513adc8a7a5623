//! The SDK's metrics (feature `metrics`) scraped by a real Prometheus server (Debian's
//! `prometheus`, which `scripts/start-dbs.sh` installs; `$PROMETHEUS_BIN` names another):
//! the examples' `/metrics` route (`dtm_examples::metrics`) serves what
//! `tracing-opentelemetry`'s `MetricsLayer` recorded, Prometheus scrapes it every second,
//! and its query API returns the count of the sagas this test submitted. Its own binary:
//! it owns the process-wide subscriber.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dtm_examples::metrics::PrometheusMetrics;
use support::*;
use tracing_subscriber::layer::SubscriberExt;

/// The Prometheus server, stopped when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Prometheus on `port`, scraping `target` (`host:port`) every second, its data in
/// `dir`.
fn prometheus(port: u16, target: &str, dir: &std::path::Path) -> Prometheus {
    let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "/usr/bin/prometheus".into());
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: dtm-sdk\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin} (scripts/start-dbs.sh installs it): {e}"));
    Prometheus(child)
}

/// The value of the instant query `q`, once Prometheus has one.
async fn query(http: &reqwest::Client, port: u16, q: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let answer: serde_json::Value = http
        .get(url)
        .query(&[("query", q)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let value = answer["data"]["result"][0]["value"][1].as_str()?;
    value.parse().ok()
}

#[tokio::test]
async fn a_prometheus_server_scrapes_the_sdks_metrics() {
    let metrics = PrometheusMetrics::new().unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::MetricsLayer::new(metrics.provider()));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let app = metrics.router();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Three sagas without branches: DTM finishes each at once.
    let dtm = dtm();
    for i in 0..3 {
        dtm.saga(gid(&format!("prom-{i}"))).submit().await.unwrap();
    }
    let text = metrics.text();
    assert!(text.contains("dtm_transactions_total"), "{text}");

    let dir = std::env::temp_dir().join(gid("prometheus"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = dtm_testkit::free_port().unwrap();
    let _server = prometheus(port, &target, &dir);
    let http = reqwest::Client::new();
    let q = r#"sum(dtm_transactions_total{dtm_mode="saga",dtm_outcome="ok",dtm_protocol="http"})"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        match query(&http, port, q).await {
            Some(v) if v >= 3.0 => break v,
            other => {
                let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                assert!(
                    Instant::now() < deadline,
                    "Prometheus answered {other:?}; its log ends:\n{tail}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(value, 3.0, "three sagas, counted once each");
    // The latency histogram of the submits is there too.
    let submits = r#"sum(dtm_client_duration_milliseconds_count{dtm_op="submit"})"#;
    assert!(query(&http, port, submits).await.unwrap_or(0.0) >= 3.0);
    let _ = std::fs::remove_dir_all(&dir);
}
