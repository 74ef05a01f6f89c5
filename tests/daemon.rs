//! The real `stalkd` binary as operators run it: flags, sockets, signals,
//! exit statuses, privileges, socket activation.
//!
//! Each test starts the binary as a child on loopback (or a UNIX socket in a
//! temp dir) and a [`Daemon`] guard kills it when the test ends, pass or
//! fail. Every wait is bounded: readiness and exits by [`WAIT`], replies by
//! the read timeout.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_stalkd");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Upper bound for the server to start, answer or exit.
const WAIT: Duration = Duration::from_secs(5);

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOCALHOST6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A running (or exited) stalkd; killed and reaped on drop.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts stalkd with `args`; stderr is captured only if `capture`
    /// (a pipe nobody drains could fill up under heavy logging).
    fn spawn(args: &[&str], capture: bool) -> Daemon {
        Daemon::spawn_cmd(command(args, capture))
    }

    fn spawn_cmd(mut cmd: Command) -> Daemon {
        Daemon {
            child: cmd.spawn().expect("spawn stalkd"),
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child, not yet reaped (the guard owns it), so it cannot be reused.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill");
    }

    /// Waits at most `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything on stderr so far (call after exit; needs `capture`).
    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            err.read_to_string(&mut s).expect("read stderr");
        }
        s
    }

    fn stdout(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut s).expect("read stdout");
        }
        s
    }

    /// Panics (with its stderr) if the server already exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("stalkd exited with {status}: {}", self.stderr());
        }
    }

    /// Connects over TCP, retrying until the server is ready.
    fn connect(&mut self, addr: SocketAddr) -> Conn {
        let end = Instant::now() + WAIT;
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => return Conn::new(Box::new(s)),
                Err(e) if Instant::now() >= end => panic!("cannot connect to {addr}: {e}"),
                Err(_) => {
                    self.assert_running();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn connect_unix(&mut self, path: &Path) -> Conn {
        let end = Instant::now() + WAIT;
        loop {
            match UnixStream::connect(path) {
                Ok(s) => return Conn::new(Box::new(s)),
                Err(e) if Instant::now() >= end => panic!("cannot connect to {path:?}: {e}"),
                Err(_) => {
                    self.assert_running();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

fn command(args: &[&str], capture: bool) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    cmd
}

/// Runs stalkd to completion (bounded) and returns status, stdout, stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let mut d = Daemon::spawn(args, true);
    let status = d
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("stalkd {args:?} did not exit"));
    (status, d.stdout(), d.stderr())
}

/// A port that was free a moment ago on `ip`.
fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("bind port 0")
        .local_addr()
        .unwrap()
        .port()
}

/// Starts stalkd on `ip` and a free port with `extra` flags; returns it with
/// the address, once it accepts connections.
fn start_tcp(ip: IpAddr, extra: &[&str], capture: bool) -> (Daemon, SocketAddr) {
    let port = free_port(ip).to_string();
    let host = ip.to_string();
    let mut args = vec!["-l", &host, "-p", &port];
    args.extend_from_slice(extra);
    let mut d = Daemon::spawn(&args, capture);
    let addr = SocketAddr::new(ip, port.parse().unwrap());
    drop(d.connect(addr));
    (d, addr)
}

fn ipv6_available() -> bool {
    TcpListener::bind((LOCALHOST6, 0)).is_ok()
}

/// A client speaking raw bytes, with every read bounded by [`WAIT`].
struct Conn {
    stream: Box<dyn Stream>,
}

trait Stream: Read + Write {
    fn set_timeout(&self, t: Duration);
}

impl Stream for TcpStream {
    fn set_timeout(&self, t: Duration) {
        self.set_read_timeout(Some(t)).unwrap();
    }
}

impl Stream for UnixStream {
    fn set_timeout(&self, t: Duration) {
        self.set_read_timeout(Some(t)).unwrap();
    }
}

impl Conn {
    fn new(stream: Box<dyn Stream>) -> Conn {
        stream.set_timeout(WAIT);
        Conn { stream }
    }

    fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).expect("send");
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    fn expect(&mut self, expected: &str) {
        let mut got = vec![0u8; expected.len()];
        self.stream
            .read_exact(&mut got)
            .unwrap_or_else(|e| panic!("reading {expected:?}: {e}"));
        assert_eq!(String::from_utf8_lossy(&got), expected);
    }

    fn roundtrip(&mut self, request: &str, reply: &str) {
        self.send(request);
        self.expect(reply);
    }

    /// Asserts the server closes the connection without sending more.
    fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(n) => panic!("unexpected bytes {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("expected close, got {e}"),
        }
    }

    /// Everything until the server closes the connection.
    fn read_to_close(&mut self) -> String {
        let mut all = Vec::new();
        self.stream.read_to_end(&mut all).expect("read until close");
        String::from_utf8(all).unwrap()
    }

    /// One reply line, CRLF included, read byte by byte so nothing after it
    /// is consumed.
    fn line(&mut self) -> String {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            let mut b = [0u8; 1];
            self.stream.read_exact(&mut b).expect("reply line");
            line.push(b[0]);
        }
        String::from_utf8(line).unwrap()
    }

    /// The YAML body of `stats`.
    fn stats(&mut self) -> String {
        self.send("stats\r\n");
        let header = self.line();
        let len: usize = header
            .strip_prefix("OK ")
            .and_then(|s| s.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("bad stats header {header:?}"));
        let mut body = vec![0u8; len + 2];
        self.stream.read_exact(&mut body).expect("stats body");
        String::from_utf8(body).unwrap()
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "stalkd-daemon-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Command line.

#[test]
fn dash_v_prints_the_version() {
    for flag in ["-v", "--version"] {
        let (status, out, _) = run_to_exit(&[flag]);
        assert!(status.success(), "{flag}: {status}");
        assert_eq!(out, format!("stalkd {VERSION}\n"), "{flag}");
    }
}

#[test]
fn help_exits_zero_and_lists_every_flag() {
    let (status, out, _) = run_to_exit(&["-h"]);
    assert!(status.success(), "{status}");
    for flag in [
        "-b", "-f", "-F", "-l", "-p", "-s", "-u", "-z", "-V", "-v", "-c", "-n",
    ] {
        let listed = out.lines().any(|l| {
            l.trim_start()
                .strip_prefix(flag)
                .is_some_and(|rest| rest.starts_with([' ', '.', ',']))
        });
        assert!(listed, "-h lacks {flag}:\n{out}");
    }
    let (status, out, _) = run_to_exit(&["--help"]);
    assert!(status.success(), "{status}");
    // The long help explains what each sync policy risks.
    assert!(out.contains("power loss"), "{out}");
    assert!(out.contains("SIGUSR1") && out.contains("SIGTERM"), "{out}");
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, needle) in [
        (&["-x"][..], "-x"),
        (&["-p", "notaport"][..], "-p"),
        (&["-p"][..], "-p"),
        (&["-z", "big"][..], "-z"),
        (&["stray"][..], "stray"),
    ] {
        let (status, _, err) = run_to_exit(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("stalkd: "), "{args:?}: {err}");
        assert!(first.contains(needle), "{args:?}: {err}");
        assert!(err.contains("Usage: stalkd"), "{args:?}: {err}");
    }
}

