//! Transaction types, ops and the transaction info every branch call carries.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::identity;

/// The transaction mode (`trans_type` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransType {
    /// Saga: actions with compensations.
    Saga,
    /// 2-phase message.
    Msg,
    /// Try / confirm / cancel.
    Tcc,
    /// XA two-phase commit.
    Xa,
    /// Workflow mode.
    Workflow,
}

impl TransType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TransType::Saga => "saga",
            TransType::Msg => "msg",
            TransType::Tcc => "tcc",
            TransType::Xa => "xa",
            TransType::Workflow => "workflow",
        }
    }
}

impl fmt::Display for TransType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "saga" => TransType::Saga,
            "msg" => TransType::Msg,
            "tcc" => TransType::Tcc,
            "xa" => TransType::Xa,
            "workflow" => TransType::Workflow,
            other => return Err(Error::invalid(format!("unknown trans_type {other:?}"))),
        })
    }
}

/// The operation a branch call asks for (`op` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// TCC try.
    Try,
    /// TCC confirm.
    Confirm,
    /// TCC cancel.
    Cancel,
    /// Saga / msg / XA phase 1 / workflow action.
    Action,
    /// Saga compensation.
    Compensate,
    /// XA and workflow phase-2 commit.
    Commit,
    /// XA and workflow phase-2 rollback.
    Rollback,
    /// msg back-check (query-prepared) and DoAndSubmit.
    Msg,
    /// Workflow DoXa marker.
    Business,
    /// Anything else: the workflow callback carries the workflow's name as its op.
    Other(String),
}

impl Op {
    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Op::Try => "try",
            Op::Confirm => "confirm",
            Op::Cancel => "cancel",
            Op::Action => "action",
            Op::Compensate => "compensate",
            Op::Commit => "commit",
            Op::Rollback => "rollback",
            Op::Msg => "msg",
            Op::Business => "business",
            Op::Other(s) => s,
        }
    }

    /// Parses a wire op; unknown names become [`Op::Other`].
    pub fn parse(s: &str) -> Op {
        match s {
            "try" => Op::Try,
            "confirm" => Op::Confirm,
            "cancel" => Op::Cancel,
            "action" => Op::Action,
            "compensate" => Op::Compensate,
            "commit" => Op::Commit,
            "rollback" => Op::Rollback,
            "msg" => Op::Msg,
            "business" => Op::Business,
            other => Op::Other(other.to_string()),
        }
    }

    /// For an undo op (cancel, compensate, rollback), the op whose effect it undoes
    /// (try, action, action). This is what the barrier records to detect null compensation.
    pub fn origin(&self) -> Option<Op> {
        match self {
            Op::Cancel => Some(Op::Try),
            Op::Compensate | Op::Rollback => Some(Op::Action),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Op {
    fn from(s: &str) -> Op {
        Op::parse(s)
    }
}

/// What identifies one branch call: the transaction info DTM puts in the query string
/// (HTTP) or metadata (gRPC) of every call to a branch. Its `Debug` output shows `dtm` and
/// `phase2_url` without credentials.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransInfo {
    /// Global transaction id.
    pub gid: String,
    /// Transaction mode.
    pub trans_type: TransType,
    /// Branch id (`01`, `0201`, `00` for msg back-checks...).
    pub branch_id: String,
    /// The op asked for.
    pub op: Op,
    /// The DTM server URL, when the caller is an SDK (TCC try, XA action); DTM itself sends
    /// none. Needed to open nested TCC branches or register XA branches.
    pub dtm: Option<String>,
    /// XA only: the URL DTM must call for phase 2 of this branch.
    pub phase2_url: Option<String>,
}

impl std::fmt::Debug for TransInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn redact(u: &Option<String>) -> Option<std::borrow::Cow<'_, str>> {
            u.as_deref().map(crate::redact::redact_url)
        }
        f.debug_struct("TransInfo")
            .field("gid", &self.gid)
            .field("trans_type", &self.trans_type)
            .field("branch_id", &self.branch_id)
            .field("op", &self.op)
            .field("dtm", &redact(&self.dtm))
            .field("phase2_url", &redact(&self.phase2_url))
            .finish()
    }
}

impl TransInfo {
    /// Builds a transaction info from its four required parts.
    pub fn new(
        gid: impl Into<String>,
        trans_type: TransType,
        branch_id: impl Into<String>,
        op: Op,
    ) -> Self {
        TransInfo {
            gid: gid.into(),
            trans_type,
            branch_id: branch_id.into(),
            op,
            dtm: None,
            phase2_url: None,
        }
    }

    /// Reads the transaction info from a URL query string (`gid=..&trans_type=..&branch_id=..&op=..`,
    /// with optional `dtm` and `phase2_url`). A leading `?` is accepted.
    ///
    /// Errors with [`Error::InvalidInput`] naming the missing or malformed field.
    pub fn from_query(query: &str) -> Result<Self, Error> {
        let query = query.strip_prefix('?').unwrap_or(query);
        Self::from_pairs(form_urlencoded::parse(query.as_bytes()))
    }

