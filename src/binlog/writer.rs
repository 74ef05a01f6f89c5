//! Appending records, rotating segments, collecting dead ones, and syncing.
//!
//! Appends happen inline, under the engine lock, one copy into the mapped
//! segment (or one `write`) per record:
//! once a command is answered its record is in the kernel, so killing the
//! server loses nothing acknowledged. Under `-f 0` sessions hold their replies
//! until their bytes are synced, and one fsync covers every session waiting
//! at that moment (group commit): on the default single-threaded runtime the
//! first waiting session fsyncs inline once the others have appended; with
//! `--threads` > 1 a syncer thread does it. Under `-f N` the syncer thread
//! syncs at least every N ms on its own timer; under `-F` it never runs.
//!
//! Space accounting: each live job holds the bytes of its latest full record
//! in one segment. Segments are deleted oldest first once no live job holds
//! them; when the log holds more than about twice the live bytes, the live
//! jobs of the oldest segment are rewritten at the head (compaction) so it can
//! go. Short records hold nothing, so release loops cannot pin the log.
//!
//! Failures: a write that fails (a full disk) is cut off again and reported
//! to the caller, and the next write may succeed. A failed fsync, or a
//! partial write that cannot be cut off, makes the log refuse every later
//! write until restart: the kernel may have dropped the data it could not
//! write, so no later success could be trusted. All file access goes through
//! [`Storage`], so tests can inject these faults.

use super::fs::{SegmentFile, Storage};
use super::record::Record;
use super::segment;
use super::{Journal, JournalStats};
use crate::config::SyncPolicy;
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::watch;

/// Live data held by one segment.
#[derive(Debug, Default, Clone, Copy)]
struct SegmentUse {
    size: u64,
    live_jobs: u64,
    live_bytes: u64,
}

/// The open log.
#[derive(Debug)]
pub struct Binlog {
    dir: PathBuf,
    _lock: segment::DirLock,
    fs: Arc<dyn Storage>,
    max_size: u64,
    policy: SyncPolicy,
    current: Box<dyn SegmentFile>,
    current_seq: u32,
    segments: BTreeMap<u32, SegmentUse>,
    next_job_id: u64,
    buf: BytesMut,
    records_written: u64,
    records_migrated: u64,
    sync: Arc<SyncShared>,
}

/// State shared with the syncer thread and waiting sessions.
#[derive(Debug)]
pub struct SyncShared {
    policy: SyncPolicy,
    /// The file being appended to (a duplicate handle).
    file: Mutex<Box<dyn SegmentFile>>,
    /// Bytes appended since start, over all segments.
    written: AtomicU64,
    /// Highest `written` value a session is waiting for.
    requested: Mutex<u64>,
    wake: Condvar,
    /// (bytes synced, failed) as the syncer last saw them.
    synced: watch::Sender<SyncStatus>,
    /// Why the log cannot be trusted any more (a failed fsync, or a partial
    /// write that could not be cut off). Once set, every append fails: after
    /// a failed fsync the kernel may have dropped the data it could not
    /// write, so a later "successful" fsync would prove nothing.
    failure: Mutex<Option<String>>,
    /// Set when the log is closed: the syncer thread ends.
    closed: AtomicBool,
    /// A session is syncing inline (see `sync_inline`).
    syncing_inline: AtomicBool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStatus {
    pub synced: u64,
    pub failed: bool,
}

impl Binlog {
    /// Opens a log after recovery: a new segment is started for this run.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        fs: Arc<dyn Storage>,
        dir: PathBuf,
        lock: segment::DirLock,
        max_size: u64,
        policy: SyncPolicy,
        existing: &[(u32, u64)],
        next_job_id: u64,
    ) -> io::Result<Binlog> {
        let current_seq = existing.last().map_or(1, |&(s, _)| s + 1);
        let current = segment::create(&*fs, &dir, current_seq, next_job_id, max_size)?;
        let path = segment::path(&dir, current_seq);
        let ready = || -> io::Result<Box<dyn SegmentFile>> {
            if policy != SyncPolicy::Never {
                current.sync_data()?;
                fs.sync_dir(&dir)?;
            }
            current.try_clone()
        };
        let clone = match ready() {
            Ok(clone) => clone,
            Err(e) => {
                let _ = fs.remove(&path);
                return Err(segment::annotate(e, &path));
            }
        };
        let mut segments: BTreeMap<u32, SegmentUse> = existing
            .iter()
            .map(|&(seq, size)| {
                (
                    seq,
                    SegmentUse {
                        size,
                        ..Default::default()
                    },
                )
            })
            .collect();
        segments.insert(
            current_seq,
            SegmentUse {
                size: segment::HEADER_LEN,
                ..Default::default()
            },
        );
        let (synced, _) = watch::channel(SyncStatus::default());
        let sync = Arc::new(SyncShared {
            policy,
            file: Mutex::new(clone),
            written: AtomicU64::new(0),
            requested: Mutex::new(0),
            wake: Condvar::new(),
            synced,
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            syncing_inline: AtomicBool::new(false),
        });
        if policy != SyncPolicy::Never {
            let shared = sync.clone();
            std::thread::Builder::new()
                .name("binlog-sync".into())
                .spawn(move || shared.run())?;
        }
        Ok(Binlog {
            dir,
            _lock: lock,
            fs,
            max_size,
            policy,
            current,
            current_seq,
            segments,
            next_job_id,
            buf: BytesMut::with_capacity(4096),
            records_written: 0,
            records_migrated: 0,
            sync,
        })
    }

