//! The workflow registry: register workflow functions, execute and resume them.

use std::collections::HashSet;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use dtmcli::{DtmClient, Error, Result, TransOptions, TransRequest, TransStatus, TransType};
use futures_util::future::BoxFuture;

use crate::transport::Transport;
use crate::wf::{Progress, Wf};

/// Where a gRPC workflow keeps a copy of its result.
const RESULT_BRANCH: &str = "00";
const RESULT_OP: &str = "result";

/// The result of a finished workflow: DTM's `result` (HTTP), or the copy kept as a step
/// record (gRPC).
fn stored_result(p: &crate::transport::Prepared) -> Result<Vec<u8>> {
    if p.result.is_empty() {
        if let Some(s) = p
            .steps
            .iter()
            .find(|s| s.branch_id == RESULT_BRANCH && s.op == RESULT_OP)
        {
            return Ok(crate::record::decode(&s.data).payload);
        }
        return Ok(Vec::new());
    }
    base64::engine::general_purpose::STANDARD
        .decode(p.result.as_bytes())
        .map_err(|e| Error::Decode {
            url: "prepareWorkflow".into(),
            reason: format!("result is not base64: {e}"),
            body: p.result.clone(),
        })
}

type WfFn = Arc<dyn Fn(Wf, Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>>> + Send + Sync>;

/// Options of one registered workflow.
#[derive(Debug, Clone, Default)]
pub struct WfOptions {
    /// Transaction options (retry interval of DTM's callbacks, branch headers, ...).
    pub trans: TransOptions,
    /// Also roll back a branch whose own action failed (default: no, as in the Go SDK: the
    /// failed action left nothing to undo).
    pub compensate_error_branch: bool,
}

struct Registered {
    f: WfFn,
    options: WfOptions,
}

struct Inner {
    transport: Transport,
    callback: String,
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
#[derive(Clone)]
pub struct Workflows(Arc<Inner>);

impl std::fmt::Debug for Workflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflows")
            .field("callback", &self.0.callback)
            .finish_non_exhaustive()
    }
}

