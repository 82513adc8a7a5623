//! What the scenarios share: one real DTM server and the example services, each started the
//! first time a scenario needs it, and the checks that make a scenario fail loudly.

use std::fmt::Display;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use dtm_barrier::redis::RedisStore;
use dtmcli::{DtmClient, QueryResult};
use dtmgrpc::DtmGrpcClient;
use redis::aio::MultiplexedConnection;
use tokio::sync::OnceCell;

use crate::bank::{Bank, Db};
use crate::busi::Busi;
use crate::demo::{Demo, DemoError};
use crate::grpc_busi::{GrpcBank, GrpcBusi};
use crate::kv_bank::{Balances, KvBank};

/// How long barrier keys live in Redis: longer than any transaction.
const REDIS_BARRIER_TTL: Duration = Duration::from_secs(7 * 86400);

/// The environment every scenario runs in. Dropping it stops the DTM server.
#[derive(Debug)]
pub struct Env {
    /// DTM (HTTP client) and the in-memory HTTP business service `Busi`.
    pub demo: Demo,
    grpc: OnceCell<(DtmGrpcClient, GrpcBusi)>,
    bank: OnceCell<(Bank, String)>,
    grpc_bank: OnceCell<String>,
    redis: OnceCell<KvBank<RedisStore<MultiplexedConnection>>>,
    mongo: OnceCell<KvBank<mongodb::Client>>,
    next_account: AtomicI64,
    http_workflows: OnceCell<dtm_workflow::Workflows>,
    grpc_workflows: OnceCell<dtm_workflow::Workflows>,
}

impl Env {
    /// Starts DTM and the in-memory HTTP service; everything else starts on first use.
    pub async fn start() -> Result<Env, DemoError> {
        let demo = Demo::start().await?;
        // Account ids of this run: distinct from other runs' and from the tests' ids.
        let base = 7_000_000 + i64::from(std::process::id() % 1000) * 1000;
        Ok(Env {
            demo,
            grpc: OnceCell::new(),
            bank: OnceCell::new(),
            grpc_bank: OnceCell::new(),
            redis: OnceCell::new(),
            mongo: OnceCell::new(),
            next_account: AtomicI64::new(base),
            http_workflows: OnceCell::new(),
            grpc_workflows: OnceCell::new(),
        })
    }

    /// The HTTP client of DTM.
    pub fn dtm(&self) -> &DtmClient {
        &self.demo.dtm
    }

    /// The in-memory HTTP business service.
    pub fn busi(&self) -> &Busi {
        &self.demo.busi
    }

    /// The URL of an in-memory HTTP handler (`TransOut`...).
    pub fn url(&self, handler: &str) -> String {
        self.demo.url(handler)
    }

    /// The gRPC client of DTM and the in-memory gRPC service `busi.Busi`.
    pub async fn grpc(&self) -> Result<&(DtmGrpcClient, GrpcBusi), DemoError> {
        self.grpc
            .get_or_try_init(|| async {
                // DTM's HTTP API reads what DTM stored, so outcomes are definite.
                let dtm = DtmGrpcClient::builder(self.demo.server.grpc_addr())
                    .http_api(self.demo.server.http_url())
                    .build()?;
                let busi = GrpcBusi::new(dtm.clone());
                busi.serve(0).await?;
                Ok::<_, DemoError>((dtm, busi))
            })
            .await
    }

    /// The barrier-guarded bank on MariaDB and PostgreSQL, and its HTTP base URL.
    pub async fn bank(&self) -> Result<&(Bank, String), DemoError> {
        self.bank
            .get_or_try_init(|| async {
                let bank = Bank::connect(self.demo.dtm.clone()).await?;
                let base = bank.serve(0).await?;
                Ok::<_, DemoError>((bank, base))
            })
            .await
    }