#[test]
fn attached_and_grouped_short_flags() {
    // -VV grouped, -l and -p with attached values.
    let port = free_port(LOCALHOST);
    let (l, p) = ("-l127.0.0.1".to_string(), format!("-p{port}"));
    let mut d = Daemon::spawn(&["-VV", &l, &p], false);
    let mut c = d.connect(SocketAddr::new(LOCALHOST, port));
    c.roundtrip("put 0 0 60 2\r\nhi\r\n", "INSERTED 1\r\n");
    drop(d);

    // A group ending in a value-taking flag takes the next argument.
    let port = free_port(LOCALHOST);
    let p = port.to_string();
    let mut d = Daemon::spawn(&["-VFp", &p, "-Vl", "127.0.0.1"], false);
    let mut c = d.connect(SocketAddr::new(LOCALHOST, port));
    c.roundtrip("put 0 0 60 2\r\nhi\r\n", "INSERTED 1\r\n");
}

#[test]
fn dash_z_limits_the_job_size() {
    let (mut d, addr) = start_tcp(LOCALHOST, &["-z", "10"], false);
    let mut c = d.connect(addr);
    c.roundtrip("put 0 0 60 11\r\n01234567890\r\n", "JOB_TOO_BIG\r\n");
    c.roundtrip("put 0 0 60 10\r\n0123456789\r\n", "INSERTED 1\r\n");
    assert!(c.stats().contains("max-job-size: 10\n"));
}

