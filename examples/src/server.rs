//! Starting a real DTM server for the examples and tests.
//!
//! The binary comes from `$DTM_BIN`, else `<workspace>/.tools/bin/dtm` (installed by
//! `scripts/install-dtm.sh`). Each server runs in its own scratch directory on free ports,
//! with its embedded boltdb store, and stops when the [`DtmServer`] is dropped or, if it is
//! never dropped (a test-wide static), when this process exits.

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
        let log = std::fs::File::create(dir.join("dtm.log"))?;
        // A small shell watchdog: DTM runs as its child and is killed, and its scratch
        // directory removed, as soon as our end of the watchdog's stdin closes, which also
        // happens when this process dies without dropping us.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#""$0" & pid=$!; trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$1"' EXIT; cat >/dev/null"#)
            .arg(&bin)
            .arg(&dir)
            .current_dir(&dir)
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
        let child = cmd.spawn()?;
        let mut server = DtmServer {
            child,
            dir,
            http_port,
            grpc_port,
        };
        server.wait_ready(Duration::from_secs(20))?;
        Ok(server)
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
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
