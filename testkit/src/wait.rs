//! Waiting for a transaction by polling DTM's query API, with a deadline.
//!
//! Query errors do not end the wait (DTM may be restarting in a crash test): the deadline
//! does, and the error then names the last status, branches and query error seen.

use std::time::{Duration, Instant};

use dtmcli::{DtmClient, QueryResult, TransStatus};

use crate::error::{Result, WaitError};

/// How often DTM is asked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `query(gid)` until `done` holds for DTM's answer or `timeout` passes; returns
/// that answer.
pub async fn until(
    dtm: &DtmClient,
    gid: &str,
    timeout: Duration,
    done: impl Fn(&QueryResult) -> bool,
) -> Result<QueryResult> {
    poll(dtm, gid, timeout, "the condition", |q| {
        if done(q) {
            Step::Done
        } else {
            Step::Wait
        }
    })
    .await
}

/// Waits until `gid` has `status`. A transaction that ends in another final status fails
/// at once (waiting longer would not change it), naming the status and the rollback reason.
pub async fn status(
    dtm: &DtmClient,
    gid: &str,
    status: TransStatus,
    timeout: Duration,
) -> Result<QueryResult> {
    let expected = format!("status {}", status.as_str());
    poll(dtm, gid, timeout, &expected, reached(status)).await
}

/// [`status`], fast-forwarding DTM's retry schedule: before each poll DTM is asked to process
/// `gid` at its next cron pass (`resetNextCronTime`), so a transaction DTM would retry only
/// after minutes (a long retry interval, a backed-off workflow) is retried within about a
/// cron interval. The retries themselves are DTM's own. Only DTM's SQL stores act on the
/// request (see `dtmcli::DtmClient::reset_next_cron_time`): run such tests on
/// [`crate::Store::Mysql`] or [`crate::Store::Postgres`]. A refused request (the
/// transaction is final, or DTM is restarting) is ignored; the query tells.
pub async fn fast_forward(
    dtm: &DtmClient,
    gid: &str,
    status: TransStatus,
    timeout: Duration,
) -> Result<QueryResult> {
    let expected = format!("status {} (fast-forwarded)", status.as_str());
    poll_with(dtm, gid, timeout, &expected, true, reached(status)).await
}

/// Waits until `gid` is final (`succeed` or `failed`) and returns DTM's answer: check its
/// status yourself (`q.transaction.map(|t| t.status())`).
pub async fn final_status(dtm: &DtmClient, gid: &str, timeout: Duration) -> Result<QueryResult> {
    until(dtm, gid, timeout, |q| {
        q.transaction
            .as_ref()
            .is_some_and(|t| t.status().is_final())
    })
    .await
    .map_err(|e| match e {
        crate::Error::Wait(mut w) => {
            w.expected = "a final status".to_string();
            crate::Error::Wait(w)
        }
        other => other,
    })
}

/// Done once `gid` has `status`; stopped once it has another final one.
fn reached(status: TransStatus) -> impl Fn(&QueryResult) -> Step {
    move |q| match q.transaction.as_ref().map(|t| t.status()) {
        Some(s) if s == status => Step::Done,
        Some(s) if s.is_final() => Step::Stop,
        _ => Step::Wait,
    }
}

enum Step {
    Done,
    Wait,
    Stop,
}

async fn poll(
    dtm: &DtmClient,
    gid: &str,
    timeout: Duration,
    expected: &str,
    step: impl Fn(&QueryResult) -> Step,
) -> Result<QueryResult> {
    poll_with(dtm, gid, timeout, expected, false, step).await
}

/// [`poll`], asking DTM before each query to process `gid` at its next cron pass when
/// `nudge` is set.
async fn poll_with(
    dtm: &DtmClient,
    gid: &str,
    timeout: Duration,
    expected: &str,
    nudge: bool,
    step: impl Fn(&QueryResult) -> Step,
) -> Result<QueryResult> {
    let start = Instant::now();
    let mut last = None;
    let mut last_error: Option<String>;
    loop {
        if nudge {
            // Refused once final or while DTM restarts: the query below tells.
            let _ = dtm.reset_next_cron_time(gid).await;
        }
        match dtm.query(gid).await {
            Ok(q) => {
                last_error = None;
                match step(&q) {
                    Step::Done => return Ok(q),
                    Step::Stop => {
                        last = Some(q);
                        break;
                    }
                    Step::Wait => last = Some(q),
                }
            }
            Err(e) => last_error = Some(e.to_string()),
        }
        if start.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL.min(timeout.saturating_sub(start.elapsed()))).await;
    }
    Err(WaitError {
        gid: gid.to_string(),
        expected: expected.to_string(),
        waited: start.elapsed(),
        last,
        last_error,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(json: serde_json::Value) -> QueryResult {
        serde_json::from_value(json).unwrap()
    }

    fn err(last: Option<QueryResult>, last_error: Option<&str>) -> String {
        WaitError {
            gid: "g-1".into(),
            expected: "status succeed".into(),
            waited: Duration::from_secs(3),
            last,
            last_error: last_error.map(str::to_string),
        }
        .to_string()
    }

    #[test]
    fn messages_name_the_last_status_and_branches() {
        let running = q(serde_json::json!({
            "transaction": {"gid": "g-1", "status": "submitted"},
            "branches": [
                {"branch_id": "01", "op": "compensate", "status": "prepared"},
                {"branch_id": "01", "op": "action", "status": "prepared"}
            ]
        }));
        assert_eq!(
            err(Some(running), None),
            "gid g-1: status succeed not reached within 3s; last status submitted; \
             branches [01/compensate=prepared, 01/action=prepared]"
        );
        let failed = q(serde_json::json!({
            "transaction": {"gid": "g-1", "status": "failed", "rollback_reason": "no money"},
            "branches": []
        }));
        assert_eq!(
            err(Some(failed), None),
            "gid g-1: waited for status succeed, but it ended failed after 3s \
             (rollback reason: no money); branches []"
        );
        assert_eq!(
            err(Some(q(serde_json::json!({}))), None),
            "gid g-1: status succeed not reached within 3s; DTM does not know this gid"
        );
        assert_eq!(
            err(None, Some("connection refused")),
            "gid g-1: status succeed not reached within 3s; no query answered; \
             last query failed: connection refused"
        );
    }

    #[test]
    fn ended_otherwise() {
        let w = WaitError {
            gid: "g".into(),
            expected: "x".into(),
            waited: Duration::ZERO,
            last: Some(q(serde_json::json!({"transaction": {"status": "failed"}}))),
            last_error: None,
        };
        assert!(w.ended_otherwise());
        assert_eq!(w.last_status(), Some("failed"));
    }

    #[tokio::test]
    async fn an_unreachable_server_times_out_with_its_error() {
        let port = crate::free_port().unwrap();
        let dtm = DtmClient::new(format!("http://127.0.0.1:{port}/api/dtmsvr")).unwrap();
        let e = final_status(&dtm, "g-1", Duration::from_millis(300))
            .await
            .unwrap_err();
        let w = e.as_wait().expect("a wait error");
        assert!(w.last.is_none() && w.last_error.is_some(), "{e}");
        assert!(e.to_string().contains("a final status not reached"), "{e}");
    }
}