#[test]
fn compatibility_flags_are_accepted() {
    let (mut d, addr) = start_tcp(LOCALHOST, &["-c", "-n", "-f", "0", "-s", "4096"], false);
    d.connect(addr)
        .roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 1\r\n");
}

// ---------------------------------------------------------------------------
// Sockets.

#[test]
fn unix_socket_and_stale_socket_replaced() {
    let dir = TempDir::new();
    let path = dir.0.join("stalkd.sock");
    let listen = format!("unix:{}", path.display());

    let mut d = Daemon::spawn(&["-l", &listen], false);
    d.connect_unix(&path)
        .roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 1\r\n");
    // kill -9 leaves the socket file behind.
    d.signal(libc::SIGKILL);
    d.wait_exit(WAIT).expect("exit after SIGKILL");
    assert!(path.exists(), "socket file should survive SIGKILL");

    // The stale file is replaced on restart.
    let mut d = Daemon::spawn(&["-l", &listen], false);
    let mut c = d.connect_unix(&path);
    c.roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 1\r\n");

    // A live server's socket is not taken over.
    let (status, _, err) = run_to_exit(&["-l", &listen]);
    assert!(!status.success());
    assert!(err.contains(&listen) && err.contains("in use"), "{err}");
    c.roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 2\r\n");

    // A graceful stop removes the file.
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(WAIT).expect("exit after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!path.exists(), "socket file should be removed on SIGTERM");
}

#[test]
fn unix_socket_path_that_is_not_a_socket_is_refused() {
    let dir = TempDir::new();
    let path = dir.0.join("precious.txt");
    std::fs::write(&path, "keep me").unwrap();
    let (status, _, err) = run_to_exit(&["-l", &format!("unix:{}", path.display())]);
    assert_eq!(status.code(), Some(111), "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[test]
fn ipv6_loopback() {
    if !ipv6_available() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let (mut d, addr) = start_tcp(LOCALHOST6, &[], false);
    let mut c = d.connect(addr);
    c.roundtrip("put 0 0 60 2\r\nv6\r\n", "INSERTED 1\r\n");
    c.roundtrip("reserve\r\n", "RESERVED 1 2\r\nv6\r\n");
}

#[test]
fn ipv6_wildcard_accepts_ipv4_too() {
    if !ipv6_available() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let port = free_port(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let p = port.to_string();
    let mut d = Daemon::spawn(&["-l", "::", "-p", &p], false);
    let mut v6 = d.connect(SocketAddr::new(LOCALHOST6, port));
    let mut v4 = d.connect(SocketAddr::new(LOCALHOST, port));
    v6.roundtrip("put 0 0 60 1\r\na\r\n", "INSERTED 1\r\n");
    v4.roundtrip("put 0 0 60 1\r\nb\r\n", "INSERTED 2\r\n");
}

#[test]
fn address_in_use_is_one_clear_line() {
    let taken = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (status, _, err) = run_to_exit(&["-l", "127.0.0.1", "-p", &port]);
    assert_eq!(status.code(), Some(111), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.to_lowercase().contains("in use"), "{err}");
}

#[test]
fn open_file_limit_is_raised_to_the_hard_limit() {
    let port = free_port(LOCALHOST);
    let p = port.to_string();
    let mut cmd = command(&["-l", "127.0.0.1", "-p", &p], false);
    // SAFETY: setrlimit is async-signal-safe; only the child is affected.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = lim.rlim_max.min(256);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let mut d = Daemon::spawn_cmd(cmd);
    drop(d.connect(SocketAddr::new(LOCALHOST, port)));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "soft limit not raised: {line}");
}

/// Minor page faults of the daemon so far (`/proc/PID/stat`, field 10).
fn minor_faults(d: &Daemon) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    after_name
        .split_whitespace()
        .nth(7)
        .unwrap()
        .parse()
        .unwrap()
}

/// Page faults while 4 clients each put 3 bodies of 65,000 bytes, then
/// reserve and delete them, 30 times over (360 jobs), after a warm-up of two
/// rounds of one job each. (Under glibc's adaptive thresholds, the live heap
/// swinging by 780 KB is what makes it trim and regrow.)
fn big_body_churn_faults(env: &[(&str, &str)]) -> u64 {
    let port = free_port(LOCALHOST);
    let p = port.to_string();
    let mut cmd = command(&["-l", "127.0.0.1", "-p", &p], false);
    cmd.env_remove("GLIBC_TUNABLES");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MALLOC_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut d = Daemon::spawn_cmd(cmd);
    let addr = SocketAddr::new(LOCALHOST, port);
    let mut conns: Vec<Conn> = (0..4).map(|_| d.connect(addr)).collect();
    let body = "b".repeat(65_000);
    let mut next_id = 1;
    let mut round = |conns: &mut [Conn], per_conn: usize| {
        for _ in 0..per_conn {
            for c in conns.iter_mut() {
                c.roundtrip(
                    &format!("put 0 0 60 65000\r\n{body}\r\n"),
                    &format!("INSERTED {next_id}\r\n"),
                );
                next_id += 1;
            }
        }
        for _ in 0..per_conn {
            for c in conns.iter_mut() {
                c.send("reserve\r\n");
                let head = c.line();
                let id = head.split(' ').nth(1).unwrap().to_string();
                c.expect(&format!("{body}\r\n"));
                c.roundtrip(&format!("delete {id}\r\n"), "DELETED\r\n");
            }
        }
    };
    round(&mut conns, 1);
    round(&mut conns, 1);
    let before = minor_faults(&d);
    for _ in 0..30 {
        round(&mut conns, 3);
    }
    minor_faults(&d) - before
}

#[test]
fn big_bodies_reuse_heap_memory_instead_of_faulting_it_back_in() {
    // glibc's defaults trim the heap top after every large free; stalkd
    // raises the thresholds at start-up (about 9 faults per job without).
    let tuned = big_body_churn_faults(&[]);
    assert!(
        tuned < 360,
        "{tuned} page faults for 360 jobs of 65,000 bytes"
    );
    // An administrator's own settings of these thresholds are left alone:
    // here glibc's default top pad, which also fixes the thresholds at
    // glibc's defaults (128 KiB).
    let admin = big_body_churn_faults(&[("MALLOC_TOP_PAD_", "131072")]);
    assert!(
        admin > 3 * 360,
        "MALLOC_TOP_PAD_ ignored? {admin} faults (tuned: {tuned})"
    );
}

/// The daemon's resident memory in bytes.
fn rss(d: &Daemon) -> u64 {
    common::rss_of(d.pid() as u32)
}

#[test]
fn a_drained_backlog_gives_its_memory_back() {
    // beanstalkd keeps the memory of its biggest backlog for ever (its
    // issues #205, #642, #649). stalkd shrinks its job table and asks the
    // allocator to return the freed heap once half of it is free.
    let (mut d, addr) = start_tcp(LOCALHOST, &[], false);
    let mut c = d.connect(addr);
    c.roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 1\r\n");
    c.roundtrip("delete 1\r\n", "DELETED\r\n");
    let base = rss(&d);
    let body = "m".repeat(200);
    let (jobs, batch) = (100_000u64, 1_000u64);
    for first in (2..2 + jobs).step_by(batch as usize) {
        let puts: String = (0..batch)
            .map(|_| format!("put 0 0 60 200\r\n{body}\r\n"))
            .collect();
        c.send(&puts);
        for id in first..first + batch {
            assert_eq!(c.line(), format!("INSERTED {id}\r\n"));
        }
    }
    let peak = rss(&d);
    assert!(peak > base + jobs * 250, "{base} -> {peak}: jobs not held?");
    for first in (2..2 + jobs).step_by(batch as usize) {
        let deletes: String = (first..first + batch)
            .map(|id| format!("delete {id}\r\n"))
            .collect();
        c.send(&deletes);
        for _ in 0..batch {
            assert_eq!(c.line(), "DELETED\r\n");
        }
    }
    // The allocator is asked on a thread of its own: allow it a moment.
    let goal = base + (peak - base) / 4;
    let end = Instant::now() + WAIT;
    let mut now = rss(&d);
    while now > goal && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        now = rss(&d);
    }
    assert!(
        now <= goal,
        "RSS {base} before, {peak} with {jobs} jobs, still {now} after deleting them"
    );
    c.roundtrip(
        "put 0 0 60 1\r\ny\r\n",
        &format!("INSERTED {}\r\n", jobs + 2),
    );
}

// ---------------------------------------------------------------------------
// Signals.

#[test]
fn sigusr1_drains() {
    let (mut d, addr) = start_tcp(LOCALHOST, &[], false);
    let mut c = d.connect(addr);
    c.roundtrip("put 0 0 60 3\r\none\r\n", "INSERTED 1\r\n");
    assert!(c.stats().contains("draining: false\n"));

    d.signal(libc::SIGUSR1);
    // The signal is handled asynchronously: wait for it to show.
    let end = Instant::now() + WAIT;
    while !c.stats().contains("draining: true\n") {
        assert!(Instant::now() < end, "stats never showed draining: true");
        std::thread::sleep(Duration::from_millis(10));
    }
    c.roundtrip("put 0 0 60 3\r\ntwo\r\n", "DRAINING\r\n");
    // Everything else keeps working.
    c.roundtrip("reserve\r\n", "RESERVED 1 3\r\none\r\n");
    c.roundtrip("delete 1\r\n", "DELETED\r\n");
    c.roundtrip("use other\r\n", "USING other\r\n");
    let mut fresh = d.connect(addr);
    fresh.roundtrip("put 0 0 60 1\r\nx\r\n", "DRAINING\r\n");
    d.assert_running();
}

#[test]
fn sigterm_answers_what_arrived_then_exits_0_quickly() {
    let (mut d, addr) = start_tcp(LOCALHOST, &[], true);
    let mut active = d.connect(addr);
    active.roundtrip("put 0 0 60 3\r\none\r\n", "INSERTED 1\r\n");
    let mut blocked = d.connect(addr);
    blocked.roundtrip("watch empty\r\n", "WATCHING 2\r\n");
    blocked.roundtrip("ignore default\r\n", "WATCHING 1\r\n");
    blocked.send("reserve\r\n");
    let mut idle = d.connect(addr);
    idle.roundtrip("list-tube-used\r\n", "USING default\r\n");

    // A command in flight when the signal arrives is still answered.
    active.send("put 0 0 60 3\r\ntwo\r\n");
    let signalled = Instant::now();
    d.signal(libc::SIGTERM);
    active.expect("INSERTED 2\r\n");
    active.expect_closed();
    // The blocked reserve and the idle connection are simply closed.
    blocked.expect_closed();
    idle.expect_closed();

    let status = d.wait_exit(WAIT).expect("no exit after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "slow stop: {:?}",
        signalled.elapsed()
    );
    let log = d.stderr();
    assert!(log.contains(&format!("stalkd {VERSION}")), "{log}");
    assert!(log.contains(&addr.to_string()), "{log}");
    assert!(log.contains("binlog: off"), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    // New connections are refused once stopped.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn sigterm_finishes_a_pipelined_batch() {
    let (mut d, addr) = start_tcp(LOCALHOST, &[], false);
    let mut c = d.connect(addr);
    c.roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 1\r\n");
    let n = 3000;
    c.send(&"put 0 0 60 1\r\nx\r\n".repeat(n));
    d.signal(libc::SIGTERM);
    // Every reply arrives whole: the session stops only between batches,
    // and what had arrived before the signal is answered.
    let replies = c.read_to_close();
    let expected: String = (2..n + 2).map(|id| format!("INSERTED {id}\r\n")).collect();
    assert_eq!(replies, expected);
    let status = d.wait_exit(WAIT).expect("no exit after SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn sigint_exits_0() {
    let (mut d, addr) = start_tcp(LOCALHOST, &[], false);
    let mut c = d.connect(addr);
    c.roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 1\r\n");
    d.signal(libc::SIGINT);
    c.expect_closed();
    let status = d.wait_exit(WAIT).expect("no exit after SIGINT");
    assert!(status.success(), "{status}");
}

// ---------------------------------------------------------------------------
// Logging, privileges, socket activation.

#[test]
fn dash_vv_logs_every_command_and_reply_without_bodies() {
    let (mut d, addr) = start_tcp(LOCALHOST, &["-VV"], true);
    let mut c = d.connect(addr);
    c.roundtrip("put 5 0 60 6\r\nzqzqzq\r\n", "INSERTED 1\r\n");
    c.roundtrip("reserve\r\n", "RESERVED 1 6\r\nzqzqzq\r\n");
    c.roundtrip("delete 1\r\n", "DELETED\r\n");
    c.roundtrip("frobnicate\r\n", "UNKNOWN_COMMAND\r\n");
    c.send("quit\r\n");
    c.expect_closed();
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).expect("exit").success());
    let log = d.stderr();
    let lines = [
        "<- put 5 0 60 6",
        "-> INSERTED 1",
        "<- reserve",
        "-> RESERVED 1 6",
        "<- delete 1",
        "-> DELETED",
        "-> UNKNOWN_COMMAND",
        "<- quit",
    ];
    let mut from = 0;
    for line in lines {
        let at = log[from..]
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} in order: {log}"));
        from += at + line.len();
    }
    assert!(!log.contains("zqzq"), "bodies are not logged: {log}");
}

