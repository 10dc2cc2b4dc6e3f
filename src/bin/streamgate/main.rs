//! The `streamgate` binary: parses the command line and runs the gateway
//! until SIGINT or SIGTERM. The only place that knows about flags,
//! environment variables and stdout.

mod args;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use args::{Cli, Command, ServeArgs};
use clap::Parser;
use streamgate::config::Settings;
use streamgate::server;
use tracing_subscriber::EnvFilter;

/// The gateway allocates and frees small buffers for every message (proto
/// maps, Redis arguments); mimalloc does that markedly cheaper than the
/// system allocator (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().command {
        Command::Serve(config) => serve(config).await,
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    let settings = Settings::from(args);
    let gateway = match server::start(&settings).await {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("streamgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts and tests wait for this exact line to learn the port.
    println!("listening on {}", gateway.addr());
    if let Some(addr) = gateway.metrics_addr() {
        println!("metrics on {addr}");
    }
    let _ = std::io::stdout().flush();

    if let Err(e) = stop_signal().await {
        eprintln!("streamgate: cannot watch signals: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!("shutting down");
    gateway.shutdown();
    match tokio::time::timeout(grace, gateway.wait()).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("streamgate: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            tracing::warn!(
                ?grace,
                "open calls did not finish within the shutdown grace; exiting"
            );
            ExitCode::SUCCESS
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
