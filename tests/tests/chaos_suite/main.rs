//! The chaos suites: bank transfers in every mode while branch services, DTM servers and
//! database connections are killed. A binary of their own, so that their load and their
//! SIGKILLs do not share the machine with the other tests' timing.

#[path = "../support/mod.rs"]
mod support;

mod chaos;
mod cluster_chaos;
