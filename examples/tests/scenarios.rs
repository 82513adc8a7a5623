//! Runs every scenario of the `dtm-examples` binary (`all`) against a real DTM server and
//! the databases of scripts/start-dbs.sh; each scenario checks its own outcome and the
//! binary exits non-zero when one does not hold.

use std::process::Command;

#[test]
fn every_scenario_runs_and_checks_its_outcome() {
    let out = Command::new(env!("CARGO_BIN_EXE_dtm-examples"))
        .arg("all")
        .output()
        .expect("run dtm-examples");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The summary table (and, on failure, every scenario's narrative) in the test's output.
    let summary = stdout.find("\nscenario ").map_or("", |i| &stdout[i..]);
    println!("{summary}");
    assert!(
        out.status.success(),
        "dtm-examples all failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(" scenarios passed"),
        "no summary:\n{stdout}"
    );
}
