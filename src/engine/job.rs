//! A job and the state it is in.
//!
//! Invariant: a job is in exactly one of its tube's structures, the one its
//! `state` names (ready set, delayed set, buried list), or, when reserved, in
//! its reserver's reservation set. The engine moves it; nothing else does.

use super::{ClientId, Time, TubeIdx};
use crate::protocol::{JobId, Priority, Seconds};
use bytes::Bytes;

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

/// One job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub pri: Priority,
    /// Delay of the last put or release, in seconds (a kick keeps it).
    pub delay: Seconds,
    /// Time to run, in seconds, at least 1.
    pub ttr: Seconds,
    pub tube: TubeIdx,
    pub state: State,
    pub created: Time,
    /// Delayed: when it becomes ready. Reserved: when its TTR runs out.
    pub deadline: Time,
    /// Reserved: who holds it and when it was reserved. Buried: its place
    /// in the tube's FIFO.
    pub holder: Holder,
    pub counts: JobCounts,
    /// Binlog segment holding the job's latest full record (0 without -b).
    pub file: u32,
    /// The body as received, trailing CRLF included.
    pub body: Bytes,
}

/// The state-specific link of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    None,
    /// The reserving client and an engine-wide sequence number: a client's
    /// reservations go back to ready in reservation order on disconnect.
    Client(ClientId, u64),
    BuriedSeq(u64),
}

impl Job {
    /// The client holding the job, if it is reserved.
    pub fn reserver(&self) -> Option<ClientId> {
        match (self.state, self.holder) {
            (State::Reserved, Holder::Client(c, _)) => Some(c),
            _ => None,
        }
    }

    /// `pri < 1024` counts as urgent in the stats.
    pub fn is_urgent(&self) -> bool {
        self.pri < URGENT_PRIORITY
    }
}

/// Priorities below this are "urgent".
pub const URGENT_PRIORITY: Priority = 1024;
