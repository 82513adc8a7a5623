//! The bounds every call of the SDK keeps, in time and in answer size, written once for the
//! HTTP client ([`crate::DtmClient`]), the gRPC client (`dtmgrpc`) and the workflow
//! recorders: a peer that never answers, or answers without end, cannot hold or exhaust a
//! service.

use std::time::Duration;

#[cfg(feature = "http")]
#[cfg(feature = "http")]
#[doc(hidden)]
pub use crate::http::bounds::{call_http_branch, http_client, read_answer};

/// Default timeout of each call, to DTM or to a branch, when the transaction sets no
/// `request_timeout` (30 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default connect timeout of the connections a client opens itself (3 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest timeout any call gets (one day). Longer settings, `Duration::MAX` included,
/// are clamped to it: every call stays bounded, and deadline arithmetic cannot overflow.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Default cap on the body of one answer, from DTM or from a branch (8 MiB). DTM's answers
/// are small JSON objects; the largest are `query` and `prepareWorkflow`, which carry every
/// branch's stored data. Reading stops at the cap with [`crate::Error::TooLarge`], so a peer
/// streaming an endless body cannot exhaust memory.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Default cap on the idle connections a client keeps open per host (DTM, each branch
/// service): enough to serve a burst again without reconnecting, bounded so that a burst of
/// thousands of concurrent transactions does not leave thousands of sockets open.
pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 64;

/// How long an idle connection is kept before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Clamps a timeout to [`MAX_TIMEOUT`].
pub fn clamp_timeout(d: Duration) -> Duration {
    d.min(MAX_TIMEOUT)
}

/// A client's bounds: the timeout of its calls, of its connects, and the largest answer it
/// reads. Every setter clamps to [`MAX_TIMEOUT`], so no value panics or overflows later.
/// One value for every client builder (`DtmClientBuilder::limits`,
/// `DtmGrpcClientBuilder::limits`):
///
/// ```
/// use std::time::Duration;
/// let limits = dtmcli::Limits::default()
///     .with_timeout(Duration::from_secs(10))
///     .with_max_answer_bytes(1 << 20);
/// assert_eq!(limits.timeout(), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    timeout: Duration,
    /// The branch calls' own timeout; `None`: [`Limits::timeout`].
    branch_timeout: Option<Duration>,
    connect_timeout: Duration,
    max_answer_bytes: usize,
    max_idle_per_host: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: DEFAULT_TIMEOUT,
            branch_timeout: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            max_idle_per_host: DEFAULT_MAX_IDLE_PER_HOST,
        }
    }
}

impl Limits {
    /// These bounds with this call timeout: the timeout of each call to DTM, and of each
    /// branch call the SDK makes itself (TCC try, XA action, msg back-check, workflow
    /// steps) unless [`Limits::with_branch_timeout`] sets theirs, when the transaction sets
    /// no `request_timeout` (default [`DEFAULT_TIMEOUT`], 30 s). Calls with `wait_result`
    /// get this plus the transaction's own request timeout, since the server runs branches
    /// inside them. Clamped to [`MAX_TIMEOUT`] (one day), so `Duration::MAX` is accepted.
    pub fn with_timeout(mut self, d: Duration) -> Self {
        self.set_timeout(d);
        self
    }

    /// These bounds with a timeout of their own for the branch calls the SDK makes itself
    /// (TCC try, XA action, msg back-check, a workflow's recorded HTTP and gRPC calls),
    /// apart from the calls to DTM ([`Limits::with_timeout`]): a slow business service then
    /// cannot hold a caller longer than this, while DTM's calls keep theirs. A transaction's
    /// `request_timeout` still overrides it for that transaction, as DTM's own calls to the
    /// branches do. Default: the call timeout (30 s). Clamped to [`MAX_TIMEOUT`].
    pub fn with_branch_timeout(mut self, d: Duration) -> Self {
        self.set_branch_timeout(d);
        self
    }

