//! Resource limits, abuse and load: what a broken, slow, hostile or very
//! numerous client can cost the server, and that it never costs another
//! client its service or a job.
//!
//! Tests that measure memory run the real binary (its RSS, from
//! `/proc/<pid>/status`, is the server's alone); the rest use the in-process
//! harness. Everything is on 127.0.0.1 and bounded in count and time. The
//! tests with thousands of sockets, and the timing comparison, take the
//! [`heavy`] lock so they neither share the fd limit nor the CPU.
//!
//! Every number the tests measure is printed (`cargo test --test hardening
//! -- --nocapture`); protocol.md §4 quotes them.
#![cfg(target_os = "linux")]

mod common;

use common::{Client, Rng, TestServer};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_stalkd");

/// Upper bound for the server to start or answer.
const WAIT: Duration = Duration::from_secs(5);

/// A well-behaved client's put/reserve/delete must finish within this while
/// another client misbehaves (generous: debug build, 2 shared cores).
const PROMPT: Duration = Duration::from_millis(500);

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

static HEAVY: Mutex<()> = Mutex::new(());

/// Serialises the tests that open thousands of sockets or time things.
fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// The real binary.

/// A running stalkd on 127.0.0.1; killed and reaped on drop.
struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts stalkd on a free loopback port with `extra` flags, once it
    /// accepts connections.
    fn start(extra: &[&str]) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(BIN)
            .args(["-l", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stalkd");
        let mut d = Daemon {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let end = Instant::now() + WAIT;
        while let Err(e) = TcpStream::connect(d.addr) {
            d.assert_running();
            assert!(Instant::now() < end, "stalkd does not accept: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("stalkd exited with {status}");
        }
    }

    fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// The server's resident set size, in bytes.
    fn rss(&self) -> u64 {
        common::rss_of(self.child.id())
    }
}

/// A blocking raw-bytes client; every read is bounded by [`WAIT`].
struct Conn {
    s: TcpStream,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn { s }
    }

    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.s.write_all(bytes.as_ref()).expect("send");
    }

    /// Reads exactly `want.len()` bytes and asserts they are `want`.
    fn expect(&mut self, want: impl AsRef<[u8]>) {
        let want = want.as_ref();
        let mut got = vec![0u8; want.len()];
        self.s
            .read_exact(&mut got)
            .unwrap_or_else(|e| panic!("reading {:?}: {e}", String::from_utf8_lossy(want)));
        assert!(
            got == want,
            "got {:?}, expected {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        );
    }

    fn roundtrip(&mut self, request: impl AsRef<[u8]>, reply: impl AsRef<[u8]>) {
        self.send(request);
        self.expect(reply);
    }

    /// One reply line, without its CRLF.
    fn line(&mut self) -> String {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            let mut b = [0u8; 1];
            self.s.read_exact(&mut b).expect("read line");
            line.push(b[0]);
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).expect("ASCII reply")
    }

    /// One numeric field of `stats`.
    fn stat(&mut self, key: &str) -> u64 {
        self.send("stats\r\n");
        let header = self.line();
        let len: usize = header
            .strip_prefix("OK ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad stats header {header:?}"));
        let mut body = vec![0u8; len + 2];
        self.s.read_exact(&mut body).expect("stats body");
        let yaml = String::from_utf8(body).unwrap();
        common::field(&yaml, key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number"))
    }

    /// Polls `stats` until `key` is `want` (bounded by [`WAIT`]).
    fn wait_stat(&mut self, key: &str, want: u64) {
        let end = Instant::now() + WAIT;
        loop {
            let got = self.stat(key);
            if got == want {
                return;
            }
            assert!(Instant::now() < end, "{key} is {got}, expected {want}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A well-behaved client on its own tube: each [`Probe::round`] is a
/// put/reserve/delete that must finish within [`PROMPT`].
struct Probe {
    c: Conn,
    worst: Duration,
    rounds: u32,
}

impl Probe {
    fn new(addr: SocketAddr) -> Probe {
        let mut c = Conn::connect(addr);
        c.roundtrip("use probe\r\n", "USING probe\r\n");
        c.roundtrip("watch probe\r\n", "WATCHING 2\r\n");
        c.roundtrip("ignore default\r\n", "WATCHING 1\r\n");
        Probe {
            c,
            worst: Duration::ZERO,
            rounds: 0,
        }
    }

    fn round(&mut self) {
        let start = Instant::now();
        self.c.send("put 0 0 60 4\r\nping\r\n");
        let inserted = self.c.line();
        let id = inserted
            .strip_prefix("INSERTED ")
            .unwrap_or_else(|| panic!("expected INSERTED, got {inserted:?}"));
        self.c
            .roundtrip("reserve\r\n", format!("RESERVED {id} 4\r\nping\r\n"));
        self.c.roundtrip(format!("delete {id}\r\n"), "DELETED\r\n");
        let took = start.elapsed();
        self.worst = self.worst.max(took);
        self.rounds += 1;
        assert!(took < PROMPT, "a put/reserve/delete took {took:?}");
    }
}

/// A runtime like `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`,
/// for tests that take the [`heavy`] lock first.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Raises this process's soft open-file limit to the hard one; returns the
/// new limit.
fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) },
        0,
        "getrlimit"
    );
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; the call only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return 0;
        }
    }
    lim.rlim_cur
}

