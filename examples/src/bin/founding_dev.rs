//! Development runner of the founding scenarios (temporary: the main binary takes over its
//! dispatch). `founding_dev donation|stepping|reprocessing` starts a DTM server and runs one;
//! `founding_dev __worker stepping ...` is the stepping scenario's worker process.

use dtm_examples::demo::DemoError;
use dtm_examples::founding;
use dtm_examples::server::{DtmServer, DtmServerConfig};

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,dtm_barrier=error,dtmcli::branch=error".into()),
        )
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["__worker", "stepping", ..] => founding::stepping::worker(&args[2..]).await,
        [name] => {
            let server = DtmServer::start(DtmServerConfig::default())?;
            let dtm = dtmcli::DtmClient::new(server.http_url())?;
            founding::run(name, &dtm).await
        }
        _ => Err(format!("usage: founding_dev {}", founding::SCENARIOS.join("|")).into()),
    }
}
