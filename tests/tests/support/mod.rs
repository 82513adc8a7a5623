//! Shared set-up of the integration tests: one real DTM server and one bank service per
//! test binary, started on first use; a fresh `DtmClient` per test (each test has its own
//! tokio runtime).
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use dtm_examples::busi::Busi;
use dtm_testkit::{DtmServer, DtmServerConfig};
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
static CONFIG: OnceLock<DtmServerConfig> = OnceLock::new();

/// Chooses the DTM server configuration of this test binary; call it before anything else
/// (later calls are ignored).
pub fn configure(config: DtmServerConfig) {
    let _ = CONFIG.set(config);
}

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
        let config = CONFIG.get_or_init(DtmServerConfig::default).clone();
        let server = DtmServer::start(config).expect("start DTM");
        let url = server.http_url();
        // The bank service lives on its own runtime, which outlives every test's runtime.
        let (busi, base, handle) = on_own_runtime(move || async move {
            let busi = Busi::new(DtmClient::new(url).expect("client"));
            let base = busi.serve(0).await.expect("serve busi");
            (busi, base, tokio::runtime::Handle::current())
        });
        Env {
            server,
            busi,
            base,
            handle,
        }
    })
}

/// Runs `start` on a runtime of its own, on a thread of its own, and returns its value; the
/// runtime keeps running what `start` spawned (a service) after every test's runtime ends.
pub fn on_own_runtime<T, F, Fut>(start: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            tx.send(start().await).expect("send");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("started")
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
    dtm_testkit::unique_gid(name)
}

/// Waits until the transaction reaches `status` (default deadline 30 s).
pub async fn wait_status(dtm: &DtmClient, gid: &str, status: &str) -> QueryResult {
    dtm_testkit::wait::status(
        dtm,
        gid,
        dtmcli::TransStatus::parse(status),
        Duration::from_secs(30),
    )
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

/// The ids of `q`'s branches of `op`, in DTM's order.
pub fn branch_ids<'a>(q: &'a QueryResult, op: &str) -> Vec<&'a str> {
    q.branches
        .iter()
        .filter(|b| b.op == op)
        .map(|b| b.branch_id.as_str())
        .collect()
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

/// Runs the future `start` makes to its end on the services' runtime, from a thread of its
/// own (so it may be called inside a test's runtime), and returns its value: for set-ups
/// whose services and pools must outlive every test's runtime.
pub fn start_on_env<T, F, Fut>(start: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let handle = env().handle.clone();
    std::thread::spawn(move || handle.block_on(start()))
        .join()
        .expect("start-up on the services' runtime")
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
        let url = env().server.http_url();
        start_on_env(move || async move {
            let bank = dtm_examples::bank::Bank::connect(DtmClient::new(url).expect("client"))
                .await
                .expect("connect the bank to MariaDB and PostgreSQL (scripts/start-dbs.sh)");
            let base = bank.serve(0).await.expect("serve bank");
            BankEnv { bank, base }
        })
    })
}

/// Runs `f` again while it answers ONGOING, for up to 10 s: a workflow that DTM's callback
/// finished is `succeed` or `failed` in DTM a moment before that run ends in this process,
/// and an `execute` in that moment is told the run is still going.
pub async fn settled<T, F, Fut>(mut f: F) -> dtmcli::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = dtmcli::Result<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match f().await {
            Err(e) if e.is_ongoing() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            r => return r,
        }
    }
}

/// A fresh account of the HTTP bank in `db` with `balance`.
pub async fn bank_account(db: dtm_examples::bank::Db, balance: i64) -> i64 {
    // Apart from the other tests' ids (below 10^17, and the gRPC bank's from 7 * 10^18).
    let user = unique_user(6_000_000_000_000_000);
    let bank = bank_env().bank.clone();
    on_env(async move {
        bank.open_account(db, user, balance)
            .await
            .expect("open account")
    })
    .await;
    user
}

