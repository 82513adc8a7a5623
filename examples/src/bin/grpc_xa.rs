//! XA over gRPC on real databases: the gRPC bank's `TransOutXa` debits an account on
//! MariaDB and `TransInXa` credits one on PostgreSQL, each in a local XA transaction that
//! registers itself with DTM over gRPC; DTM then commits both. A second run fails the
//! credit, and DTM rolls the prepared debit back.
//!
//! Needs MariaDB and PostgreSQL (scripts/start-dbs.sh).

use dtm_examples::bank::{Bank, Db};
use dtm_examples::busi::fails_if;
use dtm_examples::demo::DemoError;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_examples::grpc_busi::{GrpcBank, GrpcDemo};
use dtmcli::TransOptions;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = GrpcDemo::start().await?;
    let bank = GrpcBank::new(Bank::connect(d.demo.dtm.clone()).await?, d.dtm.clone())?;
    let base = bank.serve(0).await?;
    println!("   gRPC bank (busi.BankMysql, busi.BankPostgres) at {base}\n");
    let (from, to) = (9_100_001, 9_100_002);
    bank.bank().open_account(Db::Mysql, from, 100).await?;
    bank.bank().open_account(Db::Postgres, to, 0).await?;
    for (title, fail) in [("xa", false), ("xa whose credit fails", true)] {
        let gid = d.dtm.new_gid().await?;
        println!("== {title} {gid}");
        let req = ReqGrpc {
            amount: 30,
            from_user: from,
            to_user: to,
            trans_in_result: fails_if(fail),
            ..Default::default()
        };
        let (out_url, in_url) = (
            GrpcBank::url(&base, Db::Mysql, "TransOutXa"),
            GrpcBank::url(&base, Db::Postgres, "TransInXa"),
        );
        let result = d
            .dtm
            .xa_global_transaction(&gid, TransOptions::default(), |xa| async move {
                let _: () = xa.call_branch(&req, &out_url).await?;
                let _: () = xa.call_branch(&req, &in_url).await?;
                Ok(())
            })
            .await;
        println!("   xa_global_transaction returned {result:?}");
        let q = d.demo.finish(&gid).await?;
        for b in &q.branches {
            println!(
                "     branch {} {:<8} {:<9} {}",
                b.branch_id, b.op, b.status, b.url
            );
        }
        println!(
            "   final status {}; balances: MariaDB account {} = {}, PostgreSQL account {} = {}\n",
            q.transaction.map(|t| t.status).unwrap_or_default(),
            from,
            bank.bank().balance(Db::Mysql, from).await?,
            to,
            bank.bank().balance(Db::Postgres, to).await?
        );
    }
    Ok(())
}
