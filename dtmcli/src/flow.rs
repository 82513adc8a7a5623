//! The decision logic of the SDK's multi-call helpers, independent of the protocol, so that
//! the HTTP client here and the gRPC client of `dtmgrpc` behave the same.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use crate::error::Result;

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// A TCC / XA global transaction: `prepare`, then `body`, then `submit` if it succeeded; if
/// it returned an error or panicked, `abort(reason)` with the error (or panic) text, and the
/// error is returned or the panic resumed. An abort that fails is logged: DTM times the
/// transaction out and rolls it back anyway.
pub async fn global_transaction<T, B, P, PF, S, SF, A, AF>(
    gid: &str,
    prepare: P,
    body: B,
    submit: S,
    abort: A,
) -> Result<T>
where
    P: FnOnce() -> PF,
    PF: Future<Output = Result<()>>,
    B: Future<Output = Result<T>>,
    S: FnOnce() -> SF,
    SF: Future<Output = Result<()>>,
    A: FnOnce(String) -> AF,
    AF: Future<Output = Result<()>>,
{
    prepare().await?;
    let (reason, result) = match AssertUnwindSafe(body).catch_unwind().await {
        Ok(Ok(v)) => {
            submit().await?;
            return Ok(v);
        }
        Ok(Err(e)) => (e.to_string(), Ok(Err(e))),
        Err(panic) => (panic_text(&*panic), Err(panic)),
    };
    if let Err(e) = abort(reason).await {
        tracing::warn!(gid, error = %e, "abort failed; DTM will time the transaction out");
    }
    match result {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The end of a msg `do_and_submit`, once the local business returned `business`:
/// when its outcome is unknown (an error other than failure) ask `back_check`, as DTM would;
/// on a failure from either, `abort` (its error only logged); on success, `submit`;
/// otherwise leave the message prepared for DTM's back-check. Returns the business error if
/// there was one, else the back-check or submit error.
pub async fn after_local_business<C, CF, A, AF, S, SF>(
    gid: &str,
    business: Result<()>,
    back_check: C,
    abort: A,
    submit: S,
) -> Result<()>
where
    C: FnOnce() -> CF,
    CF: Future<Output = Result<()>>,
    A: FnOnce() -> AF,
    AF: Future<Output = Result<()>>,
    S: FnOnce() -> SF,
    SF: Future<Output = Result<()>>,
{
    let mut err = match &business {
        Err(e) if !e.is_failure() => {
            tracing::debug!(gid, error = %e, "local business failed; back-checking");
            back_check().await
        }
        _ => Ok(()),
    };
    let failed =
        matches!(&business, Err(e) if e.is_failure()) || matches!(&err, Err(e) if e.is_failure());
    if failed {
        if let Err(e) = abort().await {
            tracing::warn!(gid, error = %e, "abort of msg failed; DTM's back-check will decide");
        }
    } else if err.is_ok() {
        err = submit().await;
    }
    business?;
    err
}

/// The `custom_data` of a concurrent saga (`{"concurrent":true,"orders":{..}}`), after
/// checking that every order names an existing step and only earlier prerequisites.
pub fn saga_concurrent_custom_data(
    steps: usize,
    orders: &std::collections::BTreeMap<usize, Vec<usize>>,
) -> Result<String> {
    for (branch, pre) in orders {
        if *branch >= steps {
            return Err(crate::Error::invalid(format!(
                "branch order names step {branch}, the saga has {steps} steps"
            )));
        }
        if let Some(p) = pre.iter().find(|p| **p >= *branch) {
            return Err(crate::Error::invalid(format!(
                "branch order: step {branch} cannot wait for step {p}, which is not before it"
            )));
        }
    }
    Ok(serde_json::json!({"concurrent": true, "orders": orders}).to_string())
}

/// The `custom_data` of a msg delivered no earlier than `delay` after its creation
/// (`{"delay":<whole seconds, rounded up>}`); empty without a delay.
pub fn msg_delay_custom_data(delay: Option<std::time::Duration>) -> String {
    match crate::options::secs(delay) {
        0 => String::new(),
        secs => serde_json::json!({ "delay": secs }).to_string(),
    }
}

/// What a TCC or XA global transaction keeps on the client side, whatever the protocol:
/// its id, mode and options, and the generator of its branch ids.
#[derive(Debug)]
pub struct GlobalCore {
    /// The global id.
    pub gid: String,
    /// `tcc` or `xa`.
    pub trans_type: crate::types::TransType,
    /// The transaction options (branch headers go on every branch call).
    pub options: crate::options::TransOptions,
    ids: std::sync::Mutex<crate::branch_id::BranchIdGen>,
}

impl GlobalCore {
    /// A transaction whose branch ids are sub-branches of `parent` (`""` at the top level,
    /// the try's branch id for a nested TCC).
    pub fn new(
        gid: &str,
        trans_type: crate::types::TransType,
        options: crate::options::TransOptions,
        parent: &str,
    ) -> Self {
        GlobalCore {
            gid: gid.to_string(),
            trans_type,
            options,
            ids: std::sync::Mutex::new(crate::branch_id::BranchIdGen::new(parent)),
        }
    }

    /// The next branch id (`01`, `02`..., or `0201`... when nested).
    pub fn next_branch_id(&self) -> Result<String> {
        self.ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .new_sub_branch_id()
    }

    /// The transaction info a branch call carries, naming the DTM server `dtm` so that the
    /// branch can register itself or nest.
    pub fn branch_info(
        &self,
        branch_id: String,
        op: crate::types::Op,
        dtm: &str,
    ) -> crate::types::TransInfo {
        let mut info =
            crate::types::TransInfo::new(self.gid.clone(), self.trans_type, branch_id, op);
        info.dtm = Some(dtm.to_string());
        info
    }
}
