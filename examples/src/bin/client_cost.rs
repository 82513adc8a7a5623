//! Client cost benchmark: what the SDK's clients cost per global transaction, measured
//! against the real DTM server, through the public API only (`dtmcli::DtmClient`,
//! `dtmgrpc::DtmGrpcClient`, `dtm_workflow::Workflows`), so the same benchmark can be run
//! before and after a refactor of the client crates.
//!
//! # What it measures
//!
//! For saga, msg, TCC and workflow, over HTTP and gRPC, at each concurrency (default 1, 16
//! and 256 transactions at a time):
//!
//! - **tps**: finished global transactions per second of wall time;
//! - **p50 / p99**: latency of one global transaction as the client sees it: saga and msg,
//!   `submit` (no prepare, a client-chosen gid); TCC, the whole `tcc_global_transaction`
//!   with two branches (prepare, two register + try, submit); workflow, one `execute` of a
//!   workflow with two steps, each a recorded call of the branch service (prepareWorkflow,
//!   two calls + registerBranch, submit);
//! - **saga-floor**: the same saga submitted without the SDK (the request bytes built once,
//!   then per transaction the gid put in and the request sent with bare reqwest or tonic's
//!   generated stub): what any client on these stacks costs at the least. The SDK's own
//!   share of the client's cost is its saga row minus this one;
//! - **client CPU per transaction**: user + system CPU time of this process around the
//!   timed loop, divided by the number of transactions. The branch service runs in a
//!   separate child process (this binary re-executed with `--branch-service`), so the time
//!   is the client's alone. Read from `/proc/self/task/*/schedstat` (nanoseconds; the same
//!   quantity as `getrusage(RUSAGE_SELF)` user + sys) when no thread exited during the
//!   loop, else from `/proc/self/stat` (10 ms clock ticks, marked `~`);
//! - **DTM CPU per transaction**: the DTM server's CPU time (same source, from its pid) from
//!   the start of the loop until DTM has finished every transaction of the case (the branch
//!   service has received every call and DTM is idle again), minus DTM's idle CPU rate
//!   (measured at start) over that window; and the client's CPU as a % of DTM's.
//!
//! Then the **memory of 10,000 transactions in flight**: a fresh child process
//! (`--inflight-probe`) submits 10,000 sagas at once (one future each, all polled
//! together) against the real DTM; the increase of its peak RSS (`VmHWM`) over its RSS
//! before the wave (`VmRSS`), divided by 10,000, is the memory per in-flight transaction.
//!
//! DTM runs on its redis store (`STORE_DRIVER=redis`, a fresh key prefix, deleted at the
//! end) with the branch service answering `{"dtm_result":"SUCCESS"}` (HTTP, axum) or an
//! empty reply (gRPC, tonic) at once. Everything (DTM, redis, the branch service, the
//! client) shares the machine: the numbers are for comparing runs on the same machine.
//!
//! # Running
//!
//! ```text
//! scripts/install-dtm.sh; scripts/start-dbs.sh   # the DTM binary and redis
//! cargo run --release -p dtm-examples --bin client_cost
//! ```
//!
//! The table goes to stdout (markdown), progress to stderr. A default run takes 1-2
//! minutes on 2 cores. The numbers move by 10-30% from run to run when anything else
//! uses the CPU (a build...): compare runs made on an idle machine, several of each.
//! At concurrency 1 the client's CPU includes its runtime's wake-ups (one per answer).
//!
//! # Knobs (environment)
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CLIENT_COST_ITERS` | 1000 | timed transactions per case |
//! | `CLIENT_COST_WARMUP` | 100 | untimed transactions before each case (at least the concurrency) |
//! | `CLIENT_COST_MODES` | `saga,msg,tcc,workflow,saga-floor` | modes to run |
//! | `CLIENT_COST_TRANSPORTS` | `http,grpc,json-rpc` | client transports to run |
//! | `CLIENT_COST_CONCURRENCY` | `1,16,256` | transactions in flight per case |
//! | `CLIENT_COST_INFLIGHT` | 10000 | transactions of the memory probe (0 skips it) |
//! | `CLIENT_COST_STORE` | `redis` | DTM's store: `redis` or `boltdb` |
//! | `CLIENT_COST_REDIS` | `127.0.0.1:6379` | the redis server of the redis store |
//! | `DTM_BIN` | `<workspace>/.tools/bin/dtm` | the DTM server binary |

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{any, get};
use axum::Router;
use dtm_examples::busi::BusiReq;
use dtm_examples::grpc_busi::pb::busi_client::BusiClient;
use dtm_examples::grpc_busi::pb::busi_server::{Busi as BusiService, BusiServer};
use dtm_examples::grpc_busi::pb::{BusiReply, ReqGrpc};
use dtm_testkit::{DtmServer, DtmServerConfig};
use dtm_workflow::{send_http, Wf, WorkflowGrpc, WorkflowLayer, WorkflowMiddleware, Workflows};
use dtmcli::transport::Json;
use dtmcli::{DtmClient, Encode, JsonRpcClient, Tcc, TransOptions, Transport};
use dtmgrpc::DtmGrpcClient;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tower_layer::Layer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// First argument of the re-executed branch service.
const CHILD_BRANCH: &str = "--branch-service";
/// First argument of the re-executed memory probe.
const CHILD_INFLIGHT: &str = "--inflight-probe";
/// `getconf CLK_TCK`: the unit of `/proc/<pid>/stat` utime and stime.
const CLK_TCK: u64 = 100;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some(CHILD_BRANCH) => branch_service().await,
        Some(CHILD_INFLIGHT) => inflight_probe(&args[2..]).await,
        _ => bench().await,
    }
}

// ---------------------------------------------------------------------------------------
// Settings

/// A global transaction mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Saga,
    Msg,
    Tcc,
    Workflow,
    /// The saga of [`Mode::Saga`] submitted without the SDK: the same request bytes, built
    /// once, sent with the bare stack (reqwest; tonic's generated stub). What any client on
    /// these stacks costs at the least, next to which the SDK's own cost shows.
    SagaFloor,
}

impl Mode {
    const ALL: [Mode; 5] = [
        Mode::Saga,
        Mode::Msg,
        Mode::Tcc,
        Mode::Workflow,
        Mode::SagaFloor,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Saga => "saga",
            Mode::Msg => "msg",
            Mode::Tcc => "tcc",
            Mode::Workflow => "workflow",
            Mode::SagaFloor => "saga-floor",
        }
    }

    /// Calls the branch service receives per transaction (from the client or from DTM).
    fn branch_calls(self) -> u64 {
        match self {
            // Two actions, called by DTM.
            Mode::Saga | Mode::Msg | Mode::SagaFloor => 2,
            // Two tries from the client, two confirms from DTM.
            Mode::Tcc => 4,
            // Two recorded steps, called by the client.
            Mode::Workflow => 2,
        }
    }
}

/// The client's transport to DTM (and to the branch service, for TCC tries and workflow
/// steps).
///
/// JSON-RPC transactions call the same plain-HTTP branches (DTM uses JSON-RPC envelopes only
/// for branch URLs naming a `method`); DTM has no workflow over JSON-RPC, so that case is
/// skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    Grpc,
    JsonRpc,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Http, Protocol::Grpc, Protocol::JsonRpc];

    fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::JsonRpc => "json-rpc",
        }
    }
}

/// The JSON-RPC endpoint of the DTM server whose HTTP API is `http`.
fn json_rpc_url(http: &str) -> String {
    http.replace("/api/dtmsvr", "/api/json-rpc")
}

/// The knobs (see the module docs).
#[derive(Debug)]
struct Config {
    iters: usize,
    warmup: usize,
    modes: Vec<Mode>,
    transports: Vec<Protocol>,
    concurrency: Vec<usize>,
    inflight: usize,
    store: String,
    redis: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn env_num(name: &str, default: usize) -> Result<usize, BoxError> {
    let v = env_or(name, &default.to_string());
    v.trim()
        .parse()
        .map_err(|e| format!("{name}={v:?}: {e}").into())
}

/// A comma-separated list of names, each matched against `all` by `name`.
fn env_list<T: Copy>(
    name: &str,
    default: &str,
    all: &[T],
    name_of: fn(T) -> &'static str,
) -> Result<Vec<T>, BoxError> {
    env_or(name, default)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            all.iter()
                .copied()
                .find(|t| name_of(*t).eq_ignore_ascii_case(s))
                .ok_or_else(|| {
                    let known: Vec<_> = all.iter().map(|t| name_of(*t)).collect();
                    format!("{name}: unknown {s:?} (known: {})", known.join(", ")).into()
                })
        })
        .collect()
}

impl Config {
    fn from_env() -> Result<Config, BoxError> {
        let concurrency = env_or("CLIENT_COST_CONCURRENCY", "1,16,256")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("CLIENT_COST_CONCURRENCY: bad {s:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let store = env_or("CLIENT_COST_STORE", "redis");
        if store != "redis" && store != "boltdb" {
            return Err(format!("CLIENT_COST_STORE={store:?}: redis or boltdb").into());
        }
        Ok(Config {
            iters: env_num("CLIENT_COST_ITERS", 1000)?.max(1),
            warmup: env_num("CLIENT_COST_WARMUP", 100)?,
            modes: env_list(
                "CLIENT_COST_MODES",
                "saga,msg,tcc,workflow,saga-floor",
                &Mode::ALL,
                Mode::name,
            )?,
            transports: env_list(
                "CLIENT_COST_TRANSPORTS",
                "http,grpc,json-rpc",
                &Protocol::ALL,
                Protocol::name,
            )?,
            concurrency,
            inflight: env_num("CLIENT_COST_INFLIGHT", 10_000)?,
            store,
            redis: env_or("CLIENT_COST_REDIS", "127.0.0.1:6379"),
        })
    }
}

// ---------------------------------------------------------------------------------------
// CPU time and memory from /proc

/// CPU time of every thread of a process at one instant.
#[derive(Debug, Clone)]
struct CpuSample {
    /// Sum of the threads' on-CPU nanoseconds (`/proc/<pid>/task/*/schedstat`).
    threads_ns: u64,
    /// The thread ids seen.
    tids: Vec<u32>,
    /// utime + stime of the whole process (`/proc/<pid>/stat`), in nanoseconds, 10 ms steps.
    process_ns: u64,
}

impl CpuSample {
    fn read(pid: u32) -> std::io::Result<CpuSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the `(comm)`: state is field 3, utime 14 and stime 15.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
            return Err(std::io::Error::other(format!("bad /proc/{pid}/stat")));
        };
        let mut threads_ns = 0;
        let mut tids = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let entry = entry?;
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            // A thread that just exited has no schedstat any more: skip it.
            if let Ok(s) = std::fs::read_to_string(entry.path().join("schedstat")) {
                if let Some(ns) = s
                    .split_whitespace()
                    .next()
                    .and_then(|f| f.parse::<u64>().ok())
                {
                    threads_ns += ns;
                    tids.push(tid);
                }
            }
        }
        tids.sort_unstable();
        Ok(CpuSample {
            threads_ns,
            tids,
            process_ns: (utime + stime) * (1_000_000_000 / CLK_TCK),
        })
    }

    /// CPU nanoseconds from `self` to `later`, and whether they are exact: the per-thread
    /// sum when every thread of `self` still exists (a new thread's time all falls in the
    /// window), else the 10 ms tick count of the whole process.
    fn since(&self, later: &CpuSample) -> (u64, bool) {
        let kept = self
            .tids
            .iter()
            .all(|t| later.tids.binary_search(t).is_ok());
        if kept {
            (later.threads_ns.saturating_sub(self.threads_ns), true)
        } else {
            (later.process_ns.saturating_sub(self.process_ns), false)
        }
    }
}

/// A `/proc/self/status` value in kB (`VmRSS`, `VmHWM`).
fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// The branch service (a child process)

/// The trivial `busi.Busi` gRPC service: every method answers an empty reply at once.
#[derive(Clone)]
struct Trivial(Arc<AtomicU64>);

impl Trivial {
    fn answer(&self) -> Result<Response<BusiReply>, Status> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(BusiReply::default()))
    }
}

macro_rules! trivial_methods {
    ($($method:ident),* $(,)?) => {
        #[tonic::async_trait]
        impl BusiService for Trivial {
            $(
                async fn $method(
                    &self,
                    _request: Request<ReqGrpc>,
                ) -> Result<Response<BusiReply>, Status> {
                    self.answer()
                }
            )*
        }
    };
}

trivial_methods!(
    trans_out,
    trans_in,
    trans_out_revert,
    trans_in_revert,
    trans_out_try,
    trans_out_confirm,
    trans_out_cancel,
    trans_in_try,
    trans_in_confirm,
    trans_in_cancel,
    trans_in_tcc_nested,
    trans_out_xa,
    trans_in_xa,
    query_prepared,
);

/// The child process: serves `/api/busi/<anything>` over HTTP and `busi.Busi` over gRPC,
/// both answering success at once, and `GET /count` (calls received so far); prints
/// `READY <http port> <grpc port>`; exits when its stdin closes.
async fn branch_service() -> Result<(), BoxError> {
    let calls = Arc::new(AtomicU64::new(0));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (http_port, grpc_port) = (http.local_addr()?.port(), grpc.local_addr()?.port());

    let counted = calls.clone();
    let total = calls.clone();
    let app = Router::new()
        .route(
            "/api/busi/{*handler}",
            // The body is read: a handler that answers before reading it makes hyper close
            // the connection, and DTM's client then fails its next request on it with
            // `EOF` and retries that branch only 10 s later.
            any(move |_body: axum::body::Bytes| {
                counted.fetch_add(1, Ordering::Relaxed);
                async { axum::Json(serde_json::json!({"dtm_result": "SUCCESS"})) }
            }),
        )
        .route(
            "/count",
            get(move || async move { total.load(Ordering::Relaxed).to_string() }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http, app).await {
            eprintln!("branch service (http) stopped: {e}");
        }
    });
    let svc = BusiServer::new(Trivial(calls));
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(grpc);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
        {
            eprintln!("branch service (grpc) stopped: {e}");
        }
    });
    println!("READY {http_port} {grpc_port}");
    // The parent holds our stdin: its end closing (drop or death) stops us.
    tokio::task::spawn_blocking(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    })
    .await?;
    Ok(())
}

/// The running branch-service child; stopped on drop.
struct BranchChild {
    child: Child,
    http_port: u16,
    grpc_port: u16,
}

impl BranchChild {
    fn start() -> Result<BranchChild, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(CHILD_BRANCH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("branch service: no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let ports: Vec<u16> = line
            .strip_prefix("READY ")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let [http_port, grpc_port] = ports[..] else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("branch service did not start: {line:?}").into());
        };
        Ok(BranchChild {
            child,
            http_port,
            grpc_port,
        })
    }
}

impl Drop for BranchChild {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The clients and one global transaction

/// Branch URLs of one transport.
#[derive(Debug, Clone)]
struct Urls {
    out: String,
    out_revert: String,
    inn: String,
    in_revert: String,
    out_try: String,
    out_confirm: String,
    out_cancel: String,
    in_try: String,
    in_confirm: String,
    in_cancel: String,
}

impl Urls {
    /// `base` ends with the separator (`http://host:port/api/busi/`, `host:port/busi.Busi/`).
    fn new(base: &str) -> Urls {
        let u = |h: &str| format!("{base}{h}");
        Urls {
            out: u("TransOut"),
            out_revert: u("TransOutRevert"),
            inn: u("TransIn"),
            in_revert: u("TransInRevert"),
            out_try: u("TransOutTry"),
            out_confirm: u("TransOutConfirm"),
            out_cancel: u("TransOutCancel"),
            in_try: u("TransInTry"),
            in_confirm: u("TransInConfirm"),
            in_cancel: u("TransInCancel"),
        }
    }
}

/// Everything the client side needs.
struct Env {
    floor: Floor,
    http: DtmClient,
    grpc: DtmGrpcClient,
    jrpc: JsonRpcClient,
    http_urls: Urls,
    grpc_urls: Urls,
    json_req: BusiReq,
    json_body: Vec<u8>,
    grpc_req: ReqGrpc,
    grpc_body: Vec<u8>,
    wf_http: Workflows,
    wf_grpc: Workflows,
}

/// The name the benchmark's workflow is registered under.
const WF_NAME: &str = "client_cost";

type GrpcBusiClient = BusiClient<WorkflowGrpc<Channel>>;

impl Env {
    async fn new(server: &DtmServer, busi: &BranchChild) -> Result<Env, BoxError> {
        let http = DtmClient::new(server.http_url())?;
        let grpc = DtmGrpcClient::builder(server.grpc_addr())
            .http_api(server.http_url())
            .build()?;
        let jrpc = JsonRpcClient::new(json_rpc_url(&server.http_url()))?;
        let http_urls = Urls::new(&format!("http://127.0.0.1:{}/api/busi/", busi.http_port));
        let grpc_urls = Urls::new(&format!("127.0.0.1:{}/busi.Busi/", busi.grpc_port));

        // Workflow over HTTP: the callback route is served here (DTM calls it only to
        // resume an unfinished workflow); the steps go through the recording HTTP client.
        let wf_http = dtm_examples::demo::http_workflows(http.clone()).await?;
        let recording = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(WorkflowMiddleware)
            .build();
        let (out, inn) = (
            Arc::<str>::from(http_urls.out.as_str()),
            Arc::<str>::from(http_urls.inn.as_str()),
        );
        wf_http.register(WF_NAME, move |wf: Wf, input: Vec<u8>| {
            let (client, out, inn) = (recording.clone(), out.clone(), inn.clone());
            async move {
                for url in [&*out, &*inn] {
                    wf.new_branch()?;
                    let request = wf
                        .http(&client, reqwest::Method::POST, url)
                        .header("content-type", "application/json")
                        .body(input.clone());
                    send_http(request).await?;
                }
                Ok(())
            }
        })?;

        // Workflow over gRPC: `workflow.Workflow/Execute` is served here; the steps go
        // through a channel wrapped in the recording layer.
        let wf_grpc = dtm_examples::demo::grpc_workflows(grpc.clone()).await?;
        let channel = tonic::transport::Endpoint::from_shared(format!(
            "http://127.0.0.1:{}",
            busi.grpc_port
        ))?
        .connect_lazy();
        let steps: GrpcBusiClient = BusiClient::new(WorkflowLayer.layer(channel));
        wf_grpc.register(WF_NAME, move |wf: Wf, input: Vec<u8>| {
            let mut c = steps.clone();
            async move {
                let req = ReqGrpc::decode(input.as_slice()).map_err(dtmcli::Error::other)?;
                wf.new_branch()?;
                c.trans_out(wf.grpc_request(req.clone()))
                    .await
                    .map_err(|s| dtmgrpc::status_to_error("TransOut", &s))?;
                wf.new_branch()?;
                c.trans_in(wf.grpc_request(req))
                    .await
                    .map_err(|s| dtmgrpc::status_to_error("TransIn", &s))?;
                Ok(())
            }
        })?;

        let json_req = BusiReq::new(30);
        let grpc_req = ReqGrpc::amount(30);
        let floor = Floor::new(
            server, &http, &grpc, &http_urls, &grpc_urls, &json_req, &grpc_req,
        )?;
        Ok(Env {
            floor,
            json_body: serde_json::to_vec(&json_req)?,
            grpc_body: grpc_req.encode_to_vec(),
            http,
            grpc,
            jrpc,
            http_urls,
            grpc_urls,
            json_req,
            grpc_req,
            wf_http,
            wf_grpc,
        })
    }
}

/// A two-step saga over any transport: the mode is written once in dtmcli, so is this.
async fn saga_on<T: Transport, P: Encode<T::Encoding>>(
    t: &T,
    u: &Urls,
    req: &P,
    gid: &str,
) -> dtmcli::Result<()> {
    dtmcli::saga::Saga::new(t.clone(), gid)
        .add(&u.out, &u.out_revert, req)
        .add(&u.inn, &u.in_revert, req)
        .submit()
        .await
}

/// A two-step msg over any transport.
async fn msg_on<T: Transport, P: Encode<T::Encoding>>(
    t: &T,
    u: &Urls,
    req: &P,
    gid: &str,
) -> dtmcli::Result<()> {
    dtmcli::msg::Msg::new(t.clone(), gid)
        .add(&u.out, req)
        .add(&u.inn, req)
        .submit()
        .await
}

/// A TCC with two branches over a JSON transport (HTTP, JSON-RPC).
async fn tcc_json<T: Transport<Encoding = Json>>(
    t: &T,
    u: &Urls,
    req: &BusiReq,
    gid: &str,
) -> dtmcli::Result<()> {
    Tcc::run(t, gid, TransOptions::default(), |tcc| async move {
        tcc.call_branch(req, &u.out_try, &u.out_confirm, &u.out_cancel)
            .await?;
        tcc.call_branch(req, &u.in_try, &u.in_confirm, &u.in_cancel)
            .await?;
        Ok(())
    })
    .await
}

/// One global transaction of `mode` over `transport`, as an application would run it.
async fn one_transaction(
    env: &Env,
    mode: Mode,
    transport: Protocol,
    gid: &str,
) -> dtmcli::Result<()> {
    let (hu, gu, jr, gr) = (&env.http_urls, &env.grpc_urls, &env.json_req, &env.grpc_req);
    match (mode, transport) {
        (Mode::Saga, Protocol::Http) => saga_on(&env.http, hu, jr, gid).await,
        (Mode::Saga, Protocol::Grpc) => saga_on(&env.grpc, gu, gr, gid).await,
        (Mode::Saga, Protocol::JsonRpc) => saga_on(&env.jrpc, hu, jr, gid).await,
        (Mode::Msg, Protocol::Http) => msg_on(&env.http, hu, jr, gid).await,
        (Mode::Msg, Protocol::Grpc) => msg_on(&env.grpc, gu, gr, gid).await,
        (Mode::Msg, Protocol::JsonRpc) => msg_on(&env.jrpc, hu, jr, gid).await,
        (Mode::Tcc, Protocol::Http) => tcc_json(&env.http, hu, jr, gid).await,
        (Mode::Tcc, Protocol::JsonRpc) => tcc_json(&env.jrpc, hu, jr, gid).await,
        (Mode::Tcc, Protocol::Grpc) => {
            env.grpc
                .tcc_global_transaction(gid, TransOptions::default(), |tcc| async move {
                    let _: BusiReply = tcc
                        .call_branch(gr, &gu.out_try, &gu.out_confirm, &gu.out_cancel)
                        .await?;
                    let _: BusiReply = tcc
                        .call_branch(gr, &gu.in_try, &gu.in_confirm, &gu.in_cancel)
                        .await?;
                    Ok(())
                })
                .await
        }
        (Mode::Workflow, Protocol::Http) => env
            .wf_http
            .execute(WF_NAME, gid, &env.json_body)
            .await
            .map(drop),
        (Mode::Workflow, Protocol::Grpc) => env
            .wf_grpc
            .execute(WF_NAME, gid, &env.grpc_body)
            .await
            .map(drop),
        (Mode::Workflow, Protocol::JsonRpc) => {
            Err(dtmcli::Error::invalid("DTM has no workflow over JSON-RPC"))
        }
        (Mode::SagaFloor, p) => env.floor.submit(p, gid).await,
    }
}

/// The bare-stack submits of [`Mode::SagaFloor`]: request templates built once by the SDK,
/// then per transaction only the gid is put in and the request sent.
struct Floor {
    reqwest: reqwest::Client,
    submit_url: String,
    json_rpc_url: String,
    /// The HTTP body, split around its gid.
    http_body: (String, String),
    /// The JSON-RPC body, split around its gid.
    json_rpc_body: (String, String),
    grpc: dtmgrpc::pb::dtmgimp::dtm_client::DtmClient<Channel>,
    grpc_req: dtmgrpc::pb::dtmgimp::DtmRequest,
}

/// The gid the templates are built with.
const FLOOR_GID: &str = "client-cost-floor-gid";

impl Floor {
    fn new(
        server: &DtmServer,
        http: &DtmClient,
        grpc: &DtmGrpcClient,
        hu: &Urls,
        gu: &Urls,
        jr: &BusiReq,
        gr: &ReqGrpc,
    ) -> Result<Floor, BoxError> {
        let split = |text: String| -> Result<(String, String), BoxError> {
            let (a, b) = text
                .split_once(FLOOR_GID)
                .ok_or("the template has no gid")?;
            Ok((a.to_string(), b.to_string()))
        };
        let http_req = http
            .saga(FLOOR_GID)
            .add(&hu.out, &hu.out_revert, jr)
            .add(&hu.inn, &hu.in_revert, jr)
            .request()?;
        let body = serde_json::to_string(&http_req)?;
        // As JsonRpcClient sends it: the HTTP body, marked json-rpc, in an envelope.
        let mut rpc_req = http_req;
        rpc_req.set_protocol("json-rpc");
        let json_rpc = serde_json::json!({
            "jsonrpc": "2.0", "id": "1", "method": "submit", "params": rpc_req,
        });
        let grpc_req = dtmgrpc::pb::dtmgimp::DtmRequest::from(
            &grpc
                .saga(FLOOR_GID)
                .add(&gu.out, &gu.out_revert, gr)
                .add(&gu.inn, &gu.in_revert, gr)
                .request()?,
        );
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr()))?
                .connect_lazy();
        Ok(Floor {
            reqwest: reqwest::Client::new(),
            submit_url: format!("{}/submit", server.http_url()),
            json_rpc_url: json_rpc_url(&server.http_url()),
            http_body: split(body)?,
            json_rpc_body: split(json_rpc.to_string())?,
            grpc: dtmgrpc::pb::dtmgimp::dtm_client::DtmClient::new(channel),
            grpc_req: dtmgrpc::pb::dtmgimp::DtmRequest {
                gid: String::new(),
                ..grpc_req
            },
        })
    }

    async fn submit(&self, p: Protocol, gid: &str) -> dtmcli::Result<()> {
        let post = |url: &str, (a, b): &(String, String)| {
            self.reqwest
                .post(url)
                .header("content-type", "application/json")
                .body(format!("{a}{gid}{b}"))
                .send()
        };
        // DTM's success answer: HTTP `{"dtm_result":"SUCCESS"}`, JSON-RPC `"error":null`.
        let (answer, ok): (_, &[u8]) = match p {
            Protocol::Http => (post(&self.submit_url, &self.http_body).await, b"SUCCESS"),
            Protocol::JsonRpc => (
                post(&self.json_rpc_url, &self.json_rpc_body).await,
                b"\"error\":null",
            ),
            Protocol::Grpc => {
                let mut c = self.grpc.clone();
                let mut req = self.grpc_req.clone();
                req.gid = gid.to_string();
                c.submit(req)
                    .await
                    .map_err(|s| dtmgrpc::status_to_error("Submit", &s))?;
                return Ok(());
            }
        };
        let answer = answer.map_err(dtmcli::Error::other)?;
        let status = answer.status();
        let text = answer.bytes().await.map_err(dtmcli::Error::other)?;
        if status != reqwest::StatusCode::OK || !text.windows(ok.len()).any(|w| w == ok) {
            return Err(dtmcli::Error::other(format!(
                "submit answered {status}: {}",
                String::from_utf8_lossy(&text)
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Running a case

/// What the workers of one loop saw.
#[derive(Debug, Default)]
struct Loop {
    /// Latency of each successful transaction, nanoseconds.
    latencies: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
    wall: Duration,
}

/// Runs `n` transactions, `concurrency` at a time (each worker takes the next index until
/// none is left); gids are `<prefix>-<index>`.
async fn run_loop(
    env: &Arc<Env>,
    mode: Mode,
    transport: Protocol,
    concurrency: usize,
    n: usize,
    prefix: &str,
) -> Loop {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(n))
        .map(|_| {
            let (env, next, prefix) = (env.clone(), next.clone(), prefix.to_string());
            tokio::spawn(async move {
                let mut seen = Loop::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let gid = format!("{prefix}-{i}");
                    let t = Instant::now();
                    match one_transaction(&env, mode, transport, &gid).await {
                        Ok(()) => seen
                            .latencies
                            .push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)),
                        Err(e) => {
                            seen.errors += 1;
                            seen.first_error
                                .get_or_insert_with(|| format!("{gid}: {e}"));
                        }
                    }
                }
                seen
            })
        })
        .collect();
    let mut all = Loop::default();
    for w in workers {
        match w.await {
            Ok(seen) => {
                all.latencies.extend(seen.latencies);
                all.errors += seen.errors;
                if all.first_error.is_none() {
                    all.first_error = seen.first_error;
                }
            }
            Err(e) => {
                all.errors += 1;
                all.first_error
                    .get_or_insert_with(|| format!("worker: {e}"));
            }
        }
    }
    all.wall = start.elapsed();
    all
}

/// The DTM server process and the branch service's call counter.
struct Watch {
    dtm_pid: u32,
    count_url: String,
    http: reqwest::Client,
    /// DTM's CPU use while idle, nanoseconds per second.
    dtm_idle_ns_per_s: f64,
}

impl Watch {
    async fn busi_calls(&self) -> Option<u64> {
        let r = self.http.get(&self.count_url).send().await.ok()?;
        r.text().await.ok()?.trim().parse().ok()
    }

    /// Waits until the branch service has received `expected` calls (or its count has not
    /// moved for 3 s) and DTM has been idle (its idle rate plus at most 2% of a core) for
    /// two 150 ms windows in a row; at most 60 s. Returns DTM's CPU sample at that moment.
    async fn settle(&self, expected: u64) -> Result<CpuSample, BoxError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = CpuSample::read(self.dtm_pid)?;
        let (mut last_count, mut count_since) = (0, Instant::now());
        let mut quiet = 0;
        let window = Duration::from_millis(150);
        let idle = (self.dtm_idle_ns_per_s * window.as_secs_f64()) as u64 + 3_000_000;
        loop {
            tokio::time::sleep(window).await;
            let now = CpuSample::read(self.dtm_pid)?;
            let count = self.busi_calls().await.unwrap_or(0);
            if count != last_count {
                (last_count, count_since) = (count, Instant::now());
            }
            let calls_done = count >= expected || count_since.elapsed() > Duration::from_secs(3);
            let (used, _) = last.since(&now);
            if calls_done && used < idle {
                quiet += 1;
            } else {
                quiet = 0;
            }
            last = now;
            let timed_out = Instant::now() > deadline;
            if quiet >= 2 || timed_out {
                if count < expected || timed_out {
                    eprintln!(
                        "   (settled {}: the branch service got {count} of {expected} calls)",
                        if timed_out {
                            "at the 60 s limit"
                        } else {
                            "without them"
                        }
                    );
                }
                return Ok(last);
            }
        }
    }
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    mode: Mode,
    transport: Protocol,
    concurrency: usize,
    ok: usize,
    errors: usize,
    tps: f64,
    p50_ms: f64,
    p99_ms: f64,
    client_us: f64,
    client_exact: bool,
    dtm_us: f64,
    dtm_exact: bool,
    first_error: Option<String>,
}

fn percentile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e6
}

#[allow(clippy::too_many_arguments)]
async fn run_case(
    env: &Arc<Env>,
    watch: &Watch,
    cfg: &Config,
    run: &str,
    mode: Mode,
    transport: Protocol,
    concurrency: usize,
) -> Result<Row, BoxError> {
    let tag = format!("{run}-{}-{}-{concurrency}", mode.name(), transport.name());
    // Warm-up: connections opened, caches filled; then let DTM finish it.
    let warm_calls = watch.busi_calls().await.unwrap_or(0);
    let warm = run_loop(
        env,
        mode,
        transport,
        concurrency,
        cfg.warmup.max(concurrency),
        &format!("{tag}-w"),
    )
    .await;
    if warm.latencies.is_empty() {
        return Err(format!("warm-up failed: {}", warm.first_error.unwrap_or_default()).into());
    }
    watch
        .settle(warm_calls + mode.branch_calls() * warm.latencies.len() as u64)
        .await?;
    let calls_before = watch.busi_calls().await.unwrap_or(0);

    let dtm_start = CpuSample::read(watch.dtm_pid)?;
    let client_start = CpuSample::read(std::process::id())?;
    let window = Instant::now();
    let mut seen = run_loop(env, mode, transport, concurrency, cfg.iters, &tag).await;
    let client_end = CpuSample::read(std::process::id())?;

    let ok = seen.latencies.len();
    let dtm_end = watch
        .settle(calls_before + mode.branch_calls() * ok as u64)
        .await?;
    let window = window.elapsed();

    let (client_ns, client_exact) = client_start.since(&client_end);
    let (dtm_ns, dtm_exact) = dtm_start.since(&dtm_end);
    let dtm_ns = (dtm_ns as f64 - watch.dtm_idle_ns_per_s * window.as_secs_f64()).max(0.0);
    seen.latencies.sort_unstable();
    let per = |ns: f64| {
        if ok == 0 {
            f64::NAN
        } else {
            ns / ok as f64 / 1e3
        }
    };
    Ok(Row {
        mode,
        transport,
        concurrency,
        ok,
        errors: seen.errors,
        tps: ok as f64 / seen.wall.as_secs_f64(),
        p50_ms: percentile_ms(&seen.latencies, 0.50),
        p99_ms: percentile_ms(&seen.latencies, 0.99),
        client_us: per(client_ns as f64),
        client_exact,
        dtm_us: per(dtm_ns),
        dtm_exact,
        first_error: seen.first_error,
    })
}

// ---------------------------------------------------------------------------------------
// Memory of many transactions in flight (a child process)

/// Result of one memory probe.
#[derive(Debug, Default)]
struct Inflight {
    transport: String,
    n: usize,
    max_in_flight: usize,
    baseline_kb: u64,
    peak_kb: u64,
    ok: usize,
    errors: usize,
    secs: f64,
    first_error: String,
}

/// The child process: `--inflight-probe <transport> <dtm http url> <dtm grpc addr>
/// <busi http port> <busi grpc port> <n>`. Warms up with 64 sagas, reads its RSS, submits
/// `n` sagas at once (one future each, polled together), and prints
/// `RESULT key=value...` with its peak RSS.
async fn inflight_probe(args: &[String]) -> Result<(), BoxError> {
    let [transport, dtm_http, dtm_grpc, busi_http, busi_grpc, n] = args else {
        return Err(format!("{CHILD_INFLIGHT}: 6 arguments expected, got {args:?}").into());
    };
    let n: usize = n.parse()?;
    let transport = Protocol::ALL
        .into_iter()
        .find(|t| t.name() == transport)
        .ok_or_else(|| format!("unknown transport {transport}"))?;
    let http = DtmClient::new(dtm_http.as_str())?;
    let grpc = DtmGrpcClient::new(dtm_grpc.as_str())?;
    let jrpc = JsonRpcClient::new(json_rpc_url(dtm_http))?;
    let http_urls = Urls::new(&format!("http://127.0.0.1:{busi_http}/api/busi/"));
    let grpc_urls = Urls::new(&format!("127.0.0.1:{busi_grpc}/busi.Busi/"));
    let (json_req, grpc_req) = (BusiReq::new(30), ReqGrpc::amount(30));
    let run = format!("inflight-{}", std::process::id());
    let in_flight = AtomicUsize::new(0);
    let max_in_flight = AtomicUsize::new(0);

    let submit = |gid: String| {
        let (http, grpc, jrpc, hu, gu) = (&http, &grpc, &jrpc, &http_urls, &grpc_urls);
        let (jr, gr) = (&json_req, &grpc_req);
        let (in_flight, max_in_flight) = (&in_flight, &max_in_flight);
        async move {
            let now = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            max_in_flight.fetch_max(now, Ordering::Relaxed);
            let r = match transport {
                Protocol::Http => saga_on(http, hu, jr, &gid).await,
                Protocol::Grpc => saga_on(grpc, gu, gr, &gid).await,
                Protocol::JsonRpc => saga_on(jrpc, hu, jr, &gid).await,
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            r.map_err(|e| format!("{gid}: {e}"))
        }
    };

    for chunk in 0..4 {
        let warm = (0..16).map(|i| submit(format!("{run}-w{chunk}-{i}")));
        for r in futures_util::future::join_all(warm).await {
            r?;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    max_in_flight.store(0, Ordering::Relaxed);
    let baseline_kb = status_kb("VmRSS");

    let start = Instant::now();
    let wave = (0..n).map(|i| submit(format!("{run}-{i}")));
    let results = futures_util::future::join_all(wave).await;
    let secs = start.elapsed().as_secs_f64();
    let peak_kb = status_kb("VmHWM");
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let first_error = errors
        .first()
        .map(|e| e.replace(char::is_whitespace, " "))
        .unwrap_or_default();
    println!(
        "RESULT n={n} max_in_flight={} baseline_kb={baseline_kb} peak_kb={peak_kb} ok={} errors={} secs={secs:.3} first_error={first_error}",
        max_in_flight.load(Ordering::Relaxed),
        n - errors.len(),
        errors.len(),
    );
    Ok(())
}

/// Runs the memory probe in a fresh child process and parses its `RESULT` line.
fn run_inflight(
    server: &DtmServer,
    busi: &BranchChild,
    transport: Protocol,
    n: usize,
) -> Result<Inflight, BoxError> {
    let out = Command::new(std::env::current_exe()?)
        .arg(CHILD_INFLIGHT)
        .arg(transport.name())
        .arg(server.http_url())
        .arg(server.grpc_addr())
        .arg(busi.http_port.to_string())
        .arg(busi.grpc_port.to_string())
        .arg(n.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| format!("memory probe failed ({}): {stdout}", out.status))?;
    let (fields, first_error) = line.split_once(" first_error=").unwrap_or((line, ""));
    let mut r = Inflight {
        transport: transport.name().to_string(),
        first_error: first_error.to_string(),
        ..Default::default()
    };
    for kv in fields.split_whitespace() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let num = || v.parse::<u64>().unwrap_or(0);
        match k {
            "n" => r.n = num() as usize,
            "max_in_flight" => r.max_in_flight = num() as usize,
            "baseline_kb" => r.baseline_kb = num(),
            "peak_kb" => r.peak_kb = num(),
            "ok" => r.ok = num() as usize,
            "errors" => r.errors = num() as usize,
            "secs" => r.secs = v.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// The benchmark

async fn bench() -> Result<(), BoxError> {
    let cfg = Config::from_env()?;
    let started = Instant::now();
    let run = format!(
        "cc{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let prefix = format!("dtm-client-cost-{run}");
    let (redis_host, redis_port) = cfg
        .redis
        .rsplit_once(':')
        .ok_or("CLIENT_COST_REDIS: host:port expected")?;
    let env_vars: Vec<(String, String)> = if cfg.store == "redis" {
        [
            ("STORE_DRIVER", "redis"),
            ("STORE_HOST", redis_host),
            ("STORE_PORT", redis_port),
            ("STORE_REDIS_PREFIX", prefix.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    } else {
        Vec::new()
    };

    eprintln!("== starting DTM on {}", cfg.store);
    let server = DtmServer::start(DtmServerConfig {
        env: env_vars,
        ..Default::default()
    })?;
    let pid_file = server.log_path().with_file_name("dtm.pid");
    let dtm_pid: u32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let busi = BranchChild::start()?;
    let env = Arc::new(Env::new(&server, &busi).await?);
    let version = env.http.version().await?;
    eprintln!(
        "   DTM {version} pid {dtm_pid}; branch service pid {} (http :{}, grpc :{})",
        busi.child.id(),
        busi.http_port,
        busi.grpc_port
    );

    // DTM's idle CPU (v1.19.0 on redis uses ~15-20 ms/s doing nothing), measured once
    // it has settled after start, and subtracted from each case.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_start = CpuSample::read(dtm_pid)?;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_ns, _) = idle_start.since(&CpuSample::read(dtm_pid)?);
    let watch = Watch {
        dtm_pid,
        count_url: format!("http://127.0.0.1:{}/count", busi.http_port),
        http: reqwest::Client::new(),
        dtm_idle_ns_per_s: idle_ns as f64 / t.elapsed().as_secs_f64(),
    };

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for &mode in &cfg.modes {
        for &transport in &cfg.transports {
            if mode == Mode::Workflow && transport == Protocol::JsonRpc {
                continue;
            }
            for &concurrency in &cfg.concurrency {
                let name = format!("{} {} c={concurrency}", mode.name(), transport.name());
                eprintln!("== {name}");
                let t = Instant::now();
                match run_case(&env, &watch, &cfg, &run, mode, transport, concurrency).await {
                    Ok(row) => {
                        eprintln!(
                            "   {:.0} tps, p50 {:.2} ms, p99 {:.2} ms, client {:.0} µs, DTM {:.0} µs, {} errors ({:.1} s)",
                            row.tps,
                            row.p50_ms,
                            row.p99_ms,
                            row.client_us,
                            row.dtm_us,
                            row.errors,
                            t.elapsed().as_secs_f64()
                        );
                        rows.push(row);
                    }
                    Err(e) => {
                        eprintln!("   failed: {e}");
                        failures.push(format!("{name}: {e}"));
                    }
                }
            }
        }
    }

    let mut inflight = Vec::new();
    if cfg.inflight > 0 {
        for &transport in &cfg.transports {
            eprintln!(
                "== {} sagas in flight over {}",
                cfg.inflight,
                transport.name()
            );
            let before = watch.busi_calls().await.unwrap_or(0);
            match run_inflight(&server, &busi, transport, cfg.inflight) {
                Ok(r) => {
                    eprintln!(
                        "   peak {} kB over {} kB, {} errors, {:.1} s",
                        r.peak_kb, r.baseline_kb, r.errors, r.secs
                    );
                    // Let DTM finish those sagas before the next probe.
                    let expected = before + Mode::Saga.branch_calls() * (r.ok as u64 + 64);
                    watch.settle(expected).await?;
                    inflight.push(r);
                }
                Err(e) => {
                    eprintln!("   failed: {e}");
                    failures.push(format!("in flight {}: {e}", transport.name()));
                }
            }
        }
    }

    if let Some(summary) = dtm_log_errors(&server.log_path()) {
        failures.push(summary);
    }
    print_report(
        &cfg,
        &version,
        &watch,
        &rows,
        &inflight,
        &failures,
        started.elapsed(),
    );

    drop(env);
    drop(server);
    if cfg.store == "redis" {
        match delete_keys(&cfg.redis, &prefix).await {
            Ok(n) => eprintln!("== deleted {n} redis keys {prefix}*"),
            Err(e) => eprintln!("== could not delete the redis keys {prefix}*: {e}"),
        }
    }
    drop(busi);
    Ok(())
}

fn print_report(
    cfg: &Config,
    version: &str,
    watch: &Watch,
    rows: &[Row],
    inflight: &[Inflight],
    failures: &[String],
    elapsed: Duration,
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# client_cost: SDK client cost per global transaction");
    println!();
    println!(
        "DTM {version} ({} store), {cores} cores shared by DTM, redis, the branch service \
         (child process) and the client; {} timed transactions per case after {} warm-up; \
         DTM idle CPU {:.2} ms/s (subtracted); run took {:.0} s.",
        cfg.store,
        cfg.iters,
        cfg.warmup,
        watch.dtm_idle_ns_per_s / 1e6,
        elapsed.as_secs_f64()
    );
    println!();
    println!(
        "| mode | transport | conc | ok | err | tps | p50 ms | p99 ms | client µs/tx | DTM µs/tx | client/DTM | SDK above the floor |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        let mark = |exact: bool| if exact { "" } else { "~" };
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {}{:.0} | {}{:.0} | {:.0}% | {} |",
            r.mode.name(),
            r.transport.name(),
            r.concurrency,
            r.ok,
            r.errors,
            r.tps,
            r.p50_ms,
            r.p99_ms,
            mark(r.client_exact),
            r.client_us,
            mark(r.dtm_exact),
            r.dtm_us,
            100.0 * r.client_us / r.dtm_us,
            above_floor(r, rows),
        );
    }
    println!();
    println!(
        "SDK above the floor: the mode's client CPU per transaction minus saga-floor's (the \
         same transport and concurrency: one submit sent without the SDK), in µs and as a \
         share of the floor. Saga and msg make the floor's one call to DTM; TCC makes four \
         (prepare, two registerBranch, submit) plus two tries, and a workflow five calls, so \
         for them it is the cost of their extra calls as well, not the SDK's alone."
    );
    if !inflight.is_empty() {
        println!();
        println!("Memory with sagas in flight (a fresh client process submits them all at once):");
        println!();
        println!(
            "| transport | submitted | max in flight | ok | err | RSS before MiB | peak RSS MiB | bytes/tx in flight | wave s |"
        );
        println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
        for r in inflight {
            let per_tx =
                (r.peak_kb.saturating_sub(r.baseline_kb) * 1024) as f64 / r.n.max(1) as f64;
            println!(
                "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.1} |",
                r.transport,
                r.n,
                r.max_in_flight,
                r.ok,
                r.errors,
                r.baseline_kb as f64 / 1024.0,
                r.peak_kb as f64 / 1024.0,
                per_tx,
                r.secs
            );
        }
    }
    let errors: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let e = r.first_error.as_ref()?;
            Some(format!(
                "{} {} c={}: {} errors, first: {e}",
                r.mode.name(),
                r.transport.name(),
                r.concurrency,
                r.errors
            ))
        })
        .chain(inflight.iter().filter(|r| r.errors > 0).map(|r| {
            format!(
                "in flight {}: {} errors, first: {}",
                r.transport, r.errors, r.first_error
            )
        }))
        .chain(failures.iter().cloned())
        .collect();
    if !errors.is_empty() {
        println!();
        println!("Errors:");
        for e in errors {
            println!("- {e}");
        }
    }
    if rows.iter().any(|r| !r.client_exact || !r.dtm_exact) {
        println!();
        println!(
            "`~`: a thread exited during the case, so the CPU time comes from /proc/<pid>/stat \
         (10 ms clock ticks) instead of the per-thread schedstat sum."
        );
    }
}

/// The "SDK above the floor" cell of `r`: its client CPU minus saga-floor's at the same
/// transport and concurrency, in µs and as a % of the floor.
fn above_floor(r: &Row, rows: &[Row]) -> String {
    if r.mode == Mode::SagaFloor {
        return "floor".to_string();
    }
    let floor = rows.iter().find(|f| {
        f.mode == Mode::SagaFloor && f.transport == r.transport && f.concurrency == r.concurrency
    });
    match floor {
        Some(f) if f.client_us > 0.0 => {
            let d = r.client_us - f.client_us;
            format!("{d:+.1} µs ({:+.1}%)", 100.0 * d / f.client_us)
        }
        _ => "-".to_string(),
    }
}

/// How many error lines DTM logged (its log level is `warn`), and the first one's message.
fn dtm_log_errors(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(r#""level":"error""#) || l.contains("fatal"))
        .collect();
    let first = errors.first()?;
    let msg = first
        .split_once(r#""msg":""#)
        .map_or(*first, |(_, m)| m)
        .chars()
        .take(300)
        .collect::<String>()
        .replace("\\n", " ");
    Some(format!(
        "DTM logged {} error lines; the first: {msg}",
        errors.len()
    ))
}

/// Deletes the redis keys of DTM's store (`<prefix>*`); returns how many.
async fn delete_keys(addr: &str, prefix: &str) -> Result<usize, BoxError> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let (mut cursor, mut deleted) = (0u64, 0usize);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
            deleted += keys.len();
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
