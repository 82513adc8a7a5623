//! Versioning in flight: [`Wf::patched`] lets new code take a new path while the workflows
//! that old code started replay the old one.
//!
//! Which path an instance takes is decided once, by its first run, and recorded: the first
//! run of an instance (the run whose `prepareWorkflow` created the transaction, told by the
//! run id it stored in `custom_data`) takes the new path and records a marker (branch `00`,
//! op `patch-<change id>`) before anything after it runs; every later run takes the new
//! path exactly when that marker exists. An instance that old code started never has the
//! marker, so new code resuming it replays the old path, wherever the change lies and
//! whatever the old code left in doubt.

use dtmcli::{Error, Result};

use crate::budget;
use crate::resume::Stored;
use crate::wf::Wf;

const OP_PREFIX: &str = "patch-";
/// DTM stores an op in 45 characters: the prefix leaves this many to the change id.
const MAX_ID: usize = 32;

impl Wf {
    /// True when this instance takes the new path of the change `change_id`: new code
    /// guards a change with it (`if wf.patched("fraud-check").await? { new } else { old }`).
    ///
    /// - An instance started by this code (its first run reaches the call) takes the new
    ///   path; the decision is recorded on the DTM server (one `registerBranch`) before the
    ///   call returns, and every later run of the instance reads it back.
    /// - An instance started by code without the call (in flight when the new code was
    ///   deployed) takes the old path, wherever the change lies: before or after its
    ///   recorded steps, or where its old run crashed.
    /// - An instance started by this code whose first run stopped before reaching the call
    ///   (a crash, a retryable error) takes the old path too, and consistently: the old
    ///   path must stay in the code until no instance can take it (no unfinished instance
    ///   older than the deployment that added the call).
    ///
    /// A change made without `patched` is still caught by the replay check
    /// ([`Error::NonDeterministic`]). Over gRPC, the first call of a run reads the
    /// transaction through the server's HTTP API (`dtmgrpc::DtmGrpcClientBuilder::http_api`).
    /// `change_id`: 1 to 32 of `A-Z a-z 0-9 . _ -`, else [`Error::InvalidInput`]; not
    /// allowed in commit or rollback callbacks.
    pub async fn patched(&self, change_id: &str) -> Result<bool> {
        check_id(change_id)?;
        if self.in_phase2() {
            return Err(Error::invalid(
                "patched is not allowed in a commit/rollback callback",
            ));
        }
        if let Some(taken) = self.patch_decision(change_id) {
            return Ok(taken);
        }
        let op = format!("{OP_PREFIX}{change_id}");
        let taken = if self.has_step(budget::BRANCH, &op) {
            true
        } else if self.is_first_run().await? {
            let marker = self.format().encode("patch", "", b"");
            let (transport, gid) = (self.transport(), self.gid());
            transport
                .record(gid, budget::BRANCH, &op, "succeed", marker)
                .await?;
            true
        } else {
            false
        };
        tracing::debug!(gid = self.gid(), change_id, taken, "patch decided");
        self.set_patch_decision(change_id, taken);
        Ok(taken)
    }

    /// True when this run created the transaction. Over HTTP `prepareWorkflow`'s answer
    /// said; over gRPC it is read from DTM once per run.
    async fn is_first_run(&self) -> Result<bool> {
        if let Some(first) = self.first_run() {
            return Ok(first);
        }
        let q = self.transport().query(self.gid()).await?;
        let custom = q.transaction.map(|t| t.custom_data).unwrap_or_default();
        let first = Stored::parse(self.gid(), &custom)?.run == self.run_id();
        self.set_first_run(first);
        Ok(first)
    }
}

/// A change id DTM can store in an op and a log line can show as it is.
fn check_id(id: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > MAX_ID || !id.chars().all(ok_char) {
        return Err(Error::invalid(format!(
            "a change id is 1 to {MAX_ID} of A-Z a-z 0-9 . _ - (got {} bytes)",
            id.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_ids_fit_an_op() {
        for ok in ["a", "fraud-check", "v2.1_rate", &"x".repeat(MAX_ID)] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "new\nline", "é", &"x".repeat(MAX_ID + 1)] {
            assert!(
                matches!(check_id(bad), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
        assert!(OP_PREFIX.len() + MAX_ID <= 45);
    }
}
