//! A real DTM server as a child process.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dtmcli::{DtmClient, QueryResult, TransBranch, TransStatus};

use crate::binary::tail;
use crate::error::{Error, Result};
use crate::store::Store;

/// Settings of a server started by [`DtmServer::start`]. Build it with
/// `..Default::default()` or the `with_*` methods.
#[derive(Debug, Clone)]
pub struct DtmServerConfig {
    /// Where DTM keeps its transactions (default: [`Store::Boltdb`], in the server's own
    /// directory). SQL stores must be [prepared](Store::prepare) first.
    pub store: Store,
    /// How often DTM looks for transactions to retry (`TRANS_CRON_INTERVAL`, whole seconds,
    /// at least one). Default one second (DTM's is three), so retries come quickly.
    pub cron_interval: Duration,
    /// More environment variables for DTM, set last (they override the kit's):
    /// `UPDATE_BRANCH_SYNC`, `RETRY_INTERVAL`, `TIMEOUT_TO_FAIL`, `LOG_LEVEL`... DTM sees no
    /// other variable of this process except `PATH`, `HOME`, `TMPDIR`, `TZ` and the
    /// locale, so a stray `STORE_DRIVER` in a developer's shell cannot change the store.
    pub env: Vec<(String, String)>,
    /// How long [`DtmServer::start`] and [`DtmServer::restart`] wait for DTM to answer
    /// (default 20 s).
    pub ready_timeout: Duration,
    /// The DTM binary; `None` (the default): [`crate::find_binary`].
    pub binary: Option<PathBuf>,
}

impl Default for DtmServerConfig {
    fn default() -> Self {
        DtmServerConfig {
            store: Store::Boltdb,
            cron_interval: Duration::from_secs(1),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(20),
            binary: None,
        }
    }
}

impl DtmServerConfig {
    /// The default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs DTM on `store`.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }

    /// Sets `TRANS_CRON_INTERVAL` (rounded up to whole seconds, at least one).
    pub fn with_cron_interval(mut self, interval: Duration) -> Self {
        self.cron_interval = interval;
        self
    }

    /// Adds an environment variable for DTM.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets how long to wait for DTM to answer.
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Runs this DTM binary instead of the one [`crate::find_binary`] finds.
    pub fn with_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }
}

/// `TRANS_CRON_INTERVAL`: whole seconds, rounded up, at least one.
fn cron_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// A port that was free a moment ago on every interface (DTM binds all of them).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("0.0.0.0:0")?.local_addr()?.port())
}

/// The variables of this process that DTM still sees.
const KEPT_ENV: &[&str] = &["PATH", "HOME", "TMPDIR", "TZ", "LANG", "LC_ALL"];

/// A running DTM server: a child process on free ports of 127.0.0.1, in a scratch
/// directory of its own (its boltdb file, `dtm.log`, `dtm.pid`).
///
/// It stops when [`DtmServer::stop`] is called or the value is dropped, and, when neither
/// happens (a test-wide `static`, a test that panicked, a killed test process), when this
/// process exits: DTM runs under a small `sh` watchdog that kills it once this process's
/// end of a pipe closes. [`DtmServer::kill`] and [`DtmServer::restart`] are for crash
/// tests.
///
/// Starting and stopping block the calling thread (a process spawn and polling until DTM
/// answers, usually well under a second); [`DtmServer::start_async`] does it off the async
/// runtime. Unix only (the watchdog is `sh`; `kill` reads `/proc`).
#[derive(Debug)]
pub struct DtmServer {
    /// The newest watchdog.
    child: Child,
    /// After a [`DtmServer::restart`], the first watchdog (it owns the directory; its DTM
    /// was killed) and any later ones.
    restarted: Vec<Child>,
    config: DtmServerConfig,
    binary: PathBuf,
    dir: PathBuf,
    http_port: u16,
    grpc_port: u16,
    stopped: bool,
}

impl DtmServer {
    /// Starts a server and waits until it answers `GET /api/dtmsvr/version`.
    ///
    /// The store is used as it is: prepare a SQL store first ([`Store::prepare`]). Should
    /// another process take one of the chosen ports before DTM binds it, DTM is started
    /// again on new ports (three tries).
    pub fn start(config: DtmServerConfig) -> Result<DtmServer> {
        let binary = match &config.binary {
            Some(b) if !b.is_file() => {
                return Err(Error::BinaryNotFound {
                    searched: vec![b.clone()],
                })
            }
            Some(b) => b.clone(),
            None => crate::find_binary()?,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(&config, &binary) {
                Err(Error::Exited { log, .. })
                    if attempt < 3 && log.contains("address already in use") => {}
                other => return other,
            }
        }
    }

