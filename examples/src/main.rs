//! `dtm-examples`: every DTM scenario, runnable by name against a real DTM server.
//!
//! ```text
//! cargo run -p dtm-examples -- list              # the scenarios
//! cargo run -p dtm-examples -- http_saga_barrier # one (or several) by name
//! cargo run -p dtm-examples -- all               # every one, with a summary
//! ```
//!
//! DTM comes from `$DTM_BIN` or `.tools/bin/dtm` (scripts/install-dtm.sh); the scenarios
//! that need a database expect those of scripts/start-dbs.sh. Exits non-zero when a
//! scenario's outcome is not what it should be.

use std::process::ExitCode;
use std::time::Instant;

use dtm_examples::scenarios::{self, Env, Scenario};

fn usage() {
    println!("usage: dtm-examples list | all | <scenario>...\n");
    println!(
        "{:<30} {:<24} what it shows",
        "scenario", "needs (besides DTM)"
    );
    for s in scenarios::ALL {
        println!("{:<30} {:<24} {}", s.name, s.needs, s.about);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The stepping scenario's worker process (it starts this program again).
    if args.get(..2) == Some(&["__worker".to_string(), "stepping".to_string()][..]) {
        let rest = args.get(2..).unwrap_or_default();
        return match dtm_examples::founding::stepping::worker(rest).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stepping worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let chosen: Vec<&'static Scenario> = match args.first().map(String::as_str) {
        None | Some("list" | "help" | "-h" | "--help") => {
            usage();
            return ExitCode::SUCCESS;
        }
        Some("all") => scenarios::ALL.iter().collect(),
        Some(_) => {
            let mut v = Vec::new();
            for a in &args {
                match scenarios::find(a) {
                    Some(s) => v.push(s),
                    None => {
                        eprintln!("unknown scenario {a:?} (see `dtm-examples list`)");
                        return ExitCode::from(2);
                    }
                }
            }
            v
        }
    };
    let env = match Env::start().await {
        Ok(env) => env,
        Err(e) => {
            eprintln!("cannot start the environment: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for s in &chosen {
        println!("== {}: {}", s.name, s.about);
        let t = Instant::now();
        let r = (s.run)(&env).await;
        let secs = t.elapsed().as_secs_f64();
        match &r {
            Ok(()) => println!("   ok ({secs:.1} s)\n"),
            Err(e) => {
                println!("   FAILED: {e}\n");
                failed.push(s.name);
            }
        }
        summary.push((s.name, r.is_ok(), secs));
    }
    if chosen.len() > 1 {
        println!("{:<30} {:>6} {:>8}", "scenario", "result", "seconds");
        for (name, ok, secs) in &summary {
            println!(
                "{name:<30} {:>6} {secs:>8.1}",
                if *ok { "ok" } else { "FAILED" }
            );
        }
        println!(
            "{} of {} scenarios passed",
            summary.len() - failed.len(),
            summary.len()
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
