//! Workflow over gRPC mixing a local step, an HTTP call and gRPC calls: DTM is reached over
//! gRPC, resumes the workflow through `workflow.Workflow/Execute`, and every step's result
//! is recorded. The second run's gRPC credit fails, so the HTTP debit is compensated.

use dtm_examples::busi::{fails_if, BusiReq};
use dtm_examples::grpc_busi::pb::busi_client::BusiClient;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_examples::grpc_busi::GrpcDemo;
use dtm_workflow::{send_http, Wf, WorkflowGrpc, WorkflowLayer, WorkflowMiddleware, Workflows};
use prost::Message;
use reqwest::Method;
use tonic::transport::Channel;
use tower_layer::Layer;

type Client = BusiClient<WorkflowGrpc<Channel>>;

#[tokio::main]
async fn main() -> Result<(), dtm_examples::demo::DemoError> {
    let g = GrpcDemo::start().await?;
    let base = g.demo.base.clone();
    let busi_addr = g
        .busi
        .url("x")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{busi_addr}"))?.connect_lazy();
    let client: Client = BusiClient::new(WorkflowLayer.layer(channel));
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(WorkflowMiddleware)
        .build();

    // This service's gRPC server, where DTM resumes workflows.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let wfs = Workflows::grpc(g.dtm.clone(), &listener.local_addr()?.to_string());
    let svc = wfs.grpc_service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });

    wfs.register("mixed", move |wf: Wf, input: Vec<u8>| {
        let (mut c, http, base) = (client.clone(), http.clone(), base.clone());
        async move {
            let req = ReqGrpc::decode(input.as_slice()).map_err(dtmcli::Error::other)?;
            wf.new_branch()?;
            wf.do_(|info| async move {
                println!(
                    "   local step runs for branch {} op {}",
                    info.branch_id, info.op
                );
                Ok(Vec::new())
            })
            .await?;

            wf.new_branch()?;
            let body =
                serde_json::to_vec(&BusiReq::new(req.amount)).map_err(dtmcli::Error::other)?;
            let (wf2, h2, url, b2) = (
                wf.clone(),
                http.clone(),
                format!("{base}/TransOutRevert"),
                body.clone(),
            );
            wf.on_rollback(move |_| async move {
                let undo = wf2
                    .http(&h2, Method::POST, &url)
                    .header("content-type", "application/json")
                    .body(b2);
                send_http(undo).await.map(drop)
            })?;
            send_http(
                wf.http(&http, Method::POST, &format!("{base}/TransOut"))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await?;

            wf.new_branch()?;
            c.trans_in(wf.grpc_request(req))
                .await
                .map_err(|s| dtmgrpc::status_to_error("TransIn", &s))?;
            Ok(())
        }
    })?;

    for fail in [false, true] {
        let gid = g.dtm.new_gid().await?;
        let req = ReqGrpc {
            amount: 30,
            trans_in_result: fails_if(fail),
            ..Default::default()
        };
        println!(
            "== gRPC workflow {gid}{}",
            if fail { " (the gRPC credit fails)" } else { "" }
        );
        let r = wfs.execute("mixed", &gid, &req.encode_to_vec()).await;
        println!("   execute returned {r:?}");
        let q = g.demo.finish(&gid).await?;
        println!("   HTTP calls: {:?}", g.demo.busi.handlers(&gid));
        println!("   gRPC calls: {:?}", g.busi.handlers(&gid));
        println!(
            "   final status {}\n",
            q.transaction.map(|t| t.status).unwrap_or_default()
        );
    }
    Ok(())
}
