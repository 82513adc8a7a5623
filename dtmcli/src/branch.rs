//! The DTM result convention between DTM and branch handlers.
//!
//! A branch answers **200** for success, **409** with `FAILURE` in the body for a failure
//! (roll back), **425** with `ONGOING` for "not done yet", anything else for a retryable
//! error. DTM also reads the words `FAILURE` / `ONGOING` anywhere in a body, so
//! [`reply`] keeps them out of the bodies of other answers.

use serde::Serialize;

use crate::error::{truncate_body, Error, Result};

/// Maps a branch's HTTP answer to DTM's outcome, in DTM's order: 425 or `ONGOING` in the body
/// is [`Error::Ongoing`]; 409 or `FAILURE` is [`Error::Failure`]; any other status but 200 is
/// [`Error::Status`]; 200 is success.
pub fn http_result(url: &str, status: u16, body: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(body);
    if status == 425 || text.contains("ONGOING") {
        return Err(Error::Ongoing(truncate_body(&text)));
    }
    if status == 409 || text.contains("FAILURE") {
        return Err(Error::Failure(truncate_body(&text)));
    }
    if status != 200 {
        return Err(Error::Status {
            url: crate::redact::redact_url(url).into_owned(),
            status,
            body: truncate_body(&text),
        });
    }
    Ok(())
}

/// An HTTP answer for DTM, independent of any web framework.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

/// The status code DTM expects for an error: 409 failure, 425 ongoing (and
/// [`Error::NotFinal`]: a transaction this branch started is not finished yet), 409 for
/// [`Error::Duplicated`] (the message must not go on), 400 for invalid input, 500
/// otherwise.
pub fn error_status(err: &Error) -> u16 {
    match err {
        Error::Failure(_) | Error::Duplicated => 409,
        Error::Ongoing(_) | Error::NotFinal { .. } => 425,
        Error::InvalidInput(_) => 400,
        _ => 500,
    }
}

/// The text a reply carries for [`Error::Database`] and [`Error::Other`], whose own text
/// (a database's message: table names, constraint names, sometimes values) stays in this
/// service's log instead of going to DTM, which stores it and shows it to every caller.
pub const INTERNAL_ERROR_TEXT: &str = "internal error in the branch (details in its log)";

/// The reply for an error: `{"dtm_result":"FAILURE","message":..}` (409),
/// `{"dtm_result":"ONGOING","message":..}` (425) or `{"error":..}` with DTM's keywords
/// lower-cased so a retryable error can never be read as a failure. A database or
/// application error ([`Error::Database`], [`Error::Other`]) is answered with
/// [`INTERNAL_ERROR_TEXT`] and logged at `warn`.
pub fn error_reply(err: &Error) -> HttpReply {
    let status = error_status(err);
    let message = match err {
        Error::Failure(m) | Error::Ongoing(m) => m.clone(),
        Error::NotFinal { .. } => defuse(&err.to_string()),
        Error::Database(_) | Error::Other(_) => {
            tracing::warn!(error = %err, "branch answers a retryable error");
            INTERNAL_ERROR_TEXT.to_string()
        }
        other => other.to_string(),
    };
    let body = match status {
        409 => serde_json::json!({"dtm_result": "FAILURE", "message": message}),
        425 => serde_json::json!({"dtm_result": "ONGOING", "message": message}),
        _ => serde_json::json!({"error": defuse(&message)}),
    };
    HttpReply {
        status,
        body: body.to_string(),
    }
}

/// The reply for a handler's result: 200 with the JSON of the value, or [`error_reply`].
pub fn reply<T: Serialize>(result: &Result<T>) -> HttpReply {
    match result {
        Ok(v) => match serde_json::to_string(v) {
            Ok(body) => HttpReply {
                status: 200,
                body: defuse(&body),
            },
            Err(e) => error_reply(&Error::other(e)),
        },
        Err(e) => error_reply(e),
    }
}

/// Lower-cases DTM's result words so they are not taken as results.
fn defuse(s: &str) -> String {
    if !(s.contains("FAILURE") || s.contains("ONGOING")) {
        return s.to_string();
    }
    s.replace("FAILURE", "failure")
        .replace("ONGOING", "ongoing")
}

#[cfg(feature = "axum")]
mod axum_impl {
    use axum::extract::FromRequestParts;
    use axum::http::request::Parts;
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};

    use super::error_reply;
    use crate::{Error, TransInfo};

    impl<S: Send + Sync> FromRequestParts<S> for TransInfo {
        type Rejection = Error;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            TransInfo::from_query(parts.uri.query().unwrap_or(""))
        }
    }

    impl IntoResponse for Error {
        fn into_response(self) -> Response {
            let r = error_reply(&self);
            let status =
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, [(header::CONTENT_TYPE, "application/json")], r.body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_like_dtm() {
        assert!(http_result("u", 200, b"{}").is_ok());
        assert!(http_result("u", 200, b"{\"dtm_result\":\"ONGOING\"}")
            .unwrap_err()
            .is_ongoing());
        assert!(http_result("u", 425, b"").unwrap_err().is_ongoing());
        assert!(http_result("u", 409, b"").unwrap_err().is_failure());
        assert!(http_result("u", 200, b"FAILURE").unwrap_err().is_failure());
        assert!(matches!(
            http_result("u", 204, b""),
            Err(Error::Status { status: 204, .. })
        ));
        assert!(matches!(
            http_result("u", 500, b"x"),
            Err(Error::Status { status: 500, .. })
        ));
    }

    #[test]
    fn replies() {
        let r = reply::<()>(&Err(Error::failure("no money")));
        assert_eq!(r.status, 409);
        assert!(r.body.contains("FAILURE"));
        let r = reply::<()>(&Err(Error::ongoing("wait")));
        assert_eq!(r.status, 425);
        let r = reply::<()>(&Err(Error::other("upstream said FAILURE")));
        assert_eq!(r.status, 500);
        assert!(!r.body.contains("FAILURE"));
        let r = reply::<()>(&Err(Error::Database(
            "duplicate key value violates unique constraint \"users_secret\"".into(),
        )));
        assert_eq!(r.status, 500);
        assert!(!r.body.contains("users_secret"), "{}", r.body);
        assert!(r.body.contains(INTERNAL_ERROR_TEXT), "{}", r.body);
        let r = reply::<()>(&Err(Error::other("secret detail")));
        assert!(!r.body.contains("secret detail"), "{}", r.body);
        let r = reply(&Ok(serde_json::json!({"a": 1})));
        assert_eq!((r.status, r.body.as_str()), (200, "{\"a\":1}"));
    }
}
