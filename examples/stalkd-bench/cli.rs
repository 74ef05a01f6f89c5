//! Command-line flags and their per-scenario defaults.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Load generator for any beanstalkd-protocol server.
#[derive(Debug, Parser)]
#[command(name = "stalkd-bench", version)]
pub struct Args {
    /// Server address (loopback only is sensible here).
    #[arg(long, default_value = "127.0.0.1:11300")]
    pub addr: SocketAddr,

    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Cycle)]
    pub scenario: Scenario,

    /// Connections (producers, and as many consumers where both exist).
    /// Default: 10; pipeline 4; many-conns and idle-conns 5000.
    #[arg(long)]
    pub conns: Option<usize>,

    /// Job count (a cap for time-bound scenarios). Default per scenario.
    #[arg(long)]
    pub jobs: Option<u64>,

    /// Body size in bytes (stamped bodies need at least 16). Default 100; big 65535.
    #[arg(long)]
    pub body: Option<usize>,

    /// Commands in flight per connection. Default 1; pipeline 32.
    #[arg(long)]
    pub depth: Option<usize>,

    /// Cap on the measured phase, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Tubes for the tubes scenario (the sweep goes 1, 10, 100, ... up to it).
    #[arg(long, default_value_t = 10_000)]
    pub tube_count: usize,

    /// tubes: run only at --tube-count tubes, for the whole duration, instead
    /// of sweeping 1, 10, 100, ... with the duration split between steps.
    #[arg(long)]
    pub no_sweep: bool,

    /// Server pid: report its CPU time and RSS from /proc.
    #[arg(long)]
    pub pid: Option<u32>,

    /// Print one line of JSON instead of the human-readable report.
    #[arg(long)]
    pub json: bool,

    /// Commands of the pipeline scenario.
    #[arg(long, value_enum, default_value_t = PipelineOps::Put)]
    pub ops: PipelineOps,

    /// Pipelined producer connections of the bulk phases: reserve pre-fill,
    /// delayed, memory, and the many-conns burst.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,

    /// cycle/tubes: target total put rate in jobs/s (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,

    /// cycle/tubes: most jobs put but not yet reserved (0 = unbounded).
    /// Default: 2 x conns, so latency is not dominated by a growing queue.
    #[arg(long)]
    pub backlog: Option<usize>,

    /// Tube name (default: a fresh name per run).
    #[arg(long)]
    pub tube: Option<String>,

    /// Timeout for each connect, write and read, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub io_timeout: f64,

    /// Hard limit for the whole run in seconds (default 3 x duration + 60).
    #[arg(long)]
    pub max_time: Option<f64>,

    /// Tokio worker threads for the load generator (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Producers only.
    Put,
    /// Pre-fill, then drain with reserve + delete.
    Reserve,
    /// Producers and consumers at once; put->reserve latency.
    Cycle,
    /// `depth` commands in flight per connection.
    Pipeline,
    /// Thousands of connections blocked in reserve, then a burst of puts.
    ManyConns,
    /// Jobs spread over many tubes; cost vs tube count.
    Tubes,
    /// 64 KiB bodies: put + reserve + delete.
    Big,
    /// Jobs with delay 1 s put at once; time until all are reserved.
    Delayed,
    /// Server RSS per stored job.
    Memory,
    /// Server RSS per idle connection.
    IdleConns,
}

/// What the pipeline scenario keeps in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PipelineOps {
    /// Only puts.
    Put,
    /// Rounds of `depth` puts + reserves, then `depth` deletes.
    PutReserveDelete,
}

/// Flags with every default resolved for the chosen scenario.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub scenario: Scenario,
    pub conns: usize,
    pub jobs: u64,
    pub body: usize,
    pub depth: usize,
    pub duration: Duration,
    pub tube_count: usize,
    pub sweep: bool,
    pub ops: PipelineOps,
    pub producers: usize,
    pub rate: u64,
    pub backlog: usize,
    pub tube: String,
    pub io_timeout: Duration,
    pub max_time: Duration,
}

impl Settings {
    /// Resolves defaults; rejects values that cannot work.
    pub fn from_args(a: &Args) -> Result<Settings, String> {
        use Scenario::*;
        let conns = a.conns.unwrap_or(match a.scenario {
            Pipeline => 4,
            ManyConns | IdleConns => 5000,
            _ => 10,
        });
        let jobs = a.jobs.unwrap_or(match a.scenario {
            Put => 200_000,
            Reserve | Delayed => 100_000,
            Memory => 200_000,
            ManyConns | IdleConns => conns as u64,
            Big => 100_000,
            Cycle | Pipeline | Tubes => 10_000_000,
        });
        let body = a
            .body
            .unwrap_or(if a.scenario == Big { 65_535 } else { 100 });
        let depth = a
            .depth
            .unwrap_or(if a.scenario == Pipeline { 32 } else { 1 });
        check(
            conns > 0 && depth > 0 && a.producers > 0,
            "counts must be > 0",
        )?;
        check(a.duration > 0.0 && a.io_timeout > 0.0, "times must be > 0")?;
        check(a.tube_count > 0, "--tube-count must be > 0")?;
        let stamped = matches!(a.scenario, Cycle | Tubes | Delayed);
        check(
            !stamped || body >= crate::clock::STAMP_LEN,
            "this scenario needs --body >= 16 (it carries a timestamp)",
        )?;
        let duration = Duration::from_secs_f64(a.duration);
        let max_time = a.max_time.unwrap_or(a.duration * 3.0 + 60.0);
        Ok(Settings {
            addr: a.addr,
            scenario: a.scenario,
            conns,
            jobs,
            body,
            depth,
            duration,
            tube_count: a.tube_count,
            sweep: !a.no_sweep,
            ops: a.ops,
            producers: a.producers,
            rate: a.rate,
            backlog: a.backlog.unwrap_or(2 * conns),
            tube: a.tube.clone().unwrap_or_else(fresh_tube_name),
            io_timeout: Duration::from_secs_f64(a.io_timeout),
            max_time: Duration::from_secs_f64(max_time),
        })
    }
}

fn check(ok: bool, msg: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(msg.to_string())
    }
}

/// A tube name unlikely to collide with an earlier run on the same server.
fn fresh_tube_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("bench-{}-{nanos}", std::process::id())
}
