//! The binlog (-b) through a real server: what survives a restart, recovery
//! from damage, the disk-footprint bound, the directory lock, and what
//! clients see when the disk fails (through the fault-injecting file system).
mod common;

use common::{field, Client, TempDir, TestServer};
use stalkd::binlog::fs::FaultyFs;
use stalkd::binlog::{self, segment};
use stalkd::clock::Clock;
use stalkd::config::{Config, SyncPolicy};
use stalkd::engine::{Engine, EngineConfig, HostInfo};
use stalkd::hub::Hub;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn config(dir: &Path, size: u64, sync: SyncPolicy) -> Config {
    Config {
        binlog_dir: Some(dir.to_path_buf()),
        binlog_size: size,
        sync,
        ..Config::default()
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Starts (or restarts) a server on `cfg`'s binlog; it must come up.
async fn boot(cfg: &Config, clock: &Clock) -> TestServer {
    TestServer::try_start(cfg.clone(), clock.clone())
        .await
        .unwrap()
}

async fn stat_job(c: &mut Client, id: u64, key: &str) -> String {
    c.stat(format!("stats-job {id}\r\n"), key).await
}

/// Asserts `stats-job` fields of job `id`.
async fn expect_job(c: &mut Client, id: u64, fields: &[(&str, &str)]) {
    let yaml = c.yaml(format!("stats-job {id}\r\n")).await;
    for (key, want) in fields {
        assert_eq!(field(&yaml, key), *want, "job {id} {key}:\n{yaml}");
    }
}

#[tokio::test]
async fn every_job_state_survives_a_restart() {
    let dir = TempDir::new("states");
    let cfg = config(dir.path(), 10_485_760, SyncPolicy::Every(Duration::ZERO));
    let server = TestServer::start_with(cfg.clone()).await;
    let mut c = server.client().await;
    c.roundtrip("use emails\r\n", "USING emails\r\n").await;
    c.roundtrip("put 5 0 60 5\r\nready\r\n", "INSERTED 1\r\n")
        .await;
    c.roundtrip("put 6 300 60 7\r\ndelayed\r\n", "INSERTED 2\r\n")
        .await;
    c.roundtrip("use jobs\r\n", "USING jobs\r\n").await;
    for (id, body) in [
        (3, "bury-b"),
        (4, "bury-a"),
        (5, "reserved"),
        (6, "released"),
    ] {
        c.roundtrip(
            format!("put 100 0 60 {}\r\n{body}\r\n", body.len()),
            format!("INSERTED {id}\r\n"),
        )
        .await;
    }
    c.roundtrip("put 100 0 60 6\r\nkicked\r\n", "INSERTED 7\r\n")
        .await;
    c.roundtrip("put 100 0 60 7\r\ndeleted\r\n", "INSERTED 8\r\n")
        .await;
    c.roundtrip("put 100 50 60 8\r\ndelaykck\r\n", "INSERTED 9\r\n")
        .await;
    server.advance_secs(10);
    // Buried in the order 4, 3 (not id order).
    c.roundtrip("reserve-job 4\r\n", "RESERVED 4 6\r\nbury-a\r\n")
        .await;
    c.roundtrip("bury 4 20\r\n", "BURIED\r\n").await;
    c.roundtrip("reserve-job 3\r\n", "RESERVED 3 6\r\nbury-b\r\n")
        .await;
    c.roundtrip("bury 3 21\r\n", "BURIED\r\n").await;
    c.roundtrip("reserve-job 5\r\n", "RESERVED 5 8\r\nreserved\r\n")
        .await;
    c.roundtrip("reserve-job 6\r\n", "RESERVED 6 8\r\nreleased\r\n")
        .await;
    c.roundtrip("release 6 77 0\r\n", "RELEASED\r\n").await;
    c.roundtrip("reserve-job 7\r\n", "RESERVED 7 6\r\nkicked\r\n")
        .await;
    c.roundtrip("bury 7 1\r\n", "BURIED\r\n").await;
    c.roundtrip("kick-job 7\r\n", "KICKED\r\n").await;
    c.roundtrip("delete 8\r\n", "DELETED\r\n").await;
    c.roundtrip("kick-job 9\r\n", "KICKED\r\n").await;
    let written: u64 = c
        .stat("stats\r\n", "binlog-records-written")
        .await
        .parse()
        .unwrap();
    // 9 puts; 3 buries, a release, 2 kicks, a delete (reserving a ready job is not logged).
    assert_eq!(written, 9 + 7);
    assert_eq!(c.stat("stats\r\n", "binlog-current-index").await, "1");
    assert_eq!(stat_job(&mut c, 1, "file").await, "1");
    let clock = server.clock();
    drop(c);
    server.crash();

    // Down for 20 s, then back on the same dir.
    clock.advance(Duration::from_secs(20));
    let server = boot(&cfg, &clock).await;
    let mut c = server.client().await;
    assert_eq!(c.stat("stats\r\n", "binlog-current-index").await, "2");
    assert_eq!(c.stat("stats\r\n", "binlog-oldest-index").await, "1");
    assert_eq!(c.stat("stats\r\n", "current-jobs-buried").await, "2");
    assert_eq!(c.stat("stats\r\n", "current-jobs-reserved").await, "0");
    let t = |s: &'static str| ("tube", s);
    expect_job(
        &mut c,
        1,
        &[
            t("emails"),
            ("state", "ready"),
            ("pri", "5"),
            ("age", "30"),
            ("file", "1"),
        ],
    )
    .await;
    expect_job(
        &mut c,
        2,
        &[
            t("emails"),
            ("state", "delayed"),
            ("delay", "300"),
            ("time-left", "270"),
            ("age", "30"),
        ],
    )
    .await;
    expect_job(
        &mut c,
        3,
        &[
            t("jobs"),
            ("state", "buried"),
            ("pri", "21"),
            ("buries", "1"),
            ("reserves", "1"),
        ],
    )
    .await;
    expect_job(
        &mut c,
        4,
        &[
            t("jobs"),
            ("state", "buried"),
            ("pri", "20"),
            ("buries", "1"),
        ],
    )
    .await;
    expect_job(&mut c, 5, &[t("jobs"), ("state", "ready"), ("pri", "100")]).await;
    expect_job(
        &mut c,
        6,
        &[
            t("jobs"),
            ("state", "ready"),
            ("pri", "77"),
            ("releases", "1"),
            ("reserves", "1"),
        ],
    )
    .await;
    expect_job(
        &mut c,
        7,
        &[
            t("jobs"),
            ("state", "ready"),
            ("buries", "1"),
            ("kicks", "1"),
        ],
    )
    .await;
    c.roundtrip("peek 8\r\n", "NOT_FOUND\r\n").await;
    expect_job(
        &mut c,
        9,
        &[
            t("jobs"),
            ("state", "ready"),
            ("kicks", "1"),
            ("delay", "50"),
        ],
    )
    .await;
    // Bodies, bury order, and the delay still running.
    c.roundtrip("peek 2\r\n", "FOUND 2 7\r\ndelayed\r\n").await;
    c.roundtrip("use jobs\r\n", "USING jobs\r\n").await;
    c.roundtrip("peek-buried\r\n", "FOUND 4 6\r\nbury-a\r\n")
        .await;
    c.roundtrip("kick 1\r\n", "KICKED 1\r\n").await;
    c.roundtrip("peek-buried\r\n", "FOUND 3 6\r\nbury-b\r\n")
        .await;
    server.advance_secs(269);
    assert_eq!(stat_job(&mut c, 2, "state").await, "delayed");
    server.advance_secs(1);
    assert_eq!(stat_job(&mut c, 2, "state").await, "ready");
    // Ids go on.
    c.roundtrip("put 0 0 1 1\r\nx\r\n", "INSERTED 10\r\n").await;
    server.check_invariants();
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn ids_never_restart_even_after_every_job_is_deleted_and_collected() {
    let dir = TempDir::new("ids");
    let cfg = config(dir.path(), 10_485_760, SyncPolicy::Never);
    let clock = Clock::manual();
    let server = boot(&cfg, &clock).await;
    let mut c = server.client().await;
    for id in 1..=3 {
        c.roundtrip("put 0 0 1 1\r\nx\r\n", format!("INSERTED {id}\r\n"))
            .await;
        c.roundtrip(format!("delete {id}\r\n"), "DELETED\r\n").await;
    }
    drop(c);
    server.stop().await;
    for (round, next) in [(0, 4), (1, 5), (2, 6)] {
        let server = boot(&cfg, &clock).await;
        // Only this run's segment is left: every older one was collected.
        let seqs = segment::list(dir.path()).unwrap();
        assert_eq!(seqs.len(), 1, "round {round}: {seqs:?}");
        let mut c = server.client().await;
        c.roundtrip("put 0 0 1 1\r\nx\r\n", format!("INSERTED {next}\r\n"))
            .await;
        c.roundtrip(format!("delete {next}\r\n"), "DELETED\r\n")
            .await;
        drop(c);
        server.stop().await;
    }
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_the_jobs_before_it_kept() {
    let dir = TempDir::new("torn");
    let cfg = config(dir.path(), 10_485_760, SyncPolicy::Never);
    let clock = Clock::manual();
    let server = boot(&cfg, &clock).await;
    let mut c = server.client().await;
    for id in 1..=5 {
        c.roundtrip("put 0 0 1 3\r\nabc\r\n", format!("INSERTED {id}\r\n"))
            .await;
    }
    drop(c);
    server.crash();
    // Half of a put record, as a crash in the middle of a write leaves it.
    let path = segment::path(dir.path(), 1);
    let good = std::fs::metadata(&path).unwrap().len();
    let mut bytes = std::fs::read(&path).unwrap();
    let record_len = (bytes.len() - segment::HEADER_LEN as usize) / 5;
    let tail = bytes[bytes.len() - record_len..bytes.len() - record_len / 2].to_vec();
    bytes.extend_from_slice(&tail);
    std::fs::write(&path, &bytes).unwrap();

    let server = boot(&cfg, &clock).await;
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        good,
        "tail cut off"
    );
    let mut c = server.client().await;
    assert_eq!(c.stat("stats\r\n", "current-jobs-ready").await, "5");
    c.roundtrip("peek 5\r\n", "FOUND 5 3\r\nabc\r\n").await;
    c.roundtrip("put 0 0 1 3\r\nnew\r\n", "INSERTED 6\r\n")
        .await;
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn corruption_in_the_middle_stops_the_start_unless_skipped() {
    let dir = TempDir::new("corrupt");
    let cfg = config(dir.path(), 512, SyncPolicy::Never);
    let clock = Clock::manual();
    let server = boot(&cfg, &clock).await;
    let mut c = server.client().await;
    for id in 1..=30 {
        c.roundtrip(
            "put 0 0 1 20\r\n01234567890123456789\r\n",
            format!("INSERTED {id}\r\n"),
        )
        .await;
    }
    drop(c);
    server.stop().await;
    let seqs = segment::list(dir.path()).unwrap();
    assert!(seqs.len() >= 4, "{seqs:?}");
    let victim = segment::path(dir.path(), seqs[1]);
    let mut bytes = std::fs::read(&victim).unwrap();
    let offset = segment::HEADER_LEN as usize;
    bytes[offset + 30] ^= 0x01;
    std::fs::write(&victim, &bytes).unwrap();

    let err = TestServer::try_start(cfg.clone(), clock.clone())
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains(&victim.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("offset {offset}")), "{msg}");

    let skip = Config {
        skip_corrupt: true,
        ..cfg
    };
    let server = TestServer::try_start(skip, clock).await.unwrap();
    let mut c = server.client().await;
    let ready: u64 = c
        .stat("stats\r\n", "current-jobs-ready")
        .await
        .parse()
        .unwrap();
    assert!((20..30).contains(&ready), "{ready} jobs kept");
    c.roundtrip("peek 1\r\n", "FOUND 1 20\r\n01234567890123456789\r\n")
        .await;
    c.roundtrip("peek 30\r\n", "FOUND 30 20\r\n01234567890123456789\r\n")
        .await;
    c.roundtrip("put 0 0 1 1\r\nx\r\n", "INSERTED 31\r\n").await;
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn the_log_stays_small_under_release_loops_and_churn() {
    let dir = TempDir::new("bound");
    let size = 4096;
    let cfg = config(dir.path(), size, SyncPolicy::Never);
    let clock = Clock::manual();
    let server = boot(&cfg, &clock).await;
    let mut c = server.client().await;
    // A job delayed for a day and a buried one: long-lived neighbours that
    // must not pin the log.
    c.roundtrip("put 1 86400 60 3\r\nday\r\n", "INSERTED 1\r\n")
        .await;
    c.roundtrip("put 1 0 60 6\r\nburied\r\n", "INSERTED 2\r\n")
        .await;
    c.roundtrip("reserve-job 2\r\n", "RESERVED 2 6\r\nburied\r\n")
        .await;
    c.roundtrip("bury 2 1\r\n", "BURIED\r\n").await;
    c.roundtrip("put 1 0 60 7\r\nlooping\r\n", "INSERTED 3\r\n")
        .await;
    let mut worst = 0;
    let cycles = 5_000;
    let batch = 50;
    for _ in 0..cycles / batch {
        let mut req = String::new();
        let mut rep = String::new();
        for _ in 0..batch {
            req.push_str("reserve-job 3\r\nrelease 3 1 3600\r\n");
            rep.push_str("RESERVED 3 7\r\nlooping\r\nRELEASED\r\n");
        }
        c.roundtrip(req, rep).await;
        worst = worst.max(dir_bytes(dir.path()));
    }
    let written: u64 = c
        .stat("stats\r\n", "binlog-records-written")
        .await
        .parse()
        .unwrap();
    let migrated: u64 = c
        .stat("stats\r\n", "binlog-records-migrated")
        .await
        .parse()
        .unwrap();
    let oldest: u32 = c
        .stat("stats\r\n", "binlog-oldest-index")
        .await
        .parse()
        .unwrap();
    eprintln!("release loop: {written} records, {migrated} migrated, worst dir {worst} B, oldest {oldest}");
    assert!(written >= 2 * cycles);
    assert!(migrated > 0 && oldest > 1);
    // Live data is three small jobs (~250 B); the log never exceeds a few segments.
    assert!(worst <= 3 * size, "dir grew to {worst} B");

    // Churn: 20 000 put/delete pairs with up to 10 jobs alive.
    let mut worst = 0;
    let mut next = 4;
    for round in 0..2_000u64 {
        let mut req = String::new();
        let mut rep = String::new();
        for _ in 0..10 {
            req.push_str("put 1 0 60 16\r\nchurn churn chur\r\n");
            rep.push_str(&format!("INSERTED {next}\r\n"));
            next += 1;
        }
        if round > 0 {
            for id in next - 20..next - 10 {
                req.push_str(&format!("delete {id}\r\n"));
                rep.push_str("DELETED\r\n");
            }
        }
        c.roundtrip(req, rep).await;
        if round % 10 == 0 {
            worst = worst.max(dir_bytes(dir.path()));
        }
    }
    eprintln!("churn: worst dir {worst} B");
    // Live: 13 jobs of ~110 B.
    assert!(worst <= 3 * size, "dir grew to {worst} B");
    drop(c);
    server.stop().await;
    // Everything live came back.
    let server = TestServer::try_start(cfg, clock).await.unwrap();
    let mut c = server.client().await;
    assert_eq!(c.stat("stats\r\n", "current-jobs-ready").await, "10");
    assert_eq!(c.stat("stats\r\n", "current-jobs-delayed").await, "2");
    assert_eq!(c.stat("stats\r\n", "current-jobs-buried").await, "1");
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn two_servers_cannot_share_a_directory() {
    let dir = TempDir::new("lock");
    let cfg = config(dir.path(), 10_485_760, SyncPolicy::Never);
    let first = TestServer::try_start(cfg.clone(), Clock::manual())
        .await
        .unwrap();
    let err = TestServer::try_start(cfg.clone(), Clock::manual())
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("lock") && msg.contains("another server"),
        "{msg}"
    );
    first.stop().await;
    TestServer::try_start(cfg, Clock::manual())
        .await
        .unwrap()
        .stop()
        .await;
}

#[tokio::test]
async fn an_unusable_directory_is_refused_with_its_name() {
    let dir = TempDir::new("unusable");
    let missing = dir.path().join("nope");
    let err = TestServer::try_start(config(&missing, 4096, SyncPolicy::Never), Clock::manual())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("nope"), "{err}");
}

/// A server over a binlog written through `fs`, with its manual clock.
async fn faulty_server(dir: &Path, fs: &FaultyFs, sync: SyncPolicy) -> TestServer {
    let clock = Clock::manual();
    let (log, recovered) = binlog::open_with(Arc::new(fs.clone()), dir, 4096, sync, false).unwrap();
    let mut engine = Engine::new(
        EngineConfig {
            max_job_size: 65535,
            binlog_max_size: 4096,
            host: HostInfo::fixed(),
        },
        clock.now(),
    );
    let handle = log.sync_handle();
    engine.set_journal(Box::new(log));
    engine.restore(clock.now(), recovered);
    let hub = Arc::new(Hub::new(engine, clock.clone(), Some(handle)));
    TestServer::serve_hub(hub, clock, 65535).await
}

#[tokio::test]
async fn a_full_disk_gets_error_replies_and_changes_nothing() {
    let dir = TempDir::new("full");
    let fs = FaultyFs::default();
    let server = faulty_server(dir.path(), &fs, SyncPolicy::Never).await;
    let mut c = server.client().await;
    c.roundtrip("put 0 0 60 4\r\nkeep\r\n", "INSERTED 1\r\n")
        .await;
    c.roundtrip("put 0 0 60 4\r\nbury\r\n", "INSERTED 2\r\n")
        .await;
    c.roundtrip("reserve-job 2\r\n", "RESERVED 2 4\r\nbury\r\n")
        .await;
    fs.faults.disk_full_after(0);
    c.roundtrip("put 0 0 60 4\r\nlost\r\n", "OUT_OF_MEMORY\r\n")
        .await;
    c.roundtrip("peek 3\r\n", "NOT_FOUND\r\n").await;
    assert_eq!(c.stat("stats\r\n", "current-jobs-ready").await, "1");
    c.roundtrip("delete 1\r\n", "INTERNAL_ERROR\r\n").await;
    c.roundtrip("peek 1\r\n", "FOUND 1 4\r\nkeep\r\n").await;
    c.roundtrip("bury 2 0\r\n", "INTERNAL_ERROR\r\n").await;
    c.roundtrip("release 2 0 10\r\n", "OUT_OF_MEMORY\r\n").await;
    assert_eq!(stat_job(&mut c, 2, "state").await, "reserved");
    // A short write: part of the record fits, then the disk is full.
    fs.faults.disk_full_after(20);
    c.roundtrip("put 0 0 60 4\r\nhalf\r\n", "OUT_OF_MEMORY\r\n")
        .await;
    // Room again: everything works, and the log reads back cleanly.
    fs.faults.disk_ok();
    c.roundtrip("bury 2 0\r\n", "BURIED\r\n").await;
    c.roundtrip("put 0 0 60 4\r\nnext\r\n", "INSERTED 5\r\n")
        .await;
    c.roundtrip("delete 1\r\n", "DELETED\r\n").await;
    drop(c);
    server.crash();

    let server =
        TestServer::try_start(config(dir.path(), 4096, SyncPolicy::Never), Clock::manual())
            .await
            .unwrap();
    let mut c = server.client().await;
    c.roundtrip("peek 1\r\n", "NOT_FOUND\r\n").await;
    assert_eq!(stat_job(&mut c, 2, "state").await, "buried");
    c.roundtrip("peek 3\r\n", "NOT_FOUND\r\n").await;
    c.roundtrip("peek 4\r\n", "NOT_FOUND\r\n").await;
    c.roundtrip("peek 5\r\n", "FOUND 5 4\r\nnext\r\n").await;
    c.roundtrip("put 0 0 60 1\r\nx\r\n", "INSERTED 6\r\n").await;
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn an_fsync_failure_under_f0_is_never_acknowledged() {
    let dir = TempDir::new("fsync");
    let fs = FaultyFs::default();
    let server = faulty_server(dir.path(), &fs, SyncPolicy::Every(Duration::ZERO)).await;
    let mut c = server.client().await;
    c.roundtrip("put 0 0 60 2\r\nok\r\n", "INSERTED 1\r\n")
        .await;
    fs.faults.fail_syncs(true);
    c.send("put 0 0 60 4\r\nlost\r\n").await;
    c.expect_closed().await;
    // Loud from now on, even though the fault is gone: the kernel may have
    // dropped what it could not write, so nothing new is acknowledged.
    fs.faults.fail_syncs(false);
    let mut c = server.client().await;
    c.roundtrip("put 0 0 60 4\r\nmore\r\n", "OUT_OF_MEMORY\r\n")
        .await;
    c.roundtrip("delete 1\r\n", "INTERNAL_ERROR\r\n").await;
    c.roundtrip("peek 1\r\n", "FOUND 1 2\r\nok\r\n").await;
    drop(c);
    server.crash();
}
