//! What a state-changing call did when its answer never came: the decision made from DTM's
//! stored state (`query`) after a call may have reached a server and then failed (a timeout,
//! a reset connection, a proxy's 502/503/504, a server killed between storing the request
//! and answering).
//!
//! Sending such a call again is not safe by itself: DTM answers a `submit` of a saga that
//! already finished with `current status 'succeed', cannot sumbmit` (a FAILURE), and a
//! `registerBranch` that is already stored with a duplicate-key error. So the client first
//! asks what DTM holds, and [`resolve`] turns the answer into one of four [`Resolution`]s.
//!
//! The decision table is documented with the cluster, which uses it ([`crate::cluster`]).
//!
//! A status this SDK does not know is always [`Resolution::Unknown`]: the caller gets a
//! typed ambiguous error rather than a guess.

use crate::transport::{BranchRegistration, DtmOp, RegistrationKind};
use crate::{QueryResult, TransStatus, TransType};

/// A call to DTM that changes state, as [`resolve`] judges it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum StateCall<'a> {
    /// `prepare`, `submit` or `abort` of a transaction of mode `trans_type`; for a workflow's
    /// `submit`, `workflow_status` is the final status it asks for (`succeed` / `failed`).
    Trans {
        /// The call.
        op: DtmOp,
        /// The transaction's mode.
        trans_type: TransType,
        /// The status a workflow's `submit` asks for.
        workflow_status: Option<&'a str>,
    },
    /// `registerBranch`.
    Register(&'a BranchRegistration),
    /// `prepareWorkflow`.
    PrepareWorkflow,
}

/// What to do about a call whose outcome was unknown, once DTM's state is known.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// DTM holds the call's effect: report success, send nothing.
    Done,
    /// DTM does not hold it and may still accept it: send it again.
    Resend,
    /// DTM holds a state in which the call cannot take effect: its true outcome is this
    /// failure.
    Failed(String),
    /// DTM's state does not tell: the outcome stays ambiguous, for this reason.
    Unknown(String),
}

impl Resolution {
    /// Its name in metrics: `done`, `resend`, `failed`, `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            Resolution::Done => "done",
            Resolution::Resend => "resend",
            Resolution::Failed(_) => "failed",
            Resolution::Unknown(_) => "unknown",
        }
    }
}

/// Decides what happened to `call` from DTM's answer `q` to `query` (the call's gid).
pub fn resolve(call: StateCall<'_>, q: &QueryResult) -> Resolution {
    let status = q.transaction.as_ref().map(|t| t.status());
    match call {
        StateCall::PrepareWorkflow => Resolution::Resend,
        StateCall::Register(reg) => register(reg, q, status),
        StateCall::Trans {
            op,
            trans_type,
            workflow_status,
        } => match (op, status) {
            (_, Some(TransStatus::Other(s))) => unknown_status(&s),
            (DtmOp::Prepare, None) => Resolution::Resend,
            (DtmOp::Prepare, Some(_)) => Resolution::Done,
            (DtmOp::Submit, s) => submit(trans_type, workflow_status, s),
            (DtmOp::Abort, None) => Resolution::Unknown("DTM holds no transaction to abort".into()),
            (DtmOp::Abort, Some(TransStatus::Prepared)) => Resolution::Resend,
            (DtmOp::Abort, Some(TransStatus::Aborting | TransStatus::Failed)) => Resolution::Done,
            (DtmOp::Abort, Some(s)) => Resolution::Failed(format!(
                "the transaction is {}: it commits and cannot be aborted",
                s.as_str()
            )),
        },
    }
}

fn submit(
    trans_type: TransType,
    workflow_status: Option<&str>,
    status: Option<TransStatus>,
) -> Resolution {
    use TransStatus::*;
    match (trans_type, status) {
        (TransType::Saga, None) => Resolution::Resend,
        (TransType::Saga, Some(_)) => Resolution::Done,
        (TransType::Workflow, Some(Prepared)) => Resolution::Resend,
        (TransType::Workflow, Some(s)) if Some(s.as_str()) == workflow_status => Resolution::Done,
        (TransType::Workflow, s) => Resolution::Unknown(format!(
            "the workflow is {}, not {:?} as this submit asked",
            s.as_ref().map_or("unknown to DTM", TransStatus::as_str),
            workflow_status.unwrap_or_default()
        )),
        (_, None | Some(Prepared)) => Resolution::Resend,
        (_, Some(Submitted | Succeed)) => Resolution::Done,
        (TransType::Msg, Some(s)) => Resolution::Failed(format!(
            "the message is {}: DTM's back-check aborted it before this submit",
            s.as_str()
        )),
        (_, Some(s)) => Resolution::Failed(format!(
            "the transaction is {}: it is rolled back, the submit cannot take effect",
            s.as_str()
        )),
    }
}

fn register(reg: &BranchRegistration, q: &QueryResult, status: Option<TransStatus>) -> Resolution {
    // The rows DTM stores for the registration.
    let row_of_it = |op: &str| match &reg.kind {
        RegistrationKind::Tcc { .. } => op == "confirm" || op == "cancel",
        RegistrationKind::Xa { .. } => op == "commit" || op == "rollback",
        RegistrationKind::Workflow { op: wanted, .. } => op == wanted,
    };
    let stored = q
        .branches
        .iter()
        .any(|b| b.branch_id == reg.branch_id && row_of_it(&b.op));
    match status {
        _ if stored => Resolution::Done,
        Some(TransStatus::Other(s)) => unknown_status(&s),
        Some(TransStatus::Prepared) => Resolution::Resend,
        s => Resolution::Failed(format!(
            "branch {} is not stored and the transaction is {}: DTM accepts branches only while it is prepared",
            reg.branch_id,
            s.as_ref().map_or("unknown to DTM", TransStatus::as_str)
        )),
    }
}

