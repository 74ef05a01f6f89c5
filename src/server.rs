//! Listeners, the accept loop, the timer task, signals and graceful shutdown.
//!
//! The server owns the [`Hub`]; each accepted connection becomes a session
//! task, and one timer task sleeps until the engine's next deadline.
//!
//! Start-up ([`Server::bind_with`]), in this order, each step needing the one
//! before:
//! 1. bind the listener (`-l`/`-p`, or the socket systemd passed): may need
//!    root, for a port below 1024;
//! 2. drop privileges (`-u`): everything after runs as USER;
//! 3. build the engine, open the binlog and replay it into the engine (see
//!    `open_binlog` at the end of this file): as USER, like beanstalkd, so
//!    the files belong to USER and root never opens files in a directory
//!    USER can write to.
//!
//! The caller installs the signal handlers ([`Signals::install`]) before
//! step 1: SIGTERM, SIGINT and SIGUSR1 kill a process by default, and clients
//! and orchestrators may act as soon as the socket listens.
//!
//! Shutdown ([`Server::run`], once its `shutdown` future resolves):
//! 1. stop accepting: the listener is closed, so new connects are refused at
//!    once rather than left in the backlog; a UNIX socket file we created is
//!    removed;
//! 2. sessions are told to stop: each answers the input it has already
//!    received, flushes its replies and closes; blocked reserves are closed;
//! 3. wait for them, at most [`SESSION_GRACE`]; then abort the rest, so no
//!    session can touch the engine after step 4;
//! 4. flush and sync the binlog.
//!
//! Invariant: every session task is spawned through the hub's
//! [`Sessions`], so shutdown can wake it, wait for it or abort it, and so
//! can dropping [`Server::run`]'s future before its end.

mod os;

use crate::binlog;
use crate::clock::Clock;
use crate::config::{Config, Listen};
use crate::engine::{Engine, EngineConfig, HostInfo};
use crate::hub::Hub;
use crate::session::Session;
use crate::sessions::Sessions;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::signal::unix::{signal, Signal, SignalKind};

pub use os::{raise_nofile_limit, tune_allocator};

/// How long shutdown waits for sessions to finish their last batch and flush
/// it (a client that does not read its replies can hold a flush forever).
/// Leaves time for the binlog sync within the daemon's 5 s overall bound.
pub const SESSION_GRACE: Duration = Duration::from_secs(3);

