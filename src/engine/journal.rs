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
    /// can be deleted too. Runs after every batch. Finding a segment's jobs
    /// means a pass over every job, so a pass is spread over batches: each
    /// call visits at most [`COMPACT_SLOTS`] (or 1/64 of the store's slots,
    /// so a pass takes at most 64 calls) and moves at most [`COMPACT_MOVES`]
    /// jobs, which keeps the pause short whatever the job count and still
    /// catches up with a heavily pipelining writer. Dead segments are
    /// deleted a few at a time ([`DELETIONS_PER_CALL`] more than were
    /// started since the last call), for the same reason: each costs an
    /// unlink and, unless `-F`, a directory fsync.
    pub fn maintain_journal(&mut self) {
        let mut slots_left = COMPACT_SLOTS.max(self.jobs.slot_count() / 64);
        let mut moves_left = COMPACT_MOVES;
        let Some(journal) = self.journal.as_ref() else {
            return;
        };
        // Keep pace with the segments started since the last call (a
        // pipelining writer can fill several per batch), plus a backlog of
        // DELETIONS_PER_CALL.
        let current = journal.stats().current_index;
        let started = current.saturating_sub(self.segments_seen) as usize;
        self.segments_seen = current;
        let mut deletions_left = DELETIONS_PER_CALL + started;
        loop {
            let Some(journal) = self.journal.as_mut() else {
                return;
            };
            deletions_left -= journal.collect_garbage(deletions_left);
            let mut pass = match self.compaction.take() {
                Some(pass) => pass,
                None => match journal.compaction_candidate() {
                    Some(head) => Compaction {
                        head,
                        next_slot: 0,
                        moved: 0,
                    },
                    None => return,
                },
            };
            let end = pass.next_slot.saturating_add(slots_left);
            let mut failed = false;
            while pass.next_slot < end.min(self.jobs.slot_count()) && moves_left > 0 {
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
                if !self.move_to_head(id, pass.head) {
                    failed = true;
                    break;
                }
                pass.moved += 1;
                moves_left -= 1;
            }
            let done = failed || pass.next_slot >= self.jobs.slot_count();
            if !done {
                self.compaction = Some(pass);
                return;
            }
            if let Some(j) = self.journal.as_mut() {
                j.note_migrated(pass.moved);
            }
            // A failed write leaves the rest where they are; the pass starts
            // over once the log takes writes again.
            if failed || slots_left == 0 || moves_left == 0 {
                if let Some(j) = self.journal.as_mut() {
                    j.collect_garbage(deletions_left);
                }
                return;
            }
        }
    }

    /// Rewrites job `id`, which lives in segment `head`, at the head of the
    /// log. False if the write failed (the job stays where it is).
    fn move_to_head(&mut self, id: JobId, head: u32) -> bool {
        let job = &self.jobs[&id];
        let body = Bytes::copy_from_slice(self.jobs.body(job));
        let (image, size) = (self.image(job, body), self.record_size(job));
        let Ok(file) = self.log(Record::Put(image)) else {
            return false;
        };
        if let Some(j) = self.journal.as_mut() {
            j.release(head, size);
        }
        self.jobs.get_mut(id).expect("live job").file = file;
        true
    }
}

/// Slots of the job store one call of `maintain_journal` visits at most
/// (or 1/64 of the slots, if that is more).
const COMPACT_SLOTS: usize = 4096;

/// Jobs one call of `maintain_journal` rewrites at most.
const COMPACT_MOVES: u64 = 1024;

/// Dead segments one call of `maintain_journal` deletes at most, beyond as
/// many as were started since the last call.
const DELETIONS_PER_CALL: usize = 1;

/// A compaction pass in progress: the live jobs of segment `head` are being
/// rewritten at the head of the log, in the job store's slot order. Slots
/// past the cursor may be reused meanwhile: their new jobs are logged in the
/// current segment, never in `head`, so after the pass `head` holds none.
#[derive(Debug)]
pub(super) struct Compaction {
    head: u32,
    next_slot: usize,
    moved: u64,
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
        let max = 64 * 1024;
        let mut e = boot(&dir, max, T0);
        let c = e.connect();
        let body = |id: JobId| format!("job {id:>8}");
        for id in 1..=20_000 {
            assert_eq!(
                run(&mut e, T0, c, put(1, 0, &body(id))),
                Reply::Inserted(id)
            );
        }
        // Every other job dies (maintenance held back, to watch it below):
        // the log is now over twice the live data, and every old segment
        // still holds live jobs that compaction must move.
        for id in (1..=20_000).step_by(2) {
            let Outcome::Reply(r) = e.apply(T0, c, Command::Delete(id)) else {
                panic!("delete waited")
            };
            assert_eq!(r, Reply::Deleted);
        }
        let files = |e: &Engine| -> Vec<u32> { e.jobs.values().map(|j| j.file).collect() };
        let (mut calls, mut spread) = (0, false);
        loop {
            let before = files(&e);
            e.maintain_journal();
            calls += 1;
            let moved = before
                .iter()
                .zip(files(&e))
                .filter(|(a, b)| **a != *b)
                .count();
            assert!(moved as u64 <= COMPACT_MOVES, "one call moved {moved} jobs");
            spread |= e.compaction.is_some();
            let more = e.journal.as_ref().unwrap().compaction_candidate().is_some();
            if e.compaction.is_none() && !more {
                break;
            }
            assert!(calls < 10_000, "compaction does not finish");
        }
        assert!(spread, "every pass ended within one call");
        let (disk, live) = (dir_bytes(&dir), live_bytes(&e));
        assert!(
            disk <= 2 * live + 3 * max,
            "{disk} B on disk for {live} B live"
        );
        drop(e);
        let e = boot(&dir, max, T0);
        assert_eq!(e.jobs.len(), 10_000);
        for id in (2..=20_000).step_by(2) {
            let job = &e.jobs[&id];
            assert_eq!(e.jobs.body(job), format!("{}\r\n", body(id)).as_bytes());
        }
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
