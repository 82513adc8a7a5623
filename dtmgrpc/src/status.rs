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
//!
//! tonic hands a client the same [`Status`] type for a server's answer and for a call that
//! got none (a timeout, a refused or broken connection): the error keeps them apart
//! ([`Error::Grpc`]'s `answered`), so that a server that said nothing is never reported as
//! having answered a status.

use dtmcli::Error;
use tonic::{Code, Status};

/// The metadata key by which [`local_status`] marks a status its layer made up because no
/// answer came. It only ever travels inside one process, from a tower layer to its caller.
const NO_ANSWER_KEY: &str = "x-dtm-no-answer";

/// Reads a gRPC status the way DTM does: `Aborted` is [`Error::Failure`] (except the legacy
/// `Aborted` with the exact message `ONGOING`, which is [`Error::Ongoing`]),
/// `FailedPrecondition` is [`Error::Ongoing`], and every other code is [`Error::Grpc`]
/// (retryable; `Unavailable` and `DeadlineExceeded` are transport errors). `url` names
/// what was called, for the error message.
///
/// A status tonic made up itself because no answer came (it carries the transport error as
/// its source), or one a layer marked with [`local_status`], gives an error that says what
/// happened (`no gRPC answer from <url>: could not connect: ...`) rather than "answered".
pub fn status_to_error(url: &str, status: &Status) -> Error {
    let message = status.message().to_string();
    match status.code() {
        Code::Aborted if message == "ONGOING" => Error::Ongoing(message),
        Code::Aborted => Error::Failure(message),
        Code::FailedPrecondition => Error::Ongoing(message),
        code => match no_answer(status) {
            None => Error::grpc(url, code as i32, message),
            Some(_) if status.metadata().contains_key(NO_ANSWER_KEY) => {
                Error::grpc_no_answer(url, code as i32, message)
            }
            Some(kind) => {
                let detail = dtmcli::error_chain(message, std::error::Error::source(status));
                Error::grpc_no_answer(url, code as i32, kind.describe(&detail))
            }
        },
    }
}

/// Why a call got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoAnswer {
    /// Its deadline ran out.
    Timeout,
    /// No connection could be opened.
    Connect,
    /// The connection broke (or was refused by the protocol) before an answer.
    Broken,
}

impl NoAnswer {
    /// What happened, with the transport error's own words (`detail`).
    fn describe(self, detail: &str) -> String {
        match self {
            NoAnswer::Timeout => format!("none came within its deadline: {detail}"),
            NoAnswer::Connect => format!("could not connect: {detail}"),
            NoAnswer::Broken => format!("the connection broke before an answer: {detail}"),
        }
    }
}

/// `None` when the peer answered `status`; otherwise why no answer came. tonic attaches the
/// transport error as the source of every status it makes up; a peer's status has none.
pub(crate) fn no_answer(status: &Status) -> Option<NoAnswer> {
    if status.metadata().contains_key(NO_ANSWER_KEY) {
        return Some(match status.code() {
            Code::DeadlineExceeded => NoAnswer::Timeout,
            Code::Unavailable => NoAnswer::Connect,
            _ => NoAnswer::Broken,
        });
    }
    let source = std::error::Error::source(status)?;
    Some(cause_kind(status.code(), source))
}

/// Why a call whose channel failed with `cause` got no answer.
fn cause_kind(code: Code, cause: &(dyn std::error::Error + 'static)) -> NoAnswer {
    let mut timed_out = code == Code::DeadlineExceeded;
    let mut connect = false;
    let mut cur = Some(cause);
    while let Some(e) = cur {
        timed_out |= e.is::<tonic::TimeoutExpired>();
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            connect |= matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::AddrNotAvailable
            );
        }
        // hyper-util's connector says "tcp connect error" / "dns error": its type is private.
        let text = e.to_string();
        connect |= text.contains("connect error") || text.contains("dns error");
        cur = e.source();
    }
    if timed_out {
        NoAnswer::Timeout
    } else if connect {
        NoAnswer::Connect
    } else {
        NoAnswer::Broken
    }
}

