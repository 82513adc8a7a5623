//! A workflow's budget: the deadline and the resume limit of [`WfOptions`], after which it
//! stops retrying and rolls back.
//!
//! DTM v1.19.0 never times out a workflow, so the budget is read from what DTM stores: the
//! transaction's `create_time` for the deadline, and one record per unfinished run for the
//! resume limit (branch `00`, op `unfinished-<n>`, the run's error as data). The record
//! beyond the limit holds the reason the workflow gave up: every later run (a rollback that
//! was interrupted) reads it and rolls back with the same reason, whatever its steps
//! answer now.

use std::time::{Duration, SystemTime};

use dtmcli::{Error, Result};

use crate::options::WfOptions;
use crate::record::RecordFormat;
use crate::transport::Step;

/// The branch of the budget's records (beside a gRPC workflow's result copy).
pub(crate) const BRANCH: &str = "00";
const OP_PREFIX: &str = "unfinished-";
/// A recorded error is cut to this many bytes: it is history, not a payload.
const MAX_ERROR_BYTES: usize = 512;

/// What a workflow may still spend, as DTM's records say at the start of a run.
#[derive(Debug)]
pub(crate) struct Budget {
    /// When the deadline passes, and the reason the workflow then gives; `None`: never.
    deadline: Option<(SystemTime, String)>,
    limit: Option<u32>,
    /// Unfinished runs recorded so far.
    unfinished: u32,
    /// The reason recorded beyond the limit: the workflow gave up in an earlier run.
    gave_up: Option<String>,
}

/// What a run that ends unfinished records, and what it becomes.
pub(crate) enum Unfinished {
    /// Record `op` with the run's error, and stay unfinished: DTM resumes the workflow.
    Counted { op: String, data: String },
    /// Record `op` with the reason, and roll back.
    GiveUp { op: String, reason: String },
}

impl Budget {
    /// The budget of workflow `name` as `gid`, created at `created` (DTM's `create_time`,
    /// needed only for a finite, non-zero deadline), with the records DTM returned.
    pub(crate) fn new(
        options: &WfOptions,
        (name, gid): (&str, &str),
        created: Option<&str>,
        steps: &[Step],
        format: RecordFormat,
    ) -> Result<Self> {
        let deadline = match options.deadline {
            None => None,
            Some(d) => deadline_at(d, created)?.map(|at| {
                let reason = format!(
                    "workflow {name} gid {gid}: its deadline of {d:?} after its creation{} passed",
                    created.map(|c| format!(" ({c})")).unwrap_or_default()
                );
                (at, reason)
            }),
        };
        let mut unfinished = 0;
        let mut gave_up = None;
        for s in steps.iter().filter(|s| s.branch_id == BRANCH) {
            let Some(n) =
                s.op.strip_prefix(OP_PREFIX)
                    .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            unfinished = unfinished.max(n);
            if options.resume_limit.is_some_and(|l| n > l) {
                let text = format.decode(&s.data).payload;
                gave_up = Some(String::from_utf8_lossy(&text).into_owned());
            }
        }
        Ok(Budget {
            deadline,
            limit: options.resume_limit,
            unfinished,
            gave_up,
        })
    }

    /// Why an action without a record must not run now: the workflow gave up earlier, or
    /// its deadline passed.
    pub(crate) fn refusal(&self) -> Option<String> {
        if let Some(reason) = &self.gave_up {
            return Some(reason.clone());
        }
        self.deadline_passed()
    }

    /// The deadline's reason once it passed.
    pub(crate) fn deadline_passed(&self) -> Option<String> {
        let (at, reason) = self.deadline.as_ref()?;
        (SystemTime::now() >= *at).then(|| reason.clone())
    }

    /// What a run that ends unfinished with `e` does under the resume limit (`None`: no
    /// limit, nothing is recorded). The op is the count DTM's records hold plus one: a run
    /// whose record was lost writes the same op again, so a run is never counted twice.
    pub(crate) fn unfinished(&self, (name, gid): (&str, &str), e: &Error) -> Option<Unfinished> {
        let limit = self.limit?;
        let op = format!("{OP_PREFIX}{}", self.unfinished.saturating_add(1));
        let error = cut(&e.to_string());
        Some(if self.unfinished < limit {
            Unfinished::Counted { op, data: error }
        } else {
            let reason = format!(
                "workflow {name} gid {gid}: still unfinished after {limit} resumes (its resume limit); last error: {error}"
            );
            Unfinished::GiveUp { op, reason }
        })
    }
}

/// When a deadline `d` after `created` passes: now for zero, never (`None`) for one past
/// what the clock can hold.
fn deadline_at(d: Duration, created: Option<&str>) -> Result<Option<SystemTime>> {
    if d.is_zero() {
        return Ok(Some(SystemTime::UNIX_EPOCH));
    }
    if d >= FOREVER {
        return Ok(None);
    }
    let created = created.ok_or_else(|| {
        Error::other(
            "DTM did not say when the workflow was created: its deadline cannot be checked",
        )
    })?;
    Ok(parse_time(created)?.checked_add(d))
}

