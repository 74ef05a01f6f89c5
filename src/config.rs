//! The command line, mirroring beanstalkd(1), turned into a plain `Config`.
//!
//! Every flag of beanstalkd 1.13 is accepted with the same meaning and default,
//! so a unit file or compose file only needs the binary name changed. Flags
//! group and take attached values as beanstalkd's do (`-VV`, `-p11300`,
//! `-Fp 11300`). Where beanstalkd lets the last of `-f`/`-F` win, so do we.
//!
//! Invariant: [`parse`] either returns a validated [`Config`] or ends the
//! process: help and `-v` with status 0, a bad flag or value with one line
//! naming it, the usage line and status 2. Nothing is logged from here
//! (logging is not set up yet); notes for the operator come back as warnings.

use crate::protocol::{DEFAULT_MAX_JOB_SIZE, MAX_JOB_SIZE_LIMIT};
use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;
use std::time::Duration;

/// Default binlog segment size (`-s`).
pub const DEFAULT_BINLOG_SIZE: u64 = 10_485_760;

/// Default fsync interval (`-f`), beanstalkd's since 1.12.
pub const DEFAULT_FSYNC_MS: u64 = 50;

/// The usage line printed with every command-line error; it lists the flags
/// the way beanstalkd's usage does, which says more than clap's `[OPTIONS]`.
const USAGE: &str = "stalkd [-b DIR] [-f MS | -F] [-l ADDR] [-p PORT] [-s BYTES] [-u USER] \
                     [-z BYTES] [-V...] [-v] [-h] [--skip-corrupt-binlog]";

const AFTER_LONG_HELP: &str = "\
Signals:
  SIGUSR1          drain mode: puts are refused with DRAINING, everything else keeps
                   working, `stats` shows `draining: true`. Cannot be undone.
  SIGTERM, SIGINT  graceful shutdown: stop accepting, answer what was received, flush
                   and sync the binlog, exit 0 (within 5 seconds at most).

Environment:
  RUST_LOG         log filter (e.g. `debug`, `stalkd=trace`); overrides -V when set.
  LISTEN_FDS       systemd socket activation: the first inherited socket is used and
                   -l/-p are ignored.";

/// Command-line flags, as beanstalkd spells them.
#[derive(Debug, Parser)]
#[command(
    name = "stalkd",
    about = "A job-queue server that speaks the beanstalkd protocol.",
    override_usage = USAGE,
    after_long_help = AFTER_LONG_HELP,
    disable_version_flag = true
)]
struct Flags {
    /// Start even if the binlog is damaged in the middle
    ///
    /// Records after the damage in each damaged file are dropped (lost).
    /// Without this flag such damage stops the start-up with the file and offset.
    #[arg(long = "skip-corrupt-binlog", action = ArgAction::SetTrue)]
    skip_corrupt: bool,

    /// Worker threads for connections (not a beanstalkd flag)
    ///
    /// 1 (the default) runs every connection on one thread, like beanstalkd:
    /// the queue is one locked structure, and on small machines one thread
    /// avoids cross-thread wake-ups (measured fastest on 2 cores). More
    /// threads let socket reads and writes run in parallel on big machines.
    #[arg(long = "threads", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,

    /// Binlog directory: jobs survive restarts and crashes
    ///
    /// Write-ahead log directory. The directory must exist and be writable by
    /// the server (by USER when -u is given). Without -b, jobs live in memory
    /// only and are lost when the server stops.
    #[arg(short = 'b', value_name = "DIR")]
    binlog_dir: Option<PathBuf>,

    /// fsync the binlog at most every MS milliseconds [default: 50]
    ///
    /// How long acknowledged jobs may sit in the OS cache before they are
    /// forced to disk. 0: fsync before every reply, so nothing acknowledged is
    /// ever lost, at the cost of one disk flush per write (shared by
    /// concurrent writers). N > 0: a crash or power loss of the machine (not
    /// of stalkd alone) can lose what was acknowledged in the last N ms.
    /// Also turns syncing back on after an earlier -F.
    #[arg(short = 'f', value_name = "MS", action = ArgAction::Append)]
    fsync_ms: Vec<u64>,

    /// Never fsync the binlog
    ///
    /// Fastest. A crash of stalkd loses nothing the OS already has, but a crash
    /// or power loss of the machine can lose anything the OS had not yet
    /// written back (typically up to 30 seconds of work). The last of -f and -F
    /// wins.
    #[arg(short = 'F', action = ArgAction::Count)]
    no_fsync: u8,

