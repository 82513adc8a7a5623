//! The barrier crate's error type.

/// Result alias of the barrier crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a barrier call, its business closure or an XA branch can fail with.
///
/// DTM's outcomes travel in [`Error::Dtm`] (failure, ongoing, duplicated); database errors
/// keep their driver type so callers and the reprocessing policy can inspect them. Convert to
/// [`dtmcli::Error`] with `?`/`into()` to answer DTM (database errors become retryable), or
/// to a tonic status with `dtmgrpc::IntoStatus`.
///
/// Inside a business closure, `?` takes a [`dtmcli::Error`] as it is: a
/// `dtmcli::Error::failure(..)` (or [`Error::failure`]) rolls the local transaction back and
/// the handler answers FAILURE; an ongoing answers ONGOING.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A DTM outcome or client error (failure, ongoing, duplicated, transport...).
    #[error(transparent)]
    Dtm(#[from] dtmcli::Error),

    /// A SQL database error.
    #[cfg(any(feature = "mysql", feature = "postgres"))]
    #[error("sql: {0}")]
    Sql(#[from] sqlx::Error),

    /// A Redis error.
    #[cfg(feature = "redis")]
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),

    /// A MongoDB error.
    #[cfg(feature = "mongodb")]
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),

    /// The barrier is misconfigured (bad table name, unusable transaction info...).
    #[error("barrier configuration: {0}")]
    Config(String),

    /// XA phase 2 could not commit or roll back the branch `xid`, which the database still
    /// lists as prepared (MariaDB answers "unknown xid" while the session that prepared it is
    /// still attached). Retryable: DTM calls phase 2 again until it goes through.
    #[error("xa {op} of {xid:?}: the branch is still prepared; phase 2 must be retried")]
    XaStillPrepared {
        /// The xid (`<gid>-<branch_id>`).
        xid: String,
        /// `commit` or `rollback`.
        op: String,
    },

    /// A commit whose outcome is unknown (the connection broke during COMMIT): the business
    /// may or may not have been applied, so it is never re-run automatically.
    #[error("commit outcome unknown: {0}")]
    AmbiguousCommit(Box<Error>),

    /// Any other application error from a business closure (retryable for DTM).
    #[error("{0}")]
    Business(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    /// A DTM failure: the branch answers FAILURE and the transaction rolls back.
    pub fn failure(msg: impl std::fmt::Display) -> Self {
        Error::Dtm(dtmcli::Error::failure(msg))
    }

    /// A DTM ongoing: DTM asks again later.
    pub fn ongoing(msg: impl std::fmt::Display) -> Self {
        Error::Dtm(dtmcli::Error::ongoing(msg))
    }

    /// Wraps an application error.
    pub fn business(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Error::Business(e.into())
    }

    /// True for a DTM failure.
    pub fn is_failure(&self) -> bool {
        matches!(self, Error::Dtm(e) if e.is_failure())
    }

    /// True for a DTM ongoing.
    pub fn is_ongoing(&self) -> bool {
        matches!(self, Error::Dtm(e) if e.is_ongoing())
    }

    /// True when the request or the configuration was refused before anything was written
    /// (converts to [`dtmcli::Error::InvalidInput`]): an identity the stores cannot hold
    /// exactly, a bad table name, a barrier table whose collation folds identities...
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::Config(_) | Error::Dtm(dtmcli::Error::InvalidInput(_))
        )
    }

    /// True for [`dtmcli::Error::Duplicated`]: a msg whose back-check ran first.
    pub fn is_duplicated(&self) -> bool {
        matches!(self, Error::Dtm(e) if e.is_duplicated())
    }
}

impl From<Error> for dtmcli::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Dtm(e) => e,
            Error::Config(m) => dtmcli::Error::InvalidInput(m),
            Error::Business(b) => dtmcli::Error::Other(b),
            other => dtmcli::Error::Database(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A business rule written against dtmcli, as a handler shares it with HTTP code.
    fn rule(balance: i64) -> dtmcli::Result<()> {
        match balance {
            b if b < 0 => Err(dtmcli::Error::failure("insufficient balance")),
            0 => Err(dtmcli::Error::ongoing("balance not settled yet")),
            _ => Ok(()),
        }
    }

    /// The body of a barrier closure: `?` on a dtmcli error.
    fn business(balance: i64) -> Result<()> {
        rule(balance)?;
        Ok(())
    }

    #[test]
    fn dtm_outcomes_cross_both_ways() {
        let e = business(-1).unwrap_err();
        assert!(e.is_failure(), "{e:?}");
        let back = dtmcli::Error::from(e);
        assert!(matches!(back, dtmcli::Error::Failure(ref m) if m == "insufficient balance"));
        let e = business(0).unwrap_err();
        assert!(e.is_ongoing(), "{e:?}");
        assert!(dtmcli::Error::from(e).is_ongoing());
        let e = Error::from(dtmcli::Error::Duplicated);
        assert!(e.is_duplicated());
        assert!(dtmcli::Error::from(e).is_duplicated());
        assert!(business(5).is_ok());
        // Errors of the barrier's own are retryable for DTM, or invalid input.
        let e = dtmcli::Error::from(Error::business("disk full"));
        assert_eq!(e.kind(), dtmcli::ErrorKind::Retryable);
        let e = dtmcli::Error::from(Error::Config("bad table".into()));
        assert!(matches!(e, dtmcli::Error::InvalidInput(_)), "{e:?}");
    }
}
