//! 2-phase messages: prepare, do local work, submit; DTM back-checks when unsure. Written
//! once for every transport: `dtmcli::Msg` is `Msg<DtmClient>`, `dtmgrpc::Msg` is
//! `Msg<DtmGrpcClient>`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument;

use crate::error::{Error, Result};
#[cfg(feature = "http")]
use crate::http::client::DtmClient;
use crate::options::TransOptions;
use crate::trace;
use crate::transport::{DtmOp, Encode, Transport};
use crate::types::{Op, TransInfo, TransType};
use crate::wire::{Shared, TransRequest};

/// A 2-phase message under construction ([`DtmClient::msg`], or the gRPC client's `msg`).
///
/// Once submitted, DTM delivers every branch until it succeeds. With [`Msg::prepare`] first,
/// DTM asks the `query_prepared` URL whether the local transaction committed if the message
/// is not submitted within its `timeout_to_fail`. [`Msg::do_and_submit`] wraps the whole
/// outbox pattern. An example over HTTP is on [`crate::Msg`].
#[derive(Debug)]
#[must_use = "a message does nothing until submitted"]
pub struct Msg<T: Transport> {
    /// The back-check URL of the last `prepare`, repeated on submit as the Go SDK does.
    prepared: std::sync::Mutex<String>,
    transport: T,
    gid: String,
    /// Shared with the requests it makes: sending copies no step and no payload.
    steps: Shared<BTreeMap<String, String>>,
    payloads: Shared<Bytes>,
    delay: Option<Duration>,
    concurrent: bool,
    options: TransOptions,
    error: Option<Error>,
}

#[cfg(feature = "http")]
impl DtmClient {
    /// Starts a 2-phase message with global id `gid`.
    pub fn msg(&self, gid: impl Into<String>) -> Msg<DtmClient> {
        Msg::new(self.clone(), gid)
    }
}

impl<T: Transport> Msg<T> {
    /// A message with global id `gid` sent through `transport`.
    pub fn new(transport: T, gid: impl Into<String>) -> Self {
        Msg {
            prepared: std::sync::Mutex::new(String::new()),
            transport,
            gid: gid.into(),
            steps: Shared::default(),
            payloads: Shared::default(),
            delay: None,
            concurrent: false,
            options: TransOptions::default(),
            error: None,
        }
    }

    /// The global id.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a branch DTM will call with `payload`, encoded the transport's way (JSON over
    /// HTTP, protobuf over gRPC).
    pub fn add<P: Encode<T::Encoding> + ?Sized>(self, action: &str, payload: &P) -> Self {
        match payload.encode() {
            Ok(p) => self.add_raw(action, p),
            Err(e) => {
                let mut s = self;
                s.error.get_or_insert(e);
                s
            }
        }
    }

    /// Adds a branch with an already-encoded body. Its URL is checked here, once (a bad one
    /// is reported when the message is sent).
    pub fn add_raw(mut self, action: &str, payload: impl Into<Bytes>) -> Self {
        if !action.starts_with(TOPIC_PREFIX) {
            if let Err(e) = self.transport.check_branch_url(action) {
                self.error.get_or_insert(e);
                return self;
            }
        }
        Arc::make_mut(&mut self.steps)
            .push(BTreeMap::from([("action".to_string(), action.to_string())]));
        Arc::make_mut(&mut self.payloads).push(payload.into());
        self
    }

    /// Adds a branch for every subscriber of `topic` (see [`DtmClient::subscribe`]).
    pub fn add_topic<P: Encode<T::Encoding> + ?Sized>(self, topic: &str, payload: &P) -> Self {
        self.add(&format!("{TOPIC_PREFIX}{topic}"), payload)
    }

    /// Delivers the branches no earlier than `delay` after the message was created.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Delivers the branches concurrently. (DTM's gRPC API has no field for it: over gRPC
    /// the branches are delivered one after another.)
    pub fn concurrent(mut self) -> Self {
        self.concurrent = true;
        self
    }

    /// Sets the transaction options.
    pub fn with_options(mut self, options: TransOptions) -> Self {
        self.options = options;
        self
    }

    fn base(&self) -> Result<TransRequest> {
        if let Some(e) = &self.error {
            return Err(crate::error::copy_invalid(e));
        }
        crate::identity::check_gid(&self.gid)?;
        let mut r = TransRequest::new(&self.gid, TransType::Msg, &self.options);
        r.steps = self.steps.clone();
        r.payloads = self.payloads.clone();
        r.concurrent = self.concurrent;
        self.transport.check_request(&r)?;
        Ok(r)
    }

    /// The exact request [`Msg::prepare`] sends.
    pub fn prepare_request(&self, query_prepared: &str) -> Result<TransRequest> {
        self.transport.check_branch_url(query_prepared)?;
        let mut r = self.base()?;
        r.query_prepared = query_prepared.to_string();
        Ok(r)
    }

    /// The exact request [`Msg::submit`] sends (after a [`Msg::prepare`], it repeats its
    /// `query_prepared`, as the Go SDK does).
    pub fn submit_request(&self) -> Result<TransRequest> {
        let mut r = self.base()?;
        r.custom_data = delay_custom_data(self.delay);
        r.query_prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(r)
    }

    /// Phase 1: registers the prepared message with its back-check URL. DTM refuses it when
    /// the gid already names a transaction in another status: that is reported as what DTM
    /// stored ([`crate::outcome`]), never as a failure the message did not have.
    pub async fn prepare(&self, query_prepared: &str) -> Result<()> {
        self.prepare_now(query_prepared)
            .instrument(self.span())
            .await
    }

