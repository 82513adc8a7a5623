//! Saga: actions with compensations, sequential or as a DAG. Written once for every
//! transport: `dtmcli::Saga` is `Saga<DtmClient>`, `dtmgrpc::Saga` is `Saga<DtmGrpcClient>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument;

use crate::error::{Error, Result};
#[cfg(feature = "http")]
use crate::http::client::DtmClient;
use crate::options::TransOptions;
use crate::trace;
use crate::transport::{DtmOp, Encode, Transport};
use crate::types::TransType;
use crate::wire::{Shared, TransRequest};

/// A saga under construction. Build it with [`DtmClient::saga`] (or the gRPC client's
/// `saga`), add steps, then [`Saga::submit`].
///
/// Each step is an action URL and a compensation URL (either may be empty, which DTM treats as
/// an immediate success) plus the body both receive (JSON over HTTP, protobuf over gRPC).
/// DTM runs the actions in order (or as a DAG with [`Saga::concurrent`] and
/// [`Saga::add_branch_order`]); at the first failure it runs the compensation of every action
/// that ran, the failed one included, in reverse order.
///
/// An example over HTTP is on [`crate::Saga`]; over gRPC, on the `dtmgrpc` crate.
#[derive(Debug)]
#[must_use = "a saga does nothing until submitted"]
pub struct Saga<T: Transport> {
    transport: T,
    gid: String,
    /// Shared with the requests it makes: sending copies no step and no payload.
    steps: Shared<BTreeMap<String, String>>,
    payloads: Shared<Bytes>,
    orders: BTreeMap<usize, Vec<usize>>,
    concurrent: bool,
    options: TransOptions,
    error: Option<Error>,
}

#[cfg(feature = "http")]
impl DtmClient {
    /// Starts a saga with global id `gid`.
    pub fn saga(&self, gid: impl Into<String>) -> Saga<DtmClient> {
        Saga::new(self.clone(), gid)
    }
}

impl<T: Transport> Saga<T> {
    /// A saga with global id `gid` sent through `transport`.
    pub fn new(transport: T, gid: impl Into<String>) -> Self {
        Saga {
            transport,
            gid: gid.into(),
            steps: Shared::default(),
            payloads: Shared::default(),
            orders: BTreeMap::new(),
            concurrent: false,
            options: TransOptions::default(),
            error: None,
        }
    }

    /// The global id.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a step whose action and compensation both receive `payload`, encoded the
    /// transport's way (JSON over HTTP, protobuf over gRPC). A payload that cannot be encoded
    /// is reported by [`Saga::submit`].
    pub fn add<P: Encode<T::Encoding> + ?Sized>(
        self,
        action: &str,
        compensate: &str,
        payload: &P,
    ) -> Self {
        match payload.encode() {
            Ok(p) => self.add_raw(action, compensate, p),
            Err(e) => self.fail(e),
        }
    }

    /// Adds a step with an already-encoded body. Its URLs are checked here, once (a bad one
    /// is reported by [`Saga::submit`]).
    pub fn add_raw(mut self, action: &str, compensate: &str, payload: impl Into<Bytes>) -> Self {
        if let Some(e) = [action, compensate]
            .into_iter()
            .filter(|u| !u.is_empty())
            .find_map(|u| self.transport.check_branch_url(u).err())
        {
            return self.fail(e);
        }
        Arc::make_mut(&mut self.steps).push(BTreeMap::from([
            ("action".to_string(), action.to_string()),
            ("compensate".to_string(), compensate.to_string()),
        ]));
        Arc::make_mut(&mut self.payloads).push(payload.into());
        self
    }

    /// Concurrent mode: step `branch` (0-based) starts only after every step in
    /// `pre_branches` succeeded. Only used with [`Saga::concurrent`]; each prerequisite must
    /// come before `branch`.
    pub fn add_branch_order(mut self, branch: usize, pre_branches: &[usize]) -> Self {
        self.orders.insert(branch, pre_branches.to_vec());
        self
    }

    /// Runs the steps concurrently, constrained by the branch orders.
    pub fn concurrent(mut self) -> Self {
        self.concurrent = true;
        self
    }