    /// The handle sessions use to wait for their records to be synced.
    pub fn sync_handle(&self) -> Arc<SyncShared> {
        self.sync.clone()
    }

    /// Bytes of the live jobs' full records.
    fn live_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.live_bytes).sum()
    }

    fn current_path(&self) -> PathBuf {
        segment::path(&self.dir, self.current_seq)
    }

    /// fsync of the segment being written; a failure stops the log.
    fn sync_current(&mut self) -> io::Result<()> {
        if let Err(e) = self.current.sync_data() {
            let e = segment::annotate(e, &self.current_path());
            self.sync.fail(format!("fsync failed: {e}"));
            return Err(e);
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.policy != SyncPolicy::Never {
            // The old segment must be durable before we stop tracking it.
            self.sync_current()?;
        }
        let seq = self.current_seq + 1;
        let file = segment::create(&*self.fs, &self.dir, seq, self.next_job_id, self.max_size)?;
        let path = segment::path(&self.dir, seq);
        let ready = || -> io::Result<Box<dyn SegmentFile>> {
            if self.policy != SyncPolicy::Never {
                self.fs.sync_dir(&self.dir)?;
            }
            file.try_clone()
        };
        let clone = match ready() {
            Ok(clone) => clone,
            Err(e) => {
                // Leave no file behind, or the next attempt could not create it.
                let _ = self.fs.remove(&path);
                return Err(segment::annotate(e, &path));
            }
        };
        *self.sync.file.lock().unwrap_or_else(|e| e.into_inner()) = clone;
        self.current = file;
        self.current_seq = seq;
        self.segments.insert(
            seq,
            SegmentUse {
                size: segment::HEADER_LEN,
                ..Default::default()
            },
        );
        Ok(())
    }

    fn write_framed(&mut self) -> io::Result<()> {
        let len = self.buf.len() as u64;
        let size = self.segments[&self.current_seq].size;
        if size > segment::HEADER_LEN && size + len > self.max_size {
            self.rotate()?;
        }
        if let Err(e) = self.current.write_all(&self.buf) {
            let e = segment::annotate(e, &self.current_path());
            // Cut a partial record off so the log stays readable; if even
            // that fails, refuse all further writes rather than corrupt it.
            let size = self.segments[&self.current_seq].size;
            if let Err(e2) = self.current.set_len(size) {
                self.sync.fail(format!(
                    "write failed ({e}) and the partial record could not be cut off ({e2})"
                ));
            }
            return Err(e);
        }
        self.segments
            .get_mut(&self.current_seq)
            .expect("current")
            .size += len;
        self.sync.written.fetch_add(len, Ordering::SeqCst);
        Ok(())
    }

    fn total_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }
}

