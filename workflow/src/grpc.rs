//! Workflows over gRPC: the `workflow.Workflow/Execute` callback service and a tower layer
//! that records and replays the gRPC calls a workflow makes.

use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use dtmcli::{Error, Op};
use dtmgrpc::pb::workflow::workflow_server::{Workflow as WorkflowRpc, WorkflowServer};
use dtmgrpc::pb::workflow::WorkflowData;
use futures_util::future::BoxFuture;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tonic::body::Body;
use tonic::{Code, Status};

use crate::registry::Workflows;
use crate::wf::{StepOutcome, Wf};

/// The tonic service DTM calls to resume an unfinished workflow
/// (`/workflow.Workflow/Execute`). Get it from [`Workflows::grpc_service`].
#[derive(Debug, Clone)]
pub struct ExecuteService {
    wfs: Workflows,
}

#[tonic::async_trait]
impl WorkflowRpc for ExecuteService {
    async fn execute(
        &self,
        request: tonic::Request<WorkflowData>,
    ) -> Result<tonic::Response<()>, Status> {
        use tracing::Instrument;
        let info = dtmgrpc::trans_info_from_metadata(request.metadata())
            .map_err(|e| dtmgrpc::error_to_status(&e))?;
        // DTM's resume call carries the trace context of the run that started the workflow
        // (its branch headers): the resumed run joins that trace.
        let span = {
            let headers = request.metadata().clone().into_headers();
            let path = "/workflow.Workflow/Execute";
            dtmcli::trace::incoming_span(dtmgrpc::metadata::IDENTITY, path, None, &headers)
        };
        let data = request.into_inner().data;
        // Resumed only as DTM holds it: the request itself is not authenticated.
        let run = self.wfs.resume(&info, &data);
        match run.instrument(span).await {
            Ok(_) => Ok(tonic::Response::new(())),
            Err(e) => Err(dtmgrpc::error_to_status(&e)),
        }
    }
}

impl Workflows {
    /// The `workflow.Workflow` service to add to this service's tonic server (at the
    /// address given to [`Workflows::grpc`]).
    pub fn grpc_service(&self) -> WorkflowServer<ExecuteService> {
        WorkflowServer::new(ExecuteService { wfs: self.clone() })
    }

    /// Serves [`Workflows::grpc_service`] alone on `listener` (bound at the address given
    /// to [`Workflows::grpc`]), until the returned future is dropped or the server fails:
    /// for a process whose only gRPC service is the workflow callback. A process with a
    /// tonic server of its own adds `grpc_service()` to it instead.
    pub fn serve_grpc(
        &self,
        listener: tokio::net::TcpListener,
    ) -> impl std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static
    {
        let svc = self.grpc_service();
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
    }
}

impl Wf {
    /// A tonic request that belongs to this workflow's current branch: a channel wrapped in
    /// [`WorkflowLayer`] adds the `dtm-*` metadata and records / replays the call.
    pub fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.extensions_mut().insert(self.clone());
        r
    }
}

/// A tower layer for tonic channels that records and replays the gRPC calls of a workflow.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
/// use tower_layer::Layer;
/// let channel = dtm_workflow::WorkflowLayer.layer(channel);
/// // BusiClient::new(channel) ... inside a workflow: client.trans_out(wf.grpc_request(msg)).await
/// # let _ = channel; Ok(()) }
/// ```
///
/// Requests carrying a [`Wf`] ([`Wf::grpc_request`]) get the metadata `dtm-gid`,
/// `dtm-trans_type`, `dtm-branch_id`, `dtm-op`, `dtm-dtm`; during the branch's action the
/// call is the branch's recorded step: OK records the reply message, `Aborted` records a
/// failure, `FailedPrecondition` (ongoing) and other codes are retryable and not recorded.
/// A replay answers the recorded reply (or failure) without calling. Commit and rollback
/// callbacks call live. Requests without a [`Wf`] pass untouched.
///
/// Bounds: a call without its own `grpc-timeout` gets the workflow's (its `request_timeout`,
/// else the DTM client's timeout), sent as `grpc-timeout` and enforced here
/// (`DeadlineExceeded`); a recorded reply longer than the DTM client's answer cap is
/// [`Error::TooLarge`].
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkflowLayer;

impl<S> tower_layer::Layer<S> for WorkflowLayer {
    type Service = WorkflowGrpc<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WorkflowGrpc { inner }
    }
}

/// The service of [`WorkflowLayer`].
#[derive(Debug, Clone)]
pub struct WorkflowGrpc<S> {
    inner: S,
}

fn frame(message: Vec<u8>) -> Bytes {
    let mut v = Vec::with_capacity(message.len() + 5);
    v.push(0);
    v.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    v.extend_from_slice(&message);
    Bytes::from(v)
}