#[test]
fn dash_v_upper_logs_connections_at_debug() {
    let (mut d, addr) = start_tcp(LOCALHOST, &["-V"], true);
    d.connect(addr)
        .roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 1\r\n");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).expect("exit").success());
    let log = d.stderr();
    assert!(log.contains("connection opened"), "{log}");
    assert!(log.contains("connection closed"), "{log}");
    assert!(!log.contains("<- put"), "commands only with -VV: {log}");
    assert!(
        !log.contains("\x1b["),
        "no colours when stderr is not a terminal"
    );

    // Without -V, connections are not logged.
    let (mut d, addr) = start_tcp(LOCALHOST, &[], true);
    drop(d.connect(addr));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).expect("exit").success());
    assert!(!d.stderr().contains("connection opened"));
}

#[test]
fn unknown_user_is_refused() {
    let port = free_port(LOCALHOST).to_string();
    let (status, _, err) = run_to_exit(&["-l", "127.0.0.1", "-p", &port, "-u", "no-such-user-x"]);
    assert_eq!(status.code(), Some(32), "{err}");
    assert!(err.contains("no-such-user-x"), "{err}");
}

#[test]
fn dash_u_drops_privileges_after_binding() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let Some((uid, gid)) = passwd_ids("nobody") else {
        eprintln!("skipped: no user nobody");
        return;
    };
    // The binlog directory belongs to the user, as an operator would set it.
    let dir = TempDir::new();
    std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid)).unwrap();
    let binlog = dir.0.to_str().unwrap();

    // A port below 1024, which only root can bind: serving on it as nobody
    // shows the privileges were dropped after binding. Concurrent test runs
    // may race for the port, so a start that fails or answers with another
    // pid moves on to the next candidate.
    let mut started = None;
    for attempt in 0..20 {
        let port = 600 + (std::process::id() * 7 + attempt * 37) % 400;
        let port = u16::try_from(port).unwrap();
        if TcpListener::bind((LOCALHOST, port)).is_err() {
            continue;
        }
        let p = port.to_string();
        let mut d = Daemon::spawn(
            &["-l", "127.0.0.1", "-p", &p, "-u", "nobody", "-b", binlog],
            false,
        );
        let addr = SocketAddr::new(LOCALHOST, port);
        let end = Instant::now() + WAIT;
        let conn = loop {
            if d.child.try_wait().unwrap().is_some() {
                break None;
            }
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                break Some(Conn::new(Box::new(s)));
            }
            assert!(Instant::now() < end, "stalkd -u nobody never listened");
            std::thread::sleep(Duration::from_millis(20));
        };
        let Some(mut c) = conn else { continue };
        if c.stats().contains(&format!("\npid: {}\n", d.pid())) {
            started = Some((d, c));
            break;
        }
    }
    let Some((d, mut c)) = started else {
        panic!("could not start stalkd on a privileged port");
    };
    c.roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 1\r\n");

    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        field("Uid:").iter().all(|u| *u == uid.to_string()),
        "{status}"
    );
    assert!(
        field("Gid:").iter().all(|g| *g == gid.to_string()),
        "{status}"
    );
    // Root's supplementary groups are gone too.
    assert_eq!(field("Groups:"), vec![gid.to_string()], "{status}");
    // The binlog was opened after the drop: its files belong to the user.
    let mut files = 0;
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid);
        files += 1;
    }
    assert!(files > 0, "no binlog files in {binlog}");
}

