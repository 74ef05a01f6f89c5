//! A tube: a named queue with its ready, delayed and buried jobs and waiters.
//!
//! Ordered sets give O(log n) insert, removal by key, and minimum, which is
//! what every operation needs: ready by (priority, id) (a compact
//! [`ReadySet`]), delayed by
//! (deadline, id), buried in FIFO order by bury sequence, waiters in the order
//! they started waiting.

use super::ready::ReadySet;
use super::{ClientId, Time};
use crate::protocol::{JobId, Priority, Seconds, TubeName};
use std::collections::BTreeSet;

#[derive(Debug)]
pub struct Tube {
    pub name: TubeName,
    pub ready: ReadySet,
    pub delayed: BTreeSet<(Time, JobId)>,
    pub buried: BTreeSet<(u64, JobId)>,
    pub waiters: Waiters,
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
            ready: ReadySet::default(),
            delayed: BTreeSet::new(),
            buried: BTreeSet::new(),
            waiters: Waiters::default(),
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
            self.ready.first()
        }
    }
}

/// The clients blocked in reserve on a tube, served longest-waiting first.
///
/// Keyed by the engine-wide sequence number taken when a client starts
/// waiting, so a client waiting on several tubes has the same rank in each,
/// and removal (the client got a job elsewhere, timed out or left) is
/// O(log n). beanstalkd serves from a rotating index with swap-remove, which
/// is only roughly oldest-first; see protocol.md, deliberate differences.
#[derive(Debug, Default)]
pub struct Waiters {
    items: std::collections::BTreeSet<(u64, ClientId)>,
}

impl Waiters {
    pub fn push(&mut self, seq: u64, client: ClientId) {
        self.items.insert((seq, client));
    }

    pub fn remove(&mut self, seq: u64, client: ClientId) -> bool {
        self.items.remove(&(seq, client))
    }

    /// The longest waiter and its sequence number.
    pub fn first(&self) -> Option<(u64, ClientId)> {
        self.items.first().copied()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.items.iter().map(|&(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::Waiters;

    #[test]
    fn longest_waiter_first_whatever_the_arrivals() {
        let mut w = Waiters::default();
        w.push(1, 10);
        w.push(2, 20);
        assert_eq!(w.first(), Some((1, 10)));
        assert!(w.remove(1, 10));
        w.push(3, 30);
        assert_eq!(w.first(), Some((2, 20)));
        assert!(w.remove(2, 20));
        assert!(w.remove(3, 30));
        assert!(!w.remove(3, 30));
        assert_eq!(w.first(), None);
    }
}
