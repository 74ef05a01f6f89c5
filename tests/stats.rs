//! `stats`, `stats-tube` and `stats-job`: exact bytes and the meaning of every
//! counter (notes §5). Host-dependent fields come from `HostInfo::fixed()`:
//! pid 1, id 0000000000000000, hostname "localhost", os "test", platform
//! "x86_64", rusage 0; the clock is manual, so uptime, age and time-left are
//! exact too.
mod common;
use common::{ok, put, JobStats, TestServer, TubeStats};
use stalkd::config::Config;
use std::time::Duration;

/// The `stats` body of a fresh server asked once by its only connection,
/// as (key, value) pairs in output order.
struct Stats(Vec<(&'static str, String)>);

impl Stats {
    fn fresh() -> Stats {
        let mut fields: Vec<(&'static str, String)> = [
            "current-jobs-urgent",
            "current-jobs-ready",
            "current-jobs-reserved",
            "current-jobs-delayed",
            "current-jobs-buried",
            "cmd-put",
            "cmd-peek",
            "cmd-peek-ready",
            "cmd-peek-delayed",
            "cmd-peek-buried",
            "cmd-reserve",
            "cmd-reserve-with-timeout",
            "cmd-delete",
            "cmd-release",
            "cmd-use",
            "cmd-watch",
            "cmd-ignore",
            "cmd-bury",
            "cmd-kick",
            "cmd-touch",
            "cmd-stats",
            "cmd-stats-job",
            "cmd-stats-tube",
            "cmd-list-tubes",
            "cmd-list-tube-used",
            "cmd-list-tubes-watched",
            "cmd-pause-tube",
            "job-timeouts",
            "total-jobs",
        ]
        .into_iter()
        .map(|k| (k, "0".to_string()))
        .collect();
        let rest: [(&'static str, String); 22] = [
            ("max-job-size", "65535".into()),
            ("current-tubes", "1".into()),
            ("current-connections", "1".into()),
            ("current-producers", "0".into()),
            ("current-workers", "0".into()),
            ("current-waiting", "0".into()),
            ("total-connections", "1".into()),
            ("pid", "1".into()),
            ("version", format!("\"{}\"", env!("CARGO_PKG_VERSION"))),
            ("rusage-utime", "0.000000".into()),
            ("rusage-stime", "0.000000".into()),
            ("uptime", "0".into()),
            ("binlog-oldest-index", "0".into()),
            ("binlog-current-index", "0".into()),
            ("binlog-records-migrated", "0".into()),
            ("binlog-records-written", "0".into()),
            ("binlog-max-size", "10485760".into()),
            ("draining", "false".into()),
            ("id", "0000000000000000".into()),
            ("hostname", "\"localhost\"".into()),
            ("os", "\"test\"".into()),
            ("platform", "\"x86_64\"".into()),
        ];
        fields.extend(rest);
        let mut s = Stats(fields);
        s.set("cmd-stats", 1);
        s
    }

    fn set(&mut self, key: &str, value: impl ToString) -> &mut Self {
        let field = self
            .0
            .iter_mut()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("no stats field {key}"));
        field.1 = value.to_string();
        self
    }

    fn reply(&self) -> String {
        let mut yaml = String::from("---\n");
        for (k, v) in &self.0 {
            yaml.push_str(&format!("{k}: {v}\n"));
        }
        ok(&yaml)
    }
}

// ----- exact bodies ----------------------------------------------------------------

#[tokio::test]
async fn stats_of_a_fresh_server() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let expected = Stats::fresh().reply();
    assert!(expected.starts_with("OK 9"), "{expected}");
    c.roundtrip("stats\r\n", expected).await;
}

#[tokio::test]
async fn stats_after_a_session_of_every_command() {
    let server = TestServer::start_with(Config {
        max_job_size: 1000,
        ..Config::default()
    })
    .await;
    let mut c = server.client().await;
    c.send(format!(
        "{}{}{}{}{}",
        put(1, 0, 10, "a"),
        put(2000, 0, 10, "b"),
        put(0, 10, 10, "c"),
        put(0, 0, 10, "d"),
        put(5, 0, 1, "e"),
    ))
    .await;
    c.expect("INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 4\r\nINSERTED 5\r\n")
        .await;
    c.send(
        "peek 1\r\npeek-ready\r\npeek-delayed\r\npeek-buried\r\n\
         reserve-job 4\r\nbury 4 0\r\nreserve\r\nrelease 1 1 0\r\n\
         reserve-with-timeout 0\r\ntouch 1\r\ndelete 1\r\nreserve\r\n\
         use foo\r\nwatch foo\r\nignore foo\r\nkick 0\r\n\
         stats-job 2\r\nstats-tube default\r\nlist-tubes\r\n\
         list-tube-used\r\nlist-tubes-watched\r\npause-tube foo 1\r\n",
    )
    .await;
    c.expect(format!(
        "FOUND 1 1\r\na\r\nFOUND 4 1\r\nd\r\nFOUND 3 1\r\nc\r\nNOT_FOUND\r\n\
         RESERVED 4 1\r\nd\r\nBURIED\r\nRESERVED 1 1\r\na\r\nRELEASED\r\n\
         RESERVED 1 1\r\na\r\nTOUCHED\r\nDELETED\r\nRESERVED 5 1\r\ne\r\n\
         USING foo\r\nWATCHING 2\r\nWATCHING 1\r\nKICKED 0\r\n\
         {}{}OK 20\r\n---\n- default\n- foo\n\r\n\
         USING foo\r\nOK 14\r\n---\n- default\n\r\nPAUSED\r\n",
        JobStats::new(2, "ready", 2000, 0, 10).reply(),
        {
            let mut t = TubeStats::new("default");
            t.ready = 1;
            t.delayed = 1;
            t.reserved = 1;
            t.buried = 1;
            t.total_jobs = 5;
            t.using = 0;
            t.watching = 1;
            t.cmd_delete = 1;
            t
        }
        .reply(),
    ))
    .await;
    server.advance_secs(3);
    let mut expected = Stats::fresh();
    expected
        .set("current-jobs-urgent", 1)
        .set("current-jobs-ready", 2)
        .set("current-jobs-delayed", 1)
        .set("current-jobs-buried", 1)
        .set("cmd-put", 5)
        .set("cmd-peek", 1)
        .set("cmd-peek-ready", 1)
        .set("cmd-peek-delayed", 1)
        .set("cmd-peek-buried", 1)
        .set("cmd-reserve", 2)
        .set("cmd-reserve-with-timeout", 1)
        .set("cmd-delete", 1)
        .set("cmd-release", 1)
        .set("cmd-use", 1)
        .set("cmd-watch", 1)
        .set("cmd-ignore", 1)
        .set("cmd-bury", 1)
        .set("cmd-kick", 1)
        .set("cmd-touch", 1)
        .set("cmd-stats-job", 1)
        .set("cmd-stats-tube", 1)
        .set("cmd-list-tubes", 1)
        .set("cmd-list-tube-used", 1)
        .set("cmd-list-tubes-watched", 1)
        .set("cmd-pause-tube", 1)
        // Job 5 (ttr 1) ran out of time.
        .set("job-timeouts", 1)
        .set("total-jobs", 5)
        .set("max-job-size", 1000)
        .set("current-tubes", 2)
        .set("current-producers", 1)
        .set("current-workers", 1)
        .set("uptime", 3);
    c.roundtrip("stats\r\n", expected.reply()).await;
}

#[tokio::test]
async fn stats_tube_with_every_field_set() {
    let server = TestServer::start().await;
    let mut p = server.client().await;
    let mut w = server.client().await;
    p.send(format!(
        "use t\r\n{}{}{}{}{}",
        put(1023, 0, 10, "urgent"),
        put(1024, 0, 10, "ready"),
        put(0, 0, 10, "reserved"),
        put(0, 0, 10, "buried"),
        put(0, 10, 10, "delayed"),
    ))
    .await;
    p.expect("USING t\r\nINSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 4\r\nINSERTED 5\r\n")
        .await;
    p.send("reserve-job 3\r\nreserve-job 4\r\nbury 4 0\r\nput 0 0 10 1\r\nx\r\ndelete 6\r\npause-tube t 30\r\nwatch t\r\n")
        .await;
    p.expect("RESERVED 3 8\r\nreserved\r\nRESERVED 4 6\r\nburied\r\nBURIED\r\nINSERTED 6\r\nDELETED\r\nPAUSED\r\nWATCHING 2\r\n")
        .await;
    w.roundtrip("watch t\r\n", "WATCHING 2\r\n").await;
    w.roundtrip("ignore default\r\n", "WATCHING 1\r\n").await;
    w.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    server.advance_secs(5);
    let t = TubeStats {
        name: "t".into(),
        urgent: 1,
        ready: 2,
        reserved: 1,
        delayed: 1,
        buried: 1,
        total_jobs: 6,
        using: 1,
        watching: 2,
        waiting: 1,
        cmd_delete: 1,
        cmd_pause: 1,
        pause: 30,
        pause_left: 25,
    };
    p.roundtrip("stats-tube t\r\n", t.reply()).await;
    assert_eq!(
        t.reply(),
        "OK 261\r\n---\nname: t\ncurrent-jobs-urgent: 1\ncurrent-jobs-ready: 2\n\
         current-jobs-reserved: 1\ncurrent-jobs-delayed: 1\ncurrent-jobs-buried: 1\n\
         total-jobs: 6\ncurrent-using: 1\ncurrent-watching: 2\ncurrent-waiting: 1\n\
         cmd-delete: 1\ncmd-pause-tube: 1\npause: 30\npause-time-left: 25\n\r\n"
    );
}

#[tokio::test]
async fn stats_job_in_every_state_with_age_and_time_left() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(
        format!("use jobs\r\n{}", put(3, 20, 7, "a")),
        "USING jobs\r\nINSERTED 1\r\n",
    )
    .await;
    server.advance(Duration::from_millis(2500));
    c.roundtrip(
        "stats-job 1\r\n",
        "OK 144\r\n---\nid: 1\ntube: jobs\nstate: delayed\npri: 3\nage: 2\ndelay: 20\n\
         ttr: 7\ntime-left: 17\nfile: 0\nreserves: 0\ntimeouts: 0\nreleases: 0\n\
         buries: 0\nkicks: 0\n\r\n",
    )
    .await;
    c.roundtrip("kick-job 1\r\n", "KICKED\r\n").await;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "ready", 3, 20, 7)
            .tube("jobs")
            .age(2)
            .kicks(1)
            .reply(),
    )
    .await;
    c.roundtrip("reserve-job 1\r\n", "RESERVED 1 1\r\na\r\n")
        .await;
    server.advance(Duration::from_millis(1600));
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "reserved", 3, 20, 7)
            .tube("jobs")
            .age(4)
            .time_left(5)
            .reserves(1)
            .kicks(1)
            .reply(),
    )
    .await;
    c.roundtrip("bury 1 9\r\n", "BURIED\r\n").await;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "buried", 9, 20, 7)
            .tube("jobs")
            .age(4)
            .reserves(1)
            .buries(1)
            .kicks(1)
            .reply(),
    )
    .await;
}

