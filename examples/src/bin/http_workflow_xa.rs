//! Workflow with XA branches: a debit on MariaDB and a credit on PostgreSQL, each an XA
//! local transaction committed (or rolled back) by the workflow's second phase.

use dtm_barrier::xa::XaLocal;
use dtm_examples::bank::{mysql_url, pg_url, Bank, Db, ACCOUNTS};
use dtm_examples::demo::{Demo, DemoError};
use dtm_workflow::{Wf, Workflows};

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let d = Demo::start().await?;
    let bank = Bank::connect(d.dtm.clone()).await?;
    let (a, b) = (9_100_001_i64, 9_100_002_i64);
    bank.open_account(Db::Mysql, a, 100).await?;
    bank.open_account(Db::Postgres, b, 0).await?;
    let wfs = Workflows::http(d.dtm.clone(), "http://127.0.0.1:1/unused-callback");
    let my: XaLocal<sqlx::MySql, _> = XaLocal::new(mysql_url().parse()?, d.dtm.clone());
    let pg: XaLocal<sqlx::Postgres, _> = XaLocal::new(pg_url().parse()?, d.dtm.clone());
    wfs.register("xa", move |wf: Wf, input: Vec<u8>| {
        let (my, pg) = (my.clone(), pg.clone());
        async move {
            let fail = input == b"fail";
            wf.new_branch()?;
            wf.do_xa(&my, move |c| {
                Box::pin(async move {
                    sqlx::query(&format!(
                        "update {ACCOUNTS} set balance = balance - 30 where user_id = ?"
                    ))
                    .bind(a)
                    .execute(&mut *c)
                    .await?;
                    Ok(Vec::new())
                })
            })
            .await?;
            wf.new_branch()?;
            wf.do_xa(&pg, move |c| {
                Box::pin(async move {
                    sqlx::query(&format!(
                        "update {ACCOUNTS} set balance = balance + 30 where user_id = $1"
                    ))
                    .bind(b)
                    .execute(&mut *c)
                    .await?;
                    if fail {
                        return Err(dtm_barrier::Error::failure("credit refused"));
                    }
                    Ok(Vec::new())
                })
            })
            .await?;
            Ok(())
        }
    })?;
    for input in [&b"ok"[..], b"fail"] {
        let gid = d.dtm.new_gid().await?;
        let r = wfs.execute("xa", &gid, input).await;
        let q = d.finish(&gid).await?;
        println!(
            "== xa workflow {gid} ({}): execute returned {r:?}",
            String::from_utf8_lossy(input)
        );
        for br in &q.branches {
            println!("   branch {} {:<9} {}", br.branch_id, br.op, br.status);
        }
        println!(
            "   status {}; MariaDB {a} = {}, PostgreSQL {b} = {}\n",
            q.transaction.map(|t| t.status).unwrap_or_default(),
            bank.balance(Db::Mysql, a).await?,
            bank.balance(Db::Postgres, b).await?
        );
    }
    Ok(())
}
