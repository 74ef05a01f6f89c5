//! The commands a client can send, as typed values.
//!
//! A `Command` is what is left of a request once the wire format is gone: the
//! parser guarantees every field is in range (priorities and durations fit in
//! 32 bits, ids in 64, tube names are valid), so the engine never re-validates.
//! Requests that beanstalkd answers with an error but still *counts* (a put
//! whose body is too big, or not followed by CRLF) are commands too, because
//! the engine owns the counters and the job ids they use up.

use bytes::Bytes;
use std::fmt;

/// Longest tube name, in bytes.
pub const MAX_TUBE_NAME: usize = 200;

/// A job id. Ids start at 1 and only grow.
pub type JobId = u64;

/// A job priority: smaller is more urgent.
pub type Priority = u32;

/// A duration in whole seconds, as the protocol carries it.
pub type Seconds = u32;

/// A valid tube name: 1..=200 bytes of `A-Za-z0-9-+/;.$_()`, not starting with `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TubeName(Box<str>);

impl TubeName {
    /// Validates `raw` as a tube name.
    pub fn new(raw: &[u8]) -> Option<TubeName> {
        if raw.is_empty() || raw.len() > MAX_TUBE_NAME || raw[0] == b'-' {
            return None;
        }
        if !raw.iter().all(|&b| is_name_byte(b)) {
            return None;
        }
        // All bytes are ASCII, so this cannot fail.
        let s = std::str::from_utf8(raw).ok()?;
        Some(TubeName(s.into()))
    }

    /// The tube every connection starts out using and watching.
    pub fn default_tube() -> TubeName {
        TubeName("default".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Bytes allowed in a tube name.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b)
}

impl fmt::Debug for TubeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TubeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The outcome of reading a `put` request: the line and, when it is read, the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutBody {
    /// `bytes` bytes followed by CRLF; the body is stored with its CRLF.
    Body(Bytes),
    /// `bytes + 2` bytes were read but the last two were not CRLF.
    ExpectedCrlf,
    /// `bytes` is over the max job size; `bytes + 2` bytes were discarded.
    TooBig,
    /// The four numbers parsed but text followed them; nothing was consumed.
    TrailingText,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Put {
        pri: Priority,
        delay: Seconds,
        ttr: Seconds,
        body: PutBody,
    },
    Use(TubeName),
    Reserve,
    /// `reserve-with-timeout`; the parser caps the value at `i32::MAX` as 1.13 does.
    ReserveWithTimeout(Seconds),
    ReserveJob(JobId),
    Delete(JobId),
    Release {
        id: JobId,
        pri: Priority,
        delay: Seconds,
    },
    Bury {
        id: JobId,
        pri: Priority,
    },
    Touch(JobId),
    Watch(TubeName),
    Ignore(TubeName),
    Peek(JobId),
    PeekReady,
    PeekDelayed,
    PeekBuried,
    Kick(u32),
    KickJob(JobId),
    StatsJob(JobId),
    StatsTube(TubeName),
    Stats,
    ListTubes,
    ListTubeUsed,
    ListTubesWatched,
    PauseTube {
        tube: TubeName,
        delay: Seconds,
    },
    /// `pause-tube` whose name and delay parsed but whose name is invalid: beanstalkd
    /// counts it in `cmd-pause-tube` and answers BAD_FORMAT.
    PauseTubeBadName,
    Quit,
}

/// The command as a canonical request line (no CRLF): what `-VV` logs, and
/// what parses back to the same command. A put shows its header with the
/// body's length, not the body; the variants that only stand for an error
/// show what was wrong.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Put {
                pri,
                delay,
                ttr,
                body,
            } => match body {
                PutBody::Body(b) => write!(f, "put {pri} {delay} {ttr} {}", b.len() - 2),
                other => write!(f, "put {pri} {delay} {ttr} ({other:?})"),
            },
            Command::Use(t) => write!(f, "use {t}"),
            Command::Reserve => f.write_str("reserve"),
            Command::ReserveWithTimeout(s) => write!(f, "reserve-with-timeout {s}"),
            Command::ReserveJob(id) => write!(f, "reserve-job {id}"),
            Command::Delete(id) => write!(f, "delete {id}"),
            Command::Release { id, pri, delay } => write!(f, "release {id} {pri} {delay}"),
            Command::Bury { id, pri } => write!(f, "bury {id} {pri}"),
            Command::Touch(id) => write!(f, "touch {id}"),
            Command::Watch(t) => write!(f, "watch {t}"),
            Command::Ignore(t) => write!(f, "ignore {t}"),
            Command::Peek(id) => write!(f, "peek {id}"),
            Command::PeekReady => f.write_str("peek-ready"),
            Command::PeekDelayed => f.write_str("peek-delayed"),
            Command::PeekBuried => f.write_str("peek-buried"),
            Command::Kick(n) => write!(f, "kick {n}"),
            Command::KickJob(id) => write!(f, "kick-job {id}"),
            Command::StatsJob(id) => write!(f, "stats-job {id}"),
            Command::StatsTube(t) => write!(f, "stats-tube {t}"),
            Command::Stats => f.write_str("stats"),
            Command::ListTubes => f.write_str("list-tubes"),
            Command::ListTubeUsed => f.write_str("list-tube-used"),
            Command::ListTubesWatched => f.write_str("list-tubes-watched"),
            Command::PauseTube { tube, delay } => write!(f, "pause-tube {tube} {delay}"),
            Command::PauseTubeBadName => f.write_str("pause-tube (bad name)"),
            Command::Quit => f.write_str("quit"),
        }
    }
}
