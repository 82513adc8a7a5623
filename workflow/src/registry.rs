//! The workflow registry: register workflow functions, execute and resume them.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};

#[cfg(feature = "http")]
use dtmcli::DtmClient;
use dtmcli::{Error, Result};

use crate::history::History;
use crate::lifecycle::{Execution, WfFn};
use crate::options::WfOptions;
use crate::record::RecordFormat;
use crate::transport::Transport;
use crate::wf::Wf;

#[derive(Clone)]
struct Registered {
    f: WfFn,
    options: WfOptions,
}

struct Inner {
    transport: Transport,
    callback: String,
    format: RecordFormat,
    fns: RwLock<HashMap<String, Registered>>,
    /// Gids executing in this process right now.
    running: Mutex<HashSet<String>>,
}

/// Marks a gid as executing until dropped.
struct Running<'a> {
    set: &'a Mutex<HashSet<String>>,
    gid: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.gid);
    }
}

/// A registry of workflows and the DTM server they run on. Cheap to clone; build one at
/// start-up, register every workflow, serve its callback endpoint, then
/// [`Workflows::execute`].
///
/// ```no_run
/// use dtm_workflow::{Wf, Workflows};
/// use dtmcli::DtmClient;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let dtm = DtmClient::new("http://localhost:36789/api/dtmsvr")?;
/// // DTM calls this URL back to resume a workflow this process did not finish.
/// let wfs = Workflows::http(dtm, "http://localhost:8081/api/workflow/resume");
/// wfs.register("order", |wf: Wf, input: Vec<u8>| async move {
///     wf.new_branch()?;
///     // A recorded local step: after a crash its result is replayed, not recomputed.
///     let order_id = wf.do_(|_info| async move { Ok(b"order-42".to_vec()) }).await?;
///     let _ = (order_id, input);
///     Ok(())
/// })?;
/// // Merge into the service's axum router and serve it (feature `axum`).
/// let _callback: axum::Router = wfs.callback_router("/api/workflow/resume");
///
/// match wfs.execute("order", "order-42-workflow", br#"{"item":7}"#).await {
///     Ok(_result) => println!("done"),
///     Err(dtmcli::Error::Failure(reason)) => println!("rolled back: {reason}"),
///     Err(e) => println!("unfinished, DTM resumes it: {e}"),
/// }
/// # Ok(()) }
/// ```
///
/// Over gRPC, `Workflows::grpc` (feature `grpc`) takes a `dtmgrpc::DtmGrpcClient` and
/// this service's gRPC address, where `Workflows::grpc_service` is served.
#[derive(Clone)]
pub struct Workflows(Arc<Inner>);

impl std::fmt::Debug for Workflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflows")
            .field("callback", &dtmcli::redact::redact_url(&self.0.callback))
            .field("record_format", &self.0.format)
            .finish_non_exhaustive()
    }
}

impl Workflows {
    /// Workflows over HTTP: `dtm` is the DTM server, `callback_url` the URL of this
    /// service's callback route (see [`Workflows::callback_router`]) that DTM calls to
    /// resume an unfinished workflow (feature `http`).
    #[cfg(feature = "http")]
    pub fn http(dtm: DtmClient, callback_url: impl Into<String>) -> Self {
        Self::on(dtm, callback_url.into())
    }

    /// [`Workflows::http`] on a cluster of DTM servers ([`dtmcli::cluster::Cluster`]):
    /// prepares, step records and submits fail over between the servers, and a lost answer
    /// is resolved from what DTM stores. Any server of the cluster may call the callback.
    #[cfg(feature = "http")]
    pub fn http_cluster(
        dtm: dtmcli::cluster::Cluster<DtmClient>,
        callback_url: impl Into<String>,
    ) -> Self {
        Self::on(dtm, callback_url.into())
    }

    /// Workflows over any transport to DTM: a [`dtmcli::cluster::Cluster`] of any members,
    /// or a transport of your own ([`dtmcli::Transport`]). `callback` is what DTM calls to
    /// resume a workflow, as the transport's protocol writes it: the URL of
    /// [`Workflows::callback_router`] for `http`, `<host:port>/workflow.Workflow/Execute`
    /// of [`Workflows::grpc_service`] for `grpc`. The transport must read DTM's `query`
    /// ([`dtmcli::Transport::query`]): resume callbacks are checked against it.
    ///
    /// [`Workflows::http`], [`Workflows::grpc`] and the cluster constructors are this, with
    /// the callback written for you.
    pub fn with_transport<T: dtmcli::Transport>(dtm: T, callback: impl Into<String>) -> Self {
        Self::on(dtm, callback.into())
    }