    /// [`DtmServer::start`] on tokio's blocking thread pool, so that an async test does not
    /// hold its runtime thread while DTM starts.
    pub async fn start_async(config: DtmServerConfig) -> Result<DtmServer> {
        tokio::task::spawn_blocking(move || DtmServer::start(config))
            .await
            .map_err(|e| Error::io("starting DTM", std::io::Error::other(e)))?
    }

    fn start_once(config: &DtmServerConfig, binary: &Path) -> Result<DtmServer> {
        let io = |what: &str| {
            let what = what.to_string();
            move |e| Error::io(what, e)
        };
        let http_port = free_port().map_err(io("finding a free port"))?;
        let grpc_port = free_port().map_err(io("finding a free port"))?;
        // A directory of its own (the bolt store, the log), named unique like a gid.
        let dir = std::env::temp_dir().join(crate::unique_gid("dtm-testkit"));
        std::fs::create_dir_all(&dir).map_err(io(&format!("creating {}", dir.display())))?;
        let spawned = spawn_watchdog(binary, &dir, http_port, grpc_port, config, true);
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // From here on, Drop cleans up.
        let mut server = DtmServer {
            child,
            restarted: Vec::new(),
            config: config.clone(),
            binary: binary.to_path_buf(),
            dir,
            http_port,
            grpc_port,
            stopped: false,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let timeout = self.config.ready_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self
                .child
                .try_wait()
                .map_err(|e| Error::io("checking on DTM", e))?;
            if let Some(status) = exited {
                return Err(Error::Exited {
                    status: status.to_string(),
                    log: self.log_tail(),
                });
            }
            // DTM itself exited (a bad setting, a port taken): its watchdog stays until we
            // close its stdin, so look at the process.
            if let Some(pid) = self.pid_file() {
                if matches!(proc_state(pid), None | Some('Z')) {
                    return Err(Error::Exited {
                        status: "an exit".to_string(),
                        log: self.log_tail(),
                    });
                }
            }
            if version_ok(self.http_port) {
                // Another process may have taken the port between `free_port` and DTM's
                // bind, and be what answered: DTM logs the failed bind just after. A moment
                // later, its log tells (and the start is made again on other ports).
                std::thread::sleep(Duration::from_millis(300));
                let log = self.log_tail();
                if log.contains("address already in use") {
                    return Err(Error::Exited {
                        status: "a port taken".to_string(),
                        log,
                    });
                }
                return Ok(());
            }
            // DTM logs a port another process took between `free_port` and its bind, and
            // keeps running without that listener: start again on other ports now rather
            // than wait for the deadline.
            let log = self.log_tail();
            if log.contains("address already in use") {
                return Err(Error::Exited {
                    status: "a port taken".to_string(),
                    log,
                });
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    port: self.http_port,
                    waited: timeout,
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The HTTP API base URL, `http://127.0.0.1:<port>/api/dtmsvr`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/dtmsvr", self.http_port)
    }

    /// The JSON-RPC URL, `http://127.0.0.1:<port>/api/json-rpc` (on the HTTP port).
    pub fn json_rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/json-rpc", self.http_port)
    }

    /// The gRPC address, `127.0.0.1:<port>`, as `dtmgrpc::DtmGrpcClient::new` takes it.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The gRPC port.
    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
    }

    /// A new HTTP client of this server. One per async runtime: a `reqwest` client keeps
    /// connections on the runtime that opened them, so a server kept in a `static` across
    /// `#[tokio::test]`s should hand each test its own.
    pub fn http_client(&self) -> Result<DtmClient> {
        Ok(DtmClient::new(self.http_url())?)
    }

    /// The store the server runs on.
    pub fn store(&self) -> &Store {
        &self.config.store
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &DtmServerConfig {
        &self.config
    }

    /// The binary it runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Its scratch directory (removed when it stops).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log file (`LOG_LEVEL` is `warn` unless [`DtmServerConfig::env`] says otherwise).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dtm.log")
    }

