//! Several DTM servers of one cluster (stateless servers on one shared store) behind one
//! transport: calls spread over the servers that answer, fail over when one refuses, and
//! state-changing calls whose answer was lost are resolved from what DTM stores instead of
//! being guessed or blindly sent again.
//!
//! [`Cluster`] wraps one transport per server and is itself a [`Transport`], so every mode
//! runs on it unchanged: `cluster.saga(gid)`, `cluster.msg(gid)`, `Tcc::run(&cluster, ..)`,
//! `dtm_workflow::Workflows::http_cluster`... A member is any [`Transport`] that can also
//! [`Query`] a gid: [`crate::DtmClient`] ([`Cluster::http`]), or a gRPC or JSON-RPC transport
//! paired with its server's HTTP API in [`WithQuery`] (`dtmgrpc::DtmGrpcClient::cluster`,
//! [`Cluster::json_rpc`]), since DTM answers `query` over HTTP only. The member list is
//! fixed ([`Cluster::new`]) or follows a discovery source ([`Cluster::discovered`]).
//!
//! A single-server user keeps using the transport itself: nothing here is on its path.
//!
//! Per call, the servers are tried in turn (round robin over the healthy ones, then the
//! ones marked down, as a last resort), within the call's own timeout:
//!
//! - the request could not be sent (connection refused, DNS, TLS): the server is marked
//!   down for a while and the next one is tried; nothing can have happened;
//! - DTM answered (success, FAILURE, ONGOING, a 4xx): that answer is the outcome;
//! - the request may have arrived (timeout, reset, a 5xx, a proxy's 502/503/504): the
//!   server is marked down, the gid is queried on the others, and the table below
//!   decides: done (success, without sending again), send again (to the next server),
//!   failed ([`Error::Failure`]), or unknown ([`Error::Ambiguous`]). A `submit` with
//!   `wait_result` that is found done waits for the final status until the call's deadline,
//!   as DTM would have, and is [`Error::NotFinal`] if it has not come by then.
//!
//! What a call whose answer was lost did, from what DTM holds for its gid:
//!
//! | call | DTM holds | resolution |
//! |---|---|---|
//! | `prepare` | nothing | send again |
//! | `prepare` | the transaction, in any status | done (it was created by this call) |
//! | `submit` of a saga | nothing | send again |
//! | `submit` of a saga | the saga, in any status | done: DTM runs it (to `succeed` or `failed`) |
//! | `submit` of a msg, TCC or XA | nothing, or `prepared` | send again |
//! | `submit` of a msg, TCC or XA | `submitted` or `succeed` | done |
//! | `submit` of a msg | `failed` | failed: the back-check aborted it, the submit cannot take effect |
//! | `submit` of a TCC or XA | `aborting` or `failed` | failed: it is being rolled back (timeout, abort) |
//! | `submit` of a workflow (its final status) | `prepared` | send again |
//! | `submit` of a workflow | the status it asked for | done |
//! | `submit` of a workflow | another final status | unknown (someone else finished it) |
//! | `abort` | `prepared` | send again |
//! | `abort` | `aborting` or `failed` | done |
//! | `abort` | `submitted` or `succeed` | failed: it commits, it cannot be aborted |
//! | `abort` | nothing | unknown (there was nothing to abort) |
//! | `registerBranch` | the branch's rows (TCC `confirm`/`cancel`, XA `commit`/`rollback`, a workflow step's op) | done |
//! | `registerBranch` | not the rows, global `prepared` | send again |
//! | `registerBranch` | not the rows, global in another status, or nothing | failed: DTM accepts branches only while `prepared` |
//! | `prepareWorkflow` | anything | send again: DTM answers it with what it holds |
//!
//! A status this SDK does not know is never guessed: the call is [`Error::Ambiguous`].
//!
//! Each server is tried at most twice per call. A call returns by its timeout (an attempt
//! still running then is cut), plus at most one query window (the client's timeout) when
//! an answer was lost at the end. Running out of servers or time after an answer was lost
//! and DTM was found not to hold the call is [`Error::Ambiguous`], never a plain failure:
//! the lost request may still arrive.
//!
//! A request that is only slow, not lost, may still reach its server after the query found
//! nothing and the call was sent to another one. DTM then sees the same call twice, as it
//! does when any client retries: a second `submit` of a submitted saga is accepted and
//! processed again, so branches may be called twice, which the branch barrier makes
//! harmless.
//!
//! Reads (`query`, `newGid`) simply go to the next server; each read of a server is
//! bounded by its client's timeout, and a server that does not answer is put behind the
//! others. Branch calls the SDK makes itself (TCC tries, XA actions) do not go to DTM and
//! use the first server's settings.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
// The runtime's clock, so that deadlines, cool-downs and timers agree (also when paused).
use tokio::time::Instant;

