//! Counters and the YAML bodies of `stats`, `stats-tube`, `stats-job` and the lists.
//!
//! Field order is beanstalkd's actual output order (not its doc's), and every
//! body is `---\n` followed by `key: value\n` lines. Tube names stay unquoted
//! as in 1.12 (pheanstalk 4 breaks on quotes); `version`, `hostname`, `os` and
//! `platform` are quoted as 1.13 does, since 1.12's bare `os: #1 ...` is a YAML
//! comment.

use super::{Job, JobCounts, Time, Tube, SECOND};
use crate::protocol::TubeName;
use bytes::Bytes;
use std::fmt::Write;

/// Global counters. `cmd_*` count commands whose arguments parsed.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub cmd_put: u64,
    pub cmd_peek: u64,
    pub cmd_peek_ready: u64,
    pub cmd_peek_delayed: u64,
    pub cmd_peek_buried: u64,
    pub cmd_reserve: u64,
    pub cmd_reserve_with_timeout: u64,
    pub cmd_delete: u64,
    pub cmd_release: u64,
    pub cmd_use: u64,
    pub cmd_watch: u64,
    pub cmd_ignore: u64,
    pub cmd_bury: u64,
    pub cmd_kick: u64,
    pub cmd_touch: u64,
    pub cmd_stats: u64,
    pub cmd_stats_job: u64,
    pub cmd_stats_tube: u64,
    pub cmd_list_tubes: u64,
    pub cmd_list_tube_used: u64,
    pub cmd_list_tubes_watched: u64,
    pub cmd_pause_tube: u64,
    pub job_timeouts: u64,
    pub total_jobs: u64,
    pub total_connections: u64,
    pub urgent: usize,
    pub ready: usize,
    pub reserved: usize,
    pub buried: usize,
    pub producers: usize,
    pub workers: usize,
    pub waiting: usize,
}

/// CPU time used by the process, for `rusage-utime` / `rusage-stime`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    pub user_micros: u64,
    pub system_micros: u64,
}

/// Facts about the host and process that `stats` reports.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub pid: u32,
    pub version: String,
    /// 16 lowercase hex digits, new on every start.
    pub instance_id: String,
    pub hostname: String,
    /// uname's version string, as beanstalkd reports it.
    pub os: String,
    pub platform: String,
    /// Reads the process's CPU usage when `stats` runs.
    pub rusage: fn() -> ResourceUsage,
}

impl HostInfo {
    /// Fixed values, for tests.
    pub fn fixed() -> HostInfo {
        HostInfo {
            pid: 1,
            version: env!("CARGO_PKG_VERSION").to_string(),
            instance_id: "0000000000000000".to_string(),
            hostname: "localhost".to_string(),
            os: "test".to_string(),
            platform: "x86_64".to_string(),
            rusage: ResourceUsage::default,
        }
    }
}

pub struct ServerSnapshot<'a> {
    pub journal: crate::binlog::JournalStats,
    pub counters: &'a Counters,
    pub delayed: usize,
    pub max_job_size: u32,
    pub tubes: usize,
    pub connections: usize,
    pub uptime: Time,
    pub binlog_max_size: u64,
    pub draining: bool,
    pub host: &'a HostInfo,
}

/// Accumulates `key: value\n` lines after the `---\n` header.
struct Yaml(String);

impl Yaml {
    fn new() -> Yaml {
        let mut s = String::with_capacity(1024);
        s.push_str("---\n");
        Yaml(s)
    }

    fn field(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "{key}: {value}");
        self
    }

    fn quoted(&mut self, key: &str, value: &str) -> &mut Self {
        let _ = writeln!(self.0, "{key}: \"{value}\"");
        self
    }

    fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.0))
    }
}

