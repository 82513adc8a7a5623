//! Integration tests live in `tests/`.

pub mod chaos;
pub mod sql;
pub mod wf;