    /// Phase 2 (or a one-shot message when not prepared): DTM delivers the branches. The
    /// result is what DTM stored, as for [`crate::Saga::submit`] ([`crate::outcome`]): `Ok`
    /// once DTM holds the message submitted (with `wait_result`: delivered),
    /// [`Error::Failure`] when it is `failed` (its back-check found the local transaction
    /// rolled back), [`Error::NotFinal`] while DTM still delivers it.
    pub async fn submit(&self) -> Result<()> {
        let protocol = self.transport.protocol();
        crate::metrics::transaction("msg", protocol, self.submit_now())
            .instrument(self.span())
            .await
    }

    /// The `dtm.transaction` span of this message's calls.
    fn span(&self) -> tracing::Span {
        trace::transaction_span("msg", &self.gid, self.transport.protocol())
    }

    async fn prepare_now(&self, query_prepared: &str) -> Result<()> {
        let req = self.prepare_request(query_prepared)?;
        *self.prepared.lock().unwrap_or_else(|p| p.into_inner()) = query_prepared.to_string();
        let answer = self.transport.call_dtm(DtmOp::Prepare, req).await;
        crate::outcome::prepared(&self.transport, &self.gid, TransType::Msg, answer).await
    }

    async fn submit_now(&self) -> Result<()> {
        let req = self.submit_request()?;
        let wait = req.wait_result();
        let answer = self.transport.call_dtm(DtmOp::Submit, req).await;
        crate::outcome::submitted(&self.transport, &self.gid, TransType::Msg, wait, answer).await
    }

    /// The transaction info the local business of [`Msg::do_and_submit`] receives:
    /// `trans_type=msg, branch_id=00, op=msg`, ready to build a barrier from.
    pub fn local_info(&self) -> TransInfo {
        let mut info = TransInfo::new(self.gid.clone(), TransType::Msg, "00", Op::Msg);
        info.dtm = Some(self.transport.server().to_string());
        info
    }

    /// The outbox pattern: prepare, run the local business, then submit, with DTM's
    /// back-check logic.
    ///
    /// 1. `prepare(query_prepared)`; an error is returned as is.
    /// 2. `busi(info)` runs the local transaction (typically writing a barrier row in the same
    ///    database transaction, see the barrier crate).
    /// 3. If it returned an error other than [`Error::Failure`], the outcome of the local
    ///    transaction is unknown (it may have committed before the error), so the
    ///    `query_prepared` branch is asked (no body, `op=msg`), as DTM itself would, within
    ///    the transaction's `request_timeout` or the client's timeout.
    /// 4. On a failure from either, the message is aborted; on success it is submitted;
    ///    otherwise it is left prepared and DTM's back-check decides later.
    /// 5. The business error is returned if there was one, else the back-check or submit
    ///    error. A refused prepare and the submit are reported as DTM stored them
    ///    ([`crate::outcome`]): [`Error::Failure`] only for a message DTM stored `failed`.
    pub async fn do_and_submit<F, Fut>(&self, query_prepared: &str, busi: F) -> Result<()>
    where
        F: FnOnce(TransInfo) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let run = self.do_and_submit_now(query_prepared, busi);
        crate::metrics::transaction("msg", self.transport.protocol(), run)
            .instrument(self.span())
            .await
    }

    async fn do_and_submit_now<F, Fut>(&self, query_prepared: &str, busi: F) -> Result<()>
    where
        F: FnOnce(TransInfo) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        self.prepare_now(query_prepared).await?;
        let info = self.local_info();
        let business = busi(info.clone()).await;
        let mut err = match &business {
            Err(e) if !e.is_failure() => {
                tracing::debug!(gid = %self.gid, error = %e, "local business failed; back-checking");
                let timeout = self
                    .transport
                    .limits()
                    .branch_call_timeout(self.options.request_timeout);
                self.transport
                    .call_branch_bytes(
                        query_prepared,
                        &info,
                        &self.options.branch_headers,
                        None,
                        timeout,
                    )
                    .await
                    .map(drop)
            }
            _ => Ok(()),
        };
        let failed = matches!(&business, Err(e) if e.is_failure())
            || matches!(&err, Err(e) if e.is_failure());
        if failed {
            let abort = async { self.transport.call_dtm(DtmOp::Abort, self.base()?).await };
            if let Err(e) = abort.await {
                tracing::warn!(gid = %self.gid, error = %e, "abort of msg failed; DTM's back-check will decide");
            }
        } else if err.is_ok() {
            err = self.submit_now().await;
        }
        business?;
        err
    }
}

/// The step URL prefix of a topic (`topic://<name>`): DTM expands it to the subscribers.
const TOPIC_PREFIX: &str = "topic://";

/// The `custom_data` of a msg delivered no earlier than `delay` after its creation
/// (`{"delay":<whole seconds, rounded up>}`); empty without a delay.
fn delay_custom_data(delay: Option<Duration>) -> String {
    match crate::options::secs(delay) {
        0 => String::new(),
        secs => serde_json::json!({ "delay": secs }).to_string(),
    }
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;

    #[test]
    fn delay_only_on_submit() {
        let c = DtmClient::new("http://localhost:1/api/dtmsvr").unwrap();
        let m = c
            .msg("g")
            .add("http://a", &serde_json::json!({"x": 1}))
            .add_topic("t", &1)
            .delay(Duration::from_secs(10));
        let p = m.prepare_request("http://q").unwrap();
        assert_eq!(p.custom_data, "");
        assert_eq!(p.query_prepared, "http://q");
        assert_eq!(p.steps[1]["action"], "topic://t");
        let s = m.submit_request().unwrap();
        assert_eq!(s.custom_data, r#"{"delay":10}"#);
        assert_eq!(s.query_prepared, "");
    }
}
