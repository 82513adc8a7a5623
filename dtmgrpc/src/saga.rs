//! Saga over gRPC.

use std::collections::BTreeMap;

use dtmcli::{Result, TransOptions, TransType};
use prost::Message;

use crate::client::{dtm_request, DtmGrpcClient};
use crate::pb::dtmgimp::DtmRequest;
use crate::url::check_branch_url;

/// A saga under construction over gRPC. Build it with [`DtmGrpcClient::saga`], add steps,
/// then [`Saga::submit`].
///
/// Each step is an action and a compensation URL (`host:port/pkg.Service/Method`, an
/// `http(s)://` URL, which DTM then calls over HTTP with the protobuf bytes as body, or empty
/// for an immediate success) plus the protobuf message both receive. DTM runs the actions in
/// order (or as a DAG with [`Saga::concurrent`] and [`Saga::add_branch_order`]); at the
/// first failure it runs the compensation of every action that ran, the failed one
/// included, in reverse order.
#[derive(Debug)]
#[must_use = "a saga does nothing until submitted"]
pub struct Saga {
    client: DtmGrpcClient,
    gid: String,
    steps: Vec<BTreeMap<String, String>>,
    payloads: Vec<Vec<u8>>,
    orders: BTreeMap<usize, Vec<usize>>,
    concurrent: bool,
    options: TransOptions,
}

impl DtmGrpcClient {
    /// Starts a saga with global id `gid`.
    pub fn saga(&self, gid: impl Into<String>) -> Saga {
        Saga {
            client: self.clone(),
            gid: gid.into(),
            steps: Vec::new(),
            payloads: Vec::new(),
            orders: BTreeMap::new(),
            concurrent: false,
            options: TransOptions::default(),
        }
    }
}

impl Saga {
    /// The global id.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a step whose action and compensation both receive `payload`.
    pub fn add(self, action: &str, compensate: &str, payload: &impl Message) -> Self {
        self.add_raw(action, compensate, payload.encode_to_vec())
    }

    /// Adds a step with already-encoded protobuf bytes.
    pub fn add_raw(mut self, action: &str, compensate: &str, payload: impl Into<Vec<u8>>) -> Self {
        self.steps.push(BTreeMap::from([
            ("action".to_string(), action.to_string()),
            ("compensate".to_string(), compensate.to_string()),
        ]));
        self.payloads.push(payload.into());
        self
    }

    /// Concurrent mode: step `branch` (0-based) starts only after every step in
    /// `pre_branches` succeeded. Only used with [`Saga::concurrent`]; each prerequisite must
    /// come before `branch`.
    pub fn add_branch_order(mut self, branch: usize, pre_branches: &[usize]) -> Self {
        self.orders.insert(branch, pre_branches.to_vec());
        self
    }

    /// Runs the steps concurrently, constrained by the branch orders (Go:
    /// `EnableConcurrent`).
    pub fn concurrent(mut self) -> Self {
        self.concurrent = true;
        self
    }

    /// Sets the transaction options.
    pub fn with_options(mut self, options: TransOptions) -> Self {
        self.options = options;
        self
    }

    /// The exact message [`Saga::submit`] sends. Fails on a malformed branch URL, a bad
    /// branch order or a branch header that cannot be gRPC metadata.
    pub fn request(&self) -> Result<DtmRequest> {
        for step in &self.steps {
            for url in step.values() {
                check_branch_url(url)?;
            }
        }
        let mut r = dtm_request(&self.gid, TransType::Saga, &self.options, &self.steps)?;
        r.bin_payloads = self.payloads.clone();
        if self.concurrent {
            r.customed_data =
                dtmcli::flow::saga_concurrent_custom_data(self.steps.len(), &self.orders)?;
        }
        Ok(r)
    }

    /// Submits the saga. With `wait_result`, returns the outcome of the whole saga
    /// ([`dtmcli::Error::Failure`] with the rollback reason when it rolled back).
    pub async fn submit(&self) -> Result<()> {
        let req = self.request()?;
        self.client.submit(&req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_shape() {
        let c = DtmGrpcClient::new("localhost:1").unwrap();
        let s = c
            .saga("g")
            .add_raw("h:1/a.B/C", "h:1/a.B/D", vec![8, 30])
            .add_raw("http://h/x", "", vec![8, 1])
            .add_branch_order(1, &[0])
            .concurrent();
        let r = s.request().unwrap();
        assert_eq!(
            r.steps,
            r#"[{"action":"h:1/a.B/C","compensate":"h:1/a.B/D"},{"action":"http://h/x","compensate":""}]"#
        );
        assert_eq!(r.bin_payloads, vec![vec![8, 30], vec![8, 1]]);
        assert_eq!(r.customed_data, r#"{"concurrent":true,"orders":{"1":[0]}}"#);
        let bad = c.saga("g").add_raw("h:1", "", vec![]);
        assert!(matches!(bad.request(), Err(dtmcli::Error::InvalidInput(_))));
        let order = c
            .saga("g")
            .add_raw("", "", vec![])
            .add_branch_order(0, &[0])
            .concurrent();
        assert!(order.request().is_err());
    }
}