impl Workflows {
    /// Workflows over HTTP: `dtm` is the DTM server, `callback_url` the URL of this
    /// service's callback route (see [`Workflows::callback_router`]) that DTM calls to
    /// resume an unfinished workflow.
    pub fn http(dtm: DtmClient, callback_url: impl Into<String>) -> Self {
        Workflows(Arc::new(Inner {
            transport: Transport::Http(dtm),
            callback: callback_url.into(),
            fns: RwLock::new(HashMap::new()),
            running: Mutex::new(HashSet::new()),
        }))
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

    /// Workflows over gRPC: `dtm` is the DTM gRPC client, `service_addr` this service's
    /// gRPC address (`host:port`) where [`Workflows::grpc_service`] is served; DTM calls
    /// `<service_addr>/workflow.Workflow/Execute` to resume a workflow.
    #[cfg(feature = "grpc")]
    pub fn grpc(dtm: dtmgrpc::DtmGrpcClient, service_addr: &str) -> Self {
        Workflows(Arc::new(Inner {
            transport: Transport::Grpc(dtm),
            callback: format!(
                "{}/workflow.Workflow/Execute",
                service_addr.trim_end_matches('/')
            ),
            fns: RwLock::new(HashMap::new()),
            running: Mutex::new(HashSet::new()),
        }))
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
    /// - `Ok(result)`: it succeeded (now or earlier).
    /// - [`Error::Failure`]: it failed and was rolled back (now or earlier).
    /// - [`Error::Ongoing`] or another error: it is unfinished; DTM will call the callback
    ///   URL to resume it.
    /// - [`Error::InvalidInput`] for a gid DTM or a barrier cannot store exactly
    ///   ([`dtmcli::identity::check_gid`]); nothing is sent.
    pub async fn execute(&self, name: &str, gid: &str, input: &[u8]) -> Result<Vec<u8>> {
        use tracing::Instrument;
        let span = tracing::info_span!("workflow", gid, name);
        self.execute_inner(name, gid, input).instrument(span).await
    }

    async fn execute_inner(&self, name: &str, gid: &str, input: &[u8]) -> Result<Vec<u8>> {
        // Refused before anything is sent or recorded (see dtmcli::identity).
        dtmcli::identity::check_gid(gid)?;
        // DTM calls an unfinished workflow back every retry interval, also while its first
        // run is still going (a slow step): running it twice at once would run live steps
        // twice. The second caller gets ONGOING and DTM asks again later.
        let _running = {
            let mut set = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
            if !set.insert(gid.to_string()) {
                return Err(Error::Ongoing(format!(
                    "workflow {name} gid {gid} is already running in this process"
                )));
            }
            Running {
                set: &self.0.running,
                gid: gid.to_string(),
            }
        };
        let (f, options) = {
            let fns = self.0.fns.read().unwrap_or_else(|p| p.into_inner());
            let r = fns.get(name).ok_or_else(|| {
                Error::invalid(format!(
                    "workflow '{name}' not registered. please register at startup"
                ))
            })?;
            (r.f.clone(), r.options.clone())
        };
        let mut req = TransRequest::new(gid, TransType::Workflow, &options.trans);
        req.protocol = self.0.transport.protocol().to_string();
        req.query_prepared = self.0.callback.clone();
        let data = if input.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(input))
        };
        req.custom_data = serde_json::json!({ "data": data, "name": name }).to_string();
        let prepared = self.0.transport.prepare_workflow(&req).await?;
        match TransStatus::parse(&prepared.status) {
            TransStatus::Succeed => return stored_result(&prepared),
            TransStatus::Failed => return Err(Error::Failure(prepared.rollback_reason.clone())),
            _ => {}
        }
        let progress: HashMap<String, Progress> = prepared
            .steps
            .into_iter()
            .map(|b| {
                (
                    format!("{}-{}", b.branch_id, b.op),
                    Progress {
                        status: b.status,
                        data: b.data,
                    },
                )
            })
            .collect();
        tracing::info!(gid, name, recorded = progress.len(), "workflow starts");
        let wf = Wf::new(
            gid.to_string(),
            name.to_string(),
            self.0.transport.clone(),
            options,
            progress,
        );
        let mut outcome = f(wf.clone(), input.to_vec()).await;
        if outcome.is_ok() {
            let left = wf.unconsumed_actions();
            if !left.is_empty() {
                outcome = Err(Error::NonDeterministic(format!(
                    "workflow {name} gid {gid} finished without asking for the recorded steps {left:?}"
                )));
            }
        }
        let rollback = match &outcome {
            Ok(_) => false,
            Err(Error::Failure(_)) => true,
            Err(e) => {
                tracing::info!(gid, name, error = %e, "workflow unfinished; DTM will call it back");
                return outcome;
            }
        };
        wf.phase2(rollback).await?;
        let mut submit = TransRequest::new(gid, TransType::Workflow, &TransOptions::default());
        submit.protocol = self.0.transport.protocol().to_string();
        let (status, reason, result) = match &outcome {
            Ok(r) => ("succeed", String::new(), r.clone()),
            Err(e) => ("failed", e.to_string(), Vec::new()),
        };
        submit.req_extra = BTreeMap::from([
            ("status".to_string(), status.to_string()),
            ("rollback_reason".to_string(), reason),
            (
                "result".to_string(),
                base64::engine::general_purpose::STANDARD.encode(&result),
            ),
        ]);
        if status == "succeed" && self.0.transport.protocol() == "grpc" {
            // DTM's gRPC prepareWorkflow never returns the stored result (§7.10): keep a
            // copy as a step record, so executing the finished workflow again returns it.
            self.0
                .transport
                .record(
                    gid,
                    RESULT_BRANCH,
                    RESULT_OP,
                    "succeed",
                    crate::record::encode("result", "", &result),
                )
                .await?;
        }
        self.0.transport.submit(&submit).await?;
        tracing::info!(gid, name, status, "workflow finished");
        outcome
    }

    /// Handles DTM's callback: the query names the workflow (`op`) and the gid, the body is
    /// the input.
    pub async fn execute_callback(&self, query: &str, body: &[u8]) -> Result<Vec<u8>> {
        let info = dtmcli::TransInfo::from_query(query)?;
        self.execute(info.op.as_str(), &info.gid, body).await
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
    }
}
