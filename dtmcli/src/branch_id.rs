//! Client-side branch-id generation (TCC, XA, workflow).

use crate::error::Error;

/// Generates sub-branch ids `parent + "01"`, `parent + "02"`, ... up to `"99"`.
///
/// Unlike the Go SDK, which panics, running out of ids or a too-long parent is an
/// [`Error::InvalidInput`].
#[derive(Debug, Clone, Default)]
pub struct BranchIdGen {
    parent: String,
    counter: u32,
}

impl BranchIdGen {
    /// The longest parent id the generator accepts (as in DTM: below 20 characters).
    pub const MAX_PARENT_LEN: usize = 19;
    /// The number of sub-branches one parent can have.
    pub const MAX_BRANCHES: u32 = 99;

    /// A generator for the children of `parent` (empty for top-level branches).
    pub fn new(parent: impl Into<String>) -> Self {
        BranchIdGen {
            parent: parent.into(),
            counter: 0,
        }
    }

    /// The parent id.
    pub fn parent(&self) -> &str {
        &self.parent
    }

    /// The last id handed out, or the parent's when none was.
    pub fn current(&self) -> String {
        if self.counter == 0 {
            self.parent.clone()
        } else {
            format!("{}{:02}", self.parent, self.counter)
        }
    }

    /// The next sub-branch id.
    pub fn new_sub_branch_id(&mut self) -> Result<String, Error> {
        if self.counter >= Self::MAX_BRANCHES {
            return Err(Error::invalid(format!(
                "branch id overflow: more than {} sub-branches under {:?}",
                Self::MAX_BRANCHES,
                self.parent
            )));
        }
        if self.parent.len() > Self::MAX_PARENT_LEN {
            return Err(Error::invalid(format!(
                "branch id overflow: parent id {:?} is {} characters, at most {} allowed",
                self.parent,
                self.parent.len(),
                Self::MAX_PARENT_LEN
            )));
        }
        self.counter += 1;
        Ok(format!("{}{:02}", self.parent, self.counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_and_overflow() {
        let mut g = BranchIdGen::new("");
        assert_eq!(g.new_sub_branch_id().unwrap(), "01");
        assert_eq!(g.new_sub_branch_id().unwrap(), "02");
        for _ in 2..99 {
            g.new_sub_branch_id().unwrap();
        }
        assert_eq!(g.current(), "99");
        assert!(matches!(g.new_sub_branch_id(), Err(Error::InvalidInput(_))));
        let mut n = BranchIdGen::new("02");
        assert_eq!(n.new_sub_branch_id().unwrap(), "0201");
        let mut long = BranchIdGen::new("01234567890123456789");
        assert!(long.new_sub_branch_id().is_err());
        let mut ok = BranchIdGen::new("0123456789012345678");
        assert_eq!(ok.new_sub_branch_id().unwrap(), "012345678901234567801");
    }
}