    /// The URL of a bank handler over HTTP on `db`.
    pub async fn bank_url(&self, db: Db, handler: &str) -> Result<String, DemoError> {
        Ok(format!(
            "{}/{}/{handler}",
            self.bank().await?.1,
            db.as_str()
        ))
    }

    /// The address of the gRPC bank (services `busi.BankMysql`, `busi.BankPostgres`).
    pub async fn grpc_bank(&self) -> Result<&str, DemoError> {
        let addr = self
            .grpc_bank
            .get_or_try_init(|| async {
                let (dtm, _) = self.grpc().await?;
                let (bank, _) = self.bank().await?;
                let grpc = GrpcBank::new(bank.clone(), dtm.clone())?;
                Ok::<_, DemoError>(grpc.serve(0).await?)
            })
            .await?;
        Ok(addr)
    }

    /// Balances in Redis, moved by guarded branches (`check_adjust_amount`).
    pub async fn redis(&self) -> Result<&KvBank<RedisStore<MultiplexedConnection>>, DemoError> {
        self.redis
            .get_or_try_init(|| async {
                let url =
                    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                let conn = redis::Client::open(url.as_str())?
                    .get_multiplexed_async_connection()
                    .await?;
                KvBank::serve(RedisStore::new(conn, REDIS_BARRIER_TTL)).await
            })
            .await
    }

