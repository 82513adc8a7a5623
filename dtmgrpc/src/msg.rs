//! 2-phase messages over gRPC.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use dtmcli::{Op, Result, TransInfo, TransOptions, TransType};
use prost::Message;

use crate::client::{dtm_request, DtmGrpcClient};
use crate::pb::dtmgimp::DtmRequest;
use crate::url::check_branch_url;

/// A 2-phase message under construction over gRPC ([`DtmGrpcClient::msg`]).
///
/// Once submitted, DTM delivers every branch until it succeeds. With [`Msg::prepare`] first,
/// DTM calls the `query_prepared` branch (with an empty message, `branch_id 00`, `op msg`)
/// to learn whether the local transaction committed, if the message is not submitted within
/// its `timeout_to_fail`. [`Msg::do_and_submit`] wraps the whole outbox pattern.
///
/// DTM's gRPC API has no `concurrent` field: branches of a gRPC message run one by one.
#[derive(Debug)]
#[must_use = "a message does nothing until submitted"]
pub struct Msg {
    /// The back-check URL of the last `prepare`, repeated on submit as the Go SDK does.
    prepared: std::sync::Mutex<String>,
    client: DtmGrpcClient,
    gid: String,
    steps: Vec<BTreeMap<String, String>>,
    payloads: Vec<Vec<u8>>,
    delay: Option<Duration>,
    options: TransOptions,
}

impl DtmGrpcClient {
    /// Starts a 2-phase message with global id `gid`.
    pub fn msg(&self, gid: impl Into<String>) -> Msg {
        Msg {
            prepared: std::sync::Mutex::new(String::new()),
            client: self.clone(),
            gid: gid.into(),
            steps: Vec::new(),
            payloads: Vec::new(),
            delay: None,
            options: TransOptions::default(),
        }
    }
}

impl Msg {
    /// The global id.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a branch DTM will call with `payload`.
    pub fn add(self, action: &str, payload: &impl Message) -> Self {
        self.add_raw(action, payload.encode_to_vec())
    }

    /// Adds a branch with already-encoded protobuf bytes.
    pub fn add_raw(mut self, action: &str, payload: impl Into<Vec<u8>>) -> Self {
        self.steps
            .push(BTreeMap::from([("action".to_string(), action.to_string())]));
        self.payloads.push(payload.into());
        self
    }

    /// Adds a branch for every subscriber of `topic` ([`DtmGrpcClient::subscribe`]).
    pub fn add_topic(self, topic: &str, payload: &impl Message) -> Self {
        self.add(&format!("topic://{topic}"), payload)
    }

    /// Delivers the branches no earlier than `delay` after the message was created (whole
    /// seconds, at most [`dtmcli::MAX_WIRE_DURATION`]: `Duration::MAX` is accepted).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets the transaction options.
    pub fn with_options(mut self, options: TransOptions) -> Self {
        self.options = options;
        self
    }

    fn base(&self) -> Result<DtmRequest> {
        for step in &self.steps {
            for url in step.values() {
                if !url.starts_with("topic://") {
                    check_branch_url(url)?;
                }
            }
        }
        let mut r = dtm_request(&self.gid, TransType::Msg, &self.options, &self.steps)?;
        r.bin_payloads = self.payloads.clone();
        Ok(r)
    }

    /// The exact message [`Msg::prepare`] sends.
    pub fn prepare_request(&self, query_prepared: &str) -> Result<DtmRequest> {
        check_branch_url(query_prepared)?;
        let mut r = self.base()?;
        r.query_prepared = query_prepared.to_string();
        Ok(r)
    }

    /// The exact message [`Msg::submit`] sends (the delay goes on submit only).
    pub fn submit_request(&self) -> Result<DtmRequest> {
        let mut r = self.base()?;
        r.customed_data = dtmcli::flow::msg_delay_custom_data(self.delay);
        r.query_prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(r)
    }

    /// Phase 1: registers the prepared message with its back-check branch.
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
        info.dtm = Some(self.client.target().to_string());
        info
    }

    /// The outbox pattern, as the Go SDK's `DoAndSubmit`:
    ///
    /// 1. `prepare(query_prepared)`; an error is returned as is.
    /// 2. `busi(info)` runs the local transaction (typically guarded by a barrier row).
    /// 3. If it returned an error other than [`dtmcli::Error::Failure`], the outcome of the local
    ///    transaction is unknown, so the `query_prepared` branch is called (empty message,
    ///    `op msg`), as DTM itself would, within the transaction's `request_timeout` or the
    ///    client's timeout.
    /// 4. On a failure from either, the message is aborted; on success it is submitted;
    ///    otherwise it stays prepared and DTM's back-check decides later.
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
        dtmcli::flow::after_local_business(
            &self.gid,
            business,
            || async {
                self.client
                    .call_branch_within(
                        query_prepared,
                        &info,
                        &self.options.branch_headers,
                        Bytes::new(),
                        self.client.branch_timeout(&self.options),
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
    use dtmcli::Error;

    #[tokio::test]
    async fn delay_only_on_submit() {
        let c = DtmGrpcClient::new("localhost:1").unwrap();
        let m = c
            .msg("g")
            .add_raw("h:1/a.B/C", vec![1])
            .add_topic("t", &())
            .delay(Duration::from_secs(10));
        let p = m.prepare_request("h:1/a.B/Q").unwrap();
        assert_eq!(p.customed_data, "");
        assert_eq!(p.query_prepared, "h:1/a.B/Q");
        assert!(p.steps.contains("topic://t"));
        let s = m.submit_request().unwrap();
        assert_eq!(s.customed_data, r#"{"delay":10}"#);
        assert!(m.prepare_request("nonsense").is_err());
        let e = c
            .msg("g")
            .add_raw("h:1", vec![])
            .submit_request()
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)));
    }
}