/// An account id from `base` up, unique across the test processes of one run (one apart
/// from the previous one: `+ 1` is free too).
fn unique_user(base: i64) -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static N: AtomicI64 = AtomicI64::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    base + (std::process::id() as i64 % 10_000) * 100_000_000_000
        + (micros % 1_000_000) * 10_000
        + N.fetch_add(2, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------
// gRPC (dtmgrpc): the recording gRPC business service and the gRPC bank.

/// The per-binary gRPC business service.
pub struct GrpcEnv {
    pub busi: dtm_examples::grpc_busi::GrpcBusi,
    /// `127.0.0.1:<port>`.
    pub base: String,
}

static GRPC: OnceLock<GrpcEnv> = OnceLock::new();

/// Starts (once) the gRPC business service on the services' runtime.
pub fn grpc_env() -> &'static GrpcEnv {
    GRPC.get_or_init(|| {
        let target = env().server.grpc_addr();
        start_on_env(move || async move {
            let client = dtmgrpc::DtmGrpcClient::new(target).expect("grpc client");
            let busi = dtm_examples::grpc_busi::GrpcBusi::new(client);
            let base = busi.serve(0).await.expect("serve grpc busi");
            GrpcEnv { busi, base }
        })
    })
}

/// A gRPC client of the test DTM server (one per test: its channel lives on the test's
/// runtime).
/// It reads DTM's stored state through the server's HTTP API, as a gRPC client should.
pub fn grpc_dtm() -> dtmgrpc::DtmGrpcClient {
    dtmgrpc::DtmGrpcClient::builder(env().server.grpc_addr())
        .http_api(env().server.http_url())
        .build()
        .expect("grpc client")
}

/// The gRPC business service.
pub fn grpc_busi() -> &'static dtm_examples::grpc_busi::GrpcBusi {
    &grpc_env().busi
}

/// Branch URL of a gRPC business method (`127.0.0.1:<port>/busi.Busi/<handler>`).
pub fn grpc_url(handler: &str) -> String {
    grpc_busi().url(handler)
}