    /// A registry with no DTM, to replay recorded histories ([`Workflows::replay`]) in a
    /// test: register the same workflows as the service does, then replay. Executing a
    /// workflow on it fails at once (nothing to send it to).
    pub fn offline() -> Self {
        Self::on_transport(Transport::offline(), String::new())
    }

    fn on<T: dtmcli::Transport>(dtm: T, callback: String) -> Self {
        Self::on_transport(Transport::new(dtm), callback)
    }

    fn on_transport(transport: Transport, callback: String) -> Self {
        Workflows(Arc::new(Inner {
            transport,
            callback,
            format: RecordFormat::default(),
            fns: RwLock::new(HashMap::new()),
            running: Mutex::new(HashSet::new()),
        }))
    }

    /// Workflows over gRPC: `dtm` is the DTM gRPC client, `service_addr` this service's
    /// gRPC address (`host:port`) where [`Workflows::grpc_service`] is served; DTM calls
    /// `<service_addr>/workflow.Workflow/Execute` to resume a workflow.
    ///
    /// Give `dtm` the server's HTTP API (`dtmgrpc::DtmGrpcClientBuilder::http_api`): DTM
    /// answers `query` over HTTP only, and a resume callback is checked
    /// against what DTM holds ([`Workflows::execute_callback`]). Without it, every resume
    /// callback is refused (and a warning is logged here): its body cannot be trusted.
    #[cfg(feature = "grpc")]
    pub fn grpc(dtm: dtmgrpc::DtmGrpcClient, service_addr: &str) -> Self {
        if dtm.http_api().is_none() {
            tracing::warn!(
                "Workflows::grpc without the DTM server's HTTP API (DtmGrpcClientBuilder::http_api): resume callbacks cannot be checked against DTM and will be refused"
            );
        }
        Self::on(dtm, grpc_callback(service_addr))
    }

    /// [`Workflows::grpc`] on a cluster of DTM servers, each paired with its HTTP API, which
    /// resolves lost answers (build it with `dtmgrpc::DtmGrpcClient::cluster`, dtmgrpc
    /// feature `http`; this needs features `grpc` and `http`).
    #[cfg(all(feature = "grpc", feature = "http"))]
    pub fn grpc_cluster(
        dtm: dtmcli::cluster::Cluster<dtmcli::cluster::WithQuery<dtmgrpc::DtmGrpcClient>>,
        service_addr: &str,
    ) -> Self {
        Self::on(dtm, grpc_callback(service_addr))
    }

