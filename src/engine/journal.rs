//! The engine's side of durability: what it logs, restoring from a log, and
//! compaction (rewriting live jobs so old segments can be deleted).
//!
//! Every change is logged *before* it is applied, so a failed write leaves
//! the engine unchanged and the client gets an error reply, never a lie.

use super::{Engine, Job, JobId, State, Time};
use crate::binlog::{JobImage, JobState, Journal, Record, Recovered};
use bytes::Bytes;

impl Engine {
    /// The durable part of a job's current state.
    pub(super) fn job_state(&self, job: &Job) -> JobState {
        let deadline = match job.state {
            State::Delayed | State::Reserved => job.key,
            State::Ready | State::Buried => 0,
        };
        JobState {
            id: job.id,
            state: job.state,
            pri: job.pri,
            delay: job.delay,
            deadline,
            counts: self.jobs.counts(job),
            bury_seq: if job.state == State::Buried {
                job.key
            } else {
                0
            },
        }
    }

    /// Turns persistence on; every later change is logged to `journal`.
    pub fn set_journal(&mut self, journal: Box<dyn Journal>) {
        self.journal = Some(journal);
    }

    /// Bytes logged so far, when persistence is on.
    pub fn journal_position(&self) -> Option<u64> {
        self.journal.as_ref().map(|j| j.position())
    }

    /// Syncs the log to disk (shutdown).
    pub fn sync_journal(&mut self) -> std::io::Result<()> {
        match self.journal.as_mut() {
            Some(j) => j.sync_now(),
            None => Ok(()),
        }
    }

    /// Stops persistence and returns the log (closing it releases the
    /// directory lock). For tests that restart a server in-process.
    pub fn take_journal(&mut self) -> Option<Box<dyn Journal>> {
        self.journal.take()
    }

