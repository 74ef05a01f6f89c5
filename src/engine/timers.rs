//! Every deadline the engine keeps: delayed jobs coming due, TTR expiries,
//! pause ends and blocked reserves giving up.
//!
//! Each kind is an ordered set keyed by (due time, subject), so the next due
//! event is the first element, and a cancel (delete, touch, a job handed to a
//! waiter) is a removal by key. `Engine::tick` drains them in time order.

use super::{ClientId, Time, TubeIdx};
use crate::protocol::JobId;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct Timers {
    pub delayed: BTreeSet<(Time, JobId)>,
    /// Reserved jobs by TTR deadline, with their reserver.
    pub ttr: BTreeMap<(Time, JobId), ClientId>,
    pub pauses: BTreeSet<(Time, TubeIdx)>,
    pub waits: BTreeSet<(Time, ClientId)>,
}

/// The next thing due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Delayed(JobId),
    Pause(TubeIdx),
    Ttr(JobId, ClientId),
    Wait(ClientId),
}

impl Timers {
    /// The earliest deadline of each kind, in tie-break order.
    fn firsts(&self) -> [Option<Time>; 4] {
        [
            self.delayed.first().map(|e| e.0),
            self.pauses.first().map(|e| e.0),
            self.ttr.first_key_value().map(|(e, _)| e.0),
            self.waits.first().map(|e| e.0),
        ]
    }

    /// The earliest deadline of any kind.
    pub fn next(&self) -> Option<Time> {
        self.firsts().into_iter().flatten().min()
    }

    /// Removes and returns the earliest event due at or before `now`. Ties go
    /// to delayed jobs, then pauses, then TTRs, then waits, so a job that
    /// becomes available at the instant a reserve would give up is delivered.
    pub fn pop_due(&mut self, now: Time) -> Option<Due> {
        let (kind, at) = self
            .firsts()
            .into_iter()
            .enumerate()
            .filter_map(|(k, t)| t.map(|t| (k, t)))
            .min_by_key(|&(k, t)| (t, k))?;
        if at > now {
            return None;
        }
        Some(match kind {
            0 => Due::Delayed(self.delayed.pop_first()?.1),
            1 => Due::Pause(self.pauses.pop_first()?.1),
            2 => {
                let ((_, id), client) = self.ttr.pop_first()?;
                Due::Ttr(id, client)
            }
            _ => Due::Wait(self.waits.pop_first()?.1),
        })
    }
}