use crate::resolve::{resolve, Resolution, StateCall};
use crate::transport::{BranchRegistration, BranchResponse, DtmOp, Transport};
use crate::{
    Error, Limits, QueryResult, Result, TransInfo, TransRequest, TransType, WorkflowProgress,
};

/// What a cluster needs from a member beyond [`Transport`]: new gids, and a working
/// [`Transport::query`] (DTM's stored state of a gid, which resolving a lost answer needs;
/// implementing this trait promises it).
pub trait Query: Transport {
    /// A new global id from this server.
    fn new_gid(&self) -> impl Future<Output = Result<String>> + Send;
}

/// How long a server that failed stays behind the others.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(3);

/// Several DTM servers of one cluster as one [`Transport`]; cheap to clone.
pub struct Cluster<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    /// The first member's transport (of the first list, with discovery): its settings are
    /// the cluster's.
    first: T,
    /// The current members; a call works on the snapshot it started with.
    members: RwLock<Arc<Vec<Arc<Member<T>>>>>,
    discovery: Option<Mutex<Discovery<T>>>,
    next: AtomicUsize,
    cooldown: Duration,
}

/// Builds a member's transport from a discovered address.
type MakeMember<T> = Box<dyn Fn(&str) -> Result<T> + Send + Sync>;

/// Where the member list comes from when it changes at run time.
struct Discovery<T> {
    servers: watch::Receiver<Vec<String>>,
    make: MakeMember<T>,
}

struct Member<T> {
    transport: T,
    down_until: Mutex<Option<Instant>>,
}

impl<T> Member<T> {
    fn new(transport: T) -> Arc<Self> {
        Arc::new(Member {
            transport,
            down_until: Mutex::new(None),
        })
    }

    fn down_until(&self) -> Option<Instant> {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the server down for `cooldown` (or up).
    fn mark(&self, down: bool, cooldown: Duration) {
        let until = down.then(|| Instant::now() + cooldown);
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }
}

impl<T> Clone for Cluster<T> {
    fn clone(&self) -> Self {
        Cluster {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Transport> fmt::Debug for Cluster<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members = self
            .inner
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Server URLs may carry credentials: redacted, as everywhere in Debug output.
        let servers: Vec<String> = members
            .iter()
            .map(|m| crate::redact::redact_url(m.transport.server()).into_owned())
            .collect();
        f.debug_struct("Cluster")
            .field("servers", &servers)
            .finish()
    }
}

/// An [`Error::Ambiguous`] about `op` on `gid`.
fn ambiguous(op: &str, gid: &str, reason: String) -> Error {
    Error::Ambiguous {
        op: op.to_string(),
        gid: gid.to_string(),
        reason,
    }
}

/// A call to one server cut after `limit`: it may have arrived ([`Delivery::Unknown`]).
fn no_answer(limit: Duration) -> Error {
    Error::other(format!("no answer within {limit:?}"))
}

/// Whether a failed request can have reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// It was never sent: any server may take it.
    NotSent,
    /// It may have arrived and taken effect.
    Unknown,
    /// The server answered: the error is the outcome.
    Answered,
}

fn delivery(e: &Error) -> Delivery {
    match e {
        Error::Transport { source, .. } if source.is_connect() => Delivery::NotSent,
        Error::Transport { .. } => Delivery::Unknown,
        Error::Status { status, .. } if *status >= 500 => Delivery::Unknown,
        // No gRPC answer came (a timeout, a reset, a refused connection), or a proxy's.
        Error::Grpc {
            answered: false, ..
        }
        | Error::Grpc { code: 4 | 14, .. } => Delivery::Unknown,
        Error::TooLarge { .. } | Error::Other(_) => Delivery::Unknown,
        _ => Delivery::Answered,
    }
}

impl<T: Query> Cluster<T> {
    /// A cluster of these servers' transports (at least one), in the order they are
    /// preferred at first.
    pub fn new(members: impl IntoIterator<Item = T>) -> Result<Self> {
        Self::with_cooldown(members, DEFAULT_COOLDOWN)
    }

    /// [`Cluster::new`], with the time a server that failed is tried only after the
    /// others (default [`DEFAULT_COOLDOWN`]).
    pub fn with_cooldown(members: impl IntoIterator<Item = T>, cooldown: Duration) -> Result<Self> {
        Self::build(
            members.into_iter().map(Member::new).collect(),
            None,
            cooldown,
        )
    }

