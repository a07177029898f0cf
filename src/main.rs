//! The `tally` binary: configuration, database, server.

use std::process::ExitCode;

use tally::config::Config;
use tally::{startup, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tally: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tally: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), startup::BoxError> {
    let addr = config.addr;
    let (pool, embedded) = startup::database(&config).await?;
    if embedded.is_some() {
        tracing::info!("embedded postgres running; {}", startup::data_dir_note(&config.data_dir));
    }
    let state = startup::build_state(config, pool.clone(), None).await?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("TALLY_ADDR {addr}: {e}"))?;
    startup::serve(listener, state, startup::shutdown_signal()).await?;
    pool.close().await;
    if let Some(mut pg) = embedded {
        tokio::task::spawn_blocking(move || pg.stop()).await?;
    }
    tracing::info!("stopped");
    Ok(())
}
