//! Starting a real DTM server for the examples and tests.
//!
//! The binary comes from `$DTM_BIN`, else `<workspace>/.tools/bin/dtm` (installed by
//! `scripts/install-dtm.sh`). Each server runs in its own scratch directory on free ports,
//! with its embedded boltdb store (or the store its [`DtmServerConfig::env`] names), and
//! stops when the [`DtmServer`] is dropped or, if it is never dropped (a test-wide static),
//! when this process exits.
//!
//! For crash tests, [`DtmServer::kill`] SIGKILLs the DTM process (not its watchdog) and
//! [`DtmServer::restart`] starts a new one on the same ports, in the same directory (so on
//! the same boltdb file) and with the same environment (so on the same redis or SQL store).

use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings for a DTM server started by [`DtmServer::start`].
#[derive(Debug, Clone)]
pub struct DtmServerConfig {
    /// `TRANS_CRON_INTERVAL` in seconds (default 1, so retries come quickly).
    pub cron_interval_secs: u32,
    /// Extra environment variables (`UPDATE_BRANCH_SYNC`, `RETRY_INTERVAL`...).
    pub env: Vec<(String, String)>,
}

impl Default for DtmServerConfig {
    fn default() -> Self {
        DtmServerConfig {
            cron_interval_secs: 1,
            env: Vec::new(),
        }
    }
}

/// A running DTM server.
#[derive(Debug)]
pub struct DtmServer {
    child: Child,
    /// After a [`DtmServer::restart`], the first watchdog (it owns the directory; its DTM
    /// was killed).
    restarted: Vec<Child>,
    config: DtmServerConfig,
    dir: PathBuf,
    /// HTTP port.
    pub http_port: u16,
    /// gRPC port.
    pub grpc_port: u16,
}

/// The DTM binary to run.
pub fn dtm_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("DTM_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.tools/bin/dtm"))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl DtmServer {
    /// Starts a server and waits until it answers `/api/dtmsvr/version`.
    pub fn start(config: DtmServerConfig) -> io::Result<DtmServer> {
        let bin = dtm_binary();
        if !bin.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "DTM server binary not found at {} (run scripts/install-dtm.sh or set DTM_BIN)",
                    bin.display()
                ),
            ));
        }
        let http_port = free_port()?;
        let grpc_port = free_port()?;
        let dir = std::env::temp_dir().join(format!("dtm-rs-{}-{}", std::process::id(), http_port));
        std::fs::create_dir_all(&dir)?;
        let child = spawn_watchdog(&bin, &dir, http_port, grpc_port, &config, true)?;
        let mut server = DtmServer {
            child,
            restarted: Vec::new(),
            config,
            dir,
            http_port,
            grpc_port,
        };
        server.wait_ready(Duration::from_secs(20))?;
        Ok(server)
    }

    /// SIGKILLs the DTM process (a crash: nothing is flushed, open requests are cut) and
    /// waits until its ports are free. A no-op if it is not running.
    pub fn kill(&mut self) -> io::Result<()> {
        let pid = std::fs::read_to_string(self.dir.join("dtm.pid"))?;
        let pid = pid.trim();
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(io::Error::other(format!("bad DTM pid file: {pid:?}")));
        }
        // Only while that pid is still DTM: after a kill the pid may belong to another process.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let name: String = dtm_binary()
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(15).collect())
            .unwrap_or_default();
        if comm.trim() != name {
            return Ok(());
        }
        let _ = Command::new("kill")
            .args(["-KILL", pid])
            .stderr(Stdio::null())
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !port_free(self.http_port) || !port_free(self.grpc_port) {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the ports of a killed DTM stayed busy for 20 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts a new DTM process on the same ports, directory and environment (after
    /// [`DtmServer::kill`]) and waits until it answers.
    pub fn restart(&mut self) -> io::Result<()> {
        let child = spawn_watchdog(
            &dtm_binary(),
            &self.dir,
            self.http_port,
            self.grpc_port,
            &self.config,
            false,
        )?;
        // Only the newest watchdog is watched by `wait_ready`. The first one owns the
        // directory and stays until drop; later ones (their DTM is dead) go at once.
        let mut old = std::mem::replace(&mut self.child, child);
        if self.restarted.is_empty() {
            self.restarted.push(old);
        } else {
            drop(old.stdin.take());
            let _ = old.wait();
        }
        self.wait_ready(Duration::from_secs(20))
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "DTM exited with {status} before it was ready; log: {}",
                    self.log_tail()
                )));
            }
            if version_ok(self.http_port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("DTM not ready after {timeout:?}; log: {}", self.log_tail()),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dtm.log")
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("dtm.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The HTTP API base URL (`http://127.0.0.1:<port>/api/dtmsvr`).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/dtmsvr", self.http_port)
    }

    /// The gRPC address (`127.0.0.1:<port>`).
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }
}

/// Starts DTM under a small shell watchdog: DTM runs as its child (its pid in `dtm.pid`) and
/// is killed, and (for the `owner`) the scratch directory removed, as soon as our end of the
/// watchdog's stdin closes, which also happens when this process dies without dropping us.
/// The watchdog kills that pid only while it is still DTM (a killed DTM's pid may have been
/// reused).
fn spawn_watchdog(
    bin: &std::path::Path,
    dir: &std::path::Path,
    http_port: u16,
    grpc_port: u16,
    config: &DtmServerConfig,
    owner: bool,
) -> io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dtm.log"))?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#""$0" & pid=$!; echo $pid >"$1/dtm.pid"; c=$(basename "$0" | cut -c1-15); trap '[ "$(cat /proc/$pid/comm 2>/dev/null)" = "$c" ] && kill $pid 2>/dev/null; wait $pid 2>/dev/null; [ "$2" = owner ] && rm -rf "$1"' EXIT; cat >/dev/null"#)
        .arg(bin)
        .arg(dir)
        .arg(if owner { "owner" } else { "restarted" })
        .current_dir(dir)
        .env("HTTP_PORT", http_port.to_string())
        .env("GRPC_PORT", grpc_port.to_string())
        .env("TRANS_CRON_INTERVAL", config.cron_interval_secs.to_string())
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (k, v) in &config.env {
        cmd.env(k, v);
    }
    cmd.spawn()
}

/// True when nothing listens on `port` (DTM binds every interface).
fn port_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// A minimal blocking HTTP/1.0 probe, so readiness needs no runtime.
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

impl Drop for DtmServer {
    fn drop(&mut self) {
        for c in self.restarted.iter_mut().skip(1).chain([&mut self.child]) {
            drop(c.stdin.take());
            let _ = c.wait();
        }
        // The owner (the first watchdog) last: it removes the directory.
        if let Some(owner) = self.restarted.first_mut() {
            drop(owner.stdin.take());
            let _ = owner.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