    /// A cluster whose servers come from `servers` and change when it does (a hook for
    /// DNS, Consul or Kubernetes endpoints: whatever watches them sends the new list).
    /// `make` builds a member's transport from an address. Calls in flight finish on the
    /// list they started with; a new list that is empty or whose members cannot all be
    /// built is ignored (with a warning), and servers that stay keep their health.
    pub fn discovered(
        servers: watch::Receiver<Vec<String>>,
        make: impl Fn(&str) -> Result<T> + Send + Sync + 'static,
        cooldown: Duration,
    ) -> Result<Self> {
        let initial = servers.borrow().clone();
        let members = initial
            .iter()
            .map(|s| make(s).map(Member::new))
            .collect::<Result<Vec<_>>>()?;
        let discovery = Discovery {
            servers,
            make: Box::new(make),
        };
        Self::build(members, Some(discovery), cooldown)
    }

    fn build(
        members: Vec<Arc<Member<T>>>,
        discovery: Option<Discovery<T>>,
        cooldown: Duration,
    ) -> Result<Self> {
        let Some(first) = members.first().map(|m| m.transport.clone()) else {
            return Err(Error::invalid("a DTM cluster needs at least one server"));
        };
        Ok(Cluster {
            inner: Arc::new(Inner {
                first,
                members: RwLock::new(Arc::new(members)),
                discovery: discovery.map(Mutex::new),
                next: AtomicUsize::new(0),
                cooldown,
            }),
        })
    }