fn unknown_status(s: &str) -> Resolution {
    Resolution::Unknown(format!(
        "DTM reports status {:?}, which this SDK does not know",
        s.chars().take(64).collect::<String>()
    ))
}

/// No transaction, then every status DTM stores one in: the columns of the tables the unit
/// tests check calls against (here and in `outcome`).
#[cfg(test)]
pub(crate) const STORED_STATUSES: [Option<&str>; 6] = [
    None,
    Some("prepared"),
    Some("submitted"),
    Some("aborting"),
    Some("succeed"),
    Some("failed"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{TransBranch, TransGlobal};

    fn q(status: Option<&str>, rows: &[(&str, &str)]) -> QueryResult {
        QueryResult {
            transaction: status.map(|s| TransGlobal {
                status: s.into(),
                ..Default::default()
            }),
            branches: rows
                .iter()
                .map(|(b, op)| TransBranch {
                    branch_id: b.to_string(),
                    op: op.to_string(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn trans(op: DtmOp, t: TransType) -> StateCall<'static> {
        StateCall::Trans {
            op,
            trans_type: t,
            workflow_status: None,
        }
    }

    fn table(call: StateCall<'_>) -> Vec<&'static str> {
        STORED_STATUSES
            .iter()
            .map(|s| match resolve(call, &q(*s, &[])) {
                Resolution::Done => "done",
                Resolution::Resend => "resend",
                Resolution::Failed(_) => "failed",
                Resolution::Unknown(_) => "unknown",
            })
            .collect()
    }

    #[test]
    fn trans_calls_follow_the_table() {
        use DtmOp::*;
        use TransType::*;
        // Columns: nothing, prepared, submitted, aborting, succeed, failed.
        let done_once_stored = ["resend", "done", "done", "done", "done", "done"];
        assert_eq!(table(trans(Prepare, Msg)), done_once_stored);
        assert_eq!(table(trans(Prepare, Tcc)), done_once_stored);
        assert_eq!(table(trans(Submit, Saga)), done_once_stored);
        assert_eq!(
            table(trans(Submit, Msg)),
            ["resend", "resend", "done", "failed", "done", "failed"]
        );
        for t in [Tcc, Xa] {
            assert_eq!(
                table(trans(Submit, t)),
                ["resend", "resend", "done", "failed", "done", "failed"]
            );
        }
        for t in [Msg, Tcc, Xa] {
            assert_eq!(
                table(trans(Abort, t)),
                ["unknown", "resend", "failed", "done", "failed", "done"]
            );
        }
        assert_eq!(table(StateCall::PrepareWorkflow), ["resend"; 6]);
    }

    #[test]
    fn a_workflow_submit_is_done_only_in_the_status_it_asked_for() {
        let call = StateCall::Trans {
            op: DtmOp::Submit,
            trans_type: TransType::Workflow,
            workflow_status: Some("succeed"),
        };
        assert_eq!(
            table(call),
            ["unknown", "resend", "unknown", "unknown", "done", "unknown"]
        );
    }

    #[test]
    fn a_registration_is_done_once_its_rows_are_stored() {
        let tcc = BranchRegistration::new(
            "g",
            "01",
            RegistrationKind::Tcc {
                confirm: "c".into(),
                cancel: "x".into(),
                data: Default::default(),
            },
        );
        let call = StateCall::Register(&tcc);
        let stored = q(Some("prepared"), &[("01", "cancel"), ("01", "confirm")]);
        assert_eq!(resolve(call, &stored), Resolution::Done);
        // Another branch's rows do not count.
        let other = q(Some("prepared"), &[("02", "cancel"), ("02", "confirm")]);
        assert_eq!(resolve(call, &other), Resolution::Resend);
        // Stored, then DTM moved on (confirming): still done.
        let later = q(Some("submitted"), &[("01", "cancel"), ("01", "confirm")]);
        assert_eq!(resolve(call, &later), Resolution::Done);
        assert!(matches!(
            resolve(call, &q(Some("aborting"), &[])),
            Resolution::Failed(_)
        ));
        assert!(matches!(
            resolve(call, &q(None, &[])),
            Resolution::Failed(_)
        ));

        let wf = BranchRegistration::new(
            "g",
            "01",
            RegistrationKind::Workflow {
                op: "action".into(),
                status: "succeed".into(),
                data: Default::default(),
            },
        );
        let call = StateCall::Register(&wf);
        // The compensate row of the same branch is another registration.
        let other_op = q(Some("prepared"), &[("01", "compensate")]);
        assert_eq!(resolve(call, &other_op), Resolution::Resend);
        let stored = q(Some("prepared"), &[("01", "action")]);
        assert_eq!(resolve(call, &stored), Resolution::Done);
    }

    #[test]
    fn an_unknown_status_is_never_guessed() {
        let odd = q(Some("paused"), &[]);
        for call in [
            trans(DtmOp::Prepare, TransType::Msg),
            trans(DtmOp::Submit, TransType::Saga),
            trans(DtmOp::Abort, TransType::Tcc),
        ] {
            assert!(
                matches!(resolve(call, &odd), Resolution::Unknown(_)),
                "{call:?}"
            );
        }
    }
}
