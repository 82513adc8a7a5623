//! What the SDK tells a caller about a global transaction: an outcome only when DTM stored
//! it.
//!
//! DTM's answer to a call does not always say how the transaction ends. With `wait_result`,
//! DTM runs the transaction once inside the submit and answers FAILURE whenever it is not
//! `succeed` afterwards: also when a branch answered a retryable error or ONGOING and DTM
//! will retry it, so the saga may still commit (`dtmsvr/trans_process.go`). A TCC whose
//! confirm failed once answers HTTP 500, and DTM confirms it later. A second submit of a
//! saga that succeeded answers FAILURE (`cannot submit`). So whenever DTM's answer to a call
//! that decides a transaction is not a plain success, the SDK reads what DTM stored for the
//! gid ([`Transport::query`], bounded by the client's timeout) and reports that:
//!
//! | DTM stored | `submit` | `submit` with `wait_result` | `prepare` answered FAILURE |
//! |---|---|---|---|
//! | `succeed` | `Ok` | `Ok` | [`Error::InvalidInput`]: the gid is a finished transaction, nothing ran |
//! | `failed` | [`Error::Failure`] with the stored rollback reason | the same | the same |
//! | `submitted` | `Ok`: DTM accepted it and will finish it | [`Error::NotFinal`] | [`Error::NotFinal`] |
//! | `prepared`, `aborting` | [`Error::NotFinal`] | [`Error::NotFinal`] | [`Error::NotFinal`] |
//! | nothing | DTM's answer: the call had no effect | the same | [`Error::NotFinal`] without a status |
//! | cannot be read | DTM's answer, but a FAILURE or ONGOING becomes [`Error::NotFinal`] without a status | the same | the same |
//! | the gid as another mode (a msg, where this is a saga) | [`Error::InvalidInput`]: another transaction, nothing of this one ran | the same | the same |
//!
//! So `Ok` after a `wait_result` submit means DTM's status is `succeed`, and without
//! `wait_result` that DTM holds the transaction and will run it; [`Error::Failure`] means
//! DTM stored `failed`; [`Error::NotFinal`] (with the gid and the stored status) means DTM
//! holds it unfinished and will finish it: [`wait_final`] waits for that, with a deadline.
//! A plain success answer is taken as it is (DTM answers success to a `wait_result` submit
//! only once the transaction is `succeed`). An error raised before anything was sent
//! ([`Error::InvalidInput`]) is returned as it is, and so is a cluster's
//! [`Error::Ambiguous`], which already asked every server within the call's bounds.
//!
//! `aborting` is reported as not final although DTM only ever moves it to `failed`: the
//! compensations have not all run yet, so the money has not all moved back.
//!
//! A TCC or XA transaction whose closure fails returns the closure's error after the abort:
//! an aborted (or never submitted, hence timed-out) TCC or XA only ever ends `failed`.
//! A workflow's outcomes follow the same rule (see `dtm_workflow::Workflows::execute`).

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::transport::Transport;
use crate::types::TransType;
use crate::wire::{TransGlobal, TransStatus};

/// What to report after DTM answered a `submit` of `gid` (the mode's own, or a workflow's
/// end) with `answer`, per the table above.
pub(crate) async fn submitted<T: Transport>(
    transport: &T,
    gid: &str,
    trans_type: TransType,
    wait_result: bool,
    answer: Result<()>,
) -> Result<()> {
    let answer = match answer {
        Ok(()) => return Ok(()),
        // Refused before sending; already settled; or a cluster that already asked DTM
        // (every server, within its bounds) and could not tell.
        Err(e @ (Error::InvalidInput(_) | Error::NotFinal { .. } | Error::Ambiguous { .. })) => {
            return Err(e)
        }
        Err(e) if sent_nothing(&e) => return Err(e),
        Err(e) => e,
    };
    let stored = match stored(transport, gid).await {
        Ok(Some(g)) => g,
        Ok(None) => return Err(answer),
        Err(read) => return Err(unread(gid, answer, &read)),
    };
    if let Some(other) = another_type(&stored, trans_type, &answer) {
        return Err(other);
    }
    match stored.status() {
        TransStatus::Succeed => {
            tracing::info!(gid, answer = %answer, "DTM holds the transaction succeed: the submit's answer did not say so");
            Ok(())
        }
        TransStatus::Failed => Err(Error::Failure(reason(stored, &answer))),
        TransStatus::Submitted if !wait_result => Ok(()),
        s => Err(Error::not_final(gid, Some(s), answer)),
    }
}