/// Deadlines at least this long never pass: their end lies beyond year 9999, which DTM's
/// times cannot reach (and `Duration::MAX` would overflow the clock).
pub(crate) const FOREVER: Duration = Duration::from_secs(8_000 * 365 * 24 * 3600);

/// A time DTM wrote (RFC 3339, Go's `time.Time` in JSON).
fn parse_time(text: &str) -> Result<SystemTime> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::other(format!("DTM's create_time {text:?} is not RFC 3339: {e}")))?;
    Ok(t.into())
}

/// `text`, cut at a character boundary to at most [`MAX_ERROR_BYTES`].
fn cut(text: &str) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_string();
    }
    let mut end = MAX_ERROR_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// True for errors that say the code no longer matches the records: they wait for the
/// right code, and spend no budget.
pub(crate) fn is_code_error(e: &Error) -> bool {
    matches!(e, Error::NonDeterministic(_) | Error::RecordType { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(op: &str, data: &[u8]) -> Step {
        Step {
            branch_id: BRANCH.into(),
            op: op.into(),
            status: "succeed".into(),
            data: data.to_vec(),
        }
    }

    fn options(deadline: Option<Duration>, resume_limit: Option<u32>) -> WfOptions {
        WfOptions {
            deadline,
            resume_limit,
            ..Default::default()
        }
    }

    const ID: (&str, &str) = ("wf", "g1");

    #[test]
    fn deadlines_at_their_limits() {
        let fmt = RecordFormat::Checked;
        // Zero: passed, without asking when the workflow was created.
        let b = Budget::new(&options(Some(Duration::ZERO), None), ID, None, &[], fmt).unwrap();
        assert!(b.refusal().unwrap().contains("deadline of 0ns"));
        // MAX: never, and no creation time needed.
        let b = Budget::new(&options(Some(Duration::MAX), None), ID, None, &[], fmt).unwrap();
        assert_eq!(b.refusal(), None);
        // A finite one needs the creation time, and reads DTM's format.
        let o = options(Some(Duration::from_secs(60)), None);
        assert!(Budget::new(&o, ID, None, &[], fmt).is_err());
        assert!(Budget::new(&o, ID, Some("yesterday"), &[], fmt).is_err());
        let old = "2026-12-08T00:05:45.666734946Z";
        let b = Budget::new(&o, ID, Some(old), &[], fmt).unwrap();
        let reason = b.refusal().unwrap();
        assert!(reason.contains("60s") && reason.contains(old), "{reason}");
        let t = time::OffsetDateTime::now_utc();
        let (h, m, sec) = t.to_hms();
        let soon = format!(
            "{}-{:02}-{:02}T{h:02}:{m:02}:{sec:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day()
        );
        let b = Budget::new(&o, ID, Some(&soon), &[], fmt).unwrap();
        assert_eq!(b.refusal(), None);
        // Another offset than Z.
        let b = Budget::new(&o, ID, Some("2026-12-08T08:05:45+08:00"), &[], fmt).unwrap();
        assert!(b.refusal().is_some());
    }

    #[test]
    fn the_resume_limit_counts_unfinished_runs() {
        let fmt = RecordFormat::Checked;
        let e = Error::Ongoing("busy".into());
        // Limit 0: the first unfinished run gives up, as op unfinished-1.
        let b = Budget::new(&options(None, Some(0)), ID, None, &[], fmt).unwrap();
        assert_eq!(b.refusal(), None);
        match b.unfinished(ID, &e) {
            Some(Unfinished::GiveUp { op, reason }) => {
                assert_eq!(op, "unfinished-1");
                assert!(reason.contains("after 0 resumes") && reason.contains("busy"));
            }
            _ => panic!("expected to give up"),
        }
        // Limit 2, one unfinished run recorded: counted as the second.
        let rec = |op, d: &str| step(op, &fmt.encode("unfinished", "", d.as_bytes()));
        let steps = [rec("unfinished-1", "e1"), step("result", b"")];
        let b = Budget::new(&options(None, Some(2)), ID, None, &steps, fmt).unwrap();
        assert!(
            matches!(b.unfinished(ID, &e), Some(Unfinished::Counted { op, .. }) if op == "unfinished-2")
        );
        // Beyond the limit: every later run is refused with the recorded reason.
        let steps = [
            rec("unfinished-1", "e1"),
            rec("unfinished-2", "gave up: why"),
        ];
        let b = Budget::new(&options(None, Some(1)), ID, None, &steps, fmt).unwrap();
        assert_eq!(b.refusal().as_deref(), Some("gave up: why"));
        // No limit: nothing recorded.
        let b = Budget::new(&options(None, None), ID, None, &steps, fmt).unwrap();
        assert!(b.unfinished(ID, &e).is_none() && b.refusal().is_none());
    }

    #[test]
    fn long_errors_are_cut_at_a_character() {
        let long = "é".repeat(400);
        let c = cut(&long);
        assert!(c.len() <= MAX_ERROR_BYTES + 3 && c.ends_with("..."));
        assert_eq!(cut("short"), "short");
    }
}
