//! The options of one registered workflow.

use std::time::Duration;

use dtmcli::TransOptions;

/// Options of one registered workflow.
///
/// DTM v1.19.0 calls an unfinished workflow back forever: it never times one out. The
/// `deadline` and the `resume_limit` are kept by this SDK, from what DTM stores (see
/// [`WfOptions::deadline`]); once either is spent the workflow stops retrying and rolls
/// back: its rollback callbacks run and DTM's final status is `failed`, with the reason as
/// its `rollback_reason`.
#[derive(Debug, Clone, Default)]
pub struct WfOptions {
    /// Transaction options (retry interval of DTM's callbacks, branch headers, ...).
    pub trans: TransOptions,
    /// Also roll back a branch whose own action failed (default: no, as in the Go SDK: the
    /// failed action left nothing to undo).
    pub compensate_error_branch: bool,
    /// Roll the workflow back once this long has passed since DTM created the transaction
    /// (its stored `create_time`, compared with this host's clock; default: no deadline).
    ///
    /// Checked before each action starts and when a run ends unfinished: after the deadline
    /// an action that has no record does not run, it fails with the reason, and the run
    /// rolls back, whatever the workflow function returns; an unfinished run (a step
    /// answered ONGOING or a retryable error) rolls back instead of waiting for DTM's next
    /// call. A step already running when the deadline passes finishes within its own
    /// timeout. Recorded actions still replay, and a workflow whose actions all finished
    /// before the deadline still commits (its commit callbacks are never cut short).
    ///
    /// The branch whose action was refused, or had answered a retryable error, is rolled
    /// back too (its action may have applied before the error): guard its rollback with a
    /// barrier, which makes it a null compensation when the action never ran.
    ///
    /// `Duration::ZERO`: no action without a record ever runs; a new workflow rolls back at
    /// once (nothing to undo) and DTM holds it `failed`. `Duration::MAX` (or any deadline
    /// past the year 9999): never, and DTM is not asked for the creation time. Over gRPC the
    /// creation time is read through the server's HTTP API
    /// (`dtmgrpc::DtmGrpcClientBuilder::http_api`, one `query` per run): without it a run
    /// with a finite deadline ends unfinished with that error.
    pub deadline: Option<Duration>,
    /// Roll the workflow back instead of letting DTM resume it more than this many times
    /// (default: no limit). Each run that ends unfinished records that it did (branch `00`,
    /// op `unfinished-<n>`, its error as data: one more call to DTM, only on such runs);
    /// the run that ends unfinished with the limit spent records the reason it gave up
    /// (op `unfinished-<limit + 1>`) and rolls back, and every later run (a rollback that
    /// was interrupted) rolls back with the same reason.
    ///
    /// `Some(0)`: the first run that ends unfinished rolls back; DTM never resumes the
    /// workflow's actions. Runs that end unfinished because the code no longer matches the
    /// records ([`dtmcli::Error::NonDeterministic`], [`dtmcli::Error::RecordType`]) are not
    /// counted, under either option: they wait for the right code, not for time.
    pub resume_limit: Option<u32>,
}
