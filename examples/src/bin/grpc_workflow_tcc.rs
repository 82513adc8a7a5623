//! Workflow, TCC style, over gRPC: DTM is reached over gRPC, each branch registers its
//! confirm (on_commit) and cancel (on_rollback) and runs its try through the recording
//! tonic layer. The second run's TransIn try fails, so only TransOut is cancelled.

use dtm_examples::busi::fails_if;
use dtm_examples::grpc_busi::pb::busi_client::BusiClient;
use dtm_examples::grpc_busi::pb::ReqGrpc;
use dtm_examples::grpc_busi::GrpcDemo;
use dtm_workflow::{Wf, WorkflowGrpc, WorkflowLayer, Workflows};
use prost::Message;
use tonic::transport::Channel;
use tower_layer::Layer;

type Client = BusiClient<WorkflowGrpc<Channel>>;

fn status(method: &str) -> impl Fn(tonic::Status) -> dtmcli::Error + '_ {
    move |s| dtmgrpc::status_to_error(method, &s)
}

#[tokio::main]
async fn main() -> Result<(), dtm_examples::demo::DemoError> {
    let g = GrpcDemo::start().await?;
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

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let wfs = Workflows::grpc(g.dtm.clone(), &listener.local_addr()?.to_string());
    let svc = wfs.grpc_service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });

    wfs.register("tcc", move |wf: Wf, input: Vec<u8>| {
        let c = client.clone();
        async move {
            let req = ReqGrpc::decode(input.as_slice()).map_err(dtmcli::Error::other)?;
            // Branch 01: TransOut.
            wf.new_branch()?;
            let (w, mut cc, r) = (wf.clone(), c.clone(), req.clone());
            wf.on_commit(move |_| async move {
                cc.trans_out_confirm(w.grpc_request(r))
                    .await
                    .map(drop)
                    .map_err(status("TransOutConfirm"))
            })?;
            let (w, mut cc, r) = (wf.clone(), c.clone(), req.clone());
            wf.on_rollback(move |_| async move {
                cc.trans_out_cancel(w.grpc_request(r))
                    .await
                    .map(drop)
                    .map_err(status("TransOutCancel"))
            })?;
            c.clone()
                .trans_out_try(wf.grpc_request(req.clone()))
                .await
                .map_err(status("TransOutTry"))?;
            // Branch 02: TransIn.
            wf.new_branch()?;
            let (w, mut cc, r) = (wf.clone(), c.clone(), req.clone());
            wf.on_commit(move |_| async move {
                cc.trans_in_confirm(w.grpc_request(r))
                    .await
                    .map(drop)
                    .map_err(status("TransInConfirm"))
            })?;
            let (w, mut cc, r) = (wf.clone(), c.clone(), req.clone());
            wf.on_rollback(move |_| async move {
                cc.trans_in_cancel(w.grpc_request(r))
                    .await
                    .map(drop)
                    .map_err(status("TransInCancel"))
            })?;
            c.clone()
                .trans_in_try(wf.grpc_request(req))
                .await
                .map_err(status("TransInTry"))?;
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
            "== gRPC TCC workflow {gid}{}",
            if fail { " (TransInTry fails)" } else { "" }
        );
        let r = wfs.execute("tcc", &gid, &req.encode_to_vec()).await;
        println!("   execute returned {r:?}");
        let q = g.demo.finish(&gid).await?;
        println!("   gRPC calls: {:?}", g.busi.handlers(&gid));
        println!(
            "   final status {}\n",
            q.transaction.map(|t| t.status).unwrap_or_default()
        );
    }
    Ok(())
}
