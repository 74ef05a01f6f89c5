//! The command line, mirroring beanstalkd(1), turned into a plain `Config`.
//!
//! Flags group and take attached values as beanstalkd's do (`-VV`, `-p11300`).
//! Where beanstalkd lets the last of `-f`/`-F` win, so do we.

use crate::protocol::{DEFAULT_MAX_JOB_SIZE, MAX_JOB_SIZE_LIMIT};
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;

/// Default binlog segment size (`-s`).
pub const DEFAULT_BINLOG_SIZE: u64 = 10_485_760;

/// Command-line flags, as beanstalkd spells them.
#[derive(Debug, Parser)]
#[command(
    name = "stalkd",
    about = "A job-queue server that speaks the beanstalkd protocol.",
    disable_version_flag = true
)]
struct Flags {
    /// Write-ahead log directory: jobs survive restarts and crashes.
    #[arg(short = 'b', value_name = "DIR")]
    binlog_dir: Option<PathBuf>,

    /// fsync the binlog at most every MS milliseconds (0: before every reply,
    /// nothing acknowledged is ever lost; N: a crash of the machine, not of
    /// stalkd, can lose the last N ms).
    #[arg(short = 'f', value_name = "MS", default_value_t = 50)]
    fsync_ms: u64,

    /// Never fsync: fastest, but a machine crash or power loss can lose
    /// anything the OS had not yet written. The last of -f/-F wins.
    #[arg(short = 'F', action = ArgAction::SetTrue)]
    no_fsync: bool,

    /// Listen on ADDR (IPv4, IPv6, or unix:/path for a UNIX socket).
    #[arg(short = 'l', value_name = "ADDR", default_value = "0.0.0.0")]
    listen: String,

    /// Listen on TCP port PORT.
    #[arg(short = 'p', value_name = "PORT", default_value_t = 11300)]
    port: u16,

    /// Maximum binlog file size in bytes.
    #[arg(short = 's', value_name = "BYTES", default_value_t = DEFAULT_BINLOG_SIZE)]
    binlog_size: u64,

    /// Become USER (and its primary group) after binding.
    #[arg(short = 'u', value_name = "USER")]
    user: Option<String>,

    /// Maximum job size in bytes (at most 1073741824).
    #[arg(short = 'z', value_name = "BYTES", default_value_t = DEFAULT_MAX_JOB_SIZE)]
    max_job_size: u32,

    /// Start even if the binlog is damaged in the middle, dropping the
    /// records after the damage in each damaged file (they are lost).
    #[arg(long = "skip-corrupt-binlog", action = ArgAction::SetTrue)]
    skip_corrupt: bool,

    /// Increase verbosity (repeatable).
    #[arg(short = 'V', action = ArgAction::Count)]
    verbose: u8,

    /// Print the version and exit.
    #[arg(short = 'v', action = ArgAction::SetTrue)]
    version: bool,

    /// Accepted for compatibility; the binlog is always compacted.
    #[arg(short = 'c', action = ArgAction::SetTrue, hide = true)]
    compact: bool,

    /// Accepted for compatibility; the binlog is always compacted.
    #[arg(short = 'n', action = ArgAction::SetTrue, hide = true)]
    no_compact: bool,
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// How often the binlog is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync at least this often (0: before every acknowledgement).
    Every(std::time::Duration),
    Never,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub max_job_size: u32,
    pub binlog_dir: Option<PathBuf>,
    pub binlog_size: u64,
    pub sync: SyncPolicy,
    /// Start despite mid-log corruption, dropping what follows it.
    pub skip_corrupt: bool,
    pub user: Option<String>,
    pub verbosity: u8,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: Listen::Tcp {
                host: "0.0.0.0".into(),
                port: 11300,
            },
            max_job_size: DEFAULT_MAX_JOB_SIZE,
            binlog_dir: None,
            binlog_size: DEFAULT_BINLOG_SIZE,
            sync: SyncPolicy::Every(std::time::Duration::from_millis(50)),
            skip_corrupt: false,
            user: None,
            verbosity: 0,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    Run(Config),
    PrintVersion,
}

