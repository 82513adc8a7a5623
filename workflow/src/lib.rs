//! # dtm-workflow: distributed transactions as plain code
//!
//! DTM's workflow mode: a workflow is an async function that runs branches one after the
//! other (local steps, HTTP calls, gRPC calls, XA steps) and says how to undo or confirm
//! each one. Every branch result is **recorded on the DTM server**; if the process dies,
//! DTM calls the workflow back and the recorded results are **replayed** instead of calling
//! the services again, so every effect happens once.
//!
//! ## A workflow end to end
//!
//! ```no_run
//! use dtm_workflow::{send_http, Workflows, WorkflowMiddleware, Wf};
//! use dtmcli::{DtmClient, Error};
//! use reqwest::Method;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let dtm = DtmClient::new("http://localhost:36789/api/dtmsvr")?;
//! // 1. One registry per service, with the URL DTM calls to resume workflows.
//! let wfs = Workflows::http(dtm, "http://localhost:8081/api/workflow/resume");
//! // 2. One HTTP client whose requests a workflow records and replays.
//! let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(WorkflowMiddleware)
//!     .build();
//!
//! // 3. Register the workflow at start-up.
//! wfs.register("transfer", move |wf: Wf, input: Vec<u8>| {
//!     let http = http.clone();
//!     async move {
//!         // Branch 01: debit, saga style: register its compensation first.
//!         wf.new_branch()?;
//!         let (w, h, body) = (wf.clone(), http.clone(), input.clone());
//!         wf.on_rollback(move |_info| async move {
//!             // Called live when the workflow rolls back; a 409/425/500 answer is an error.
//!             let undo = w
//!                 .http(&h, Method::POST, "http://bank-a/TransOutRevert")
//!                 .header("content-type", "application/json")
//!                 .body(body);
//!             send_http(undo).await.map(drop)
//!         })?;
//!         // The action: recorded, and replayed from its record after a crash. Every body
//!         // names its content type: a JSON handler (axum's `Json`) answers 415 without it,
//!         // and DTM would retry that forever.
//!         let debit = wf
//!             .http(&http, Method::POST, "http://bank-a/TransOut")
//!             .header("content-type", "application/json")
//!             .body(input.clone());
//!         send_http(debit).await?;
//!         // Branch 02: a local step, recorded too.
//!         wf.new_branch()?;
//!         wf.do_(|_info| async { Ok(b"credited".to_vec()) }).await?;
//!         Ok(())
//!     }
//! })?;
//!
//! // 4. Serve the resume route (DTM calls it with GET or POST).
//! let app = wfs.callback_router("/api/workflow/resume");
//! # let _ = app;
//!
//! // 5. Run it. A Failure means DTM stored it rolled back; NotFinal, Ongoing or another
//! //    error means it is unfinished and DTM will resume it.
//! match wfs.execute("transfer", "gid-123", br#"{"amount":30}"#).await {
//!     Ok(_) => println!("done"),
//!     Err(Error::Failure(reason)) => println!("rolled back: {reason}"),
//!     Err(e) => println!("unfinished, DTM resumes it: {e}"),
//! }
//! # Ok(()) }
//! ```
//!
//! What happens: `execute` asks DTM (`prepareWorkflow`) for the transaction and the steps it
//! already recorded; the function runs; each recorded step either replays its record or
//! runs and records its result (`registerBranch`, with `"sync":"1"` so that a default
//! v1.19.0 server keeps it); a success runs the `on_commit` callbacks, a
//! [`dtmcli::Error::Failure`] the `on_rollback` callbacks (newest first, each recorded);
//! then the outcome is submitted. Ongoing and other errors leave the transaction for DTM,
//! which calls the callback route until the workflow finishes.
//!
//! ## Beyond the Go SDK
//! - Step records name their kind and target; a replay that asks for another step than the
//!   recorded one fails with [`dtmcli::Error::NonDeterministic`] instead of returning the
//!   wrong result, and so does a run that skips recorded steps.
//! - Typed workflows: [`Workflows::register_typed`] and [`Workflows::execute_typed`] take
//!   and return serde types, and [`Wf::step`] records a step's value as JSON and replays it
//!   typed; a record that no longer decodes into its step's type is
//!   [`dtmcli::Error::RecordType`], naming the gid, the branch and the type.
//! - Binary results are stored base64 so they survive DTM's JSON string field.
//! - `tracing` spans `workflow_step` mark each step `replayed=true|false`.
//! - A resume callback runs only a workflow DTM holds, with the name and input DTM stored
//!   (DTM does not authenticate the call; the Go SDK runs the body it receives): a gid DTM
//!   does not hold, another transaction, or a body other than the stored input is refused,
//!   and nothing is run or created ([`Workflows::execute_callback`]).
//! - Outcomes are what DTM stored: [`dtmcli::Error::Failure`] only for a workflow DTM holds
//!   `failed`; a failing commit or rollback callback leaves it [`dtmcli::Error::NotFinal`].
//! - A DTM callback for a gid that is still executing in this process (a step slower than
//!   the retry interval) answers ONGOING instead of running the workflow a second time.
//! - Every step record is written with `"sync":"1"`, so a default-configured v1.19.0
//!   server (`UpdateBranchSync` off) keeps it; the Go SDK loses it there.
//!
//! ## Working with Go services: the record format
//! The first two points above come from this SDK's own record format,
//! [`RecordFormat::Checked`], the default. A Go service cannot resume a workflow recorded
//! that way. A registry built with
//! `Workflows::http(..).with_record_format(RecordFormat::Go)` writes and reads records as
//! the Go SDK does (the raw bytes of each step's result), so a Go service registering the
//! same workflow name can resume what this service started, and the other way round. It
//! gives up the per-step non-determinism check, and over HTTP a result must be UTF-8 text.
//! [`RecordFormat`] compares the two.
//!
//! ## Feature flags
//! - `http` (default): workflows over HTTP (`Workflows::http`) and the recording
//!   `reqwest-middleware` middleware (`WorkflowMiddleware`, `send_http`). Without it (and with
//!   `grpc`), reqwest is not built.
//! - `axum` (default): [`Workflows::callback_router`].
//! - `grpc`: workflows over gRPC (`Workflows::grpc`), the `workflow.Workflow/Execute`
//!   service (`Workflows::grpc_service`), and `WorkflowLayer`, which records and replays
//!   the gRPC calls of a workflow on a tonic channel.
//! - `xa`: `Wf::do_xa` on MySQL/MariaDB and PostgreSQL through `dtm-barrier`'s XA.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
#[cfg(feature = "grpc")]
mod grpc;
mod history;
#[cfg(feature = "http")]
mod http;
mod lifecycle;
mod options;
mod patch;
mod record;
mod registry;
mod resume;
mod transport;
mod typed;
mod wf;
#[cfg(feature = "xa")]
mod xa;

#[cfg(feature = "grpc")]
pub use grpc::{ExecuteService, WorkflowGrpc, WorkflowLayer};
#[cfg(feature = "http")]
pub use http::{dtm_error, into_dtm_error, send_http, WorkflowMiddleware};

#[cfg(not(any(feature = "http", feature = "grpc")))]
compile_error!("dtm-workflow needs a transport to DTM: enable `http` (default) or `grpc`");
pub use history::{History, HistoryRecord};
pub use options::WfOptions;
pub use record::RecordFormat;
pub use registry::Workflows;
pub use wf::Wf;

// Dependencies whose types are in this crate's API, so that users can name the versions it
// was built with instead of guessing them (see "Cargo.toml for your use case" in the README).
/// The reqwest-middleware (with its reqwest) the recorder is built on, so your client matches it.
#[cfg(feature = "http")]
pub use reqwest_middleware;