/// Runs `writer` on a thread while the main thread keeps a [`Probe`] going;
/// returns what `writer` returned.
fn while_probing<T: Send + 'static>(
    probe: &mut Probe,
    writer: impl FnOnce() -> T + Send + 'static,
) -> T {
    let writer = std::thread::spawn(writer);
    while !writer.is_finished() {
        probe.round();
        std::thread::sleep(Duration::from_millis(2));
    }
    writer.join().expect("writer thread")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

// ---------------------------------------------------------------------------
// Resource limits.

/// 10 MiB without a CRLF: the server discards as it reads, answers one
/// BAD_FORMAT when the CRLF comes, and its memory does not grow.
#[test]
fn endless_line_is_discarded_in_bounded_memory() {
    let d = Daemon::start(&[]);
    let mut probe = Probe::new(d.addr);
    probe.round();
    let base = d.rss();

    let mut abuser = d.conn();
    let sent = 10 * MIB;
    let mut stream = abuser.s.try_clone().unwrap();
    while_probing(&mut probe, move || {
        stream.write_all(b"use ").unwrap();
        let chunk = vec![b'a'; 64 * KIB as usize];
        for _ in 0..sent / chunk.len() as u64 {
            stream.write_all(&chunk).unwrap();
        }
    });
    // Nothing was answered yet: the line has not ended.
    abuser.s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        abuser.s.read(&mut b).map_err(|e| e.kind()),
        Err(io::ErrorKind::WouldBlock),
        "no reply before the CRLF"
    );
    abuser.s.set_nonblocking(false).unwrap();
    abuser.roundtrip("\r\n", "BAD_FORMAT\r\n");
    // Everything sent has been read: measure now.
    let peak = d.rss();
    abuser.roundtrip("list-tube-used\r\n", "USING default\r\n");
    probe.round();

    let growth = peak.saturating_sub(base);
    println!(
        "endless line: {} MiB sent, RSS {:.1} -> {:.1} MiB (+{} KiB); \
         other client's worst put/reserve/delete {:?} over {} rounds",
        sent / MIB,
        mib(base),
        mib(peak),
        growth / KIB,
        probe.worst,
        probe.rounds
    );
    assert!(growth < 5 * MIB, "RSS grew by {growth} bytes");
}

/// `put` of a 1 GiB body (allowed by -z) that stalls after 8 MiB: others
/// are served throughout, the server holds about what was sent, and gives it
/// back when the client goes.
#[test]
fn body_that_never_ends_holds_what_was_sent_and_no_more() {
    let mut d = Daemon::start(&["-z", "1073741824"]);
    let mut probe = Probe::new(d.addr);
    probe.round();
    let base = d.rss();

    let abuser = d.conn();
    let sent = 8 * MIB;
    let mut stream = abuser.s.try_clone().unwrap();
    while_probing(&mut probe, move || {
        stream.write_all(b"put 0 0 60 1073741824\r\n").unwrap();
        let chunk = vec![b'x'; 64 * KIB as usize];
        for _ in 0..sent / chunk.len() as u64 {
            stream.write_all(&chunk).unwrap();
        }
    });
    // The client stalls; the server keeps serving others.
    let mut peak = 0;
    for _ in 0..20 {
        probe.round();
        peak = peak.max(d.rss());
        std::thread::sleep(Duration::from_millis(10));
    }
    let held = peak.saturating_sub(base);

    drop(abuser);
    probe.c.wait_stat("current-connections", 1);
    probe.round();
    let after = d.rss().saturating_sub(base);
    assert_eq!(probe.c.stat("total-jobs"), u64::from(probe.rounds));
    d.assert_running();
    println!(
        "endless body: {} MiB of a 1 GiB put sent then stalled: RSS +{:.1} MiB while \
         stalled, +{:.1} MiB after close; other client's worst put/reserve/delete {:?}",
        sent / MIB,
        mib(held),
        mib(after),
        probe.worst
    );
    assert!(
        held < 2 * sent + 4 * MIB,
        "held {held} bytes for {sent} sent"
    );
    assert!(after < sent / 2 + 4 * MIB, "{after} bytes kept after close");
}

/// A 64 MiB job under -z 1 GiB streams in without stalling anyone, and
/// comes back intact.
#[test]
fn big_put_streams_in_without_stalling_others() {
    let d = Daemon::start(&["-z", "1073741824"]);
    let mut probe = Probe::new(d.addr);
    let size = 64 * MIB as usize;
    let body: Arc<Vec<u8>> = Arc::new((0..size).map(|i| b'a' + (i % 26) as u8).collect());

    let mut producer = d.conn();
    let mut stream = producer.s.try_clone().unwrap();
    let sent = body.clone();
    let start = Instant::now();
    while_probing(&mut probe, move || {
        stream
            .write_all(format!("put 0 0 60 {size}\r\n").as_bytes())
            .unwrap();
        for chunk in sent.chunks(256 * KIB as usize) {
            stream.write_all(chunk).unwrap();
        }
        stream.write_all(b"\r\n").unwrap();
    });
    let id = producer.line();
    let streamed = start.elapsed();
    let id = id.strip_prefix("INSERTED ").expect("INSERTED").to_string();
    probe.round();

    producer.send(format!("reserve-job {id}\r\n"));
    producer.expect(format!("RESERVED {id} {size}\r\n"));
    let mut got = vec![0u8; size + 2];
    producer.s.read_exact(&mut got).expect("read the job back");
    assert!(
        got[..size] == body[..] && got.ends_with(b"\r\n"),
        "body differs"
    );
    producer.roundtrip(format!("delete {id}\r\n"), "DELETED\r\n");
    println!(
        "big put: {} MiB streamed in {streamed:?}; other client's worst \
         put/reserve/delete meanwhile {:?} over {} rounds",
        size as u64 / MIB,
        probe.worst,
        probe.rounds
    );
    assert!(probe.rounds > 0);
}

