//! One global transaction is one trace (feature `opentelemetry`), through the real DTM: the
//! initiator's `dtm.transaction` span is the parent of every branch execution DTM triggers
//! (the W3C context travels in the transaction's branch headers, stored by DTM), over HTTP
//! and gRPC, for saga, msg, TCC and workflows (a resumed workflow included). Spans are
//! collected by an in-memory exporter; the branch services are the examples' services,
//! wrapped in `BranchSpanLayer` / `dtmgrpc::branch_span_layer()`.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dtm_examples::busi::Outcome;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_workflow::{Wf, WorkflowMiddleware, Workflows};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::*;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// The exporters of this test binary: every span, and the SDK's metrics (feature
/// `metrics`, through tracing-opentelemetry's `MetricsLayer`).
struct Exporters {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    meters: SdkMeterProvider,
}

fn exporters() -> &'static Exporters {
    static EXPORTERS: OnceLock<Exporters> = OnceLock::new();
    EXPORTERS.get_or_init(|| {
        let spans = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let metrics = InMemoryMetricExporter::default();
        let meters = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("dtm-tests")))
            .with(tracing_opentelemetry::MetricsLayer::new(meters.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        // Kept for the process: dropping the provider would shut the exporter down.
        std::mem::forget(provider);
        Exporters {
            spans,
            metrics,
            meters,
        }
    })
}

/// The exporter every span of this test binary goes to.
fn exporter() -> &'static InMemorySpanExporter {
    &exporters().spans
}

fn attr(s: &SpanData, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The finished spans of `gid` (by `dtm.gid`), polled until `done` holds for them.
async fn spans_until(gid: &str, done: impl Fn(&[SpanData]) -> bool) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<SpanData> = exporter()
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| attr(s, "dtm.gid").as_deref() == Some(gid))
            .collect();
        if done(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans of {gid} incomplete: {:?}",
            spans.iter().map(describe).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn describe(s: &SpanData) -> String {
    format!(
        "{} [{}] path={:?} op={:?} parent={}",
        s.name,
        s.span_context.span_id(),
        attr(s, "url.path"),
        attr(s, "dtm.op"),
        s.parent_span_id
    )
}

/// Incoming branch executions (`dtm.branch`, server) whose path ends with `handler`.
fn branches<'a>(spans: &'a [SpanData], handler: &str) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.name.starts_with("dtm branch /"))
        .filter(|s| attr(s, "url.path").is_some_and(|p| p.ends_with(handler)))
        .collect()
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Runs `f` inside a fresh root span; returns its trace id and span id.
async fn in_root<F: std::future::Future<Output = ()>>(name: &str, f: F) -> (TraceId, SpanId) {
    exporter();
    let root = tracing::info_span!("test root", test = name);
    let cx = root.context();
    let ids = (
        cx.span().span_context().trace_id(),
        cx.span().span_context().span_id(),
    );
    assert_ne!(ids.0, TraceId::INVALID, "no OpenTelemetry context");
    f.instrument(root).await;
    ids
}

/// The one `dtm.transaction` span, a child of the root in the root's trace.
fn transaction<'a>(
    spans: &'a [SpanData],
    trans_type: &str,
    root: (TraceId, SpanId),
) -> &'a SpanData {
    let t = named(spans, &format!("dtm {trans_type}"));
    assert_eq!(
        t.len(),
        1,
        "{:?}",
        spans.iter().map(describe).collect::<Vec<_>>()
    );
    assert_eq!(t[0].span_context.trace_id(), root.0);
    assert_eq!(t[0].parent_span_id, root.1);
    t[0]
}

/// Every one of `children` is in the root's trace, a child of `parent`, as seen by a server.
fn children_of(children: &[&SpanData], parent: &SpanData, root: (TraceId, SpanId)) {
    assert!(!children.is_empty());
    for c in children {
        assert_eq!(c.span_context.trace_id(), root.0, "{}", describe(c));
        assert_eq!(
            c.parent_span_id,
            parent.span_context.span_id(),
            "{} is not a child of {}",
            describe(c),
            describe(parent)
        );
        assert!(
            c.parent_span_is_remote,
            "{} came from another process",
            describe(c)
        );
        assert_eq!(c.span_kind, opentelemetry::trace::SpanKind::Server);
    }
}

