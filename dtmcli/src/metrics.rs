//! Metrics (feature `metrics`): counters and latencies of what the SDK does, reported as
//! `tracing` events (target `dtm::metrics`) in the shape `tracing-opentelemetry`'s
//! `MetricsLayer` turns into OpenTelemetry instruments. The SDK keeps no meter and no
//! global state: add the layer, with your `MeterProvider` (OTLP, Prometheus...), to your
//! subscriber, and the instruments below appear; without the feature nothing is emitted.
//!
//! ```no_run
//! # #[cfg(feature = "opentelemetry")]
//! # fn setup(provider: dtmcli::opentelemetry_sdk::metrics::SdkMeterProvider) {
//! use tracing_subscriber::layer::SubscriberExt;
//! let subscriber = tracing_subscriber::registry()
//!     .with(dtmcli::tracing_opentelemetry::MetricsLayer::new(provider));
//! tracing::subscriber::set_global_default(subscriber).unwrap();
//! # }
//! ```
//!
//! | instrument | kind | attributes | what it counts |
//! |---|---|---|---|
//! | `dtm.transactions` | counter | `dtm.mode` (saga, msg, tcc, xa, workflow), `dtm.protocol`, `dtm.outcome` | global transactions started by this process, by what the caller was told |
//! | `dtm.client.calls` | counter | `dtm.op` (prepare, submit, registerBranch, query...), `dtm.protocol`, `dtm.outcome` | calls to DTM |
//! | `dtm.client.duration.milliseconds` | histogram (ms: the default OpenTelemetry buckets, 5 ms to 10 s) | `dtm.op`, `dtm.protocol`, `dtm.outcome` | their latency |
//! | `dtm.branch.calls` | counter | `dtm.protocol`, `dtm.outcome` | branch calls the SDK makes itself (TCC try, XA action, msg back-check) |
//! | `dtm.barrier.outcomes` | counter | `dtm.barrier.outcome` (executed, duplicate, null_compensation, refused) | guarded calls, by what the barrier decided |
//! | `dtm.cluster.failovers` | counter | `dtm.op` | calls a cluster sent to another server after one could not be reached |
//! | `dtm.cluster.lost_answers` | counter | `dtm.op`, `dtm.resolution` (done, resend, failed, unknown) | calls whose answer was lost, by how DTM's state resolved them |
//! | `dtm.workflow.steps` | counter | `dtm.replayed` (true, false) | workflow steps, replayed from their record or run |
//!
//! `dtm.outcome` is `ok`, or the error's kind: `failure`, `ongoing`, `not_final`,
//! `duplicated`, `error`. Prometheus names them `dtm_transactions_total`,
//! `dtm_client_duration_milliseconds`... (its exporter's conversion).

use std::future::Future;

use crate::error::{Error, Result};

/// The `dtm.outcome` of a result.
pub fn outcome<T>(r: &Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(Error::Failure(_)) => "failure",
        Err(Error::Ongoing(_)) => "ongoing",
        Err(Error::NotFinal { .. }) => "not_final",
        Err(Error::Duplicated) => "duplicated",
        Err(_) => "error",
    }
}

/// Runs `fut`, a global transaction of `mode` over `protocol`, counting it by its outcome.
#[doc(hidden)]
pub async fn transaction<T>(
    mode: &'static str,
    protocol: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let r = fut.await;
    #[cfg(feature = "metrics")]
    tracing::event!(target: "dtm::metrics", tracing::Level::INFO, monotonic_counter.dtm.transactions = 1u64,
        dtm.mode = mode, dtm.protocol = protocol, dtm.outcome = outcome(&r));
    #[cfg(not(feature = "metrics"))]
    let _ = (mode, protocol);
    r
}

/// Runs `fut`, a call `op` to DTM over `protocol`, counting and timing it.
#[doc(hidden)]
pub async fn dtm_call<T>(
    op: &str,
    protocol: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    let r = fut.await;
    #[cfg(feature = "metrics")]
    {
        let (o, ms) = (outcome(&r), started.elapsed().as_secs_f64() * 1000.0);
        tracing::event!(target: "dtm::metrics", tracing::Level::INFO, monotonic_counter.dtm.client.calls = 1u64,
            histogram.dtm.client.duration.milliseconds = ms, dtm.op = op, dtm.protocol = protocol, dtm.outcome = o);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (op, protocol);
    r
}

/// Runs `fut`, a branch call the SDK makes over `protocol`, counting it.
#[doc(hidden)]
pub async fn branch_call<T>(
    protocol: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let r = fut.await;
    #[cfg(feature = "metrics")]
    tracing::event!(target: "dtm::metrics", tracing::Level::INFO, monotonic_counter.dtm.branch.calls = 1u64,
        dtm.protocol = protocol, dtm.outcome = outcome(&r));
    #[cfg(not(feature = "metrics"))]
    let _ = protocol;
    r
}

/// Counts a barrier decision (`executed`, `duplicate`, `null_compensation`, `refused`).
#[doc(hidden)]
pub fn barrier_outcome(decision: &'static str) {
    #[cfg(feature = "metrics")]
    tracing::event!(target: "dtm::metrics", tracing::Level::INFO, monotonic_counter.dtm.barrier.outcomes = 1u64,
        dtm.barrier.outcome = decision);
    #[cfg(not(feature = "metrics"))]
    let _ = decision;
}

/// Counts a cluster's failover of `op` to another server.
#[doc(hidden)]
pub fn cluster_failover(op: &str) {
    #[cfg(feature = "metrics")]
    tracing::event!(target: "dtm::metrics", tracing::Level::INFO, monotonic_counter.dtm.cluster.failovers = 1u64, dtm.op = op);
    #[cfg(not(feature = "metrics"))]
    let _ = op;
}

/// Counts a lost answer of `op`, by how DTM's state resolved it.
#[doc(hidden)]
pub fn cluster_lost_answer(op: &str, resolution: &'static str) {
    #[cfg(feature = "metrics")]
    tracing::event!(target: "dtm::metrics", tracing::Level::INFO, monotonic_counter.dtm.cluster.lost_answers = 1u64,
        dtm.op = op, dtm.resolution = resolution);
    #[cfg(not(feature = "metrics"))]
    let _ = (op, resolution);
}

/// Counts a workflow step, replayed or run.
#[doc(hidden)]
pub fn workflow_step(replayed: bool) {
    #[cfg(feature = "metrics")]
    tracing::event!(target: "dtm::metrics", tracing::Level::INFO, monotonic_counter.dtm.workflow.steps = 1u64,
        dtm.replayed = replayed);
    #[cfg(not(feature = "metrics"))]
    let _ = replayed;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_name_the_error_kind() {
        assert_eq!(outcome(&Ok(())), "ok");
        assert_eq!(outcome::<()>(&Err(Error::failure("x"))), "failure");
        assert_eq!(outcome::<()>(&Err(Error::Duplicated)), "duplicated");
        assert_eq!(outcome::<()>(&Err(Error::other("x"))), "error");
    }
}
