//! A fake DTM server for the core's unit tests (outcomes, clusters): a test writes only what
//! its server does with a transaction call and a query, and this one [`Transport`] impl
//! serves them all; every other call fails as unused.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::transport::{BranchRegistration, BranchResponse, DtmOp, Json, Transport};
use crate::types::TransInfo;
use crate::wire::{QueryResult, TransRequest, WorkflowProgress};

/// What a fake DTM server does. Every implementor is a [`Transport`] (JSON, protocol
/// `fake`) that trusts anything and switches to no other server.
pub(crate) trait FakeDtm: Clone + Debug + Send + Sync + 'static {
    /// The server's name ([`Transport::server`]).
    fn name(&self) -> &'static str;
    /// The bounds of its calls.
    fn limits(&self) -> &Limits;
    /// `prepare`, `submit`, `abort`...: unused unless the test says otherwise.
    fn call_dtm(&self) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Err(unused()))
    }
    /// DTM's stored state of `gid`.
    fn query(&self, gid: &str) -> impl Future<Output = Result<QueryResult>> + Send;
}

/// The error of a call the tests do not make.
pub(crate) fn unused() -> Error {
    Error::invalid("not used by these tests")
}

impl<D: FakeDtm> Transport for D {
    type Encoding = Json;
    fn protocol(&self) -> &'static str {
        "fake"
    }
    fn server(&self) -> &str {
        self.name()
    }
    fn limits(&self) -> &Limits {
        FakeDtm::limits(self)
    }
    fn with_server(&self, _: &str) -> Result<Self> {
        Ok(self.clone())
    }
    fn check_request(&self, _: &TransRequest) -> Result<()> {
        Ok(())
    }
    fn check_branch_url(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn call_dtm(&self, _: DtmOp, _: TransRequest) -> impl Future<Output = Result<()>> + Send {
        FakeDtm::call_dtm(self)
    }
    async fn register(&self, _: &BranchRegistration) -> Result<()> {
        Err(unused())
    }
    async fn prepare_workflow_progress(&self, _: &TransRequest) -> Result<WorkflowProgress> {
        Err(unused())
    }
    async fn call_branch_bytes(
        &self,
        _: &str,
        _: &TransInfo,
        _: &std::collections::BTreeMap<String, String>,
        _: Option<Bytes>,
        _: Duration,
    ) -> Result<BranchResponse> {
        Err(unused())
    }
    fn query(&self, gid: &str) -> impl Future<Output = Result<QueryResult>> + Send {
        FakeDtm::query(self, gid)
    }
}
