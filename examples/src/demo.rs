//! What every runnable scenario needs: a real DTM server, the bank service, a way to tell
//! what happened, and the one way the examples serve a service on a local port.

use std::net::SocketAddr;
use std::time::Duration;

use dtm_workflow::Workflows;
use dtmcli::{DtmClient, QueryResult};
use dtmgrpc::DtmGrpcClient;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

use crate::busi::Busi;
use dtm_testkit::{DtmServer, DtmServerConfig};

/// A running scenario environment. Dropping it stops the DTM server.
#[derive(Debug)]
pub struct Demo {
    /// The DTM server (a child process).
    pub server: DtmServer,
    /// A client of it.
    pub dtm: DtmClient,
    /// The bank service.
    pub busi: Busi,
    /// The bank service's base URL.
    pub base: String,
}

/// Error type of the scenarios.
pub type DemoError = Box<dyn std::error::Error + Send + Sync>;

impl Demo {
    /// Starts DTM (from `$DTM_BIN` or `.tools/bin/dtm`) and the bank service, with logs at
    /// `warn` unless `RUST_LOG` says otherwise; the SDK's warnings about retryable branch
    /// answers and re-run local transactions are left out, since the scenarios provoke
    /// them on purpose.
    pub async fn start() -> Result<Demo, DemoError> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,dtm_barrier=error,dtmcli::branch=error".into()),
            )
            .try_init();
        let server = DtmServer::start_async(DtmServerConfig::default()).await?;
        let dtm = DtmClient::new(server.http_url())?;
        println!(
            "== DTM {} at {} ({})",
            dtm.version().await?,
            dtm.server(),
            server.binary().display()
        );
        let busi = Busi::new(dtm.clone());
        let base = busi.serve(0).await?;
        println!("   bank service at {base}\n");
        Ok(Demo {
            server,
            dtm,
            busi,
            base,
        })
    }

    /// The URL of a bank handler.
    pub fn url(&self, handler: &str) -> String {
        format!("{}/{handler}", self.base)
    }

    /// Waits (up to 30 s) until DTM reports a final status for `gid`.
    pub async fn finish(&self, gid: &str) -> Result<QueryResult, DemoError> {
        Ok(dtm_testkit::wait::final_status(&self.dtm, gid, Duration::from_secs(30)).await?)
    }
}

/// Serves `router` in the background on a free port of 127.0.0.1; returns `http://<addr>`.
pub async fn serve(router: axum::Router) -> Result<String, DemoError> {
    Ok(format!(
        "http://{}",
        serve_http(0, router, "example service").await?
    ))
}

/// Serves `router` in the background on 127.0.0.1:`port` (0: a free one); returns the
/// address. `name` says which service stopped, if it does.
pub async fn serve_http(
    port: u16,
    router: axum::Router,
    name: &'static str,
) -> std::io::Result<SocketAddr> {
    let (listener, addr) = bind(port).await?;
    spawn_http(listener, router, name);
    Ok(addr)
}

/// Serves `router` on `listener` in the background. `name` says which service stopped, if
/// it does.
pub fn spawn_http(listener: TcpListener, router: axum::Router, name: &'static str) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("{name} stopped: {e}");
        }
    });
}

/// A listener on 127.0.0.1:`port` (0: a free one), and its address.
pub async fn bind(port: u16) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves the gRPC `routes` on `listener` in the background, with a span per incoming
/// branch call (`dtmgrpc::branch_span_layer`). `name` says which service stopped, if it does.
pub fn spawn_grpc(listener: TcpListener, routes: Routes, name: &'static str) {
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .layer(dtmgrpc::branch_span_layer())
            .add_routes(routes)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
        {
            tracing::error!("{name} stopped: {e}");
        }
    });
}

/// A workflow registry over HTTP whose resume callback (`/workflow/resume`) is served here,
/// on a free port.
pub async fn http_workflows(dtm: DtmClient) -> Result<Workflows, DemoError> {
    let (listener, addr) = bind(0).await?;
    let wfs = Workflows::http(dtm, format!("http://{addr}/workflow/resume"));
    let router = wfs.callback_router("/workflow/resume");
    spawn_http(listener, router, "workflow resume callback");
    Ok(wfs)
}

/// A workflow registry over gRPC whose resume service (`workflow.Workflow/Execute`) is
/// served here, on a free port.
pub async fn grpc_workflows(dtm: DtmGrpcClient) -> Result<Workflows, DemoError> {
    let (listener, addr) = bind(0).await?;
    let wfs = Workflows::grpc(dtm, &addr.to_string());
    spawn_grpc(
        listener,
        Routes::new(wfs.grpc_service()),
        "workflow service",
    );
    Ok(wfs)
}