/// Parses `args` (program name first). Usage errors exit through clap (status 2).
pub fn parse<I, T>(args: I) -> Invocation
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Flags::command().get_matches_from(args);
    let flags = match Flags::from_arg_matches(&matches) {
        Ok(f) => f,
        Err(e) => e.exit(),
    };
    if flags.version {
        return Invocation::PrintVersion;
    }
    let last_f = matches.indices_of("fsync_ms").and_then(|i| i.max());
    let last_cap_f = matches.indices_of("no_fsync").and_then(|i| i.max());
    let sync = match (flags.no_fsync, last_f, last_cap_f) {
        (true, Some(f), Some(cf)) if f > cf => {
            SyncPolicy::Every(std::time::Duration::from_millis(flags.fsync_ms))
        }
        (true, _, _) => SyncPolicy::Never,
        _ => SyncPolicy::Every(std::time::Duration::from_millis(flags.fsync_ms)),
    };
    let max_job_size = if flags.max_job_size > MAX_JOB_SIZE_LIMIT {
        eprintln!(
            "stalkd: maximum job size was set to {}, which is more than {MAX_JOB_SIZE_LIMIT}; using {MAX_JOB_SIZE_LIMIT}",
            flags.max_job_size
        );
        MAX_JOB_SIZE_LIMIT
    } else {
        flags.max_job_size
    };
    if flags.compact || flags.no_compact {
        eprintln!(
            "stalkd: -c and -n are accepted for compatibility; the binlog is always compacted"
        );
    }
    let listen = match flags.listen.strip_prefix("unix:") {
        Some(path) => Listen::Unix(PathBuf::from(path)),
        None => Listen::Tcp {
            host: flags.listen,
            port: flags.port,
        },
    };
    Invocation::Run(Config {
        listen,
        max_job_size,
        binlog_dir: flags.binlog_dir,
        binlog_size: flags.binlog_size,
        sync,
        skip_corrupt: flags.skip_corrupt,
        user: flags.user,
        verbosity: flags.verbose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Config {
        match parse(std::iter::once("stalkd").chain(args.iter().copied())) {
            Invocation::Run(c) => c,
            Invocation::PrintVersion => panic!("unexpected -v"),
        }
    }

    #[test]
    fn defaults_match_beanstalkd() {
        let c = run(&[]);
        assert_eq!(
            c.listen,
            Listen::Tcp {
                host: "0.0.0.0".into(),
                port: 11300
            }
        );
        assert_eq!(c.max_job_size, 65535);
        assert_eq!(c.binlog_size, 10_485_760);
        assert_eq!(
            c.sync,
            SyncPolicy::Every(std::time::Duration::from_millis(50))
        );
        assert_eq!(c.verbosity, 0);
    }

    #[test]
    fn grouped_and_attached_values() {
        let c = run(&["-VV", "-p11301", "-l", "127.0.0.1", "-z10"]);
        assert_eq!(c.verbosity, 2);
        assert_eq!(
            c.listen,
            Listen::Tcp {
                host: "127.0.0.1".into(),
                port: 11301
            }
        );
        assert_eq!(c.max_job_size, 10);
    }

    #[test]
    fn last_of_f_and_cap_f_wins() {
        assert_eq!(run(&["-f", "0", "-F"]).sync, SyncPolicy::Never);
        assert_eq!(
            run(&["-F", "-f", "7"]).sync,
            SyncPolicy::Every(std::time::Duration::from_millis(7))
        );
    }

    #[test]
    fn unix_socket_and_size_cap() {
        let c = run(&["-l", "unix:/tmp/x.sock", "-z", "2000000000"]);
        assert_eq!(c.listen, Listen::Unix("/tmp/x.sock".into()));
        assert_eq!(c.max_job_size, MAX_JOB_SIZE_LIMIT);
    }

    #[test]
    fn version_flag() {
        assert!(matches!(parse(["stalkd", "-v"]), Invocation::PrintVersion));
    }
}
