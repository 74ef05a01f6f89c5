//! Kill-and-restart: the real binary with `-b DIR -f 0` under load from
//! several producers and consumers, killed with SIGKILL at random moments
//! and restarted on the same directory, over and over. After each restart:
//! every job acknowledged with INSERTED and not deleted is there exactly
//! once with its body, no job acknowledged DELETED is back, nothing appears
//! that nobody put, and ids are never reused. Segments are small (`-s 8192`),
//! so kills also land during rotation, compaction and segment deletion.
//! Run twice: on the default single-threaded runtime (the fsync inline) and
//! with `--threads 2` (the fsync on the binlog's syncer thread, while other
//! connections append).
//!
//! A few cycles by default (a few seconds); `STALKD_CRASH_CYCLES=N` runs N,
//! `STALKD_CRASH_SEED=S` replays a run's random choices (the seed is printed).

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::Rng;

const IO_TIMEOUT: Duration = Duration::from_secs(5);
const PRODUCERS: usize = 3;
const CONSUMERS: usize = 3;

/// A running server; killed (and reaped) when dropped, whatever happens.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// `extra`: more flags, after the usual ones.
    fn start(dir: &Path, log: &Path, extra: &[&str]) -> Server {
        for _ in 0..20 {
            let port = free_port();
            let stderr = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_stalkd"))
                // Small segments: rotation, compaction and deletion of old
                // segments all happen under fire too.
                .args([
                    "-l",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-f",
                    "0",
                    "-s",
                    "8192",
                ])
                .args(extra)
                .arg("-b")
                .arg(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawn stalkd");
            let mut server = Server { child, port };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = server.child.try_wait() {
                    // Lost the port race, or the start-up failed: the log says which.
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    assert!(
                        text.contains("listen"),
                        "stalkd exited with {status} at start-up:\n{text}"
                    );
                    break;
                }
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                    return server;
                }
                assert!(Instant::now() < deadline, "stalkd did not start listening");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("could not start stalkd on a free port");
    }

    fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_now();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A blocking client with a timeout on every operation.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(port: u16) -> io::Result<Conn> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// A body of `n` bytes and its CRLF.
    fn body(&mut self, n: usize) -> io::Result<String> {
        let mut body = vec![0u8; n + 2];
        self.reader.read_exact(&mut body)?;
        body.truncate(n);
        String::from_utf8(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn put(&mut self, body: &str) -> io::Result<u64> {
        self.send(format!("put 100 0 30 {}\r\n{body}\r\n", body.len()).as_bytes())?;
        let line = self.line()?;
        line.strip_prefix("INSERTED ")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| panic!("put {body}: unexpected reply {line:?}"))
    }
}

/// What the clients were told, and what is in doubt because the server died
/// before the reply arrived.
#[derive(Default)]
struct Ledger {
    /// Acknowledged INSERTED: id -> body.
    acked: HashMap<u64, String>,
    /// Acknowledged DELETED.
    deleted: HashSet<u64>,
    /// Puts sent without an answer: they may or may not exist.
    doubtful_puts: HashSet<String>,
    /// Deletes sent without an answer.
    doubtful_deletes: HashSet<u64>,
    /// Every id any reply ever named.
    max_id_seen: u64,
}

impl Ledger {
    fn saw(&mut self, id: u64) {
        self.max_id_seen = self.max_id_seen.max(id);
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

fn produce(port: u16, name: String, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let Ok(mut conn) = Conn::open(port) else {
        return;
    };
    for n in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let body = format!("{name}-{n}");
        lock(&ledger).doubtful_puts.insert(body.clone());
        let Ok(id) = conn.put(&body) else {
            return; // Killed: this put stays in doubt.
        };
        let mut l = lock(&ledger);
        l.doubtful_puts.remove(&body);
        l.saw(id);
        if let Some(old) = l.acked.insert(id, body.clone()) {
            panic!("id {id} acknowledged twice: {old:?} and {body:?}");
        }
    }
}

fn consume(port: u16, seed: u64, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let Ok(mut conn) = Conn::open(port) else {
        return;
    };
    let mut rng = Rng(seed | 1);
    let step = |conn: &mut Conn, rng: &mut Rng| -> io::Result<()> {
        conn.send(b"reserve-with-timeout 1\r\n")?;
        let line = conn.line()?;
        if line == "TIMED_OUT" {
            return Ok(());
        }
        let mut words = line.split(' ');
        assert_eq!(words.next(), Some("RESERVED"), "reserve: {line:?}");
        let id: u64 = words.next().unwrap().parse().unwrap();
        let len: usize = words.next().unwrap().parse().unwrap();
        let body = conn.body(len)?;
        {
            let mut l = lock(&ledger);
            l.saw(id);
            if let Some(want) = l.acked.get(&id) {
                assert_eq!(&body, want, "job {id} reserved with the wrong body");
            }
            assert!(!l.deleted.contains(&id), "deleted job {id} reserved again");
        }
        if rng.below(4) == 0 {
            conn.send(format!("release {id} {} 0\r\n", rng.below(1000)).as_bytes())?;
            let line = conn.line()?;
            assert_eq!(line, "RELEASED", "release {id}");
            return Ok(());
        }
        lock(&ledger).doubtful_deletes.insert(id);
        conn.send(format!("delete {id}\r\n").as_bytes())?;
        let line = conn.line()?;
        assert_eq!(line, "DELETED", "delete {id}");
        let mut l = lock(&ledger);
        l.doubtful_deletes.remove(&id);
        l.deleted.insert(id);
        Ok(())
    };
    while !stop.load(Ordering::SeqCst) {
        if step(&mut conn, &mut rng).is_err() {
            return; // Killed.
        }
    }
}

/// Reads every job id below the next one and checks them against the ledger.
/// Returns the number of live jobs checked.
fn verify(port: u16, ledger: &mut Ledger, cycle: u32) -> usize {
    let mut conn = Conn::open(port).expect("connect after restart");
    // The next id must be beyond every id anyone was ever told about.
    let probe = conn.put(&format!("probe-{cycle}")).unwrap();
    assert!(
        probe > ledger.max_id_seen,
        "cycle {cycle}: id {probe} reused (ids up to {} were handed out)",
        ledger.max_id_seen
    );
    conn.send(format!("delete {probe}\r\n").as_bytes()).unwrap();
    assert_eq!(conn.line().unwrap(), "DELETED");
    ledger.saw(probe);
    ledger.deleted.insert(probe);

    let mut live: HashMap<u64, String> = HashMap::new();
    let ids: Vec<u64> = (1..probe).collect();
    for chunk in ids.chunks(500) {
        let mut req = String::new();
        for id in chunk {
            req.push_str(&format!("peek {id}\r\n"));
        }
        conn.send(req.as_bytes()).unwrap();
        for &id in chunk {
            let line = conn.line().unwrap();
            if line == "NOT_FOUND" {
                continue;
            }
            let len: usize = line
                .strip_prefix(&format!("FOUND {id} "))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("peek {id}: {line:?}"));
            live.insert(id, conn.body(len).unwrap());
        }
    }

    // Deletes in doubt: whichever way it went is fine.
    for id in std::mem::take(&mut ledger.doubtful_deletes) {
        if !live.contains_key(&id) {
            ledger.deleted.insert(id);
        }
    }
    for (id, body) in &ledger.acked {
        if ledger.deleted.contains(id) {
            assert!(
                !live.contains_key(id),
                "cycle {cycle}: deleted job {id} is back"
            );
        } else {
            let got = live.get(id);
            assert_eq!(
                got,
                Some(body),
                "cycle {cycle}: acknowledged job {id} lost or changed"
            );
        }
    }
    let mut bodies = HashSet::new();
    for (id, body) in &live {
        assert!(
            bodies.insert(body.clone()),
            "cycle {cycle}: {body:?} present twice"
        );
        if ledger.acked.contains_key(id) {
            continue;
        }
        // A put whose reply was lost: it may exist, once; now it is known.
        assert!(
            ledger.doubtful_puts.remove(body),
            "cycle {cycle}: job {id} {body:?} was never put"
        );
        ledger.acked.insert(*id, body.clone());
    }
    // Puts still in doubt did not make it; they never will.
    ledger.doubtful_puts.clear();
    live.len()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stalkd-crash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn acknowledged_jobs_survive_kill_9() {
    crash_cycles("root", &[]);
}

/// With a multi-threaded runtime the fsyncs run on the binlog's syncer
/// thread, concurrently with appends.
#[test]
fn acknowledged_jobs_survive_kill_9_with_a_syncer_thread() {
    crash_cycles("threads", &["--threads", "2"]);
}

fn crash_cycles(name: &str, extra: &[&str]) {
    let cycles: u32 = std::env::var("STALKD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("STALKD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test: {cycles} cycles, STALKD_CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let root = scratch_dir(name);
    let dir = root.join("binlog");
    std::fs::create_dir(&dir).unwrap();
    let log = root.join("stderr.log");

    let mut ledger = Ledger::default();
    let mut server = Server::start(&dir, &log, extra);
    let mut checked = 0;
    let started = Instant::now();
    for cycle in 0..cycles {
        let shared = Arc::new(Mutex::new(std::mem::take(&mut ledger)));
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for p in 0..PRODUCERS {
            let (l, s, port) = (shared.clone(), stop.clone(), server.port);
            let name = format!("c{cycle}p{p}");
            workers.push(std::thread::spawn(move || produce(port, name, l, s)));
        }
        for _ in 0..CONSUMERS {
            let (l, s, port, seed) = (shared.clone(), stop.clone(), server.port, rng.next());
            workers.push(std::thread::spawn(move || consume(port, seed, l, s)));
        }
        // Let them work, then kill the server mid-flight.
        std::thread::sleep(Duration::from_millis(100 + rng.below(500)));
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            if let Err(panic) = w.join() {
                std::panic::resume_unwind(panic);
            }
        }
        ledger = Arc::try_unwrap(shared)
            .ok()
            .expect("workers are done")
            .into_inner()
            .unwrap();
        let acked = ledger.acked.len();
        server = Server::start(&dir, &log, extra);
        let live = verify(server.port, &mut ledger, cycle);
        checked += live;
        println!(
            "cycle {cycle}: {acked} puts acknowledged so far, {} deletes; {live} live jobs checked",
            ledger.deleted.len()
        );
    }
    server.kill();
    println!(
        "crash test: {cycles} kills, {checked} live-job checks, {} jobs put, in {:?}",
        ledger.acked.len(),
        started.elapsed()
    );
    assert!(
        ledger.acked.len() > 10 * cycles as usize,
        "too little load to mean anything"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_second_server_on_the_same_directory_exits_with_a_clear_error() {
    let root = scratch_dir("lock");
    let dir = root.join("binlog");
    std::fs::create_dir(&dir).unwrap();
    let first = Server::start(&dir, &root.join("first.log"), &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_stalkd"))
        .args(["-l", "127.0.0.1", "-p", &free_port().to_string(), "-b"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("run stalkd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second server started: {stderr}");
    assert!(
        stderr.contains(&dir.join("lock").display().to_string())
            && stderr.contains("another server"),
        "{stderr}"
    );
    first.kill();
    let _ = std::fs::remove_dir_all(&root);
}