    pub(super) fn log(&mut self, mut record: Record) -> Result<u32, ()> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(0);
        };
        if let Record::State(s) = &mut record {
            if s.state == State::Buried {
                // The sequence `make_buried` is about to give the job. Even
                // if it gave a later one, the logged order would be the bury
                // order, which is all a restart needs.
                s.bury_seq = self.next_seq + 1;
            }
        }
        journal.append(&record).map_err(|e| {
            tracing::error!("binlog write failed: {e}");
        })
    }

    /// Logs a new job (not stored yet) and returns its segment.
    pub(super) fn log_put(&mut self, job: &Job, body: &Bytes) -> Result<u32, ()> {
        if self.journal.is_none() {
            return Ok(0);
        }
        let image = self.image(job, body.clone());
        self.log(Record::Put(image))
    }

    fn image(&self, job: &Job, body: Bytes) -> JobImage {
        JobImage {
            state: self.job_state(job),
            ttr: job.ttr,
            created: job.created,
            tube: self.tube(job.tube).name.as_str().to_string(),
            body,
        }
    }

    fn record_size(&self, job: &Job) -> u64 {
        let tube = self.tube(job.tube).name.as_str().len();
        Record::put_size(tube, self.jobs.body_len(job)) as u64
    }

    /// Job `id` is about to go: its full record no longer holds its segment.
    pub(super) fn forget_record(&mut self, id: JobId) {
        if self.journal.is_none() {
            return;
        }
        let job = &self.jobs[&id];
        let (file, size) = (job.file, self.record_size(job));
        if let Some(j) = self.journal.as_mut() {
            j.release(file, size);
        }
    }

    /// Rebuilds the jobs of a replayed log. Reserved jobs come back ready;
    /// buried jobs keep their bury order; delayed jobs keep their deadline.
    /// Segments that hold no live job are deleted at once.
    pub fn restore(&mut self, now: Time, recovered: Recovered) {
        self.next_job_id = self.next_job_id.max(recovered.next_job_id);
        let mut jobs: Vec<_> = recovered.jobs.into_values().collect();
        jobs.sort_by_key(|j| j.order);
        for rec in jobs {
            let name = crate::protocol::TubeName::new(rec.image.tube.as_bytes());
            let Some(name) = name else {
                tracing::warn!(
                    "job {} has an invalid tube name, dropped",
                    rec.image.state.id
                );
                continue;
            };
            let tube = self.tube_for(&name);
            let s = rec.image.state;
            self.next_job_id = self.next_job_id.max(s.id + 1);
            let mut job = Job::new(s.id, s.pri, s.delay, rec.image.ttr, tube);
            job.created = rec.image.created;
            job.file = rec.file;
            self.jobs.insert(job, s.counts, &rec.image.body);
            let size = self.record_size(&self.jobs[&s.id]);
            if let Some(j) = self.journal.as_mut() {
                j.adopt(rec.file, size);
            }
            match s.state {
                State::Buried => {
                    // Its logged place in the FIFO, not a new one: the order
                    // survives restarts and compaction (beanstalkd#668).
                    let job = self.jobs.get_mut(s.id).expect("just inserted");
                    job.state = State::Buried;
                    job.key = s.bury_seq;
                    self.next_seq = self.next_seq.max(s.bury_seq);
                    self.tube_mut(tube).buried.insert((s.bury_seq, s.id));
                    self.counters.buried += 1;
                }
                State::Delayed if s.deadline > now => {
                    let key = (s.deadline, s.id);
                    let job = self.jobs.get_mut(s.id).expect("just inserted");
                    job.state = State::Delayed;
                    job.key = s.deadline;
                    self.tube_mut(tube).delayed.insert(key);
                    self.timers.delayed.insert(key);
                }
                _ => self.make_ready(now, s.id),
            }
        }
        if let Some(j) = self.journal.as_mut() {
            j.collect_garbage(usize::MAX);
        }
    }

    /// Deletes dead segments and, when the log has grown well past the live
    /// data, rewrites the live jobs of the oldest segment at the head so it
    /// can be deleted too. Runs after every batch.
    ///
    /// Finding a segment's jobs means a pass over every job slot, so a pass
    /// is spread over batches, with a budget per call: a base slice
    /// (`COMPACT_SLOTS` slots or 1/64 of them, `COMPACT_MOVE_BYTES` of
    /// rewritten records), plus two passes' worth of slots and twice the
    /// bytes for every segment's worth the batch itself wrote. The pause is
    /// thus short and in proportion to the batch, and compaction still keeps
    /// up with any writer. Dead segments are deleted at the pace new ones are
    /// started, plus `DELETIONS_PER_CALL`: each costs an unlink and, unless
    /// `-F`, a directory fsync.
    pub fn maintain_journal(&mut self) {
        let Some(journal) = self.journal.as_ref() else {
            return;
        };
        // What clients wrote since the last call (the last call's own
        // rewrites are not counted: they must not feed the budget).
        let (segment, written) = (journal.stats().current_index, journal.position());
        let started = segment.saturating_sub(self.upkeep.segments_seen) as usize;
        let wrote = written.saturating_sub(self.upkeep.written_seen);
        self.upkeep.segments_seen = segment;
        let slots = self.jobs.slot_count();
        let per_segment = self.config.binlog_max_size.max(1);
        let catch_up = (slots as u128 * 2 * u128::from(wrote) / u128::from(per_segment)) as usize;
        let mut slots_left = COMPACT_SLOTS.max(slots / 64).saturating_add(catch_up);
        let mut bytes_left = COMPACT_MOVE_BYTES.saturating_add(2 * wrote);
        let mut deletions_left = DELETIONS_PER_CALL + started;
        let mut moved = 0;
        loop {
            let Some(journal) = self.journal.as_mut() else {
                return;
            };
            deletions_left -= journal.collect_garbage(deletions_left);
            // A pass whose segment is gone (its last jobs were deleted) or
            // no longer needs moving is dropped.
            let head = journal.compaction_candidate();
            let mut pass = match (self.compaction.take(), head) {
                (_, None) => break,
                (Some(pass), Some(head)) if pass.head == head => pass,
                (_, Some(head)) => Compaction { head, next_slot: 0 },
            };
            let mut failed = false;
            while pass.next_slot < self.jobs.slot_count() && slots_left > 0 && bytes_left > 0 {
                let slot = pass.next_slot;
                pass.next_slot += 1;
                slots_left -= 1;
                let Some(id) = self
                    .jobs
                    .at_slot(slot)
                    .filter(|j| j.file == pass.head)
                    .map(|j| j.id)
                else {
                    continue;
                };
                let Some(size) = self.move_to_head(id, pass.head) else {
                    failed = true;
                    break;
                };
                bytes_left = bytes_left.saturating_sub(size);
                moved += 1;
            }
            if failed {
                // The rest stay where they are; a pass starts over once the
                // log takes writes again.
                break;
            }
            if pass.next_slot < self.jobs.slot_count() {
                self.compaction = Some(pass);
                break;
            }
            // Pass done: the segment holds no live job, unless the store
            // moved one behind the cursor (then its live count keeps the
            // segment, and the next pass finds the job); collect it and go
            // on while the budget lasts.
            if slots_left == 0 || bytes_left == 0 {
                if let Some(j) = self.journal.as_mut() {
                    j.collect_garbage(deletions_left);
                }
                break;
            }
        }
        if let Some(j) = self.journal.as_mut() {
            j.note_migrated(moved);
            self.upkeep.written_seen = j.position();
        }
    }

    /// Rewrites job `id`, which lives in segment `head`, at the head of the
    /// log; returns the record's size. None if the write failed (the job
    /// stays where it is).
    fn move_to_head(&mut self, id: JobId, head: u32) -> Option<u64> {
        let job = &self.jobs[&id];
        let body = Bytes::copy_from_slice(self.jobs.body(job));
        let (image, size) = (self.image(job, body), self.record_size(job));
        let file = self.log(Record::Put(image)).ok()?;
        if let Some(j) = self.journal.as_mut() {
            j.release(head, size);
        }
        self.jobs.get_mut(id).expect("live job").file = file;
        Some(size)
    }
}