    /// Listen on ADDR: IPv4, IPv6, or unix:/path [default: 0.0.0.0]
    ///
    /// Listen address: a host name, an IPv4 or IPv6 address (`::` also accepts
    /// IPv4 connections), or unix:/path for a UNIX socket. A stale socket file
    /// left at /path by a previous run is replaced; with a UNIX socket, -p is
    /// ignored.
    #[arg(short = 'l', value_name = "ADDR", value_parser = parse_listen)]
    listen: Option<ListenArg>,

    /// Listen on TCP port PORT [default: 11300]
    #[arg(short = 'p', value_name = "PORT")]
    port: Option<u16>,

    /// Maximum binlog file size in bytes [default: 10485760]
    ///
    /// Size of each binlog file. Larger files mean fewer files and less
    /// frequent compaction; smaller ones release disk space sooner.
    #[arg(short = 's', value_name = "BYTES", value_parser = parse_binlog_size)]
    binlog_size: Option<u64>,

    /// Become USER after binding the listening socket
    ///
    /// After the socket is bound (so a port below 1024 works), switch to USER's
    /// primary group and user id; the binlog is then opened as USER, so its
    /// files belong to USER. Requires starting as root.
    #[arg(short = 'u', value_name = "USER")]
    user: Option<String>,

    /// Maximum job size in bytes, at most 1073741824 [default: 65535]
    ///
    /// Larger puts are answered JOB_TOO_BIG. Values above 1073741824 (1 GiB)
    /// are lowered to it with a warning.
    #[arg(short = 'z', value_name = "BYTES")]
    max_job_size: Option<u64>,

    /// Increase log verbosity (repeatable: -V debug, -VV trace with every command and reply)
    #[arg(short = 'V', action = ArgAction::Count)]
    verbose: u8,

    /// Print the version and exit
    #[arg(short = 'v', long = "version", action = ArgAction::SetTrue)]
    version: bool,

    /// Accepted for compatibility (no effect)
    ///
    /// beanstalkd no longer has this flag's behaviour: the binlog is always
    /// compacted. Accepted so existing command lines keep working.
    #[arg(short = 'c', action = ArgAction::SetTrue)]
    compact: bool,

    /// Accepted for compatibility (no effect)
    ///
    /// See -c.
    #[arg(short = 'n', action = ArgAction::SetTrue)]
    no_compact: bool,
}

/// `-l` before `-p` is applied.
#[derive(Debug, Clone)]
enum ListenArg {
    Host(String),
    Unix(PathBuf),
}

fn parse_listen(s: &str) -> Result<ListenArg, String> {
    match s.strip_prefix("unix:") {
        Some("") => Err("unix: needs a path, as in unix:/run/stalkd.sock".into()),
        Some(path) => Ok(ListenArg::Unix(PathBuf::from(path))),
        None if s.is_empty() => Err("empty address".into()),
        None => Ok(ListenArg::Host(s.to_string())),
    }
}

fn parse_binlog_size(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("the binlog file size must be at least 1 byte".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Listen::Tcp { host, port } => write!(f, "{host}:{port}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// How often the binlog is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync at least this often (0: before every acknowledgement).
    Every(Duration),
    Never,
}

impl SyncPolicy {
    /// `-f 0`: no reply before its binlog record is synced.
    pub fn syncs_before_reply(self) -> bool {
        self == SyncPolicy::Every(Duration::ZERO)
    }
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncPolicy::Every(d) if d.is_zero() => f.write_str("fsync before every reply"),
            SyncPolicy::Every(d) => write!(f, "fsync every {} ms", d.as_millis()),
            SyncPolicy::Never => f.write_str("never fsync"),
        }
    }
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
    /// Runtime worker threads (1: a single-threaded runtime).
    pub threads: usize,
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
            sync: SyncPolicy::Every(Duration::from_millis(DEFAULT_FSYNC_MS)),
            skip_corrupt: false,
            threads: 1,
            user: None,
            verbosity: 0,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Serve with `config`; `warnings` are notes for the operator, to be
    /// logged once logging is set up.
    Run {
        config: Config,
        warnings: Vec<String>,
    },
    PrintVersion,
}

