//! Test harness: a stalkd server in-process on 127.0.0.1:0 with a manual
//! clock, and a raw-bytes client that asserts exact replies.
#![allow(dead_code)]

mod rng;
#[allow(unused_imports)] // not every test binary uses it
pub use rng::Rng;

use stalkd::clock::Clock;
use stalkd::config::{Config, Listen};
use stalkd::engine::HostInfo;
use stalkd::hub::Hub;
use stalkd::server::{LocalAddr, Server, StartupError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a reply may take before a test fails (generous: no test waits
/// this long when it passes).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a test watches for a reply that must not come.
pub const SILENCE: Duration = Duration::from_millis(100);

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    clock: Clock,
    /// Ends the serving task (graceful stop; see `stop`).
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server with default settings on 127.0.0.1:0.
    pub async fn start() -> TestServer {
        TestServer::start_with(Config::default()).await
    }

    /// A server with `config`, listening on 127.0.0.1:0 whatever it says.
    pub async fn start_with(config: Config) -> TestServer {
        TestServer::start_with_clock(config, Clock::manual()).await
    }

    /// As [`TestServer::start_with`], with `clock` instead of a manual one
    /// (`Clock::system()` for the few real-time tests; `advance` then has no
    /// effect on time).
    pub async fn start_with_clock(config: Config, clock: Clock) -> TestServer {
        TestServer::try_start(config, clock)
            .await
            .expect("bind test server")
    }

    /// As [`TestServer::start_with_clock`], returning the start-up error
    /// (a bad binlog dir, say) instead of panicking. A restarted server is
    /// given its predecessor's clock, so time goes on across the restart.
    pub async fn try_start(mut config: Config, clock: Clock) -> Result<TestServer, StartupError> {
        config.listen = Listen::Tcp {
            host: "127.0.0.1".into(),
            port: 0,
        };
        let server = Server::bind(&config, clock.clone(), HostInfo::fixed()).await?;
        let LocalAddr::Tcp(addr) = server.local_addr().unwrap() else {
            unreachable!()
        };
        let hub = server.hub();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(TestServer {
            addr,
            hub,
            clock,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Serves `hub` (built by the test, e.g. over a fault-injecting binlog)
    /// on 127.0.0.1:0. No timer task: time moves with [`TestServer::advance`].
    pub async fn serve_hub(hub: Arc<Hub>, clock: Clock, max_job_size: u32) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = oneshot::channel::<()>();
        let serving = hub.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let (stream, _) = accepted.expect("accept");
                        serving.sessions().spawn(|slot| {
                            stalkd::session::run(serving.clone(), stream, max_job_size, slot)
                        });
                    }
                    _ = &mut rx => return serving.sessions().stop(),
                }
            }
        });
        TestServer {
            addr,
            hub,
            clock,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The server's clock; give it to the next server of a restart.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Graceful stop: stops listening, syncs and closes the binlog, which
    /// releases its directory for the next server. Drop clients first.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
        drop(self.hub.with_engine(|e| e.take_journal()));
    }

    /// As if the process were killed: the binlog is closed without a sync
    /// (what was written is in the kernel, as after kill -9). Unlike kill -9,
    /// closing trims the segment's unused reserved space; the zeros a real
    /// kill leaves are covered by `tests/crash.rs` and the recovery tests.
    pub fn crash(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        drop(self.hub.with_engine(|e| e.take_journal()));
    }

    pub async fn client(&self) -> Client {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    /// Moves the server's clock forward and runs every timer now due.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.hub.tick();
        self.hub.with_engine(|e| e.check_invariants());
    }

    pub fn advance_secs(&self, secs: u64) {
        self.advance(Duration::from_secs(secs));
    }

    /// Waits until exactly `n` clients are blocked in reserve, so a test
    /// can move the clock knowing a reserve it sent has been processed.
    pub async fn wait_for_waiters(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let waiting = self.hub.with_engine(|e| e.waiting_count());
            if waiting == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{waiting} clients waiting, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn check_invariants(&self) {
        self.hub.with_engine(|e| e.check_invariants());
    }
}

pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.expect("send");
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    pub async fn expect(&mut self, expected: impl AsRef<[u8]>) {
        let expected = expected.as_ref();
        let mut got = vec![0u8; expected.len()];
        let mut filled = 0;
        while filled < got.len() {
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read(&mut got[filled..]))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out waiting for {:?}; got so far {:?}",
                        String::from_utf8_lossy(expected),
                        String::from_utf8_lossy(&got[..filled])
                    )
                })
                .expect("read");
            assert!(
                n > 0,
                "connection closed; expected {:?}, got {:?}",
                String::from_utf8_lossy(expected),
                String::from_utf8_lossy(&got[..filled])
            );
            filled += n;
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "reply bytes differ"
        );
    }

    /// Sends `request` and asserts the reply is exactly `reply`.
    pub async fn roundtrip(&mut self, request: impl AsRef<[u8]>, reply: impl AsRef<[u8]>) {
        self.send(request).await;
        self.expect(reply).await;
    }

    /// Asserts nothing arrives for a short while.
    pub async fn expect_silence(&mut self) {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(SILENCE, self.stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) => panic!("connection closed while expecting silence"),
            Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
            Ok(Err(e)) => panic!("read error: {e}"),
        }
    }

    /// Asserts the server closes the connection without sending anything more.
    pub async fn expect_closed(&mut self) {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(REPLY_TIMEOUT, self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(_) => panic!("connection not closed"),
        }
    }

    /// Sends a command whose reply is `OK <n>\r\n<yaml>\r\n` and returns the YAML.
    pub async fn yaml(&mut self, request: impl AsRef<[u8]>) -> String {
        self.send(request).await;
        let mut header = Vec::new();
        while !header.ends_with(b"\r\n") {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read(&mut b))
                .await
                .expect("timed out reading OK header")
                .expect("read");
            assert!(n == 1, "closed while reading OK header");
            header.push(b[0]);
        }
        let header = String::from_utf8(header).unwrap();
        let len: usize = header
            .strip_prefix("OK ")
            .and_then(|s| s.strip_suffix("\r\n"))
            .unwrap_or_else(|| panic!("expected OK <n>, got {header:?}"))
            .parse()
            .unwrap();
        let mut body = vec![0u8; len + 2];
        tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_exact(&mut body))
            .await
            .expect("timed out reading OK body")
            .expect("read");
        assert!(body.ends_with(b"\r\n"), "OK body must end with CRLF");
        body.truncate(len);
        String::from_utf8(body).unwrap()
    }

    /// One field of a stats YAML body.
    pub async fn stat(&mut self, request: impl AsRef<[u8]>, key: &str) -> String {
        let yaml = self.yaml(request).await;
        field(&yaml, key)
    }
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "stalkd-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The value of `key` in a `key: value` YAML body.
/// A process's resident memory in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_of(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

pub fn field(yaml: &str, key: &str) -> String {
    yaml.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {key} in {yaml}"))
        .to_string()
}

/// The exact reply `OK <n>\r\n<yaml>\r\n` for a YAML body.
pub fn ok(yaml: &str) -> String {
    format!("OK {}\r\n{yaml}\r\n", yaml.len())
}

/// The YAML body of `stats-job` for a job whose counters are all 0 unless
/// changed with the builder methods.
#[derive(Debug, Clone)]
pub struct JobStats {
    pub id: u64,
    pub tube: String,
    pub state: &'static str,
    pub pri: u32,
    pub age: u64,
    pub delay: u32,
    pub ttr: u32,
    pub time_left: u64,
    pub reserves: u32,
    pub timeouts: u32,
    pub releases: u32,
    pub buries: u32,
    pub kicks: u32,
}

impl JobStats {
    pub fn new(id: u64, state: &'static str, pri: u32, delay: u32, ttr: u32) -> JobStats {
        JobStats {
            id,
            tube: "default".into(),
            state,
            pri,
            age: 0,
            delay,
            ttr,
            time_left: 0,
            reserves: 0,
            timeouts: 0,
            releases: 0,
            buries: 0,
            kicks: 0,
        }
    }