// ----- what the counters count -----------------------------------------------------

#[tokio::test]
async fn cmd_counters_count_only_commands_whose_arguments_parsed() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for line in [
        "peek x",
        "peek-ready ",
        "peek-delayed x",
        "peek-buried x",
        "reserve x",
        "reserve-with-timeout x",
        "delete x",
        "release 1 x 0",
        "use -x",
        "watch -x",
        "ignore -x",
        "bury 1",
        "kick x",
        "touch x",
        "stats x",
        "stats-job x",
        "stats-tube -x",
        "list-tubes x",
        "list-tube-used x",
        "list-tubes-watched x",
        "pause-tube default x",
    ] {
        c.roundtrip(format!("{line}\r\n"), "BAD_FORMAT\r\n").await;
    }
    c.roundtrip("put x 0 10 1\r\n", "BAD_FORMAT\r\n").await;
    c.roundtrip("stats\r\n", Stats::fresh().reply()).await;
}

#[tokio::test]
async fn cmd_counters_count_not_found_too() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for line in [
        "peek 1",
        "peek-ready",
        "peek-delayed",
        "peek-buried",
        "delete 1",
        "release 1 0 0",
        "bury 1 0",
        "touch 1",
        "stats-job 1",
        "stats-tube nope",
        "pause-tube nope 1",
    ] {
        c.roundtrip(format!("{line}\r\n"), "NOT_FOUND\r\n").await;
    }
    c.roundtrip("ignore default\r\n", "NOT_IGNORED\r\n").await;
    let mut expected = Stats::fresh();
    for key in [
        "cmd-peek",
        "cmd-peek-ready",
        "cmd-peek-delayed",
        "cmd-peek-buried",
        "cmd-delete",
        "cmd-release",
        "cmd-bury",
        "cmd-touch",
        "cmd-stats-job",
        "cmd-stats-tube",
        "cmd-pause-tube",
        "cmd-ignore",
    ] {
        expected.set(key, 1);
    }
    c.roundtrip("stats\r\n", expected.reply()).await;
}

