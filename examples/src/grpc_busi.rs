//! The example business services over gRPC (tonic), built with `dtmgrpc`'s helpers.
//!
//! - [`GrpcBusi`] (`busi.Busi`): the recording bank service, the gRPC twin of
//!   [`crate::busi::Busi`]: saga actions/compensations, TCC try/confirm/cancel, a nested TCC
//!   try (`TransInTccNested`), an XA stub (`TransOutXa`/`TransInXa`: registers the branch over
//!   gRPC and records phase 2) and a msg back-check (`QueryPrepared`). Outcomes are steered
//!   per request by `TransOutResult` / `TransInResult` (`SUCCESS`, `FAILURE`, `ONGOING`,
//!   `ERROR`) or by a script per gid and handler; every call is recorded with its metadata.
//! - [`GrpcBank`] (`busi.BankMysql`, `busi.BankPostgres`): the barrier-guarded bank of
//!   [`crate::bank`] over gRPC, on MariaDB and PostgreSQL, with XA branches
//!   (`dtm_barrier::xa::XaLocal` registering through the gRPC client).
//!
//! The request message is [`pb::ReqGrpc`] (fields 1-3 as in dtm's Go test service). DTM calls
//! these services with the content-type `application/grpc+dtm_raw`: plain tonic servers
//! accept it, no extra layer is needed.

use std::collections::BTreeMap;
use std::sync::Arc;

use dtm_barrier::xa::XaLocal;
use dtm_barrier::Outcome as BOutcome;
use dtmcli::{Op, TransInfo};
use dtmgrpc::{DtmGrpcClient, IntoStatus, Tcc};
use sqlx::{MySql, Pool, Postgres};
use tonic::metadata::MetadataMap;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::bank::{guarded, Bank, BankDb, BankReq, Db, Leg};
use crate::busi::{recording_api, xa_registration, Outcome, Recording};
use crate::demo::{bind, spawn_grpc};

/// The generated messages and tonic services of `proto/busi.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("busi");
}

use pb::bank_mysql_server::{BankMysql, BankMysqlServer};
use pb::bank_postgres_server::{BankPostgres, BankPostgresServer};
use pb::busi_server::{Busi as BusiService, BusiServer};
use pb::{BusiReply, ReqGrpc};

impl ReqGrpc {
    /// A request moving `amount` that succeeds everywhere.
    pub fn amount(amount: i64) -> Self {
        ReqGrpc {
            amount,
            ..Default::default()
        }
    }

    /// The guarded bank's request: moves `amount` from `from` to `to`; the credit fails
    /// after its write when `fail_in` (as [`crate::bank::BankReq::transfer`]).
    pub fn transfer(amount: i64, from: i64, to: i64, fail_in: bool) -> Self {
        ReqGrpc {
            amount,
            from_user: from,
            to_user: to,
            trans_in_result: crate::busi::fails_if(fail_in),
            ..Default::default()
        }
    }
}

/// The guarded bank reads the request as the HTTP bank's body.
impl From<ReqGrpc> for BankReq {
    fn from(r: ReqGrpc) -> BankReq {
        BankReq {
            amount: r.amount,
            from: r.from_user,
            to: r.to_user,
            trans_out_result: r.trans_out_result,
            trans_in_result: r.trans_in_result,
        }
    }
}

/// One recorded call of [`GrpcBusi`].
#[derive(Debug, Clone)]
pub struct GrpcCall {
    /// Method name (`TransOut`...).
    pub handler: String,
    /// The transaction info of the metadata, when complete.
    pub info: Option<TransInfo>,
    /// Why the metadata did not give a transaction info.
    pub info_error: Option<String>,
    /// Every metadata entry (ASCII values), `content-type` included.
    pub metadata: BTreeMap<String, String>,
    /// The decoded request.
    pub req: ReqGrpc,
    /// What the handler answered.
    pub outcome: Outcome,
}

impl GrpcCall {
    /// The gid of the call ("" if absent).
    pub fn gid(&self) -> &str {
        self.info.as_ref().map(|i| i.gid.as_str()).unwrap_or("")
    }

    /// The op of the call ("" if absent).
    pub fn op(&self) -> String {
        self.info
            .as_ref()
            .map(|i| i.op.to_string())
            .unwrap_or_default()
    }
}

/// The recording business service `busi.Busi` (cheap to clone).
#[derive(Debug, Clone)]
pub struct GrpcBusi {
    state: Recording<GrpcCall>,
    client: DtmGrpcClient,
}