/// Job slots one call of `maintain_journal` visits at least (or 1/64 of
/// them, if that is more), on top of what the batch's writes add.
const COMPACT_SLOTS: usize = 4096;

/// Bytes of records one call of `maintain_journal` may rewrite, on top of
/// twice what the batch itself wrote.
const COMPACT_MOVE_BYTES: u64 = 256 * 1024;

/// Dead segments one call of `maintain_journal` deletes at most, beyond as
/// many as were started since the last call.
const DELETIONS_PER_CALL: usize = 1;

/// A compaction pass in progress: the live jobs of segment `head` are being
/// rewritten at the head of the log, in the job store's slot order. Slots
/// past the cursor may be reused meanwhile: their new jobs are logged in the
/// current segment, never in `head`, so after the pass `head` holds none.
/// A job the store moves to another slot (when it shrinks) may slip behind
/// the cursor and be missed: harmless, as a segment is only deleted once
/// its count of live jobs is zero, so the next pass over it finds the job.
#[derive(Debug)]
pub(super) struct Compaction {
    head: u32,
    next_slot: usize,
}

/// What `maintain_journal` saw of the journal at its last call.
#[derive(Debug, Default)]
pub(super) struct Upkeep {
    segments_seen: u32,
    written_seen: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binlog::{self, test_dir};
    use crate::config::SyncPolicy;
    use crate::engine::{ClientId, EngineConfig, HostInfo, Outcome, SECOND};
    use crate::protocol::{Command, PutBody, Reply};
    use bytes::Bytes;
    use std::path::Path;

    const T0: Time = 1_000_000 * SECOND;

    fn boot(dir: &Path, max: u64, now: Time) -> Engine {
        let (log, recovered) = binlog::open(dir, max, SyncPolicy::Never, false).unwrap();
        let mut e = Engine::new(
            EngineConfig {
                max_job_size: 65535,
                binlog_max_size: max,
                host: HostInfo::fixed(),
            },
            now,
        );
        e.set_journal(Box::new(log));
        e.restore(now, recovered);
        e.check_invariants();
        e
    }

    /// Applies a command the way the hub does (maintenance after it).
    fn run(e: &mut Engine, now: Time, c: ClientId, cmd: Command) -> Reply {
        let Outcome::Reply(r) = e.apply(now, c, cmd) else {
            panic!("unexpected wait")
        };
        e.maintain_journal();
        r
    }

    /// Puts a job of body `body(id)` for each id, which must be the next ids.
    fn put_each(
        e: &mut Engine,
        c: ClientId,
        ids: std::ops::RangeInclusive<JobId>,
        body: impl Fn(JobId) -> String,
    ) {
        for id in ids {
            assert_eq!(run(e, T0, c, put(1, 0, &body(id))), Reply::Inserted(id));
        }
    }

