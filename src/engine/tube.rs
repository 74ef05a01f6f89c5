//! A tube: a named queue with its ready, delayed and buried jobs and waiters.
//!
//! Ordered sets give O(log n) insert, removal by key, and minimum, which is
//! what every operation needs: ready by (priority, id), delayed by
//! (deadline, id), buried in FIFO order by bury sequence, waiters in the order
//! they started waiting.

use super::{ClientId, Time};
use crate::protocol::{JobId, Priority, Seconds, TubeName};
use std::collections::BTreeSet;

#[derive(Debug)]
pub struct Tube {
    pub name: TubeName,
    pub ready: BTreeSet<(Priority, JobId)>,
    pub delayed: BTreeSet<(Time, JobId)>,
    pub buried: BTreeSet<(u64, JobId)>,
    pub waiters: BTreeSet<(u64, ClientId)>,
    /// Ready jobs with an urgent priority.
    pub urgent: usize,
    /// Jobs of this tube reserved by someone.
    pub reserved: usize,
    pub total_jobs: u64,
    pub cmd_delete: u64,
    pub cmd_pause: u64,
    /// The pause asked for, in seconds, while paused.
    pub pause: Seconds,
    pub unpause_at: Option<Time>,
    pub using: usize,
    pub watching: usize,
    /// Position in the engine's creation-ordered tube list.
    pub list_pos: usize,
}

impl Tube {
    pub fn new(name: TubeName, list_pos: usize) -> Tube {
        Tube {
            name,
            ready: BTreeSet::new(),
            delayed: BTreeSet::new(),
            buried: BTreeSet::new(),
            waiters: BTreeSet::new(),
            urgent: 0,
            reserved: 0,
            total_jobs: 0,
            cmd_delete: 0,
            cmd_pause: 0,
            pause: 0,
            unpause_at: None,
            using: 0,
            watching: 0,
            list_pos,
        }
    }

    pub fn job_count(&self) -> usize {
        self.ready.len() + self.delayed.len() + self.buried.len() + self.reserved
    }

    /// Nothing refers to the tube any more: it may be freed (unless it is `default`).
    pub fn is_unreferenced(&self) -> bool {
        self.job_count() == 0 && self.using == 0 && self.watching == 0
    }

    pub fn is_paused(&self) -> bool {
        self.unpause_at.is_some()
    }

    /// The best ready job, if the tube hands jobs out right now.
    pub fn best_ready(&self) -> Option<(Priority, JobId)> {
        if self.is_paused() {
            None
        } else {
            self.ready.first().copied()
        }
    }
}
