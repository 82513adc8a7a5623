//! The test kit's one error type.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use dtmcli::QueryResult;

/// What went wrong while finding, building, starting, stopping or querying a DTM server, or
/// preparing its store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No DTM binary where [`crate::find_binary`] looked.
    #[error(
        "no DTM server binary found (looked at: {}); set DTM_BIN, put `dtm` on PATH, or call dtm_testkit::install() to build {} with Go",
        paths(searched),
        crate::DTM_VERSION
    )]
    BinaryNotFound {
        /// Every place looked at, in order.
        searched: Vec<PathBuf>,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// DTM exited before it answered.
    #[error("DTM exited with {status} before it answered; last lines of its log:\n{log}")]
    Exited {
        /// The exit status, as the OS reported it.
        status: String,
        /// The end of its log (store passwords redacted).
        log: String,
    },
    /// DTM did not answer in time.
    #[error("DTM did not answer on port {port} within {waited:?}; last lines of its log:\n{log}")]
    NotReady {
        /// Its HTTP port.
        port: u16,
        /// How long it was given.
        waited: Duration,
        /// The end of its log (store passwords redacted).
        log: String,
    },
    /// Building DTM with Go failed.
    #[error("installing DTM {}: {message}", crate::DTM_VERSION)]
    Install {
        /// What failed, with the end of the build log when there is one.
        message: String,
    },
    /// A call to DTM failed (a client could not be built, a query was refused).
    #[error(transparent)]
    Dtm(#[from] dtmcli::Error),
    /// A recorded workflow history did not replay (feature `workflow`): its file, and
    /// the replay's error (`NonDeterministic` naming the step where the code diverges).
    #[error("{}: {error}", file.display())]
    Replay {
        /// The history's file.
        file: PathBuf,
        /// Why it did not replay.
        error: Box<dtmcli::Error>,
    },
    /// A transaction did not reach the status waited for.
    #[error(transparent)]
    Wait(Box<WaitError>),
    /// A database, schema or user name the store cannot use safely.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// What the name is for (`database`, `schema`).
        what: &'static str,
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Creating a store's schema needs a feature this build does not have.
    #[error(
        "creating DTM's {store} schema needs dtm-testkit's `{feature}` feature (or run dtm_testkit::schema::{store}_ddl yourself)"
    )]
    FeatureDisabled {
        /// The store (`mysql`, `postgres`).
        store: &'static str,
        /// The feature to enable.
        feature: &'static str,
    },
    /// A statement or connection of the store's set-up failed.
    #[error("{what}: {source}")]
    Store {
        /// What was being done (the statement, without credentials).
        what: String,
        /// The database driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn paths(p: &[PathBuf]) -> String {
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why waiting for a transaction failed: the deadline passed, or it ended in another final
/// status than the one waited for. Holds DTM's last answer so a test can look further.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WaitError {
    /// The gid waited for.
    pub gid: String,
    /// What was waited for (`status succeed`, `a final status`, `the condition`).
    pub expected: String,
    /// How long it waited.
    pub waited: Duration,
    /// DTM's last answer, if a query succeeded.
    pub last: Option<QueryResult>,
    /// The last query's error, if the last query failed.
    pub last_error: Option<String>,
}

impl WaitError {
    /// The transaction's last status seen (`None`: DTM did not know the gid, or no query
    /// succeeded).
    pub fn last_status(&self) -> Option<&str> {
        self.last
            .as_ref()
            .and_then(|q| q.transaction.as_ref())
            .map(|t| t.status.as_str())
    }

    /// True when the transaction ended in a final status other than the one waited for
    /// (waiting longer would not help).
    pub fn ended_otherwise(&self) -> bool {
        self.last
            .as_ref()
            .and_then(|q| q.transaction.as_ref())
            .is_some_and(|t| t.status().is_final())
    }
}

/// `branch_id/op=status` for each row, as DTM returned them.
pub(crate) fn branch_rows(q: &QueryResult) -> Vec<String> {
    q.branches
        .iter()
        .map(|b| format!("{}/{}={}", b.branch_id, b.op, b.status))
        .collect()
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gid {}: ", self.gid)?;
        let trans = self.last.as_ref().and_then(|q| q.transaction.as_ref());
        match trans {
            Some(t) if t.status().is_final() => write!(
                f,
                "waited for {}, but it ended {} after {:?}",
                self.expected, t.status, self.waited
            )?,
            Some(t) => write!(
                f,
                "{} not reached within {:?}; last status {}",
                self.expected, self.waited, t.status
            )?,
            None if self.last.is_some() => write!(
                f,
                "{} not reached within {:?}; DTM does not know this gid",
                self.expected, self.waited
            )?,
            None => write!(
                f,
                "{} not reached within {:?}; no query answered",
                self.expected, self.waited
            )?,
        }
        if let Some(t) = trans {
            if !t.rollback_reason.is_empty() {
                write!(f, " (rollback reason: {})", t.rollback_reason)?;
            }
        }
        if let Some(q) = &self.last {
            if trans.is_some() {
                write!(f, "; branches [{}]", branch_rows(q).join(", "))?;
            }
        }
        if let Some(e) = &self.last_error {
            write!(f, "; last query failed: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WaitError {}

impl From<WaitError> for Error {
    fn from(e: WaitError) -> Self {
        Error::Wait(Box::new(e))
    }
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The wait's details, when this is a [`Error::Wait`].
    pub fn as_wait(&self) -> Option<&WaitError> {
        match self {
            Error::Wait(w) => Some(w),
            _ => None,
        }
    }
}

/// The test kit's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
