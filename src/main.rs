//! The `stalkd` daemon: flags -> config -> logging -> runtime -> server.

use stalkd::clock::Clock;
use stalkd::config::{self, Invocation};
use stalkd::server::Server;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let config = match config::parse(std::env::args_os()) {
        Invocation::Run(c) => c,
        Invocation::PrintVersion => {
            println!("stalkd {}", env!("CARGO_PKG_VERSION"));
            return std::process::ExitCode::SUCCESS;
        }
    };
    let level = match config.verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stalkd: cannot start the runtime: {e}");
            return std::process::ExitCode::from(111);
        }
    };
    runtime.block_on(async {
        let server =
            match Server::bind(&config, Clock::system(), stalkd::sysinfo::host_info()).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("stalkd: {e}");
                    return std::process::ExitCode::from(111);
                }
            };
        let hub = server.hub();
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            addr = ?server.local_addr().ok(),
            max_job_size = config.max_job_size,
            "stalkd listening"
        );
        tokio::spawn(async move {
            let Ok(mut usr1) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            else {
                return;
            };
            while usr1.recv().await.is_some() {
                tracing::info!("SIGUSR1: entering drain mode");
                hub.set_draining(true);
            }
        });
        server.run(shutdown_signal()).await;
        tracing::info!("stalkd stopped");
        std::process::ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
