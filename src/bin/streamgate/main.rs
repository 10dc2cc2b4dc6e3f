//! The `streamgate` binary: parses the command line and runs the gateway
//! until SIGINT or SIGTERM. The only place that knows about flags,
//! environment variables and stdout.

mod args;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use args::{Cli, Command};
use clap::Parser;
use streamgate::config::Settings;
use streamgate::dashboard;
use streamgate::demo::DemoSettings;
use streamgate::server::{self, Gateway};
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
        Command::Serve(args) => {
            let grace = Duration::from_millis(args.shutdown_grace_ms);
            let web = args.http_listen.map(Web::Dashboard);
            serve(Settings::from(*args), grace, web).await
        }
        Command::Demo(args) => {
            let demo = DemoSettings::from(args);
            let settings = demo.gateway_settings();
            let grace = Duration::from_millis(10_000);
            serve(settings, grace, Some(Web::Demo(demo))).await
        }
    }
}

/// What the binary serves over HTTP beside the gateway: the library's
/// `server::start` serves gRPC and `/metrics` only.
enum Web {
    /// The dashboard (`--http-listen`).
    Dashboard(SocketAddr),
    /// `streamgate demo`: the dashboard with the demo's consumers.
    Demo(DemoSettings),
}

async fn serve(settings: Settings, grace: Duration, web: Option<Web>) -> ExitCode {
    // Watch the signals before anything is announced: a script that stops
    // the gateway as soon as it printed its address must get the graceful
    // shutdown, not the default action of SIGTERM.
    let stop = match stop_signal() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("streamgate: cannot watch signals: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    if let Some(web) = web {
        match serve_web(&gateway, web).await {
            Ok(addr) => println!("dashboard on http://{addr}/"),
            Err(e) => {
                eprintln!("streamgate: {e}");
                gateway.shutdown();
                return ExitCode::FAILURE;
            }
        }
    }
    let _ = std::io::stdout().flush();

    stop.await;
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

/// A future that completes on SIGINT or SIGTERM; the handlers are in place
/// as soon as this returns.
fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Starts the dashboard (with the demo's consumers, under `demo`) on the
/// gateway's in-process services; returns its address.
async fn serve_web(gateway: &Gateway, web: Web) -> Result<SocketAddr, String> {
    match web {
        Web::Demo(demo) => streamgate::demo::start(gateway, &demo).await,
        Web::Dashboard(addr) => {
            let options = dashboard::Options {
                local: gateway.local(),
                auth_enabled: gateway.auth_enabled(),
                demo: None,
            };
            dashboard::serve(addr, options, gateway.shutdown_signal(), gateway.tasks())
                .await
                .map_err(|e| format!("cannot serve the dashboard on {addr}: {e}"))
        }
    }
}