/// An OK gRPC response carrying `message`.
fn ok_response(message: Vec<u8>) -> http::Response<Body> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(Frame::data(frame(message))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = Body::new(StreamBody::new(futures_util::stream::iter(frames)));
    let mut resp = http::Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// The answer the layer itself gives its caller for `e`: marked when no answer came, so that
/// `dtmgrpc::status_to_error` does not read it as the server's.
fn error_response(e: &Error) -> http::Response<Body> {
    dtmgrpc::local_status(e).into_http()
}

/// The message of a unary gRPC body (one length-prefixed frame).
fn unframe(mut data: Bytes) -> Result<Vec<u8>, Error> {
    if data.len() < 5 {
        return Ok(Vec::new());
    }
    let compressed = data.get_u8();
    let len = data.get_u32() as usize;
    if compressed != 0 || data.len() < len {
        return Err(Error::invalid(
            "cannot record a compressed or truncated gRPC reply",
        ));
    }
    Ok(data.split_to(len).to_vec())
}

/// The error of a call that got no answer: the channel failed (a gRPC status would have come
/// in the response). `DeadlineExceeded` (4) when the `grpc-timeout` ran out, else
/// `Unavailable` (14); both count as transport errors ([`Error::is_transport`]).
fn channel_error(target: &str, e: Box<dyn std::error::Error + Send + Sync>) -> Error {
    let mut timed_out = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
    while let Some(c) = cur {
        timed_out |= c.is::<tonic::TimeoutExpired>();
        cur = c.source();
    }
    let code = if timed_out {
        Code::DeadlineExceeded
    } else {
        Code::Unavailable
    };
    dtmgrpc::no_answer_error(&dtmcli::redact::redact_url(target), code, &*e)
}

impl<S> tower_service::Service<http::Request<Body>> for WorkflowGrpc<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let Some(wf) = req.extensions().get::<Wf>().cloned() else {
            return Box::pin(self.inner.call(req));
        };
        let info = wf.trans_info();
        match dtmgrpc::branch_metadata(&info, &Default::default()) {
            Ok(md) => {
                for (k, v) in md.into_headers().iter() {
                    req.headers_mut().insert(k.clone(), v.clone());
                }
            }
            Err(e) => return Box::pin(async move { Ok(error_response(&e)) }),
        }
        // A call without its own deadline gets the workflow's, told to the server
        // (`grpc-timeout`, as `tonic::Request::set_timeout` does) and enforced here: a
        // server that never answers must not hold the workflow forever.
        let deadline = if req.headers().contains_key("grpc-timeout") {
            None
        } else {
            let d = wf.call_timeout();
            let ms = d.as_millis().clamp(1, 99_999_999);
            if let Ok(v) = http::HeaderValue::from_str(&format!("{ms}m")) {
                req.headers_mut().insert("grpc-timeout", v);
            }
            Some(d)
        };
        if info.op != Op::Action {
            // Live phase-2 call: bounded until the answer starts; tonic reads its body.
            dtmcli::trace::put_context(req.headers_mut());
            let call = self.inner.call(req);
            return Box::pin(async move {
                match deadline {
                    Some(d) => match tokio::time::timeout(d, call).await {
                        Ok(r) => r,
                        Err(_) => Ok(error_response(&Error::grpc_no_answer(
                            String::new(),
                            Code::DeadlineExceeded as i32,
                            format!("none came within {d:?}"),
                        ))),
                    },
                    None => call.await,
                }
            });
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let label = req.uri().path().to_string();
        let limit = wf.max_answer_bytes();
        Box::pin(async move {
            let target = label.clone();
            let label_for_timeout = label.clone();
            let step = async move {
                // Inside the step's span: the branch's parent is the step.
                let mut req = req;
                dtmcli::trace::put_context(req.headers_mut());
                let resp = match inner.call(req).await {
                    Ok(r) => r,
                    Err(e) => return StepOutcome::Unrecorded(channel_error(&target, e.into())),
                };
                let (parts, body) = resp.into_parts();
                // Read at most `limit` bytes: the reply is kept in memory to be recorded.
                let collected = match http_body_util::Limited::new(body, limit).collect().await {
                    Ok(c) => c,
                    Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                        return StepOutcome::Unrecorded(Error::TooLarge {
                            url: dtmcli::redact::redact_url(&target).into_owned(),
                            limit,
                        })
                    }
                    Err(e) => return StepOutcome::Unrecorded(Error::other(e)),
                };
                let trailers = collected.trailers().cloned().unwrap_or_default();
                let data = collected.to_bytes();
                let status = Status::from_header_map(&trailers)
                    .or_else(|| Status::from_header_map(&parts.headers));
                match status.as_ref().map(Status::code) {
                    Some(Code::Ok) => match unframe(data) {
                        Ok(m) => StepOutcome::Ok(m),
                        Err(e) => StepOutcome::Unrecorded(e),
                    },
                    Some(_) => match status.map(|s| dtmgrpc::status_to_error(&target, &s)) {
                        Some(Error::Failure(m)) => StepOutcome::Failed(m),
                        Some(e) => StepOutcome::Unrecorded(e),
                        None => StepOutcome::Unrecorded(Error::other("no gRPC status")),
                    },
                    None => StepOutcome::Unrecorded(Error::other(format!(
                        "{target}: answer without grpc-status (HTTP {})",
                        parts.status
                    ))),
                }
            };
            let step = async move {
                match deadline {
                    Some(d) => tokio::time::timeout(d, step).await.unwrap_or_else(|_| {
                        StepOutcome::Unrecorded(Error::grpc_no_answer(
                            dtmcli::redact::redact_url(&label_for_timeout),
                            Code::DeadlineExceeded as i32,
                            format!("none came within {d:?}"),
                        ))
                    }),
                    None => step.await,
                }
            };
            Ok(match wf.recorded("grpc", &label, step).await {
                Ok(message) => ok_response(message),
                Err(e) => error_response(&e),
            })
        })
    }
}
