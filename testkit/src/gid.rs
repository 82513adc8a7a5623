//! Gids unique to a test, for tests that share one DTM server and store with each other and
//! with earlier runs.

use std::sync::atomic::{AtomicU32, Ordering};

/// A gid starting with `name` and unique to this call: `name-<pid>-<ns>-<n>`, with the
/// process id, the sub-second time and a per-process counter. It has only characters DTM
/// accepts in a gid if `name` has only those (letters, digits, `-`, `_`).
pub fn unique_gid(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_unique_and_starts_with_the_name() {
        let (a, b) = (unique_gid("t"), unique_gid("t"));
        assert_ne!(a, b);
        assert!(a.starts_with("t-"), "{a}");
        assert!(dtmcli::identity::check_gid(&a).is_ok(), "{a}");
    }
}
