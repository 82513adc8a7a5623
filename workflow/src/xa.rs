//! `Wf::do_xa`: an XA local transaction as a workflow branch.

use dtm_barrier::xa::{XaDatabase, XaLocal};
use dtmcli::{Error, Op, Result};
use futures_util::future::BoxFuture;

use crate::wf::{StepOutcome, Wf};

impl Wf {
    /// Runs `busi` as the current branch's recorded action inside an XA local transaction
    /// on `xa`'s database (xid `<gid>-<branch_id>`, barrier trans_type `workflow`), prepared
    /// but not committed; the branch then commits it when the workflow succeeds and rolls it
    /// back when it fails.
    ///
    /// Inside the XA transaction, before prepare, a marker record (op `business`) is written
    /// to DTM. On a resumed run, a marker without a recorded action means the process died
    /// between prepare and recording: the step fails (FAILURE) and the workflow rolls back,
    /// as in the Go SDK.
    pub async fn do_xa<DB, T, F>(&self, xa: &XaLocal<DB, T>, busi: F) -> Result<Vec<u8>>
    where
        DB: XaDatabase,
        T: dtmcli::Transport,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, dtm_barrier::Result<Vec<u8>>>
            + Send,
    {
        let branch = self.branch_id();
        // The step below runs only when the action has no record, so a marker now means the
        // process died between prepare and recording the action.
        let interrupted = self.has_record(&Op::Business);
        let info = self.trans_info();
        let wf = self.clone();
        let res = self
            .recorded("xa", "", async move {
                if interrupted {
                    return StepOutcome::Failed(
                        "error occur at prepare, not resumable, to rollback".into(),
                    );
                }
                let r = xa
                    .phase1(&info, move |conn| {
                        let business = busi(conn);
                        Box::pin(async move {
                            let v = business.await?;
                            wf.record_marker(&branch, &Op::Business).await?;
                            Ok(v)
                        })
                    })
                    .await;
                StepOutcome::from_result(r.map_err(Error::from))
            })
            .await;
        for commit in [true, false] {
            let xa = xa.clone();
            let f = move |info: dtmcli::TransInfo| async move {
                xa.phase2(&info).await.map_err(Error::from)
            };
            let added = if commit {
                self.on_commit(f)
            } else {
                self.on_rollback(f)
            };
            added?;
        }
        res
    }
}
