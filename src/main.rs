//! The `stalkd` daemon: flags -> config -> logging -> fd limit -> runtime ->
//! signal handlers -> bind (drop privileges, binlog) -> serve -> graceful stop.
//!
//! Exit status: 0 after `-v`, `-h` or a graceful stop (SIGTERM, SIGINT); 2 for
//! a bad command line; beanstalkd's codes for start-up failures (111 socket,
//! 32/33/34 user and privileges); 1 if the binlog cannot be opened, if its
//! final sync fails, or if a graceful stop overruns [`STOP_LIMIT`]. All fatal messages are one line on stderr,
//! printed directly so they show whatever the log filter.

use stalkd::clock::Clock;
use stalkd::config::{self, Config, Invocation};
use stalkd::server::{self, Server, Signals};
use std::io::IsTerminal;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// The longest a graceful stop may take, from the signal to the exit; an
/// orchestrator's kill timeout (Docker 10 s, Kubernetes 30 s, systemd 90 s)
/// should never be what ends stalkd.
const STOP_LIMIT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let (config, warnings) = match config::parse(std::env::args_os()) {
        Invocation::Run { config, warnings } => (config, warnings),
        Invocation::PrintVersion => {
            println!("stalkd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
    };
    init_logging(config.verbosity);
    for warning in warnings {
        tracing::warn!("{warning}");
    }

    // SAFETY: the runtime is built further down; no thread exists yet
    // (setting up logging starts none).
    if unsafe { server::tune_allocator() } {
        tracing::debug!("glibc malloc: heap kept up to 16 MiB, own mappings from 1 MiB");
    }

    match server::raise_nofile_limit() {
        Ok((before, after)) if before != after => {
            tracing::debug!("raised the open-file limit from {before} to {after}")
        }
        Ok((_, limit)) => tracing::debug!("open-file limit: {limit}"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }

    // Taken before any thread exists, as sd_listen_fds(3) expects.
    let inherited = server::systemd_listener().map(|(fd, count)| {
        tracing::info!("using the socket passed by systemd; -l and -p are ignored");
        if count > 1 {
            tracing::warn!("systemd passed {count} sockets; only the first is used");
        }
        fd
    });

    let mut builder = if config.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stalkd: cannot start the runtime: {e}");
            return ExitCode::from(server::EXIT_LISTEN);
        }
    };
    let code = runtime.block_on(serve(config, inherited));
    // Sessions were finished or aborted by Server::run; do not let a stuck
    // task hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn serve(config: Config, inherited: Option<OwnedFd>) -> ExitCode {
    // Before binding: the default action of these signals kills the process,
    // and once the socket listens, anyone may connect and then signal.
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stalkd: cannot install signal handlers: {e}");
            return ExitCode::from(server::EXIT_LISTEN);
        }
    };
    let server = match Server::bind_with(
        &config,
        Clock::system(),
        stalkd::sysinfo::host_info(),
        inherited,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stalkd: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let addr = match server.local_addr() {
        Ok(a) => a.to_string(),
        Err(e) => format!("(unknown address: {e})"),
    };
    let binlog = match &config.binlog_dir {
        None => "off (jobs are kept in memory only)".to_string(),
        Some(dir) => format!(
            "{} ({}, files of {} bytes)",
            dir.display(),
            config.sync,
            config.binlog_size
        ),
    };
    tracing::info!(
        "stalkd {} listening on {addr}; binlog: {binlog}; max job size: {} bytes",
        env!("CARGO_PKG_VERSION"),
        config.max_job_size
    );

    let hub = server.hub();
    let stopped = server
        .run(async move {
            let name = signals.until_shutdown(&hub).await;
            tracing::info!("{name}: shutting down");
            start_stop_watchdog();
        })
        .await;
    match stopped {
        Ok(()) => {
            tracing::info!("stalkd stopped");
            ExitCode::SUCCESS
        }
        // Already logged with its cause; the status tells the supervisor.
        Err(_) => ExitCode::FAILURE,
    }
}

/// Ends the process if the graceful stop overruns [`STOP_LIMIT`]. A thread,
/// not a task: it must fire even if the runtime is wedged.
fn start_stop_watchdog() {
    std::thread::spawn(|| {
        std::thread::sleep(STOP_LIMIT);
        eprintln!(
            "stalkd: graceful stop did not finish within {STOP_LIMIT:?}; exiting without it \
             (the binlog may not be synced)"
        );
        std::process::exit(1);
    });
}

/// Logs to stderr. `RUST_LOG`, when set, is the filter; otherwise `-V` picks
/// the level. Colours only on a terminal: journald and `docker logs` would
/// show the escape codes.
fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let mut bad_rust_log = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            bad_rust_log = Some(format!(
                "RUST_LOG={spec:?} is not a valid filter ({e}); using {level}"
            ));
            EnvFilter::new(level)
        }),
        _ => EnvFilter::new(level),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(warning) = bad_rust_log {
        tracing::warn!("{warning}");
    }
}