/// `saga` with TransOut and TransIn of 30 on the HTTP busi service, and their compensations.
fn transfer<T>(saga: dtmcli::Saga<T>) -> dtmcli::Saga<T>
where
    T: dtmcli::Transport,
    BusiReq: dtmcli::transport::Encode<T::Encoding>,
{
    saga.add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(30))
        .add(&url("TransIn"), &url("TransInRevert"), &BusiReq::new(30))
}

/// A saga of TransOut and TransIn, submitted by `submit` (given a fresh gid of `prefix`)
/// inside a root span named `name`, is one trace: its one `dtm saga` span is a child of the
/// root, and both branch executions DTM triggers are its children. The spans of the gid and
/// that transaction span.
async fn saga_is_one_trace<F: std::future::Future<Output = ()>>(
    prefix: &str,
    name: &str,
    submit: impl FnOnce(String) -> F,
) -> (Vec<SpanData>, SpanData) {
    // First: this binary's subscriber must be the global one before anything (the shared
    // environment's start-up) installs another; the tests run concurrently.
    exporter();
    let gid = gid(prefix);
    let root = in_root(name, submit(gid.clone())).await;
    let spans = spans_until(&gid, |s| {
        branches(s, "TransOut").len() == 1 && branches(s, "TransIn").len() == 1
    })
    .await;
    let t = transaction(&spans, "saga", root).clone();
    children_of(&branches(&spans, "TransOut"), &t, root);
    children_of(&branches(&spans, "TransIn"), &t, root);
    (spans, t)
}

#[tokio::test]
async fn saga_over_http_is_one_trace() {
    let (spans, t) = saga_is_one_trace("otel-saga", "saga http", |g| async move {
        transfer(dtm().saga(&g)).submit().await.unwrap();
    })
    .await;
    let submit = named(&spans, "dtm submit");
    assert_eq!(submit[0].parent_span_id, t.span_context.span_id());
    assert_eq!(attr(submit[0], "rpc.system").as_deref(), Some("http"));
    let b = branches(&spans, "TransIn")[0];
    assert_eq!(attr(b, "dtm.trans_type").as_deref(), Some("saga"));
    assert_eq!(attr(b, "dtm.branch_id").as_deref(), Some("02"));
    assert_eq!(attr(b, "dtm.op").as_deref(), Some("action"));
}

#[tokio::test]
async fn saga_over_json_rpc_is_one_trace() {
    let (spans, t) = saga_is_one_trace("otel-jrpc-saga", "saga json-rpc", |g| async move {
        let rpc = dtmcli::JsonRpcClient::new(
            env()
                .server
                .http_url()
                .replace("/api/dtmsvr", "/api/json-rpc"),
        )
        .unwrap();
        transfer(rpc.saga(&g)).submit().await.unwrap();
    })
    .await;
    assert_eq!(attr(&t, "rpc.system").as_deref(), Some("jsonrpc"));
    let submit = named(&spans, "dtm submit");
    assert_eq!(attr(submit[0], "rpc.system").as_deref(), Some("jsonrpc"));
}

#[tokio::test]
async fn saga_and_msg_over_grpc_are_one_trace_each() {
    let (_, t) = saga_is_one_trace("otel-grpc-saga", "saga grpc", |g| async move {
        grpc_transfer(grpc_dtm().saga(&g), 30)
            .submit()
            .await
            .unwrap();
    })
    .await;
    assert_eq!(attr(&t, "rpc.system").as_deref(), Some("grpc"));

    let gid = support::gid("otel-grpc-msg");
    let g = gid.clone();
    let root = in_root("msg grpc", async move {
        grpc_dtm()
            .msg(&g)
            .add(&grpc_url("TransIn"), &ReqGrpc::amount(30))
            .submit()
            .await
            .unwrap();
    })
    .await;
    let spans = spans_until(&gid, |s| branches(s, "TransIn").len() == 1).await;
    let t = transaction(&spans, "msg", root);
    children_of(&branches(&spans, "TransIn"), t, root);
}

