//! A tube's ready jobs, in (priority, id) order.
//!
//! Job ids are handed out in sequence, so jobs of one priority tend to have
//! neighbouring ids. The set keeps, per priority, one 64-bit map for each
//! run of 64 ids: a queue of jobs with few distinct priorities costs about a
//! byte per job instead of a tree entry each, and order, minimum, insert and
//! removal stay O(log n).
//!
//! Invariant: no map in `runs` is zero; `len` counts the bits set.

use crate::protocol::{JobId, Priority};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct ReadySet {
    /// (priority, id / 64) -> which of those 64 ids are ready.
    runs: BTreeMap<(Priority, u64), u64>,
    len: usize,
}

fn split(id: JobId) -> (u64, u64) {
    (id / 64, 1 << (id % 64))
}

impl ReadySet {
    pub fn insert(&mut self, pri: Priority, id: JobId) -> bool {
        let (run, bit) = split(id);
        let map = self.runs.entry((pri, run)).or_insert(0);
        let new = *map & bit == 0;
        *map |= bit;
        self.len += usize::from(new);
        new
    }

    pub fn remove(&mut self, pri: Priority, id: JobId) -> bool {
        let (run, bit) = split(id);
        let Some(map) = self.runs.get_mut(&(pri, run)) else {
            return false;
        };
        if *map & bit == 0 {
            return false;
        }
        *map &= !bit;
        if *map == 0 {
            self.runs.remove(&(pri, run));
        }
        self.len -= 1;
        true
    }

    pub fn contains(&self, pri: Priority, id: JobId) -> bool {
        let (run, bit) = split(id);
        self.runs.get(&(pri, run)).is_some_and(|map| map & bit != 0)
    }

    /// The best ready job: lowest priority value, then lowest id.
    pub fn first(&self) -> Option<(Priority, JobId)> {
        let (&(pri, run), &map) = self.runs.first_key_value()?;
        Some((pri, run * 64 + u64::from(map.trailing_zeros())))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn orders_like_a_set_of_priority_id_pairs() {
        let mut set = ReadySet::default();
        let mut model = BTreeSet::new();
        let mut rng = crate::test_rng::Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let x = rng.next();
            let pri = (x % 3) as Priority * 1000;
            let id = (x >> 8) % 700 + u64::from(x % 5 == 0) * (u64::MAX - 700);
            if x % 2 == 0 {
                assert_eq!(set.insert(pri, id), model.insert((pri, id)));
            } else {
                assert_eq!(set.remove(pri, id), model.remove(&(pri, id)));
            }
            assert_eq!(set.first(), model.first().copied());
            assert_eq!(set.len(), model.len());
            assert_eq!(set.contains(pri, id), model.contains(&(pri, id)));
        }
    }
}
