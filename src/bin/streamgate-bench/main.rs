//! `streamgate-bench`: streamgate against Redis used directly.
//!
//! Every scenario runs twice in one invocation: through the gateway, and
//! with redis-rs doing the same work straight against Redis (the physical
//! limit). The report is the pair, their ratio, the gateway's Redis
//! connections and memory, and PASS/MISS against the targets of
//! BENCHMARKS.md.
//!
//! The C scenarios run the same comparisons on a Redis Cluster, C5 with
//! 10,000 idle subscriptions, and C30 compares the gateway on three
//! masters with the gateway on one. S8, also on the 3-master cluster,
//! compares producing to a 12-partition stream with producing to one plain
//! stream. S9, on one Redis, compares ordered with unordered consumption
//! of a 12-partition stream, both through the gateway.
//!
//! Where the gateway's wake-up mechanism may matter (S1, S4, S5, C5), the
//! gateway side runs once per mechanism (`--wakeup`, default both:
//! `tracking` and `xread`), the in-process gateway restarted in between.
//!
//! Layout: [`options`] (command line, sizes), [`rig`] (Redis and gateway
//! under test, resource probes), [`redis_server`] (the private
//! redis-server), [`redis_cluster`] (the private Redis Clusters),
//! [`scenarios`] (one file per kind of workload),
//! [`payload`] (the event both sides write), [`stats`] (histograms, one
//! side's figures), [`report`] (table and JSON), [`system`] (rlimit,
//! RSS, machine).

mod options;
mod payload;
mod redis_cluster;
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

use options::{Args, Plan, ScenarioId};
use rig::{Rig, Storage};
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
    let scenarios = match args.scenarios() {
        Ok(scenarios) => scenarios,
        Err(e) => {
            eprintln!("streamgate-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (on_cluster, standalone): (Vec<ScenarioId>, Vec<ScenarioId>) =
        scenarios.into_iter().partition(|id| id.on_cluster());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(rig::BENCH_THREADS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut table: Box<dyn Write> = if args.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let plan = args.plan();
    let _ = writeln!(
        table,
        "streamgate-bench, {} mode; {}",
        plan.mode,
        system::machine()
    );
    // Rigs are built and stopped outside the bench runtime: each owns its
    // in-process gateway's runtime, which cannot be dropped inside another.
    // One phase per kind of Redis, so that no idle cluster runs beside the
    // standalone scenarios.
    let mut ok = true;
    if !standalone.is_empty() {
        ok &= match Rig::start(&args, Storage::Standalone) {
            Ok(rig) => {
                let ok = runtime.block_on(run(&args, &plan, &mut table, &standalone, &rig, None));
                rig.stop();
                ok
            }
            Err(e) => {
                eprintln!("streamgate-bench: {e}");
                false
            }
        };
    }
    if !on_cluster.is_empty() {
        // C30's baseline: one master (and its replica) behind a gateway of
        // its own, beside the 3-master cluster. A rig dropped unstopped
        // (when the other fails to start) just kills its processes.
        let started = Rig::start(&args, Storage::Cluster(3)).and_then(|rig| {
            let one = on_cluster
                .contains(&ScenarioId::C30)
                .then(|| Rig::start(&args, Storage::Cluster(1)))
                .transpose()?;
            Ok((rig, one))
        });
        ok &= match started {
            Ok((rig, one)) => {
                let ok = runtime.block_on(run(
                    &args,
                    &plan,
                    &mut table,
                    &on_cluster,
                    &rig,
                    one.as_ref(),
                ));
                rig.stop();
                if let Some(one) = one {
                    one.stop();
                }
                ok
            }
            Err(e) => {
                eprintln!("streamgate-bench: {e}");
                false
            }
        };
    }
    drop(runtime);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `scenarios` on `rig` (and C30's one-master baseline on
/// `one_master`), printing each report as it completes. False if any
/// scenario failed.
async fn run(
    args: &Args,
    plan: &Plan,
    table: &mut Box<dyn Write>,
    scenarios: &[ScenarioId],
    rig: &Rig,
    one_master: Option<&Rig>,
) -> bool {
    let ctx = match Ctx::new(rig, plan, table).await {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("streamgate-bench: {e}");
            return false;
        }
    };
    let baseline = match one_master {
        Some(rig) => match Ctx::new(rig, plan, table).await {
            Ok(ctx) => Some(ctx),
            Err(e) => {
                eprintln!("streamgate-bench: {e}");
                return false;
            }
        },
        None => None,
    };
    let ctx = Ctx {
        one_master: baseline.as_ref(),
        ..ctx
    };
    if let Some(scope) = &rig.rss_scope {
        let _ = writeln!(table, "RSS is of {scope}");
    }
    let _ = report::write_header(table);
    let mut ok = true;
    for &id in scenarios {
        eprintln!("running {} ...", id.as_str());
        match scenarios::run(id, &ctx).await {
            Ok(report) => {
                let _ = report.write_rows(table);
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
