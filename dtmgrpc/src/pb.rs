//! The generated protobuf messages and tonic stubs of DTM's gRPC API.

/// `package dtmgimp`: the DTM server's gRPC API (`/dtmgimp.Dtm/<Rpc>`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod dtmgimp {
    tonic::include_proto!("dtmgimp");
}

/// `package workflow`: the workflow callback service (`/workflow.Workflow/Execute`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod workflow {
    tonic::include_proto!("workflow");
}