/// Parses `args` (program name first). Help exits 0 (stdout); a bad flag or
/// value prints one line naming it plus the usage to stderr and exits 2.
pub fn parse<I, T>(args: I) -> Invocation
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match try_parse(args) {
        Ok(invocation) => invocation,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", usage_error(&e));
            std::process::exit(2);
        }
    }
}

/// The text printed for a command-line error: clap's first line (which names
/// the flag and the value), then our usage line and where to read more.
fn usage_error(e: &clap::Error) -> String {
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or("invalid command line");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    format!("stalkd: {first}\nUsage: {USAGE}\nTry 'stalkd --help' for more information.")
}

/// Parses `args` without exiting.
pub fn try_parse<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Flags::command().try_get_matches_from(args)?;
    let flags = Flags::from_arg_matches(&matches)?;
    if flags.version {
        return Ok(Invocation::PrintVersion);
    }
    let mut warnings = Vec::new();

    // beanstalkd: -f sets the interval and turns syncing on, -F turns it off;
    // whichever comes last on the command line wins.
    let last_f = matches.indices_of("fsync_ms").and_then(|i| i.max());
    // A count flag has a default (0), whose index means nothing.
    let last_cap_f = (flags.no_fsync > 0)
        .then(|| matches.indices_of("no_fsync").and_then(|i| i.max()))
        .flatten();
    let interval =
        Duration::from_millis(flags.fsync_ms.last().copied().unwrap_or(DEFAULT_FSYNC_MS));
    let sync = match (last_f, last_cap_f) {
        (Some(f), Some(cf)) if f > cf => SyncPolicy::Every(interval),
        (_, Some(_)) => SyncPolicy::Never,
        _ => SyncPolicy::Every(interval),
    };

    let max_job_size = match flags.max_job_size {
        None => DEFAULT_MAX_JOB_SIZE,
        Some(z) if z > u64::from(MAX_JOB_SIZE_LIMIT) => {
            warnings.push(format!(
                "maximum job size was set to {z}, which is more than {MAX_JOB_SIZE_LIMIT}; \
                 using {MAX_JOB_SIZE_LIMIT}"
            ));
            MAX_JOB_SIZE_LIMIT
        }
        // Fits: at most MAX_JOB_SIZE_LIMIT, itself a u32.
        Some(z) => z as u32,
    };

    if flags.compact || flags.no_compact {
        warnings.push("-c and -n were removed from beanstalkd and have no effect; the binlog is always compacted".into());
    }

    let port = flags.port.unwrap_or(11300);
    let listen = match flags.listen {
        Some(ListenArg::Unix(path)) => {
            if flags.port.is_some() {
                warnings.push(format!("-p {port} is ignored: listening on a UNIX socket"));
            }
            Listen::Unix(path)
        }
        Some(ListenArg::Host(host)) => Listen::Tcp { host, port },
        None => Listen::Tcp {
            host: "0.0.0.0".into(),
            port,
        },
    };

    Ok(Invocation::Run {
        config: Config {
            listen,
            max_job_size,
            binlog_dir: flags.binlog_dir,
            binlog_size: flags.binlog_size.unwrap_or(DEFAULT_BINLOG_SIZE),
            sync,
            skip_corrupt: flags.skip_corrupt,
            threads: usize::from(flags.threads),
            user: flags.user,
            verbosity: flags.verbose,
        },
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_warned(args: &[&str]) -> (Config, Vec<String>) {
        match try_parse(std::iter::once("stalkd").chain(args.iter().copied())) {
            Ok(Invocation::Run { config, warnings }) => (config, warnings),
            Ok(Invocation::PrintVersion) => panic!("unexpected -v"),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn run(args: &[&str]) -> Config {
        run_warned(args).0
    }

    fn error(args: &[&str]) -> String {
        match try_parse(std::iter::once("stalkd").chain(args.iter().copied())) {
            Err(e) => usage_error(&e),
            Ok(i) => panic!("{args:?} parsed: {i:?}"),
        }
    }

    #[test]
    fn threads_default_to_one_and_are_bounded() {
        assert_eq!(run(&[]).threads, 1);
        assert_eq!(run(&["--threads", "4"]).threads, 4);
        assert!(try_parse(["stalkd", "--threads", "0"]).is_err());
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
        assert_eq!(c.binlog_dir, None);
        assert_eq!(c.binlog_size, 10_485_760);
        assert_eq!(c.sync, SyncPolicy::Every(Duration::from_millis(50)));
        assert_eq!(c.user, None);
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

        // A value-taking flag ends a group: its value is attached or next.
        let c = run(&["-VVl127.0.0.1", "-Fp", "7", "-b/tmp", "-s4096", "-unobody"]);
        assert_eq!(c.verbosity, 2);
        assert_eq!(c.listen.to_string(), "127.0.0.1:7");
        assert_eq!(c.sync, SyncPolicy::Never);
        assert_eq!(c.binlog_dir, Some(PathBuf::from("/tmp")));
        assert_eq!(c.binlog_size, 4096);
        assert_eq!(c.user.as_deref(), Some("nobody"));
    }

    #[test]
    fn last_of_f_and_cap_f_wins() {
        assert_eq!(run(&["-f", "0", "-F"]).sync, SyncPolicy::Never);
        assert_eq!(
            run(&["-F", "-f", "7"]).sync,
            SyncPolicy::Every(Duration::from_millis(7))
        );
        assert_eq!(
            run(&["-f", "3", "-F", "-f9"]).sync,
            SyncPolicy::Every(Duration::from_millis(9))
        );
        assert_eq!(run(&["-f9", "-FV"]).sync, SyncPolicy::Never);
    }

    #[test]
    fn unix_socket_and_size_cap() {
        let (c, warnings) = run_warned(&["-l", "unix:/tmp/x.sock", "-z", "2000000000"]);
        assert_eq!(c.listen, Listen::Unix("/tmp/x.sock".into()));
        assert_eq!(c.max_job_size, MAX_JOB_SIZE_LIMIT);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        // Beyond u32 too: capped, not rejected.
        assert_eq!(run(&["-z", "99999999999"]).max_job_size, MAX_JOB_SIZE_LIMIT);
    }

    #[test]
    fn ipv6_listen_addresses() {
        assert_eq!(run(&["-l", "::1", "-p", "5"]).listen.to_string(), "[::1]:5");
        assert_eq!(run(&["-l::"]).listen.to_string(), "[::]:11300");
    }

    #[test]
    fn compatibility_flags_warn() {
        let (_, warnings) = run_warned(&["-c", "-n"]);
        assert_eq!(warnings.len(), 1);
        let (_, warnings) = run_warned(&["-l", "unix:/x", "-p", "1"]);
        assert!(warnings[0].contains("-p 1 is ignored"), "{warnings:?}");
    }

    #[test]
    fn version_flag() {
        assert!(matches!(parse(["stalkd", "-v"]), Invocation::PrintVersion));
        assert!(matches!(
            parse(["stalkd", "--version"]),
            Invocation::PrintVersion
        ));
    }

    #[test]
    fn errors_name_the_flag_and_show_usage() {
        for (args, needle) in [
            (&["-x"][..], "'-x'"),
            (&["-Vx"][..], "'-x'"),
            (&["-p"][..], "'-p <PORT>'"),
            (&["-p", "abc"][..], "'-p <PORT>'"),
            (&["-p", "70000"][..], "'-p <PORT>'"),
            (&["-z", "-1"][..], "'-1'"),
            (&["-s", "0"][..], "'-s <BYTES>'"),
            (&["-f", "soon"][..], "'-f <MS>'"),
            (&["-l", "unix:"][..], "'-l <ADDR>'"),
            (&["extra"][..], "'extra'"),
        ] {
            let text = error(args);
            let mut lines = text.lines();
            let first = lines.next().unwrap();
            assert!(first.starts_with("stalkd: "), "{args:?}: {text}");
            assert!(first.contains(needle), "{args:?}: {text}");
            assert!(lines.next().unwrap().starts_with("Usage: stalkd [-b DIR]"));
        }
    }

    #[test]
    fn help_explains_every_flag() {
        let help = Flags::command().render_long_help().to_string();
        for flag in [
            "-b", "-f", "-F", "-l", "-p", "-s", "-u", "-z", "-V", "-v", "-c", "-n", "-h",
        ] {
            assert!(
                help.contains(&format!("  {flag}")),
                "{flag} missing:\n{help}"
            );
        }
        assert!(help.contains("power loss"), "{help}");
        assert!(help.contains("SIGUSR1"), "{help}");
    }
}