impl Drop for Binlog {
    fn drop(&mut self) {
        self.sync.close();
    }
}

impl Journal for Binlog {
    fn append(&mut self, record: &Record) -> io::Result<u32> {
        if let Some(why) = self.sync.failure() {
            return Err(io::Error::other(format!(
                "binlog unusable until restart: {why}"
            )));
        }
        self.buf.clear();
        let size = record.encode(&mut self.buf) as u64;
        self.write_framed()?;
        self.records_written += 1;
        if let Record::Put(job) = record {
            self.next_job_id = self.next_job_id.max(job.state.id + 1);
            let seg = self.segments.get_mut(&self.current_seq).expect("current");
            seg.live_jobs += 1;
            seg.live_bytes += size;
        }
        Ok(self.current_seq)
    }

    fn release(&mut self, file: u32, size: u64) {
        if let Some(seg) = self.segments.get_mut(&file) {
            seg.live_jobs = seg.live_jobs.saturating_sub(1);
            seg.live_bytes = seg.live_bytes.saturating_sub(size);
        }
    }

    fn adopt(&mut self, file: u32, size: u64) {
        let seg = self.segments.entry(file).or_default();
        seg.live_jobs += 1;
        seg.live_bytes += size;
    }

    fn compaction_candidate(&self) -> Option<u32> {
        let (&head, use_) = self.segments.first_key_value()?;
        if head == self.current_seq || use_.live_jobs == 0 {
            return None;
        }
        let total = self.total_bytes();
        (total > 2 * self.live_bytes() + self.max_size).then_some(head)
    }

    fn note_migrated(&mut self, records: u64) {
        self.records_migrated += records;
    }

    fn collect_garbage(&mut self, limit: usize) -> usize {
        let mut deleted = 0;
        while let Some((&head, use_)) = self.segments.first_key_value() {
            if deleted == limit || head == self.current_seq || use_.live_jobs > 0 {
                break;
            }
            if deleted == 0 && self.policy != SyncPolicy::Never {
                // The segment's last jobs may have been moved by compaction
                // into records not yet on disk: sync them before their old
                // copies go, or a crash (a power cut; under -f 0 any kill)
                // could lose both.
                if self.sync_current().is_err() {
                    break;
                }
            }
            let path = segment::path(&self.dir, head);
            if let Err(e) = self.fs.remove(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("cannot delete {}: {e}", path.display());
                    break;
                }
            }
            self.segments.remove(&head);
            deleted += 1;
            if self.policy != SyncPolicy::Never {
                // Deletions must land in order, or a resurrected old
                // segment could bring back deleted jobs after a crash:
                // delete nothing newer until this deletion is durable.
                if let Err(e) = self.fs.sync_dir(&self.dir) {
                    tracing::warn!("cannot sync {}: {e}", self.dir.display());
                    break;
                }
            }
        }
        deleted
    }

    fn position(&self) -> u64 {
        self.sync.written.load(Ordering::SeqCst)
    }

    fn stats(&self) -> JournalStats {
        JournalStats {
            oldest_index: self.segments.keys().next().copied().unwrap_or(0),
            current_index: self.current_seq,
            records_migrated: self.records_migrated,
            records_written: self.records_written,
        }
    }

    fn sync_now(&mut self) -> io::Result<()> {
        if self.policy != SyncPolicy::Never {
            self.sync_current()?;
        }
        Ok(())
    }
}

impl SyncShared {
    /// Whether replies must wait for the sync of their records.
    pub fn sync_before_reply(&self) -> bool {
        self.policy.syncs_before_reply()
    }

