//! Every job, by id, at a small fixed cost per job.
//!
//! Jobs live in a slab (a `Vec<Job>` whose free slots are reused); a hash
//! table of 4-byte slot numbers finds them by id; bodies live in the
//! [`BodyArena`]. A stored 100-byte job costs its 64-byte `Job`, its body
//! and about 6 bytes of table, where a `HashMap<JobId, Job>` with a buffer
//! per body cost twice that.
//!
//! Costs to know: repacking bodies (when jobs died out of order and chunks
//! are sparse) is one pass over every job, spread over the inserts and
//! removes that follow, [`REPACK_STEP`] slots each, so no command pauses
//! for it whatever the job count. A pass starts at most once per ~1/9 of
//! the live body bytes freed. Neither the slab nor the table shrinks after
//! a peak (as `HashMap` did not).
//!
//! Invariants: `index` holds exactly the slots of live jobs; a free slot's
//! job has id 0 (ids start at 1); a job's counts are `Counts::SPILLED`
//! exactly when `spilled` has its entry.

use super::bodies::BodyArena;
use super::job::{Count, Counts, Job, JobCounts};
use crate::protocol::JobId;
use bytes::Bytes;
use hashbrown::HashTable;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct JobStore {
    slots: Vec<Job>,
    free: Vec<u32>,
    index: HashTable<u32>,
    bodies: BodyArena,
    /// Counters of the few jobs whose counts outgrew their packed word.
    spilled: HashMap<JobId, JobCounts>,
    /// The next slot a repacking pass in progress visits.
    repack: Option<usize>,
}

/// Slots a repacking pass visits per insert or remove: at most this many
/// small bodies (4 KiB each at most) are copied by one operation, and a pass
/// over a slab of n slots (its peak job count) is done after n /
/// `REPACK_STEP` operations.
const REPACK_STEP: usize = 128;

/// Job ids are handed out by the server in sequence, never chosen by
/// clients, so a multiplicative hash spreads them well and cheaply.
fn hash(id: JobId) -> u64 {
    let x = u128::from(id) * 0x9e37_79b9_7f4a_7c15;
    (x as u64) ^ ((x >> 64) as u64)
}

impl JobStore {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    fn slot(&self, id: JobId) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash(id), |&s| slots[s as usize].id == id)
            .copied()
    }

    pub fn get(&self, id: JobId) -> Option<&Job> {
        self.slot(id).map(|s| &self.slots[s as usize])
    }

    pub fn get_mut(&mut self, id: JobId) -> Option<&mut Job> {
        self.slot(id).map(|s| &mut self.slots[s as usize])
    }

    /// Slots in the slab, live or free: the range of [`at_slot`](Self::at_slot).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The live job in `slot`, if any; a walk over every slot visits every
    /// job once (a job keeps its slot while it lives).
    pub fn at_slot(&self, slot: usize) -> Option<&Job> {
        self.slots.get(slot).filter(|j| j.id != 0)
    }

    pub fn contains(&self, id: JobId) -> bool {
        self.slot(id).is_some()
    }

    /// Stores a new job with these counters and body. Its id must be unused.
    pub fn insert(&mut self, mut job: Job, counts: JobCounts, body: &Bytes) {
        debug_assert!(job.id != 0 && !self.contains(job.id));
        job.body = self.bodies.store(body);
        job.counts = Counts::pack(counts).unwrap_or_else(|| {
            self.spilled.insert(job.id, counts);
            Counts::SPILLED
        });
        let id = job.id;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = job;
                s
            }
            None => {
                self.slots.push(job);
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.index
            .insert_unique(hash(id), slot, |&s| hash(slots[s as usize].id));
        self.repack_step();
    }

    /// Takes a job out for good; its body is freed.
    pub fn remove(&mut self, id: JobId) -> Option<Job> {
        let slots = &self.slots;
        let entry = self
            .index
            .find_entry(hash(id), |&s| slots[s as usize].id == id)
            .ok()?;
        let (slot, _) = entry.remove();
        let job = std::mem::replace(&mut self.slots[slot as usize], Job::new(0, 0, 0, 0, 0));
        self.free.push(slot);
        self.bodies.free(job.body);
        if job.counts == Counts::SPILLED {
            self.spilled.remove(&id);
        }
        if self.repack.is_none() && self.bodies.is_fragmented() && self.bodies.begin_evacuation() {
            self.repack = Some(0);
        }
        self.repack_step();
        Some(job)
    }

    /// Moves the bodies of the next [`REPACK_STEP`] slots out of chunks
    /// being evacuated, if a pass is in progress. Slots past the cursor may
    /// be reused meanwhile: their new bodies are never in those chunks.
    fn repack_step(&mut self) {
        let Some(from) = self.repack else { return };
        let to = (from + REPACK_STEP).min(self.slots.len());
        for job in self.slots[from..to].iter_mut().filter(|j| j.id != 0) {
            if let Some(moved) = self.bodies.relocate(job.body) {
                job.body = moved;
            }
        }
        self.repack = (to < self.slots.len()).then_some(to);
    }

    /// Runs a repacking pass in progress to its end.
    #[cfg(test)]
    fn finish_repack(&mut self) {
        while self.repack.is_some() {
            self.repack_step();
        }
    }

    pub fn body(&self, job: &Job) -> &[u8] {
        self.bodies.get(job.body)
    }

    /// The body as a buffer a reply can own.
    pub fn body_bytes(&self, job: &Job) -> Bytes {
        self.bodies.to_bytes(job.body)
    }

    pub fn body_len(&self, job: &Job) -> usize {
        self.bodies.len(job.body)
    }

    pub fn counts(&self, job: &Job) -> JobCounts {
        job.counts.unpack().unwrap_or_else(|| self.spilled[&job.id])
    }

    /// Adds one to a counter of job `id`, which must exist.
    pub fn bump(&mut self, id: JobId, kind: Count) {
        let slot = self.slot(id).expect("bumped job exists") as usize;
        let job = &self.slots[slot];
        let mut counts = self.counts(job);
        counts.bump(kind);
        let packed = Counts::pack(counts).unwrap_or(Counts::SPILLED);
        if packed == Counts::SPILLED {
            self.spilled.insert(id, counts);
        }
        self.slots[slot].counts = packed;
    }

    /// Every live job, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Job> {
        self.slots.iter().filter(|j| j.id != 0)
    }
}