#[tokio::test]
async fn reserve_job_kick_job_and_quit_have_no_counters() {
    let server = TestServer::start().await;
    let mut q = server.client().await;
    q.send("quit\r\n").await;
    q.expect_closed().await;
    let mut c = server.client().await;
    c.roundtrip(
        "reserve-job 1\r\nkick-job 1\r\n",
        "NOT_FOUND\r\nNOT_FOUND\r\n",
    )
    .await;
    let mut expected = Stats::fresh();
    expected.set("total-connections", 2);
    c.roundtrip("stats\r\n", expected.reply()).await;
}

#[tokio::test]
async fn cmd_put_counts_puts_that_fail_after_the_numbers_parse() {
    let server = TestServer::start_with(Config {
        max_job_size: 5,
        ..Config::default()
    })
    .await;
    let mut c = server.client().await;
    c.roundtrip("put 0 0 10 6\r\n123456\r\n", "JOB_TOO_BIG\r\n")
        .await;
    c.roundtrip(
        "put 0 0 10 1 junk\r\nx\r\n",
        "BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n",
    )
    .await;
    c.roundtrip(
        "put -1 0 10 1\r\nx\r\n",
        "BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n",
    )
    .await;
    assert_eq!(c.stat("stats\r\n", "cmd-put").await, "2");
    // Neither made the connection a producer.
    assert_eq!(c.stat("stats\r\n", "current-producers").await, "0");
    c.roundtrip("put 0 0 10 1\r\nxyz", "EXPECTED_CRLF\r\n")
        .await;
    let mut expected = Stats::fresh();
    expected
        .set("cmd-put", 3)
        .set("cmd-stats", 3)
        .set("max-job-size", 5)
        .set("current-producers", 1);
    c.roundtrip("stats\r\n", expected.reply()).await;
}

