//! Finding DTM servers for [`crate::cluster::Cluster::discovered`]: a DNS name resolved
//! again and again (a Kubernetes headless service, whose name resolves to one address per
//! ready pod), feeding the cluster's server list as it changes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Error, Result};

/// Resolves `host:port` now and then every `every`, and sends the servers it names
/// (`url` makes each one's address from a resolved socket address, e.g.
/// `|a| format!("http://{a}/api/dtmsvr")`) whenever the set changes, sorted.
///
/// The first resolution happens before this returns: a name that does not resolve, or
/// resolves to nothing, is an error then. Later failures keep the last list (a warning is
/// logged), so a DNS hiccup does not empty the cluster. The resolving task ends when every
/// receiver is dropped (the cluster with it). Feed the receiver to
/// [`crate::cluster::Cluster::discovered`]:
///
/// ```no_run
/// # async fn f() -> dtmcli::Result<()> {
/// use std::time::Duration;
/// use dtmcli::cluster::{Cluster, DEFAULT_COOLDOWN};
/// let servers = dtmcli::discovery::resolve_every(
///     "dtm-headless.default.svc.cluster.local",
///     36789,
///     Duration::from_secs(10),
///     |a| format!("http://{a}/api/dtmsvr"),
/// )
/// .await?;
/// let dtm = Cluster::discovered(servers, |s| dtmcli::DtmClient::new(s), DEFAULT_COOLDOWN)?;
/// # let _ = dtm; Ok(()) }
/// ```
pub async fn resolve_every(
    host: &str,
    port: u16,
    every: Duration,
    url: impl Fn(SocketAddr) -> String + Send + Sync + 'static,
) -> Result<watch::Receiver<Vec<String>>> {
    let target = format!("{host}:{port}");
    let first = resolve(&target, &url).await?;
    if first.is_empty() {
        return Err(Error::invalid(format!("{target} resolves to no address")));
    }
    let (tx, rx) = watch::channel(first);
    let every = every.max(Duration::from_secs(1));
    tokio::spawn(async move {
        loop {
            // Every receiver gone (the cluster dropped): stop.
            if tokio::time::timeout(every, tx.closed()).await.is_ok() {
                return;
            }
            match resolve(&target, &url).await {
                Ok(servers) if !servers.is_empty() => {
                    tx.send_if_modified(|current| {
                        let changed = *current != servers;
                        if changed {
                            tracing::info!(target = %target, ?servers, "DTM servers changed");
                            *current = servers;
                        }
                        changed
                    });
                }
                Ok(_) => {
                    tracing::warn!(target = %target, "resolves to no address: keeping the last list")
                }
                Err(e) => {
                    tracing::warn!(target = %target, error = %e, "not resolved: keeping the last list")
                }
            }
        }
    });
    Ok(rx)
}

/// The longest one resolution may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The servers `target` resolves to now, sorted and without repeats.
async fn resolve(target: &str, url: &impl Fn(SocketAddr) -> String) -> Result<Vec<String>> {
    // The system resolver has its own timeouts, but they add up over retries and
    // servers: one resolution gets at most this long.
    let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(target));
    let addrs = lookup
        .await
        .map_err(|_| {
            Error::other(format!(
                "resolving {target}: no answer within {LOOKUP_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| Error::other(format!("resolving {target}: {e}")))?;
    let set: BTreeSet<String> = addrs.map(url).collect();
    Ok(set.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_an_error_at_once() {
        let r = resolve_every("no-such-host.invalid", 1, Duration::from_secs(1), |a| {
            a.to_string()
        })
        .await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn localhost_resolves_and_the_task_ends_with_its_receivers() {
        let rx = resolve_every("localhost", 36789, Duration::from_secs(1), |a| {
            format!("http://{a}/api/dtmsvr")
        })
        .await
        .unwrap();
        let servers = rx.borrow().clone();
        assert!(servers.iter().any(|s| s.contains(":36789/")), "{servers:?}");
        drop(rx);
    }
}
