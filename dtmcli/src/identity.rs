//! What may name a transaction and a branch: the rules for gids, branch ids and ops.
//!
//! A barrier row, a Redis barrier key and an XA xid are all built from (gid, branch id, op,
//! barrier id). If two different tuples could land on the same row, key or xid, the second
//! transaction's branch would find "its" row, skip the business and answer success: money
//! lost without a trace. So every value that the stores cannot hold exactly is refused here,
//! with [`Error::InvalidInput`], before anything is written:
//!
//! | value | rule | why |
//! |---|---|---|
//! | gid | 1..=128 characters; no control characters (NUL, TAB, CR, LF...); no `;`; no leading or trailing whitespace | `varchar(128)` in DTM's and the barrier's tables; DTM strips CR, LF and `;`; MySQL's PAD SPACE collations compare `a` and `a ` as equal |
//! | branch id | 1..=128 characters of `0-9 A-Z a-z _ . -` | DTM and the SDKs only generate digits (`01`, `0201`) and `NN-MM` for msg topics |
//! | op | 1..=45 characters of `0-9 A-Z a-z _` for a barrier; any non-empty text without control characters for a workflow callback (its op is the workflow's name) | `varchar(45)`; `-` separates the parts of a Redis key |
//!
//! Backends that join the parts with `-` (the Redis barrier key `<gid>-<branch>-<op>-<bid>`
//! and the XA xid `<gid>-<branch>`) also refuse a `-` inside the branch id
//! ([`check_branch_id_unseparated`]): with it, `g-01`+`01` and `g`+`01-01` would collide.
//! Reading the parts from the right then always gives back the one tuple: barrier ids are
//! digits, ops and branch ids have no `-`, the rest is the gid.
//!
//! These rules are stricter than the Go SDK's (which accepts anything and collides), never
//! looser: the same legal values give the same rows, keys and xids as Go.

use crate::error::{Error, Result};

/// The longest gid, in characters (`varchar(128)`).
pub const MAX_GID_CHARS: usize = 128;
/// The longest branch id, in characters (`varchar(128)`).
pub const MAX_BRANCH_ID_CHARS: usize = 128;
/// The longest op or barrier id a barrier row holds, in characters (`varchar(45)`).
pub const MAX_OP_CHARS: usize = 45;

/// Checks a global transaction id (see the [module docs](self)).
pub fn check_gid(gid: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("gid {:?} {why}", clip(gid))));
    if gid.is_empty() {
        return bad("is empty");
    }
    let chars = gid.chars().count();
    if chars > MAX_GID_CHARS {
        return bad(&format!(
            "has {chars} characters; at most {MAX_GID_CHARS} fit DTM's and the barrier's tables"
        ));
    }
    if gid.chars().any(char::is_control) {
        return bad("contains a control character (NUL, TAB, CR, LF...)");
    }
    if gid.contains(';') {
        return bad("contains `;`, which DTM strips from gids");
    }
    if gid.starts_with(char::is_whitespace) || gid.ends_with(char::is_whitespace) {
        return bad("starts or ends with whitespace, which SQL collations ignore");
    }
    Ok(())
}

/// Refuses only the empty gid: for calls about a transaction that may exist already (a
/// query, an abort, a branch registration), whose gid another SDK may have chosen outside
/// [`check_gid`]'s rules. DTM would answer an empty one with a retryable 500.
pub fn check_gid_not_empty(gid: &str) -> Result<()> {
    if gid.is_empty() {
        return Err(Error::invalid(
            "gid \"\" is empty: every DTM call about a transaction names its gid",
        ));
    }
    Ok(())
}

/// Checks a branch id (see the [module docs](self)).
pub fn check_branch_id(branch_id: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "branch id {:?} {why}",
            clip(branch_id)
        )))
    };
    if branch_id.is_empty() {
        return bad("is empty");
    }
    if branch_id.chars().count() > MAX_BRANCH_ID_CHARS {
        return bad(&format!("is longer than {MAX_BRANCH_ID_CHARS} characters"));
    }
    if !branch_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("may only hold ASCII letters, digits, `_`, `.` and `-`");
    }
    Ok(())
}

/// Checks a branch id for stores that join the parts of an identity with `-` (Redis barrier
/// keys, XA xids): [`check_branch_id`] and no `-` inside.
pub fn check_branch_id_unseparated(branch_id: &str) -> Result<()> {
    check_branch_id(branch_id)?;
    if branch_id.contains('-') {
        return Err(Error::invalid(format!(
            "branch id {branch_id:?} contains `-`, which separates the parts of Redis barrier keys and XA xids: `g-01`+`01` and `g`+`01-01` would share one"
        )));
    }
    Ok(())
}

/// Checks an op or barrier id that goes into a barrier row or key: 1..=45 characters of
/// `0-9 A-Z a-z _`.
pub fn check_barrier_word(what: &str, value: &str) -> Result<()> {
    if value.is_empty()
        || value.chars().count() > MAX_OP_CHARS
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(Error::invalid(format!(
            "{what} {:?} must be 1 to {MAX_OP_CHARS} ASCII letters, digits or `_`",
            clip(value)
        )));
    }
    Ok(())
}

/// Checks an op as a branch request carries it: non-empty, no control characters (a
/// workflow callback's op is the workflow's name, so any other text is allowed here).
pub fn check_op(op: &str) -> Result<()> {
    if op.is_empty() || op.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "op {:?} must be non-empty text without control characters",
            clip(op)
        )));
    }
    Ok(())
}

/// At most 64 characters of `s`, for error messages (a hostile value may be huge).
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids() {
        for ok in [
            "g1",
            "Case-x-abc",
            "café",
            "a b",
            &"x".repeat(128),
            &"é".repeat(128),
        ] {
            assert!(check_gid(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ts-x ",
            " ts-x",
            "a\0b",
            "a\tb",
            "a\nb",
            "a;b",
            &"x".repeat(129),
            &"é".repeat(129),
        ] {
            assert!(
                matches!(check_gid(bad), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn empty_gids() {
        let e = check_gid_not_empty("").unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput(ref m) if m.contains("empty")),
            "{e}"
        );
        assert!(check_gid_not_empty("a b ").is_ok());
    }

    #[test]
    fn branch_ids() {
        for ok in ["01", "0201", "01-01", "00"] {
            assert!(check_branch_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "0 1", "01\0", "é", &"1".repeat(129)] {
            assert!(check_branch_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_branch_id_unseparated("0201").is_ok());
        assert!(check_branch_id_unseparated("01-01").is_err());
    }

    #[test]
    fn words_and_ops() {
        assert!(check_barrier_word("op", "compensate").is_ok());
        for bad in ["", "a-b", "a b", &"o".repeat(46)] {
            assert!(check_barrier_word("op", bad).is_err(), "{bad:?}");
        }
        assert!(check_op("my workflow").is_ok());
        assert!(check_op("a\tb").is_err());
        assert!(check_op("").is_err());
    }

    #[test]
    fn clips_long_values() {
        let e = check_gid(&"x".repeat(100_000)).unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
    }
}
