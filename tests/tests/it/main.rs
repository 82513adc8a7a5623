//! The integration tests against the real DTM server and the real databases, as one test
//! binary: the dependency tree is linked once instead of once per behaviour, and every
//! module shares one DTM server (default configuration) and the business services of
//! `support`, started on first use. One module per behaviour, as the files were before.
//!
//! Tests that need another DTM configuration, or a process-wide tracing subscriber of their
//! own, are binaries of their own: `it_sync` (`UPDATE_BRANCH_SYNC=1`), `chaos_suite`
//! (servers killed while transfers run), `otel`, `secrets`.

/// One module per fixture of a generic suite (`$fixture`, the type `$ty`), with one test
/// per scenario (a generic `async fn` of the suite's module) that applies to it.
macro_rules! instantiate {
    ($fixture:ident: $ty:ty => $($scenario:ident),* $(,)?) => {
        mod $fixture {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario::<$ty>().await
                }
            )*
        }
    };
}

#[path = "../go_service/mod.rs"]
mod go_service;
#[path = "../support/mod.rs"]
mod support;
#[macro_use]
#[path = "../workflow_common/mod.rs"]
mod workflow_common;

mod bad_input;
mod barrier_identity;
mod barrier_mongo;
mod barrier_redis;
mod barrier_sql_msg_xa;
mod barrier_suite;
mod bounds_http;
mod cluster;
mod go_interop_barrier;
mod grpc_api;
mod grpc_bad_input;
mod grpc_barrier;
mod grpc_bounds;
mod grpc_layer;
mod grpc_msg;
mod grpc_saga;
mod grpc_tcc;
mod grpc_xa;
mod interop;
mod jsonrpc;
mod middleware;
mod msg;
mod outcomes;
mod proptest_parsers;
mod resolve;
mod transport_suite;
mod workflow_budget;
mod workflow_crash;
mod workflow_go_records;
mod workflow_grpc;
mod workflow_http;
mod workflow_replay;
mod workflow_resume;
mod workflow_typed;
mod workflow_xa;
mod xa;
mod xa_race;
