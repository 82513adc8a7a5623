//! JSON-RPC, the third transport, against the real DTM server. Saga, msg and TCC over
//! `JsonRpcClient` (DTM calling JSON-RPC branches, answered with `dtmcli::jsonrpc::answer`)
//! are scenarios of `transport_suite::jsonrpc`; here is what JSON-RPC has of its own: DTM's
//! answers to malformed requests, and XA branches on MariaDB registering over JSON-RPC.

use crate::support::*;
use axum::body::Bytes;
use dtmcli::{DtmClient, Error, JsonRpcClient, TransOptions};
use serde_json::{json, Value};

fn rpc() -> JsonRpcClient {
    JsonRpcClient::new(
        env()
            .server
            .http_url()
            .replace("/api/dtmsvr", "/api/json-rpc"),
    )
    .unwrap()
}

/// What DTM answers to malformed JSON-RPC, and what the client makes of bad input.
#[tokio::test]
async fn malformed_requests() {
    let endpoint = rpc().server().to_string();
    // (status, error code): DTM v1.19.0 answers a parse error with HTTP 400, the rest 200.
    let post = |body: &'static str| {
        let endpoint = endpoint.clone();
        async move {
            let r = reqwest::Client::new()
                .post(&endpoint)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let code = r.json::<Value>().await.unwrap()["error"]["code"].clone();
            (status, code)
        }
    };
    assert_eq!(post("{").await, (400, json!(-32700)));
    let bad_version = r#"{"jsonrpc":"1.0","id":"1","method":"newGid"}"#;
    assert_eq!(post(bad_version).await, (200, json!(-32600)));
    let no_id = r#"{"jsonrpc":"2.0","id":"","method":"newGid"}"#;
    assert_eq!(post(no_id).await, (200, json!(-32600)));
    let unknown = r#"{"jsonrpc":"2.0","id":"1","method":"nope"}"#;
    assert_eq!(post(unknown).await, (200, json!(-32601)));
    let bad_params = r#"{"jsonrpc":"2.0","id":"1","method":"submit","params":"x"}"#;
    assert_eq!(post(bad_params).await, (200, json!(-32603)));
    // A well-formed call works, and the client's own checks run before anything is sent.
    assert!(!rpc().new_gid().await.unwrap().is_empty());
    let e = rpc().saga("").submit().await.unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    // Not DTM's JSON-RPC endpoint: its answer is not taken for a success.
    let wrong = JsonRpcClient::from_client(DtmClient::new(url("")).unwrap());
    let e = wrong
        .saga(gid("jrpc-wrong"))
        .add(&url("TransIn"), "", &json!({}))
        .submit()
        .await
        .unwrap_err();
    assert!(!e.is_failure(), "{e:?}");
    // Workflows need prepareWorkflow, which DTM does not serve over JSON-RPC.
    use dtmcli::Transport;
    let e = rpc()
        .prepare_workflow_progress(&dtmcli::TransRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
}

/// XA over JSON-RPC: the global side (`Xa::run` over `JsonRpcClient`) and real XA branches on
/// MariaDB whose `XaLocal` registers over JSON-RPC (`XaLocal<MySql, JsonRpcClient>`). DTM
/// calls phase 2 on the same URL (plain HTTP: it names no `method`).
#[tokio::test]
async fn xa_commits_and_rolls_back_on_mariadb() {
    use axum::extract::RawQuery;
    use axum::response::IntoResponse;
    use dtm_barrier::xa::XaLocal;
    use dtmcli::{TransInfo, Xa};
    use sqlx::MySql;

    let mysql = dtm_examples::bank::mysql_url();
    let pool = sqlx::MySqlPool::connect(&mysql).await.unwrap();
    dtm_barrier::sql::create_barrier_table(&pool, &dtm_barrier::BarrierConfig::default().table)
        .await
        .unwrap();
    sqlx::query("create database if not exists dtm_busi")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "create table if not exists dtm_busi.jrpc_xa (gid varchar(128) not null, branch_id varchar(32) not null, amount int not null, primary key (gid, branch_id))",
    )
    .execute(&pool)
    .await
    .unwrap();

    let xa: XaLocal<MySql, JsonRpcClient> = XaLocal::new(mysql.parse().unwrap(), rpc());
    let app = axum::Router::new().route(
        "/xa",
        axum::routing::post(move |RawQuery(q): RawQuery, body: Bytes| {
            let xa = xa.clone();
            async move {
                let result = async {
                    let info = TransInfo::from_query(q.as_deref().unwrap_or(""))?;
                    let body: Value = if body.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&body).map_err(Error::invalid)?
                    };
                    let amount = body["amount"].as_i64().unwrap_or(0);
                    let fail = body["fail"] == Value::Bool(true);
                    let (gid, branch) = (info.gid.clone(), info.branch_id.clone());
                    xa.handle(&info, move |conn| {
                        Box::pin(async move {
                            sqlx::query(
                                "insert into dtm_busi.jrpc_xa (gid, branch_id, amount) values (?, ?, ?)",
                            )
                            .bind(gid)
                            .bind(branch)
                            .bind(amount)
                            .execute(&mut *conn)
                            .await?;
                            if fail {
                                return Err(dtm_barrier::Error::failure("refused"));
                            }
                            Ok(())
                        })
                    })
                    .await
                    .map_err(Error::from)
                }
                .await;
                match result {
                    Ok(_) => axum::Json(json!({"dtm_result": "SUCCESS"})).into_response(),
                    Err(e) => e.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xa_url = format!("http://{}/xa", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let rows = |gid: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select branch_id from dtm_busi.jrpc_xa where gid = ? order by branch_id",
            )
            .bind(gid)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let dtm = dtm();

    let g = gid("jrpc-xa");
    let u = xa_url.clone();
    Xa::run(&rpc(), &g, TransOptions::default(), |xa| async move {
        xa.call_branch(&json!({"amount": 5}), &u).await?;
        xa.call_branch(&json!({"amount": 6}), &u).await?;
        Ok(())
    })
    .await
    .unwrap();
    let q = wait_status(&dtm, &g, "succeed").await;
    assert_eq!(q.transaction.unwrap().protocol, "json-rpc");
    // Committed by phase 2, so visible from another session.
    assert_eq!(rows(g.clone()).await, ["01", "02"]);

    let g = gid("jrpc-xa-rb");
    let u = xa_url.clone();
    let r = Xa::run(&rpc(), &g, TransOptions::default(), |xa| async move {
        xa.call_branch(&json!({"amount": 5}), &u).await?;
        xa.call_branch(&json!({"amount": 6, "fail": true}), &u)
            .await?;
        Ok(())
    })
    .await;
    assert!(r.unwrap_err().is_failure());
    let q = wait_status(&dtm, &g, "failed").await;
    assert!(rows(g.clone()).await.is_empty(), "rolled back");
    // Rolled back by DTM's phase 2, not left prepared: no xid of this gid remains.
    assert!(
        q.branches
            .iter()
            .any(|b| b.branch_id == "01" && b.op == "rollback" && b.status == "succeed"),
        "{:?}",
        q.branches
    );
    let mut conn = pool.acquire().await.unwrap();
    let prepared: Vec<String> = sqlx::query("xa recover")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let data: Vec<u8> = sqlx::Row::get(r, "data");
            String::from_utf8_lossy(&data).into_owned()
        })
        .collect();
    assert!(!prepared.iter().any(|x| x.starts_with(&g)), "{prepared:?}");
    server.abort();
}