fn metadata_map(md: &MetadataMap) -> BTreeMap<String, String> {
    md.clone()
        .into_headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

impl GrpcBusi {
    /// A service that uses `client` (its channels) for nested TCC and XA registration.
    pub fn new(client: DtmGrpcClient) -> Self {
        GrpcBusi {
            state: Recording::default(),
            client,
        }
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn service(&self) -> BusiServer<GrpcBusi> {
        BusiServer::new(self.clone())
    }

    /// Serves on 127.0.0.1 (port 0 picks a free one) in a background task; returns the
    /// address (`127.0.0.1:<port>`).
    pub async fn serve(&self, port: u16) -> std::io::Result<String> {
        let (listener, addr) = bind(port).await?;
        let base = addr.to_string();
        self.state.set_base(&base);
        spawn_grpc(listener, Routes::new(self.service()), "grpc busi server");
        Ok(base)
    }

    /// The branch URL of a method (`127.0.0.1:<port>/busi.Busi/<handler>`).
    pub fn url(&self, handler: &str) -> String {
        format!("{}/busi.Busi/{handler}", self.state.base())
    }

    recording_api!(GrpcCall);

    /// Every call recorded whose metadata did not give a transaction info.
    pub fn bad_calls(&self) -> Vec<GrpcCall> {
        self.state.lock().calls_where(|c| c.info.is_none())
    }

    async fn handle(
        &self,
        handler: &'static str,
        request: Request<ReqGrpc>,
    ) -> Result<Response<BusiReply>, Status> {
        let info = dtmgrpc::trans_info(&request);
        let metadata = metadata_map(request.metadata());
        let md = request.metadata().clone();
        let req = request.into_inner();
        let gid = info.as_ref().map(|i| i.gid.clone()).unwrap_or_default();
        let outcome = match &info {
            Ok(_) => self
                .state
                .decide(&gid, handler, &req.trans_out_result, &req.trans_in_result),
            Err(_) => Outcome::Error,
        };
        tracing::info!(handler, gid, ?outcome, "grpc busi called");
        self.state.lock().record(
            &gid,
            handler,
            GrpcCall {
                handler: handler.to_string(),
                info: info.as_ref().ok().cloned(),
                info_error: info.as_ref().err().map(ToString::to_string),
                metadata,
                req: req.clone(),
                outcome: outcome.clone(),
            },
        );
        let info = info.into_status()?;
        let mut result = outcome.answer(handler).await;
        if result.is_ok() {
            result = match handler {
                "TransInTccNested" => self.nested_tcc(&md, &req).await,
                "TransOutXa" | "TransInXa" if info.op == Op::Action => {
                    self.register_xa(&info).await
                }
                _ => Ok(()),
            };
        }
        result.into_status()?;
        Ok(Response::new(BusiReply {
            message: format!("{handler} done"),
        }))
    }

    /// A try that opens sub-branch `<branch>01` of the same global TCC.
    async fn nested_tcc(&self, md: &MetadataMap, req: &ReqGrpc) -> dtmcli::Result<()> {
        let tcc = Tcc::from_metadata(&self.client, md)?;
        let _: BusiReply = tcc
            .call_branch(
                req,
                &self.url("TransInTry"),
                &self.url("TransInConfirm"),
                &self.url("TransInCancel"),
            )
            .await?;
        Ok(())
    }

    /// The XA stub: registers the branch with DTM over gRPC so that DTM calls phase 2 on it.
    async fn register_xa(&self, info: &TransInfo) -> dtmcli::Result<()> {
        let (dtm, url) = xa_registration(info)?;
        let client = self.client.with_server(dtm)?;
        client
            .register_branch(&dtmgrpc::pb::dtmgimp::DtmBranchRequest {
                gid: info.gid.clone(),
                trans_type: "xa".into(),
                branch_id: info.branch_id.clone(),
                data: [("url".to_string(), url.to_string())].into_iter().collect(),
                ..Default::default()
            })
            .await
    }
}

/// Implements the tonic service trait `$trait` for `$ty`: every method hands its request,
/// with the method's name, to `$handle`. The methods every service of `busi.proto` has are
/// listed here, after which each service names its own.
macro_rules! grpc_methods {
    (@impl $trait:path, $ty:ty, $reply:ty, $handle:path, $($method:ident => $name:literal),*) => {
        #[tonic::async_trait]
        impl $trait for $ty {
            $(
                async fn $method(
                    &self,
                    request: Request<ReqGrpc>,
                ) -> Result<Response<$reply>, Status> {
                    $handle(self, $name, request).await
                }
            )*
        }
    };
    ($trait:path, $ty:ty, $reply:ty, $handle:path, $($method:ident => $name:literal),* $(,)?) => {
        grpc_methods!(@impl $trait, $ty, $reply, $handle,
            trans_out => "TransOut",
            trans_in => "TransIn",
            trans_out_try => "TransOutTry",
            trans_out_confirm => "TransOutConfirm",
            trans_out_cancel => "TransOutCancel",
            trans_in_try => "TransInTry",
            trans_in_confirm => "TransInConfirm",
            trans_in_cancel => "TransInCancel",
            trans_out_xa => "TransOutXa",
            trans_in_xa => "TransInXa",
            query_prepared => "QueryPrepared",
            $($method => $name),*
        );
    };
}

grpc_methods! {
    BusiService, GrpcBusi, BusiReply, GrpcBusi::handle,
    trans_out_revert => "TransOutRevert",
    trans_in_revert => "TransInRevert",
    trans_in_tcc_nested => "TransInTccNested",
}

// ---------------------------------------------------------------------------------------
// The barrier-guarded bank over gRPC.

struct BankInner {
    bank: Bank,
    xa_mysql: XaLocal<MySql, DtmGrpcClient>,
    xa_pg: XaLocal<Postgres, DtmGrpcClient>,
}

/// The barrier-guarded bank as the gRPC services `busi.BankMysql` and `busi.BankPostgres`
/// (cheap to clone). Every handler builds its barrier from the call's metadata
/// ([`dtmgrpc::trans_info_from_metadata`]); `TransOutXa`/`TransInXa` are XA branches
/// ([`XaLocal`] registering over gRPC). A debit below zero answers FAILURE; `TransOutResult` /
/// `TransInResult` = `FAILURE` make the action/try fail after its write.
#[derive(Clone)]
pub struct GrpcBank(Arc<BankInner>);

impl std::fmt::Debug for GrpcBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcBank").finish_non_exhaustive()
    }
}

