//! A workflow's recorded history, exported from DTM, and its replay without DTM.
//!
//! [`Workflows::export_history`] reads what DTM holds of one workflow (its name and input,
//! every step record, its status, result and rollback reason) into a [`History`], which
//! saves to and loads from a JSON file. [`Workflows::replay`] runs a registered workflow
//! function against such a history with no DTM and no services: every step must replay
//! from its record, so a code change that would take another path than the recorded run
//! fails the replay ([`Error::NonDeterministic`], naming the step) instead of failing in
//! production. A user's CI replays the histories of real runs against new code
//! (`dtm_testkit::history` replays a directory of them).

use std::path::Path;

use base64::Engine;
use dtmcli::{Error, QueryResult, Result, TransStatus};
use serde::{Deserialize, Serialize};

use crate::resume::Stored;
use crate::transport::Step;

/// The `format` of a history file this version writes and reads.
const FORMAT: &str = "dtm-workflow-history/1";

/// A workflow's recorded history, as DTM held it when it was exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct History {
    /// The file format (`dtm-workflow-history/1`).
    pub format: String,
    /// The workflow's gid.
    pub gid: String,
    /// DTM's `create_time` (RFC 3339), which a deadline counts from; `None` when DTM no
    /// longer holds it (a workflow ended on DTM's boltdb or Redis store).
    pub create_time: Option<String>,
    /// The registered workflow name.
    pub name: String,
    /// The input, base64.
    pub input: String,
    /// Every step record, in DTM's order.
    pub records: Vec<HistoryRecord>,
    /// DTM's status: `prepared` (unfinished), `succeed` or `failed`.
    pub status: String,
    /// The result DTM stored (base64; empty when none, and over gRPC, where DTM's answer
    /// never carries it: the SDK's copy is among the records).
    pub result: String,
    /// Why it rolled back.
    pub rollback_reason: String,
}

/// One step record of a [`History`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HistoryRecord {
    /// The branch id (`01`...; `00` for the SDK's own records).
    pub branch_id: String,
    /// The op (`action`, `commit`, `rollback`, ...).
    pub op: String,
    /// `succeed` or `failed`.
    pub status: String,
    /// The recorded bytes, base64.
    pub data: String,
}

impl History {
    /// The history of the workflow DTM's `query` answered `q` for; [`Error::InvalidInput`]
    /// when it holds none, or not a workflow.
    pub fn from_query(q: &QueryResult) -> Result<History> {
        let t = q
            .transaction
            .as_ref()
            .ok_or_else(|| Error::invalid("DTM holds no such transaction: no history"))?;
        if t.trans_type != "workflow" {
            return Err(Error::invalid(format!(
                "{} is a {} transaction, not a workflow: no history",
                t.gid, t.trans_type
            )));
        }
        if t.custom_data.is_empty() {
            // DTM v1.19.0's boltdb and Redis stores keep the submit's transaction when a
            // workflow ends; this SDK's submit carries the name and input, the Go SDK's
            // does not.
            return Err(Error::invalid(format!(
                "DTM no longer holds the name and input of workflow {}: it was ended by a \
                 submit without them (the Go SDK's) on a boltdb or Redis store; export it \
                 before it ends, or run DTM on a SQL store",
                t.gid
            )));
        }
        let stored = Stored::parse(&t.gid, &t.custom_data)?;
        let records = q
            .branches
            .iter()
            .map(|b| HistoryRecord {
                branch_id: b.branch_id.clone(),
                op: b.op.clone(),
                status: b.status.clone(),
                data: b64(&b.bin_data),
            })
            .collect();
        Ok(History {
            format: FORMAT.into(),
            gid: t.gid.clone(),
            name: stored.name,
            input: b64(&stored.input),
            status: t.status.clone(),
            result: t.result.clone(),
            rollback_reason: t.rollback_reason.clone(),
            create_time: t.create_time.clone(),
            records,
        })
    }

    /// The history as pretty JSON text.
    pub fn to_json(&self) -> String {
        // A struct of strings: serializing cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A history read from JSON text; [`Error::InvalidInput`] for text that is not one, or
    /// of another format version.
    pub fn from_json(text: &str) -> Result<History> {
        let h: History = serde_json::from_str(text).map_err(|e| {
            Error::invalid(format!(
                "not a workflow history: {}",
                crate::typed::json_error(&e)
            ))
        })?;
        if h.format != FORMAT {
            return Err(Error::invalid(format!(
                "a workflow history of format {:?}; this version reads {FORMAT:?}",
                h.format
            )));
        }
        Ok(h)
    }

    /// Writes the history to `path` as JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json())
            .map_err(|e| Error::other(format!("writing {}: {e}", path.display())))
    }

    /// Reads a history from the JSON file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<History> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::other(format!("reading {}: {e}", path.display())))?;
        History::from_json(&text)
    }

    /// The workflow's input.
    pub fn input_bytes(&self) -> Result<Vec<u8>> {
        unb64("input", &self.input)
    }

    /// DTM's status, typed.
    pub fn trans_status(&self) -> TransStatus {
        TransStatus::parse(&self.status)
    }

    /// The records as the lifecycle reads them.
    pub(crate) fn steps(&self) -> Result<Vec<Step>> {
        self.records
            .iter()
            .map(|r| {
                Ok(Step {
                    branch_id: r.branch_id.clone(),
                    op: r.op.clone(),
                    status: r.status.clone(),
                    data: unb64("a record", &r.data)?,
                })
            })
            .collect()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(what: &str, text: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::invalid(format!("the history's {what} is not base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_round_trips_and_refuses_other_text() {
        let h = History {
            format: FORMAT.into(),
            gid: "g".into(),
            name: "w".into(),
            input: b64(b"{}"),
            status: "succeed".into(),
            result: String::new(),
            rollback_reason: String::new(),
            create_time: Some("2026-12-08T00:05:45Z".into()),
            records: vec![HistoryRecord {
                branch_id: "01".into(),
                op: "action".into(),
                status: "succeed".into(),
                data: b64(&[0, 1, 2]),
            }],
        };
        let back = History::from_json(&h.to_json()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.steps().unwrap()[0].data, [0, 1, 2]);
        assert_eq!(back.input_bytes().unwrap(), b"{}");
        let other = h.to_json().replace(FORMAT, "dtm-workflow-history/9");
        assert!(matches!(
            History::from_json(&other),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            History::from_json("[]"),
            Err(Error::InvalidInput(_))
        ));
        assert!(History::from_query(&QueryResult::default()).is_err());
    }
}