    /// The current members, after taking a new list from discovery if one came.
    fn snapshot(&self) -> Arc<Vec<Arc<Member<T>>>> {
        if let Some(d) = &self.inner.discovery {
            self.refresh(&mut d.lock().unwrap_or_else(|p| p.into_inner()));
        }
        self.inner
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refresh(&self, d: &mut Discovery<T>) {
        if !d.servers.has_changed().unwrap_or(false) {
            return;
        }
        let list = d.servers.borrow_and_update().clone();
        let old = self
            .inner
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut members = Vec::with_capacity(list.len());
        for s in &list {
            let member = match (d.make)(s) {
                Ok(t) => old
                    .iter()
                    .find(|m| m.transport.server() == t.server())
                    .cloned()
                    .unwrap_or_else(|| Member::new(t)),
                Err(e) => {
                    tracing::warn!(server = %crate::redact::redact_url(s), error = %e, "discovered DTM server refused: keeping the previous list");
                    return;
                }
            };
            members.push(member);
        }
        if members.is_empty() {
            tracing::warn!("discovery gave no DTM server: keeping the previous list");
            return;
        }
        *self
            .inner
            .members
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(members);
    }

    /// The current servers' addresses.
    pub fn servers(&self) -> Vec<String> {
        self.snapshot()
            .iter()
            .map(|m| m.transport.server().to_string())
            .collect()
    }

    /// A new global id, from the first server that answers.
    pub async fn new_gid(&self) -> Result<String> {
        let mut last = None;
        for m in self.plan() {
            match self.read(&m, m.transport.new_gid()).await {
                Ok(g) => return Ok(g),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::invalid("no DTM server")))
    }

    /// DTM's stored state of `gid`, from the first server that answers.
    pub async fn query(&self, gid: &str) -> Result<QueryResult> {
        self.query_any(gid, None).await
    }

    /// Waits until the cluster's store holds transaction `gid` final, at most `timeout`
    /// (see [`crate::outcome::wait_final`]).
    pub async fn wait_final(&self, gid: &str, timeout: Duration) -> Result<()> {
        crate::outcome::wait_final(self, gid, timeout).await
    }

    /// A saga on this cluster.
    pub fn saga(&self, gid: impl Into<String>) -> crate::Saga<Self> {
        crate::Saga::new(self.clone(), gid)
    }

    /// A 2-phase message on this cluster.
    pub fn msg(&self, gid: impl Into<String>) -> crate::Msg<Self> {
        crate::Msg::new(self.clone(), gid)
    }

    fn first(&self) -> &T {
        &self.inner.first
    }

    /// The members in the order to try them for one call: the healthy ones round robin,
    /// then the ones marked down (soonest back first).
    fn plan(&self) -> Vec<Arc<Member<T>>> {
        let members = self.snapshot();
        let n = members.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let now = Instant::now();
        let mut up = Vec::with_capacity(n);
        let mut down = Vec::new();
        for m in members.iter().cycle().skip(start).take(n) {
            match m.down_until() {
                Some(t) if t > now => down.push((t, m.clone())),
                _ => up.push(m.clone()),
            }
        }
        down.sort_by_key(|(t, _)| *t);
        up.extend(down.into_iter().map(|(_, m)| m));
        up
    }

    /// DTM's stored state of `gid`, from the first server that answers (`last_resort`, the
    /// server that just failed, is asked last).
    async fn query_any(
        &self,
        gid: &str,
        last_resort: Option<&Arc<Member<T>>>,
    ) -> Result<QueryResult> {
        let mut order = self.plan();
        if let Some(skip) = last_resort {
            if let Some(at) = order.iter().position(|m| Arc::ptr_eq(m, skip)) {
                let m = order.remove(at);
                order.push(m);
            }
        }
        let mut last = None;
        for m in order {
            match self.read(&m, m.transport.query(gid)).await {
                Ok(q) => return Ok(q),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::invalid("no DTM server")))
    }

    /// One read from member `m`, bounded by its client's timeout (also when its transport
    /// does not bound its own calls). A server that did not answer is marked down, so the
    /// next reads and calls try the others first.
    async fn read<V>(&self, m: &Member<T>, read: impl Future<Output = Result<V>>) -> Result<V> {
        let limit = m.transport.limits().timeout();
        let res = match tokio::time::timeout(limit, read).await {
            Ok(res) => res,
            Err(_) => Err(no_answer(limit)),
        };
        // Only marked down: an answered read does not undo a lost answer's verdict.
        if res
            .as_ref()
            .is_err_and(|e| delivery(e) != Delivery::Answered)
        {
            m.mark(true, self.inner.cooldown);
        }
        res
    }

    /// Whether DTM holds the state call `what` about `gid`, as one query window (the
    /// client's timeout, over every server, `m` last) tells; `false` when it cannot tell.
    async fn held(&self, what: StateCall<'_>, gid: &str, m: &Arc<Member<T>>) -> bool {
        let window = self.first().limits().timeout();
        match tokio::time::timeout(window, self.query_any(gid, Some(m))).await {
            Ok(Ok(q)) => {
                let held = matches!(resolve(what, &q), Resolution::Done);
                if held {
                    tracing::info!(
                        gid,
                        "a call sent again was refused, but DTM holds the first: done"
                    );
                }
                held
            }
            _ => false,
        }
    }

    /// Runs a state-changing `call` about `gid` on the servers in turn until one answers,
    /// resolving a lost answer from DTM's stored state. `done` is the value of a call found
    /// done (`None`: such a call is sent again instead).
    async fn run<V, F, Fut>(
        &self,
        what: StateCall<'_>,
        op: &str,
        gid: &str,
        timeout: Duration,
        done: impl Fn() -> Option<V>,
        call: F,
    ) -> Result<V>
    where
        F: Fn(T) -> Fut,
        Fut: Future<Output = Result<V>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last: Option<Error> = None;
        // A call that may have arrived although DTM did not hold it when asked: it may
        // still arrive, so running out of servers or time is ambiguous, not a failure.
        let mut in_flight: Option<Error> = None;
        // Each server at most twice: once in turn, once more after a resolution said so.
        let plan = self.plan();
        let cooldown = self.inner.cooldown;
        for m in plan.iter().cycle().take(2 * plan.len()) {
            if Instant::now() >= deadline {
                break;
            }
            // Every attempt ends by the call's deadline, not by its own timeout from now.
            let e = match tokio::time::timeout_at(deadline, call(m.transport.clone())).await {
                Ok(Ok(v)) => {
                    m.mark(false, cooldown);
                    return Ok(v);
                }
                Ok(Err(e)) => e,
                Err(_) => no_answer(timeout),
            };
            match delivery(&e) {
                // A call sent again after a lost answer may be refused because the first
                // one arrived after all (a SQL store's duplicate key for a second
                // registerBranch): what DTM holds decides, not the refusal.
                Delivery::Answered if in_flight.is_some() => {
                    return match self.held(what, gid, m).await {
                        true => done().ok_or(e),
                        false => Err(e),
                    };
                }
                Delivery::Answered => return Err(e),
                Delivery::NotSent => {
                    m.mark(true, cooldown);
                    crate::metrics::cluster_failover(op);
                    last = Some(e);
                    continue;
                }
                Delivery::Unknown => m.mark(true, cooldown),
            }
            // One query window (the client's timeout) to learn what DTM holds, over every
            // server: the only time a call may spend beyond its deadline.
            let window = self.first().limits().timeout();
            let q = match tokio::time::timeout(window, self.query_any(gid, Some(m))).await {
                Ok(Ok(q)) => q,
                Ok(Err(qe)) => {
                    return Err(ambiguous(
                        op,
                        gid,
                        format!("{e}; and no server answered a query of the gid: {qe}"),
                    ))
                }
                Err(_) => {
                    return Err(ambiguous(
                        op,
                        gid,
                        format!("{e}; and no server answered a query of the gid within {window:?}"),
                    ))
                }
            };
            let resolution = resolve(what, &q);
            crate::metrics::cluster_lost_answer(op, resolution.label());
            match resolution {
                Resolution::Done => {
                    if let Some(v) = done() {
                        tracing::info!(op, gid, error = %e, "answer lost, but DTM holds the call: done");
                        return Ok(v);
                    }
                }
                Resolution::Resend => {}
                Resolution::Failed(why) => return Err(Error::Failure(why)),
                Resolution::Unknown(why) => return Err(ambiguous(op, gid, format!("{e}; {why}"))),
            }
            tracing::info!(op, gid, error = %e, "answer lost and DTM does not hold the call: sending it again");
            in_flight = Some(e);
        }
        if let Some(e) = in_flight {
            let tried = last.map(|l| format!("; then {l}")).unwrap_or_default();
            return Err(ambiguous(
                op,
                gid,
                format!(
                    "{e}; DTM did not hold the call when asked, but it may still arrive{tried}"
                ),
            ));
        }
        Err(last.unwrap_or_else(|| {
            ambiguous(op, gid, format!("no server answered within {timeout:?}"))
        }))
    }
}

impl<T: Query> Transport for Cluster<T> {
    type Encoding = T::Encoding;