    /// Sets the transaction options.
    pub fn with_options(mut self, options: TransOptions) -> Self {
        self.options = options;
        self
    }

    fn fail(mut self, e: Error) -> Self {
        self.error.get_or_insert(e);
        self
    }

    /// The exact request [`Saga::submit`] sends, after every check.
    pub fn request(&self) -> Result<TransRequest> {
        if let Some(e) = &self.error {
            return Err(crate::error::copy_invalid(e));
        }
        crate::identity::check_gid(&self.gid)?;
        let mut r = TransRequest::new(&self.gid, TransType::Saga, &self.options);
        r.steps = self.steps.clone();
        r.payloads = self.payloads.clone();
        if self.concurrent {
            r.custom_data = concurrent_custom_data(self.steps.len(), &self.orders)?;
            r.concurrent = true;
        }
        self.transport.check_request(&r)?;
        Ok(r)
    }

    /// Submits the saga. The result is what DTM stored ([`crate::outcome`]):
    ///
    /// - `Ok`: without `wait_result`, DTM holds the saga and runs it; with `wait_result`,
    ///   DTM ran it to `succeed`.
    /// - [`Error::Failure`]: DTM stored it `failed` (rolled back), with its rollback reason.
    /// - [`Error::NotFinal`]: DTM holds it unfinished (a branch answered a retryable error or
    ///   ONGOING and DTM retries it, or it is rolling back) and will finish it; wait for that
    ///   with the client's `wait_final`.
    /// - any other error: DTM holds nothing of this submit (or could not be asked); sending
    ///   the same saga again is safe.
    pub async fn submit(&self) -> Result<()> {
        let span = trace::transaction_span("saga", &self.gid, self.transport.protocol());
        let run = async {
            let req = self.request()?;
            let wait = req.wait_result();
            let answer = self.transport.call_dtm(DtmOp::Submit, req).await;
            crate::outcome::submitted(&self.transport, &self.gid, TransType::Saga, wait, answer)
                .await
        };
        crate::metrics::transaction("saga", self.transport.protocol(), run)
            .instrument(span)
            .await
    }
}

/// The `custom_data` of a concurrent saga (`{"concurrent":true,"orders":{..}}`), after
/// checking that every order names an existing step and only earlier prerequisites.
fn concurrent_custom_data(steps: usize, orders: &BTreeMap<usize, Vec<usize>>) -> Result<String> {
    for (branch, pre) in orders {
        if *branch >= steps {
            return Err(Error::invalid(format!(
                "branch order names step {branch}, the saga has {steps} steps"
            )));
        }
        if let Some(p) = pre.iter().find(|p| **p >= *branch) {
            return Err(Error::invalid(format!(
                "branch order: step {branch} cannot wait for step {p}, which is not before it"
            )));
        }
    }
    Ok(serde_json::json!({"concurrent": true, "orders": orders}).to_string())
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;

    #[test]
    fn concurrent_custom_data() {
        let c = DtmClient::new("http://localhost:1/api/dtmsvr").unwrap();
        let s = c
            .saga("g")
            .add("a0", "c0", &1)
            .add("a1", "c1", &2)
            .add("a2", "c2", &3)
            .add_branch_order(2, &[0, 1])
            .concurrent();
        let r = s.request().unwrap();
        assert_eq!(r.custom_data, r#"{"concurrent":true,"orders":{"2":[0,1]}}"#);
        assert!(r.concurrent);
        let bad = c
            .saga("g")
            .add("a", "c", &1)
            .add_branch_order(0, &[0])
            .concurrent();
        assert!(bad.request().is_err());
        let not_conc = c.saga("g").add("a", "c", &1).add_branch_order(3, &[0]);
        assert_eq!(not_conc.request().unwrap().custom_data, "");
    }

    #[tokio::test]
    async fn binary_payload_is_refused_before_sending() {
        // Port 1 refuses connections: an attempt to send would be a transport error.
        let c = DtmClient::new("http://127.0.0.1:1/api/dtmsvr").unwrap();
        let e = c
            .saga("g")
            .add_raw("http://a", "", vec![0xff, 0xfe])
            .submit()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        let e = c
            .msg("g")
            .add_raw("http://a", vec![0xff])
            .prepare("http://q")
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    }
}
