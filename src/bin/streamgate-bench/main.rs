//! `streamgate-bench`: streamgate against Redis used directly.
//!
//! Every scenario runs twice in one invocation: through the gateway, and
//! with redis-rs doing the same work straight against Redis (the physical
//! limit). The report is the pair, their ratio, the gateway's Redis
//! connections and memory, and PASS/MISS against the targets of
//! BENCHMARKS.md.
//!
//! Layout: [`options`] (command line, sizes), [`rig`] (Redis and gateway
//! under test, resource probes), [`redis_server`] (the private
//! redis-server), [`scenarios`] (one file per kind of workload),
//! [`payload`] (the event both sides write), [`stats`] (histograms, one
//! side's figures), [`report`] (table and JSON), [`system`] (rlimit,
//! RSS, machine).

mod options;
mod payload;
mod redis_server;
mod report;
mod rig;
mod scenarios;
mod stats;
mod system;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use options::Args;
use rig::Rig;
use scenarios::Ctx;

/// Errors end the scenario that raised them with a message.
pub type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The same allocator as the `streamgate` binary, so that the in-process
/// gateway is measured as it runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    // The in-process gateway's warnings go to stderr with ours, except the
    // start-up notice that authentication is off, which is expected here.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("warn,streamgate::server=error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match system::raise_fd_limit() {
        Ok(limit) if limit < 4096 => {
            eprintln!("warning: only {limit} open files allowed; S5 may fail")
        }
        Ok(_) => {}
        Err(e) => eprintln!("warning: cannot raise the open-file limit: {e}"),
    }
    // The rig is built and stopped outside the bench runtime: it owns the
    // in-process gateway's runtime, which cannot be dropped inside another.
    let rig = match Rig::start(&args) {
        Ok(rig) => rig,
        Err(e) => {
            eprintln!("streamgate-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(rig::BENCH_THREADS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let ok = runtime.block_on(run(&args, &rig));
    drop(runtime);
    rig.stop();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the selected scenarios, printing each report as it completes.
/// False if any scenario failed.
async fn run(args: &Args, rig: &Rig) -> bool {
    let plan = args.plan();
    let mut table: Box<dyn Write> = if args.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let idle = match rig.usage().await {
        Ok(usage) => usage.gateway_connections,
        Err(e) => {
            eprintln!(
                "streamgate-bench: cannot reach Redis at {}: {e}",
                rig.redis_url
            );
            return false;
        }
    };
    let ctx = Ctx {
        rig,
        plan: &plan,
        idle_gateway_connections: idle,
    };
    let _ = writeln!(
        table,
        "streamgate-bench, {} mode; {}; gateway {} on Redis {}",
        plan.mode,
        system::machine(),
        rig.gateway_addr,
        rig.redis_url
    );
    if let Some(scope) = &rig.rss_scope {
        let _ = writeln!(table, "RSS is of {scope}");
    }
    let _ = report::write_header(&mut table);
    let mut ok = true;
    for id in args.scenarios() {
        eprintln!("running {} ...", id.as_str());
        match scenarios::run(id, &ctx).await {
            Ok(report) => {
                let _ = report.write_rows(&mut table);
                if args.json {
                    let _ = report.write_json(&mut std::io::stdout());
                }
            }
            Err(e) => {
                eprintln!("{}: failed: {e}", id.as_str());
                ok = false;
            }
        }
    }
    ok
}
