//! A job and the state it is in.
//!
//! Invariant: a job is in exactly one of its tube's structures, the one its
//! `state` names (ready set, delayed set, buried list), or, when reserved, in
//! its reserver's reservation set. The engine moves it; nothing else does.
//!
//! `Job` is 64 bytes on purpose: a server holding millions of small jobs
//! pays this per job, next to the body itself. Whatever only one state needs
//! shares the `key` word, the reserver lives in the reservation, and the
//! counters are packed into one word (see [`Counts`]).

use super::{Time, TubeIdx};
use crate::protocol::{JobId, Priority, Seconds};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ready,
    Reserved,
    Delayed,
    Buried,
}

impl State {
    /// The word `stats-job` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Reserved => "reserved",
            State::Delayed => "delayed",
            State::Buried => "buried",
        }
    }
}

/// Per-job counters shown by `stats-job`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub reserves: u32,
    pub timeouts: u32,
    pub releases: u32,
    pub buries: u32,
    pub kicks: u32,
}

/// One of the counters of [`JobCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Reserves,
    Timeouts,
    Releases,
    Buries,
    Kicks,
}

/// Where a job's body is kept; only the job store reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BodyRef(pub(super) u64);

/// One job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub created: Time,
    /// The job's key in the structure its state puts it in. Delayed: when
    /// it becomes ready. Reserved: when its TTR runs out. Buried: its place
    /// in the tube's FIFO (an engine-wide sequence number). Ready: unused.
    pub key: u64,
    pub(super) counts: Counts,
    pub(super) body: BodyRef,
    pub pri: Priority,
    /// Delay of the last put or release, in seconds (a kick keeps it).
    pub delay: Seconds,
    /// Time to run, in seconds, at least 1.
    pub ttr: Seconds,
    pub tube: TubeIdx,
    /// Binlog segment holding the job's latest full record (0 without -b).
    pub file: u32,
    pub state: State,
}

impl Job {
    /// A new job, ready, with zero counters and no body yet (the store
    /// gives it one on insert).
    pub fn new(id: JobId, pri: Priority, delay: Seconds, ttr: Seconds, tube: TubeIdx) -> Job {
        Job {
            id,
            created: 0,
            key: 0,
            counts: Counts::ZERO,
            body: BodyRef::default(),
            pri,
            delay,
            ttr: ttr.max(1),
            tube,
            file: 0,
            state: State::Ready,
        }
    }

    /// `pri < 1024` counts as urgent in the stats.
    pub fn is_urgent(&self) -> bool {
        self.pri < URGENT_PRIORITY
    }
}

/// Priorities below this are "urgent".
pub const URGENT_PRIORITY: Priority = 1024;

/// The five counters of a job in one word: 16 bits for reserves, 12 for
/// each of the others. Almost every job stays far below that; one that
/// would not fit is marked [`Counts::SPILLED`] and the job store keeps its
/// full counters aside, so `stats-job` is exact whatever the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts(u64);

/// (shift, width) of each counter in the packed word, in `Count` order.
const FIELDS: [(u32, u32); 5] = [(0, 16), (16, 12), (28, 12), (40, 12), (52, 12)];

impl Counts {
    pub const ZERO: Counts = Counts(0);
    /// The counters are kept outside the job.
    pub const SPILLED: Counts = Counts(u64::MAX);

    fn field(kind: Count) -> (u32, u32) {
        FIELDS[kind as usize]
    }

    /// Packs `c`, or `None` if a counter does not fit.
    pub fn pack(c: JobCounts) -> Option<Counts> {
        let values = [c.reserves, c.timeouts, c.releases, c.buries, c.kicks];
        let mut word = 0u64;
        for (&v, &(shift, width)) in values.iter().zip(&FIELDS) {
            // The all-ones value of a field is never used, so a packed word
            // can never equal SPILLED.
            if u64::from(v) >= (1 << width) - 1 {
                return None;
            }
            word |= u64::from(v) << shift;
        }
        Some(Counts(word))
    }

    /// The counters, unless they are spilled.
    pub fn unpack(self) -> Option<JobCounts> {
        if self == Counts::SPILLED {
            return None;
        }
        let get = |kind| {
            let (shift, width) = Counts::field(kind);
            ((self.0 >> shift) & ((1 << width) - 1)) as u32
        };
        Some(JobCounts {
            reserves: get(Count::Reserves),
            timeouts: get(Count::Timeouts),
            releases: get(Count::Releases),
            buries: get(Count::Buries),
            kicks: get(Count::Kicks),
        })
    }
}

impl JobCounts {
    pub fn bump(&mut self, kind: Count) {
        let field = match kind {
            Count::Reserves => &mut self.reserves,
            Count::Timeouts => &mut self.timeouts,
            Count::Releases => &mut self.releases,
            Count::Buries => &mut self.buries,
            Count::Kicks => &mut self.kicks,
        };
        *field = field.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Job>(), 64);
    }

    #[test]
    fn counts_round_trip_up_to_each_field_limit() {
        let c = JobCounts {
            reserves: 65534,
            timeouts: 4094,
            releases: 1,
            buries: 4094,
            kicks: 7,
        };
        assert_eq!(Counts::pack(c).and_then(Counts::unpack), Some(c));
        assert_eq!(Counts::ZERO.unpack(), Some(JobCounts::default()));
        for over in [
            JobCounts {
                reserves: 65535,
                ..c
            },
            JobCounts { kicks: 4095, ..c },
            JobCounts {
                releases: u32::MAX,
                ..c
            },
        ] {
            assert_eq!(Counts::pack(over), None);
        }
        assert_eq!(Counts::SPILLED.unpack(), None);
    }
}
