//! Every scenario of DTM's example collection (dtm-labs/dtm-examples), under the same
//! names, and this project's founding scenarios ([`crate::founding`]), each a function that runs against a real
//! DTM server and checks its outcome: DTM's final status, the balances, which handlers ran.
//! The `dtm-examples` binary runs them by name (`cargo run -p dtm-examples -- list`).

mod env;
mod grpc;
mod grpc_workflow;
mod http;
mod http_workflow;
mod kv;
mod sql;
mod workflow_steps;

pub use env::{expect, expect_eq, Env};

use futures_util::future::LocalBoxFuture;

use crate::demo::DemoError;

/// A scenario's body (not `Send`: the scenarios run one after another on the main task,
/// and some hold sqlx futures whose `Send` the compiler cannot prove for every lifetime).
pub type Run = for<'a> fn(&'a Env) -> LocalBoxFuture<'a, Result<(), DemoError>>;

/// One runnable scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Its name (DTM's name for DTM's scenarios).
    pub name: &'static str,
    /// What it shows, in one line.
    pub about: &'static str,
    /// What it needs besides DTM.
    pub needs: &'static str,
    /// Runs it and checks its outcome.
    pub run: Run,
}

macro_rules! scenarios {
    ($($name:literal, $needs:literal, $f:path, $about:literal;)*) => {
        /// Every scenario, in the order `all` runs them.
        pub static ALL: &[Scenario] = &[$(Scenario {
            name: $name,
            about: $about,
            needs: $needs,
            run: |env| Box::pin($f(env)),
        },)*];
    };
}

