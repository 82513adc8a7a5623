//! Per-transaction options.

use std::collections::BTreeMap;
use std::time::Duration;

/// Options DTM applies to one global transaction.
///
/// Durations travel as whole seconds; a non-zero duration below one second is rounded up to
/// one second (DTM has no finer unit). Zero / `None` means "use the server's default".
/// A duration above [`MAX_WIRE_DURATION`] (100 years, `Duration::MAX` included) is sent as
/// that: DTM multiplies the seconds into a Go `time.Duration`, which holds only 292 years and
/// would wrap to a negative timeout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransOptions {
    /// Ask the server to run the transaction inside the submit (or abort) request. The
    /// submit then returns `Ok` only once DTM stored `succeed`, [`crate::Error::Failure`]
    /// once it stored `failed`, and [`crate::Error::NotFinal`] when DTM's one pass did not
    /// end it (a branch answered a retryable error or ONGOING and DTM retries it): see
    /// [`crate::outcome`].
    pub wait_result: bool,
    /// Abort after this long (TCC/XA), back-check after this long (msg), compensate after this
    /// long (saga; sagas have no default timeout).
    pub timeout_to_fail: Option<Duration>,
    /// Base interval between retries of a failing branch (doubled on errors, kept on ONGOING).
    pub retry_interval: Option<Duration>,
    /// Timeout of each call the server makes to a branch. Also the SDK's own timeout when it
    /// calls DTM for this transaction (plus the client's timeout with `wait_result`) and
    /// when it calls a branch itself (TCC try, XA action, msg back-check); without it the
    /// client's timeout applies ([`crate::Limits::with_timeout`]).
    pub request_timeout: Option<Duration>,
    /// Saga only: how many times a branch that is ongoing or erroring is retried before the
    /// saga aborts.
    pub retry_limit: Option<u32>,
    /// Headers sent on every call to a branch, by the server and by this SDK.
    pub branch_headers: BTreeMap<String, String>,
}

impl TransOptions {
    /// Sets [`TransOptions::wait_result`].
    pub fn wait_result(mut self, yes: bool) -> Self {
        self.wait_result = yes;
        self
    }
    /// Sets [`TransOptions::timeout_to_fail`].
    pub fn timeout_to_fail(mut self, d: Duration) -> Self {
        self.timeout_to_fail = Some(d);
        self
    }
    /// Sets [`TransOptions::retry_interval`].
    pub fn retry_interval(mut self, d: Duration) -> Self {
        self.retry_interval = Some(d);
        self
    }
    /// Sets [`TransOptions::request_timeout`].
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = Some(d);
        self
    }
    /// Sets [`TransOptions::retry_limit`].
    pub fn retry_limit(mut self, n: u32) -> Self {
        self.retry_limit = Some(n);
        self
    }
    /// Adds one branch header.
    pub fn branch_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.branch_headers.insert(name.into(), value.into());
        self
    }
}

/// The longest duration an option carries to DTM (100 years); longer ones are sent as this.
pub const MAX_WIRE_DURATION: Duration = Duration::from_secs(MAX_WIRE_SECS);

const MAX_WIRE_SECS: u64 = 100 * 365 * 86_400;

/// Whole seconds for the wire: `None`/zero → 0, otherwise rounded up, at most
/// [`MAX_WIRE_DURATION`] (saturating: `Duration::MAX` must not overflow).
pub(crate) fn secs(d: Option<Duration>) -> i64 {
    match d {
        None => 0,
        Some(d) if d.is_zero() => 0,
        Some(d) => {
            let s = d
                .as_secs()
                .saturating_add(u64::from(d.subsec_nanos() > 0))
                .min(MAX_WIRE_SECS);
            i64::try_from(s).unwrap_or(i64::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn rounding() {
        assert_eq!(secs(None), 0);
        assert_eq!(secs(Some(Duration::ZERO)), 0);
        assert_eq!(secs(Some(Duration::from_millis(1))), 1);
        assert_eq!(secs(Some(Duration::from_millis(1500))), 2);
        assert_eq!(secs(Some(Duration::from_secs(7))), 7);
    }

    #[test]
    fn extreme_durations_saturate() {
        let max = i64::try_from(MAX_WIRE_DURATION.as_secs()).unwrap();
        assert_eq!(secs(Some(Duration::MAX)), max);
        assert_eq!(secs(Some(Duration::from_secs(u64::MAX))), max);
        assert_eq!(secs(Some(MAX_WIRE_DURATION)), max);
        let r = crate::TransRequest::new(
            "g",
            crate::TransType::Saga,
            &TransOptions::default()
                .request_timeout(Duration::MAX)
                .timeout_to_fail(Duration::MAX)
                .retry_interval(Duration::MAX),
        );
        assert_eq!(
            (r.request_timeout, r.timeout_to_fail, r.retry_interval),
            (max, max, max)
        );
        #[cfg(feature = "http")]
        {
            let m = crate::DtmClient::new("http://localhost:1/api/dtmsvr")
                .unwrap()
                .msg("g")
                .delay(Duration::MAX);
            // (the HTTP transport is only the vehicle: the rule is the core's)
            assert_eq!(
                m.submit_request().unwrap().custom_data,
                format!("{{\"delay\":{max}}}")
            );
        }
    }
}