    /// Balances in MongoDB, moved by guarded branches (one transaction each).
    pub async fn mongo(&self) -> Result<&KvBank<mongodb::Client>, DemoError> {
        self.mongo
            .get_or_try_init(|| async {
                let url = std::env::var("MONGO_URL")
                    .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into());
                KvBank::serve(mongodb::Client::with_uri_str(&url).await?).await
            })
            .await
    }

    /// The HTTP workflow registry of the scenarios (see `http_workflow`).
    pub async fn http_workflows(&self) -> Result<&dtm_workflow::Workflows, DemoError> {
        self.http_workflows
            .get_or_try_init(|| super::http_workflow::registry(self))
            .await
    }

    /// The gRPC workflow registry of the scenarios (see `grpc_workflow`).
    pub async fn grpc_workflows(&self) -> Result<&dtm_workflow::Workflows, DemoError> {
        self.grpc_workflows
            .get_or_try_init(|| super::grpc_workflow::registry(self))
            .await
    }

    /// Runs workflow `name` of `wfs` (`label` names the registry in the story) with `input`
    /// as a new gid; checks that `execute` succeeded when `ok` (failed otherwise) and DTM's
    /// final status; returns the gid.
    pub async fn run_workflow(
        &self,
        wfs: &dtm_workflow::Workflows,
        label: &str,
        name: &str,
        input: &[u8],
        ok: bool,
    ) -> Result<String, DemoError> {
        let gid = self.dtm().new_gid().await?;
        let r = wfs.execute(name, &gid, input).await;
        println!("   {label} {name} {gid}: execute returned {r:?}");
        expect(r.is_ok() == ok, "unexpected workflow outcome")?;
        self.expect_final(&gid, final_status(ok)).await?;
        Ok(gid)
    }

    /// Two fresh SQL accounts on `db` holding `from_balance` and 0.
    pub async fn accounts(&self, db: Db, from_balance: i64) -> Result<(i64, i64), DemoError> {
        let a = self.next_account.fetch_add(2, Ordering::Relaxed);
        let bank = &self.bank().await?.0;
        bank.open_account(db, a, from_balance).await?;
        bank.open_account(db, a + 1, 0).await?;
        Ok((a, a + 1))
    }

    /// The balances of SQL accounts.
    pub async fn balances(&self, db: Db, accounts: &[i64]) -> Result<Vec<i64>, DemoError> {
        let bank = &self.bank().await?.0;
        let mut out = Vec::with_capacity(accounts.len());
        for a in accounts {
            out.push(bank.balance(db, *a).await?);
        }
        Ok(out)
    }

    /// Checks that the balances of `accounts` are `want`, and prints them.
    pub async fn expect_balances(
        &self,
        db: Db,
        accounts: &[i64],
        want: &[i64],
    ) -> Result<(), DemoError> {
        let got = self.balances(db, accounts).await?;
        println!("   balances on {}: {accounts:?} = {got:?}", db.as_str());
        expect_eq("balances", &got, &want.to_vec())
    }

    /// Checks a transfer of 30 from `a` (opened with 100) to `b` on `db`: moved, or (when it
    /// rolled back) not moved at all.
    pub async fn expect_moved(&self, db: Db, a: i64, b: i64, moved: bool) -> Result<(), DemoError> {
        let want = if moved { [70, 30] } else { [100, 0] };
        self.expect_balances(db, &[a, b], &want).await
    }

    /// Two fresh accounts across databases: `a` on MariaDB holding 100, `b` on PostgreSQL
    /// holding 0.
    pub async fn accounts_across(&self) -> Result<(i64, i64), DemoError> {
        let (a, _) = self.accounts(Db::Mysql, 100).await?;
        let (_, b) = self.accounts(Db::Postgres, 0).await?;
        Ok((a, b))
    }

    /// [`Env::expect_moved`] for [`Env::accounts_across`].
    pub async fn expect_moved_across(&self, a: i64, b: i64, moved: bool) -> Result<(), DemoError> {
        let (ma, pb) = if moved { (70, 30) } else { (100, 0) };
        self.expect_balances(Db::Mysql, &[a], &[ma]).await?;
        self.expect_balances(Db::Postgres, &[b], &[pb]).await
    }

    /// Checks two submits made with `wait_result`: `ok_gid`'s returned Ok, so DTM must
    /// already say `succeed` (no polling); `failed`'s must have returned `Error::Failure`.
    pub async fn expect_waited(
        &self,
        ok_gid: &str,
        failed_gid: &str,
        failed: dtmcli::Result<()>,
    ) -> Result<(), DemoError> {
        let status = self.status_now(ok_gid).await?;
        println!("   submit returned Ok; DTM says {status} at once");
        expect_eq("status right after submit", &status.as_str(), &"succeed")?;
        expect_failure("the failing saga's submit", &failed)?;
        self.expect_final(failed_gid, "failed").await.map(drop)
    }

    /// Waits (up to 30 s) for `gid`'s final status, prints DTM's branches and the status,
    /// and checks the status is `want` (`succeed` or `failed`).
    pub async fn expect_final(&self, gid: &str, want: &str) -> Result<QueryResult, DemoError> {
        let q = self.demo.finish(gid).await?;
        let branches: Vec<String> = q
            .branches
            .iter()
            .map(|b| format!("{}/{}={}", b.branch_id, b.op, b.status))
            .collect();
        let status = q
            .transaction
            .as_ref()
            .map(|t| t.status.clone())
            .unwrap_or_default();
        println!("   DTM: status {status}, branches {}", branches.join(" "));
        expect_eq(&format!("final status of {gid}"), &status.as_str(), &want)?;
        Ok(q)
    }

    /// DTM's status of `gid` now, without waiting ("" when DTM does not know it).
    pub async fn status_now(&self, gid: &str) -> Result<String, DemoError> {
        let q = self.dtm().query(gid).await?;
        Ok(q.transaction.map(|t| t.status).unwrap_or_default())
    }

    /// Checks which handlers of the in-memory HTTP service ran for `gid`, in order.
    pub fn expect_http_calls(&self, gid: &str, want: &[&str]) -> Result<(), DemoError> {
        let got = self.busi().handlers(gid);
        println!("   HTTP calls: {}", got.join(", "));
        expect_eq("HTTP calls", &got, &strings(want))
    }

    /// Checks which handlers of the in-memory gRPC service ran for `gid`, in order.
    pub async fn expect_grpc_calls(&self, gid: &str, want: &[&str]) -> Result<(), DemoError> {
        let got = self.grpc().await?.1.handlers(gid);
        println!("   gRPC calls: {}", got.join(", "));
        expect_eq("gRPC calls", &got, &strings(want))
    }
}

