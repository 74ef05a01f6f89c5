//! The engine's side of durability: what it logs, restoring from a log, and
//! compaction (rewriting live jobs so old segments can be deleted).
//!
//! Every change is logged *before* it is applied, so a failed write leaves
//! the engine unchanged and the client gets an error reply, never a lie.

use super::{Engine, Holder, Job, State, Time};
use crate::binlog::{JobImage, JobState, Journal, Record, Recovered};

/// The durable part of a job's current state.
pub(super) fn job_state(job: &Job) -> JobState {
    JobState {
        id: job.id,
        state: job.state,
        pri: job.pri,
        delay: job.delay,
        deadline: job.deadline,
        counts: job.counts,
    }
}

impl Engine {
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

    pub(super) fn log(&mut self, record: Record) -> Result<u32, ()> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(0);
        };
        journal.append(&record).map_err(|e| {
            tracing::error!("binlog write failed: {e}");
        })
    }

    pub(super) fn log_put(&mut self, job: &Job) -> Result<u32, ()> {
        if self.journal.is_none() {
            return Ok(0);
        }
        let image = self.image(job);
        self.log(Record::Put(image))
    }

    fn image(&self, job: &Job) -> JobImage {
        JobImage {
            state: job_state(job),
            ttr: job.ttr,
            created: job.created,
            tube: self.tube(job.tube).name.as_str().to_string(),
            body: job.body.clone(),
        }
    }

    fn record_size(&self, job: &Job) -> u64 {
        Record::put_size(self.tube(job.tube).name.as_str().len(), job.body.len()) as u64
    }

    /// A job is gone: its full record no longer holds its segment.
    pub(super) fn forget_record(&mut self, job: &Job) {
        let size = self.record_size(job);
        if let Some(j) = self.journal.as_mut() {
            j.release(job.file, size);
        }
    }

    /// Rebuilds the jobs of a replayed log. Reserved jobs come back ready;
    /// buried jobs keep their bury order; delayed jobs keep their deadline.
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
            let job = Job {
                id: s.id,
                pri: s.pri,
                delay: s.delay,
                ttr: rec.image.ttr.max(1),
                tube,
                state: State::Ready,
                created: rec.image.created,
                deadline: s.deadline,
                holder: Holder::None,
                counts: s.counts,
                file: rec.file,
                body: rec.image.body,
            };
            let size = self.record_size(&job);
            if let Some(j) = self.journal.as_mut() {
                j.adopt(rec.file, size);
            }
            self.jobs.insert(s.id, job);
            match s.state {
                State::Buried => self.make_buried(s.id),
                State::Delayed if s.deadline > now => {
                    let key = (s.deadline, s.id);
                    let job = self.jobs.get_mut(&s.id).expect("just inserted");
                    job.state = State::Delayed;
                    self.tube_mut(tube).delayed.insert(key);
                    self.timers.delayed.insert(key);
                }
                _ => self.make_ready(now, s.id),
            }
        }
    }

    /// Deletes dead segments and, when the log has grown well past the live
    /// data, rewrites the live jobs of the oldest segment at the head.
    pub fn maintain_journal(&mut self) {
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        journal.collect_garbage();
        let Some(head) = journal.compaction_candidate() else {
            return;
        };
        let mut ids: Vec<_> = self
            .jobs
            .values()
            .filter(|j| j.file == head)
            .map(|j| j.id)
            .collect();
        ids.sort_unstable();
        let mut moved = 0;
        for id in ids {
            let job = &self.jobs[&id];
            let (image, size) = (self.image(job), self.record_size(job));
            let Ok(file) = self.log(Record::Put(image)) else {
                break;
            };
            if let Some(j) = self.journal.as_mut() {
                j.release(head, size);
            }
            self.jobs.get_mut(&id).expect("live job").file = file;
            moved += 1;
        }
        if let Some(j) = self.journal.as_mut() {
            j.note_migrated(moved);
            j.collect_garbage();
        }
    }
}
