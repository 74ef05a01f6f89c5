//! Per-connection queue state: the used tube, the watch list, reservations
//! and an ongoing blocking reserve.

use super::{Time, TubeIdx};
use crate::protocol::JobId;
use std::collections::{BTreeMap, HashMap};

/// Clients watching more tubes than this wait in one engine-wide list and
/// pick jobs from the index of tube heads, so their cost does not grow with
/// the number of tubes they watch.
pub const WIDE_WATCH: usize = 32;

/// A connection waiting in `reserve`.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// Orders waiters: the smallest has waited longest.
    pub seq: u64,
    /// When `reserve-with-timeout` gives up; `None` waits forever.
    pub timeout_at: Option<Time>,
    /// The wake-up currently scheduled in the timers.
    pub timer: Option<Time>,
    /// Waiting in the engine-wide list of wide watchers, not per tube.
    pub wide: bool,
}

#[derive(Debug)]
pub struct Client {
    pub using: TubeIdx,
    /// Watched tubes; `ignore` swap-removes, as beanstalkd does, so order is observable.
    pub watching: Vec<TubeIdx>,
    /// Each watched tube's position in `watching`, for O(1) membership
    /// tests and removal.
    pub watch_set: HashMap<TubeIdx, usize>,
    /// Reserved jobs by TTR deadline, so the soonest is the first, each
    /// with an engine-wide sequence number: on disconnect they go back to
    /// ready in the order they were reserved.
    pub reserved: BTreeMap<(Time, JobId), u64>,
    pub wait: Option<Wait>,
    pub producer: bool,
    pub worker: bool,
}

impl Client {
    pub fn new(default_tube: TubeIdx) -> Client {
        Client {
            using: default_tube,
            watching: vec![default_tube],
            watch_set: HashMap::from([(default_tube, 0)]),
            reserved: BTreeMap::new(),
            wait: None,
            producer: false,
            worker: false,
        }
    }

    /// When the 1-second safety margin before the soonest TTR deadline starts.
    pub fn margin_at(&self) -> Option<Time> {
        self.reserved
            .first_key_value()
            .map(|(&(deadline, _), _)| deadline.saturating_sub(super::SAFETY_MARGIN))
    }

    pub fn is_wide(&self) -> bool {
        self.watching.len() > WIDE_WATCH
    }

    pub fn is_deadline_soon(&self, now: Time) -> bool {
        self.margin_at().is_some_and(|m| now >= m)
    }
}