#[tokio::test]
async fn tcc_tries_and_confirms_are_one_trace() {
    // First: this binary's subscriber must be the global one before anything (the shared
    // environment's start-up) installs another; the tests run concurrently.
    exporter();
    let gid = gid("otel-tcc");
    let g = gid.clone();
    let root = in_root("tcc http", async move {
        tcc_transfer(&dtm(), &g).await.unwrap();
    })
    .await;
    let spans = spans_until(&gid, |s| branches(s, "Confirm").len() == 2).await;
    let t = transaction(&spans, "tcc", root);
    // A try is called by this SDK: its server span is a child of the client call's span.
    let calls = named(&spans, "dtm branch try");
    assert_eq!(calls.len(), 2);
    for side in ["TransOutTry", "TransInTry"] {
        let server = branches(&spans, side);
        assert_eq!(server.len(), 1);
        let parent = calls
            .iter()
            .find(|c| c.span_context.span_id() == server[0].parent_span_id)
            .unwrap_or_else(|| panic!("{side}: parent is no try call"));
        assert_eq!(parent.parent_span_id, t.span_context.span_id());
        assert_eq!(server[0].span_context.trace_id(), root.0);
    }
    // A confirm is called by DTM: a child of the transaction, through the branch headers.
    children_of(&branches(&spans, "Confirm"), t, root);
}

#[tokio::test]
async fn workflow_steps_and_its_resumption_are_one_trace() {
    // First: this binary's subscriber must be the global one before anything (the shared
    // environment's start-up) installs another; the tests run concurrently.
    exporter();
    let gid = gid("otel-wf");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/wf/resume", listener.local_addr().unwrap());
    let wfs = Workflows::http(dtm(), callback);
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(WorkflowMiddleware)
        .build();
    let opts = dtm_tests::wf::retrying_every_second();
    wfs.register_with_options("otel", opts, move |wf: Wf, _input| {
        let http = http.clone();
        async move {
            for handler in ["TransOut", "TransIn"] {
                let body = br#"{"amount":30}"#.to_vec();
                dtm_tests::wf::post_step(&wf, &http, &url(handler), None, body).await?;
            }
            Ok(Vec::new())
        }
    })
    .unwrap();
    let app = wfs.callback_router("/wf/resume");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // TransIn answers ONGOING once: the first run stops there, DTM resumes the workflow.
    busi().script(&gid, "TransIn", [Outcome::Ongoing]);
    let (w, g) = (wfs.clone(), gid.clone());
    let root = in_root("workflow http", async move {
        let err = w.execute("otel", &g, b"").await.unwrap_err();
        assert!(err.is_ongoing(), "{err}");
    })
    .await;
    wait_status(&dtm(), &gid, "succeed").await;
    let spans = spans_until(&gid, |s| {
        branches(s, "TransIn").len() == 2 && named(s, "dtm workflow").len() == 2
    })
    .await;
    // Everything but this test's own status polls (`dtm query`) is in the root's trace.
    for s in spans.iter().filter(|s| s.name != "dtm query") {
        assert_eq!(s.span_context.trace_id(), root.0, "{}", describe(s));
    }
    let runs = named(&spans, "dtm workflow");
    let first = runs
        .iter()
        .find(|r| r.parent_span_id == root.1)
        .expect("the first run is a child of the root");
    // The resumption: DTM's callback (a dtm.branch span, child of the first run through
    // the branch headers) runs the workflow again.
    let callback = branches(&spans, "/wf/resume");
    children_of(&callback, first, root);
    let resumed = runs
        .iter()
        .find(|r| r.parent_span_id == callback[0].span_context.span_id())
        .expect("the resumed run is a child of DTM's callback");
    // Each step call's server span is a child of its step span.
    let steps = named(&spans, "dtm workflow step http");
    for b in branches(&spans, "TransIn") {
        let step = steps
            .iter()
            .find(|s| s.span_context.span_id() == b.parent_span_id)
            .unwrap_or_else(|| panic!("{} has no step parent", describe(b)));
        assert!(
            step.parent_span_id == first.span_context.span_id()
                || step.parent_span_id == resumed.span_context.span_id()
        );
    }
    server.abort();
}

/// `BranchSpanLayer` on a whole router: an ordinary request (no `gid` in its query) runs
/// without a `dtm.branch` span; a branch call to the same route gets one.
#[tokio::test]
async fn an_ordinary_route_gets_no_branch_span() {
    let _ = exporter();
    let gid = gid("otel-plain");
    let plain = format!("{}/Plain?x=1", env().base);
    let branch = format!(
        "{}/Plain?gid={gid}&trans_type=saga&branch_id=01&op=action",
        env().base
    );
    on_env(async move {
        let http = reqwest::Client::new();
        for url in [plain, branch] {
            http.post(url).body("{}").send().await.unwrap();
        }
    })
    .await;
    let spans = spans_until(&gid, |s| !branches(s, "Plain").is_empty()).await;
    assert_eq!(branches(&spans, "Plain").len(), 1);
    // The plain request came first and finished first: had it a span, it would be here.
    let all = exporter().get_finished_spans().unwrap();
    let plain: Vec<String> = all
        .iter()
        .filter(|s| attr(s, "url.path").is_some_and(|p| p.ends_with("/Plain")))
        .filter(|s| attr(s, "dtm.gid").is_none())
        .map(describe)
        .collect();
    assert!(plain.is_empty(), "{plain:?}");
}

