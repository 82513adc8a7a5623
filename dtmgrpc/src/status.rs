//! DTM's result convention over gRPC (dtm-protocol.md §3.6).
//!
//! | outcome | gRPC status |
//! |---|---|
//! | success | `OK` |
//! | failure (roll back) | `Aborted` (10) |
//! | ongoing (ask again later) | `FailedPrecondition` (9) |
//! | anything else | any other code: retried with backoff |
//!
//! [`status_to_error`] reads an answer (from DTM or from a branch) the way DTM does;
//! [`error_to_status`] / [`result_to_status`] turn a branch handler's result into the answer
//! DTM expects.

use dtmcli::Error;
use tonic::{Code, Status};

/// Reads a gRPC status the way DTM does: `Aborted` is [`Error::Failure`] (except the legacy
/// `Aborted` with the exact message `ONGOING`, which is [`Error::Ongoing`]),
/// `FailedPrecondition` is [`Error::Ongoing`], and every other code is [`Error::Grpc`]
/// (retryable; `Unavailable` and `DeadlineExceeded` are transport errors). `target` names
/// what was called, for the error message.
pub fn status_to_error(target: &str, status: &Status) -> Error {
    let message = status.message().to_string();
    match status.code() {
        Code::Aborted if message == "ONGOING" => Error::Ongoing(message),
        Code::Aborted => Error::Failure(message),
        Code::FailedPrecondition => Error::Ongoing(message),
        code => Error::Grpc {
            target: target.to_string(),
            code: code as i32,
            message,
        },
    }
}

/// The status a branch handler answers DTM for an error: [`Error::Failure`] and
/// [`Error::Duplicated`] → `Aborted` (DTM rolls back / the message must not go on),
/// [`Error::Ongoing`] → `FailedPrecondition`, [`Error::InvalidInput`] → `InvalidArgument`,
/// [`Error::Grpc`] keeps its code (unless that code would mean failure or ongoing), anything
/// else → `Unknown`. All but the first two are retried by DTM.
pub fn error_to_status(err: &Error) -> Status {
    match err {
        Error::Failure(m) => Status::aborted(m.clone()),
        Error::Duplicated => Status::aborted(err.to_string()),
        Error::Ongoing(m) => Status::failed_precondition(m.clone()),
        Error::InvalidInput(_) => Status::invalid_argument(err.to_string()),
        Error::Grpc { code, message, .. } => match Code::from_i32(*code) {
            Code::Ok | Code::Aborted | Code::FailedPrecondition => Status::unknown(message.clone()),
            c => Status::new(c, message.clone()),
        },
        other => Status::unknown(other.to_string()),
    }
}

/// A handler's result as DTM expects it: `Ok` stays, errors become [`error_to_status`].
///
/// ```
/// # use dtmgrpc::result_to_status;
/// let r: Result<(), tonic::Status> = result_to_status(Err(dtmcli::Error::failure("no money")));
/// assert_eq!(r.unwrap_err().code(), tonic::Code::Aborted);
/// ```
pub fn result_to_status<T>(result: dtmcli::Result<T>) -> Result<T, Status> {
    result.map_err(|e| error_to_status(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_dtm() {
        assert!(status_to_error("t", &Status::aborted("x")).is_failure());
        assert!(status_to_error("t", &Status::aborted("ONGOING")).is_ongoing());
        assert!(status_to_error("t", &Status::failed_precondition("x")).is_ongoing());
        let e = status_to_error("t", &Status::unavailable("down"));
        assert!(e.is_transport(), "{e}");
        assert!(matches!(e, Error::Grpc { code: 14, .. }));
        let e = status_to_error("t", &Status::internal("boom"));
        assert!(!e.is_transport());
        assert_eq!(e.kind(), dtmcli::ErrorKind::Retryable);
    }

    #[test]
    fn answers_like_dtm() {
        assert_eq!(error_to_status(&Error::failure("f")).code(), Code::Aborted);
        assert_eq!(error_to_status(&Error::Duplicated).code(), Code::Aborted);
        assert_eq!(
            error_to_status(&Error::ongoing("o")).code(),
            Code::FailedPrecondition
        );
        assert_eq!(error_to_status(&Error::other("x")).code(), Code::Unknown);
        assert_eq!(
            error_to_status(&Error::invalid("x")).code(),
            Code::InvalidArgument
        );
        let passthrough = Error::Grpc {
            target: "t".into(),
            code: Code::Unavailable as i32,
            message: "m".into(),
        };
        assert_eq!(error_to_status(&passthrough).code(), Code::Unavailable);
        let sneaky = Error::Grpc {
            target: "t".into(),
            code: Code::Aborted as i32,
            message: "m".into(),
        };
        assert_eq!(error_to_status(&sneaky).code(), Code::Unknown);
        assert_eq!(result_to_status(Ok(3)).unwrap(), 3);
    }
}