    /// The last 20 lines of its log, with the store's password replaced by `***` (DTM logs
    /// its whole configuration when it starts).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let text = match self.config.store.password() {
            Some(p) => text.replace(p, "***"),
            None => text,
        };
        tail(&text, 20)
    }

    /// The pid of the DTM process now running, if any (not the watchdog's).
    pub fn pid(&self) -> Option<u32> {
        let pid = self.pid_file()?;
        // Still our DTM: a killed DTM's pid may have been reused, and a dead one stays a
        // zombie until its watchdog ends.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let running = !matches!(proc_state(pid), None | Some('Z'));
        (running && comm.trim() == comm_name(&self.binary)).then_some(pid)
    }

    /// The pid the newest watchdog wrote.
    fn pid_file(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("dtm.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILLs the DTM process (a crash: nothing flushed, open requests cut) and waits
    /// until its ports are free. Nothing happens if it is not running.
    pub fn kill(&mut self) -> Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let status = Command::new("sh")
            .args(["-c", r#"kill -KILL "$0" 2>/dev/null"#])
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .status()
            .map_err(|e| Error::io("running kill", e))?;
        if !status.success() && self.pid().is_some() {
            return Err(Error::io(
                format!("kill -KILL {pid}"),
                std::io::Error::other(format!("exited with {status}")),
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !port_free(self.http_port) || !port_free(self.grpc_port) {
            if Instant::now() > deadline {
                return Err(Error::io(
                    "waiting for a killed DTM's ports",
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "still busy after 20 s"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The kernel frees the ports a moment before the process is a zombie.
        while self.pid().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Starts a new DTM process on the same ports, directory (so the same boltdb file) and
    /// environment (so the same Redis prefix or SQL database), after [`DtmServer::kill`],
    /// and waits until it answers.
    pub fn restart(&mut self) -> Result<()> {
        // The old pid (a zombie now) must not pass for the new DTM having exited.
        let pid_file = self.dir.join("dtm.pid");
        if let Err(e) = std::fs::remove_file(&pid_file) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::io(format!("removing {}", pid_file.display()), e));
            }
        }
        let child = spawn_watchdog(
            &self.binary,
            &self.dir,
            self.http_port,
            self.grpc_port,
            &self.config,
            false,
        )?;
        // Only the newest watchdog is watched by `wait_ready`. The first one owns the
        // directory and stays until the end; later ones (their DTM is dead) go at once.
        let mut old = std::mem::replace(&mut self.child, child);
        if self.restarted.is_empty() {
            self.restarted.push(old);
        } else {
            drop(old.stdin.take());
            let _ = old.wait();
        }
        self.wait_ready()
    }

    /// Stops DTM (SIGTERM through its watchdog), waits for it and removes its directory.
    /// Dropping the server does the same, without the errors.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut first_err = None;
        // The owner (the first watchdog) last: it removes the directory.
        let (owner, later) = match self.restarted.split_first_mut() {
            Some((owner, later)) => (Some(owner), later),
            None => (None, &mut [][..]),
        };
        for c in later.iter_mut().chain([&mut self.child]).chain(owner) {
            drop(c.stdin.take());
            if let Err(e) = c.wait() {
                first_err.get_or_insert(Error::io("waiting for DTM to stop", e));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                first_err.get_or_insert(Error::io(format!("removing {}", self.dir.display()), e));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// DTM's answer to `query` for `gid`.
    pub async fn query(&self, gid: &str) -> Result<QueryResult> {
        Ok(self.http_client()?.query(gid).await?)
    }

    /// The branch rows DTM holds for `gid`, in DTM's order (for a saga: each step's
    /// compensate row, then its action row).
    pub async fn branches(&self, gid: &str) -> Result<Vec<TransBranch>> {
        Ok(self.query(gid).await?.branches)
    }

    /// Waits until `gid` is `succeed` or `failed`; see [`crate::wait::final_status`].
    ///
    /// DTM writes branch statuses asynchronously by default (`UPDATE_BRANCH_SYNC=0`): the
    /// global status can be final while some branch rows still read `prepared`. To assert
    /// on branch rows, wait for them with [`DtmServer::wait_until`].
    pub async fn wait_final(&self, gid: &str, timeout: Duration) -> Result<QueryResult> {
        crate::wait::final_status(&self.http_client()?, gid, timeout).await
    }

    /// Waits until `gid` has `status`; see [`crate::wait::status`].
    pub async fn wait_status(
        &self,
        gid: &str,
        status: TransStatus,
        timeout: Duration,
    ) -> Result<QueryResult> {
        crate::wait::status(&self.http_client()?, gid, status, timeout).await
    }

    /// Waits until DTM's answer for `gid` satisfies `done`; see [`crate::wait::until`].
    pub async fn wait_until(
        &self,
        gid: &str,
        timeout: Duration,
        done: impl Fn(&QueryResult) -> bool,
    ) -> Result<QueryResult> {
        crate::wait::until(&self.http_client()?, gid, timeout, done).await
    }
}

impl Drop for DtmServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The state letter of a process (`R`, `S`, `Z`...), `None` when there is none.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the name may hold ')' itself.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// The kernel's name of a process running `bin` (its first 15 bytes).
fn comm_name(bin: &Path) -> String {
    bin.file_name()
        .map(|n| n.to_string_lossy().chars().take(15).collect())
        .unwrap_or_default()
}

/// Starts DTM under a small shell watchdog: DTM runs as its child (its pid in `dtm.pid`)
/// and is killed, and (for the `owner`) the scratch directory removed, as soon as our end
/// of the watchdog's stdin closes, which also happens when this process dies without
/// dropping the server. The watchdog kills that pid only while it is still DTM.
fn spawn_watchdog(
    bin: &Path,
    dir: &Path,
    http_port: u16,
    grpc_port: u16,
    config: &DtmServerConfig,
    owner: bool,
) -> Result<Child> {
    let log_path = dir.join("dtm.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Error::io("duplicating the log handle", e))?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#""$0" & pid=$!; echo $pid >"$1/dtm.pid"; c=$(basename "$0" | cut -c1-15); trap '[ "$(cat /proc/$pid/comm 2>/dev/null)" = "$c" ] && kill $pid 2>/dev/null; wait $pid 2>/dev/null; [ "$2" = owner ] && rm -rf "$1"' EXIT; cat >/dev/null"#)
        .arg(bin)
        .arg(dir)
        .arg(if owner { "owner" } else { "restarted" })
        .current_dir(dir)
        .env_clear();
    for name in KEPT_ENV {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.env("HTTP_PORT", http_port.to_string())
        .env("GRPC_PORT", grpc_port.to_string())
        .env(
            "TRANS_CRON_INTERVAL",
            cron_secs(config.cron_interval).to_string(),
        )
        .env("LOG_LEVEL", "warn")
        .envs(config.store.env())
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(log2);
    cmd.spawn()
        .map_err(|e| Error::io(format!("starting {} under sh", bin.display()), e))
}

/// True when nothing listens on `port` (DTM binds every interface).
fn port_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// A minimal blocking HTTP/1.0 probe, so that readiness needs no async runtime.
fn version_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /api/dtmsvr/version HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.") && buf.contains("\"version\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_interval_is_whole_seconds() {
        assert_eq!(cron_secs(Duration::ZERO), 1);
        assert_eq!(cron_secs(Duration::from_millis(200)), 1);
        assert_eq!(cron_secs(Duration::from_secs(2)), 2);
        assert_eq!(cron_secs(Duration::from_millis(2500)), 3);
    }

    #[test]
    fn config_builder() {
        let c = DtmServerConfig::new()
            .with_store(Store::local_mysql("d"))
            .with_env("UPDATE_BRANCH_SYNC", "1")
            .with_cron_interval(Duration::from_secs(2))
            .with_binary("/opt/dtm");
        assert_eq!(c.store.driver(), "mysql");
        assert_eq!(c.env, [("UPDATE_BRANCH_SYNC".to_string(), "1".to_string())]);
        assert_eq!(c.binary.as_deref(), Some(Path::new("/opt/dtm")));
        assert_eq!(c.ready_timeout, Duration::from_secs(20));
    }

    #[test]
    fn process_states() {
        // The test harness's main thread: running or sleeping, not a zombie.
        assert!(matches!(proc_state(std::process::id()), Some(c) if c != 'Z'));
        assert_eq!(proc_state(u32::MAX), None);
    }

    #[test]
    fn comm_is_the_first_15_bytes() {
        assert_eq!(comm_name(Path::new("/x/dtm")), "dtm");
        assert_eq!(
            comm_name(Path::new("/x/a-very-long-binary-name")),
            "a-very-long-bin"
        );
    }

    #[test]
    fn a_missing_binary_is_named() {
        let e =
            DtmServer::start(DtmServerConfig::new().with_binary("/nonexistent/dtm")).unwrap_err();
        assert!(matches!(e, Error::BinaryNotFound { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/dtm"), "{e}");
    }
}