    /// Stores every step record of this registry's workflows in `format` (default:
    /// [`RecordFormat::Checked`]); [`RecordFormat::Go`] lets Go services of the same names
    /// resume this service's workflows and this service resume theirs, without the
    /// per-step non-determinism check (see [`RecordFormat`]). Set it when building the
    /// registry: called on a registry that was already cloned, it returns a separate
    /// registry with the same workflows, and the clones keep their format.
    pub fn with_record_format(self, format: RecordFormat) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                inner.format = format;
                Workflows(Arc::new(inner))
            }
            Err(shared) => {
                let fns = shared.fns.read().unwrap_or_else(|p| p.into_inner()).clone();
                Workflows(Arc::new(Inner {
                    transport: shared.transport.clone(),
                    callback: shared.callback.clone(),
                    format,
                    fns: RwLock::new(fns),
                    running: Mutex::new(HashSet::new()),
                }))
            }
        }
    }

    /// The format of this registry's step records.
    pub fn record_format(&self) -> RecordFormat {
        self.0.format
    }

    fn insert(&self, name: &str, f: WfFn, options: WfOptions) -> Result<()> {
        let mut fns = self.0.fns.write().unwrap_or_else(|p| p.into_inner());
        if fns.contains_key(name) {
            return Err(Error::invalid(format!(
                "workflow '{name}' is already registered"
            )));
        }
        fns.insert(name.to_string(), Registered { f, options });
        Ok(())
    }

    /// Registers a workflow without a result.
    pub fn register<F, Fut>(&self, name: &str, f: F) -> Result<()>
    where
        F: Fn(Wf, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.register_with_options(name, WfOptions::default(), move |wf, input| {
            let fut = f(wf, input);
            async move { fut.await.map(|()| Vec::new()) }
        })
    }

    /// Registers a workflow returning result bytes (stored by DTM and returned again when
    /// the finished workflow is executed again).
    pub fn register_with_result<F, Fut>(&self, name: &str, f: F) -> Result<()>
    where
        F: Fn(Wf, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>>> + Send + 'static,
    {
        self.register_with_options(name, WfOptions::default(), f)
    }

    /// Registers a workflow with options.
    pub fn register_with_options<F, Fut>(&self, name: &str, options: WfOptions, f: F) -> Result<()>
    where
        F: Fn(Wf, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>>> + Send + 'static,
    {
        let f: WfFn = Arc::new(move |wf, input| Box::pin(f(wf, input)));
        self.insert(name, f, options)
    }

    /// Runs workflow `name` as global transaction `gid` with `input`, or resumes it if DTM
    /// already knows `gid` (recorded steps are replayed), and returns its result.
    ///
    /// The result is what DTM stored (see `dtmcli::outcome`):
    ///
    /// - `Ok(result)`: DTM holds it `succeed` (now or earlier).
    /// - [`Error::Failure`]: DTM holds it `failed`, rolled back (now or earlier).
    /// - [`Error::NotFinal`], [`Error::Ongoing`] or another error: it is unfinished (a step
    ///   answered ONGOING or a retryable error, a commit or rollback callback failed, or DTM
    ///   was not reached): DTM holds it prepared, or nothing, and calls the callback URL to
    ///   resume it.
    /// - [`Error::InvalidInput`] for a gid DTM or a barrier cannot store exactly
    ///   ([`dtmcli::identity::check_gid`]), nothing sent; or, over HTTP, for a gid DTM
    ///   already holds as another workflow or with another input, nothing run.
    pub async fn execute(&self, name: &str, gid: &str, input: &[u8]) -> Result<Vec<u8>> {
        use tracing::Instrument;
        let span = dtmcli::trace::transaction_span("workflow", gid, self.0.transport.protocol());
        let run = async {
            tracing::debug!(name, "workflow");
            self.execute_inner(name, gid, input).await
        };
        dtmcli::metrics::transaction("workflow", self.0.transport.protocol(), run)
            .instrument(span)
            .await
    }

    async fn execute_inner(&self, name: &str, gid: &str, input: &[u8]) -> Result<Vec<u8>> {
        // Refused before anything is sent or recorded (see dtmcli::identity).
        dtmcli::identity::check_gid(gid)?;
        let _running = self.mark_running(name, gid)?;
        let (f, options) = self.registered(name)?;
        let execution = Execution {
            transport: &self.0.transport,
            callback: &self.0.callback,
            format: self.0.format,
            name,
            gid,
            options: &options,
        };
        execution.execute(&f, input).await
    }

    /// DTM calls an unfinished workflow back every retry interval, also while its first run
    /// is still going (a slow step): running it twice at once would run live steps twice.
    /// The second caller gets ONGOING and DTM asks again later.
    fn mark_running(&self, name: &str, gid: &str) -> Result<Running<'_>> {
        let mut set = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(gid.to_string()) {
            return Err(Error::Ongoing(format!(
                "workflow {name} gid {gid} is already running in this process"
            )));
        }
        Ok(Running {
            set: &self.0.running,
            gid: gid.to_string(),
        })
    }

    /// The function and options registered as `name`.
    fn registered(&self, name: &str) -> Result<(WfFn, WfOptions)> {
        let fns = self.0.fns.read().unwrap_or_else(|p| p.into_inner());
        let r = fns.get(name).ok_or_else(|| {
            Error::invalid(format!(
                "workflow '{name}' not registered. please register at startup"
            ))
        })?;
        Ok((r.f.clone(), r.options.clone()))
    }

    /// What DTM holds of workflow `gid`, as a [`History`] to save and replay ([`History::save`],
    /// [`Workflows::replay`]).
    pub async fn export_history(&self, gid: &str) -> Result<History> {
        dtmcli::identity::check_gid(gid)?;
        History::from_query(&self.0.transport.query(gid).await?)
    }

    /// Replays `history` with the workflow registered under its name, sending nothing to
    /// DTM and calling no service: every step (actions, then the commit or rollback
    /// callbacks as the recorded run ended) must replay from its record. `Ok` when the code
    /// follows the recorded run as far as the history goes (for a history that was still
    /// unfinished, up to its last record); [`Error::NonDeterministic`] (or
    /// [`Error::RecordType`]) naming the step where it does not, or saying how the
    /// outcome or the result differ.
    ///
    /// The replay runs with the registered options: a deadline counts from the history's
    /// `create_time`, so an action without a record is refused as the recorded run's was.
    pub async fn replay(&self, history: &History) -> Result<()> {
        let (f, options) = self.registered(&history.name)?;
        let offline = Transport::offline();
        let execution = Execution {
            transport: &offline,
            callback: "",
            format: self.0.format,
            name: &history.name,
            gid: &history.gid,
            options: &options,
        };
        execution.replay(&f, history).await
    }

    /// Handles DTM's resume callback: the query names the workflow (`op`) and the gid, the
    /// body is the input DTM stored. DTM does not authenticate the call, so the workflow is
    /// resumed only as DTM holds it: a gid DTM does not hold, a transaction that is not a
    /// workflow of that name, or a body other than the stored input is refused with
    /// [`Error::InvalidInput`] (answered 400), and nothing is run or created. The check
    /// reads DTM's state (`query`, one more call per resume); over gRPC that needs the
    /// server's HTTP API (`dtmgrpc::DtmGrpcClientBuilder::http_api`).
    pub async fn execute_callback(&self, query: &str, body: &[u8]) -> Result<Vec<u8>> {
        let info = dtmcli::TransInfo::from_query(query)?;
        self.resume(&info, body).await
    }

    /// Resumes the workflow a callback names (`info`: its gid and, as `op`, its name) with
    /// the input DTM stored, after checking `body` against it ([`crate::resume`]).
    pub(crate) async fn resume(&self, info: &dtmcli::TransInfo, body: &[u8]) -> Result<Vec<u8>> {
        use tracing::Instrument;
        let (name, gid) = (info.op.as_str(), info.gid.as_str());
        if info.trans_type != dtmcli::TransType::Workflow {
            return Err(Error::invalid(format!(
                "resume callback for {gid:?} names trans_type {}, not workflow: refused",
                info.trans_type.as_str()
            )));
        }
        dtmcli::identity::check_gid(gid)?;
        let span = dtmcli::trace::transaction_span("workflow", gid, self.0.transport.protocol());
        async {
            let input = crate::resume::stored_input(&self.0.transport, name, gid, body).await?;
            self.execute_inner(name, gid, &input).await
        }
        .instrument(span)
        .await
    }

    /// An axum router serving DTM's callback at `path` (GET and POST), to merge into the
    /// service's router. `path` must match the callback URL given to
    /// [`Workflows::http`].
    #[cfg(feature = "axum")]
    pub fn callback_router(&self, path: &str) -> axum::Router {
        use axum::extract::{RawQuery, State};
        use axum::response::IntoResponse;

        async fn callback(
            State(wfs): State<Workflows>,
            RawQuery(q): RawQuery,
            body: axum::body::Bytes,
        ) -> axum::response::Response {
            match wfs
                .execute_callback(q.as_deref().unwrap_or(""), &body)
                .await
            {
                Ok(_) => axum::Json(serde_json::json!({"dtm_result": "SUCCESS"})).into_response(),
                Err(e) => e.into_response(),
            }
        }
        axum::Router::new()
            .route(path, axum::routing::get(callback).post(callback))
            .with_state(self.clone())
            // DTM's resume call carries the trace context of the run that started the
            // workflow (its branch headers): the resumed run joins that trace.
            .layer(dtmcli::trace::BranchSpanLayer::http())
    }
}

/// Where DTM resumes a gRPC workflow served at `service_addr`.
#[cfg(feature = "grpc")]
fn grpc_callback(service_addr: &str) -> String {
    format!(
        "{}/workflow.Workflow/Execute",
        service_addr.trim_end_matches('/')
    )
}
