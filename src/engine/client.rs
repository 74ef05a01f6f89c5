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

use super::id_hash::IdMap;
use super::{Time, TubeIdx};
use crate::protocol::JobId;
use std::collections::BTreeMap;
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
    pub reserved: Reservations,
    pub wait: Option<Wait>,
    pub producer: bool,
    pub worker: bool,
}

impl Client {
    pub fn new(default_tube: TubeIdx) -> Client {
        Client {
            using: default_tube,
            watching: Watching::one(default_tube),
            reserved: Reservations::default(),
            wait: None,
            producer: false,
            worker: false,
        }
    }

    /// When the 1-second safety margin before the soonest TTR deadline starts.
    pub fn margin_at(&self) -> Option<Time> {
        self.reserved
            .first()
            .map(|((deadline, _), _)| deadline.saturating_sub(super::SAFETY_MARGIN))
    }

    pub fn is_wide(&self) -> bool {
        self.watching.len() > WIDE_WATCH
    }

    pub fn is_deadline_soon(&self, now: Time) -> bool {
        self.margin_at().is_some_and(|m| now >= m)
    }
}

/// A reservation's key: the job's TTR deadline, then its id.
pub type ReservationKey = (Time, JobId);

/// A client's reserved jobs, ordered by [`ReservationKey`], each with the
/// engine-wide sequence number of its reserve. Most workers hold one job at
/// a time: that one is kept inline, where a map costs a 280-byte node for
/// every worker holding a job.
#[derive(Debug, Default)]
pub enum Reservations {
    #[default]
    None,
    One(ReservationKey, u64),
    Many(BTreeMap<ReservationKey, u64>),
}

impl Reservations {
    pub fn insert(&mut self, key: ReservationKey, seq: u64) {
        match self {
            Reservations::None => *self = Reservations::One(key, seq),
            Reservations::One(k, s) => {
                debug_assert!(*k != key, "a job reserved twice");
                *self = Reservations::Many(BTreeMap::from([(*k, *s), (key, seq)]));
            }
            Reservations::Many(map) => {
                map.insert(key, seq);
            }
        }
    }

    /// Removes the reservation; returns its sequence number.
    pub fn remove(&mut self, key: &ReservationKey) -> Option<u64> {
        match self {
            Reservations::One(k, s) if k == key => {
                let seq = *s;
                *self = Reservations::None;
                Some(seq)
            }
            Reservations::None | Reservations::One(..) => None,
            Reservations::Many(map) => {
                let seq = map.remove(key);
                if map.len() <= 1 {
                    // Back to the common case: give the map's node back.
                    *self = match map.pop_first() {
                        Some((k, s)) => Reservations::One(k, s),
                        None => Reservations::None,
                    };
                }
                seq
            }
        }
    }

    pub fn contains_key(&self, key: &ReservationKey) -> bool {
        match self {
            Reservations::None => false,
            Reservations::One(k, _) => k == key,
            Reservations::Many(map) => map.contains_key(key),
        }
    }

    /// The reservation with the smallest key (the soonest deadline).
    pub fn first(&self) -> Option<(ReservationKey, u64)> {
        match self {
            Reservations::None => None,
            Reservations::One(k, s) => Some((*k, *s)),
            Reservations::Many(map) => map.first_key_value().map(|(&k, &s)| (k, s)),
        }
    }

    /// Every reservation, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (ReservationKey, u64)> + '_ {
        let (one, many) = match self {
            Reservations::None => (None, None),
            Reservations::One(k, s) => (Some((*k, *s)), None),
            Reservations::Many(map) => (None, Some(map)),
        };
        one.into_iter().chain(
            many.into_iter()
                .flat_map(|m| m.iter().map(|(&k, &s)| (k, s))),
        )
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
    pos: IdMap<TubeIdx, usize>,
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
                    pos: IdMap::from_iter([(first, 0), (t, 1)]),
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
    fn reservations_behave_as_an_ordered_map_and_shrink_back_inline() {
        let mut r = Reservations::default();
        let mut model = BTreeMap::new();
        let mut rng = crate::test_rng::Rng(0x9e37_79b9_7f4a_7c15);
        for step in 0..20_000u64 {
            let x = rng.next();
            let key = ((x % 7) * 1000, (x >> 8) % 5);
            if x % 3 == 0 {
                assert_eq!(r.remove(&key), model.remove(&key));
            } else if let std::collections::btree_map::Entry::Vacant(v) = model.entry(key) {
                v.insert(step);
                r.insert(key, step);
            }
            assert_eq!(r.first(), model.first_key_value().map(|(&k, &s)| (k, s)));
            assert_eq!(r.contains_key(&key), model.contains_key(&key));
            let all: Vec<_> = r.iter().collect();
            let want: Vec<_> = model.iter().map(|(&k, &s)| (k, s)).collect();
            assert_eq!(all, want);
            // One or none is never a map.
            assert_eq!(matches!(r, Reservations::Many(_)), model.len() > 1);
        }
    }

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