/// uid and gid of `user`, from /etc/passwd.
fn passwd_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user)).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

#[test]
fn systemd_socket_activation() {
    // Hold the socket open, as systemd does, and pass it as fd 3.
    let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    // `sh` sets LISTEN_PID to its own pid, which `exec` hands to stalkd.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(BIN)
        // Ignored in favour of the inherited socket.
        .args(["-l", "127.0.0.1", "-p", "1"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut d = Daemon::spawn_cmd(cmd);
    drop(listener);
    let mut c = d.connect(addr);
    c.roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 1\r\n");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(WAIT).expect("exit").success());
    assert!(d.stderr().contains("systemd"));
}

#[test]
fn graceful_stop_keeps_jobs_in_the_binlog() {
    let dir = TempDir::new();
    let binlog = dir.0.to_str().unwrap();
    // -F: never fsync while running; the graceful stop syncs anyway.
    let (mut d, addr) = start_tcp(LOCALHOST, &["-b", binlog, "-F"], true);
    let mut c = d.connect(addr);
    c.roundtrip("put 5 0 60 4\r\nkeep\r\n", "INSERTED 1\r\n");
    d.signal(libc::SIGTERM);
    c.expect_closed();
    assert!(d.wait_exit(WAIT).expect("exit").success());
    let log = d.stderr();
    assert!(
        log.contains(&format!("binlog: {binlog} (never fsync")),
        "{log}"
    );

    let (mut d, addr) = start_tcp(LOCALHOST, &["-b", binlog], false);
    let mut c = d.connect(addr);
    c.roundtrip("reserve-with-timeout 0\r\n", "RESERVED 1 4\r\nkeep\r\n");
    c.roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 2\r\n");
}

#[test]
fn missing_binlog_directory_is_refused() {
    let dir = TempDir::new();
    let missing = dir.0.join("nope");
    let missing = missing.to_str().unwrap();
    let port = free_port(LOCALHOST).to_string();
    let (status, _, err) = run_to_exit(&["-l", "127.0.0.1", "-p", &port, "-b", missing]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(missing), "{err}");
}

#[test]
fn out_of_file_descriptors_neither_crashes_nor_spins() {
    let port = free_port(LOCALHOST);
    let p = port.to_string();
    let mut cmd = command(&["-l", "127.0.0.1", "-p", &p], false);
    // A hard limit the server cannot raise: a few dozen descriptors.
    // SAFETY: setrlimit is async-signal-safe; only the child is affected.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut d = Daemon::spawn_cmd(cmd);
    let addr = SocketAddr::new(LOCALHOST, port);
    let mut first = d.connect(addr);
    first.roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 1\r\n");
    // More connections than descriptors: the kernel queues them, the server
    // runs out of descriptors accepting them.
    let mut extra: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap();
        // Fields after the ")" that ends the command name: utime is the
        // 12th, stime the 13th (clock ticks).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|x| x.parse().unwrap())
            .collect();
        f[0] + f[1]
    };
    let before = cpu();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu() - before;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(used * 4 < ticks, "spinning: {used} of {ticks} ticks in 1 s");

    // Still alive and serving the connections it has.
    d.assert_running();
    first.roundtrip("reserve-with-timeout 0\r\n", "RESERVED 1 1\r\nx\r\n");
    // Once descriptors are free again, new clients are served.
    extra.clear();
    drop(first);
    let mut later = d.connect(addr);
    later.roundtrip("put 0 0 60 1\r\ny\r\n", "INSERTED 2\r\n");
}
