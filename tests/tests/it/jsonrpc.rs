//! JSON-RPC, the third transport, against the real DTM server: saga, msg, TCC and XA written once
//! in dtmcli run unchanged over `JsonRpcClient`; DTM calls the branches of such transactions
//! with JSON-RPC envelopes (`?method=` URLs), answered with `dtmcli::jsonrpc::answer`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use axum::body::Bytes;
use dtmcli::jsonrpc::{answer, BranchCall};
use dtmcli::{DtmClient, Error, JsonRpcClient, Tcc, TransOptions};
use serde_json::{json, Value};

/// One JSON-RPC branch service for the whole binary: every call, and scripted answers.
#[derive(Default)]
struct Branches {
    /// (gid, method, op) of every call, in arrival order.
    calls: Vec<(String, String, String)>,
    /// Answers ONGOING this many more times, per (gid, method).
    ongoing: HashMap<(String, String), usize>,
}

type Shared = Arc<Mutex<Branches>>;

async fn handle(state: Shared, body: Bytes) -> axum::Json<Value> {
    let call = match BranchCall::parse(&body) {
        Ok(c) => c,
        Err(e) => return axum::Json(answer(&Value::Null, Err(e))),
    };
    let gid = call.info.gid.clone();
    let mut s = state.lock().unwrap();
    s.calls
        .push((gid.clone(), call.method.clone(), call.info.op.to_string()));
    let fail = call.params.get("fail") == Some(&Value::Bool(true));
    let key = (gid, call.method.clone());
    let result = match s.ongoing.get_mut(&key) {
        Some(n) if *n > 0 => {
            *n -= 1;
            Err(Error::ongoing("not yet"))
        }
        _ if fail && call.method.ends_with("Fail") => Err(Error::failure("refused")),
        _ => Ok(json!({"dtm_result": "SUCCESS"})),
    };
    axum::Json(answer(&call.id, result))
}

struct Service {
    state: Shared,
    base: String,
}

fn service() -> &'static Service {
    static S: std::sync::OnceLock<Service> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let state: Shared = Arc::default();
        let st = state.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/jrpc",
                    axum::routing::post(move |body: Bytes| handle(st.clone(), body)),
                );
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(format!("http://{}/jrpc", l.local_addr().unwrap()))
                    .unwrap();
                axum::serve(l, app).await.unwrap();
            });
        });
        Service {
            state,
            base: rx.recv().unwrap(),
        }
    })
}

fn jurl(method: &str) -> String {
    format!("{}?method={method}", service().base)
}

fn calls(gid: &str) -> Vec<(String, String)> {
    service()
        .state
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| c.0 == gid)
        .map(|c| (c.1.clone(), c.2.clone()))
        .collect()
}

fn rpc() -> JsonRpcClient {
    JsonRpcClient::new(
        env()
            .server
            .http_url()
            .replace("/api/dtmsvr", "/api/json-rpc"),
    )
    .unwrap()
}

async fn wait_calls(gid: &str, n: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = calls(gid);
        if c.len() >= n || Instant::now() > deadline {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn saga_succeeds_and_rolls_back() {
    let dtm = dtm();
    let body = json!({"amount": 30});
    let g = gid("jrpc-saga");
    rpc()
        .saga(&g)
        .add(&jurl("TransOut"), &jurl("TransOutRevert"), &body)
        .add(&jurl("TransIn"), &jurl("TransInRevert"), &body)
        .submit()
        .await
        .unwrap();
    let q = wait_status(&dtm, &g, "succeed").await;
    assert_eq!(q.transaction.unwrap().protocol, "json-rpc");
    assert_eq!(
        calls(&g),
        pairs(&[("TransOut", "action"), ("TransIn", "action")])
    );

    // The second action refuses: both compensations run, in reverse order.
    let g = gid("jrpc-saga-rb");
    let failing = json!({"amount": 30, "fail": true});
    rpc()
        .saga(&g)
        .add(&jurl("TransOut"), &jurl("TransOutRevert"), &body)
        .add(&jurl("TransInFail"), &jurl("TransInRevert"), &failing)
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, &g, "failed").await;
    assert_eq!(
        calls(&g),
        pairs(&[
            ("TransOut", "action"),
            ("TransInFail", "action"),
            ("TransInRevert", "compensate"),
            ("TransOutRevert", "compensate"),
        ])
    );
}

#[tokio::test]
async fn ongoing_branch_is_retried_until_it_answers() {
    let dtm = dtm();
    let g = gid("jrpc-ongoing");
    service()
        .state
        .lock()
        .unwrap()
        .ongoing
        .insert((g.clone(), "TransIn".into()), 2);
    rpc()
        .saga(&g)
        .add(&jurl("TransIn"), "", &json!({"amount": 1}))
        .with_options(TransOptions::default().retry_interval(Duration::from_secs(1)))
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, &g, "succeed").await;
    assert_eq!(calls(&g).len(), 3, "{:?}", calls(&g));
}

