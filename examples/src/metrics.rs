//! The SDK's metrics in Prometheus format (feature `metrics`): `dtmcli::metrics` events go
//! through `tracing-opentelemetry`'s `MetricsLayer` into an OpenTelemetry meter provider
//! whose reader is the Prometheus exporter, and `GET /metrics` serves its registry in the
//! text exposition format, for a Prometheus server to scrape.

use axum::routing::get;
use axum::Router;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, Registry, TextEncoder};

/// A meter provider exporting to a Prometheus registry, and the route that serves it.
#[derive(Clone)]
pub struct PrometheusMetrics {
    registry: Registry,
    provider: SdkMeterProvider,
}

impl std::fmt::Debug for PrometheusMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusMetrics").finish_non_exhaustive()
    }
}

impl PrometheusMetrics {
    /// A fresh registry and the meter provider that fills it.
    pub fn new() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let registry = Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        Ok(PrometheusMetrics { registry, provider })
    }

    /// The meter provider, for `tracing_opentelemetry::MetricsLayer::new`.
    pub fn provider(&self) -> SdkMeterProvider {
        self.provider.clone()
    }

    /// The metrics now, in the text exposition format.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a metric the encoder refuses is left out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `GET /metrics`.
    pub fn router(&self) -> Router {
        let this = self.clone();
        Router::new().route(
            "/metrics",
            get(move || {
                let this = this.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], this.text()) }
            }),
        )
    }
}
