//! Shared set-up of the integration tests: one real DTM server and one bank service per
//! test binary, started on first use; a fresh `DtmClient` per test (each test has its own
//! tokio runtime).
#![allow(dead_code, unreachable_pub)]

use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use dtm_examples::busi::Busi;
use dtm_examples::server::{DtmServer, DtmServerConfig};
use dtmcli::{DtmClient, QueryResult};

#[allow(unused_imports)]
pub use dtm_examples::busi::{BusiReq, Call, Outcome};

/// The per-binary environment.
pub struct Env {
    pub server: DtmServer,
    pub busi: Busi,
    pub base: String,
    /// The runtime the services live on (outlives every test's runtime).
    pub handle: tokio::runtime::Handle,
}

static ENV: OnceLock<Env> = OnceLock::new();

/// Starts (once) the DTM server and the bank service.
pub fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let server = DtmServer::start(DtmServerConfig::default()).expect("start DTM");
        let url = server.http_url();
        let (tx, rx) = mpsc::channel();
        // The bank service lives on its own runtime, which outlives every test's runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let busi = Busi::new(DtmClient::new(url).expect("client"));
                let base = busi.serve(0).await.expect("serve busi");
                tx.send((busi, base, tokio::runtime::Handle::current()))
                    .expect("send");
                std::future::pending::<()>().await;
            });
        });
        let (busi, base, handle) = rx.recv().expect("busi started");
        Env {
            server,
            busi,
            base,
            handle,
        }
    })
}

/// A client of the test DTM server.
pub fn dtm() -> DtmClient {
    DtmClient::new(env().server.http_url()).expect("client")
}

/// The bank service.
pub fn busi() -> &'static Busi {
    &env().busi
}

/// URL of a bank handler.
pub fn url(handler: &str) -> String {
    format!("{}/{handler}", env().base)
}

/// A unique gid for a test.
pub fn gid(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits until the transaction reaches `status` (default deadline 30 s).
pub async fn wait_status(dtm: &DtmClient, gid: &str, status: &str) -> QueryResult {
    dtm_examples::wait::status(dtm, gid, status, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until `handler` has been called `n` times for `gid`.
pub async fn wait_calls(gid: &str, handler: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while busi().count(gid, handler) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{handler} called {} times for {gid}, expected {n}; calls: {:?}",
            busi().count(gid, handler),
            busi().handlers(gid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status of each branch row, as `branch_id/op=status`.
pub fn branch_rows(q: &QueryResult) -> Vec<String> {
    q.branches
        .iter()
        .map(|b| format!("{}/{}={}", b.branch_id, b.op, b.status))
        .collect()
}

/// Runs `fut` on the services' runtime (for anything touching their connection pools).
pub async fn on_env<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    env()
        .handle
        .spawn(fut)
        .await
        .expect("task on the services runtime")
}

/// The barrier-guarded bank on MariaDB and PostgreSQL, and its base URL.
pub struct BankEnv {
    pub bank: dtm_examples::bank::Bank,
    pub base: String,
}

static BANK: OnceLock<BankEnv> = OnceLock::new();

/// Starts (once) the bank service on the services' runtime.
pub fn bank_env() -> &'static BankEnv {
    BANK.get_or_init(|| {
        let handle = env().handle.clone();
        let url = env().server.http_url();
        std::thread::spawn(move || {
            handle.block_on(async move {
                let bank = dtm_examples::bank::Bank::connect(DtmClient::new(url).expect("client"))
                    .await
                    .expect("connect the bank to MariaDB and PostgreSQL (scripts/start-dbs.sh)");
                let base = bank.serve(0).await.expect("serve bank");
                BankEnv { bank, base }
            })
        })
        .join()
        .expect("bank start-up")
    })
}
