//! Listeners, the accept loop, the timer task and shutdown.
//!
//! The server owns the [`Hub`]; each accepted connection becomes a session
//! task, and one timer task sleeps until the engine's next deadline.

use crate::binlog;
use crate::clock::Clock;
use crate::config::{Config, Listen};
use crate::engine::{Engine, EngineConfig, HostInfo};
use crate::hub::Hub;
use crate::session;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, UnixListener};

/// A bound, not yet serving, server.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    hub: Arc<Hub>,
    max_job_size: u32,
}

#[derive(Debug)]
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// The address a server listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Server {
    /// Binds the listener and builds the engine.
    pub async fn bind(config: &Config, clock: Clock, host: HostInfo) -> io::Result<Server> {
        let listener = match &config.listen {
            Listen::Tcp { host, port } => Listener::Tcp(bind_tcp(host, *port).await?),
            Listen::Unix(path) => Listener::Unix(bind_unix(path)?, path.clone()),
        };
        let mut engine = Engine::new(
            EngineConfig {
                max_job_size: config.max_job_size,
                binlog_max_size: config.binlog_size,
                host,
            },
            clock.now(),
        );
        let mut sync = None;
        if let Some(dir) = &config.binlog_dir {
            let (binlog, recovered) =
                binlog::open(dir, config.binlog_size, config.sync, config.skip_corrupt)?;
            tracing::info!(
                dir = %dir.display(),
                jobs = recovered.jobs.len(),
                records = recovered.records,
                "binlog replayed"
            );
            sync = Some(binlog.sync_handle());
            engine.set_journal(Box::new(binlog));
            engine.restore(clock.now(), recovered);
        }
        Ok(Server {
            listener,
            hub: Arc::new(Hub::new(engine, clock, sync)),
            max_job_size: config.max_job_size,
        })
    }

    pub fn local_addr(&self) -> io::Result<LocalAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().map(LocalAddr::Tcp),
            Listener::Unix(_, path) => Ok(LocalAddr::Unix(path.clone())),
        }
    }

    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let timer = tokio::spawn(run_timer(self.hub.clone()));
        tokio::select! {
            _ = accept_loop(&self.listener, &self.hub, self.max_job_size) => {}
            _ = shutdown => {}
        }
        timer.abort();
        if let Err(e) = self.hub.sync_journal() {
            tracing::error!("binlog sync at shutdown failed: {e}");
        }
        if let Listener::Unix(_, path) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn bind_tcp(host: &str, port: u16) -> io::Result<TcpListener> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let mut last_err = io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("no address for {host}"),
    );
    // Like beanstalkd: bind the first address that works.
    for addr in addrs {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(1024)) {
            Ok(l) => return Ok(l),
            Err(e) => last_err = io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")),
        }
    }
    Err(last_err)
}

fn bind_unix(path: &PathBuf) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    // A stale socket from an earlier run is replaced; any other file is not ours.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    UnixListener::bind(path)
}

async fn accept_loop(listener: &Listener, hub: &Arc<Hub>, max_job_size: u32) {
    loop {
        let accepted = match listener {
            Listener::Tcp(l) => l.accept().await.map(|(s, peer)| {
                let _ = s.set_nodelay(true);
                tracing::debug!(%peer, "accepted connection");
                tokio::spawn(session::run(hub.clone(), s, max_job_size));
            }),
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| {
                tracing::debug!("accepted unix connection");
                tokio::spawn(session::run(hub.clone(), s, max_job_size));
            }),
        };
        if let Err(e) = accepted {
            // EMFILE and friends: back off instead of spinning.
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sleeps until the engine's next deadline (or an earlier one appears) and ticks.
async fn run_timer(hub: Arc<Hub>) {
    loop {
        let next = hub.tick();
        let sleep_until = next.and_then(|t| hub.clock().deadline(t));
        match sleep_until {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = hub.timer_changed() => {}
                }
            }
            None => hub.timer_changed().await,
        }
    }
}
