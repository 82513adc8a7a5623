//! Throughput of a DTM cluster through `dtmcli::cluster::Cluster`: one, two and three real
//! DTM servers on one shared Redis store, the same sagas (two branches on an in-process
//! service) submitted at a fixed concurrency, and the time until DTM reports every one
//! final.
//!
//! ```text
//! cargo run --release -p dtm-examples --bin cluster_bench [transactions] [concurrency]
//! ```
//!
//! Every server, Redis, the branch service and this client share the machine's cores, so
//! on a small machine more servers mostly share the same CPU: the table says what this
//! machine allows, not what a cluster of machines would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dtm_examples::busi::{Busi, BusiReq};
use dtm_testkit::{DtmServer, DtmServerConfig, Store};
use dtmcli::cluster::Cluster;
use dtmcli::DtmClient;
use futures_util::stream::{self, StreamExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: usize = args.first().map_or(Ok(2000), |s| s.parse())?;
    let concurrency: usize = args.get(1).map_or(Ok(64), |s| s.parse())?;

    let servers: Vec<DtmServer> = {
        let store = Store::local_redis();
        let mut v = Vec::new();
        for _ in 0..3 {
            let cfg = DtmServerConfig::default().with_store(store.clone());
            v.push(DtmServer::start_async(cfg).await?);
        }
        v
    };
    let urls: Vec<String> = servers.iter().map(|s| s.http_url()).collect();
    let busi = Busi::new(DtmClient::new(&urls[0])?);
    let base = busi.serve(0).await?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "{total} sagas per row (2 branches each), concurrency {concurrency}, DTM {} on one Redis store, {cores} cores\n",
        DtmClient::new(&urls[0])?.version().await?
    );
    println!("| servers | ok | err | submit tps | p50 submit ms | p99 submit ms | all final s | completed tps |");
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|");
    for n in 1..=3 {
        let list: Vec<&str> = urls[..n].iter().map(String::as_str).collect();
        let cluster = Cluster::http(&DtmClient::new(list[0])?, &list)?;
        let row = run(&cluster, &base, total, concurrency, n).await?;
        println!("{row}");
    }
    drop(servers);
    Ok(())
}

async fn run(
    cluster: &Cluster<DtmClient>,
    base: &str,
    total: usize,
    concurrency: usize,
    n: usize,
) -> Result<String, BoxError> {
    let started = Instant::now();
    let gids: Vec<String> = (0..total)
        .map(|i| format!("bench-{}-{n}-{i:07}", std::process::id()))
        .collect();
    let base = Arc::new(base.to_string());
    let results: Vec<(bool, Duration)> = stream::iter(gids.clone())
        .map(|gid| {
            let (c, base) = (cluster.clone(), base.clone());
            async move {
                let t = Instant::now();
                let r = c
                    .saga(&gid)
                    .add(
                        &format!("{base}/TransOut"),
                        &format!("{base}/TransOutRevert"),
                        &BusiReq::new(1),
                    )
                    .add(
                        &format!("{base}/TransIn"),
                        &format!("{base}/TransInRevert"),
                        &BusiReq::new(1),
                    )
                    .submit()
                    .await;
                (r.is_ok(), t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let submitted = started.elapsed();
    let ok = results.iter().filter(|(ok, _)| *ok).count();
    let mut lat: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    // Every saga final (DTM runs the branches after submit returns).
    let deadline = Instant::now() + Duration::from_secs(600);
    for gid in &gids {
        loop {
            let q = cluster.query(gid).await?;
            if q.transaction.is_some_and(|t| t.status().is_final()) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{gid} not final after 600 s").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let done = started.elapsed();
    Ok(format!(
        "| {n} | {ok} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.0} |",
        total - ok,
        total as f64 / submitted.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        done.as_secs_f64(),
        total as f64 / done.as_secs_f64()
    ))
}
