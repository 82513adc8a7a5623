//! XA over HTTP with real local XA transactions: the bank's `TransOutXa` / `TransInXa`
//! branches run phase 1 in an XA transaction on MariaDB (and on PostgreSQL), register with
//! DTM and prepare; DTM then commits both, or rolls both back when one fails.
//! Needs the databases of `scripts/start-dbs.sh`.

use dtm_examples::bank::{Bank, BankReq, Db};
use dtm_examples::busi::fails_if;
use dtm_examples::demo::{Demo, DemoError};
use dtmcli::TransOptions;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let bank = Bank::connect(d.dtm.clone()).await?;
    let base = bank.serve(0).await?;
    for db in [Db::Mysql, Db::Postgres] {
        let (a, b) = (9_000_001, 9_000_002);
        bank.open_account(db, a, 100).await?;
        bank.open_account(db, b, 0).await?;
        let url = |h: &str| format!("{base}/{}/{h}", db.as_str());
        for fail in [false, true] {
            let gid = d.dtm.new_gid().await?;
            let req = BankReq {
                amount: 30,
                from: a,
                to: b,
                trans_in_result: fails_if(fail),
                ..Default::default()
            };
            println!(
                "== xa {gid} on {}: move 30 from {a} to {b}{}",
                db.as_str(),
                if fail { ", the credit fails" } else { "" }
            );
            let (out, inn) = (url("TransOutXa"), url("TransInXa"));
            let res = d
                .dtm
                .xa_global_transaction(&gid, TransOptions::default(), |xa| async move {
                    xa.call_branch(&req, &out).await?;
                    xa.call_branch(&req, &inn).await?;
                    Ok(())
                })
                .await;
            println!("   global transaction returned: {res:?}");
            let q = d.finish(&gid).await?;
            for b in &q.branches {
                println!("   branch {} {:<8} {}", b.branch_id, b.op, b.status);
            }
            // DTM reports a final status only after phase 2 ran on every branch.
            println!(
                "   final status {}; balances: {a} = {}, {b} = {}\n",
                q.transaction.map(|t| t.status).unwrap_or_default(),
                bank.balance(db, a).await?,
                bank.balance(db, b).await?
            );
        }
    }
    Ok(())
}