/// A command sent one byte every 5 ms is answered once complete, and a
/// client alongside is not slowed down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_trickle_works_and_disturbs_nobody() {
    let server = TestServer::start().await;
    let mut other = server.client().await;
    other.roundtrip("use other\r\n", "USING other\r\n").await;
    let mut slow = server.client().await;
    let request = b"use trickle\r\nput 0 0 10 5\r\nhel\0o\r\nlist-tube-used\r\n";
    let mut worst = Duration::ZERO;
    for (i, &b) in request.iter().enumerate() {
        slow.send([b]).await;
        if i == 8 {
            // Mid-line: nothing may be answered yet.
            slow.expect_silence().await;
        }
        let start = Instant::now();
        other
            .roundtrip("list-tube-used\r\n", "USING other\r\n")
            .await;
        worst = worst.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    slow.expect("USING trickle\r\nINSERTED 1\r\nUSING trickle\r\n")
        .await;
    slow.roundtrip("peek 1\r\n", "FOUND 1 5\r\nhel\0o\r\n")
        .await;
    println!(
        "trickle: {} bytes one at a time; other client's worst reply {worst:?}",
        request.len()
    );
    assert!(worst < PROMPT, "other client waited {worst:?}");
    server.check_invariants();
}

/// A client pipelines thousands of `peek`s of a 64 KiB job, then 32 MiB
/// more, and never reads: the server buffers a bounded amount of replies
/// (not one per peek), stops reading that client's input (its writes block),
/// serves everyone else, and every reply is delivered once the client reads.
#[test]
fn client_that_never_reads_is_held_back_not_buffered() {
    const PEEKS: usize = 2000;
    const SMALL: usize = 10_000;
    const FLOOD: usize = 32 << 20;
    let d = Daemon::start(&[]);
    let mut probe = Probe::new(d.addr);
    let body: Vec<u8> = (0..65535).map(|i| b'0' + (i % 10) as u8).collect();
    let mut setup = d.conn();
    setup.send(format!("put 0 0 60 {}\r\n", body.len()));
    setup.send(&body);
    setup.roundtrip("\r\n", "INSERTED 1\r\n");
    probe.round();
    let base = d.rss();

    let mut abuser = d.conn();
    let mut stream = abuser.s.try_clone().unwrap();
    let flooded = Arc::new(AtomicU64::new(0));
    // Blocks once the kernel buffers are full: that is the back-pressure.
    let writer = std::thread::spawn({
        let flooded = flooded.clone();
        move || {
            stream.write_all(&b"peek 1\r\n".repeat(PEEKS)).unwrap();
            stream
                .write_all(&b"list-tube-used\r\n".repeat(SMALL))
                .unwrap();
            // One over-long line: discarded as read, one BAD_FORMAT.
            let chunk = vec![b'x'; 64 * KIB as usize];
            for _ in 0..FLOOD / chunk.len() {
                stream.write_all(&chunk).unwrap();
                flooded.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            stream.write_all(b"\r\n").unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut peak = 0;
    for _ in 0..20 {
        probe.round();
        peak = peak.max(d.rss());
        std::thread::sleep(Duration::from_millis(10));
    }
    let stuck = !writer.is_finished();
    let accepted = flooded.load(Ordering::SeqCst);
    let held = peak.saturating_sub(base);

    // Now read everything: exactly PEEKS FOUND replies, SMALL USINGs, and
    // the BAD_FORMAT of the flood.
    let mut found = format!("FOUND 1 {}\r\n", body.len()).into_bytes();
    found.extend_from_slice(&body);
    found.extend_from_slice(b"\r\n");
    let mut buf = vec![0u8; found.len()];
    for i in 0..PEEKS {
        abuser
            .s
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert!(buf == found, "reply {i} differs");
    }
    abuser.expect("USING default\r\n".repeat(SMALL));
    abuser.expect("BAD_FORMAT\r\n");
    writer.join().unwrap();
    abuser
        .s
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let extra = abuser.s.read(&mut [0u8; 64]);
    assert!(
        matches!(&extra, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        "nothing more: {extra:?}"
    );
    abuser.s.set_read_timeout(Some(WAIT)).unwrap();
    abuser.roundtrip("peek 2\r\n", "NOT_FOUND\r\n");
    probe.round();
    println!(
        "never-reading client: {PEEKS} peeks of 64 KiB ({} MiB of replies), {SMALL} small \
         commands and a {} MiB line pipelined; its writes blocked after {} MiB of the line; \
         server RSS +{} KiB meanwhile; other client's worst put/reserve/delete {:?}",
        PEEKS as u64 * found.len() as u64 / MIB,
        FLOOD as u64 / MIB,
        accepted / MIB,
        held / KIB,
        probe.worst
    );
    assert!(stuck, "the server should have stopped reading the flood");
    assert!(held < 8 * MIB, "RSS grew by {held} bytes");
}

/// While blocked in reserve a client may send at most 64 KiB ahead; the
/// rest waits in the kernel.
#[test]
fn waiting_clients_read_ahead_is_bounded() {
    const CLIENTS: usize = 100;
    const ATTEMPT: usize = 1 << 20;
    let d = Daemon::start(&[]);
    let mut producer = d.conn();
    producer.stat("current-connections");
    let base = d.rss();

    let mut clients: Vec<Conn> = (0..CLIENTS).map(|_| d.conn()).collect();
    for c in &mut clients {
        c.send("reserve\r\n");
    }
    producer.wait_stat("current-waiting", CLIENTS as u64);
    let junk = vec![b'x'; ATTEMPT];
    let mut pushed = 0u64;
    for c in &mut clients {
        c.s.set_nonblocking(true).unwrap();
        let mut off = 0;
        while off < junk.len() {
            match c.s.write(&junk[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        c.s.set_nonblocking(false).unwrap();
        pushed += off as u64;
    }
    std::thread::sleep(Duration::from_millis(200));
    producer.stat("current-waiting");
    let held = d.rss().saturating_sub(base);

    for i in 1..=CLIENTS {
        producer.roundtrip("put 0 0 60 1\r\nj\r\n", format!("INSERTED {i}\r\n"));
    }
    let mut ids = HashSet::new();
    for c in &mut clients {
        let line = c.line();
        let id: u64 = line
            .strip_prefix("RESERVED ")
            .and_then(|r| r.strip_suffix(" 1"))
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("expected RESERVED, got {line:?}"));
        c.expect("j\r\n");
        assert!(ids.insert(id), "job {id} delivered twice");
        // The read-ahead was an over-long line: one BAD_FORMAT at its CRLF.
        c.roundtrip("\r\n", "BAD_FORMAT\r\n");
    }
    println!(
        "read-ahead: {CLIENTS} clients blocked in reserve pushed {} MiB into their sockets; \
         server RSS +{} KiB ({} KiB per client)",
        pushed / MIB,
        held / KIB,
        held / KIB / CLIENTS as u64
    );
    assert!(
        held < CLIENTS as u64 * 96 * KIB,
        "RSS grew by {held} bytes for {CLIENTS} clients"
    );
}

// ---------------------------------------------------------------------------
// Many connections, many tubes.

/// Opens `n` connections to `addr` (blocking, so each is in the server's
/// accept queue before the next), in order.
fn open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect()
}

/// 5,000 connections, new, idle after a command, holding half a command,
/// then blocked in reserve: the server's RSS per connection stays small.
#[test]
fn idle_and_waiting_connections_cost_little_memory() {
    const N: usize = 5000;
    let _heavy = heavy();
    if raise_nofile() < N as u64 + 100 {
        println!("skipped: the open-file hard limit is below {}", N + 100);
        return;
    }
    let d = Daemon::start(&[]);
    let mut admin = d.conn();
    // Warm up: a few connections that come and go, so one-time allocations
    // (accept path, engine maps) are in the baseline.
    drop(open(d.addr, 100));
    admin.wait_stat("current-connections", 1);
    let base = d.rss();

    let mut conns = open(d.addr, N);
    admin.wait_stat("current-connections", N as u64 + 1);
    let fresh = d.rss();
    // Idle after use, as in a client's connection pool.
    for c in &mut conns {
        c.write_all(b"list-tube-used\r\n").unwrap();
    }
    for c in &mut conns {
        c.set_read_timeout(Some(WAIT)).unwrap();
        let mut reply = [0u8; 15];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"USING default\r\n");
    }
    let idle = d.rss();
    // Half a command (a slow client, or a slowloris): the server holds it.
    for c in &mut conns {
        c.write_all(b"reser").unwrap();
    }
    admin.roundtrip("list-tube-used\r\n", "USING default\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let partial = d.rss();
    for c in &mut conns {
        c.write_all(b"ve\r\n").unwrap();
    }
    admin.wait_stat("current-waiting", N as u64);
    let waiting = d.rss();

    let per_fresh = fresh.saturating_sub(base) / N as u64;
    let per_idle = idle.saturating_sub(base) / N as u64;
    let per_partial = partial.saturating_sub(base) / N as u64;
    let per_waiting = waiting.saturating_sub(base) / N as u64;
    println!(
        "memory: base RSS {:.1} MiB; {N} connections: new {:.1} MiB ({per_fresh} B each), \
         idle after a command {:.1} MiB ({per_idle} B each), holding half a command {:.1} MiB \
         ({per_partial} B each), blocked in reserve {:.1} MiB ({per_waiting} B each)",
        mib(base),
        mib(fresh),
        mib(idle),
        mib(partial),
        mib(waiting)
    );
    assert!(per_fresh < 4 * KIB, "{per_fresh} bytes per new connection");
    assert!(per_idle < 4 * KIB, "{per_idle} bytes per idle connection");
    assert!(
        per_partial < 4 * KIB,
        "{per_partial} bytes per connection holding half a command"
    );
    assert!(
        per_waiting < 4 * KIB,
        "{per_waiting} bytes per waiting connection"
    );
    drop(conns);
    admin.wait_stat("current-connections", 1);
}

/// 100,000 stored 100-byte jobs: the server's RSS per job stays near the
/// body's own size (issue target: at most 180 B, 0.6x beanstalkd's 300 B),
/// and deleting them all and storing as many again reuses the memory.
#[test]
fn stored_jobs_cost_little_more_than_their_bodies() {
    const N: usize = 100_000;
    const BATCH: usize = 500;
    let _heavy = heavy();
    let put = format!("put 0 0 60 100\r\n{}\r\n", "x".repeat(100)).repeat(BATCH);
    let fill = |c: &mut Conn, first_id: usize| {
        for batch in 0..N / BATCH {
            c.send(&put);
            let start = first_id + batch * BATCH;
            let want: String = (start..start + BATCH)
                .map(|id| format!("INSERTED {id}\r\n"))
                .collect();
            c.expect(want);
        }
    };
    let d = Daemon::start(&[]);
    let mut c = d.conn();
    c.roundtrip("list-tube-used\r\n", "USING default\r\n");
    let base = d.rss();
    fill(&mut c, 1);
    let stored = d.rss();
    let per_job = stored.saturating_sub(base) / N as u64;
    let deletes: String = (1..=N).map(|id| format!("delete {id}\r\n")).collect();
    c.send(deletes);
    c.expect("DELETED\r\n".repeat(N));
    fill(&mut c, N + 1);
    let again = d.rss();
    println!(
        "memory: {N} jobs of 100 bytes: {per_job} B each (RSS {:.1} -> {:.1} MiB; \
         deleted and stored again: {:.1} MiB)",
        mib(base),
        mib(stored),
        mib(again)
    );
    assert!(per_job <= 190, "{per_job} B per stored job");
    assert!(
        again <= stored + stored / 10,
        "memory not reused: {again} > {stored}"
    );
}

/// One waiting worker: connects, reserves, returns the job id and body with
/// the connection (kept open so the job stays reserved).
async fn reserve_one(addr: SocketAddr) -> io::Result<(u64, Vec<u8>, tokio::net::TcpStream)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"reserve\r\n").await?;
    let mut buf = Vec::with_capacity(64);
    let header_end = loop {
        if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
            break p;
        }
        if s.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    let header = std::str::from_utf8(&buf[..header_end]).unwrap().to_string();
    let mut words = header
        .strip_prefix("RESERVED ")
        .unwrap_or_else(|| panic!("expected RESERVED, got {header:?}"))
        .split(' ')
        .map(|w| w.parse::<u64>().unwrap());
    let (id, len) = (words.next().unwrap(), words.next().unwrap() as usize);
    let want = header_end + 2 + len + 2;
    while buf.len() < want {
        if s.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    assert_eq!(buf.len(), want, "a second reply arrived");
    assert!(buf.ends_with(b"\r\n"));
    let body = buf[header_end + 2..want - 2].to_vec();
    Ok((id, body, s))
}

/// 10,000 connections blocked in reserve, then a burst of 10,000 puts:
/// every job reaches exactly one worker, every worker exactly one job.
#[test]
fn ten_thousand_waiters_each_get_exactly_one_job() {
    let _heavy = heavy();
    if raise_nofile() < 10_200 {
        println!("skipped: the open-file hard limit is below 10200");
        return;
    }
    runtime().block_on(ten_thousand_waiters());
}

async fn ten_thousand_waiters() {
    const N: usize = 10_000;
    const BATCH: usize = 1000;
    let d = Daemon::start(&[]);
    let addr = d.addr;
    let admin_stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut admin = Client {
        stream: admin_stream,
    };
    let stat = |yaml: &str, key: &str| -> u64 { common::field(yaml, key).parse().unwrap() };
    let base = d.rss();

    let connecting = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for batch in 0..N / BATCH {
        for _ in 0..BATCH {
            workers.spawn(reserve_one(addr));
        }
        // Pace the connects so the accept queue never overflows.
        let want = ((batch + 1) * BATCH) as u64;
        let end = Instant::now() + WAIT;
        loop {
            let waiting = stat(&admin.yaml("stats\r\n").await, "current-waiting");
            if waiting == want {
                break;
            }
            assert!(Instant::now() < end, "{waiting} waiting, expected {want}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let connected = connecting.elapsed();
    let per_waiter = d.rss().saturating_sub(base) / N as u64;

    let mut producer = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut puts = Vec::new();
    let mut inserted = Vec::new();
    for id in 1..=N {
        let body = id.to_string();
        puts.extend_from_slice(format!("put 0 0 120 {}\r\n{body}\r\n", body.len()).as_bytes());
        inserted.extend_from_slice(format!("INSERTED {id}\r\n").as_bytes());
    }
    let bursting = Instant::now();
    let (mut rd, mut wr) = producer.split();
    let (_, replies) = tokio::join!(async { wr.write_all(&puts).await.unwrap() }, async {
        let mut got = vec![0u8; inserted.len()];
        tokio::time::timeout(WAIT, rd.read_exact(&mut got))
            .await
            .expect("INSERTED replies")
            .unwrap();
        got
    });
    assert!(replies == inserted, "INSERTED replies differ");

    let mut ids = HashSet::new();
    let mut streams = Vec::with_capacity(N);
    let all = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(done) = workers.join_next().await {
            let (id, body, s) = done.expect("worker task").expect("worker io");
            assert_eq!(
                body,
                id.to_string().into_bytes(),
                "job {id} has another's body"
            );
            assert!(ids.insert(id), "job {id} delivered twice");
            streams.push(s);
        }
    })
    .await;
    let delivered = bursting.elapsed();
    assert!(all.is_ok(), "only {} of {N} workers got a job", ids.len());
    assert_eq!(ids.len(), N);
    assert_eq!(ids, (1..=N as u64).collect::<HashSet<_>>());

    let yaml = admin.yaml("stats\r\n").await;
    assert_eq!(stat(&yaml, "current-jobs-reserved"), N as u64);
    assert_eq!(stat(&yaml, "current-jobs-ready"), 0);
    assert_eq!(stat(&yaml, "current-waiting"), 0);
    assert_eq!(stat(&yaml, "total-jobs"), N as u64);
    println!(
        "10k waiters: {N} connections blocked in reserve in {connected:?} \
         ({per_waiter} B of server RSS each); {N} puts delivered exactly once in {delivered:?}"
    );

    // Once they have gone, their memory goes back to the system.
    let held = d.rss();
    drop(streams);
    drop(producer);
    let end = Instant::now() + WAIT;
    let mut now = d.rss();
    loop {
        let conns = stat(&admin.yaml("stats\r\n").await, "current-connections");
        if conns == 1 && now <= base + (held - base) / 2 {
            break;
        }
        assert!(
            Instant::now() < end,
            "{conns} connections; RSS {base} before, {held} with {N} workers, {now} after"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        now = d.rss();
    }
    println!("10k waiters gone: server RSS {held} -> {now}");
}

/// Pipelines `request` and reads exactly `reply`.
async fn exchange(c: &mut Client, request: &[u8], reply: &[u8]) {
    c.send(request).await;
    c.expect(reply).await;
}

/// A server with `n` tubes, all watched by the measured client `c`, which
/// times batches of `use`, `watch`, `ignore`+`watch` and `reserve`+`delete`.
struct TubeBench {
    server: TestServer,
    c: Client,
    producer: Client,
    /// Keeps the tube `extra` alive while `c` ignores it.
    _other: Client,
    last: String,
    watching: usize,
    next_id: usize,
}

/// Commands per timed batch.
const TUBE_OPS: usize = 2000;

impl TubeBench {
    async fn new(n: usize) -> TubeBench {
        let server = TestServer::start().await;
        let mut c = server.client().await;
        let mut request = Vec::new();
        let mut reply = Vec::new();
        for i in 0..n {
            request.extend_from_slice(format!("watch tube-{i}\r\n").as_bytes());
            reply.extend_from_slice(format!("WATCHING {}\r\n", i + 2).as_bytes());
        }
        exchange(&mut c, &request, &reply).await;
        let last = format!("tube-{}", n - 1);
        let mut other = server.client().await;
        exchange(&mut other, b"watch extra\r\n", b"WATCHING 2\r\n").await;
        let mut producer = server.client().await;
        exchange(
            &mut producer,
            format!("use {last}\r\n").as_bytes(),
            format!("USING {last}\r\n").as_bytes(),
        )
        .await;
        TubeBench {
            server,
            c,
            producer,
            _other: other,
            last,
            watching: n + 1,
            next_id: 1,
        }
    }

    async fn time(&mut self, request: &[u8], reply: &[u8]) -> Duration {
        let start = Instant::now();
        exchange(&mut self.c, request, reply).await;
        start.elapsed()
    }

    /// `use` of the last tube and back.
    async fn use_(&mut self) -> Duration {
        let last = &self.last;
        let request = format!("use {last}\r\nuse default\r\n").repeat(TUBE_OPS / 2);
        let reply = format!("USING {last}\r\nUSING default\r\n").repeat(TUBE_OPS / 2);
        self.time(request.as_bytes(), reply.as_bytes()).await
    }

    /// `watch` of the last tube (already watched).
    async fn watch(&mut self) -> Duration {
        let request = format!("watch {}\r\n", self.last).repeat(TUBE_OPS);
        let reply = format!("WATCHING {}\r\n", self.watching).repeat(TUBE_OPS);
        self.time(request.as_bytes(), reply.as_bytes()).await
    }

    /// `ignore` and `watch` of one more tube.
    async fn ignore(&mut self) -> Duration {
        let w = self.watching;
        let request = "watch extra\r\nignore extra\r\n".repeat(TUBE_OPS / 2);
        let reply = format!("WATCHING {}\r\nWATCHING {w}\r\n", w + 1).repeat(TUBE_OPS / 2);
        self.time(request.as_bytes(), reply.as_bytes()).await
    }

    /// `reserve` and `delete` of jobs in the last tube.
    async fn reserve(&mut self) -> Duration {
        let first = self.next_id;
        self.next_id += TUBE_OPS;
        let mut puts = Vec::new();
        let mut inserted = Vec::new();
        let mut request = Vec::new();
        let mut reply = Vec::new();
        for id in first..self.next_id {
            puts.extend_from_slice(b"put 0 0 60 1\r\nx\r\n");
            inserted.extend_from_slice(format!("INSERTED {id}\r\n").as_bytes());
            request.extend_from_slice(format!("reserve\r\ndelete {id}\r\n").as_bytes());
            reply.extend_from_slice(format!("RESERVED {id} 1\r\nx\r\nDELETED\r\n").as_bytes());
        }
        exchange(&mut self.producer, &puts, &inserted).await;
        self.time(&request, &reply).await
    }
}

/// With 10,000 tubes, all watched, `use`, `watch` and `reserve` cost about
/// what they cost with 10. The two servers are measured turn about, best of
/// several batches each, so load from other tests hits both alike.
#[test]
fn ten_thousand_tubes_keep_use_watch_reserve_flat() {
    let _heavy = heavy();
    runtime().block_on(tube_costs());
}

async fn tube_costs() {
    const REPS: usize = 7;
    let mut small = TubeBench::new(10).await;
    let mut large = TubeBench::new(10_000).await;
    // [use, watch, ignore, reserve] for [small, large].
    let mut best = [[Duration::MAX; 2]; 4];
    for _ in 0..REPS {
        for (k, bench) in [&mut small, &mut large].into_iter().enumerate() {
            let times = [
                bench.use_().await,
                bench.watch().await,
                bench.ignore().await,
                bench.reserve().await,
            ];
            for (op, t) in times.into_iter().enumerate() {
                best[op][k] = best[op][k].min(t);
            }
        }
    }
    small.server.check_invariants();
    large.server.check_invariants();
    let ratio = |op: usize| best[op][1].as_secs_f64() / best[op][0].as_secs_f64();
    let names = ["use", "watch", "ignore+watch", "reserve+delete"];
    let report: Vec<String> = (0..4)
        .map(|op| {
            format!(
                "{} {:?} vs {:?} (x{:.2})",
                names[op],
                best[op][0],
                best[op][1],
                ratio(op)
            )
        })
        .collect();
    println!(
        "tubes ({TUBE_OPS} commands per batch, best of {REPS}), 10 vs 10,000 watched tubes: {}",
        report.join(", ")
    );
    assert!(
        ratio(0) < 3.0,
        "use costs x{:.2} with 10,000 tubes",
        ratio(0)
    );
    assert!(
        ratio(1) < 3.0,
        "watch costs x{:.2} with 10,000 tubes",
        ratio(1)
    );
    assert!(
        ratio(3) < 3.0,
        "reserve costs x{:.2} with 10,000 watched tubes",
        ratio(3)
    );
}

// ---------------------------------------------------------------------------
// Garbage on the wire.

/// Panics on tokio worker threads (where in-process sessions run).
static SERVER_PANICKED: AtomicBool = AtomicBool::new(false);

fn watch_for_server_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("tokio-runtime-worker") {
                SERVER_PANICKED.store(true, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// The line starts that beanstalkd recognises (protocol.md §1).
const VERBS: &[&[u8]] = &[
    b"put ",
    b"peek",
    b"reserve",
    b"delete ",
    b"release ",
    b"bury ",
    b"kick",
    b"touch ",
    b"stats",
    b"use ",
    b"watch ",
    b"ignore ",
    b"list-tube",
    b"quit",
    b"pause-tube",
];

/// The exact replies to `input`, which must hold no command: each line
/// (up to the first CRLF) is BAD_FORMAT if longer than 224 bytes with its
/// CRLF or holding a NUL or CR, else UNKNOWN_COMMAND. A last unterminated
/// line gets nothing.
fn garbage_replies(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = &rest[..end];
        assert!(
            !VERBS.iter().any(|v| line.starts_with(v)),
            "the garbage holds a command: {:?}",
            String::from_utf8_lossy(line)
        );
        if line.len() + 2 > 224 || line.iter().any(|&b| b == 0 || b == b'\r') {
            out.extend_from_slice(b"BAD_FORMAT\r\n");
        } else {
            out.extend_from_slice(b"UNKNOWN_COMMAND\r\n");
        }
        rest = &rest[end + 2..];
    }
    out
}

/// Random bytes, biased towards CR and LF so lines of every length occur;
/// no line starts with a command.
fn random_garbage(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let b = match rng.below(100) {
            0..=2 => b'\r',
            3..=5 => b'\n',
            6..=8 => 0,
            _ => rng.byte(),
        };
        v.push(b);
        if rng.below(500) == 0 {
            // Now and then a long run without line ends.
            let run = rng.below(2000) as usize;
            v.extend((0..run).map(|_| rng.byte() | 0x80));
        }
    }
    // Break any command at a line start (none is likely; be sure).
    let mut start = 0;
    while start < v.len() {
        if VERBS.iter().any(|verb| v[start..].starts_with(verb)) {
            v[start] = b'X';
        }
        match v[start..].windows(2).position(|w| w == b"\r\n") {
            Some(p) => start += p + 2,
            None => break,
        }
    }
    v
}

/// A TLS 1.3 ClientHello as browsers send it (517 bytes, no CRLF).
fn tls_client_hello(rng: &mut Rng) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend((0..32).map(|_| rng.byte() & 0x7f | 0x20)); // random
    body.push(32);
    body.extend((0..32).map(|_| rng.byte() & 0x7f | 0x20)); // session id
    let suites: &[u8] = &[0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2b, 0xc0, 0x2f];
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(suites);
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut ext = Vec::new();
    let host = b"localhost";
    ext.extend_from_slice(&[0x00, 0x00]); // server_name
    ext.extend_from_slice(&((host.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(host.len() as u16).to_be_bytes());
    ext.extend_from_slice(host);
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]); // versions
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]); // groups
    let so_far = 4 + body.len() + 2 + ext.len();
    let pad = 512 - so_far - 4;
    ext.extend_from_slice(&[0x00, 0x15]); // padding
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.extend(std::iter::repeat_n(0u8, pad));
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    assert_eq!(record.len(), 517);
    assert!(!record.windows(2).any(|w| w == b"\r\n"));
    record
}

/// Sends `input` in chunks of random size and checks the reply is exactly
/// `want` (read concurrently, so neither side blocks the other).
async fn garbage_session(server_addr: SocketAddr, seed: u64, input: Vec<u8>, want: Vec<u8>) {
    let stream = tokio::net::TcpStream::connect(server_addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut rng = Rng(seed);
        let mut rest = &input[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(4096) as usize).min(rest.len());
            wr.write_all(&rest[..n]).await.unwrap();
            rest = &rest[n..];
        }
        wr
    });
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(10), rd.read_exact(&mut got))
        .await
        .expect("garbage replies in time")
        .expect("garbage replies");
    assert!(
        got == want,
        "replies to garbage (seed {seed}) differ: got {:?}",
        String::from_utf8_lossy(&got)
    );
    drop(writer.await.unwrap());
}

/// Random bytes, HTTP, TLS, telnet and NULs each get exactly the protocol
/// errors the framing rules give (or a close), nothing panics, and a client
/// alongside keeps working with the right job counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_protocol_errors_and_harms_nobody() {
    watch_for_server_panics();
    let server = TestServer::start().await;
    let addr = server.addr;

    // The well-behaved client, on its own tube, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let good_rounds = Arc::new(AtomicU64::new(0));
    let mut good = server.client().await;
    good.roundtrip("use good\r\n", "USING good\r\n").await;
    good.roundtrip("watch good\r\n", "WATCHING 2\r\n").await;
    good.roundtrip("ignore default\r\n", "WATCHING 1\r\n").await;
    let good_task = tokio::spawn({
        let stop = stop.clone();
        let rounds = good_rounds.clone();
        async move {
            let mut worst = Duration::ZERO;
            let mut id = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let start = Instant::now();
                good.send("put 0 0 60 4\r\ngood\r\n").await;
                let mut line = Vec::new();
                while !line.ends_with(b"\r\n") {
                    line.push(good.stream.read_u8().await.unwrap());
                }
                let line = String::from_utf8(line).unwrap();
                let got: u64 = line
                    .strip_prefix("INSERTED ")
                    .and_then(|r| r.trim_end().parse().ok())
                    .unwrap_or_else(|| panic!("expected INSERTED, got {line:?}"));
                assert!(got > id, "ids only grow");
                id = got;
                good.roundtrip("reserve\r\n", format!("RESERVED {id} 4\r\ngood\r\n"))
                    .await;
                good.roundtrip(format!("delete {id}\r\n"), "DELETED\r\n")
                    .await;
                worst = worst.max(start.elapsed());
                rounds.fetch_add(1, Ordering::SeqCst);
            }
            (good, worst)
        }
    });

    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut sessions = tokio::task::JoinSet::new();

    // Random bytes: exact replies by the framing rules.
    for i in 0..8u64 {
        let input = random_garbage(&mut rng, 64 * 1024);
        let want = garbage_replies(&input);
        sessions.spawn(garbage_session(addr, i, input, want));
    }

    // HTTP/1.1 requests (one with a cookie over the line limit) and the
    // HTTP/2 preface.
    let cookie = format!("Cookie: session={}\r\n", "a".repeat(300));
    let http = [
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:11300\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
            .to_string(),
        format!("POST /jobs HTTP/1.1\r\n{cookie}Content-Length: 5\r\n\r\nhello\r\n"),
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_string(),
    ];
    let http_replies = [
        "UNKNOWN_COMMAND\r\n".repeat(5),
        "UNKNOWN_COMMAND\r\nBAD_FORMAT\r\nUNKNOWN_COMMAND\r\nUNKNOWN_COMMAND\r\nUNKNOWN_COMMAND\r\n"
            .to_string(),
        "UNKNOWN_COMMAND\r\n".repeat(4),
    ];
    for (i, (req, want)) in http.iter().zip(&http_replies).enumerate() {
        // The rules and the exact bytes agree.
        assert_eq!(garbage_replies(req.as_bytes()), want.as_bytes());
        let mut input = req.clone().into_bytes();
        input.extend_from_slice(b"list-tube-used\r\n");
        let want = format!("{want}USING default\r\n").into_bytes();
        sessions.spawn(garbage_session(addr, 100 + i as u64, input, want));
    }
    let mut c = server.client().await;
    c.roundtrip("GET / HTTP/1.1\r\n", "UNKNOWN_COMMAND\r\n")
        .await;

    // TLS: a ClientHello has no CRLF and is over-long, so it is discarded
    // without a reply; a client that gives up and closes costs nothing.
    let hello = tls_client_hello(&mut rng);
    let mut tls = server.client().await;
    tls.send(&hello).await;
    tls.expect_silence().await;
    tls.roundtrip("\r\nlist-tube-used\r\n", "BAD_FORMAT\r\nUSING default\r\n")
        .await;
    let mut tls_quitter = server.client().await;
    tls_quitter.send(&hello[..200]).await;
    tls_quitter.expect_silence().await;
    drop(tls_quitter);

    // Telnet: option negotiation, then typed lines; ^C (IAC IP, IAC DO
    // TIMING-MARK); CR NUL; and a quit that closes.
    let mut telnet = server.client().await;
    telnet
        .send(
            b"\xff\xfb\x1f\xff\xfb\x20\xff\xfb\x18\xff\xfb\x27\xff\xfd\x01\xff\xfb\x03\xff\xfd\x03",
        )
        .await;
    telnet.expect_silence().await;
    telnet.roundtrip("stats\r\n", "UNKNOWN_COMMAND\r\n").await;
    telnet
        .roundtrip("list-tube-used\r\n", "USING default\r\n")
        .await;
    telnet
        .roundtrip(b"\xff\xf4\xff\xfd\x06quit\r\n", "UNKNOWN_COMMAND\r\n")
        .await;
    telnet.roundtrip(b"stats\r\0\r\n", "BAD_FORMAT\r\n").await;
    telnet.send(b"\xff\xfd\x06").await;
    telnet
        .roundtrip(
            "\r\nlist-tube-used\r\n",
            "UNKNOWN_COMMAND\r\nUSING default\r\n",
        )
        .await;
    telnet.send("quit\r\n").await;
    telnet.expect_closed().await;

    // NULs: in a line, a line of them, an over-long run, and in a body
    // (where they are data).
    let mut nul = server.client().await;
    nul.roundtrip(b"\0\r\n", "BAD_FORMAT\r\n").await;
    nul.roundtrip(b"stats\0\r\n", "BAD_FORMAT\r\n").await;
    nul.send(vec![0u8; 100_000]).await;
    nul.expect_silence().await;
    nul.roundtrip(b"\r\n", "BAD_FORMAT\r\n").await;
    nul.roundtrip(b"put 0 0 10 3\r\n\0\0\0\r\n", "INSERTED ")
        .await;
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.push(nul.stream.read_u8().await.unwrap());
    }
    let nul_job: u64 = std::str::from_utf8(&line)
        .unwrap()
        .trim_end()
        .parse()
        .unwrap();
    nul.roundtrip(
        format!("peek {nul_job}\r\n"),
        format!("FOUND {nul_job} 3\r\n\0\0\0\r\n"),
    )
    .await;
    // A put whose body is not followed by CRLF.
    nul.roundtrip(b"put 0 0 10 3\r\n\0\0\0\0\0", "EXPECTED_CRLF\r\n")
        .await;
    nul.roundtrip("list-tube-used\r\n", "USING default\r\n")
        .await;

    while let Some(done) = sessions.join_next().await {
        done.expect("garbage session");
    }

    // The good client ran all along, promptly.
    stop.store(true, Ordering::SeqCst);
    let (mut good, worst) = good_task.await.expect("good client");
    let rounds = good_rounds.load(Ordering::SeqCst);
    assert!(rounds > 0, "the good client made no progress");
    assert!(worst < PROMPT, "a put/reserve/delete took {worst:?}");
    let yaml = good.yaml("stats\r\n").await;
    let stat = |key: &str| common::field(&yaml, key).parse::<u64>().unwrap();
    // The good client's jobs were all deleted; the NUL job is ready.
    assert_eq!(stat("current-jobs-ready"), 1);
    assert_eq!(stat("current-jobs-reserved"), 0);
    assert_eq!(stat("current-jobs-delayed"), 0);
    assert_eq!(stat("current-jobs-buried"), 0);
    assert_eq!(stat("total-jobs"), rounds + 1);
    // put with a body not followed by CRLF counts as a put too.
    assert_eq!(stat("cmd-put"), rounds + 2);
    assert_eq!(stat("cmd-delete"), rounds);
    println!(
        "garbage: {} bytes of random garbage, HTTP, TLS, telnet and NULs; the good client \
         made {rounds} put/reserve/delete rounds meanwhile, worst {worst:?}",
        8 * 64 * 1024
    );
    server.check_invariants();
    assert!(
        !SERVER_PANICKED.load(Ordering::SeqCst),
        "a server task panicked"
    );
}