impl GrpcBank {
    /// The gRPC bank on `bank`'s databases (see [`Bank::connect`]), registering XA branches
    /// through `client`.
    pub fn new(bank: Bank, client: DtmGrpcClient) -> Result<GrpcBank, crate::bank::BankError> {
        let xa_mysql = XaLocal::new(crate::bank::mysql_url().parse()?, client.clone());
        let xa_pg = XaLocal::new(crate::bank::pg_url().parse()?, client);
        Ok(GrpcBank(Arc::new(BankInner {
            bank,
            xa_mysql,
            xa_pg,
        })))
    }

    /// The underlying bank (pools, accounts, balances, barrier rows).
    pub fn bank(&self) -> &Bank {
        &self.0.bank
    }

    /// How often the business of `handler` actually ran (committed or not) for `gid`
    /// (counted by the underlying [`Bank`]).
    pub fn executed(&self, gid: &str, handler: &str) -> usize {
        self.0.bank.executed(gid, handler)
    }

    /// Serves both services on 127.0.0.1 (port 0: a free one); returns `127.0.0.1:<port>`.
    pub async fn serve(&self, port: u16) -> std::io::Result<String> {
        let (listener, addr) = bind(port).await?;
        let routes = Routes::new(BankMysqlServer::new(self.clone()))
            .add_service(BankPostgresServer::new(self.clone()));
        spawn_grpc(listener, routes, "grpc bank server");
        Ok(addr.to_string())
    }

    /// The branch URL of a bank method served at `base` (`<base>/busi.BankMysql/<handler>`).
    pub fn url(base: &str, db: Db, handler: &str) -> String {
        let service = match db {
            Db::Mysql => "BankMysql",
            Db::Postgres => "BankPostgres",
        };
        format!("{base}/busi.{service}/{handler}")
    }

    async fn handle<DB: GrpcBankDb>(
        &self,
        handler: &'static str,
        request: Request<ReqGrpc>,
    ) -> Result<Response<()>, Status> {
        self.run::<DB>(handler, request)
            .await
            .into_status()
            .map(Response::new)
    }

    async fn run<DB: GrpcBankDb>(
        &self,
        handler: &'static str,
        request: Request<ReqGrpc>,
    ) -> dtmcli::Result<()> {
        let bb =
            dtm_barrier::BranchBarrier::new(dtmgrpc::trans_info_from_metadata(request.metadata())?);
        let info = bb.info().clone();
        let req = BankReq::from(request.into_inner());
        let pool = DB::pool(&self.0.bank);
        if handler == "QueryPrepared" {
            return bb.query_prepared(pool).await.map_err(Into::into);
        }
        let Leg { user, delta, fail } = req.leg(handler)?;
        let gid = info.gid.clone();
        let business = guarded::<DB>(self.0.bank.clone(), gid, handler.into(), user, delta, fail);
        if handler.ends_with("Xa") {
            DB::xa(self).handle(&info, business).await?;
            return Ok(());
        }
        let out: BOutcome<()> = bb.call(pool, business).await?;
        tracing::debug!(handler, ?out, "grpc bank call");
        Ok(())
    }
}

/// The bank's resources per database (its SQL is the HTTP bank's [`BankDb`]).
trait GrpcBankDb: BankDb {
    fn pool(bank: &Bank) -> &Pool<Self>;
    fn xa(bank: &GrpcBank) -> &XaLocal<Self, DtmGrpcClient>;
}

impl GrpcBankDb for MySql {
    fn pool(bank: &Bank) -> &Pool<Self> {
        bank.mysql()
    }
    fn xa(bank: &GrpcBank) -> &XaLocal<Self, DtmGrpcClient> {
        &bank.0.xa_mysql
    }
}

impl GrpcBankDb for Postgres {
    fn pool(bank: &Bank) -> &Pool<Self> {
        bank.pg()
    }
    fn xa(bank: &GrpcBank) -> &XaLocal<Self, DtmGrpcClient> {
        &bank.0.xa_pg
    }
}

/// The bank's service on one database.
macro_rules! bank_service {
    ($trait:ident, $db:ty) => {
        grpc_methods! {
            $trait, GrpcBank, (), GrpcBank::handle::<$db>,
            trans_out_compensate => "TransOutCompensate",
            trans_in_compensate => "TransInCompensate",
        }
    };
}

bank_service!(BankMysql, MySql);
bank_service!(BankPostgres, Postgres);