pub fn server_yaml(s: &ServerSnapshot<'_>) -> Bytes {
    let c = s.counters;
    let usage = (s.host.rusage)();
    let mut y = Yaml::new();
    y.field("current-jobs-urgent", c.urgent)
        .field("current-jobs-ready", c.ready)
        .field("current-jobs-reserved", c.reserved)
        .field("current-jobs-delayed", s.delayed)
        .field("current-jobs-buried", c.buried)
        .field("cmd-put", c.cmd_put)
        .field("cmd-peek", c.cmd_peek)
        .field("cmd-peek-ready", c.cmd_peek_ready)
        .field("cmd-peek-delayed", c.cmd_peek_delayed)
        .field("cmd-peek-buried", c.cmd_peek_buried)
        .field("cmd-reserve", c.cmd_reserve)
        .field("cmd-reserve-with-timeout", c.cmd_reserve_with_timeout)
        .field("cmd-delete", c.cmd_delete)
        .field("cmd-release", c.cmd_release)
        .field("cmd-use", c.cmd_use)
        .field("cmd-watch", c.cmd_watch)
        .field("cmd-ignore", c.cmd_ignore)
        .field("cmd-bury", c.cmd_bury)
        .field("cmd-kick", c.cmd_kick)
        .field("cmd-touch", c.cmd_touch)
        .field("cmd-stats", c.cmd_stats)
        .field("cmd-stats-job", c.cmd_stats_job)
        .field("cmd-stats-tube", c.cmd_stats_tube)
        .field("cmd-list-tubes", c.cmd_list_tubes)
        .field("cmd-list-tube-used", c.cmd_list_tube_used)
        .field("cmd-list-tubes-watched", c.cmd_list_tubes_watched)
        .field("cmd-pause-tube", c.cmd_pause_tube)
        .field("job-timeouts", c.job_timeouts)
        .field("total-jobs", c.total_jobs)
        .field("max-job-size", s.max_job_size)
        .field("current-tubes", s.tubes)
        .field("current-connections", s.connections)
        .field("current-producers", c.producers)
        .field("current-workers", c.workers)
        .field("current-waiting", c.waiting)
        .field("total-connections", c.total_connections)
        .field("pid", s.host.pid)
        .quoted("version", &s.host.version)
        .field("rusage-utime", Micros(usage.user_micros))
        .field("rusage-stime", Micros(usage.system_micros))
        .field("uptime", s.uptime)
        .field("binlog-oldest-index", s.journal.oldest_index)
        .field("binlog-current-index", s.journal.current_index)
        .field("binlog-records-migrated", s.journal.records_migrated)
        .field("binlog-records-written", s.journal.records_written)
        .field("binlog-max-size", s.binlog_max_size)
        .field("draining", s.draining)
        .field("id", &s.host.instance_id)
        .quoted("hostname", &s.host.hostname)
        .quoted("os", &s.host.os)
        .quoted("platform", &s.host.platform);
    y.finish()
}

pub fn tube_yaml(t: &Tube, waiting: usize, now: Time) -> Bytes {
    let (pause, pause_left) = match t.unpause_at {
        Some(at) => (t.pause, at.saturating_sub(now) / SECOND),
        None => (0, 0),
    };
    let mut y = Yaml::new();
    y.field("name", &t.name)
        .field("current-jobs-urgent", t.urgent)
        .field("current-jobs-ready", t.ready.len())
        .field("current-jobs-reserved", t.reserved)
        .field("current-jobs-delayed", t.delayed.len())
        .field("current-jobs-buried", t.buried.len())
        .field("total-jobs", t.total_jobs)
        .field("current-using", t.using)
        .field("current-watching", t.watching)
        .field("current-waiting", waiting)
        .field("cmd-delete", t.cmd_delete)
        .field("cmd-pause-tube", t.cmd_pause)
        .field("pause", pause)
        .field("pause-time-left", pause_left);
    y.finish()
}

pub fn job_yaml(
    job: &Job,
    counts: &JobCounts,
    tube: &TubeName,
    now: Time,
    time_left: Time,
) -> Bytes {
    let mut y = Yaml::new();
    y.field("id", job.id)
        .field("tube", tube)
        .field("state", job.state.as_str())
        .field("pri", job.pri)
        .field("age", now.saturating_sub(job.created) / SECOND)
        .field("delay", job.delay)
        .field("ttr", job.ttr)
        .field("time-left", time_left)
        .field("file", job.file)
        .field("reserves", counts.reserves)
        .field("timeouts", counts.timeouts)
        .field("releases", counts.releases)
        .field("buries", counts.buries)
        .field("kicks", counts.kicks);
    y.finish()
}

/// `---\n- a\n- b\n`, names unquoted.
pub fn yaml_list<'a>(names: impl Iterator<Item = &'a TubeName>) -> Bytes {
    let mut s = String::from("---\n");
    for name in names {
        s.push_str("- ");
        s.push_str(name.as_str());
        s.push('\n');
    }
    Bytes::from(s)
}

/// Seconds with six decimals, as beanstalkd prints rusage.
struct Micros(u64);

impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}