/// The error of a call whose channel itself failed with `cause` (a tower layer sees the
/// channel's error, not a status): an [`Error::Grpc`] with `code` that says no answer came
/// and why (a timeout, no connection, a broken one).
pub fn no_answer_error(
    target: &str,
    code: Code,
    cause: &(dyn std::error::Error + 'static),
) -> Error {
    let detail = dtmcli::error_chain(cause.to_string(), cause.source());
    let what = cause_kind(code, cause).describe(&detail);
    Error::grpc_no_answer(target, code as i32, what)
}

/// The status a client-side layer (a tower layer around a channel, like dtm-workflow's)
/// hands its caller for an error of its own: [`error_to_status`], and for an
/// [`Error::Grpc`] that says no answer came, a mark by which [`status_to_error`] reads it
/// back as no answer rather than as the server's status. A branch handler answers with
/// [`error_to_status`] instead: its caller did get an answer.
pub fn local_status(err: &Error) -> Status {
    let mut status = error_to_status(err);
    if matches!(
        err,
        Error::Grpc {
            answered: false,
            ..
        }
    ) {
        status.metadata_mut().insert(
            NO_ANSWER_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
    }
    status
}

/// The status a branch handler answers DTM for an error: [`Error::Failure`] and
/// [`Error::Duplicated`] → `Aborted` (DTM rolls back / the message must not go on),
/// [`Error::Ongoing`] and [`Error::NotFinal`] → `FailedPrecondition`, [`Error::InvalidInput`] → `InvalidArgument`,
/// [`Error::Grpc`] keeps its code (unless that code would mean failure or ongoing), anything
/// else → `Unknown`. All but the first two are retried by DTM.
pub fn error_to_status(err: &Error) -> Status {
    match err {
        Error::Failure(m) => Status::aborted(m.clone()),
        Error::Duplicated => Status::aborted(err.to_string()),
        Error::Ongoing(m) => Status::failed_precondition(m.clone()),
        Error::NotFinal { .. } => Status::failed_precondition(err.to_string()),
        Error::InvalidInput(_) => Status::invalid_argument(err.to_string()),
        Error::Grpc { code, message, .. } => match Code::from_i32(*code) {
            Code::Ok | Code::Aborted | Code::FailedPrecondition => Status::unknown(message.clone()),
            c => Status::new(c, message.clone()),
        },
        other => Status::unknown(other.to_string()),
    }
}

/// The one conversion a tonic branch handler needs: a result whose error is the SDK's
/// ([`dtmcli::Error`], `dtm_barrier::Error`, anything `Into<dtmcli::Error>`) becomes the
/// `Result<T, tonic::Status>` DTM expects ([`error_to_status`]: failure → `Aborted`,
/// ongoing → `FailedPrecondition`, anything else retryable), ready for `?`.
///
/// An error from elsewhere (sqlx outside a barrier, prost...) says nothing about DTM's
/// outcome: wrap it as what it means for the transaction, `dtmcli::Error::other(e)`
/// (retried) or `dtmcli::Error::failure(e)` (rolled back). Inside a barrier closure `?`
/// already turns sqlx, Redis and MongoDB errors, and `dtmcli::Error`s, into the barrier's
/// error.
///
/// ```no_run
/// use dtmgrpc::IntoStatus;
/// # #[derive(Clone, PartialEq, prost::Message)] struct Transfer { #[prost(int64, tag = "1")] amount: i64 }
/// # struct Bank { pool: sqlx::MySqlPool }
/// # impl Bank {
/// // A tonic handler: one `.into_status()` per fallible SDK call.
/// async fn trans_out(&self, request: tonic::Request<Transfer>) -> Result<tonic::Response<()>, tonic::Status> {
///     let info = dtmgrpc::trans_info(&request).into_status()?; // dtmcli::Error
///     let amount = request.get_ref().amount;
///     let bb = dtm_barrier::BranchBarrier::new(info);
///     bb.call(&self.pool, |conn| {
///         Box::pin(async move {
///             let balance: i64 = sqlx::query_scalar("select balance from account where id = 1 for update")
///                 .fetch_one(&mut *conn)
///                 .await?; // sqlx::Error, retried
///             if balance < amount {
///                 // A dtmcli::Error: DTM rolls the transaction back, the debit is not made.
///                 Err(dtmcli::Error::failure("insufficient balance"))?;
///             }
///             sqlx::query("update account set balance = balance - ? where id = 1")
///                 .bind(amount)
///                 .execute(&mut *conn)
///                 .await?;
///             Ok(())
///         })
///     })
///     .await
///     .into_status()?; // dtm_barrier::Error
///     Ok(tonic::Response::new(()))
/// }
/// # }
/// ```
pub trait IntoStatus<T> {
    /// `Ok` stays; an error becomes the status DTM expects ([`error_to_status`]).
    fn into_status(self) -> Result<T, Status>;
}

impl<T, E: Into<Error>> IntoStatus<T> for Result<T, E> {
    fn into_status(self) -> Result<T, Status> {
        self.map_err(|e| error_to_status(&e.into()))
    }
}

/// A handler's result as DTM expects it: `Ok` stays, errors become [`error_to_status`]
/// (the same as [`IntoStatus::into_status`] on a `dtmcli::Result`).
///
/// ```
/// # use dtmgrpc::result_to_status;
/// let r: Result<(), tonic::Status> = result_to_status(Err(dtmcli::Error::failure("no money")));
/// assert_eq!(r.unwrap_err().code(), tonic::Code::Aborted);
/// ```
pub fn result_to_status<T>(result: dtmcli::Result<T>) -> Result<T, Status> {
    result.map_err(|e| error_to_status(&e))
}

/// The text of `e` after asserting that it is a gRPC error with `code` (any, if `None`) and
/// the `answered` mark: what the unit tests check of every gRPC error they make.
#[cfg(test)]
pub(crate) fn grpc_error_text(e: &Error, code: Option<i32>, answered: bool) -> String {
    assert!(
        matches!(e, Error::Grpc { code: c, answered: a, .. } if *a == answered && code.is_none_or(|code| *c == code)),
        "{e:?}"
    );
    e.to_string()
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
    fn a_status_tonic_made_up_is_no_answer() {
        // A peer's status has no source: it answered.
        let e = status_to_error("h:1/s.S/M", &Status::unavailable("overloaded"));
        assert_eq!(
            grpc_error_text(&e, Some(14), true),
            "h:1/s.S/M answered gRPC status 14: overloaded"
        );
        // tonic's own statuses carry the transport error as their source.
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = Status::from_error(Box::new(refused));
        let e = status_to_error("h:1/s.S/M", &status);
        let text = grpc_error_text(&e, None, false);
        assert!(
            text.starts_with("no gRPC answer from h:1/s.S/M: could not connect: refused"),
            "{text}"
        );
        assert!(!text.contains("answered"), "{text}");
        let broken = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stream closed");
        let e = status_to_error("t", &Status::from_error(Box::new(broken)));
        assert!(
            e.to_string()
                .contains("the connection broke before an answer: stream closed"),
            "{e}"
        );
        let e = no_answer_error("t", Code::DeadlineExceeded, &tonic::TimeoutExpired(()));
        let text = grpc_error_text(&e, Some(4), false);
        assert!(text.contains("none came within its deadline"), "{text}");
        assert!(e.is_transport());
    }

    #[test]
    fn a_layer_keeps_no_answer_for_its_caller() {
        let silent = Error::grpc_no_answer("t", 4, "none came within 5s");
        let back = status_to_error("TransIn", &local_status(&silent));
        assert!(
            matches!(back, Error::Grpc { code: 4, answered: false, ref message, .. } if message == "none came within 5s"),
            "{back:?}"
        );
        assert_eq!(back.kind(), silent.kind());
        // A handler answering with error_to_status did answer: no mark.
        let answered = status_to_error("t", &error_to_status(&silent));
        assert!(
            matches!(answered, Error::Grpc { answered: true, .. }),
            "{answered:?}"
        );
        // Other errors are error_to_status's.
        assert_eq!(local_status(&Error::failure("f")).code(), Code::Aborted);
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
        let passthrough = Error::grpc("t", Code::Unavailable as i32, "m");
        assert_eq!(error_to_status(&passthrough).code(), Code::Unavailable);
        let sneaky = Error::grpc("t", Code::Aborted as i32, "m");
        assert_eq!(error_to_status(&sneaky).code(), Code::Unknown);
        assert_eq!(result_to_status(Ok(3)).unwrap(), 3);
    }
}