scenarios! {
    "http_saga", "-", http::saga, "saga over HTTP: two steps, both succeed";
    "http_saga_rollback", "-", http::saga_rollback, "saga whose second step fails: DTM compensates in reverse order";
    "http_saga_wait", "-", http::saga_wait, "saga with wait_result: submit returns the outcome";
    "http_concurrent_saga", "-", http::concurrent_saga, "concurrent saga with branch orders";
    "http_saga_customHeaders", "-", http::saga_custom_headers, "headers given to a saga reach every branch";
    "http_saga_barrier", "MariaDB", sql::saga_barrier, "barrier-guarded saga on MariaDB; a failed credit's compensation is a null compensation";
    "http_saga_barrier_twice", "MariaDB", sql::saga_barrier_twice, "one branch, two guarded local transactions (barrier ids 01, 02)";
    "http_saga_gorm_barrier", "PostgreSQL", sql::saga_gorm_barrier, "the ORM variant of http_saga_barrier: sqlx on PostgreSQL";
    "http_saga_multiSource", "MariaDB, PostgreSQL", sql::saga_multi_source, "one branch writing to two databases, each part guarded";
    "http_saga_redis", "Redis", kv::saga_redis, "saga on Redis balances; a resent action is a duplicate";
    "http_saga_redis_rollback", "Redis", kv::saga_redis_rollback, "saga on Redis whose debit fails: compensated, balances restored";
    "http_saga_mongo", "MongoDB", kv::saga_mongo, "saga on MongoDB balances; a resent action is a duplicate";
    "http_saga_mongo_rollback", "MongoDB", kv::saga_mongo_rollback, "saga on MongoDB whose debit fails: compensated, balances restored";
    "http_saga_multidb", "MariaDB, Redis, MongoDB", kv::saga_multidb, "one saga over MongoDB, Redis and MariaDB";
    "http_saga_multidb_rollback", "MariaDB, Redis, MongoDB", kv::saga_multidb_rollback, "one saga over three stores whose last step fails: all undone";
    "http_msg", "-", http::msg, "2-phase message: prepare, submit; a prepared one whose sender died is back-checked";
    "http_msg_doAndCommit", "MariaDB", sql::msg_do_and_commit, "outbox: local debit and msg barrier in one MariaDB transaction";
    "http_msg_barrier_redis", "Redis", kv::msg_barrier_redis, "outbox on Redis: local debit with the msg barrier key, credit by DTM";
    "http_msg_barrier_redis_db", "MariaDB, Redis", kv::msg_barrier_redis_db, "outbox on Redis, credit on MariaDB";
    "http_tcc", "-", http::tcc_ok, "TCC over HTTP: both tries succeed, DTM confirms";
    "http_tcc_rollback", "-", http::tcc_rollback, "TCC whose second try fails: DTM cancels both";
    "http_tcc_nested", "-", http::tcc_nested, "a TCC try that opens a nested branch";
    "http_tcc_customHeaders", "-", http::tcc_custom_headers, "headers given to a TCC reach its confirms";
    "http_tcc_barrier", "MariaDB", sql::tcc_barrier, "barrier-guarded TCC on MariaDB, then one whose credit try fails";
    "http_xa", "MariaDB", sql::xa_mysql, "XA on MariaDB: committed, then rolled back";
    "http_xa_gorm", "PostgreSQL", sql::xa_postgres, "the ORM variant of http_xa: sqlx on PostgreSQL";
    "http_workflow_simple", "-", http_workflow::simple, "workflow: two recorded HTTP calls";
    "http_workflow_saga", "-", http_workflow::saga, "workflow, saga style: compensations registered per branch";
    "http_workflow_saga_rollback", "-", http_workflow::saga_rollback, "workflow whose credit fails: the debit is compensated";
    "http_workflow_saga_barrier", "MariaDB", http_workflow::saga_barrier, "workflow on the guarded MariaDB bank, then a failing credit";
    "http_workflow_tcc", "-", http_workflow::tcc, "workflow, TCC style: confirm/cancel per branch";
    "http_workflow_tcc_rollback", "-", http_workflow::tcc_rollback, "TCC-style workflow whose credit try fails";
    "http_workflow_tcc_barrier", "MariaDB", http_workflow::tcc_barrier, "TCC-style workflow on the guarded MariaDB bank";
    "http_workflow_xa", "MariaDB, PostgreSQL", http_workflow::xa, "workflow with XA steps on MariaDB and PostgreSQL";
    "grpc_saga", "-", grpc::saga, "saga over gRPC: two steps, both succeed";
    "grpc_saga_rollback", "-", grpc::saga_rollback, "gRPC saga whose second step fails";
    "grpc_saga_wait", "-", grpc::saga_wait, "gRPC saga with wait_result";
    "grpc_saga_customHeaders", "-", grpc::saga_custom_headers, "headers given to a gRPC saga arrive as metadata, retries included";
    "grpc_saga_hybrid", "-", grpc::saga_hybrid, "one gRPC saga with a gRPC step and an HTTP step";
    "grpc_saga_barrier", "MariaDB", grpc::saga_barrier, "the barrier-guarded gRPC bank on MariaDB";
    "grpc_msg", "-", grpc::msg, "gRPC message with its local business (do_and_submit)";
    "grpc_tcc", "-", grpc::tcc_ok, "TCC over gRPC: both tries succeed";
    "grpc_tcc_rollback", "-", grpc::tcc_rollback, "gRPC TCC whose second try fails";
    "grpc_tcc_customHeaders", "-", grpc::tcc_custom_headers, "headers given to a gRPC TCC reach its confirms";
    "grpc_xa", "MariaDB, PostgreSQL", grpc::xa, "XA over gRPC on MariaDB and PostgreSQL";
    "grpc_workflow_simple", "-", grpc_workflow::simple, "gRPC workflow: two recorded gRPC calls";
    "grpc_workflow_saga", "-", grpc_workflow::saga, "gRPC workflow, saga style";
    "grpc_workflow_saga_rollback", "-", grpc_workflow::saga_rollback, "gRPC workflow whose credit fails";
    "grpc_workflow_saga_barrier", "MariaDB", grpc_workflow::saga_barrier, "gRPC workflow on the guarded gRPC bank";
    "grpc_workflow_tcc", "-", grpc_workflow::tcc, "gRPC workflow, TCC style";
    "grpc_workflow_tcc_rollback", "-", grpc_workflow::tcc_rollback, "TCC-style gRPC workflow whose credit try fails";
    "grpc_workflow_mixed", "-", grpc_workflow::mixed, "local step, HTTP call and gRPC call in one workflow";
    "donation", "MariaDB", donation, "founding: a TCC chain invisible to a concurrent reader until all of it is confirmed";
    "stepping", "MariaDB, Redis, MongoDB", stepping, "founding: ordered steps after a local commit, surviving a worker SIGKILL";
    "reprocessing", "MariaDB, MongoDB", reprocessing, "founding: transfers on a hot row complete through the reprocessing policy";
}

async fn donation(env: &Env) -> Result<(), DemoError> {
    crate::founding::donation::run(env.dtm()).await
}

async fn stepping(env: &Env) -> Result<(), DemoError> {
    crate::founding::stepping::run(env.dtm()).await
}

async fn reprocessing(env: &Env) -> Result<(), DemoError> {
    crate::founding::reprocessing::run(env.dtm()).await
}

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}