#[tokio::test]
async fn msg_and_duplicate_submit_behave_as_over_http() {
    let dtm = dtm();
    let g = gid("jrpc-msg");
    let msg = rpc().msg(&g).add(&jurl("TransIn"), &json!({"amount": 5}));
    msg.prepare(&jurl("QueryPrepared")).await.unwrap();
    msg.submit().await.unwrap();
    wait_status(&dtm, &g, "succeed").await;
    assert_eq!(wait_calls(&g, 1).await, pairs(&[("TransIn", "action")]));

    // Submitting again, and preparing again, answer as they do over HTTP.
    let again = msg.submit().await;
    let prep = msg.prepare(&jurl("QueryPrepared")).await;
    let hg = gid("http-msg");
    let hmsg = dtm.msg(&hg).add(&url("TransIn"), &BusiReq::new(5));
    hmsg.prepare(&url("QueryPrepared")).await.unwrap();
    hmsg.submit().await.unwrap();
    wait_status(&dtm, &hg, "succeed").await;
    let h_again = hmsg.submit().await;
    let h_prep = hmsg.prepare(&url("QueryPrepared")).await;
    let kind = |r: &dtmcli::Result<()>| r.as_ref().err().map(Error::kind);
    assert_eq!(kind(&again), kind(&h_again), "{again:?} / {h_again:?}");
    assert_eq!(kind(&prep), kind(&h_prep), "{prep:?} / {h_prep:?}");
    assert_eq!(calls(&g).len(), 1, "delivered once: {:?}", calls(&g));
}

#[tokio::test]
async fn tcc_confirms_and_cancels() {
    let dtm = dtm();
    let g = gid("jrpc-tcc");
    let body = json!({"amount": 7});
    Tcc::run(&rpc(), &g, TransOptions::default(), |tcc| async move {
        tcc.call_branch(
            &body,
            &jurl("TransOutTry"),
            &jurl("TransOutConfirm"),
            &jurl("TransOutCancel"),
        )
        .await?;
        Ok(())
    })
    .await
    .unwrap();
    wait_status(&dtm, &g, "succeed").await;
    assert_eq!(
        wait_calls(&g, 2).await,
        pairs(&[("TransOutTry", "try"), ("TransOutConfirm", "confirm")])
    );

    let g = gid("jrpc-tcc-rb");
    let failing = json!({"amount": 7, "fail": true});
    let r = Tcc::run(&rpc(), &g, TransOptions::default(), |tcc| async move {
        tcc.call_branch(
            &failing,
            &jurl("TransInTryFail"),
            &jurl("TransInConfirm"),
            &jurl("TransInCancel"),
        )
        .await?;
        Ok(())
    })
    .await;
    assert!(r.unwrap_err().is_failure());
    wait_status(&dtm, &g, "failed").await;
    assert_eq!(
        wait_calls(&g, 2).await,
        pairs(&[("TransInTryFail", "try"), ("TransInCancel", "cancel")])
    );
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
    let wrong = JsonRpcClient::from_client(DtmClient::new(service().base.clone()).unwrap());
    let e = wrong
        .saga(gid("jrpc-wrong"))
        .add(&jurl("TransIn"), "", &json!({}))
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