/// Pause after an accept error such as EMFILE: the pending connection stays
/// in the backlog, so retrying at once would spin the CPU.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning per this long about failing accepts.
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Exit status for a listening-socket failure (beanstalkd's).
pub const EXIT_LISTEN: u8 = 111;
/// Exit status when the `-u` user cannot be looked up (beanstalkd's).
pub const EXIT_USER_LOOKUP: u8 = 32;
/// Exit status when the group cannot be changed (beanstalkd's).
pub const EXIT_SETGID: u8 = 33;
/// Exit status when the user id cannot be changed (beanstalkd's).
pub const EXIT_SETUID: u8 = 34;
/// Exit status when the binlog cannot be opened, locked or replayed.
pub const EXIT_BINLOG: u8 = 1;

/// Why the server could not start, and the exit status that says so.
#[derive(Debug)]
pub struct StartupError {
    exit_code: u8,
    message: String,
}

impl StartupError {
    fn new(exit_code: u8, message: impl Into<String>) -> StartupError {
        StartupError {
            exit_code,
            message: message.into(),
        }
    }

    /// The process exit status for this failure (beanstalkd's where it has one).
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StartupError {}

/// The first socket passed by systemd socket activation (`LISTEN_FDS`), if
/// any, with the number of sockets passed. Call once, early.
pub fn systemd_listener() -> Option<(OwnedFd, usize)> {
    os::systemd_listener()
}

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
    Unix {
        listener: UnixListener,
        path: PathBuf,
        /// We created the socket file, so we remove it on shutdown (not so
        /// for one systemd passed us).
        remove_on_close: bool,
    },
}

/// The address a server listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalAddr::Tcp(addr) => write!(f, "{addr}"),
            LocalAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Server {
    /// Binds the listener `config` names and builds the engine.
    pub async fn bind(
        config: &Config,
        clock: Clock,
        host: HostInfo,
    ) -> Result<Server, StartupError> {
        Server::bind_with(config, clock, host, None).await
    }

    /// Like [`Server::bind`], but serves on `inherited` (a listening socket
    /// from systemd) when given, ignoring `config.listen`.
    pub async fn bind_with(
        config: &Config,
        clock: Clock,
        host: HostInfo,
        inherited: Option<OwnedFd>,
    ) -> Result<Server, StartupError> {
        // 1. Bind.
        let listener = match inherited {
            Some(fd) => Listener::from_fd(fd)?,
            None => Listener::bind(&config.listen).await?,
        };
        // 2. Drop privileges.
        if let Some(user) = &config.user {
            drop_privileges(user)?;
        }
        // 3. The engine, filled from the binlog.
        let mut engine = Engine::new(
            EngineConfig {
                max_job_size: config.max_job_size,
                binlog_max_size: config.binlog_size,
                host,
            },
            clock.now(),
        );
        let sync = open_binlog(config, &mut engine, &clock)?;
        Ok(Server {
            listener,
            hub: Arc::new(Hub::new(engine, clock, sync)),
            max_job_size: config.max_job_size,
        })
    }

    pub fn local_addr(&self) -> io::Result<LocalAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().map(LocalAddr::Tcp),
            Listener::Unix { path, .. } => Ok(LocalAddr::Unix(path.clone())),
        }
    }

    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully (see the
    /// module doc). Returns when the last session is gone and the binlog is
    /// synced; an error means that final sync failed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server {
            listener,
            hub,
            max_job_size,
        } = self;
        // Sessions are tasks of their own: if this future is dropped before
        // its end (its caller gave up on it), they must not go on serving.
        let _end_sessions = EndSessions(hub.sessions());
        let timer = tokio::spawn(run_timer(hub.clone()));
        let trimmer = tokio::spawn(give_back_memory(hub.clone()));
        tokio::select! {
            () = accept_loop(&listener, &hub, max_job_size) => {}
            () = shutdown => {}
        }

        listener.close();
        let sessions = hub.sessions();
        tracing::info!(
            connections = sessions.live(),
            "stopped accepting; finishing open connections"
        );
        sessions.stop();
        let drained = tokio::time::timeout(SESSION_GRACE, sessions.all_gone()).await;
        if drained.is_err() {
            tracing::warn!(
                connections = sessions.live(),
                "connections still busy after {SESSION_GRACE:?} (clients not reading their \
                 replies, or still sending); closing them"
            );
            // Aborted sessions stop at their next await; none holds the
            // engine lock across one, and each one's disconnect guard still
            // returns its reserved jobs.
            sessions.abort_all();
            sessions.all_gone().await;
        }

        timer.abort();
        trimmer.abort();
        // Whatever the -f/-F policy: a clean stop loses nothing.
        hub.sync_journal().inspect_err(|e| {
            tracing::error!("binlog sync at shutdown failed: {e}");
        })
    }
}

impl Listener {
    async fn bind(listen: &Listen) -> Result<Listener, StartupError> {
        match listen {
            Listen::Tcp { host, port } => Ok(Listener::Tcp(bind_tcp(host, *port).await?)),
            Listen::Unix(path) => Ok(Listener::Unix {
                listener: bind_unix(path).await?,
                path: path.clone(),
                remove_on_close: true,
            }),
        }
    }

    /// Wraps a listening socket passed by systemd.
    fn from_fd(fd: OwnedFd) -> Result<Listener, StartupError> {
        let bad = |e: io::Error| {
            StartupError::new(
                EXIT_LISTEN,
                format!("cannot use the socket passed by systemd (LISTEN_FDS): {e}"),
            )
        };
        match os::socket_family(&fd).map_err(bad)? {
            libc::AF_UNIX => {
                let std = std::os::unix::net::UnixListener::from(fd);
                std.set_nonblocking(true).map_err(bad)?;
                let path = std
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(Path::to_path_buf))
                    .unwrap_or_else(|| PathBuf::from("(unnamed)"));
                Ok(Listener::Unix {
                    listener: UnixListener::from_std(std).map_err(bad)?,
                    path,
                    remove_on_close: false,
                })
            }
            libc::AF_INET | libc::AF_INET6 => {
                let std = std::net::TcpListener::from(fd);
                std.set_nonblocking(true).map_err(bad)?;
                Ok(Listener::Tcp(TcpListener::from_std(std).map_err(bad)?))
            }
            family => Err(bad(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("address family {family} is neither TCP nor UNIX"),
            ))),
        }
    }

    /// Closes the socket; removes the socket file we created.
    fn close(self) {
        if let Listener::Unix {
            listener,
            path,
            remove_on_close: true,
        } = self
        {
            drop(listener);
            // After -u the directory may no longer be ours to write: not
            // fatal, the next start replaces the stale file.
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("cannot remove socket file {}: {e}", path.display());
            }
        }
    }
}

