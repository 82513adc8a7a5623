//! The one error type of the SDK.

use std::fmt;

use crate::wire::TransStatus;

/// Convenient alias for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to DTM or to a branch.
///
/// DTM gives three outcomes a first-class meaning, and this type keeps them apart:
/// [`Error::Failure`] (the transaction must roll back), [`Error::Ongoing`] (not finished yet,
/// retry at the same interval) and every other variant (a retryable error, retried with
/// backoff by the server). [`Error::Duplicated`] is the outcome of a 2-phase message whose
/// back-check ran before its local transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operation failed for good: DTM answered 409 / `FAILURE`, or a branch did.
    /// A saga or TCC that receives it rolls back.
    #[error("FAILURE: {0}")]
    Failure(String),

    /// The operation is not finished yet (HTTP 425 / `ONGOING`): DTM will ask again.
    #[error("ONGOING: {0}")]
    Ongoing(String),

    /// A 2-phase message's back-check ran before its local transaction, which therefore must
    /// not commit (the message has been or will be marked failed).
    #[error("DUPLICATED: the msg back-check already ran for this gid")]
    Duplicated,

    /// DTM holds transaction `gid` but has not finished it: it is still running, retrying a
    /// branch, rolling back or waiting for a back-check, and DTM will finish it without the
    /// caller. Neither a success nor a failure: ask again with `wait_final` (on every
    /// client and [`crate::outcome::wait_final`]) or query the gid. A submit with
    /// `wait_result` returns it when DTM's one pass over the branches did not end the
    /// transaction (see [`crate::outcome`]). Branch handlers answer it as ONGOING.
    #[error("{gid} is not final yet ({}): DTM will finish it; {detail}", status_text(.status.as_ref()))]
    NotFinal {
        /// The transaction.
        gid: String,
        /// The status DTM stored when asked (`prepared`, `submitted`, `aborting`), or `None`
        /// when it could not be read.
        status: Option<TransStatus>,
        /// What DTM answered, or why the status could not be read.
        detail: String,
    },

    /// The request could not be sent or its response not read (connection refused,
    /// timeout, reset...). Build it with [`Error::transport`], which keeps credentials out.
    #[cfg(feature = "http")]
    #[error("transport error calling {url}: {}", chain(source))]
    Transport {
        /// The URL that was called (credentials redacted).
        url: String,
        /// The underlying error (without its URL, which may carry credentials).
        #[source]
        source: reqwest::Error,
    },

    /// An answer was longer than the client accepts (see
    /// [`crate::Limits::with_max_answer_bytes`]); reading stopped there, so an endless
    /// body cannot exhaust memory. Retryable.
    #[error("{url} answered more than {limit} bytes; the answer was not read")]
    TooLarge {
        /// The URL that was called (credentials redacted).
        url: String,
        /// The limit, in bytes.
        limit: usize,
    },

    /// A gRPC call (to DTM or to a branch) ended with a status that is neither success nor
    /// one of DTM's outcomes (those become [`Error::Failure`] / [`Error::Ongoing`]): one the
    /// peer answered, or one the client set because no gRPC answer came (`answered` is
    /// false: a timeout, a refused or broken connection, a peer that does not speak gRPC).
    /// Codes 14 (`Unavailable`: the peer could not be reached) and 4 (`DeadlineExceeded`: no
    /// answer in time) count as transport errors ([`Error::is_transport`]). Retryable.
    /// Build it with [`Error::grpc`] or [`Error::grpc_no_answer`].
    #[error("{}", grpc_text(.url, *.code, .message, *.answered))]
    Grpc {
        /// The gRPC method called (`127.0.0.1:36790/dtmgimp.Dtm/Submit`), as a branch URL.
        url: String,
        /// The gRPC status code (see `tonic::Code`).
        code: i32,
        /// The status message; without an answer, what happened instead.
        message: String,
        /// True when the peer answered this status; false when the client set it because no
        /// gRPC answer came. Only the message tells the two apart: the outcome class
        /// ([`Error::kind`]) is the code's either way.
        answered: bool,
    },

    /// The peer answered with a status that is neither success nor one of DTM's outcomes.
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// The URL that was called.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The response body (truncated to a few KiB).
        body: String,
    },

    /// A JSON-RPC peer (DTM's `/api/json-rpc`, or a branch) answered with an error object
    /// that is none of DTM's outcomes (those become [`Error::Failure`] /
    /// [`Error::Ongoing`]). Retryable.
    #[error("{url} answered JSON-RPC error {code}: {message}")]
    JsonRpc {
        /// The URL that was called (credentials redacted).
        url: String,
        /// The error code (-32700 parse error, -32600 bad request, -32601 unknown method,
        /// -32603 other).
        code: i64,
        /// The error message (truncated to a few KiB).
        message: String,
    },

    /// The peer answered 200 with a body that is not what the protocol says.
    #[error("{url} answered an unexpected body ({reason}): {body}")]
    Decode {
        /// The URL that was called.
        url: String,
        /// What was wrong with it.
        reason: String,
        /// The response body (truncated to a few KiB).
        body: String,
    },

    /// A state-changing call to DTM (`prepare`, `submit`, `abort`, `registerBranch`) failed
    /// after it may have reached a server, and what DTM stores did not tell whether it took
    /// effect (see [`crate::cluster`]). Retryable: query the gid later to learn the outcome.
    #[error("outcome of {op} for {gid} unknown: {reason}")]
    Ambiguous {
        /// The call (`submit`...).
        op: String,
        /// The transaction.
        gid: String,
        /// What is known, and why that is not enough.
        reason: String,
    },

    /// The caller passed something the protocol cannot carry: a missing query field, an
    /// unknown transaction type, a branch-id overflow, a payload that does not serialize...
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A database error (from a barrier, an XA branch or a workflow step): retryable.
    #[error("database error: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync + 'static>),

    /// A workflow asked, on replay, for a different sequence of branches or steps than the
    /// one recorded on the DTM server: its code changed while transactions were in flight.
    /// Replaying would return the wrong results, so the workflow stops instead (DTM keeps
    /// calling it back until the code is fixed).
    #[error("workflow non-determinism: {0}")]
    NonDeterministic(String),

    /// A workflow step's recorded value, replayed, is not of the type the step now returns
    /// (its code changed while transactions were in flight). As with
    /// [`Error::NonDeterministic`], the workflow stops instead of going on with a value of
    /// the wrong type, and DTM keeps calling it back until the code is fixed.
    #[error("workflow {gid}: the record of branch {branch} ({op}) is not a {type_name}: {reason}")]
    RecordType {
        /// The workflow's gid.
        gid: String,
        /// The step's branch id.
        branch: String,
        /// The step's op (`action`, or a second-phase op).
        op: String,
        /// The type the step returns now.
        type_name: &'static str,
        /// Why the record does not decode into it.
        reason: String,
    },

    /// An error raised by application code (a business closure) that is neither a failure nor
    /// ongoing. DTM treats it as retryable.
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// The error a builder kept from a bad step, for every later `submit` (errors are not
/// `Clone`; a builder's are always [`Error::InvalidInput`]).
pub(crate) fn copy_invalid(e: &Error) -> Error {
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
        other => Error::InvalidInput(other.to_string()),
    }
}

