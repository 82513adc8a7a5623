//! 2-phase messages: prepare, do local work, submit; DTM back-checks when unsure.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::client::DtmClient;
use crate::error::{Error, Result};
use crate::options::TransOptions;
use crate::types::{Op, TransInfo, TransType};
use crate::wire::TransRequest;

/// A 2-phase message under construction ([`DtmClient::msg`]).
///
/// Once submitted, DTM delivers every branch until it succeeds. With [`Msg::prepare`] first,
/// DTM asks the `query_prepared` URL whether the local transaction committed if the message
/// is not submitted within its `timeout_to_fail`. [`Msg::do_and_submit`] wraps the whole
/// outbox pattern.
#[derive(Debug)]
#[must_use = "a message does nothing until submitted"]
pub struct Msg {
    /// The back-check URL of the last `prepare`, repeated on submit as the Go SDK does.
    prepared: std::sync::Mutex<String>,
    client: DtmClient,
    gid: String,
    steps: Vec<BTreeMap<String, String>>,
    payloads: Vec<String>,
    delay: Option<Duration>,
    concurrent: bool,
    options: TransOptions,
    error: Option<String>,
}

impl DtmClient {
    /// Starts a 2-phase message with global id `gid`.
    pub fn msg(&self, gid: impl Into<String>) -> Msg {
        Msg {
            prepared: std::sync::Mutex::new(String::new()),
            client: self.clone(),
            gid: gid.into(),
            steps: Vec::new(),
            payloads: Vec::new(),
            delay: None,
            concurrent: false,
            options: TransOptions::default(),
            error: None,
        }
    }
}

impl Msg {
    /// The global id.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a branch DTM will POST `payload` (as JSON) to.
    pub fn add(self, action: &str, payload: &impl Serialize) -> Self {
        match serde_json::to_string(payload) {
            Ok(p) => self.add_raw(action, p),
            Err(e) => {
                let mut s = self;
                s.error.get_or_insert(format!("msg payload: {e}"));
                s
            }
        }
    }

    /// Adds a branch with an already-encoded body.
    pub fn add_raw(mut self, action: &str, payload: impl Into<String>) -> Self {
        self.steps
            .push(BTreeMap::from([("action".to_string(), action.to_string())]));
        self.payloads.push(payload.into());
        self
    }

    /// Adds a branch for every subscriber of `topic` (see [`DtmClient::subscribe`]).
    pub fn add_topic(self, topic: &str, payload: &impl Serialize) -> Self {
        self.add(&format!("topic://{topic}"), payload)
    }

    /// Delivers the branches no earlier than `delay` after the message was created.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Delivers the branches concurrently.
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
            return Err(Error::invalid(e));
        }
        crate::identity::check_gid(&self.gid)?;
        let mut r = TransRequest::new(&self.gid, TransType::Msg, &self.options);
        r.steps = self.steps.clone();
        r.payloads = self.payloads.clone();
        r.concurrent = self.concurrent;
        Ok(r)
    }

    /// The exact body [`Msg::prepare`] sends.
    pub fn prepare_request(&self, query_prepared: &str) -> Result<TransRequest> {
        let mut r = self.base()?;
        r.query_prepared = query_prepared.to_string();
        Ok(r)
    }

    /// The exact body [`Msg::submit`] sends (after a [`Msg::prepare`], it repeats its
    /// `query_prepared`, as the Go SDK does).
    pub fn submit_request(&self) -> Result<TransRequest> {
        let mut r = self.base()?;
        r.custom_data = crate::flow::msg_delay_custom_data(self.delay);
        r.query_prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(r)
    }

    /// Phase 1: registers the prepared message with its back-check URL.
    pub async fn prepare(&self, query_prepared: &str) -> Result<()> {
        let req = self.prepare_request(query_prepared)?;
        *self.prepared.lock().unwrap_or_else(|p| p.into_inner()) = query_prepared.to_string();
        self.client.prepare(&req).await
    }

    /// Phase 2 (or a one-shot message when not prepared): DTM delivers the branches.
    pub async fn submit(&self) -> Result<()> {
        let req = self.submit_request()?;
        self.client.submit(&req).await
    }

    /// The transaction info the local business of [`Msg::do_and_submit`] receives:
    /// `trans_type=msg, branch_id=00, op=msg`, ready to build a barrier from.
    pub fn local_info(&self) -> TransInfo {
        let mut info = TransInfo::new(self.gid.clone(), TransType::Msg, "00", Op::Msg);
        info.dtm = Some(self.client.server().to_string());
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
    ///    `query_prepared` URL is asked, as DTM itself would.
    /// 4. On a failure from either, the message is aborted; on success it is submitted;
    ///    otherwise it is left prepared and DTM's back-check decides later.
    /// 5. The business error is returned if there was one, else the back-check or submit
    ///    error.
    pub async fn do_and_submit<F, Fut>(&self, query_prepared: &str, busi: F) -> Result<()>
    where
        F: FnOnce(TransInfo) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        self.prepare(query_prepared).await?;
        let info = self.local_info();
        let business = busi(info.clone()).await;
        crate::flow::after_local_business(
            &self.gid,
            business,
            || async {
                let timeout = self.client.call_timeout(self.options.request_timeout);
                self.client
                    .call_branch_with_timeout(
                        query_prepared,
                        &info,
                        &self.options.branch_headers,
                        None,
                        timeout,
                    )
                    .await
                    .map(drop)
            },
            // Built only when the message is aborted (it copies every payload).
            || async { self.client.abort(&self.base()?).await },
            || self.submit(),
        )
        .await
    }
}

#[cfg(test)]
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
