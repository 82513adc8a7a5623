//! Starting a real DTM server for the examples and tests: the launcher is the
//! [`dtm_testkit`] crate; this module keeps the names the examples use.

use std::path::PathBuf;

pub use dtm_testkit::{free_port, DtmServer, DtmServerConfig, Store};

/// The DTM binary [`DtmServer::start`] runs ([`dtm_testkit::find_binary`]), for messages;
/// when none is found, the path to install it to (`scripts/install-dtm.sh`).
pub fn dtm_binary() -> PathBuf {
    dtm_testkit::find_binary().unwrap_or_else(|_| {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.tools/bin/dtm"))
    })
}
