//! The workflow scenarios again, on a DTM server started with `UPDATE_BRANCH_SYNC=1`.

use crate::support;
use crate::workflow_common;

fn setup() {
    support::configure(dtm_testkit::DtmServerConfig::default().with_env("UPDATE_BRANCH_SYNC", "1"));
}

workflow_tests!(
    saga_success,
    saga_rollback_skips_the_failed_branch,
    tcc_commit,
    resume_after_error,
    resume_during_phase2,
    finished_workflow_returns_its_result,
);