    fn protocol(&self) -> &'static str {
        self.first().protocol()
    }

    /// The first server: what branches receive as `dtm` (any member serves them).
    fn server(&self) -> &str {
        self.first().server()
    }

    fn limits(&self) -> &Limits {
        self.first().limits()
    }

    /// This cluster when `server` is one of its members; otherwise a one-server cluster of
    /// it, if the first member trusts it.
    fn with_server(&self, server: &str) -> Result<Self> {
        // A member names itself after its own normalisation.
        let member = self.snapshot().iter().any(|m| {
            m.transport
                .with_server(server)
                .is_ok_and(|t| t.server() == m.transport.server())
        });
        if member {
            return Ok(self.clone());
        }
        Cluster::new([self.first().with_server(server)?])
    }

    fn check_request(&self, req: &TransRequest) -> Result<()> {
        self.first().check_request(req)
    }

    fn check_branch_url(&self, url: &str) -> Result<()> {
        self.first().check_branch_url(url)
    }

    fn call_dtm(&self, op: DtmOp, req: TransRequest) -> impl Future<Output = Result<()>> + Send {
        let this = self.clone();
        async move {
            let trans_type: TransType = req.trans_type().parse()?;
            let workflow_status = req.req_extra().get("status").cloned();
            let timeout = this
                .limits()
                .dtm_call_timeout(req.request_timeout, req.wait_result);
            let deadline = Instant::now() + timeout;
            let what = StateCall::Trans {
                op,
                trans_type,
                workflow_status: workflow_status.as_deref(),
            };
            let wait = op == DtmOp::Submit && req.wait_result;
            let gid = req.gid().to_string();
            let res = this
                .run(
                    what,
                    op.as_str(),
                    &gid,
                    timeout,
                    || Some(false),
                    |t: T| {
                        let req = req.clone();
                        async move { t.call_dtm(op, req).await.map(|()| true) }
                    },
                )
                .await?;
            // `false`: found done without an answer; a waiting submit still needs the end,
            // which is what the lost answer would have said.
            if wait && !res {
                let left = deadline.saturating_duration_since(Instant::now());
                return crate::outcome::wait_final_within(&this, &gid, left).await;
            }
            Ok(())
        }
    }

    fn register(&self, reg: &BranchRegistration) -> impl Future<Output = Result<()>> + Send {
        let this = self.clone();
        let reg = reg.clone();
        async move {
            let timeout = this.limits().timeout();
            this.run(
                StateCall::Register(&reg),
                "registerBranch",
                &reg.gid,
                timeout,
                || Some(()),
                |t: T| {
                    let reg = reg.clone();
                    async move { t.register(&reg).await }
                },
            )
            .await
        }
    }

    fn prepare_workflow_progress(
        &self,
        req: &TransRequest,
    ) -> impl Future<Output = Result<WorkflowProgress>> + Send {
        let this = self.clone();
        let req = req.clone();
        async move {
            let timeout = this.limits().dtm_call_timeout(req.request_timeout, false);
            this.run(
                StateCall::PrepareWorkflow,
                "prepareWorkflow",
                req.gid(),
                timeout,
                || None,
                |t: T| {
                    let req = req.clone();
                    async move { t.prepare_workflow_progress(&req).await }
                },
            )
            .await
        }
    }

    fn call_branch_bytes(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &std::collections::BTreeMap<String, String>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> impl Future<Output = Result<BranchResponse>> + Send {
        self.first()
            .call_branch_bytes(url, info, headers, body, timeout)
    }

    /// From the first server that answers.
    fn query(&self, gid: &str) -> impl Future<Output = Result<QueryResult>> + Send {
        self.query_any(gid, None)
    }
}

/// A transport whose own protocol cannot read a transaction's state (gRPC, JSON-RPC), paired
/// with an HTTP client of the same DTM server (its `/api/dtmsvr`), which can: the member
/// type of a gRPC or JSON-RPC cluster.
#[derive(Debug, Clone)]
pub struct WithQuery<T> {
    transport: T,
    http: crate::DtmClient,
}

impl<T: Transport> WithQuery<T> {
    /// `transport`, with `http` (a client of the same server's HTTP API) for queries.
    pub fn new(transport: T, http: crate::DtmClient) -> Self {
        WithQuery { transport, http }
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }
}

impl<T: Transport> Transport for WithQuery<T> {
    type Encoding = T::Encoding;

