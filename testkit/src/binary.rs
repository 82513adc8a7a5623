//! Finding the DTM server binary, or building it with Go.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The DTM server version this kit is written and tested against.
pub const DTM_VERSION: &str = "v1.19.0";

/// The Go module of the DTM server.
pub const DTM_MODULE: &str = "github.com/dtm-labs/dtm";

/// Where to look for the binary, in order, given the environment (`var`) and the current
/// directory. Pure, so the order is unit-tested.
fn candidates(var: &dyn Fn(&str) -> Option<OsString>, cwd: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(path) = var("PATH") {
        out.extend(std::env::split_paths(&path).map(|d| d.join("dtm")));
    }
    // A workspace that installs DTM into `.tools/bin` (as this SDK's own scripts do): the
    // nearest one above the crate being tested (cargo sets CARGO_MANIFEST_DIR when it runs
    // tests and binaries) or above the current directory.
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(m) = var("CARGO_MANIFEST_DIR") {
        roots.push(PathBuf::from(m));
    }
    if let Some(c) = cwd {
        roots.push(c.to_path_buf());
    }
    for root in roots {
        for dir in root.ancestors() {
            let p = dir.join(".tools").join("bin").join("dtm");
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    // Go's bin directory: where a plain `go install` puts it.
    if let Some(gobin) = var("GOBIN").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(gobin).join("dtm"));
    } else if let Some(gopath) = var("GOPATH").filter(|v| !v.is_empty()) {
        if let Some(first) = std::env::split_paths(&gopath).next() {
            out.push(first.join("bin").join("dtm"));
        }
    } else if let Some(home) = var("HOME") {
        out.push(PathBuf::from(home).join("go").join("bin").join("dtm"));
    }
    if let Some(dir) = cache_dir_from(var) {
        out.push(dir.join("dtm"));
    }
    out
}

fn cache_dir_from(var: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let base = match var("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(var("HOME")?).join(".cache"),
    };
    Some(base.join("dtm-testkit").join(DTM_VERSION))
}

fn env_var(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// The directory [`install`] builds into: `$XDG_CACHE_HOME/dtm-testkit/<version>`, else
/// `~/.cache/dtm-testkit/<version>`.
pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_from(&env_var)
}

/// Finds the DTM server binary:
///
/// 1. `$DTM_BIN` (an error if it names no file: an explicit choice is not second-guessed);
/// 2. `dtm` on `PATH`;
/// 3. `.tools/bin/dtm` in `$CARGO_MANIFEST_DIR` or the current directory, or one of their
///    ancestors (where this SDK's `scripts/install-dtm.sh` puts it);
/// 4. Go's bin directory (`$GOBIN`, else `$GOPATH/bin`, else `~/go/bin`);
/// 5. [`cache_dir`], where [`install`] puts it.
///
/// The version is not checked here ([`binary_version`] does).
pub fn find_binary() -> Result<PathBuf> {
    if let Some(p) = env_var("DTM_BIN").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::BinaryNotFound { searched: vec![p] })
        };
    }
    let cwd = std::env::current_dir().ok();
    let searched = candidates(&env_var, cwd.as_deref());
    match searched.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(Error::BinaryNotFound { searched }),
    }
}

/// The version a DTM binary reports (`dtm -v` prints `dtm version: v1.19.0`).
pub fn binary_version(bin: &Path) -> Result<String> {
    // Run outside any project directory: DTM may read files from its working directory.
    let (status, stdout) = run_quick(
        Command::new(bin)
            .arg("-v")
            .current_dir(std::env::temp_dir()),
        &format!("{} -v", bin.display()),
    )?;
    parse_version(&String::from_utf8_lossy(&stdout)).ok_or_else(|| Error::Install {
        message: format!(
            "{} -v printed no 'dtm version: ...' line (exit {status})",
            bin.display()
        ),
    })
}

fn parse_version(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("dtm version: "))
        .map(|v| v.trim().to_string())
}

/// [`find_binary`], else [`install`].
pub fn find_or_install() -> Result<PathBuf> {
    match find_binary() {
        Err(Error::BinaryNotFound { .. }) if env_var("DTM_BIN").is_none() => install(),
        other => other,
    }
}

