//! stalkd-bench: a load generator for any beanstalkd-protocol server.
//!
//! ```text
//! cargo run --release --example stalkd-bench -- \
//!     --addr 127.0.0.1:11300 --scenario cycle --conns 10 --duration 10 --pid $(pidof stalkd)
//! ```
//!
//! Scenarios (see `--help` and bench/README.md): put, reserve, cycle,
//! pipeline, many-conns, tubes, big, delayed, memory, idle-conns. Each reports
//! jobs/s, latency percentiles (hdrhistogram, microseconds), errors (every
//! reply is checked), and with `--pid` the server's CPU seconds per 100k jobs
//! and RSS from /proc. `--json` prints the same as one line of JSON.
//!
//! Every loop is bounded by a job count and a deadline, every read has a
//! timeout, and a watchdog thread ends the process if the hard limit
//! (`--max-time`) is ever overrun, so a run always stops by itself.
//!
//! Modules: [`cli`] flags, [`proto`] client and reply parsing, [`work`]
//! worker loops, [`scenarios`] the workloads, [`tally`] counters and
//! histograms, [`report`] output, [`sysmon`] /proc readings, [`clock`]
//! timestamps in bodies.

mod cli;
mod clock;
mod proto;
mod report;
mod scenarios;
mod sysmon;
mod tally;
mod work;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::time::Instant;

use crate::cli::{Args, Settings};
use crate::sysmon::Probe;
use crate::work::Ctx;

/// Extra time the watchdog allows past the hard deadline.
const WATCHDOG_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::from_args(&args) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("stalkd-bench: {msg}");
            return ExitCode::from(2);
        }
    };
    let nofile = sysmon::raise_nofile();
    if (nofile as usize) < settings.conns + 100 {
        eprintln!("stalkd-bench: warning: open-file limit {nofile} is below --conns");
    }
    start_watchdog(settings.max_time + WATCHDOG_GRACE);
    let runtime = match build_runtime(args.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stalkd-bench: cannot start tokio: {e}");
            return ExitCode::from(2);
        }
    };
    clock::now_ns(); // fix the stamp epoch before any job is put
    let report = runtime.block_on(async {
        let ctx = Arc::new(Ctx {
            hard_deadline: Instant::now() + settings.max_time,
            server: Probe::server(args.pid),
            s: settings,
        });
        scenarios::run(ctx).await
    });
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    if report.tally.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn build_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Ends the process if the run overruns `limit`, whatever it is waiting on.
fn start_watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("stalkd-bench: watchdog: run exceeded {limit:?}, exiting");
        std::process::exit(3);
    });
}