impl std::ops::Index<&JobId> for JobStore {
    type Output = Job;

    fn index(&self, id: &JobId) -> &Job {
        self.get(*id).expect("job exists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: JobId) -> Job {
        Job::new(id, 10, 0, 60, 0)
    }

    #[test]
    fn jobs_are_found_by_id_after_slots_are_reused() {
        let mut s = JobStore::default();
        for id in 1..=100 {
            s.insert(
                job(id),
                JobCounts::default(),
                &Bytes::from(format!("{id}\r\n")),
            );
        }
        for id in (1..=100).filter(|id| id % 3 == 0) {
            assert_eq!(s.remove(id).map(|j| j.id), Some(id));
        }
        assert!(s.remove(3).is_none());
        for id in 101..=120 {
            s.insert(
                job(id),
                JobCounts::default(),
                &Bytes::from(format!("{id}\r\n")),
            );
        }
        assert_eq!(s.len(), 100 - 33 + 20);
        for id in 1..=120 {
            let found = s.get(id);
            assert_eq!(found.is_some(), id % 3 != 0 || id > 100, "job {id}");
            if let Some(j) = found {
                assert_eq!(s.body(j), format!("{id}\r\n").as_bytes());
            }
        }
        assert_eq!(s.values().count(), s.len());
    }

    /// A 100-byte body (CRLF included) that names its job.
    fn body_of(id: JobId) -> Bytes {
        Bytes::from(format!("{id:0>98}\r\n"))
    }

    /// A store of jobs 1..=n with [`body_of`] bodies.
    fn store_of(n: JobId) -> JobStore {
        let mut s = JobStore::default();
        for id in 1..=n {
            s.insert(job(id), JobCounts::default(), &body_of(id));
        }
        s
    }

    #[test]
    fn scattered_deletes_repack_bodies_and_keep_them_intact() {
        let mut s = store_of(200_000);
        // Keep one job in twenty: left alone, every chunk would stay
        // allocated for a twentieth of its bytes.
        for id in (1..=200_000).filter(|id| id % 20 != 0) {
            s.remove(id);
        }
        s.finish_repack();
        let (allocated, live) = s.bodies.usage();
        assert_eq!(live, 10_000 * 100);
        assert!(allocated <= 3 * live, "{allocated} bytes held for {live}");
        for id in (20..=200_000).step_by(20) {
            assert_eq!(s.body(&s[&id]), &body_of(id)[..], "job {id}");
        }
    }

    #[test]
    fn random_churn_of_small_and_big_bodies_keeps_every_body() {
        let mut s = JobStore::default();
        // (id, body length) of every live job; removal picks a random one.
        let mut live: Vec<(JobId, usize)> = Vec::new();
        let mut rng = crate::test_rng::Rng(0x9e37_79b9_7f4a_7c15);
        let mut next = || rng.next();
        let body = |id: JobId, len: usize| {
            let mut b: Vec<u8> = id.to_le_bytes().iter().copied().cycle().take(len).collect();
            b.extend_from_slice(b"\r\n");
            Bytes::from(b)
        };
        let mut id = 0;
        for round in 0..60_000 {
            let r = next();
            if r % 5 < 3 || live.is_empty() {
                id += 1;
                // Mostly small, some at the chunk limit, a few big.
                let len = match r % 100 {
                    0..=89 => (r >> 8) as usize % 300,
                    90..=97 => 4000 + (r >> 8) as usize % 94,
                    _ => 5000 + (r >> 8) as usize % 3000,
                };
                s.insert(job(id), JobCounts::default(), &body(id, len));
                live.push((id, len));
            } else {
                let (victim, _) = live.swap_remove((r >> 8) as usize % live.len());
                assert_eq!(s.remove(victim).map(|j| j.id), Some(victim));
            }
            if round % 10_000 == 0 || round == 59_999 {
                s.finish_repack();
                assert_eq!(s.len(), live.len());
                for &(id, len) in &live {
                    assert_eq!(s.body(&s[&id]), &body(id, len)[..], "job {id}");
                    assert_eq!(s.body_len(&s[&id]), len + 2);
                }
                let (allocated, small_live) = s.bodies.usage();
                assert!(
                    allocated <= 3 * small_live + 5 * 64 * 1024,
                    "{allocated} for {small_live}"
                );
            }
        }
        // Then most jobs die in random order: chunks go sparse and are repacked.
        while live.len() > 1000 {
            let (victim, _) = live.swap_remove((next() >> 8) as usize % live.len());
            s.remove(victim);
        }
        for &(id, len) in &live {
            assert_eq!(s.body(&s[&id]), &body(id, len)[..], "job {id}");
        }
        s.finish_repack();
        let (allocated, small_live) = s.bodies.usage();
        assert!(
            allocated <= 3 * small_live + 5 * 64 * 1024,
            "{allocated} for {small_live} after the die-off"
        );
    }

    #[test]
    fn a_repack_is_spread_over_the_operations_that_follow() {
        let mut s = store_of(100_000);
        // Keep one job in ten until a pass starts.
        let mut removed = 0;
        for id in (1..=100_000).filter(|id| id % 10 != 0) {
            s.remove(id);
            removed += 1;
            if s.repack.is_some() {
                break;
            }
        }
        // The remove that started the pass visited one step of slots only.
        assert_eq!(s.repack, Some(REPACK_STEP));
        let (held_at_start, _) = s.bodies.usage();
        // Inserts drive it too; their bodies stay out of evacuated chunks.
        let mut ops = 0;
        let mut next = 100_000;
        while s.repack.is_some() {
            next += 1;
            s.insert(job(next), JobCounts::default(), &body_of(next));
            ops += 1;
        }
        assert_eq!(ops, 100_000usize.div_ceil(REPACK_STEP) - 1);
        let (held, live) = s.bodies.usage();
        assert!(
            held < held_at_start,
            "{held} bytes held, {held_at_start} at the start"
        );
        assert!(held <= 3 * live, "{held} bytes held for {live}");
        assert_eq!(s.len(), 100_000 - removed + ops);
        for id in 1..=next {
            if let Some(j) = s.get(id) {
                assert_eq!(s.body(j), &body_of(id)[..], "job {id}");
            }
        }
    }

    #[test]
    fn counters_past_the_packed_word_stay_exact() {
        let mut s = JobStore::default();
        let start = JobCounts {
            releases: 4093,
            ..JobCounts::default()
        };
        s.insert(job(7), start, &Bytes::from_static(b"x\r\n"));
        for _ in 0..3 {
            s.bump(7, Count::Releases);
        }
        s.bump(7, Count::Reserves);
        let c = s.counts(&s[&7]);
        assert_eq!((c.releases, c.reserves), (4096, 1));
        assert_eq!(s.spilled.len(), 1);
        s.remove(7);
        assert!(s.spilled.is_empty());
        let huge = JobCounts {
            kicks: u32::MAX,
            ..JobCounts::default()
        };
        s.insert(job(8), huge, &Bytes::from_static(b"y\r\n"));
        assert_eq!(
            s.counts(&s[&8]),
            huge,
            "restored from a binlog as they were"
        );
    }
}
