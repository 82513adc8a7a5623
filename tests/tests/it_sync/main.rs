//! The tests that need a DTM server started with `UPDATE_BRANCH_SYNC=1` (workflow records
//! written synchronously, as the Go SDK needs on v1.19.0), sharing that one server.

#[path = "../go_service/mod.rs"]
mod go_service;
#[path = "../support/mod.rs"]
mod support;
#[macro_use]
#[path = "../workflow_common/mod.rs"]
mod workflow_common;

mod go_interop_workflow;
mod workflow_http_sync;
