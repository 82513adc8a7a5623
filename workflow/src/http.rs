//! Recorded HTTP calls: a `reqwest-middleware` middleware.

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next, RequestBuilder};

use crate::wf::{StepOutcome, Wf};
use dtmcli::{Error, Op};

/// Records and replays the HTTP calls a workflow makes.
///
/// Install it once on the service's client
/// (`reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).with(WorkflowMiddleware).build()`).
/// Requests that carry a [`Wf`] (see [`Wf::http`]) get the transaction info in their query
/// (`gid`, `trans_type=workflow`, `branch_id`, `op`); during the branch's action the whole
/// exchange is the branch's recorded step: 409 is a recorded failure, 425 and other
/// non-200 answers are retryable errors (not recorded), 200 is recorded with its body, and a
/// replay answers a synthetic 200 `application/json` response with the recorded body.
/// Commit and rollback callbacks call live. Requests without a [`Wf`] pass untouched.
///
/// Bounds: a workflow request without its own timeout (`RequestBuilder::timeout`) gets the
/// workflow's, its `request_timeout` or else the DTM client's timeout
/// ([`dtmcli::DEFAULT_TIMEOUT`] by default), which takes precedence over a timeout set on the
/// `reqwest::Client`. An answer read for recording (or by [`send_http`]) longer than the DTM
/// client's [`dtmcli::Limits::with_max_answer_bytes`] is [`Error::TooLarge`].
/// [`send_http`] sends such a request and reads its answer the same way in every phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkflowMiddleware;

impl Wf {
    /// A request of `client` that belongs to this workflow's current branch.
    pub fn http(
        &self,
        client: &ClientWithMiddleware,
        method: reqwest::Method,
        url: &str,
    ) -> RequestBuilder {
        client.request(method, url).with_extension(self.clone())
    }
}

fn middleware_error(e: Error) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(e)
}

fn synthetic(status: u16, body: Vec<u8>) -> reqwest_middleware::Result<Response> {
    let resp = http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| middleware_error(Error::invalid(format!("synthetic response: {e}"))))?;
    Ok(Response::from(resp))
}

#[async_trait::async_trait]
impl Middleware for WorkflowMiddleware {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let Some(wf) = extensions.get::<Wf>().cloned() else {
            return next.run(req, extensions).await;
        };
        let info = wf.trans_info();
        if req.timeout().is_none() {
            // Every call of a workflow is bounded, also against a branch that never answers.
            *req.timeout_mut() = Some(wf.call_timeout());
        }
        {
            let mut q = req.url_mut().query_pairs_mut();
            q.append_pair("gid", &info.gid)
                .append_pair("trans_type", "workflow")
                .append_pair("branch_id", &info.branch_id)
                .append_pair("op", info.op.as_str());
        }
        if info.op != Op::Action {
            dtmcli::trace::put_context(req.headers_mut());
            return next.run(req, extensions).await;
        }
        let mut label_url = req.url().clone();
        label_url.set_query(None);
        let label = format!("{} {}", req.method(), label_url);
        let url = req.url().to_string();
        let limit = wf.max_answer_bytes();
        let step = async {
            // Inside the step's span: the branch's parent is the step.
            let mut req = req;
            dtmcli::trace::put_context(req.headers_mut());
            let resp = match next.run(req, extensions).await {
                Ok(r) => r,
                Err(e) => return StepOutcome::Unrecorded(into_dtm_error(e)),
            };
            let status = resp.status().as_u16();
            let body = match dtmcli::read_answer(&url, resp, limit).await {
                Ok(b) => b.to_vec(),
                Err(e) => return StepOutcome::Unrecorded(e),
            };
            StepOutcome::from_result(answer(&url, status, body))
        };
        match wf.recorded("http", &label, step).await {
            Ok(body) => synthetic(200, body),
            Err(e) => Err(middleware_error(e)),
        }
    }
}