    fn protocol(&self) -> &'static str {
        self.transport.protocol()
    }

    fn server(&self) -> &str {
        self.transport.server()
    }

    fn limits(&self) -> &Limits {
        self.transport.limits()
    }

    /// The named server over this transport. Its queries still go to this pair's HTTP API,
    /// which is right within one cluster (every server reads the shared store).
    fn with_server(&self, server: &str) -> Result<Self> {
        let transport = self.transport.with_server(server)?;
        Ok(WithQuery {
            transport,
            http: self.http.clone(),
        })
    }

    fn check_request(&self, req: &TransRequest) -> Result<()> {
        self.transport.check_request(req)
    }

    fn check_branch_url(&self, url: &str) -> Result<()> {
        self.transport.check_branch_url(url)
    }

    fn call_dtm(&self, op: DtmOp, req: TransRequest) -> impl Future<Output = Result<()>> + Send {
        self.transport.call_dtm(op, req)
    }

    fn register(&self, reg: &BranchRegistration) -> impl Future<Output = Result<()>> + Send {
        self.transport.register(reg)
    }

    fn prepare_workflow_progress(
        &self,
        req: &TransRequest,
    ) -> impl Future<Output = Result<WorkflowProgress>> + Send {
        self.transport.prepare_workflow_progress(req)
    }

    fn call_branch_bytes(
        &self,
        url: &str,
        info: &TransInfo,
        headers: &std::collections::BTreeMap<String, String>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> impl Future<Output = Result<BranchResponse>> + Send {
        self.transport
            .call_branch_bytes(url, info, headers, body, timeout)
    }

    /// Through the paired HTTP API.
    fn query(&self, gid: &str) -> impl Future<Output = Result<QueryResult>> + Send {
        self.http.query(gid)
    }
}

impl<T: Transport> Query for WithQuery<T> {
    fn new_gid(&self) -> impl Future<Output = Result<String>> + Send {
        self.http.new_gid()
    }
}

impl Query for crate::DtmClient {
    fn new_gid(&self) -> impl Future<Output = Result<String>> + Send {
        crate::DtmClient::new_gid(self)
    }
}

/// The server addresses a cluster constructor was given, owned.
#[cfg(feature = "http")]
fn server_list<I>(servers: I) -> Vec<String>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    servers
        .into_iter()
        .map(|s| s.as_ref().to_string())
        .collect()
}

impl Cluster<crate::DtmClient> {
    /// A cluster of DTM servers reached over HTTP (`http://host:36789/api/dtmsvr` each),
    /// sharing `client`'s settings (timeouts, bounds, HTTP stack); each member trusts the
    /// others, so branches may name any of them as their `dtm`.
    pub fn http<I>(client: &crate::DtmClient, servers: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let servers = server_list(servers);
        let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
        let mut members = Vec::with_capacity(servers.len());
        for s in &servers {
            members.push(client.member(s, &servers)?);
        }
        Cluster::new(members)
    }
}

