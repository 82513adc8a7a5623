//! Runs the demo as `scripts/demo.sh` does (it checks its own outcome and exits non-zero
//! otherwise), inside the workspace's test run so that CI builds it with the same features
//! as everything else.

use std::process::Command;

#[test]
fn the_demo_tells_the_expected_story() {
    let out = Command::new(env!("CARGO_BIN_EXE_dtm-demo"))
        .output()
        .expect("run dtm-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dtm-demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "NULL COMPENSATION",
        "DUPLICATE",
        "All three outcomes are the expected ones.",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
}