/// Builds DTM [`DTM_VERSION`] with the machine's Go (1.22 or later, `GOTOOLCHAIN=local`)
/// into [`cache_dir`], unless a binary of that version is already there; returns its path.
///
/// Runs `go install -ldflags "-X main.Version=<version>" github.com/dtm-labs/dtm@<version>`
/// with `GOBIN` set to the cache directory. When the module proxy refuses the version list
/// (it has answered `403 Forbidden` while still serving the module itself), it falls back
/// to `go mod download -json` and `go build` in the downloaded module directory; a linker
/// complaint about `go:linkname` is retried with `-checklinkname=0`. The binary must then
/// report the pinned version.
///
/// Blocking, and slow the first time: a cold build compiles about 200 Go modules (several
/// minutes on two cores); Go's caches make later builds fast. Concurrent callers (several
/// test binaries) wait for one build. The build log is `install.log` in the cache directory.
pub fn install() -> Result<PathBuf> {
    let dir = cache_dir().ok_or_else(|| Error::Install {
        message: "neither XDG_CACHE_HOME nor HOME is set: no cache directory".to_string(),
    })?;
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let bin = dir.join("dtm");
    if is_pinned(&bin) {
        return Ok(bin);
    }
    let lock_path = dir.join("install.lock");
    let lock = fs::File::create(&lock_path)
        .map_err(|e| Error::io(format!("creating {}", lock_path.display()), e))?;
    // One build at a time across processes; the lock goes with the file handle.
    lock.lock()
        .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    if is_pinned(&bin) {
        return Ok(bin);
    }
    let go = find_go()?;
    let log_path = dir.join("install.log");
    let tmp = dir.join(format!(".build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let result = build(&go, &tmp, &log_path).and_then(|built| {
        let got = binary_version(&built)?;
        if got != DTM_VERSION {
            return Err(Error::Install {
                message: format!("the built binary reports {got}, expected {DTM_VERSION}"),
            });
        }
        // A rename within one directory: other processes see the old binary or the new one.
        fs::rename(&built, &bin)
            .map_err(|e| Error::io(format!("moving the build to {}", bin.display()), e))
    });
    let _ = fs::remove_dir_all(&tmp);
    result.map(|()| bin)
}

fn is_pinned(bin: &Path) -> bool {
    bin.is_file() && binary_version(bin).is_ok_and(|v| v == DTM_VERSION)
}

/// `go` on PATH, else `/usr/local/go/bin/go`, at version 1.22 or later (DTM's go.mod).
fn find_go() -> Result<PathBuf> {
    let on_path = env_var("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("go"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let go = on_path
        .into_iter()
        .chain([PathBuf::from("/usr/local/go/bin/go")])
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Install {
            message: "Go is not installed (no `go` on PATH nor /usr/local/go/bin/go); DTM needs Go 1.22 or later".to_string(),
        })?;
    let (_, stdout) = run_quick(
        Command::new(&go)
            .args(["env", "GOVERSION"])
            .env("GOTOOLCHAIN", "local"),
        &format!("{} env GOVERSION", go.display()),
    )?;
    let version = String::from_utf8_lossy(&stdout).trim().to_string();
    if !go_at_least_1_22(&version) {
        return Err(Error::Install {
            message: format!(
                "{} is {:?}; DTM {DTM_VERSION} needs Go 1.22 or later",
                go.display(),
                version
            ),
        });
    }
    Ok(go)
}

fn go_at_least_1_22(goversion: &str) -> bool {
    let Some(rest) = goversion.strip_prefix("go1.") else {
        return false;
    };
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    minor.parse::<u32>().is_ok_and(|m| m >= 22)
}

/// Builds into `tmp/dtm`: `go install`, else download + build; each retried once with
/// `-checklinkname=0` if the linker refused a `go:linkname`.
fn build(go: &Path, tmp: &Path, log_path: &Path) -> Result<PathBuf> {
    // Append mode: the go commands append to the same file.
    fs::write(log_path, "")
        .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(log_path)
        .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
    let base = format!("-X main.Version={DTM_VERSION}");
    let linkname = format!("{base} -checklinkname=0");
    for ldflags in [base.as_str(), linkname.as_str()] {
        let module = format!("{DTM_MODULE}@{DTM_VERSION}");
        let _ = writeln!(log, "== go install -ldflags {ldflags:?} {module}");
        let mut install = go_command(go);
        install
            .env("GOBIN", tmp)
            .args(["install", "-ldflags", ldflags, &module]);
        if run_logged(&mut install, log_path)? {
            return Ok(tmp.join("dtm"));
        }
        let _ = writeln!(log, "== go mod download -json {module}, then go build");
        if let Some(dir) = download(go, &module, log_path)? {
            let mut b = go_command(go);
            b.current_dir(&dir)
                .args(["build", "-ldflags", ldflags, "-o"])
                .arg(tmp.join("dtm"))
                .arg(".");
            if run_logged(&mut b, log_path)? {
                return Ok(tmp.join("dtm"));
            }
        }
        let text = fs::read_to_string(log_path).unwrap_or_default();
        if !text.contains("linkname") || ldflags == linkname {
            return Err(Error::Install {
                message: format!(
                    "go could not build it (log {}):\n{}",
                    log_path.display(),
                    tail(&text, 30)
                ),
            });
        }
        let _ = writeln!(
            log,
            "== the linker refused a go:linkname: again with -checklinkname=0"
        );
    }
    Err(Error::Install {
        message: format!("go could not build it (log {})", log_path.display()),
    })
}