/// What to report after DTM answered the `prepare` that starts `gid` with `answer`: a
/// FAILURE or ONGOING (DTM holds the gid in another status, so nothing may run) is read
/// against what DTM stored, per the table above; other errors are returned as they are (the
/// prepare can be sent again).
pub(crate) async fn prepared<T: Transport>(
    transport: &T,
    gid: &str,
    trans_type: TransType,
    answer: Result<()>,
) -> Result<()> {
    let answer = match answer {
        Err(e @ (Error::Failure(_) | Error::Ongoing(_))) => e,
        other => return other,
    };
    match stored(transport, gid).await {
        Ok(Some(g)) => Err(match another_type(&g, trans_type, &answer) {
            Some(other) => other,
            None => match g.status() {
                TransStatus::Failed => Error::Failure(reason(g, &answer)),
                TransStatus::Succeed => Error::invalid(format!(
                    "{gid} is a transaction DTM already finished (succeed): this prepare ran nothing ({answer})"
                )),
                s => Error::not_final(gid, Some(s), answer),
            },
        }),
        Ok(None) => Err(Error::not_final(gid, None, answer)),
        Err(read) => Err(unread(gid, answer, &read)),
    }
}

/// Waits until DTM holds transaction `gid` final, at most `timeout`: `Ok` once it is
/// `succeed`, [`Error::Failure`] with the stored rollback reason once it is `failed`,
/// [`Error::NotFinal`] with the last status read when `timeout` passes first (a gid DTM does
/// not hold is not final either). DTM is asked every 100 ms at first, then less often (at
/// most once a second); each query is bounded by the client's timeout and by the deadline.
/// A transport that cannot read DTM's state ([`Transport::query`]) is
/// [`Error::InvalidInput`] at once.
///
/// Every client has it as a method (`DtmClient::wait_final`, ...). DTM retries a branch at
/// its `retry_interval`, doubled after each error: the timeout must allow for that.
pub async fn wait_final<T: Transport>(transport: &T, gid: &str, timeout: Duration) -> Result<()> {
    wait(transport, gid, timeout, true).await
}

/// [`wait_final`] for a call that must end by `timeout` (a cluster's lost `wait_result`
/// submit): its first query is cut at the deadline too.
#[cfg(feature = "http")]
pub(crate) async fn wait_final_within<T: Transport>(
    transport: &T,
    gid: &str,
    timeout: Duration,
) -> Result<()> {
    wait(transport, gid, timeout, false).await
}

