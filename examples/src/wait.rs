//! Waiting for a transaction's outcome by polling DTM's query API with a deadline.

use std::time::{Duration, Instant};

use dtmcli::{DtmClient, QueryResult};

/// Polls `query(gid)` every 100 ms until `pred` holds or `timeout` passes; returns the last
/// answer, or an error naming the last status seen.
pub async fn until(
    dtm: &DtmClient,
    gid: &str,
    timeout: Duration,
    pred: impl Fn(&QueryResult) -> bool,
) -> Result<QueryResult, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let q = dtm.query(gid).await.map_err(|e| e.to_string())?;
        if pred(&q) {
            return Ok(q);
        }
        if Instant::now() > deadline {
            let status = q.transaction.as_ref().map(|t| t.status.clone());
            return Err(format!(
                "gid {gid}: condition not met after {timeout:?}; last status {status:?}, branches {:?}",
                q.branches
                    .iter()
                    .map(|b| format!("{}/{}={}", b.branch_id, b.op, b.status))
                    .collect::<Vec<_>>()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the transaction's status is `status`.
pub async fn status(
    dtm: &DtmClient,
    gid: &str,
    status: &str,
    timeout: Duration,
) -> Result<QueryResult, String> {
    until(dtm, gid, timeout, |q| {
        q.transaction.as_ref().is_some_and(|t| t.status == status)
    })
    .await
}