async fn bind_tcp(host: &str, port: u16) -> Result<TcpListener, StartupError> {
    let shown = Listen::Tcp {
        host: host.to_string(),
        port,
    };
    let fail = |what: String| StartupError::new(EXIT_LISTEN, format!("cannot listen on {what}"));
    // `[::1]` is how addresses are written next to ports; accept it as well.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| fail(format!("{shown}: cannot resolve the address: {e}")))?
        .collect();
    let mut last_err = fail(format!("{shown}: the name has no address"));
    // Like beanstalkd: bind the first address that works.
    for addr in addrs {
        match listen_tcp(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last_err = fail(format!("{addr}: {e}")),
        }
    }
    Err(last_err)
}

fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restart must not wait for the old connections' TIME_WAIT to end.
    socket.set_reuseaddr(true)?;
    // Inherited by accepted sockets: a client that vanished while blocked in
    // a long reserve is eventually noticed and its reservations returned.
    socket.set_keepalive(true)?;
    if addr.is_ipv6() {
        // As beanstalkd: `-l ::` serves IPv4 clients too. Best effort: a
        // host without IPv4 may refuse, and IPv6 alone still works.
        if let Err(e) = os::set_v6only(&socket, false) {
            tracing::warn!("cannot turn IPV6_V6ONLY off on {addr}: {e}");
        }
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn bind_unix(path: &Path) -> Result<UnixListener, StartupError> {
    use std::os::unix::fs::FileTypeExt;
    let fail = |why: String| {
        StartupError::new(
            EXIT_LISTEN,
            format!("cannot listen on unix:{}: {why}", path.display()),
        )
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(fail("the file exists and is not a socket".into()));
        }
        // beanstalkd replaces any socket file. We first check that no server
        // still answers on it: replacing a live server's socket would
        // silently take its clients. A stale file refuses the connect.
        let probe = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::UnixStream::connect(path),
        )
        .await;
        if matches!(probe, Ok(Ok(_)) | Err(_)) {
            return Err(fail(
                "address already in use (another server answers on it)".into(),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
    }
    UnixListener::bind(path).map_err(|e| fail(e.to_string()))
}

/// Becomes the `-u` user; see [`os::become_user`].
fn drop_privileges(name: &str) -> Result<(), StartupError> {
    let user = match os::lookup_user(name) {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Err(StartupError::new(
                EXIT_USER_LOOKUP,
                format!("-u {name}: no such user"),
            ))
        }
        Err(e) => {
            return Err(StartupError::new(
                EXIT_USER_LOOKUP,
                format!("-u {name}: cannot look the user up: {e}"),
            ))
        }
    };
    os::become_user(&user).map_err(|(step, e)| {
        let (code, call) = match step {
            os::DropStep::Groups => (EXIT_SETGID, "setgroups"),
            os::DropStep::Gid => (EXIT_SETGID, "setgid"),
            os::DropStep::Uid => (EXIT_SETUID, "setuid"),
        };
        StartupError::new(code, format!("-u {name}: {call} failed: {e}"))
    })?;
    tracing::info!(
        "running as user {} (uid {}, gid {})",
        user.name,
        user.uid,
        user.gid
    );
    Ok(())
}

/// The handlers of the signals the daemon answers.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    usr1: Signal,
}

impl Signals {
    /// Installs the handlers (needs a running tokio runtime). Call before
    /// binding, see the module doc.
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    /// Serves SIGUSR1 (drain mode, for good) until SIGTERM or SIGINT
    /// arrives; returns that signal's name.
    pub async fn until_shutdown(&mut self, hub: &Hub) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.usr1.recv() => {
                    tracing::info!("SIGUSR1: drain mode, new jobs are refused");
                    hub.set_draining(true);
                }
            }
        }
    }
}

/// Ends every session when dropped (after a full shutdown there are none).
struct EndSessions<'a>(&'a Sessions);

