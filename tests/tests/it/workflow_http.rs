//! Workflow mode over HTTP against a default-configured DTM v1.19.0 server
//! (`UpdateBranchSync` off: the SDK's `"sync":"1"` keeps the step records).

use crate::support;
use crate::workflow_common;

fn setup() {
    support::configure(Default::default());
}

workflow_tests!(
    saga_success,
    saga_rollback_skips_the_failed_branch,
    tcc_commit,
    tcc_rollback,
    success_with_on_finish,
    resume_after_error,
    resume_after_ongoing,
    resume_during_phase2,
    non_determinism_is_detected,
    finished_workflow_returns_its_result,
    unknown_and_duplicate_names_are_errors,
    callback_during_a_slow_step_does_not_run_it_twice,
);
