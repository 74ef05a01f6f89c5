//! Appending records, rotating segments, collecting dead ones, and syncing.
//!
//! Appends happen inline, under the engine lock, with one `write` per record:
//! once a command is answered its record is in the kernel, so killing the
//! server loses nothing acknowledged. Syncing to disk is the job of a syncer
//! thread: under `-f 0` sessions hold their replies until it reports their
//! bytes synced, and one fsync covers every session waiting at that moment
//! (group commit); under `-f N` it syncs at least every N ms on its own timer;
//! under `-F` it never runs.
//!
//! Space accounting: each live job holds the bytes of its latest full record
//! in one segment. Segments are deleted oldest first once no live job holds
//! them; when the log holds more than about twice the live bytes, the live
//! jobs of the oldest segment are rewritten at the head (compaction) so it can
//! go. Short records hold nothing, so release loops cannot pin the log.

use super::record::Record;
use super::segment;
use super::{Journal, JournalStats};
use crate::config::SyncPolicy;
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
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
    max_size: u64,
    policy: SyncPolicy,
    current: File,
    current_seq: u32,
    segments: BTreeMap<u32, SegmentUse>,
    next_job_id: u64,
    buf: BytesMut,
    records_written: u64,
    records_migrated: u64,
    /// Set after a write that could not be undone: every later append fails.
    broken: Option<String>,
    sync: Arc<SyncShared>,
}

/// State shared with the syncer thread and waiting sessions.
#[derive(Debug)]
pub struct SyncShared {
    policy: SyncPolicy,
    /// The file being appended to (a duplicate handle).
    file: Mutex<File>,
    /// Bytes appended since start, over all segments.
    written: AtomicU64,
    /// Highest `written` value a session is waiting for.
    requested: Mutex<u64>,
    wake: Condvar,
    /// (bytes synced, failed) as the syncer last saw them.
    synced: watch::Sender<SyncStatus>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStatus {
    pub synced: u64,
    pub failed: bool,
}

impl Binlog {
    /// Opens a log after recovery: a new segment is started for this run.
    pub fn open(
        dir: PathBuf,
        lock: segment::DirLock,
        max_size: u64,
        policy: SyncPolicy,
        existing: &[(u32, u64)],
        next_job_id: u64,
    ) -> io::Result<Binlog> {
        let current_seq = existing.last().map_or(1, |&(s, _)| s + 1);
        let current = segment::create(&dir, current_seq, next_job_id)?;
        if policy != SyncPolicy::Never {
            current.sync_all()?;
            segment::sync_dir(&dir)?;
        }
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
            file: Mutex::new(current.try_clone()?),
            written: AtomicU64::new(0),
            requested: Mutex::new(0),
            wake: Condvar::new(),
            synced,
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
            max_size,
            policy,
            current,
            current_seq,
            segments,
            next_job_id,
            buf: BytesMut::with_capacity(4096),
            records_written: 0,
            records_migrated: 0,
            broken: None,
            sync,
        })
    }

    /// The handle sessions use to wait for their records to be synced.
    pub fn sync_handle(&self) -> Arc<SyncShared> {
        self.sync.clone()
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.policy != SyncPolicy::Never {
            // The old segment must be durable before we stop tracking it.
            self.current.sync_data()?;
        }
        let seq = self.current_seq + 1;
        let file = segment::create(&self.dir, seq, self.next_job_id)?;
        if self.policy != SyncPolicy::Never {
            segment::sync_dir(&self.dir)?;
        }
        *self.sync.file.lock().unwrap_or_else(|e| e.into_inner()) = file.try_clone()?;
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
            // Cut a partial record off so the log stays readable; if even
            // that fails, refuse all further writes rather than corrupt it.
            let size = self.segments[&self.current_seq].size;
            if let Err(e2) = self.current.set_len(size) {
                self.broken = Some(format!("write failed ({e}) and could not be undone ({e2})"));
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

    fn live_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.live_bytes).sum()
    }
}

impl Journal for Binlog {
    fn append(&mut self, record: &Record) -> io::Result<u32> {
        if let Some(why) = &self.broken {
            return Err(io::Error::other(format!("binlog unusable: {why}")));
        }
        self.buf.clear();
        let size = record.encode(&mut self.buf) as u64;
        self.records_written += 1;
        if let Record::Put(job) = record {
            self.next_job_id = self.next_job_id.max(job.state.id + 1);
        }
        self.write_framed()?;
        if let Record::Put(_) = record {
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

    fn collect_garbage(&mut self) {
        while let Some((&head, use_)) = self.segments.first_key_value() {
            if head == self.current_seq || use_.live_jobs > 0 {
                break;
            }
            let path = segment::path(&self.dir, head);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("cannot delete {}: {e}", path.display());
                    break;
                }
            }
            self.segments.remove(&head);
            if self.policy != SyncPolicy::Never {
                // Deletions must land in order, or a resurrected old
                // segment could bring back deleted jobs after a crash.
                if let Err(e) = segment::sync_dir(&self.dir) {
                    tracing::warn!("cannot sync {}: {e}", self.dir.display());
                }
            }
        }
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
            self.current.sync_data()?;
        }
        Ok(())
    }
}

impl SyncShared {
    /// Whether replies must wait for the sync of their records.
    pub fn sync_before_reply(&self) -> bool {
        self.policy == SyncPolicy::Every(Duration::ZERO)
    }

    /// Waits until every byte up to `pos` is on disk. Errors if syncing failed.
    pub async fn wait_synced(&self, pos: u64) -> io::Result<()> {
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
        if status.failed {
            return Err(io::Error::other("binlog fsync failed"));
        }
        Ok(())
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
                    while *requested <= synced {
                        requested = self.wake.wait(requested).unwrap_or_else(|e| e.into_inner());
                    }
                } else {
                    let (_guard, _) = self
                        .wake
                        .wait_timeout(requested, interval)
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
            let target = self.written.load(Ordering::SeqCst);
            if target <= synced {
                continue;
            }
            let result = self
                .file
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sync_data();
            match result {
                Ok(()) => {
                    synced = target;
                    self.synced.send_replace(SyncStatus {
                        synced,
                        failed: false,
                    });
                }
                Err(e) => {
                    tracing::error!("binlog fsync failed: {e}; replies that need it will fail");
                    self.synced.send_replace(SyncStatus {
                        synced,
                        failed: true,
                    });
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}
