//! The Go interop service (tests/go, on DTM's own Go SDK), started by the tests that check
//! wire compatibility with a real Go service. Built by scripts/build-go-service.sh.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the Go service once per test binary (idempotent script) and returns its path.
fn go_binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new("bash")
            .arg(root().join("scripts/build-go-service.sh"))
            .status()
            .expect("run scripts/build-go-service.sh");
        assert!(status.success(), "scripts/build-go-service.sh failed");
        root().join(".tools/bin/go-interop")
    })
}

/// A running Go service; killed when dropped.
pub struct GoService {
    child: Child,
    /// `http://<listen>`.
    pub base: String,
}

impl GoService {
    /// Starts the service on `listen` with extra environment `vars`; waits until it answers.
    pub async fn start(listen: &str, vars: &[(&str, String)]) -> GoService {
        let busi_base = url("x").trim_end_matches("/x").to_string();
        let child = Command::new(go_binary())
            .env("DTM_HTTP", env().server.http_url())
            .env("LISTEN", listen)
            .env("BUSI", busi_base)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Go service");
        let svc = GoService {
            child,
            base: format!("http://{listen}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while svc.local_runs("-").await.is_none() {
            assert!(Instant::now() < deadline, "the Go service did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        svc
    }

    /// How often the workflow's local step ran here for `gid` (`None`: no answer).
    pub async fn local_runs(&self, gid: &str) -> Option<usize> {
        let r = reqwest::get(format!("{}/local_runs?gid={gid}", self.base))
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Runs the workflow in the Go service: its result and error text.
    pub async fn execute(&self, gid: &str, input: &str) -> (String, String) {
        let r: HashMap<String, String> = reqwest::Client::new()
            .post(format!("{}/start?gid={gid}", self.base))
            .body(input.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (r["result"].clone(), r["error"].clone())
    }

    /// Kills the service and waits for it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GoService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free local address (the port is released for the service that takes it next).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}