/// Waits until the gRPC `handler` has been called `n` times for `gid`.
pub async fn wait_grpc_calls(gid: &str, handler: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while grpc_busi().count(gid, handler) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{handler} called {} times for {gid}, expected {n}; calls: {:?}",
            grpc_busi().count(gid, handler),
            grpc_busi().handlers(gid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The barrier-guarded gRPC bank and its address.
pub struct GrpcBankEnv {
    pub bank: dtm_examples::grpc_busi::GrpcBank,
    /// `127.0.0.1:<port>`.
    pub base: String,
}

static GRPC_BANK: OnceLock<GrpcBankEnv> = OnceLock::new();

/// Starts (once) the gRPC bank on the services' runtime (and the HTTP bank it shares the
/// databases with).
pub fn grpc_bank_env() -> &'static GrpcBankEnv {
    GRPC_BANK.get_or_init(|| {
        let bank = bank_env().bank.clone();
        let target = env().server.grpc_addr();
        start_on_env(move || async move {
            let client = dtmgrpc::DtmGrpcClient::new(target).expect("grpc client");
            let bank = dtm_examples::grpc_busi::GrpcBank::new(bank, client).expect("grpc bank");
            let base = bank.serve(0).await.expect("serve grpc bank");
            GrpcBankEnv { bank, base }
        })
    })
}

/// Branch URL of a gRPC bank method.
pub fn grpc_bank_url(db: dtm_examples::bank::Db, handler: &str) -> String {
    dtm_examples::grpc_busi::GrpcBank::url(&grpc_bank_env().base, db, handler)
}

/// Two fresh accounts (from, to) with the given balances in the gRPC bank's database.
pub async fn gbank_accounts(db: dtm_examples::bank::Db, from: i64, to: i64) -> (i64, i64) {
    // Apart from the other tests' ids (below 10^17, and bank_account's from 6 * 10^18).
    let a = unique_user(7_000_000_000_000_000);
    let b = a + 1;
    let bank = grpc_bank_env().bank.bank().clone();
    on_env(async move {
        bank.open_account(db, a, from).await.expect("open account");
        bank.open_account(db, b, to).await.expect("open account");
    })
    .await;
    (a, b)
}

/// An account's balance in the gRPC bank's database.
pub async fn gbank_balance(db: dtm_examples::bank::Db, user: i64) -> i64 {
    let bank = grpc_bank_env().bank.bank().clone();
    on_env(async move { bank.balance(db, user).await.expect("balance") }).await
}

/// The barrier rows of `gid` (sorted), as `trans_type/branch_id/op/barrier_id/reason`.
pub async fn gbank_rows(db: dtm_examples::bank::Db, gid: &str) -> Vec<String> {
    let gid = gid.to_string();
    let bank = grpc_bank_env().bank.bank().clone();
    let mut rows = on_env(async move { bank.barrier_rows(db, &gid).await.expect("rows") }).await;
    rows.sort();
    rows
}

/// How often the gRPC bank's business of `handler` ran for `gid`.
pub fn gbank_executed(gid: &str, handler: &str) -> usize {
    grpc_bank_env().bank.executed(gid, handler)
}

/// Calls a gRPC branch directly, as DTM would (transaction info as metadata, `req`'s
/// bytes as the message).
pub async fn grpc_call(
    url: &str,
    info: &dtmcli::TransInfo,
    req: &impl prost::Message,
) -> dtmcli::Result<()> {
    grpc_dtm()
        .call_branch_raw(
            url,
            info,
            &std::collections::BTreeMap::new(),
            req.encode_to_vec().into(),
        )
        .await
        .map(drop)
}

/// The bank's TCC branches, TransOut's and TransIn's: try, confirm, cancel, by `url`.
pub fn tcc_urls(url: fn(&str) -> String) -> ([String; 3], [String; 3]) {
    (
        ["TransOutTry", "TransOutConfirm", "TransOutCancel"].map(url),
        ["TransInTry", "TransInConfirm", "TransInCancel"].map(url),
    )
}

/// A TCC transfer of 30 over `dtm`: the bank's TransOut and TransIn tries, with their
/// confirms and cancels.
pub async fn tcc_transfer(dtm: &DtmClient, gid: &str) -> dtmcli::Result<()> {
    dtm.tcc_global_transaction(gid, dtmcli::TransOptions::default(), |tcc| async move {
        let (out, inn) = tcc_urls(url);
        for [t, c, x] in [out, inn] {
            tcc.call_branch(&BusiReq::new(30), &t, &c, &x).await?;
        }
        Ok(())
    })
    .await
}

/// [`tcc_transfer`] over gRPC.
pub async fn grpc_tcc_transfer(dtm: &dtmgrpc::DtmGrpcClient, gid: &str) -> dtmcli::Result<()> {
    use dtm_examples::grpc_busi::pb::{BusiReply, ReqGrpc};
    dtm.tcc_global_transaction(gid, dtmcli::TransOptions::default(), |tcc| async move {
        let (out, inn) = tcc_urls(grpc_url);
        for [t, c, x] in [out, inn] {
            let _: BusiReply = tcc.call_branch(&ReqGrpc::amount(30), &t, &c, &x).await?;
        }
        Ok(())
    })
    .await
}

/// Asserts that DTM holds no transaction `gid` (nothing was sent, or DTM refused it).
pub async fn assert_dtm_holds_nothing(gid: &str) {
    let q = dtm().query(gid).await.unwrap();
    assert!(q.transaction.is_none(), "{:?}", branch_rows(&q));
}

/// A branch call's transaction info as `trans_type/branch_id/op`.
pub fn info_of(info: &dtmcli::TransInfo) -> String {
    format!(
        "{}/{}/{}",
        info.trans_type.as_str(),
        info.branch_id,
        info.op.as_str()
    )
}

/// `saga` with the bank's gRPC transfer added: TransOut then TransIn of `amount`, each with
/// its compensation.
pub fn grpc_transfer<T>(saga: dtmcli::Saga<T>, amount: i64) -> dtmcli::Saga<T>
where
    T: dtmcli::Transport,
    dtm_examples::grpc_busi::pb::ReqGrpc: dtmcli::transport::Encode<T::Encoding>,
{
    let req = dtm_examples::grpc_busi::pb::ReqGrpc::amount(amount);
    saga.add(&grpc_url("TransOut"), &grpc_url("TransOutRevert"), &req)
        .add(&grpc_url("TransIn"), &grpc_url("TransInRevert"), &req)
}

/// Asserts that `e` is the refusal of an empty gid, made before anything was sent (the
/// clients of these checks name a DTM that listens nowhere: a sent request would be a
/// transport error).
pub fn assert_empty_gid(what: &str, e: &dtmcli::Error) {
    assert!(
        matches!(e, dtmcli::Error::InvalidInput(m) if m.contains("gid") && m.contains("empty")),
        "{what}: {e:?}"
    );
}

/// Asserts that every mode over the client `$dtm` (of a DTM that listens nowhere) refuses an
/// empty gid before it sends anything or runs the caller's code: saga, msg (prepare, submit,
/// do_and_submit), TCC and XA, with `$body` and any branch URL `$branch`. A macro: the
/// modes' faces are each client's own methods.
#[allow(unused_macros)]
macro_rules! assert_modes_refuse_an_empty_gid {
    // And the client's raw calls (`submit`, `prepare`, `abort`, `prepare_workflow`) of
    // `$raw`, a request with an empty gid.
    ($dtm:expr, $branch:expr, $body:expr, raw: $raw:expr) => {{
        $crate::support::assert_modes_refuse_an_empty_gid!($dtm, $branch, $body);
        let (dtm, raw) = (&$dtm, &$raw);
        for (what, e) in [
            ("raw submit", dtm.submit(raw).await),
            ("raw prepare", dtm.prepare(raw).await),
            ("raw abort", dtm.abort(raw).await),
            (
                "prepare_workflow",
                dtm.prepare_workflow(raw).await.map(drop),
            ),
        ] {
            $crate::support::assert_empty_gid(what, &e.unwrap_err());
        }
    }};
    ($dtm:expr, $branch:expr, $body:expr) => {{
        use $crate::support::assert_empty_gid;
        let (dtm, branch, body) = (&$dtm, $branch, &$body);
        let e = dtm.saga("").add(branch, "", body).submit().await;
        assert_empty_gid("saga", &e.unwrap_err());
        let msg = dtm.msg("").add(branch, body);
        assert_empty_gid("msg prepare", &msg.prepare(branch).await.unwrap_err());
        assert_empty_gid("msg submit", &msg.submit().await.unwrap_err());
        let e = msg
            .do_and_submit(branch, |_| async { panic!("must not run") })
            .await;
        assert_empty_gid("msg do_and_submit", &e.unwrap_err());
        let never = |_| async { panic!("must not run") };
        let r: dtmcli::Result<()> = dtm
            .tcc_global_transaction("", dtmcli::TransOptions::default(), never)
            .await;
        assert_empty_gid("tcc", &r.unwrap_err());
        let r: dtmcli::Result<()> = dtm
            .xa_global_transaction("", dtmcli::TransOptions::default(), |_| async {
                panic!("must not run")
            })
            .await;
        assert_empty_gid("xa", &r.unwrap_err());
    }};
}
#[allow(unused_imports)]
pub(crate) use assert_modes_refuse_an_empty_gid;

/// A msg crediting 5 (the bank's TransIn), prepared on DTM with the bank's back-check.
pub async fn prepared_credit(dtm: &DtmClient, gid: &str) -> dtmcli::Msg {
    let msg = dtm.msg(gid).add(&url("TransIn"), &BusiReq::new(5));
    msg.prepare(&url("QueryPrepared")).await.unwrap();
    msg
}

/// A gRPC cluster whose one member is the test DTM server (with its HTTP API).
pub fn grpc_cluster() -> dtmcli::cluster::Cluster<dtmcli::cluster::WithQuery<dtmgrpc::DtmGrpcClient>>
{
    let server = &env().server;
    dtmgrpc::DtmGrpcClient::cluster(&[(&server.grpc_addr(), &server.http_url())]).expect("cluster")
}

/// A tonic request of `msg` carrying `metadata` (a branch call's `dtm-*` keys, say).
pub fn grpc_request<T>(msg: T, metadata: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    for (k, v) in metadata {
        r.metadata_mut()
            .insert(*k, v.parse().expect("ASCII metadata"));
    }
    r
}

/// Asserts that `answer`, to `input`, is an `InvalidInput` error; the error.
pub fn invalid_input<R: std::fmt::Debug>(input: &str, answer: dtmcli::Result<R>) -> dtmcli::Error {
    let e = answer.unwrap_err();
    assert!(
        matches!(e, dtmcli::Error::InvalidInput(_)),
        "{input:?}: {e:?}"
    );
    e
}

/// Calls the HTTP branch `url` as DTM does (`method`, the transaction info as the query,
/// no body); the status it answered.
pub async fn branch_status(method: reqwest::Method, url: &str, info: &dtmcli::TransInfo) -> u16 {
    reqwest::Client::new()
        .request(method, url)
        .query(&info.query_pairs())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