/// A branch's HTTP answer as the Go SDK's workflow reads it: 200 is success with the body,
/// 409 [`Error::Failure`], 425 [`Error::Ongoing`], any other status [`Error::Status`]. Unlike
/// DTM reading a branch it calls itself, the body is not searched for `FAILURE` / `ONGOING`
/// (the protocol's workflow rule), so a 200 body may carry any text.
fn answer(url: &str, status: u16, body: Vec<u8>) -> Result<Vec<u8>, Error> {
    let text = || String::from_utf8_lossy(&body).into_owned();
    match status {
        200 => Ok(body),
        409 => Err(Error::Failure(text())),
        425 => Err(Error::Ongoing(text())),
        _ => Err(Error::Status {
            url: dtmcli::redact::redact_url(url).into_owned(),
            status,
            body: text(),
        }),
    }
}

/// Sends a request made with [`Wf::http`] and reads its answer as the recording does: the
/// body for 200; [`Error::Failure`] for 409; [`Error::Ongoing`] for 425; [`Error::Status`]
/// for any other status. It reads a live answer
/// (commit and rollback callbacks) the same way as a recorded one (the branch's action), so
/// a workflow function can return its error as it is. The answer is read up to the
/// workflow's cap (see [`WorkflowMiddleware`]; [`dtmcli::DEFAULT_MAX_ANSWER_BYTES`] for a
/// request without a [`Wf`]).
pub async fn send_http(mut request: RequestBuilder) -> Result<Vec<u8>, Error> {
    let limit = request
        .extensions()
        .get::<Wf>()
        .map_or(dtmcli::DEFAULT_MAX_ANSWER_BYTES, Wf::max_answer_bytes);
    let resp = request.send().await.map_err(into_dtm_error)?;
    let url = resp.url().to_string();
    let status = resp.status().as_u16();
    let body = dtmcli::read_answer(&url, resp, limit).await?;
    answer(&url, status, body.to_vec())
}

/// The DTM error inside a middleware error, if the workflow middleware produced it (a
/// recorded failure, ongoing, non-determinism...).
pub fn dtm_error(e: &reqwest_middleware::Error) -> Option<&Error> {
    match e {
        reqwest_middleware::Error::Middleware(a) => a.downcast_ref::<Error>(),
        reqwest_middleware::Error::Reqwest(_) => None,
    }
}

/// Converts the error of a recorded HTTP call into the workflow's error: the DTM outcome
/// it carries, or a retryable error.
pub fn into_dtm_error(e: reqwest_middleware::Error) -> Error {
    match e {
        reqwest_middleware::Error::Middleware(a) => match a.downcast::<Error>() {
            Ok(d) => d,
            Err(a) => Error::other(std::io::Error::other(a.to_string())),
        },
        // A reqwest error prints its URL, which may carry credentials.
        reqwest_middleware::Error::Reqwest(r) => match r.url().map(|u| u.to_string()) {
            Some(url) => Error::transport(&url, r),
            None => Error::other(r),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, body: &str) -> StepOutcome {
        StepOutcome::from_result(answer("http://b/x", status, body.as_bytes().to_vec()))
    }

    #[test]
    fn answers_are_read_by_status_as_the_go_workflow_does() {
        assert!(matches!(outcome(200, "{}"), StepOutcome::Ok(b) if b == b"{}"));
        assert!(matches!(outcome(409, "no"), StepOutcome::Failed(m) if m == "no"));
        // The workflow rule reads the status only: a 200 body may say anything.
        assert!(matches!(
            outcome(200, "FAILURE ONGOING"),
            StepOutcome::Ok(_)
        ));
        assert!(matches!(
            outcome(425, ""),
            StepOutcome::Unrecorded(Error::Ongoing(_))
        ));
        assert!(matches!(
            outcome(503, "down"),
            StepOutcome::Unrecorded(Error::Status { status: 503, .. })
        ));
    }
}