    /// Why the log refuses writes, if it does.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Marks the log unusable (until restart) and wakes every waiter.
    fn fail(&self, why: String) {
        {
            let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            if failure.is_none() {
                tracing::error!(
                    "binlog: {why}; refusing every further write until the server is restarted"
                );
                *failure = Some(why);
            }
        }
        self.synced.send_modify(|s| s.failed = true);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        {
            let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            failure.get_or_insert_with(|| "the binlog was closed".into());
        }
        // Sessions still waiting for a sync get an error, not a hang.
        self.synced.send_modify(|s| s.failed = true);
        let _guard = self.requested.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// Waits until every byte up to `pos` is on disk. Errors if syncing failed.
    pub async fn wait_synced(&self, pos: u64) -> io::Result<()> {
        let flavor = tokio::runtime::Handle::current().runtime_flavor();
        if flavor == tokio::runtime::RuntimeFlavor::CurrentThread {
            return self.sync_inline(pos).await;
        }
        let mut rx = self.synced.subscribe();
        {
            let mut requested = self.requested.lock().unwrap_or_else(|e| e.into_inner());
            if *requested < pos {
                *requested = pos;
                self.wake.notify_one();
            }
        }
        let status = rx
            .wait_for(|s| s.synced >= pos || s.failed)
            .await
            .map_err(|_| io::Error::other("binlog syncer stopped"))?;
        if status.synced < pos {
            return Err(self.sync_error());
        }
        Ok(())
    }

    /// Group commit on a single-threaded runtime: the first session to need
    /// a sync lets every other runnable session go first (they append their
    /// records and wait), then fsyncs inline, covering them all, as
    /// beanstalkd does. Handing the fsync to the syncer thread instead costs
    /// two thread hand-offs per sync, which on one core is most of the time
    /// a lone client waits. The runtime thread is blocked meanwhile, which
    /// is the price of `-f 0`.
    async fn sync_inline(&self, pos: u64) -> io::Result<()> {
        let mut rx = self.synced.subscribe();
        loop {
            let status = *rx.borrow_and_update();
            if status.synced >= pos {
                return Ok(());
            }
            if status.failed {
                return Err(self.sync_error());
            }
            if self.syncing_inline.swap(true, Ordering::SeqCst) {
                // Another session is about to sync; it wakes us.
                rx.changed()
                    .await
                    .map_err(|_| io::Error::other("binlog closed"))?;
                continue;
            }
            let _turn = InlineTurn(self);
            // Gather: as long as a round of the other runnable sessions
            // (and of sockets that became readable meanwhile) appended more,
            // give them another; a lone client costs one round.
            let mut target = self.written.load(Ordering::SeqCst);
            for _ in 0..MAX_GATHER_ROUNDS {
                tokio::task::yield_now().await;
                let now = self.written.load(Ordering::SeqCst);
                if now == target {
                    break;
                }
                target = now;
            }
            let result = self.sync_file();
            match result {
                Ok(()) => self.synced.send_modify(|s| s.synced = s.synced.max(target)),
                // Not retried, as in `run`.
                Err(e) => self.fail(format!("fsync failed: {e}")),
            }
        }
    }

    fn sync_error(&self) -> io::Error {
        io::Error::other(format!(
            "binlog fsync failed: {}",
            self.failure().unwrap_or_default()
        ))
    }

    /// fsync of the segment being appended to.
    fn sync_file(&self) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync_data()
    }