impl Drop for EndSessions<'_> {
    fn drop(&mut self) {
        self.0.stop();
        self.0.abort_all();
    }
}

async fn accept_loop(listener: &Listener, hub: &Arc<Hub>, max_job_size: u32) {
    // When the last accept-failure warning was logged: near the limit,
    // accepts alternate between success and EMFILE, and one warning a
    // minute says enough.
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let (stream, peer) = match accept(listener).await {
            Ok(a) => a,
            Err(e) if is_per_connection(&e) => {
                // The peer gave up before we accepted; nothing to back off from.
                tracing::debug!("accept: {e}");
                continue;
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS...: the connection stays queued;
                // retry slowly until descriptors are freed.
                if last_warning.is_none_or(|t| t.elapsed() >= ACCEPT_WARNING_EVERY) {
                    tracing::warn!(
                        "accept failed: {e}; new connections wait, retrying every \
                         {ACCEPT_BACKOFF:?} (raise the open-file limit?)"
                    );
                    last_warning = Some(tokio::time::Instant::now());
                } else {
                    tracing::debug!("accept failed: {e}");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // The session's future is spawned as it is, not wrapped in another
        // async block: a wrapper would hold a second copy of what it moves
        // into the session, in every connection's task.
        let sessions = hub.sessions();
        match stream {
            Stream::Tcp(s) => sessions.spawn(|slot| {
                let session = Session::new(hub.clone(), s, max_job_size, slot);
                tracing::debug!(conn = session.id(), %peer, "connection opened");
                session.run()
            }),
            Stream::Unix(s) => sessions.spawn(|slot| {
                let session = Session::new(hub.clone(), s, max_job_size, slot);
                tracing::debug!(conn = session.id(), %peer, "connection opened");
                session.run()
            }),
        };
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<(Stream, String)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            // Replies are written whole, one write per batch: Nagle would
            // only delay them.
            let _ = s.set_nodelay(true);
            Ok((Stream::Tcp(s), peer.to_string()))
        }
        Listener::Unix { listener, .. } => {
            let (s, _) = listener.accept().await?;
            Ok((Stream::Unix(s), "unix".to_string()))
        }
    }
}

/// Accept errors that concern one connection only, not the process.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(libc::EPROTO)
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

/// Once a backlog has drained or many clients have gone (see
/// [`Hub::memory_released`]), asks the allocator to return its free pages to the system, on a blocking
/// thread: it takes ~0.1 ms per MB freed, during which the runtime's own
/// allocations wait.
async fn give_back_memory(hub: Arc<Hub>) {
    loop {
        hub.memory_released().await;
        if let Ok(true) = tokio::task::spawn_blocking(os::release_free_memory).await {
            tracing::debug!("returned freed memory to the system");
        }
    }
}

// ---------------------------------------------------------------------------
// BINLOG. It plugs into the daemon at exactly two places: `open_binlog` runs
// in `Server::bind_with` after the listener is bound and privileges are
// dropped, before the engine serves (replay fills it); the final sync runs at
// the end of `Server::run`, after the last session is gone, so nothing is
// appended after it.
// ---------------------------------------------------------------------------

/// Opens `-b DIR` (if given), replays it into `engine`, and returns the
/// handle replies wait on under `-f 0`.
fn open_binlog(
    config: &Config,
    engine: &mut Engine,
    clock: &Clock,
) -> Result<Option<Arc<binlog::SyncShared>>, StartupError> {
    let Some(dir) = &config.binlog_dir else {
        return Ok(None);
    };
    let (binlog, recovered) =
        binlog::open(dir, config.binlog_size, config.sync, config.skip_corrupt).map_err(|e| {
            // The binlog's errors usually name the file already.
            let shown = dir.display().to_string();
            let msg = e.to_string();
            StartupError::new(
                EXIT_BINLOG,
                if msg.contains(&shown) {
                    format!("cannot open the binlog: {msg}")
                } else {
                    format!("cannot open the binlog in {shown}: {msg}")
                },
            )
        })?;
    tracing::info!(
        dir = %dir.display(),
        jobs = recovered.jobs.len(),
        records = recovered.records,
        "binlog replayed"
    );
    let sync = binlog.sync_handle();
    engine.set_journal(Box::new(binlog));
    engine.restore(clock.now(), recovered);
    Ok(Some(sync))
}