impl Error {
    /// A [`Error::Failure`] with this message.
    pub fn failure(msg: impl fmt::Display) -> Self {
        Error::Failure(msg.to_string())
    }

    /// An [`Error::Ongoing`] with this message.
    pub fn ongoing(msg: impl fmt::Display) -> Self {
        Error::Ongoing(msg.to_string())
    }

    /// Wraps an application error as [`Error::Other`] (retryable).
    pub fn other(err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Error::Other(err.into())
    }

    /// An [`Error::NotFinal`] for transaction `gid`, in `status` (if known).
    pub fn not_final(
        gid: impl Into<String>,
        status: Option<TransStatus>,
        detail: impl fmt::Display,
    ) -> Self {
        Error::NotFinal {
            gid: gid.into(),
            status,
            detail: detail.to_string(),
        }
    }

    /// An [`Error::InvalidInput`] with this message.
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::InvalidInput(msg.to_string())
    }

    /// An [`Error::Transport`] for a call to `url`: the URL is redacted
    /// ([`crate::redact::redact_url`]) and removed from the `reqwest` error, whose `Display`
    /// would otherwise print it whole, password included.
    #[cfg(feature = "http")]
    pub fn transport(url: &str, source: reqwest::Error) -> Self {
        Error::Transport {
            url: crate::redact::redact_url(url).into_owned(),
            source: source.without_url(),
        }
    }

    /// An [`Error::Grpc`] for a status the gRPC method at `url` answered.
    pub fn grpc(url: impl Into<String>, code: i32, message: impl Into<String>) -> Self {
        Error::Grpc {
            url: url.into(),
            code,
            message: message.into(),
            answered: true,
        }
    }

    /// An [`Error::Grpc`] for a call to the gRPC method at `url` that got no gRPC answer: `code` is the
    /// status the client set (4 for a timeout, 14 when it could not connect...), `what`
    /// says what happened instead (`"none came within 30s"`).
    pub fn grpc_no_answer(url: impl Into<String>, code: i32, what: impl Into<String>) -> Self {
        Error::Grpc {
            url: url.into(),
            code,
            message: what.into(),
            answered: false,
        }
    }

    /// True for [`Error::Failure`].
    pub fn is_failure(&self) -> bool {
        matches!(self, Error::Failure(_))
    }

    /// True for [`Error::Ongoing`].
    pub fn is_ongoing(&self) -> bool {
        matches!(self, Error::Ongoing(_))
    }

    /// True for [`Error::NotFinal`]: DTM holds the transaction and will finish it.
    pub fn is_not_final(&self) -> bool {
        matches!(self, Error::NotFinal { .. })
    }

    /// True for [`Error::Duplicated`].
    pub fn is_duplicated(&self) -> bool {
        matches!(self, Error::Duplicated)
    }

    /// True when the request never got an answer because the peer could not be reached or
    /// timed out.
    pub fn is_transport(&self) -> bool {
        #[cfg(feature = "http")]
        if matches!(self, Error::Transport { .. }) {
            return true;
        }
        matches!(self, Error::Grpc { code: 4 | 14, .. })
    }

    /// The outcome class DTM gives this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Failure(_) => ErrorKind::Failure,
            // Not finished, and DTM will finish it: ask again, at the same interval.
            Error::Ongoing(_) | Error::NotFinal { .. } => ErrorKind::Ongoing,
            Error::Duplicated => ErrorKind::Duplicated,
            _ => ErrorKind::Retryable,
        }
    }
}