    fn run(&self) {
        let interval = match self.policy {
            SyncPolicy::Every(d) => d,
            SyncPolicy::Never => return,
        };
        let mut synced = 0u64;
        loop {
            {
                let mut requested = self.requested.lock().unwrap_or_else(|e| e.into_inner());
                if interval.is_zero() {
                    while *requested <= synced && !self.closed.load(Ordering::SeqCst) {
                        requested = self.wake.wait(requested).unwrap_or_else(|e| e.into_inner());
                    }
                } else if !self.closed.load(Ordering::SeqCst) {
                    let (_guard, _) = self
                        .wake
                        .wait_timeout(requested, interval)
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            let target = self.written.load(Ordering::SeqCst);
            if target <= synced {
                continue;
            }
            let result = self.sync_file();
            match result {
                Ok(()) => {
                    synced = target;
                    self.synced.send_modify(|s| s.synced = synced);
                }
                Err(e) => {
                    // Not retried: the kernel may have thrown away the pages
                    // it could not write, so a later success would lie.
                    self.fail(format!("fsync failed: {e}"));
                    return;
                }
            }
        }
    }
}

/// Most rounds an inline syncer lets other sessions append before it syncs,
/// so a steady stream of writers cannot postpone the fsync for ever.
const MAX_GATHER_ROUNDS: usize = 8;

/// The inline syncer's turn; ending it (even by the session being dropped
/// mid-way) lets a waiting session take over.
struct InlineTurn<'a>(&'a SyncShared);

impl Drop for InlineTurn<'_> {
    fn drop(&mut self) {
        self.0.syncing_inline.store(false, Ordering::SeqCst);
        self.0.synced.send_modify(|_| {});
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::binlog::fs::{FaultyFs, RealFs};
    use crate::binlog::record::{JobImage, JobState};
    use crate::binlog::{open_with, recover, test_dir};
    use crate::engine::{JobCounts, State};
    use bytes::Bytes;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    pub(crate) fn put(id: u64, body: &str) -> Record {
        Record::Put(JobImage {
            state: JobState {
                id,
                state: State::Ready,
                pri: 10,
                delay: 0,
                deadline: 0,
                counts: JobCounts::default(),
                bury_seq: 0,
            },
            ttr: 60,
            created: 5,
            tube: "default".into(),
            body: Bytes::from(format!("{body}\r\n")),
        })
    }

    fn open(dir: &Path, fs: &FaultyFs, max: u64, policy: SyncPolicy) -> Binlog {
        open_with(Arc::new(fs.clone()), dir, max, policy, false)
            .expect("open")
            .0
    }

    fn file_sizes(dir: &Path) -> Vec<(u32, u64)> {
        segment::list(dir)
            .unwrap()
            .into_iter()
            .map(|s| (s, std::fs::metadata(segment::path(dir, s)).unwrap().len()))
            .collect()
    }

    #[test]
    fn segments_rotate_at_max_size_and_replay_in_order() {
        let dir = test_dir("rotate");
        let fs = FaultyFs::default();
        let mut log = open(&dir, &fs, 1024, SyncPolicy::Never);
        for id in 1..=100 {
            log.append(&put(id, "some body")).unwrap();
        }
        log.append(&Record::Delete(50)).unwrap();
        let stats = log.stats();
        assert_eq!((stats.oldest_index, stats.records_written), (1, 101));
        assert!(stats.current_index > 5, "{stats:?}");
        drop(log);
        for (seq, size) in file_sizes(&dir) {
            assert!(size <= 1024, "binlog.{seq} has {size} bytes");
        }
        let rec = recover::recover(&dir, false).unwrap();
        assert_eq!(rec.jobs.len(), 99);
        assert!(!rec.jobs.contains_key(&50));
        assert_eq!(rec.next_job_id, 101);
        assert_eq!(rec.records, 101);
        // -F: never an fsync.
        assert_eq!(fs.faults.syncs(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
        let dir = test_dir("big");
        let fs = FaultyFs::default();
        let mut log = open(&dir, &fs, 100, SyncPolicy::Never);
        let big = "x".repeat(500);
        assert_eq!(log.append(&put(1, &big)).unwrap(), 1);
        assert_eq!(log.append(&put(2, &big)).unwrap(), 2);
        drop(log);
        let rec = recover::recover(&dir, false).unwrap();
        assert_eq!(rec.jobs.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_write_is_cut_off_and_the_log_stays_readable() {
        let dir = test_dir("short");
        let fs = FaultyFs::default();
        let mut log = open(&dir, &fs, 1 << 20, SyncPolicy::Never);
        log.append(&put(1, "one")).unwrap();
        let before = file_sizes(&dir);
        // Room for 10 bytes of the next record, then ENOSPC.
        fs.faults.disk_full_after(10);
        let err = log.append(&put(2, "two")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(err.to_string().contains("binlog.1"), "{err}");
        assert_eq!(file_sizes(&dir), before, "the partial record was cut off");
        // Still full: a delete fails too, nothing is written.
        assert!(log.append(&Record::Delete(1)).is_err());
        assert_eq!(file_sizes(&dir), before);
        assert_eq!(log.stats().records_written, 1);
        // Room again: writing resumes.
        fs.faults.disk_ok();
        log.append(&put(3, "three")).unwrap();
        drop(log);
        let rec = recover::recover(&dir, false).unwrap();
        assert_eq!(rec.jobs.keys().copied().collect::<Vec<_>>(), [1, 3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_partial_write_that_cannot_be_undone_stops_all_writes() {
        let dir = test_dir("stuck");
        let fs = FaultyFs::default();
        let mut log = open(&dir, &fs, 1 << 20, SyncPolicy::Never);
        log.append(&put(1, "one")).unwrap();
        fs.faults.disk_full_after(10);
        fs.faults.fail_set_len(true);
        assert!(log.append(&put(2, "two")).is_err());
        fs.faults.disk_ok();
        fs.faults.fail_set_len(false);
        let err = log.append(&put(3, "three")).unwrap_err();
        assert!(err.to_string().contains("unusable"), "{err}");
        drop(log);
        // The torn record is at the tail, so replay cuts it off.
        let rec = recover::recover(&dir, false).unwrap();
        assert_eq!(rec.jobs.keys().copied().collect::<Vec<_>>(), [1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disk_full_while_rotating_leaves_no_half_made_segment() {
        let dir = test_dir("rotfull");
        let fs = FaultyFs::default();
        let mut log = open(&dir, &fs, 200, SyncPolicy::Never);
        log.append(&put(1, &"a".repeat(100))).unwrap();
        // The next record needs a new segment; its header does not fit.
        fs.faults.disk_full_after(5);
        assert!(log.append(&put(2, &"b".repeat(100))).is_err());
        assert_eq!(segment::list(&dir).unwrap(), [1]);
        fs.faults.disk_ok();
        assert_eq!(log.append(&put(3, &"c".repeat(100))).unwrap(), 2);
        drop(log);
        let rec = recover::recover(&dir, false).unwrap();
        assert_eq!(rec.jobs.keys().copied().collect::<Vec<_>>(), [1, 3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn fsync_failure_fails_waiters_and_every_later_write() {
        let dir = test_dir("fsyncfail");
        let fs = FaultyFs::default();
        let mut log = open(&dir, &fs, 1 << 20, SyncPolicy::Every(Duration::ZERO));
        let sync = log.sync_handle();
        log.append(&put(1, "one")).unwrap();
        sync.wait_synced(log.position()).await.unwrap();
        fs.faults.fail_syncs(true);
        log.append(&put(2, "two")).unwrap();
        let err = sync.wait_synced(log.position()).await.unwrap_err();
        assert!(err.to_string().contains("fsync"), "{err}");
        // The fault is gone, but durability is not trusted again.
        fs.faults.fail_syncs(false);
        let err = log.append(&put(3, "three")).unwrap_err();
        assert!(err.to_string().contains("fsync failed"), "{err}");
        assert!(sync.wait_synced(log.position()).await.is_err());
        assert!(sync.failure().is_some());
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Inline syncing on the single-threaded runtime.
    #[tokio::test]
    async fn concurrent_waiters_share_one_fsync() {
        waiters_share_fsyncs("group").await;
    }

    /// The syncer thread, with `--threads` > 1.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_waiters_share_one_fsync_of_the_syncer_thread() {
        waiters_share_fsyncs("group-mt").await;
    }

    async fn waiters_share_fsyncs(name: &str) {
        let dir = test_dir(name);
        let fs = FaultyFs::default();
        let mut log = open(&dir, &fs, 1 << 20, SyncPolicy::Every(Duration::ZERO));
        let sync = log.sync_handle();
        let base = fs.faults.syncs();
        // Every record is appended before any waiter starts: on the
        // multi-threaded runtime a waiter spawned mid-way would start at once
        // and could get a sync of its own, which made the count a race.
        let positions: Vec<u64> = (1..=50)
            .map(|id| {
                log.append(&put(id, "x")).unwrap();
                log.position()
            })
            .collect();
        let mut waits = Vec::new();
        for pos in positions {
            let sync = sync.clone();
            waits.push(tokio::spawn(async move { sync.wait_synced(pos).await }));
        }
        for w in waits {
            w.await.unwrap().unwrap();
        }
        let syncs = fs.faults.syncs() - base;
        assert!((1..=3).contains(&syncs), "{syncs} fsyncs for 50 waiters");
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn interval_policy_syncs_on_a_timer_without_waiters() {
        let dir = test_dir("interval");
        let fs = FaultyFs::default();
        let mut log = open(
            &dir,
            &fs,
            1 << 20,
            SyncPolicy::Every(Duration::from_millis(10)),
        );
        let base = fs.faults.syncs();
        log.append(&put(1, "one")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while fs.faults.syncs() == base {
            assert!(std::time::Instant::now() < deadline, "no timed fsync");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Nothing new written: no more fsyncs.
        std::thread::sleep(Duration::from_millis(50));
        let settled = fs.faults.syncs();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(fs.faults.syncs(), settled);
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_is_used_by_one_log_at_a_time() {
        let dir = test_dir("lock");
        let log = open_with(Arc::new(RealFs), &dir, 1024, SyncPolicy::Never, false).unwrap();
        let err = open_with(Arc::new(RealFs), &dir, 1024, SyncPolicy::Never, false).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("lock") && msg.contains("another server"),
            "{msg}"
        );
        drop(log);
        open_with(Arc::new(RealFs), &dir, 1024, SyncPolicy::Never, false).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unusable_directories_are_refused_with_their_name() {
        let dir = test_dir("unusable");
        let missing = dir.join("missing");
        let err = crate::binlog::open(&missing, 1024, SyncPolicy::Never, false).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = crate::binlog::open(&file, 1024, SyncPolicy::Never, false).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A log whose first segment holds no live job any more: every job in
    /// it was moved (a later full record, as compaction writes) and released.
    fn log_with_a_dead_first_segment(name: &str) -> (PathBuf, FaultyFs, Binlog) {
        let dir = test_dir(name);
        let fs = FaultyFs::default();
        let mut log = open(&dir, &fs, 1024, SyncPolicy::Every(Duration::ZERO));
        let mut first = Vec::new();
        let mut id = 1;
        while log.stats().current_index == 1 {
            if log.append(&put(id, "some body")).unwrap() == 1 {
                first.push(id);
            }
            id += 1;
        }
        for &id in &first {
            assert_ne!(log.append(&put(id, "some body")).unwrap(), 1);
            log.release(1, 0);
        }
        (dir, fs, log)
    }

    #[test]
    fn a_segment_is_deleted_only_once_the_moved_jobs_are_synced() {
        let (dir, fs, mut log) = log_with_a_dead_first_segment("gc-sync");
        let syncs = fs.faults.syncs();
        assert_eq!(log.collect_garbage(usize::MAX), 1);
        assert!(
            fs.faults.syncs() > syncs,
            "deleted without syncing the moved jobs"
        );
        assert!(!segment::path(&dir, 1).exists());

        // If that sync fails, the old copies stay.
        let (dir, fs, mut log) = log_with_a_dead_first_segment("gc-sync-fails");
        fs.faults.fail_syncs(true);
        assert_eq!(log.collect_garbage(usize::MAX), 0);
        assert!(segment::path(&dir, 1).exists());
    }
}
