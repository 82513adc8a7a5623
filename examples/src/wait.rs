//! Waiting for a transaction's outcome by polling DTM's query API with a deadline: the
//! [`dtm_testkit::wait`] functions.

pub use dtm_testkit::wait::{final_status, status, until, POLL_INTERVAL};
