//! Replay tests for workflows (feature `workflow`): export what DTM recorded of real runs to
//! files, and check in CI that new code still replays every one of them, with no DTM and
//! no services (`dtm_workflow::Workflows::replay`).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use dtm_workflow::Workflows;
//! // Once, against a real run (staging, or a test with DTM): keep the file in the repo.
//! # let live = Workflows::offline();
//! dtm_testkit::history::export(&live, "order-42", "tests/histories/order-42.json").await?;
//!
//! // In CI, without DTM: the service's workflows, registered on an offline registry.
//! let wfs = Workflows::offline();
//! // register_all(&wfs)?;
//! let replayed = dtm_testkit::history::replay_dir(&wfs, "tests/histories").await?;
//! assert!(replayed > 0);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use dtm_workflow::{History, Workflows};

use crate::error::{Error, Result};

/// Exports what DTM holds of workflow `gid` (through `wfs`'s DTM connection) to the JSON
/// file at `path`; returns the history.
pub async fn export(wfs: &Workflows, gid: &str, path: impl AsRef<Path>) -> Result<History> {
    let history = wfs.export_history(gid).await?;
    history.save(path)?;
    Ok(history)
}

/// Replays the history in the JSON file at `path` with `wfs`'s workflows.
pub async fn replay_file(wfs: &Workflows, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let history = History::load(path)?;
    wfs.replay(&history).await.map_err(|error| Error::Replay {
        file: path.to_path_buf(),
        error: Box::new(error),
    })
}

/// Replays every `*.json` history in `dir` (sorted by name) with `wfs`'s workflows; returns
/// how many replayed. The first that does not replay is the error, naming its file.
pub async fn replay_dir(wfs: &Workflows, dir: impl AsRef<Path>) -> Result<usize> {
    let dir = dir.as_ref();
    let read = std::fs::read_dir(dir).map_err(|source| Error::Io {
        what: format!("reading {}", dir.display()),
        source,
    })?;
    let mut files: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in &files {
        replay_file(wfs, f).await?;
    }
    Ok(files.len())
}