#[tokio::test]
async fn current_producers_workers_and_waiting() {
    let server = TestServer::start().await;
    let mut p = server.client().await;
    let mut w = server.client().await;
    let mut r = server.client().await;
    let mut s = server.client().await;
    p.roundtrip(put(0, 0, 10, "a"), "INSERTED 1\r\n").await;
    // A reserve-job that fails does not make a worker; one that works does.
    r.roundtrip("reserve-job 9\r\n", "NOT_FOUND\r\n").await;
    assert_eq!(s.stat("stats\r\n", "current-workers").await, "0");
    r.roundtrip("reserve-job 1\r\n", "RESERVED 1 1\r\na\r\n")
        .await;
    // A reserve that times out still makes a worker.
    w.roundtrip("reserve-with-timeout 0\r\n", "TIMED_OUT\r\n")
        .await;
    w.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    let yaml = s.yaml("stats\r\n").await;
    assert!(
        yaml.contains(
            "\ncurrent-connections: 4\ncurrent-producers: 1\ncurrent-workers: 2\n\
             current-waiting: 1\ntotal-connections: 4\n"
        ),
        "{yaml}"
    );
    drop(p);
    drop(r);
    w.expect("RESERVED 1 1\r\na\r\n").await;
    let yaml = s.yaml("stats\r\n").await;
    assert!(
        yaml.contains(
            "\ncurrent-connections: 2\ncurrent-producers: 0\ncurrent-workers: 1\n\
             current-waiting: 0\ntotal-connections: 4\n"
        ),
        "{yaml}"
    );
}