    fn put(pri: u32, delay: u32, body: &str) -> Command {
        Command::Put {
            pri,
            delay,
            ttr: 60,
            body: PutBody::Body(Bytes::from(format!("{body}\r\n"))),
        }
    }

    fn dir_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    fn live_bytes(e: &Engine) -> u64 {
        e.jobs.values().map(|j| e.record_size(j)).sum()
    }

    fn peek_buried(e: &mut Engine, c: ClientId) -> Option<u64> {
        match run(e, T0, c, Command::PeekBuried) {
            Reply::Found { id, .. } => Some(id),
            _ => None,
        }
    }

    #[test]
    fn release_with_delay_loops_do_not_pin_the_log() {
        let dir = test_dir("release-loop");
        let max = 4096;
        let mut e = boot(&dir, max, T0);
        let c = e.connect();
        // Long-lived neighbours: one delayed for a day, one buried.
        assert_eq!(
            run(&mut e, T0, c, put(1, 86_400, "day")),
            Reply::Inserted(1)
        );
        assert_eq!(run(&mut e, T0, c, put(1, 0, "bury me")), Reply::Inserted(2));
        run(&mut e, T0, c, Command::ReserveJob(2));
        assert_eq!(
            run(&mut e, T0, c, Command::Bury { id: 2, pri: 1 }),
            Reply::Buried
        );
        assert_eq!(run(&mut e, T0, c, put(5, 0, "looping")), Reply::Inserted(3));
        let live = live_bytes(&e);
        let mut worst = 0;
        for i in 0..20_000u32 {
            run(&mut e, T0, c, Command::ReserveJob(3));
            let r = run(
                &mut e,
                T0,
                c,
                Command::Release {
                    id: 3,
                    pri: i,
                    delay: 3600,
                },
            );
            assert_eq!(r, Reply::Released);
            worst = worst.max(dir_bytes(&dir));
        }
        let stats = e.journal.as_ref().unwrap().stats();
        eprintln!("release loop: live {live} B, worst dir {worst} B, {stats:?}");
        assert!(stats.records_written > 40_000);
        assert!(stats.records_migrated > 0);
        assert!(
            worst <= 2 * live + 3 * max,
            "dir grew to {worst} B for {live} B live"
        );
        drop(e);
        // And it all comes back.
        let mut e = boot(&dir, max, T0);
        assert_eq!(e.jobs.len(), 3);
        assert_eq!(e.jobs[&3].state, State::Delayed);
        assert_eq!(e.jobs[&3].pri, 19_999);
        assert_eq!(e.jobs.counts(&e.jobs[&3]).releases, 20_000);
        assert_eq!(e.jobs[&2].state, State::Buried);
        let c = e.connect();
        assert_eq!(peek_buried(&mut e, c), Some(2));
        drop(e);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn put_delete_churn_keeps_the_log_small() {
        let dir = test_dir("churn");
        let max = 4096;
        let mut e = boot(&dir, max, T0);
        let c = e.connect();
        // A few long-lived jobs among heavy churn.
        for i in 0..5 {
            run(&mut e, T0, c, put(1, 100_000, &format!("keeper {i}")));
        }
        let mut worst = 0;
        let mut worst_live = 0;
        for i in 0..50_000u64 {
            let Reply::Inserted(id) = run(&mut e, T0, c, put(1, 0, "churn churn churn")) else {
                panic!("put failed")
            };
            // Keep up to 20 jobs alive at a time.
            if i >= 20 {
                assert_eq!(run(&mut e, T0, c, Command::Delete(id - 20)), Reply::Deleted);
            }
            if i % 16 == 0 {
                worst = worst.max(dir_bytes(&dir));
                worst_live = worst_live.max(live_bytes(&e));
            }
        }
        let stats = e.journal.as_ref().unwrap().stats();
        eprintln!("churn: live <= {worst_live} B, worst dir {worst} B, {stats:?}");
        assert!(worst <= 2 * worst_live + 3 * max, "dir grew to {worst} B");
        drop(e);
        let e = boot(&dir, max, T0);
        assert_eq!(e.jobs.len(), 25);
        assert_eq!(e.next_job_id, 50_006);
        drop(e);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_compaction_pass_is_spread_over_batches_and_loses_nothing() {
        let dir = test_dir("spread-compaction");
        let max = 1024 * 1024;
        let mut e = boot(&dir, max, T0);
        let c = e.connect();
        let body = |id: JobId| format!("{id:0>1000}");
        put_each(&mut e, c, 1..=8_000, body);
        // Three jobs in five die, with maintenance after each delete as the
        // hub runs it after each batch, then until it has nothing left to
        // do. The log soon holds over twice the live data, and every old
        // segment still holds live jobs that compaction must move.
        // (segment, record size) of every job, in slot order:
        let places = |e: &Engine| -> Vec<(u32, u64)> {
            e.jobs
                .values()
                .map(|j| (j.file, e.record_size(j)))
                .collect()
        };
        let (mut calls, mut spread) = (0, false);
        let mut deletes = (1..=8_000).filter(|id| id % 5 >= 2);
        loop {
            let deleting = deletes.next();
            if let Some(id) = deleting {
                let Outcome::Reply(r) = e.apply(T0, c, Command::Delete(id)) else {
                    panic!("delete waited")
                };
                assert_eq!(r, Reply::Deleted);
            }
            let before = places(&e);
            e.maintain_journal();
            calls += 1;
            let moved: u64 = (before.iter().zip(places(&e)))
                .filter(|(a, b)| a.0 != b.0)
                .map(|(a, _)| a.1)
                .sum();
            // The batch wrote one 17-byte Delete at most: the base budget
            // plus twice that, give or take the 1,088-byte record that
            // crossed it. (Old segments hold ~0.5 MB of live jobs each, so
            // a pass needs several calls' budgets.)
            assert!(
                moved <= COMPACT_MOVE_BYTES + 2 * 17 + 1088,
                "one call moved {moved} bytes"
            );
            spread |= e.compaction.is_some();
            let more = e.journal.as_ref().unwrap().compaction_candidate().is_some();
            if deleting.is_none() && e.compaction.is_none() && !more {
                break;
            }
            assert!(calls < 100_000, "compaction does not finish");
        }
        assert!(spread, "every pass ended within one call");
        let (disk, live) = (dir_bytes(&dir), live_bytes(&e));
        assert!(
            disk <= 2 * live + 3 * max,
            "{disk} B on disk for {live} B live"
        );
        drop(e);
        let e = boot(&dir, max, T0);
        assert_eq!(e.jobs.len(), 3_200);
        for id in (1..=8_000).filter(|id| id % 5 < 2) {
            let job = &e.jobs[&id];
            assert_eq!(e.jobs.body(job), format!("{}\r\n", body(id)).as_bytes());
        }
        drop(e);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn jobs_moved_by_a_shrinking_store_are_not_lost_to_compaction() {
        let dir = test_dir("shrink-compaction");
        let max = 256 * 1024;
        let mut e = boot(&dir, max, T0);
        let c = e.connect();
        let body = |id: JobId| format!("{id:0>200}");
        put_each(&mut e, c, 1..=20_000, body);
        // The first half dies and newer jobs take its slots: the oldest
        // jobs, in the oldest segments, now fill the slab's tail.
        for id in 1..=10_000 {
            assert_eq!(run(&mut e, T0, c, Command::Delete(id)), Reply::Deleted);
        }
        put_each(&mut e, c, 20_001..=30_000, body);
        // Then nearly everything dies, so the store shrinks (moving the
        // tail's jobs down into freed slots) while compaction passes walk
        // the slots to rewrite those same old jobs.
        let kept = |id: JobId| id > 10_000 && id <= 20_000 && id % 8 == 0;
        let doomed = (20_001..=30_000)
            .chain(10_001..=20_000)
            .filter(|&id| !kept(id));
        for id in doomed {
            assert_eq!(run(&mut e, T0, c, Command::Delete(id)), Reply::Deleted);
        }
        for _ in 0..100_000 {
            e.maintain_journal();
            let more = e.journal.as_ref().unwrap().compaction_candidate().is_some();
            if e.compaction.is_none() && !more {
                break;
            }
        }
        assert!(e.jobs.relocations() > 0, "the store did not shrink");
        // At most four slots a job once no more operations come.
        assert!(
            e.jobs.slot_count() <= 4 * 1_250,
            "{} slots",
            e.jobs.slot_count()
        );
        e.check_invariants();
        drop(e);
        let e = boot(&dir, max, T0);
        assert_eq!(e.jobs.len(), 1_250);
        for id in (10_001..=20_000).filter(|&id| kept(id)) {
            let job = e.jobs.get(id).unwrap_or_else(|| panic!("job {id} lost"));
            assert_eq!(e.jobs.body(job), format!("{}\r\n", body(id)).as_bytes());
        }
        drop(e);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_keeps_up_with_a_writer_after_a_peak() {
        let dir = test_dir("keeps-up");
        let max = 64 * 1024;
        let mut e = boot(&dir, max, T0);
        let c = e.connect();
        let apply = |e: &mut Engine, cmd: Command| match e.apply(T0, c, cmd) {
            Outcome::Reply(r) => r,
            Outcome::Wait => panic!("waited"),
        };
        // A past peak leaves a big slab: every pass visits 30,000 slots.
        for id in 1..=30_000 {
            assert_eq!(apply(&mut e, put(1, 0, "peak")), Reply::Inserted(id));
        }
        for id in 1..=30_000 {
            assert_eq!(apply(&mut e, Command::Delete(id)), Reply::Deleted);
        }
        e.maintain_journal();
        // Then batches of 50 puts of 1 KB each, of which one stays: each
        // batch writes most of a segment, and every old segment keeps a job.
        let big = "x".repeat(1000);
        let mut worst = 0;
        for batch in 0..400u64 {
            let first = 30_001 + batch * 50;
            for id in first..first + 50 {
                assert_eq!(apply(&mut e, put(1, 0, &big)), Reply::Inserted(id));
            }
            for id in first + 1..first + 50 {
                assert_eq!(apply(&mut e, Command::Delete(id)), Reply::Deleted);
            }
            e.maintain_journal();
            if batch % 20 == 19 {
                let (disk, live) = (dir_bytes(&dir), live_bytes(&e));
                worst = worst.max(disk);
                assert!(
                    disk <= 2 * live + 4 * max,
                    "batch {batch}: {disk} B on disk for {live} B live"
                );
            }
        }
        eprintln!("keeps up: worst dir {worst} B, live {} B", live_bytes(&e));
        drop(e);
        let e = boot(&dir, max, T0);
        assert_eq!(e.jobs.len(), 400);
        drop(e);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bury_order_survives_compaction_and_restarts() {
        let dir = test_dir("bury-order");
        let max = 1024;
        let mut e = boot(&dir, max, T0);
        let c = e.connect();
        for i in 1..=4 {
            run(&mut e, T0, c, put(1, 0, &format!("job {i}")));
        }
        // Buried in an order unlike their ids (and unlike their records).
        for id in [3, 1, 4, 2] {
            run(&mut e, T0, c, Command::ReserveJob(id));
            assert_eq!(
                run(&mut e, T0, c, Command::Bury { id, pri: 7 }),
                Reply::Buried
            );
        }
        let first_file = e.jobs[&1].file;
        // Traffic that makes compaction rewrite the buried jobs.
        run(&mut e, T0, c, put(1, 0, "loop"));
        for _ in 0..2_000 {
            run(&mut e, T0, c, Command::ReserveJob(5));
            run(
                &mut e,
                T0,
                c,
                Command::Release {
                    id: 5,
                    pri: 1,
                    delay: 10,
                },
            );
        }
        assert_ne!(e.jobs[&1].file, first_file, "compaction moved the job");
        for round in 0..2 {
            drop(e);
            e = boot(&dir, max, T0);
            let c = e.connect();
            for (i, id) in [3, 1, 4, 2].into_iter().enumerate() {
                assert_eq!(e.jobs.counts(&e.jobs[&id]).buries, 1, "not inflated (#668)");
                if round == 1 {
                    assert_eq!(peek_buried(&mut e, c), Some(id), "restart {round}");
                    assert_eq!(run(&mut e, T0, c, Command::Kick(1)), Reply::Kicked(1));
                } else if i == 0 {
                    // Bury one more after a restart: it goes last.
                    run(&mut e, T0, c, Command::ReserveJob(5));
                    run(&mut e, T0, c, Command::Bury { id: 5, pri: 1 });
                }
            }
            e.check_invariants();
        }
        let c = e.connect();
        assert_eq!(peek_buried(&mut e, c), Some(5));
        drop(e);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
