//! Per-connection queue state: the used tube, the watch list, reservations
//! and an ongoing blocking reserve.
//!
//! Every connection has one of these, idle or not, so its size is part of
//! the memory per connection: the common case (one watched tube, nothing
//! reserved, not waiting) allocates nothing beyond the Client itself. The
//! engine boxes each Client: glibc's aligned allocations (tokio's task and
//! socket registration are 128-byte aligned) leave ~100-byte gaps on the
//! free lists for every connection, and a Client box fills one, where an
//! inline Client grew the engine's table by 1.6 x 136 bytes a connection.

use super::{Time, TubeIdx};
use crate::protocol::JobId;
use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;

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
    pub watching: Watching,
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
            watching: Watching::one(default_tube),
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

/// The tubes a client watches, in watch order (`list-tubes-watched` shows
/// it; `ignore` swap-removes, as beanstalkd does). Never empty.
///
/// Most clients watch one tube: that is stored inline. More tubes get a list
/// and each tube's position in it, for O(1) membership tests and removal.
#[derive(Debug)]
pub struct Watching(Repr);

#[derive(Debug)]
enum Repr {
    One(TubeIdx),
    Many(Box<Many>),
}

#[derive(Debug)]
struct Many {
    list: Vec<TubeIdx>,
    /// Each tube's index in `list`.
    pos: HashMap<TubeIdx, usize>,
}

impl Watching {
    pub fn one(t: TubeIdx) -> Watching {
        Watching(Repr::One(t))
    }

    pub fn contains(&self, t: &TubeIdx) -> bool {
        match &self.0 {
            Repr::One(only) => only == t,
            Repr::Many(m) => m.pos.contains_key(t),
        }
    }

    /// Appends `t` unless already watched; says whether it was added.
    pub fn insert(&mut self, t: TubeIdx) -> bool {
        if self.contains(&t) {
            return false;
        }
        match &mut self.0 {
            Repr::One(only) => {
                let first = *only;
                self.0 = Repr::Many(Box::new(Many {
                    list: vec![first, t],
                    pos: HashMap::from([(first, 0), (t, 1)]),
                }));
            }
            Repr::Many(m) => {
                m.pos.insert(t, m.list.len());
                m.list.push(t);
            }
        }
        true
    }

    /// Removes `t` by swapping the last tube into its place; says whether it
    /// was watched. The last tube cannot be removed (the caller answers
    /// NOT_IGNORED first).
    pub fn remove(&mut self, t: TubeIdx) -> bool {
        let Repr::Many(m) = &mut self.0 else {
            debug_assert!(!self.contains(&t), "removing the only watched tube");
            return false;
        };
        let Some(pos) = m.pos.remove(&t) else {
            return false;
        };
        m.list.swap_remove(pos);
        if let Some(&moved) = m.list.get(pos) {
            m.pos.insert(moved, pos);
        }
        if let [last] = m.list[..] {
            // Back to the common case: give the list and index back.
            self.0 = Repr::One(last);
        }
        true
    }

    /// Checks that the index matches the list; for tests and fuzzing.
    pub fn check(&self) {
        if let Repr::Many(m) = &self.0 {
            assert!(m.list.len() > 1, "a single tube is stored inline");
            assert_eq!(m.pos.len(), m.list.len());
            for (i, t) in m.list.iter().enumerate() {
                assert_eq!(m.pos.get(t), Some(&i), "watch position");
            }
        }
    }
}

impl Deref for Watching {
    type Target = [TubeIdx];

    fn deref(&self) -> &[TubeIdx] {
        match &self.0 {
            Repr::One(only) => std::slice::from_ref(only),
            Repr::Many(m) => &m.list,
        }
    }
}

impl<'a> IntoIterator for &'a Watching {
    type Item = &'a TubeIdx;
    type IntoIter = std::slice::Iter<'a, TubeIdx>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_order_survives_growing_and_shrinking() {
        let mut w = Watching::one(0);
        assert!(!w.insert(0));
        assert!(w.insert(5) && w.insert(7) && w.insert(9));
        assert_eq!(&w[..], [0, 5, 7, 9]);
        // beanstalkd's swap-remove: the last tube takes the ignored one's place.
        assert!(w.remove(5));
        assert_eq!(&w[..], [0, 9, 7]);
        assert!(!w.remove(5));
        assert!(w.contains(&7) && !w.contains(&5));
        w.check();
        assert!(w.remove(0) && w.remove(7));
        assert_eq!(&w[..], [9]);
        assert!(matches!(w.0, Repr::One(9)));
        assert!(!w.remove(4));
        w.check();
    }
}
