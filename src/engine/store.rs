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
//! the live body bytes freed.
//!
//! The table never rehashes inside one command either. Left to itself it
//! would rehash every entry when it filled up, in one insert, reading each
//! entry's job at random in the slab: 25 ms at 460k jobs, 300 ms at 3.7M.
//! Instead, a while before it fills, a table twice the size is built beside
//! it from a walk over the slab, [`SHRINK_STEP`] slots per insert or
//! remove, and replaces it once complete.
//!
//! After a peak (a backlog drained), the slab and the table shrink: once
//! the jobs fill a quarter of the slab, the jobs of its tail move into
//! free slots below and the tail is cut off, then a table sized for the
//! jobs left is built beside the old one the same way. Both are spread over
//! the inserts and removes that follow, like repacking, and, when none
//! come, over the engine's timer ticks ([`JobStore::upkeep`]).
//! A job that moves changes slot, so a walk over slots spread over time
//! may miss it: binlog compaction tolerates that, as a segment is deleted
//! only once it holds no live job.
//!
//! Invariants: `index` holds exactly the slots of live jobs; a table being
//! built holds exactly the live slots below its cursor; a free slot's
//! job has id 0 (ids start at 1) and its position in `free` as its `key`;
//! `free` holds every free slot once; a job's counts are `Counts::SPILLED`
//! exactly when `spilled` has its entry.

use super::bodies::BodyArena;
use super::id_hash::{mix, IdMap};
use super::job::{Count, Counts, Job, JobCounts};
use crate::protocol::JobId;
use bytes::Bytes;
use hashbrown::HashTable;

#[derive(Debug, Default)]
pub struct JobStore {
    slots: Vec<Job>,
    free: Vec<u32>,
    index: HashTable<u32>,
    bodies: BodyArena,
    /// Counters of the few jobs whose counts outgrew their packed word.
    spilled: IdMap<JobId, JobCounts>,
    /// The next slot a repacking pass in progress visits.
    repack: Option<usize>,
    /// Resizing the slab or the table, if under way.
    resize: Option<Resize>,
    /// Jobs moved to another slot so far (tests see shrinks happen).
    #[cfg(test)]
    relocations: u64,
    /// Tables built beside `index` and swapped in (tests see growth happen).
    #[cfg(test)]
    rebuilds: u64,
}

/// Resizing spread over operations: giving back a past peak's memory (the
/// slab, then the table), or making room in a table about to fill.
#[derive(Debug)]
enum Resize {
    /// Cutting the slab down to `target` slots: a free slot at the tail is
    /// dropped, a live one moves to a free slot below first.
    Slab { target: usize },
    /// Building a table sized for the jobs left, or twice the size of a
    /// table about to fill: it holds the live slots below `next`, and
    /// replaces `index` once it holds them all.
    Index { next: usize, index: HashTable<u32> },
}

/// Slots one insert or remove visits (or moves) while resizing.
const SHRINK_STEP: usize = 128;

/// Free room in the table below which a bigger one is built beside it:
/// twice what the inserts of a whole build (one per step) can take, so the
/// old table never fills, plus a floor. Tests and the fuzzer grow tiny
/// tables this way too.
fn growth_margin(slots: usize) -> usize {
    #[cfg(not(any(test, fuzzing)))]
    const FLOOR: usize = 64;
    #[cfg(any(test, fuzzing))]
    const FLOOR: usize = 2;
    2 * slots.div_ceil(SHRINK_STEP) + FLOOR
}

/// A slab of at most this many slots (256 KiB) is not worth shrinking.
/// Unit tests and the fuzzer shrink tiny ones, so that every engine test
/// and fuzz run moves jobs between slots.
#[cfg(not(any(test, fuzzing)))]
const SHRINK_MIN_SLOTS: usize = 4096;
#[cfg(any(test, fuzzing))]
const SHRINK_MIN_SLOTS: usize = 8;

