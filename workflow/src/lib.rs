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
//! ## Workflows: what this SDK adds to DTM's
//!
//! DTM's own workflow documentation stops at what its Go SDK does. Within DTM v1.19.0 as it
//! is, this SDK adds typed steps, concurrent branches, deadlines and resume limits that roll
//! back, versioning of workflows in flight, and replay tests:
//!
//! ```no_run
//! use std::time::Duration;
//! use dtm_workflow::{Wf, WfOptions, Workflows};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Order { id: u64, amount: i64 }
//!
//! fn register(wfs: &Workflows) -> dtmcli::Result<()> {
//!     // Rolled back (compensations run, DTM stores `failed` and why) when it is still
//!     // unfinished 10 minutes after DTM created it.
//!     let options = WfOptions { deadline: Some(Duration::from_secs(600)), ..Default::default() };
//!     wfs.register_typed("order", options, |wf: Wf, order: Order| async move {
//!         // A typed step, recorded as JSON and replayed typed.
//!         wf.new_branch()?;
//!         let price: i64 = wf.step(|_info| async move { Ok(order.amount * 100) }).await?;
//!         // Two branches at once: ids follow the calls (02, 03), not who finishes first.
//!         let (stock, card) = (wf.branch()?, wf.branch()?);
//!         stock.on_rollback(|_info| async { Ok(()) /* release the stock */ })?;
//!         card.on_rollback(|_info| async { Ok(()) /* refund */ })?;
//!         let (s, c) = futures_util::join!(
//!             stock.do_(|_info| async { Ok(b"reserved".to_vec()) }),
//!             card.do_(|_info| async move { Ok(price.to_string().into_bytes()) }),
//!         );
//!         let _ = (s?, c?);
//!         // Added while orders were in flight: those replay the old path, new ones take this.
//!         if wf.patched("fraud-check").await? {
//!             wf.new_branch()?;
//!             let _checked: bool = wf.step(|_info| async { Ok(true) }).await?;
//!         }
//!         Ok(price)
//!     })
//! }
//! ```
//!
//! | feature | DTM's Go SDK | this SDK |
//! |---|---|---|
//! | records replayed after a crash | yes | yes; [`RecordFormat::Go`] writes the Go SDK's records, so Go and Rust services resume each other's workflows |
//! | a record on a default-configured server | written asynchronously, lost (`UpdateBranchSync` off) | written with `"sync":"1"`, kept |
//! | a replay that asks for another step than the recorded one | gets that record's bytes | [`dtmcli::Error::NonDeterministic`] naming the step ([`RecordFormat::Checked`], the default); so does a run that skips recorded steps |
//! | inputs, step values, results | bytes | serde types ([`Workflows::register_typed`], [`Workflows::execute_typed`], [`Wf::step`]); a record of another type is [`dtmcli::Error::RecordType`] naming gid, branch and type |
//! | binary results over HTTP | replaced by U+FFFD | kept (base64 in the record) |
//! | concurrent branches | no: one current branch | [`Wf::branch`]: ids in call order, records and replay correct under SIGKILL, a rollback undoes exactly the branches whose actions completed |
//! | deadline, retry limit | none: DTM calls an unfinished workflow back forever | [`WfOptions::deadline`] (from DTM's `create_time`) and [`WfOptions::resume_limit`]: rolled back, DTM's reason says why |
//! | code changed while workflows are in flight | only the determinism check | [`Wf::patched`]: instances started by old code replay the old path |
//! | replay tests | none | [`Workflows::export_history`], [`Workflows::replay`] (no DTM, no services), `dtm_testkit::history` for CI |
//! | tests of workflows that retry for minutes | wait | `dtm_testkit::wait::fast_forward` (DTM's `resetNextCronTime`, on its SQL stores) |
//! | transports | HTTP, gRPC | any [`dtmcli::Transport`]: HTTP, gRPC, a `Cluster` of either, your own ([`Workflows::with_transport`]) |
//! | the resume callback (DTM does not authenticate it) | runs the body it receives | runs only what DTM holds: the stored name and input ([`Workflows::execute_callback`]) |
//! | a callback while the workflow still runs here | runs it a second time | ONGOING: DTM asks again later |
//! | outcomes | DTM's answers | what DTM stored: [`dtmcli::Error::Failure`] only for a workflow DTM holds `failed`; a failing commit or rollback callback leaves it [`dtmcli::Error::NotFinal`] |
//! | a finished workflow on DTM's boltdb or Redis store | loses its name and input | the submit carries them back |
//! | the result of a finished gRPC workflow | not returned (DTM's gRPC API) | kept as a record (`00/result`) when not empty |
//! | tracing | none | a span per step (`dtm.workflow.step`, `replayed=true/false`); one OpenTelemetry trace across resumes |
//!
//! ### At their limits
//! - **Deadline** ([`WfOptions::deadline`]): counted from DTM's `create_time` with this
//!   host's clock, checked before each action and when a run ends unfinished. `ZERO`: no
//!   action without a record runs; a new workflow rolls back in its first run. `MAX` (or
//!   anything past year 9999): never, and nothing is asked of DTM. Over gRPC a finite one
//!   reads `create_time` through the server's HTTP API (one `query` per run).
//! - **Resume limit** ([`WfOptions::resume_limit`]): each run that ends unfinished is
//!   recorded (`00/unfinished-<n>`, its error); the run that ends unfinished with the limit
//!   spent records why it gave up and rolls back. `Some(0)`: the first unfinished run rolls
//!   back. Runs stopped by [`dtmcli::Error::NonDeterministic`] or
//!   [`dtmcli::Error::RecordType`] spend nothing.
//! - **Past either**, the branch whose action was refused or had answered a retryable error
//!   is rolled back too (it may have applied): guard its rollback with a barrier.
//! - **[`Wf::patched`]**: decided by the instance's first run, which records
//!   `00/patch-<id>` before anything after it runs; an instance without the marker takes
//!   the old path, wherever the change is.
//! - **[`Workflows::replay`]**: every step, then the commit or rollback callbacks as the
//!   recorded run ended, replays from its record; the outcome and the result must match. A
//!   history that was unfinished replays up to its last record.
//!
//! ## Working with Go services: the record format
//! The determinism check and the binary results above come from this SDK's own record format,
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
