//! Re-running a local transaction after a transient database conflict.

use std::time::Duration;

/// How often and how patiently a guarded local transaction is re-run after a deadlock, a
/// lock wait timeout, a serialization failure or a write conflict (see
/// `BranchBarrier::call_reprocessing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReprocessPolicy {
    /// Total attempts, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub initial_backoff: Duration,
    /// Upper bound of the wait.
    pub max_backoff: Duration,
}

impl Default for ReprocessPolicy {
    fn default() -> Self {
        ReprocessPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl ReprocessPolicy {
    /// The wait after failed attempt number `attempt` (1-based), with a little jitter so two
    /// losers of the same conflict do not collide again.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(16);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Saturating: a policy with huge durations must not panic here.
        let jitter = (base / 4).saturating_mul(nanos % 1000) / 1000;
        base.saturating_add(jitter).min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn backoff_grows_and_is_bounded() {
        let p = ReprocessPolicy::default();
        assert!(p.backoff(1) >= Duration::from_millis(20));
        assert!(p.backoff(2) >= Duration::from_millis(40));
        assert!(p.backoff(30) <= Duration::from_secs(1));
        let huge = ReprocessPolicy {
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            ..ReprocessPolicy::default()
        };
        assert_eq!(huge.backoff(u32::MAX), Duration::MAX);
    }
}