    pub fn tube(mut self, tube: &str) -> Self {
        self.tube = tube.into();
        self
    }
    pub fn age(mut self, age: u64) -> Self {
        self.age = age;
        self
    }
    pub fn time_left(mut self, t: u64) -> Self {
        self.time_left = t;
        self
    }
    pub fn reserves(mut self, n: u32) -> Self {
        self.reserves = n;
        self
    }
    pub fn timeouts(mut self, n: u32) -> Self {
        self.timeouts = n;
        self
    }
    pub fn releases(mut self, n: u32) -> Self {
        self.releases = n;
        self
    }
    pub fn buries(mut self, n: u32) -> Self {
        self.buries = n;
        self
    }
    pub fn kicks(mut self, n: u32) -> Self {
        self.kicks = n;
        self
    }

    /// The full `OK …` reply.
    pub fn reply(&self) -> String {
        ok(&format!(
            "---\nid: {}\ntube: {}\nstate: {}\npri: {}\nage: {}\ndelay: {}\nttr: {}\ntime-left: {}\nfile: 0\nreserves: {}\ntimeouts: {}\nreleases: {}\nburies: {}\nkicks: {}\n",
            self.id,
            self.tube,
            self.state,
            self.pri,
            self.age,
            self.delay,
            self.ttr,
            self.time_left,
            self.reserves,
            self.timeouts,
            self.releases,
            self.buries,
            self.kicks
        ))
    }
}

/// The YAML body of `stats-tube` for an idle tube, to be changed field by field.
#[derive(Debug, Clone)]
pub struct TubeStats {
    pub name: String,
    pub urgent: u64,
    pub ready: u64,
    pub reserved: u64,
    pub delayed: u64,
    pub buried: u64,
    pub total_jobs: u64,
    pub using: u64,
    pub watching: u64,
    pub waiting: u64,
    pub cmd_delete: u64,
    pub cmd_pause: u64,
    pub pause: u64,
    pub pause_left: u64,
}

impl TubeStats {
    pub fn new(name: &str) -> TubeStats {
        TubeStats {
            name: name.into(),
            urgent: 0,
            ready: 0,
            reserved: 0,
            delayed: 0,
            buried: 0,
            total_jobs: 0,
            using: 0,
            watching: 0,
            waiting: 0,
            cmd_delete: 0,
            cmd_pause: 0,
            pause: 0,
            pause_left: 0,
        }
    }

    /// The full `OK …` reply.
    pub fn reply(&self) -> String {
        ok(&format!(
            "---\nname: {}\ncurrent-jobs-urgent: {}\ncurrent-jobs-ready: {}\ncurrent-jobs-reserved: {}\ncurrent-jobs-delayed: {}\ncurrent-jobs-buried: {}\ntotal-jobs: {}\ncurrent-using: {}\ncurrent-watching: {}\ncurrent-waiting: {}\ncmd-delete: {}\ncmd-pause-tube: {}\npause: {}\npause-time-left: {}\n",
            self.name,
            self.urgent,
            self.ready,
            self.reserved,
            self.delayed,
            self.buried,
            self.total_jobs,
            self.using,
            self.watching,
            self.waiting,
            self.cmd_delete,
            self.cmd_pause,
            self.pause,
            self.pause_left
        ))
    }
}

/// The bytes of `put <pri> <delay> <ttr> <len>` followed by `body`.
pub fn put(pri: u32, delay: u32, ttr: u32, body: &str) -> String {
    format!("put {pri} {delay} {ttr} {}\r\n{body}\r\n", body.len())
}

/// Sends each request and asserts its exact reply, in order.
pub async fn exchange(c: &mut Client, cases: &[(&[u8], &[u8])]) {
    for (request, reply) in cases {
        c.send(request).await;
        c.expect(reply).await;
    }
}