    /// Reads the transaction info from key/value pairs (a parsed query, or gRPC metadata with
    /// the `dtm-` prefix already removed).
    ///
    /// The gid, branch id and op must follow [`crate::identity`]'s rules, and `dtm` and
    /// `phase2_url` may hold no control characters; anything else is refused with
    /// [`Error::InvalidInput`] (the Go SDK silently strips CR, LF and `;` instead, which can
    /// make two different values one).
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, Error>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let (mut gid, mut tt, mut bid, mut op, mut dtm, mut p2) =
            (None, None, None, None, None, None);
        for (k, v) in pairs {
            let v = v.as_ref().to_string();
            match k.as_ref() {
                "gid" => gid = Some(v),
                "trans_type" => tt = Some(v),
                "branch_id" => bid = Some(v),
                "op" => op = Some(v),
                "dtm" => dtm = Some(v),
                "phase2_url" => p2 = Some(v),
                _ => {}
            }
        }
        let need = |v: Option<String>, name: &str| -> Result<String, Error> {
            match v {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(Error::invalid(format!(
                    "invalid trans info: missing or empty `{name}`"
                ))),
            }
        };
        let gid = need(gid, "gid")?;
        identity::check_gid(&gid)?;
        let trans_type: TransType = need(tt, "trans_type")?.parse()?;
        let branch_id = need(bid, "branch_id")?;
        identity::check_branch_id(&branch_id)?;
        let op = need(op, "op")?;
        identity::check_op(&op)?;
        let op = Op::parse(&op);
        for (name, v) in [("dtm", &dtm), ("phase2_url", &p2)] {
            if v.as_deref()
                .is_some_and(|v| v.chars().any(char::is_control))
            {
                return Err(Error::invalid(format!(
                    "invalid trans info: `{name}` contains a control character"
                )));
            }
        }
        Ok(TransInfo {
            gid,
            trans_type,
            branch_id,
            op,
            dtm: dtm.filter(|s| !s.is_empty()),
            phase2_url: p2.filter(|s| !s.is_empty()),
        })
    }

    /// The query pairs an SDK sends when it calls a branch itself (`dtm` and `phase2_url`
    /// included when set).
    pub fn query_pairs(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![
            ("gid", self.gid.as_str()),
            ("trans_type", self.trans_type.as_str()),
            ("branch_id", self.branch_id.as_str()),
            ("op", self.op.as_str()),
        ];
        if let Some(d) = &self.dtm {
            v.insert(0, ("dtm", d.as_str()));
        }
        if let Some(p) = &self.phase2_url {
            v.push(("phase2_url", p.as_str()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_query() {
        let ti = TransInfo::from_query(
            "?gid=g1&trans_type=tcc&branch_id=01&op=try&dtm=http%3A%2F%2Fh%3A1%2Fapi%2Fdtmsvr",
        )
        .unwrap();
        assert_eq!(ti.gid, "g1");
        assert_eq!(ti.trans_type, TransType::Tcc);
        assert_eq!(ti.op, Op::Try);
        assert_eq!(ti.dtm.as_deref(), Some("http://h:1/api/dtmsvr"));
    }

    #[test]
    fn rejects_missing_bad_and_unstorable() {
        let missing_or_bad = [
            "",
            "gid=g&trans_type=saga&branch_id=01",
            "gid=&trans_type=saga&branch_id=01&op=action",
            "gid=g&trans_type=bogus&branch_id=01&op=action",
            "%%%",
        ];
        // Values the barrier stores and DTM could not hold exactly.
        let unstorable = [
            "gid=a%3Bb&trans_type=saga&branch_id=01&op=action",
            "gid=a%0A&trans_type=saga&branch_id=01&op=action",
            "gid=ts-x%20&trans_type=saga&branch_id=01&op=action",
            "gid=a%00b&trans_type=saga&branch_id=01&op=action",
            "gid=g&trans_type=saga&branch_id=0%201&op=action",
            "gid=g&trans_type=saga&branch_id=01&op=act%09ion",
            "gid=g&trans_type=saga&branch_id=01&op=action&dtm=http://h%0A",
        ];
        for q in missing_or_bad.into_iter().chain(unstorable) {
            let e = TransInfo::from_query(q).unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)), "{q}: {e}");
        }
    }

    #[test]
    fn origin_ops() {
        assert_eq!(Op::Cancel.origin(), Some(Op::Try));
        assert_eq!(Op::Compensate.origin(), Some(Op::Action));
        assert_eq!(Op::Rollback.origin(), Some(Op::Action));
        assert_eq!(Op::Action.origin(), None);
        assert_eq!(Op::parse("wf_name"), Op::Other("wf_name".into()));
    }
}
