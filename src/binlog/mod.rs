//! Durability: the write-ahead log behind `-b DIR`.
//!
//! The binlog knows records and files, not tubes or clients. The engine
//! reports each state change through the [`Journal`] trait *before* making it
//! visible, so a change that cannot be logged is refused with an error reply
//! instead of being acknowledged and lost. Byte format: see protocol.md.

mod direct;
pub mod fs;
mod mapped;
pub mod record;
pub mod recover;
pub mod segment;
pub mod writer;

pub use fs::{RealFs, Storage};
pub use record::{JobImage, JobState, Record};
pub use recover::{Recovered, RecoveredJob};
pub use writer::{Binlog, SyncShared};

use crate::config::SyncPolicy;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Counters for the `binlog-*` fields of `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub oldest_index: u32,
    pub current_index: u32,
    pub records_migrated: u64,
    pub records_written: u64,
}

/// Where the engine sends state changes that must survive a restart.
pub trait Journal: Send + std::fmt::Debug {
    /// Writes a record; returns the segment it went to.
    fn append(&mut self, record: &Record) -> io::Result<u32>;
    /// A job whose full record (`size` bytes) is in segment `file` died or moved.
    fn release(&mut self, file: u32, size: u64);
    /// Counts a recovered job's full record as live in `file`.
    fn adopt(&mut self, file: u32, size: u64);
    /// The oldest segment whose live jobs should be rewritten, if the log
    /// holds much more than the live data.
    fn compaction_candidate(&self) -> Option<u32>;
    fn note_migrated(&mut self, records: u64);
    /// Deletes the oldest segments that hold no live job, at most `limit`
    /// of them (each may cost an unlink and a directory fsync); returns how
    /// many it deleted.
    fn collect_garbage(&mut self, limit: usize) -> usize;
    /// Bytes appended so far (for waiting on a sync).
    fn position(&self) -> u64;
    fn stats(&self) -> JournalStats;
    /// Flushes to disk now (shutdown), unless the policy is never to sync.
    fn sync_now(&mut self) -> io::Result<()>;
}

/// Locks `dir`, replays it, and opens a fresh segment for this run.
pub fn open(
    dir: &Path,
    max_size: u64,
    policy: SyncPolicy,
    skip_corrupt: bool,
) -> io::Result<(Binlog, Recovered)> {
    // Under -f 0 every reply waits for its sync: direct writes are cheaper
    // there (see direct.rs); other policies rely on the page cache.
    let fs: Arc<dyn Storage> = if policy.syncs_before_reply() {
        Arc::new(direct::DirectFs)
    } else {
        Arc::new(RealFs)
    };
    open_with(fs, dir, max_size, policy, skip_corrupt)
}

/// [`open`] writing through `fs` (tests inject faults this way).
pub fn open_with(
    fs: Arc<dyn Storage>,
    dir: &Path,
    max_size: u64,
    policy: SyncPolicy,
    skip_corrupt: bool,
) -> io::Result<(Binlog, Recovered)> {
    let meta = std::fs::metadata(dir).map_err(|e| segment::annotate(e, dir))?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let lock = segment::DirLock::acquire(dir)?;
    let recovered = recover::recover(dir, skip_corrupt)?;
    let binlog = Binlog::open(
        fs,
        dir.to_path_buf(),
        lock,
        max_size,
        policy,
        &recovered.segments,
        recovered.next_job_id,
    )?;
    Ok((binlog, recovered))
}

/// A fresh, empty directory for a test.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "stalkd-unit-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}