#[tokio::test]
async fn urgent_counts_ready_jobs_below_priority_1024() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!(
        "{}{}{}{}",
        put(0, 0, 10, "a"),
        put(1023, 0, 10, "b"),
        put(1024, 0, 10, "c"),
        put(0, 5, 10, "d"),
    ))
    .await;
    c.expect("INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 4\r\n")
        .await;
    assert_eq!(c.stat("stats\r\n", "current-jobs-urgent").await, "2");
    // Reserved and buried jobs are not urgent; released with pri 2000, not either.
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    assert_eq!(c.stat("stats\r\n", "current-jobs-urgent").await, "1");
    c.roundtrip("bury 1 0\r\n", "BURIED\r\n").await;
    assert_eq!(
        c.stat("stats-tube default\r\n", "current-jobs-urgent")
            .await,
        "1"
    );
    c.roundtrip("reserve\r\n", "RESERVED 2 1\r\nb\r\n").await;
    c.roundtrip("release 2 2000 0\r\n", "RELEASED\r\n").await;
    assert_eq!(c.stat("stats\r\n", "current-jobs-urgent").await, "0");
    // A delayed job becomes urgent when it becomes ready, a kicked one too.
    server.advance_secs(5);
    c.roundtrip("kick 1\r\n", "KICKED 1\r\n").await;
    assert_eq!(c.stat("stats\r\n", "current-jobs-urgent").await, "2");
}

#[tokio::test]
async fn total_jobs_and_current_tubes() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!(
        "use a\r\n{}{}use b\r\n{}delete 1\r\ndelete 2\r\n",
        put(0, 0, 10, "x"),
        put(0, 0, 10, "y"),
        put(0, 0, 10, "z")
    ))
    .await;
    c.expect(
        "USING a\r\nINSERTED 1\r\nINSERTED 2\r\nUSING b\r\nINSERTED 3\r\nDELETED\r\nDELETED\r\n",
    )
    .await;
    let yaml = c.yaml("stats\r\n").await;
    assert!(
        yaml.contains("\ntotal-jobs: 3\nmax-job-size: 65535\ncurrent-tubes: 2\n"),
        "{yaml}"
    );
    assert_eq!(c.stat("stats-tube b\r\n", "total-jobs").await, "1");
}

#[tokio::test]
async fn uptime_follows_the_clock() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_eq!(c.stat("stats\r\n", "uptime").await, "0");
    server.advance(Duration::from_millis(1999));
    assert_eq!(c.stat("stats\r\n", "uptime").await, "1");
    server.advance_secs(100);
    assert_eq!(c.stat("stats\r\n", "uptime").await, "101");
}

#[tokio::test]
async fn draining_shows_in_stats() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    server.hub.set_draining(true);
    let mut expected = Stats::fresh();
    expected.set("draining", "true");
    c.roundtrip("stats\r\n", expected.reply()).await;
}

#[tokio::test]
async fn current_connections_drops_as_soon_as_a_client_closes() {
    let server = TestServer::start().await;
    let mut observer = server.client().await;
    for i in 0..50u32 {
        let mut gone = server.client().await;
        gone.roundtrip("list-tube-used\r\n", "USING default\r\n")
            .await;
        drop(gone);
        let yaml = observer.yaml("stats\r\n").await;
        assert!(
            yaml.contains(&format!(
                "\ncurrent-connections: 1\ncurrent-producers: 0\ncurrent-workers: 0\n\
                 current-waiting: 0\ntotal-connections: {}\n",
                i + 2
            )),
            "round {i}: {yaml}"
        );
    }
}