fn go_command(go: &Path) -> Command {
    let mut c = Command::new(go);
    // No toolchain download, and no VCS stamping (the module cache has no .git).
    c.env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-buildvcs=false")
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` with its output appended to the log; true when it succeeded.
fn run_logged(cmd: &mut Command, log_path: &Path) -> Result<bool> {
    let open = || {
        fs::OpenOptions::new()
            .append(true)
            .open(log_path)
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))
    };
    let (status, _) = run_bounded(
        cmd.stdout(open()?).stderr(open()?),
        BUILD,
        "go (building DTM)",
    )?;
    Ok(status.success())
}

/// How long `dtm -v` or `go env` may take.
const QUICK: Duration = Duration::from_secs(30);
/// How long one `go install`, `go mod download` or `go build` of DTM may take (a cold build
/// takes a few minutes on 2 cores).
const BUILD: Duration = Duration::from_secs(30 * 60);

/// Runs a command that only reports something (`dtm -v`, `go env`) with [`run_bounded`]:
/// no input, its stdout read, its stderr dropped, at most [`QUICK`].
fn run_quick(cmd: &mut Command, what: &str) -> Result<(ExitStatus, Vec<u8>)> {
    let cmd = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    run_bounded(cmd, QUICK, what)
}

/// Runs `cmd` until it exits, or kills it once `limit` has passed (a typed error then):
/// its status, and its stdout unless the caller redirected it. The output read is small
/// (`dtm -v`, `go env`, `go mod download -json`), so it is read after the exit.
fn run_bounded(cmd: &mut Command, limit: Duration, what: &str) -> Result<(ExitStatus, Vec<u8>)> {
    use std::io::Read as _;
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("running {what}"), e))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::io(format!("waiting for {what}"), e))?
        {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Install {
                message: format!("{what} did not finish within {limit:?}: killed"),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut stdout);
    }
    Ok((status, stdout))
}

/// `go mod download -json <module>`: the module's directory in Go's module cache.
fn download(go: &Path, module: &str, log_path: &Path) -> Result<Option<PathBuf>> {
    let stderr = fs::OpenOptions::new()
        .append(true)
        .open(log_path)
        .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
    let (status, stdout) = run_bounded(
        go_command(go)
            .args(["mod", "download", "-json", module])
            .stdout(Stdio::piped())
            .stderr(stderr),
        BUILD,
        "go mod download",
    )?;
    if let Ok(mut log) = fs::OpenOptions::new().append(true).open(log_path) {
        let _ = log.write_all(&stdout);
    }
    if !status.success() {
        return Ok(None);
    }
    let dir = serde_json::from_slice::<serde_json::Value>(&stdout)
        .ok()
        .and_then(|v| v.get("Dir").and_then(|d| d.as_str()).map(PathBuf::from));
    Ok(dir.filter(|d| d.join("go.mod").is_file()))
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn search_order_path_workspace_go_cache() {
        let var = env(&[
            ("PATH", "/usr/bin:/opt/x/bin"),
            ("CARGO_MANIFEST_DIR", "/src/ws/crate"),
            ("HOME", "/home/u"),
        ]);
        let got = candidates(&var, Some(Path::new("/src/ws/crate")));
        let want: Vec<PathBuf> = [
            "/usr/bin/dtm",
            "/opt/x/bin/dtm",
            "/src/ws/crate/.tools/bin/dtm",
            "/src/ws/.tools/bin/dtm",
            "/src/.tools/bin/dtm",
            "/.tools/bin/dtm",
            "/home/u/go/bin/dtm",
            "/home/u/.cache/dtm-testkit/v1.19.0/dtm",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn gobin_then_gopath_and_xdg_cache() {
        let var = env(&[("GOBIN", "/gb"), ("GOPATH", "/gp"), ("HOME", "/h")]);
        let got = candidates(&var, None);
        assert_eq!(
            got,
            [
                PathBuf::from("/gb/dtm"),
                PathBuf::from("/h/.cache/dtm-testkit/v1.19.0/dtm")
            ]
        );
        let var = env(&[("GOPATH", "/gp:/other"), ("XDG_CACHE_HOME", "/xdg")]);
        let got = candidates(&var, None);
        assert_eq!(
            got,
            [
                PathBuf::from("/gp/bin/dtm"),
                PathBuf::from("/xdg/dtm-testkit/v1.19.0/dtm")
            ]
        );
    }

    #[test]
    fn version_line() {
        assert_eq!(
            parse_version("dtm version: v1.19.0\n").as_deref(),
            Some("v1.19.0")
        );
        assert_eq!(parse_version("something else\n"), None);
    }

    #[test]
    fn go_versions() {
        assert!(go_at_least_1_22("go1.22.0"));
        assert!(go_at_least_1_22("go1.26.8"));
        assert!(go_at_least_1_22("go1.30rc1"));
        assert!(!go_at_least_1_22("go1.19.8"));
        assert!(!go_at_least_1_22("devel"));
    }

    #[test]
    fn a_command_that_hangs_is_killed_at_its_limit() {
        let t = Instant::now();
        let r = run_bounded(
            Command::new("sleep").arg("10"),
            Duration::from_millis(200),
            "sleep",
        );
        assert!(matches!(r, Err(Error::Install { .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
        let (status, out) = run_bounded(
            Command::new("echo").arg("hi").stdout(Stdio::piped()),
            QUICK,
            "echo",
        )
        .unwrap();
        assert!(status.success());
        assert_eq!(out, b"hi\n");
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