/// The sum of counter `name`'s points whose attributes include every one of `with`, as
/// exported now.
fn counter(name: &str, with: &[(&str, &str)]) -> u64 {
    let e = exporters();
    e.meters.force_flush().unwrap();
    let mut total = 0;
    let all = e.metrics.get_finished_metrics().unwrap();
    // Each flush exports the cumulative sums: the last export holds them all.
    let Some(last) = all.last() else { return 0 };
    for scope in last.scope_metrics() {
        for m in scope.metrics().filter(|m| m.name() == name) {
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                for p in sum.data_points() {
                    let has = |(k, v): &(&str, &str)| {
                        p.attributes()
                            .any(|kv| kv.key.as_str() == *k && kv.value.as_str() == *v)
                    };
                    if with.iter().all(has) {
                        total += p.value();
                    }
                }
            }
        }
    }
    total
}

/// Feature `metrics`: a saga on the barrier-guarded bank and a TCC count as transactions by
/// mode, protocol and outcome, with their calls to DTM (and their latency), the TCC's tries
/// as branch calls, and the bank's barrier decisions.
#[tokio::test]
async fn metrics_count_transactions_calls_and_barrier_decisions() {
    let _ = exporters();
    let sagas = |o: &'static str| {
        counter(
            "dtm.transactions",
            &[
                ("dtm.mode", "saga"),
                ("dtm.protocol", "http"),
                ("dtm.outcome", o),
            ],
        )
    };
    let (sagas_before, tccs_before) = (
        sagas("ok"),
        counter("dtm.transactions", &[("dtm.mode", "tcc")]),
    );
    let submits_before = counter(
        "dtm.client.calls",
        &[("dtm.op", "submit"), ("dtm.outcome", "ok")],
    );
    let tries_before = counter("dtm.branch.calls", &[("dtm.protocol", "http")]);
    let executed_before = counter(
        "dtm.barrier.outcomes",
        &[("dtm.barrier.outcome", "executed")],
    );

    // A saga whose two branches run through the bank's barrier.
    let bank = format!("{}/mysql", bank_env().base);
    let from = bank_account(dtm_examples::bank::Db::Mysql, 100).await;
    let to = bank_account(dtm_examples::bank::Db::Mysql, 0).await;
    let (saga_gid, tcc_gid) = (gid("otel-metrics"), gid("otel-metrics-tcc"));
    let g = saga_gid.clone();
    on_env(async move {
        let body = dtm_examples::bank::BankReq::transfer(5, from, to, false);
        let url = |h: &str| format!("{bank}/{h}");
        dtm()
            .saga(&g)
            .add(&url("TransOut"), &url("TransOutCompensate"), &body)
            .add(&url("TransIn"), &url("TransInCompensate"), &body)
            .submit()
            .await
            .unwrap();
    })
    .await;
    wait_status(&dtm(), &saga_gid, "succeed").await;
    // A TCC whose try the SDK calls itself.
    on_env(async move {
        dtm()
            .tcc_global_transaction(
                &tcc_gid,
                dtmcli::TransOptions::default(),
                |tcc| async move {
                    tcc.call_branch(
                        &serde_json::json!({"amount": 1}),
                        &url("TransOutTry"),
                        &url("TransOutConfirm"),
                        &url("TransOutCancel"),
                    )
                    .await
                    .map(drop)
                },
            )
            .await
            .unwrap();
    })
    .await;

    assert!(sagas("ok") > sagas_before, "dtm.transactions saga/http/ok");
    assert!(counter("dtm.transactions", &[("dtm.mode", "tcc")]) > tccs_before);
    assert!(
        counter(
            "dtm.client.calls",
            &[("dtm.op", "submit"), ("dtm.outcome", "ok")]
        ) >= submits_before + 2
    );
    assert!(counter("dtm.branch.calls", &[("dtm.protocol", "http")]) > tries_before);
    // Both branches of the saga ran their business through the barrier.
    let executed = counter(
        "dtm.barrier.outcomes",
        &[("dtm.barrier.outcome", "executed")],
    );
    assert!(
        executed >= executed_before + 2,
        "{executed_before} -> {executed}"
    );
}