impl Cluster<WithQuery<crate::JsonRpcClient>> {
    /// A cluster of DTM servers reached over JSON-RPC (`http://host:36789/api/json-rpc`
    /// each), each queried through its HTTP API at the same address (`/api/dtmsvr`). Each
    /// member trusts the others.
    pub fn json_rpc<I>(servers: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let servers = server_list(servers);
        let mut members = Vec::with_capacity(servers.len());
        for s in &servers {
            let base = s.trim_end_matches('/');
            let Some(host) = base.strip_suffix("/api/json-rpc") else {
                return Err(Error::invalid(format!(
                    "{:?} does not end in /api/json-rpc: pair it with its HTTP API yourself (WithQuery::new)",
                    crate::redact::redact_url(s)
                )));
            };
            let trusted = crate::TrustedServers::list(servers.iter().map(String::as_str));
            let rpc = crate::DtmClient::builder(base)
                .trusted_servers(trusted)
                .build()?;
            let http = crate::DtmClient::new(format!("{host}/api/dtmsvr"))?;
            members.push(WithQuery::new(crate::JsonRpcClient::from_client(rpc), http));
        }
        Cluster::new(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{unused, FakeDtm};
    use crate::TransGlobal;
    use std::sync::atomic::AtomicBool;

    /// What a fake server does with a `submit`.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Act {
        /// Stores it and answers.
        Answer,
        /// Stores it; the answer is lost (a 502 from a proxy).
        StoreAndLose,
        /// Loses the request (a 502 from a proxy).
        Lose,
        /// Never answers.
        Hang,
        /// Loses the request, which arrives after all just after the next query is
        /// answered (DTM did not hold it when asked).
        LoseThenArrive,
        /// Refuses it with a gRPC error (as a SQL store refuses a second registration of
        /// one branch: a duplicate key), storing nothing.
        RefuseAsDuplicate,
    }

    /// DTM's store as the fake servers share it: one saga's status, and the submits sent.
    #[derive(Debug, Default)]
    struct Store {
        status: Mutex<Option<&'static str>>,
        submits: AtomicUsize,
        /// A lost submit arrives once the next query has been answered.
        arriving: AtomicBool,
    }

    /// A DTM server that does `act` with each submit; `queries` says whether it answers
    /// queries (a hanging server does not).
    #[derive(Debug, Clone)]
    struct Fake {
        name: &'static str,
        act: Act,
        queries: bool,
        store: Arc<Store>,
        limits: Limits,
    }

    fn lost(url: &str) -> Error {
        Error::Status {
            url: url.into(),
            status: 502,
            body: "bad gateway".into(),
        }
    }

    impl FakeDtm for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn limits(&self) -> &Limits {
            &self.limits
        }
        fn call_dtm(&self) -> impl Future<Output = Result<()>> + Send {
            let this = self.clone();
            async move {
                this.store.submits.fetch_add(1, Ordering::SeqCst);
                let store = || store_submitted(&this.store);
                match this.act {
                    Act::Answer => {
                        store();
                        Ok(())
                    }
                    Act::StoreAndLose => {
                        store();
                        Err(lost(this.name))
                    }
                    Act::Lose => Err(lost(this.name)),
                    Act::Hang => std::future::pending().await,
                    Act::LoseThenArrive => {
                        this.store.arriving.store(true, Ordering::SeqCst);
                        Err(lost(this.name))
                    }
                    Act::RefuseAsDuplicate => Err(Error::Grpc {
                        url: this.name.into(),
                        code: 2,
                        message: "duplicate key value violates unique constraint".into(),
                        answered: true,
                    }),
                }
            }
        }
        fn query(&self, gid: &str) -> impl Future<Output = Result<QueryResult>> + Send {
            self.stored(gid)
        }
    }

    impl Query for Fake {
        async fn new_gid(&self) -> Result<String> {
            Err(unused())
        }
    }

    impl Fake {
        fn stored(&self, gid: &str) -> impl Future<Output = Result<QueryResult>> + Send {
            let this = self.clone();
            let gid = gid.to_string();
            async move {
                if !this.queries {
                    return std::future::pending().await;
                }
                let status = *this.store.status.lock().unwrap();
                if this.store.arriving.swap(false, Ordering::SeqCst) {
                    store_submitted(&this.store);
                }
                Ok(QueryResult {
                    transaction: status.map(|s| TransGlobal {
                        gid,
                        trans_type: "saga".into(),
                        status: s.into(),
                        ..Default::default()
                    }),
                    branches: Vec::new(),
                })
            }
        }
    }

    fn store_submitted(store: &Store) {
        *store.status.lock().unwrap() = Some("submitted");
    }

    /// A cluster of fake servers doing `acts` in turn, on one store, with a 10 s timeout.
    fn fakes(acts: &[(Act, bool)]) -> (Cluster<Fake>, Arc<Store>) {
        let store = Arc::new(Store::default());
        let mut limits = Limits::default();
        limits.set_timeout(Duration::from_secs(10));
        let names = ["a", "b", "c"];
        let members = acts.iter().zip(names).map(|(&(act, queries), name)| Fake {
            name,
            act,
            queries,
            store: store.clone(),
            limits,
        });
        (Cluster::new(members).unwrap(), store)
    }

    async fn submit(c: &Cluster<Fake>) -> Result<()> {
        c.saga("cluster-unit")
            .add("http://busi/a", "http://busi/b", &serde_json::json!({}))
            .submit()
            .await
    }

    /// A saga's submit as the cluster sends it, with no outcome check above it.
    async fn submit_raw(c: &Cluster<Fake>) -> Result<()> {
        let req = crate::TransRequest::new("cluster-unit", TransType::Saga, &Default::default());
        Transport::call_dtm(c, DtmOp::Submit, req).await
    }