/// Checks the calls of a two-branch TCC-style workflow: both tries in order, then either
/// both confirms (in any order: DTM's second phase) or cancels and no confirm.
pub fn expect_tcc_calls(
    protocol: &str,
    calls: &[String],
    confirmed: bool,
) -> Result<(), DemoError> {
    println!("   {protocol} calls: {}", calls.join(", "));
    let tries = calls.get(..2) == Some(&["TransOutTry".to_string(), "TransInTry".to_string()][..]);
    let rest = calls.get(2..).unwrap_or_default();
    let second = if confirmed {
        rest.len() == 2 && rest.iter().all(|c| c.ends_with("Confirm"))
    } else {
        !rest.is_empty() && rest.iter().all(|c| c.ends_with("Cancel"))
    };
    expect(
        tries && second,
        if confirmed {
            "expected both tries, then both confirms"
        } else {
            "expected both tries, then cancels and no confirm"
        },
    )
}

/// Checks that `calls` branch calls arrived, each carrying the custom header
/// `test_header: test` (`calls_seen`: each call's handler and header value), and prints
/// them; `carrier` names where the header travels (HTTP header, gRPC metadata).
pub fn expect_test_header<'a>(
    calls_seen: impl IntoIterator<Item = (&'a str, Option<&'a String>)>,
    calls: usize,
    carrier: &str,
) -> Result<(), DemoError> {
    let seen: Vec<String> = calls_seen
        .into_iter()
        .map(|(handler, v)| format!("{handler}:test_header={}", v.map_or("", String::as_str)))
        .collect();
    println!("   {}", seen.join(" "));
    expect(
        seen.len() == calls && seen.iter().all(|s| s.ends_with("=test")),
        format!("a branch call arrived without the custom {carrier}"),
    )
}

/// Checks that `call` (named for the story) returned `Error::Failure`, as a transaction
/// that a branch refused must; prints what it returned.
pub fn expect_failure<T: std::fmt::Debug>(
    call: &str,
    res: &dtmcli::Result<T>,
) -> Result<(), DemoError> {
    println!("   {call} returned {res:?}");
    expect(
        matches!(res, Err(dtmcli::Error::Failure(_))),
        format!("{call} must return Error::Failure after a refused branch"),
    )
}

/// DTM's final status of a transaction that should (`ok`) or should not have committed.
pub fn final_status(ok: bool) -> &'static str {
    if ok {
        "succeed"
    } else {
        "failed"
    }
}

/// A KV account pair of `store` named after `gid`, opened with `from_balance` and 0.
pub async fn kv_accounts<S: Balances>(
    store: &KvBank<S>,
    gid: &str,
    from_balance: i64,
) -> Result<(String, String), DemoError> {
    let (a, b) = (format!("acct-{gid}-from"), format!("acct-{gid}-to"));
    store.store().open(&a, from_balance).await?;
    store.store().open(&b, 0).await?;
    Ok((a, b))
}

/// Checks the balances of KV accounts, and prints them.
pub async fn expect_kv<S: Balances>(
    store: &KvBank<S>,
    accounts: &[&str],
    want: &[i64],
) -> Result<(), DemoError> {
    let mut got = Vec::with_capacity(accounts.len());
    for a in accounts {
        got.push(store.store().balance(a).await?.unwrap_or(i64::MIN));
    }
    println!("   balances in {}: {got:?}", S::NAME);
    expect_eq(&format!("{} balances", S::NAME), &got, &want.to_vec())
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// An error unless `got == want`.
pub fn expect_eq<T: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &T,
    want: &T,
) -> Result<(), DemoError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, expected {want:?}").into())
    }
}

/// An error saying `what` unless `ok`.
pub fn expect(ok: bool, what: impl Display) -> Result<(), DemoError> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string().into())
    }
}
