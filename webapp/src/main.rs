//! `webapp`: serves the `/data` API. `webapp --help` lists every flag and its environment variable.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use flaskmongo_webapp::{App, BatchedStdout, Config, LogFormat, serve};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    let output = match BatchedStdout::start() {
        Ok(output) => output,
        Err(err) => {
            eprintln!("webapp failed: starting the log output thread: {err}");
            return ExitCode::FAILURE;
        }
    };
    output.flush_on_panic();
    init_logging(config.log_format, output.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(config.worker_threads))
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(config)),
        Err(err) => Err(err.into()),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "webapp failed");
            ExitCode::FAILURE
        }
    };
    output.flush();
    code
}

fn init_logging(format: LogFormat, output: BatchedStdout) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(output)
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    // Handlers are installed before serving so that no signal is missed.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let stop = async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    };
    let app = App::new(&config).await?;
    let listener = TcpListener::bind((config.listen_address, config.port)).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    serve(listener, app, stop, config.shutdown()).await?;
    Ok(())
}