    #[tokio::test]
    async fn a_lost_answer_to_a_call_dtm_holds_is_done_without_a_second_send() {
        let (c, store) = fakes(&[(Act::StoreAndLose, true), (Act::Answer, true)]);
        submit(&c).await.unwrap();
        assert_eq!(store.submits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_lost_request_is_sent_to_the_next_server() {
        let (c, store) = fakes(&[(Act::Lose, true), (Act::Answer, true)]);
        submit(&c).await.unwrap();
        assert_eq!(store.submits.load(Ordering::SeqCst), 2);
        assert_eq!(*store.status.lock().unwrap(), Some("submitted"));
    }

    #[tokio::test]
    async fn a_resent_call_refused_because_the_first_arrived_late_is_done() {
        // a's request is lost and arrives only after the query found nothing; b refuses
        // the second send (a duplicate): DTM holds the call, so it is done.
        // The cluster itself decides (a saga's submit would settle the refusal later anyway:
        // a registerBranch is not).
        let (c, store) = fakes(&[(Act::LoseThenArrive, true), (Act::RefuseAsDuplicate, true)]);
        submit_raw(&c).await.unwrap();
        assert_eq!(store.submits.load(Ordering::SeqCst), 2);
        assert_eq!(*store.status.lock().unwrap(), Some("submitted"));
    }

    #[tokio::test]
    async fn a_resent_call_refused_while_dtm_holds_nothing_is_the_refusal() {
        let (c, store) = fakes(&[(Act::Lose, true), (Act::RefuseAsDuplicate, true)]);
        let e = submit_raw(&c).await.unwrap_err();
        assert!(matches!(e, Error::Grpc { code: 2, .. }), "{e}");
        assert_eq!(store.submits.load(Ordering::SeqCst), 2);
        assert_eq!(*store.status.lock().unwrap(), None);
    }

    #[tokio::test]
    async fn a_lost_request_that_no_server_takes_is_ambiguous() {
        // Each server tried twice; DTM never holds the call, which may still arrive.
        let (c, store) = fakes(&[(Act::Lose, true), (Act::Lose, true)]);
        let e = submit(&c).await.unwrap_err();
        assert!(matches!(e, Error::Ambiguous { .. }), "{e}");
        assert_eq!(store.submits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_cluster_is_ambiguous_within_the_timeout_and_one_query_window() {
        let (c, store) = fakes(&[(Act::Hang, false), (Act::Hang, false)]);
        let start = Instant::now();
        let e = submit(&c).await.unwrap_err();
        assert!(matches!(e, Error::Ambiguous { .. }), "{e}");
        // 10 s for the call (one attempt, cut at the deadline), 10 s to query.
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert_eq!(store.submits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_does_not_answer_reads_is_asked_last_afterwards() {
        let (c, _) = fakes(&[(Act::Answer, false), (Act::Answer, true)]);
        let start = Instant::now();
        // Round robin starts at a, which hangs until its 10 s timeout; b answers.
        c.query("cluster-unit").await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // a is marked down: the next reads go to b first, whatever the rotation.
        for _ in 0..2 {
            let start = Instant::now();
            c.query("cluster-unit").await.unwrap();
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_server_does_not_stretch_the_call_past_its_deadline() {
        // a loses the request after 0 s, b hangs: b's attempt is cut at the deadline, and
        // the query (answered at once) finds nothing: ambiguous at 10 s, not 20 s.
        let (c, _) = fakes(&[(Act::Lose, true), (Act::Hang, true)]);
        let start = Instant::now();
        let e = submit(&c).await.unwrap_err();
        assert!(matches!(e, Error::Ambiguous { .. }), "{e}");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[test]
    fn debug_output_redacts_credentials_in_server_urls() {
        let client = crate::DtmClient::new("http://u:secret@127.0.0.1:1/api/dtmsvr").unwrap();
        let c = Cluster::http(&client, &["http://u:secret@127.0.0.1:1/api/dtmsvr"]).unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("127.0.0.1:1"), "{text}");
    }

    #[test]
    fn an_empty_cluster_is_refused() {
        let none: Vec<crate::DtmClient> = Vec::new();
        assert!(matches!(Cluster::new(none), Err(Error::InvalidInput(_))));
        let client = crate::DtmClient::new("http://127.0.0.1:1/api/dtmsvr").unwrap();
        let no_servers: [&str; 0] = [];
        assert!(Cluster::http(&client, no_servers).is_err());
    }

    #[test]
    fn servers_come_as_any_list_of_strings() {
        let client = crate::DtmClient::new("http://127.0.0.1:1/api/dtmsvr").unwrap();
        // From configuration: owned strings, as a Vec or any iterator.
        let from_config = vec![
            "http://127.0.0.1:1/api/dtmsvr".to_string(),
            "http://127.0.0.1:2/api/dtmsvr".to_string(),
        ];
        assert!(Cluster::http(&client, &from_config).is_ok());
        assert!(Cluster::http(&client, from_config.iter().map(String::as_str)).is_ok());
        assert!(Cluster::json_rpc(["http://127.0.0.1:1/api/json-rpc"]).is_ok());
    }
}