/// [`wait_final`]; `ask_once` gives the first query the client's timeout even past the
/// deadline, so that a zero timeout still reads DTM's state once.
async fn wait<T: Transport>(
    transport: &T,
    gid: &str,
    timeout: Duration,
    ask_once: bool,
) -> Result<()> {
    crate::identity::check_gid_not_empty(gid)?;
    let deadline = Instant::now()
        .checked_add(crate::limits::clamp_timeout(timeout))
        .unwrap_or_else(Instant::now);
    let mut pause = Duration::from_millis(100);
    let mut last: Option<TransStatus> = None;
    let mut trouble = String::new();
    let mut first = ask_once;
    loop {
        // Each query within the client's timeout; after the first, also within the deadline.
        let limit = transport.limits().timeout();
        let own = Instant::now() + limit;
        let until = if first { own } else { own.min(deadline) };
        first = false;
        match tokio::time::timeout_at(until, transport.query(gid)).await {
            Ok(Ok(q)) => match q.transaction {
                Some(g) => match g.status() {
                    TransStatus::Succeed => return Ok(()),
                    TransStatus::Failed => return Err(Error::Failure(g.rollback_reason)),
                    s => {
                        last = Some(s);
                        trouble.clear();
                    }
                },
                None => trouble = "DTM holds no such transaction".to_string(),
            },
            Ok(Err(e @ Error::InvalidInput(_))) => return Err(e),
            Ok(Err(e)) => trouble = format!("the last query failed: {e}"),
            Err(_) if until == own => {
                trouble = format!("the last query got no answer within {limit:?}")
            }
            // Cut by the deadline: what was read before stands.
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            let mut detail = format!("not final within {timeout:?}");
            if !trouble.is_empty() {
                detail = format!("{detail}; {trouble}");
            }
            return Err(Error::not_final(gid, last, detail));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// DTM identifies a transaction by its gid alone: a gid DTM holds as another mode (a msg,
/// where this is a saga) is another transaction, whose status says nothing of this one.
fn another_type(stored: &TransGlobal, trans_type: TransType, answer: &Error) -> Option<Error> {
    (stored.trans_type != trans_type.as_str()).then(|| {
        Error::invalid(format!(
            "{} is a {:?} transaction in DTM, not this {}: nothing of this one ran ({answer})",
            stored.gid,
            stored.trans_type,
            trans_type.as_str()
        ))
    })
}

/// A request whose connection was refused never left: nothing to read back.
fn sent_nothing(e: &Error) -> bool {
    #[cfg(feature = "http")]
    if let Error::Transport { source, .. } = e {
        return source.is_connect();
    }
    let _ = e;
    false
}

/// DTM's stored transaction `gid` (`None`: DTM holds none), read within the client's
/// timeout.
async fn stored<T: Transport>(transport: &T, gid: &str) -> Result<Option<TransGlobal>> {
    let limit = transport.limits().timeout();
    match tokio::time::timeout(limit, transport.query(gid)).await {
        Ok(q) => q.map(|q| q.transaction),
        Err(_) => Err(Error::other(format!(
            "DTM did not answer a query of {gid} within {limit:?}"
        ))),
    }
}

/// The answer, when DTM's state could not be read: a FAILURE or ONGOING said nothing
/// definite (DTM answers FAILURE for a transaction it will retry), so it is not final.
fn unread(gid: &str, answer: Error, read: &Error) -> Error {
    match answer {
        Error::Failure(_) | Error::Ongoing(_) => Error::not_final(
            gid,
            None,
            format!("DTM answered {answer}, and its stored state could not be read: {read}"),
        ),
        other => other,
    }
}

/// The reason DTM stored for a failed transaction, or its answer's message when it stored
/// none (a msg failed by its back-check).
fn reason(stored: TransGlobal, answer: &Error) -> String {
    match answer {
        _ if !stored.rollback_reason.is_empty() => stored.rollback_reason,
        Error::Failure(m) => m.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::fake::FakeDtm;
    use crate::limits::Limits;
    use crate::wire::QueryResult;

    /// A transport whose only working call is `query`, answering the statuses it is given in
    /// turn (the last one for ever); `None` for a gid DTM does not hold.
    #[derive(Debug, Clone)]
    struct Stored {
        statuses: Arc<Mutex<Vec<Option<&'static str>>>>,
        readable: bool,
        /// Answers `query` as a transport without it does.
        blind: bool,
        /// The mode DTM holds the gid as.
        trans_type: &'static str,
        limits: Limits,
    }

    fn stored(statuses: &[Option<&'static str>]) -> Stored {
        Stored {
            statuses: Arc::new(Mutex::new(statuses.to_vec())),
            readable: true,
            blind: false,
            trans_type: "saga",
            limits: Limits::default(),
        }
    }

    impl FakeDtm for Stored {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn limits(&self) -> &Limits {
            &self.limits
        }
        fn query(&self, _: &str) -> impl Future<Output = Result<QueryResult>> + Send {
            let this = self.clone();
            async move {
                if this.blind {
                    return Err(Error::invalid("cannot read DTM's stored state"));
                }
                if !this.readable {
                    return Err(Error::other("DTM's HTTP API is down"));
                }
                let mut s = this.statuses.lock().unwrap();
                let status = if s.len() > 1 { s.remove(0) } else { s[0] };
                Ok(QueryResult {
                    transaction: status.map(|st| TransGlobal {
                        gid: "g".into(),
                        trans_type: this.trans_type.into(),
                        status: st.into(),
                        rollback_reason: if st == "failed" {
                            "TransIn refused".into()
                        } else {
                            String::new()
                        },
                        ..Default::default()
                    }),
                    branches: Vec::new(),
                })
            }
        }
    }

    /// The class of a report: "ok", "failure", "not final", or the error's text.
    fn class(r: &Result<()>) -> String {
        match r {
            Ok(()) => "ok".into(),
            Err(Error::Failure(m)) => format!("failure: {m}"),
            Err(Error::NotFinal { status, .. }) => {
                format!("not final: {}", status.as_ref().map_or("?", |s| s.as_str()))
            }
            Err(e) => e.to_string(),
        }
    }

    async fn submit_table(wait: bool, answer: fn() -> Error) -> Vec<String> {
        let mut out = Vec::new();
        for s in crate::resolve::STORED_STATUSES {
            let t = stored(&[s]);
            out.push(class(
                &submitted(&t, "g", TransType::Saga, wait, Err(answer())).await,
            ));
        }
        out
    }

    #[tokio::test]
    async fn a_submit_reports_what_dtm_stored_not_what_it_answered() {
        let failure = || Error::failure("wait result not return success");
        // Columns: nothing, prepared, submitted, aborting, succeed, failed.
        assert_eq!(
            submit_table(true, failure).await,
            [
                "failure: wait result not return success",
                "not final: prepared",
                "not final: submitted",
                "not final: aborting",
                "ok",
                "failure: TransIn refused"
            ]
        );
        assert_eq!(
            submit_table(false, failure).await,
            [
                "failure: wait result not return success",
                "not final: prepared",
                "ok",
                "not final: aborting",
                "ok",
                "failure: TransIn refused"
            ]
        );
        // DTM's HTTP 500 for a TCC whose confirm failed once: not final, never a plain error
        // once DTM holds the transaction.
        let status = || Error::Status {
            url: "u".into(),
            status: 500,
            body: "confirm broke".into(),
        };
        assert_eq!(submit_table(true, status).await[2], "not final: submitted");
        assert!(submit_table(true, status).await[0].contains("HTTP 500"));
    }

    #[tokio::test]
    async fn a_gid_dtm_holds_as_another_mode_is_another_transaction() {
        let mut t = stored(&[Some("succeed")]);
        t.trans_type = "msg";
        let failure = || Err(Error::failure("current status 'succeed', cannot sumbmit"));
        let e = submitted(&t, "g", TransType::Saga, false, failure()).await;
        assert!(
            matches!(e, Err(Error::InvalidInput(ref m)) if m.contains("\"msg\" transaction")),
            "{e:?}"
        );
        let e = prepared(&t, "g", TransType::Tcc, failure()).await;
        assert!(matches!(e, Err(Error::InvalidInput(_))), "{e:?}");
    }

    #[tokio::test]
    async fn a_success_and_errors_raised_before_sending_are_taken_as_they_are() {
        let t = stored(&[Some("failed")]);
        assert_eq!(
            class(&submitted(&t, "g", TransType::Saga, true, Ok(())).await),
            "ok"
        );
        let e = submitted(
            &t,
            "g",
            TransType::Saga,
            true,
            Err(Error::invalid("bad gid")),
        )
        .await;
        assert!(matches!(e, Err(Error::InvalidInput(_))), "{e:?}");
    }

    #[tokio::test]
    async fn an_unreadable_state_never_turns_an_answer_into_an_outcome() {
        let mut t = stored(&[Some("failed")]);
        t.readable = false;
        let e = submitted(&t, "g", TransType::Saga, true, Err(Error::failure("x"))).await;
        assert_eq!(class(&e), "not final: ?");
        let e = submitted(&t, "g", TransType::Saga, true, Err(Error::other("reset"))).await;
        assert_eq!(class(&e), "reset");
    }

    #[tokio::test]
    async fn a_refused_prepare_says_why_and_never_runs_anything() {
        let mut out = Vec::new();
        for s in crate::resolve::STORED_STATUSES {
            let t = stored(&[s]);
            let answer = Err(Error::failure("current status 'x', cannot prepare"));
            out.push(class(&prepared(&t, "g", TransType::Saga, answer).await));
        }
        assert_eq!(out[0], "not final: ?");
        assert_eq!(out[2], "not final: submitted");
        assert!(out[4].starts_with("invalid input: g is a transaction DTM already finished"));
        assert_eq!(out[5], "failure: TransIn refused");
        // A transport error is left for the caller to send again.
        let t = stored(&[Some("succeed")]);
        assert_eq!(
            class(&prepared(&t, "g", TransType::Saga, Err(Error::other("reset"))).await),
            "reset"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wait_final_waits_for_the_end_and_gives_up_at_the_deadline() {
        let t = stored(&[Some("submitted"), Some("submitted"), Some("succeed")]);
        assert_eq!(
            class(&wait_final(&t, "g", Duration::from_secs(5)).await),
            "ok"
        );
        let t = stored(&[None, Some("aborting"), Some("failed")]);
        assert_eq!(
            class(&wait_final(&t, "g", Duration::from_secs(5)).await),
            "failure: TransIn refused"
        );
        let t = stored(&[Some("submitted")]);
        let started = Instant::now();
        let e = wait_final(&t, "g", Duration::from_secs(3)).await;
        assert_eq!(class(&e), "not final: submitted");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        // A zero timeout still asks once.
        let t = stored(&[Some("succeed")]);
        assert_eq!(class(&wait_final(&t, "g", Duration::ZERO).await), "ok");
    }

    #[tokio::test]
    async fn wait_final_on_a_transport_that_cannot_read_says_so_at_once() {
        let mut t = stored(&[None]);
        t.blind = true;
        let e = wait_final(&t, "g", Duration::from_secs(600)).await;
        assert!(matches!(e, Err(Error::InvalidInput(_))), "{e:?}");
    }
}
