//! No credential in any error, `Debug` rendering or log line.
//!
//! A password is planted in every place a service may put one (the DTM URL over HTTP and
//! gRPC, a branch URL, a trusted-server list, the database options of XA branches, the DTM
//! client of a workflow registry); then every kind of failure the SDK reports is provoked,
//! against the real DTM and databases where one exists (transport errors, an HTTP status,
//! an untrusted server, a refused database login) and against closed ports otherwise. Every
//! `Display`, `Debug` and alternate `Debug` rendering, and everything the SDK logged at
//! TRACE meanwhile, is searched for the password.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dtmcli::{DtmClient, TrustedServers};

const SECRET: &str = "pl4nted-S3cret";

/// Everything logged by this test binary.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("trace,hyper=debug,h2=debug,tower=debug,mio=info")
            .with_writer(move || Sink(sink.clone()))
            .with_ansi(false)
            .try_init();
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renderings collected so far.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn debug(&mut self, what: &str, v: &dyn std::fmt::Debug) {
        self.0.push((format!("{what} (Debug)"), format!("{v:?}")));
        self.0
            .push((format!("{what} (Debug alt)"), format!("{v:#?}")));
    }

    fn error<E: std::error::Error>(&mut self, what: &str, e: &E) {
        self.debug(what, e);
        let mut text = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            text.push_str(" <- ");
            text.push_str(&s.to_string());
            src = s.source();
        }
        self.0.push((format!("{what} (Display + sources)"), text));
    }

    fn result<T, E: std::error::Error>(&mut self, what: &str, r: Result<T, E>) {
        match r {
            Ok(_) => self.0.push((what.to_string(), "ok".into())),
            Err(e) => self.error(what, &e),
        }
    }

    fn assert_clean(&self) {
        if std::env::var_os("SHOW_RENDERINGS").is_some() {
            for (what, text) in &self.0 {
                eprintln!("--- {what}\n{text}");
            }
        }
        assert!(self.0.len() > 20, "too few renderings: {}", self.0.len());
        let leaks: Vec<_> = self
            .0
            .iter()
            .filter(|(_, text)| text.contains(SECRET))
            .collect();
        assert!(leaks.is_empty(), "the planted secret leaked: {leaks:#?}");
        let log = log().lock().map(|v| v.clone()).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        assert!(
            !log.is_empty(),
            "nothing was logged: the log check would prove nothing"
        );
        let lines: Vec<_> = log.lines().filter(|l| l.contains(SECRET)).collect();
        assert!(
            lines.is_empty(),
            "the planted secret was logged: {lines:#?}"
        );
    }
}

fn closed_port() -> u16 {
    dtm_testkit::free_port().expect("port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_errors_debug_or_logs() {
    log();
    let env = support::env();
    let mut seen = Seen::default();
    let http_port = env.server.http_port();

    // HTTP client: DTM URL with credentials, against the real DTM (a 404 status) and
    // against a closed port (a transport error).
    let real = DtmClient::builder(format!("http://dtm:{SECRET}@127.0.0.1:{http_port}/api"))
        .limits(dtmcli::Limits::default().with_timeout(Duration::from_secs(5)))
        .trusted_servers(TrustedServers::list([format!(
            "http://other:{SECRET}@127.0.0.1:1/api/dtmsvr"
        )]))
        .build()
        .expect("client");
    seen.debug("DtmClient", &real);
    seen.result(
        "new_gid on a wrong path of the real DTM",
        real.new_gid().await,
    );
    seen.result(
        "saga submit on a wrong path",
        real.saga("secret-saga-1").submit().await,
    );
    seen.result(
        "untrusted server",
        real.with_server(&format!("http://evil:{SECRET}@127.0.0.1:2/api/dtmsvr")),
    );
    let closed = DtmClient::builder(format!(
        "http://dtm:{SECRET}@127.0.0.1:{}/api/dtmsvr",
        closed_port()
    ))
    .limits(dtmcli::Limits::default().with_timeout(Duration::from_secs(3)))
    .build()
    .expect("client");
    seen.result("new_gid on a closed port", closed.new_gid().await);
    seen.result("query on a closed port", closed.query("g").await);
    let info = dtmcli::TransInfo::new("secret-g", dtmcli::TransType::Tcc, "01", dtmcli::Op::Try);
    seen.result(
        "call_branch with credentials in the branch URL",
        closed
            .call_branch(
                &format!("http://b:{SECRET}@127.0.0.1:{}/try", closed_port()),
                &info,
                &Default::default(),
                Some("{}".into()),
            )
            .await,
    );
    seen.result(
        "builder with a bad URL carrying credentials",
        DtmClient::new(format!("ftp://u:{SECRET}@h/x")),
    );

    // gRPC client: credentials in the target are refused, without repeating them.
    seen.result(
        "gRPC target with credentials",
        dtmgrpc::DtmGrpcClient::new(format!("http://u:{SECRET}@127.0.0.1:{}", closed_port())),
    );
    let grpc = dtmgrpc::DtmGrpcClient::builder(format!("127.0.0.1:{}", closed_port()))
        .limits(dtmcli::Limits::default().with_timeout(Duration::from_secs(3)))
        .trusted_servers(TrustedServers::list([format!(
            "http://u:{SECRET}@127.0.0.1:3"
        )]))
        .build()
        .expect("grpc client");
    seen.debug("DtmGrpcClient", &grpc);
    seen.result("gRPC new_gid on a closed port", grpc.new_gid().await);
    seen.result(
        "gRPC untrusted target",
        grpc.with_server(&format!("u:{SECRET}@127.0.0.1:4")),
    );

    // XA branches: database options with a password, a refused login on the real databases.
    let my = sqlx::mysql::MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(3306)
        .username("root")
        .password(SECRET);
    // The planted value is really there: sqlx's own Debug shows it, so a derived Debug on
    // XaLocal would leak it and this test would fail.
    assert!(format!("{my:?}").contains(SECRET));
    let xa_my = dtm_barrier::xa::XaLocal::<sqlx::MySql, _>::new(my, real.clone());
    seen.debug("XaLocal<MySql>", &xa_my);
    let xa_info =
        dtmcli::TransInfo::new("secret-xa", dtmcli::TransType::Xa, "01", dtmcli::Op::Commit);
    seen.result(
        "XA phase 2 with a refused MariaDB login",
        xa_my.phase2(&xa_info).await,
    );
    let pg = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(closed_port())
        .username("postgres")
        .password(SECRET);
    let xa_pg = dtm_barrier::xa::XaLocal::<sqlx::Postgres, _>::new(pg, real.clone());
    seen.debug("XaLocal<Postgres>", &xa_pg);
    seen.result(
        "XA phase 2 on a closed PostgreSQL port",
        xa_pg.phase2(&xa_info).await,
    );

    // Workflow registry on a DTM URL with credentials.
    let wf = dtm_workflow::Workflows::http(closed.clone(), "http://127.0.0.1:1/wf");
    wf.register("secret-wf", |_wf, _input| async move { Ok(()) })
        .expect("register");
    seen.debug("Workflows", &wf);
    seen.result(
        "workflow execute on a closed port",
        wf.execute("secret-wf", "secret-wf-1", b"").await,
    );

    seen.assert_clean();
}
