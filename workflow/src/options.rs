//! The options of one registered workflow.

use dtmcli::TransOptions;

/// Options of one registered workflow.
#[derive(Debug, Clone, Default)]
pub struct WfOptions {
    /// Transaction options (retry interval of DTM's callbacks, branch headers, ...).
    pub trans: TransOptions,
    /// Also roll back a branch whose own action failed (default: no, as in the Go SDK: the
    /// failed action left nothing to undo).
    pub compensate_error_branch: bool,
}