/// Slots a repacking pass visits per insert or remove: at most this many
/// small bodies (4 KiB each at most) are copied by one operation, and a pass
/// over a slab of n slots (its peak job count) is done after n /
/// `REPACK_STEP` operations.
const REPACK_STEP: usize = 128;

/// Job ids are handed out by the server in sequence, never chosen by
/// clients, so a multiplicative hash spreads them well and cheaply.
fn hash(id: JobId) -> u64 {
    mix(id)
}

/// Enters `slot`, which holds job `id`, in `table` (the id index, or the
/// one being built while shrinking).
fn enter(table: &mut HashTable<u32>, slots: &[Job], id: JobId, slot: u32) {
    // A table with no room left would rehash every entry right here; only
    // the first, empty one may grow this way.
    debug_assert!(table.capacity() == 0 || table.len() < table.capacity());
    table.insert_unique(hash(id), slot, |&s| hash(slots[s as usize].id));
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
    /// job once, unless the store shrinks meanwhile (it moves jobs from the
    /// tail into free slots below).
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
        self.make_room();
        enter(&mut self.index, &self.slots, id, slot);
        if let Some(Resize::Index { next, index }) = &mut self.resize {
            // Slots from `next` on are still to be visited by the build.
            if (slot as usize) < *next {
                enter(index, &self.slots, id, slot);
            }
        }
        self.repack_step();
        self.resize_step();
    }

    /// Starts building a bigger table when `index` is close to full (also
    /// when tombstones of removed entries take its room: the new table has
    /// none), unless a build that can take the jobs is under way. A shrink
    /// of the slab in progress is dropped: the jobs are coming back.
    fn make_room(&mut self) {
        let margin = growth_margin(self.slots.len());
        let room = self.index.capacity() - self.index.len();
        if room > margin {
            return;
        }
        if let Some(Resize::Index { index, .. }) = &self.resize {
            if index.capacity() - self.index.len() > 2 * margin {
                return;
            }
        }
        // Twice the jobs: hashbrown then doubles its buckets, as it would.
        let len = self.index.len();
        let capacity = (2 * len).max(len + 4 * margin);
        self.resize = Some(Resize::Index {
            next: 0,
            index: HashTable::with_capacity(capacity),
        });
    }

    /// Takes a job out for good; its body is freed.
    pub fn remove(&mut self, id: JobId) -> Option<Job> {
        let slots = &self.slots;
        let entry = self
            .index
            .find_entry(hash(id), |&s| slots[s as usize].id == id)
            .ok()?;
        let (slot, _) = entry.remove();
        if let Some(Resize::Index { next, index }) = &mut self.resize {
            if (slot as usize) < *next {
                if let Ok(e) = index.find_entry(hash(id), |&s| s == slot) {
                    e.remove();
                }
            }
        }
        let mut freed = Job::new(0, 0, 0, 0, 0);
        freed.key = self.free.len() as u64;
        let job = std::mem::replace(&mut self.slots[slot as usize], freed);
        self.free.push(slot);
        self.bodies.free(job.body);
        if job.counts == Counts::SPILLED {
            self.spilled.remove(&id);
        }
        if self.repack.is_none() && self.bodies.is_fragmented() && self.bodies.begin_evacuation() {
            self.repack = Some(0);
        }
        if self.resize.is_none()
            && self.slots.len() > SHRINK_MIN_SLOTS
            && self.len() * 4 <= self.slots.len()
        {
            let target = (self.len() * 2).max(SHRINK_MIN_SLOTS / 2);
            self.resize = Some(Resize::Slab { target });
        }
        self.repack_step();
        self.resize_step();
        Some(job)
    }

    /// Whether a resize or a repacking pass is under way.
    pub fn has_upkeep(&self) -> bool {
        self.repack.is_some() || self.resize.is_some()
    }

    /// Moves a resize or repacking pass in progress on by `steps` steps, as
    /// that many inserts or removes would: for when none come.
    pub fn upkeep(&mut self, steps: usize) {
        for _ in 0..steps {
            if !self.has_upkeep() {
                break;
            }
            self.repack_step();
            self.resize_step();
        }
    }

    /// Jobs moved to another slot since the store was made.
    #[cfg(test)]
    pub fn relocations(&self) -> u64 {
        self.relocations
    }

    /// One step of a resize in progress, if any.
    fn resize_step(&mut self) {
        self.resize = match self.resize.take() {
            None => None,
            Some(Resize::Slab { target }) => self.shrink_slab(target),
            Some(Resize::Index { next, index }) => self.rebuild_index(next, index),
        };
    }

    /// Cuts up to [`SHRINK_STEP`] slots off the slab's tail; once it is
    /// down to `target` (or full), gives the spare capacity back and moves
    /// on to the table.
    fn shrink_slab(&mut self, target: usize) -> Option<Resize> {
        // Capacity is handed back a step at a time too: freeing the whole
        // spare tail at the end (tens of MB) took milliseconds.
        self.slots.shrink_to(self.slots.len());
        self.free.shrink_to(self.free.len());
        for _ in 0..SHRINK_STEP {
            // Jobs put meanwhile may leave no free slot above `target`.
            if self.slots.len() <= target || self.free.is_empty() {
                self.slots.shrink_to_fit();
                self.free.shrink_to_fit();
                let capacity = self.len() + 2 * growth_margin(self.slots.len());
                let index = HashTable::with_capacity(capacity);
                return Some(Resize::Index { next: 0, index });
            }
            let last = self.slots.len() - 1;
            if self.slots[last].id == 0 {
                self.take_free(last);
            } else {
                // Every free slot is below the live last one.
                let to = self.free.pop().expect("a free slot") as usize;
                let id = self.slots[last].id;
                *self
                    .index
                    .find_mut(hash(id), |&s| s as usize == last)
                    .expect("a live job is indexed") = to as u32;
                // A repacking pass may already be past `to`.
                if let Some(moved) = self.bodies.relocate(self.slots[last].body) {
                    self.slots[last].body = moved;
                }
                self.slots.swap(to, last);
                #[cfg(test)]
                {
                    self.relocations += 1;
                }
            }
            self.slots.pop();
            if self.repack == Some(self.slots.len()) {
                // The repacking pass had visited every slot left (the jobs
                // moved down were relocated above): it is done.
                self.repack = None;
            }
        }
        Some(Resize::Slab { target })
    }

    /// Takes free `slot` out of the free list.
    fn take_free(&mut self, slot: usize) {
        let at = self.slots[slot].key as usize;
        debug_assert_eq!(self.free[at] as usize, slot);
        self.free.swap_remove(at);
        if let Some(&moved) = self.free.get(at) {
            self.slots[moved as usize].key = at as u64;
        }
    }

    /// Adds the next [`SHRINK_STEP`] slots to the table being built; swaps
    /// it in once it has every slot.
    fn rebuild_index(&mut self, next: usize, mut index: HashTable<u32>) -> Option<Resize> {
        let end = (next + SHRINK_STEP).min(self.slots.len());
        let slots = &self.slots;
        for (slot, job) in slots.iter().enumerate().take(end).skip(next) {
            if job.id != 0 {
                enter(&mut index, slots, job.id, slot as u32);
            }
        }
        if end < self.slots.len() {
            return Some(Resize::Index { next: end, index });
        }
        self.index = index;
        #[cfg(test)]
        {
            self.rebuilds += 1;
        }
        None
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

    /// Bytes allocated for the jobs (slab, free list, table, bodies),
    /// spare capacity included: what draining the store can give back.
    pub fn memory_held(&self) -> usize {
        // A table bucket is a 4-byte slot and a control byte; hashbrown
        // keeps at least 1/8 of its buckets empty.
        let building = match &self.resize {
            Some(Resize::Index { index, .. }) => index.capacity(),
            _ => 0,
        };
        let table = (self.index.capacity() + building) * 5 * 8 / 7;
        self.slots.capacity() * std::mem::size_of::<Job>()
            + self.free.capacity() * 4
            + table
            + self.bodies.held()
    }

    /// Checks the invariants listed in the module doc; for tests and fuzzing.
    pub fn check_invariants(&self) {
        let live = self.slots.iter().filter(|j| j.id != 0).count();
        assert_eq!(self.index.len(), live, "the table holds every live job");
        assert_eq!(self.free.len(), self.slots.len() - live, "every free slot");
        for (at, &slot) in self.free.iter().enumerate() {
            let job = &self.slots[slot as usize];
            assert!(job.id == 0 && job.key == at as u64, "free slot {slot}");
        }
        for job in self.values() {
            assert_eq!(self.get(job.id).map(|j| j.id), Some(job.id));
        }
        if let Some(Resize::Index { next, index }) = &self.resize {
            let below = self.slots[..*next].iter().filter(|j| j.id != 0).count();
            assert_eq!(index.len(), below, "the table being built");
        }
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

    /// Puts and deletes one job until a shrink in progress is done.
    fn finish_shrink(s: &mut JobStore, spare_id: JobId) -> usize {
        let mut ops = 0;
        while s.resize.is_some() {
            s.insert(job(spare_id), JobCounts::default(), &body_of(spare_id));
            s.remove(spare_id);
            ops += 2;
        }
        ops
    }

    #[test]
    fn a_drained_store_gives_back_its_slab_and_table_a_step_at_a_time() {
        let mut s = store_of(100_000);
        let (peak_slots, peak_table) = (s.slots.capacity(), s.index.capacity());
        let (mut ops, mut shrinking_ops) = (0, 0);
        for id in (1..=100_000).filter(|id| id % 100 != 0) {
            let before = s.slot_count();
            s.remove(id);
            ops += 1;
            shrinking_ops += usize::from(s.resize.is_some());
            assert!(
                before - s.slot_count() <= SHRINK_STEP,
                "one remove cut too much"
            );
            if let Some(Resize::Slab { .. }) = s.resize {
                // Capacity goes as the slab is cut, not all at the end.
                assert!(s.slots.capacity() <= s.slot_count() + SHRINK_STEP);
            }
            if ops % 10_000 == 0 {
                s.check_invariants();
            }
        }
        shrinking_ops += finish_shrink(&mut s, 1_000_000);
        s.check_invariants();
        assert!(
            shrinking_ops > 100,
            "shrinking took {shrinking_ops} operations"
        );
        assert!(s.relocations() > 0, "no job moved");
        assert_eq!(s.len(), 1_000);
        // Down to at most four slots a job, and no spare capacity.
        assert!(s.slot_count() <= 4_000, "{} slots", s.slot_count());
        assert!(s.slots.capacity() <= s.slot_count() + SHRINK_STEP);
        assert!(
            s.slots.capacity() * 20 < peak_slots,
            "slab {peak_slots} -> {}",
            s.slots.capacity()
        );
        assert!(
            s.index.capacity() * 20 < peak_table,
            "table {peak_table} -> {}",
            s.index.capacity()
        );
        for id in (100..=100_000).step_by(100) {
            assert_eq!(s.body(&s[&id]), &body_of(id)[..], "job {id}");
        }
    }

    #[test]
    fn a_growing_table_is_rebuilt_beside_itself_a_step_at_a_time() {
        // `enter` asserts that no insert finds a table without room (which
        // would make hashbrown rehash it whole); here the capacity changes
        // only when a table built a step at a time is swapped in.
        let mut s = JobStore::default();
        for id in 1..=200_000 {
            let (capacity, rebuilds) = (s.index.capacity(), s.rebuilds);
            s.insert(job(id), JobCounts::default(), &body_of(id));
            if s.index.capacity() != capacity && capacity != 0 {
                assert_eq!(s.rebuilds, rebuilds + 1, "the table grew at job {id}");
                // Doubled, as hashbrown would: no more memory than before.
                assert!(s.index.capacity() <= 2 * capacity + 1, "at job {id}");
            }
            if id % 9_973 == 0 {
                s.check_invariants();
            }
        }
        assert!(s.rebuilds >= 10, "{} rebuilds", s.rebuilds);
        for id in (1..=200_000).step_by(997) {
            assert_eq!(s.body(&s[&id]), &body_of(id)[..], "job {id}");
        }
    }

    #[test]
    fn churn_at_a_steady_size_never_fills_the_table_with_tombstones() {
        // Removing entries leaves tombstones that take a table's room
        // without adding jobs; once the room is gone hashbrown would rehash
        // in place, all at once. A rebuild clears them first.
        let mut s = store_of(20_000);
        let before = s.rebuilds;
        assert!(s.index.capacity() - s.len() > 8_000, "room without growing");
        for id in 20_001..=400_000 {
            s.insert(job(id), JobCounts::default(), &body_of(id));
            assert!(s.remove(id - 20_000).is_some());
        }
        s.check_invariants();
        assert_eq!(s.len(), 20_000);
        assert!(s.rebuilds > before, "tombstones never took the room");
        // What hashbrown's own rehash would give: 65,536 buckets (no job
        // count below half the room is rehashed at the same size).
        assert!(s.index.capacity() <= 57_344, "{}", s.index.capacity());
        for id in (380_001..=400_000).step_by(101) {
            assert_eq!(s.body(&s[&id]), &body_of(id)[..], "job {id}");
        }
    }

    #[test]
    fn a_repack_pass_meeting_a_shrinking_slab_ends_cleanly() {
        // The repack cursor climbs from slot 0 while the shrink cuts the
        // slab from its tail, 128 slots each per operation: they meet.
        // Slab lengths a slot-step apart land the meeting on every offset.
        for n in (20_000..20_400).step_by(16) {
            let mut s = store_of(n);
            let mut ids = 1..=n;
            // Down to one job above the point where shrinking starts.
            while s.len() * 4 > s.slot_count() + 4 {
                s.remove(ids.next().unwrap());
            }
            assert!(s.resize.is_none());
            s.repack = Some(0);
            let mut overlapped = false;
            for id in ids.by_ref().take(n as usize / 8) {
                s.remove(id);
                overlapped |= s.repack.is_some() && matches!(s.resize, Some(Resize::Slab { .. }));
            }
            assert!(overlapped, "n = {n}: the passes never ran together");
            s.finish_repack();
            s.check_invariants();
            for id in ids {
                assert_eq!(s.body(&s[&id]), &body_of(id)[..], "job {id}");
            }
        }
    }

    #[test]
    fn growing_and_draining_in_random_order_keeps_every_job() {
        let mut s = JobStore::default();
        let mut live: Vec<JobId> = Vec::new();
        let mut rng = crate::test_rng::Rng(0x5851_f42d_4c95_7f2d);
        let mut next_id = 0;
        // Peaks and troughs: each drain leaves a quarter, a tenth or nothing.
        for (peak, trough) in [(30_000, 300), (12_000, 3_000), (20_000, 0), (8_000, 100)] {
            while live.len() < peak {
                next_id += 1;
                s.insert(job(next_id), JobCounts::default(), &body_of(next_id));
                live.push(next_id);
                if rng.next() % 3 == 0 {
                    let victim = live.swap_remove(rng.next() as usize % live.len());
                    assert!(s.remove(victim).is_some());
                }
            }
            while live.len() > trough {
                let victim = live.swap_remove(rng.next() as usize % live.len());
                assert_eq!(s.remove(victim).map(|j| j.id), Some(victim));
                if live.len() % 2_000 == 0 {
                    s.check_invariants();
                }
            }
            s.check_invariants();
            assert_eq!(s.len(), live.len());
            for &id in &live {
                assert_eq!(s.body(&s[&id]), &body_of(id)[..], "job {id}");
            }
        }
        assert!(s.relocations() > 0);
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