/// The class of an [`Error`] as DTM sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Roll back.
    Failure,
    /// Ask again at the same interval.
    Ongoing,
    /// msg back-check won the race against the local transaction.
    Duplicated,
    /// Anything else: retried with backoff.
    Retryable,
}

/// How [`Error::NotFinal`] names the status.
fn status_text(status: Option<&TransStatus>) -> String {
    match status {
        Some(s) => format!("DTM holds it {}", s.as_str()),
        None => "its status could not be read".to_string(),
    }
}

/// The text of [`Error::Grpc`]: a status the peer answered, or what happened instead of an
/// answer (never "answered" for a server that said nothing).
fn grpc_text(url: &str, code: i32, message: &str, answered: bool) -> String {
    if answered {
        format!("{url} answered gRPC status {code}: {message}")
    } else {
        format!("no gRPC answer from {url}: {message} (status {code}, set by this client)")
    }
}

/// Cuts a response body for inclusion in an error message.
pub(crate) fn truncate_body(body: &str) -> String {
    const MAX: usize = 4096;
    if body.len() <= MAX {
        return body.to_string();
    }
    let mut end = MAX;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...({} bytes)", &body[..end], body.len())
}

#[cfg(feature = "http")]
/// An error and its causes, `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    error_chain(e.to_string(), e.source())
}

/// `first` and the causes from `source` on, `a: b: c`, each said once (a cause whose text
/// is already in the message is not repeated). For the transports' error messages.
#[doc(hidden)]
pub fn error_chain(first: String, source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut s = first;
    let mut cur = source;
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_errors_say_whether_the_peer_answered() {
        let answered = Error::grpc("h:1/s.S/M", 14, "overloaded");
        assert_eq!(
            answered.to_string(),
            "h:1/s.S/M answered gRPC status 14: overloaded"
        );
        let silent = Error::grpc_no_answer("h:1/s.S/M", 4, "none came within 30s");
        let text = silent.to_string();
        assert!(
            text.starts_with("no gRPC answer from h:1/s.S/M: none came within 30s"),
            "{text}"
        );
        assert!(!text.contains("answered"), "{text}");
        // Same classes either way: only the words differ.
        for e in [&answered, &silent] {
            assert_eq!(e.kind(), ErrorKind::Retryable);
            assert!(e.is_transport());
        }
    }
}