    /// These bounds with this connect timeout, for the connections the client opens itself,
    /// to DTM and to branches (default [`DEFAULT_CONNECT_TIMEOUT`], 3 s; at most
    /// [`MAX_TIMEOUT`]). Not applied to a client or channel you bring.
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.set_connect_timeout(d);
        self
    }

    /// These bounds with this answer cap: the largest answer read from DTM or from a
    /// branch, in bytes (default [`DEFAULT_MAX_ANSWER_BYTES`], 8 MiB): the body cap over
    /// HTTP, tonic's `max_decoding_message_size` over gRPC. A longer answer is
    /// [`crate::Error::TooLarge`].
    pub fn with_max_answer_bytes(mut self, limit: usize) -> Self {
        self.set_max_answer_bytes(limit);
        self
    }

    /// These bounds keeping at most `n` idle HTTP connections to each host (DTM, each
    /// branch service; default [`DEFAULT_MAX_IDLE_PER_HOST`]). Not applied to an HTTP
    /// client you bring.
    pub fn with_max_idle_per_host(mut self, n: usize) -> Self {
        self.set_max_idle_per_host(n);
        self
    }

    /// Sets the call timeout used when a transaction sets no `request_timeout`.
    pub fn set_timeout(&mut self, d: Duration) {
        self.timeout = clamp_timeout(d);
    }

    /// Sets the branch calls' own timeout ([`Limits::with_branch_timeout`]).
    pub fn set_branch_timeout(&mut self, d: Duration) {
        self.branch_timeout = Some(clamp_timeout(d));
    }

    /// The timeout of the branch calls the SDK makes itself when the transaction sets no
    /// `request_timeout`: [`Limits::with_branch_timeout`], else the call timeout.
    pub fn branch_timeout(&self) -> Duration {
        self.branch_timeout.unwrap_or(self.timeout)
    }

    /// Sets the connect timeout.
    pub fn set_connect_timeout(&mut self, d: Duration) {
        self.connect_timeout = clamp_timeout(d);
    }

    /// Sets the largest answer read, in bytes.
    pub fn set_max_answer_bytes(&mut self, limit: usize) {
        self.max_answer_bytes = limit;
    }

    /// Sets how many idle connections are kept per host.
    pub fn set_max_idle_per_host(&mut self, n: usize) {
        self.max_idle_per_host = n;
    }

    /// How many idle connections are kept per host.
    pub fn max_idle_per_host(&self) -> usize {
        self.max_idle_per_host
    }

    /// The call timeout used when a transaction sets no `request_timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The largest answer read, in bytes.
    pub fn max_answer_bytes(&self) -> usize {
        self.max_answer_bytes
    }

    /// The timeout of a call to DTM for a transaction: its `request_timeout` (clamped),
    /// else the client's.
    pub fn call_timeout(&self, request_timeout: Option<Duration>) -> Duration {
        match request_timeout {
            Some(d) if !d.is_zero() => clamp_timeout(d),
            _ => self.timeout,
        }
    }

    /// The timeout of a branch call the SDK makes for a transaction: its `request_timeout`
    /// (clamped), else [`Limits::branch_timeout`].
    pub fn branch_call_timeout(&self, request_timeout: Option<Duration>) -> Duration {
        match request_timeout {
            Some(d) if !d.is_zero() => clamp_timeout(d),
            _ => self.branch_timeout(),
        }
    }

    /// The timeout of a call to DTM carrying a transaction whose `request_timeout` is
    /// `request_timeout_secs` on the wire: with `wait_result` the server runs the branches
    /// inside the call, so the client's timeout is added (saturating, clamped).
    pub fn dtm_call_timeout(&self, request_timeout_secs: i64, wait_result: bool) -> Duration {
        let own = self.call_timeout(
            u64::try_from(request_timeout_secs)
                .ok()
                .map(Duration::from_secs),
        );
        if wait_result {
            clamp_timeout(own.saturating_add(self.timeout))
        } else {
            own
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_saturates() {
        let mut l = Limits::default();
        l.set_timeout(Duration::MAX);
        l.set_connect_timeout(Duration::MAX);
        assert_eq!(
            (l.timeout(), l.connect_timeout()),
            (MAX_TIMEOUT, MAX_TIMEOUT)
        );
        assert_eq!(l.call_timeout(Some(Duration::MAX)), MAX_TIMEOUT);
        assert_eq!(l.call_timeout(Some(Duration::ZERO)), MAX_TIMEOUT);
        assert_eq!(l.dtm_call_timeout(i64::MAX, true), MAX_TIMEOUT);
        assert_eq!(l.dtm_call_timeout(-1, false), MAX_TIMEOUT);
        let d = Limits::default();
        assert_eq!(d.dtm_call_timeout(5, false), Duration::from_secs(5));
        assert_eq!(d.dtm_call_timeout(5, true), Duration::from_secs(35));
        assert_eq!(d.dtm_call_timeout(0, true), Duration::from_secs(60));
    }

    #[test]
    fn branch_calls_have_a_bound_of_their_own() {
        let d = Limits::default();
        assert_eq!(d.branch_timeout(), DEFAULT_TIMEOUT);
        let l = Limits::default()
            .with_timeout(Duration::from_secs(30))
            .with_branch_timeout(Duration::from_secs(2));
        assert_eq!(l.branch_call_timeout(None), Duration::from_secs(2));
        assert_eq!(l.call_timeout(None), Duration::from_secs(30));
        // The transaction's request_timeout wins for both, as in DTM.
        let own = Some(Duration::from_secs(5));
        assert_eq!(l.branch_call_timeout(own), Duration::from_secs(5));
        assert_eq!(l.dtm_call_timeout(5, false), Duration::from_secs(5));
        // Clamped like every bound; a later call timeout does not move it.
        let l = l
            .with_branch_timeout(Duration::MAX)
            .with_timeout(Duration::from_secs(1));
        assert_eq!(l.branch_timeout(), MAX_TIMEOUT);
    }
}
