//! A segment for `-f 0`, written with direct I/O: records collect in memory
//! and reach the disk when the log is synced, in one `O_DIRECT | O_DSYNC`
//! write of the blocks they touch.
//!
//! Under `-f 0` no reply goes out before its record is synced, so the page
//! cache buys nothing there, and it costs: `fdatasync` of a page-cache
//! segment also commits the file system's journal whenever the write landed
//! on reserved (fallocated, not yet written) blocks. On the 2-core VM of
//! bench/README.md a sync of ~8 KiB took 250-300 µs that way under load,
//! against 100-140 µs for a direct write onto written blocks. So the
//! segment's space is reserved with `fallocate` as before, and zeros are
//! written ahead of the records a step at a time ([`ZERO_STEP`]); records
//! then overwrite written blocks and need no journal commit.
//!
//! Invariants: `pending` holds the segment's bytes from `base` (a block
//! boundary) to its end; everything before `base` is on disk. The partial
//! block at the end stays in `pending` after a sync, so the next sync
//! rewrites it whole. Syncs are serialized (the `disk` lock, always taken
//! before `tail`); appends may run during one. A failed write leaves the
//! disk in an unknown state past what was synced, so it breaks the segment:
//! every later call fails and the writer stops the log, as after a failed
//! fsync. A record that would end past the reserve extends the reserve
//! first, so a full disk fails that record alone, as with a mapped segment.
//!
//! What a kill -9 loses: records not yet synced. Under `-f 0` none of them
//! has been acknowledged; reads (a `reserve` of a job whose put is still
//! being synced) may have seen them, as they may after a power cut with any
//! page-cache log. Closing a segment does not write them either (an orderly
//! shutdown syncs first). Compaction syncs before it deletes a segment (see
//! `Binlog::collect_garbage`), so moved jobs are on disk first.

use super::fs::{RealFs, SegmentFile, Storage};
use super::mapped::reserve;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Direct I/O alignment (offsets, lengths and buffer addresses): a multiple
/// of the usual logical block sizes (512 B, 4 KiB). Where a device needs
/// more, the first write at creation fails and the segment is mapped.
const BLOCK: usize = 4096;

/// Zeros are written this far ahead of the records, a step at a time.
const ZERO_STEP: u64 = 1 << 20;

/// Unsynced bytes past which an append writes them all out at once, so a
/// long stretch without syncs (a compaction burst) cannot grow memory.
const MAX_PENDING: usize = 8 << 20;

/// Capacity the unsynced-records buffer keeps after a sync (more is given
/// back once a burst is written).
const KEPT_CAPACITY: usize = 256 << 10;

/// Segments written with direct I/O where the file system allows it (the
/// storage of `-f 0`); elsewhere (no `O_DIRECT` or no fallocate) as
/// [`RealFs`] does.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirectFs;

impl Storage for DirectFs {
    fn create(&self, path: &Path, reserve: u64) -> io::Result<Box<dyn SegmentFile>> {
        create_or_fall_back(path, reserve, DirectFile::new)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
}

/// Creates the segment at `path` with `direct` (the seam for tests), or the
/// page-cache way where that fails.
fn create_or_fall_back(
    path: &Path,
    reserve: u64,
    direct: impl FnOnce(File, &Path, u64) -> io::Result<DirectFile>,
) -> io::Result<Box<dyn SegmentFile>> {
    if reserve == 0 {
        return RealFs.create(path, reserve);
    }
    // Errors creating the file (it exists, no room) are the caller's.
    let plain = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)?;
    match direct(plain, path, reserve) {
        Ok(file) => Ok(Box::new(file)),
        Err(e) => {
            tracing::debug!("{}: no direct I/O ({e}); mapping", path.display());
            // Ours, just created: start again the page-cache way.
            std::fs::remove_file(path)?;
            RealFs.create(path, reserve)
        }
    }
}

/// A handle to a direct-I/O segment; clones share the same file and buffer.
#[derive(Debug)]
pub struct DirectFile {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Opened `O_DIRECT | O_DSYNC`: a write returns once it is on disk.
    direct: File,
    /// A plain handle, to extend the reserve and trim it on close.
    plain: File,
    /// Bytes first reserved; zeros are written ahead only inside them.
    cap: u64,
    tail: Mutex<Tail>,
    /// Held for the whole of a sync (and of a cut): one at a time, in order.
    disk: Mutex<Disk>,
}

#[derive(Debug)]
struct Tail {
    /// File offset of `pending[0]`, a multiple of [`BLOCK`].
    base: u64,
    pending: Vec<u8>,
    /// Bytes of the segment known to be on disk.
    synced: u64,
    /// Bytes reserved with fallocate (`cap`, or more for a record past it).
    reserved: u64,
    /// A write failed: what is on disk past `synced` is unknown.
    broken: bool,
}

impl Tail {
    fn len(&self) -> u64 {
        self.base + self.pending.len() as u64
    }

    fn check(&self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("an earlier write to this segment failed"));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Disk {
    /// Aligned staging memory for the writes.
    staging: Aligned,
    /// Zeros are on disk from the records' end up to here.
    zeroed_to: u64,
}

impl DirectFile {
    /// Takes over `plain`, the newly created, empty segment at `path`, and
    /// reserves `cap` bytes for it.
    fn new(plain: File, path: &Path, cap: u64) -> io::Result<DirectFile> {
        reserve(&plain, 0, cap)?;
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)?;
        let file = DirectFile {
            shared: Arc::new(Shared {
                direct,
                plain,
                cap,
                tail: Mutex::new(Tail {
                    base: 0,
                    pending: Vec::new(),
                    synced: 0,
                    reserved: cap,
                    broken: false,
                }),
                disk: Mutex::new(Disk::default()),
            }),
        };
        // Also proves that this file system takes our direct writes.
        file.shared.zero_ahead(&mut file.shared.disk(), 0)?;
        Ok(file)
    }
}

impl Shared {
    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes every pending byte (the last block padded with zeros) and
    /// drops the full blocks from memory. The caller holds `disk`.
    fn flush(&self, disk: &mut Disk) -> io::Result<()> {
        let tail = self.tail();
        tail.check()?;
        if tail.len() == tail.synced {
            return Ok(());
        }
        let (base, end, n) = (tail.base, tail.len(), tail.pending.len());
        let out = disk.staging.get(n.next_multiple_of(BLOCK));
        out[..n].copy_from_slice(&tail.pending);
        out[n..].fill(0);
        // Appends go on during the write; `out` is our copy.
        drop(tail);
        if let Err(e) = self.direct.write_all_at(out, base) {
            self.tail().broken = true;
            return Err(e);
        }
        {
            // Nothing cut `pending` meanwhile: cuts take `disk` too.
            let mut tail = self.tail();
            tail.synced = end;
            let keep_from = end / BLOCK as u64 * BLOCK as u64;
            let written = (keep_from - tail.base) as usize;
            tail.pending.drain(..written);
            tail.base = keep_from;
            if tail.pending.capacity() > KEPT_CAPACITY {
                // A burst is over: hold no more than a usual sync needs.
                tail.pending.shrink_to(KEPT_CAPACITY);
            }
        }
        if let Err(e) = self.zero_ahead(disk, end) {
            self.tail().broken = true;
            return Err(e);
        }
        disk.staging.shrink(ZERO_STEP as usize + BLOCK);
        Ok(())
    }

    /// Keeps at least half a [`ZERO_STEP`] of written zeros past `end`,
    /// inside the first reserve.
    fn zero_ahead(&self, disk: &mut Disk, end: u64) -> io::Result<()> {
        let limit = self.cap / BLOCK as u64 * BLOCK as u64;
        let from = disk.zeroed_to.max(end.next_multiple_of(BLOCK as u64));
        if from >= limit || from >= end + ZERO_STEP / 2 {
            return Ok(());
        }
        let to = (from + ZERO_STEP).min(limit);
        let zeros = disk.staging.get((to - from) as usize);
        zeros.fill(0);
        self.direct.write_all_at(zeros, from)?;
        disk.zeroed_to = to;
        Ok(())
    }
}

impl SegmentFile for DirectFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let over = {
            let mut tail = self.shared.tail();
            tail.check()?;
            let end = tail.len() + buf.len() as u64;
            if end > tail.reserved {
                reserve(&self.shared.plain, tail.reserved, end - tail.reserved)?;
                tail.reserved = end;
            }
            tail.pending.extend_from_slice(buf);
            tail.pending.len() > MAX_PENDING
        };
        if over {
            self.shared.flush(&mut self.shared.disk())?;
        }
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let _disk = self.shared.disk();
        let mut tail = self.shared.tail();
        tail.check()?;
        if len < tail.synced {
            return Err(io::Error::other(
                "cannot cut a direct-I/O segment below what is on disk",
            ));
        }
        let keep = (len - tail.base) as usize;
        tail.pending.truncate(keep);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.shared.flush(&mut self.shared.disk())
    }

    fn try_clone(&self) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(DirectFile {
            shared: self.shared.clone(),
        }))
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The file keeps what was synced; the unused reserve and the padding
        // of the last block are cut off (zeros read as the end of the log
        // either way). Once per segment.
        let synced = self
            .tail
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .synced;
        if let Err(e) = self.plain.set_len(synced) {
            tracing::warn!("cannot trim a binlog segment's reserved space: {e}");
        }
    }
}

/// Memory aligned to [`BLOCK`], from a `Vec` with room to slide in (no
/// unsafe code needed).
#[derive(Debug, Default)]
struct Aligned {
    buf: Vec<u8>,
}

impl Aligned {
    /// `len` aligned bytes (contents unspecified).
    fn get(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() < len + BLOCK {
            self.buf = vec![0; len + BLOCK];
        }
        let off = self.buf.as_ptr().align_offset(BLOCK);
        &mut self.buf[off..off + len]
    }

    /// Lets go of the memory if it holds more than `keep` bytes.
    fn shrink(&mut self, keep: usize) {
        if self.buf.len() > keep {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A test's directory, removed when the test ends.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A new segment of `cap` bytes with direct I/O, in a directory whose
    /// file system takes `O_DIRECT` (older kernels' tmpfs refuses it);
    /// `None` where none does. Once `O_DIRECT` opens, any failure is a bug.
    fn segment(name: &str, cap: u64) -> Option<(Scratch, PathBuf, DirectFile)> {
        for parent in [PathBuf::from("/var/tmp"), std::env::temp_dir()] {
            let dir = parent.join(format!("stalkd-direct-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            let scratch = Scratch(dir.clone());
            let path = dir.join("seg");
            let probe = OpenOptions::new()
                .create_new(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path);
            if probe.is_err() {
                continue;
            }
            std::fs::remove_file(&path).unwrap();
            let plain = OpenOptions::new()
                .create_new(true)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let file = DirectFile::new(plain, &path, cap).expect("a direct-I/O segment");
            return Some((scratch, path, file));
        }
        eprintln!("no file system here takes O_DIRECT; skipped");
        None
    }

    fn on_disk(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn zeroed_to(file: &DirectFile) -> u64 {
        file.shared.disk().zeroed_to
    }

    #[test]
    fn records_reach_the_file_when_synced() {
        let Some((_dir, path, mut f)) = segment("sync", 64 << 10) else {
            return;
        };
        f.write_all(b"hello ").unwrap();
        f.write_all(b"world").unwrap();
        let before = on_disk(&path);
        assert_eq!(before.len(), 64 << 10, "reserved");
        assert!(
            before.iter().all(|&b| b == 0),
            "nothing written before a sync"
        );
        f.sync_data().unwrap();
        let after = on_disk(&path);
        assert_eq!(&after[..11], b"hello world");
        assert!(after[11..].iter().all(|&b| b == 0), "zeros read as the end");
    }

    #[test]
    fn every_sync_rewrites_the_last_block_whole() {
        let Some((_dir, path, mut f)) = segment("blocks", 1 << 20) else {
            return;
        };
        let mut expect = Vec::new();
        // Records of awkward sizes, some longer than a block, synced at
        // uneven moments: every byte lands once, in order.
        for i in 0..300usize {
            let record = vec![b'a' + (i % 26) as u8; 1 + i * 37 % 5000];
            f.write_all(&record).unwrap();
            expect.extend_from_slice(&record);
            if i % 3 != 0 {
                f.sync_data().unwrap();
                assert_eq!(
                    &on_disk(&path)[..expect.len()],
                    &expect[..],
                    "after record {i}"
                );
            }
        }
        f.sync_data().unwrap();
        let tail = f.shared.tail();
        assert!(tail.pending.len() < BLOCK, "only the partial block stays");
        assert_eq!(tail.len(), expect.len() as u64);
        assert_eq!(tail.synced, expect.len() as u64);
    }

    #[test]
    fn a_clone_syncs_what_the_original_appended() {
        let Some((_dir, path, mut f)) = segment("clone", 64 << 10) else {
            return;
        };
        let clone = f.try_clone().unwrap();
        f.write_all(b"from the writer").unwrap();
        clone.sync_data().unwrap();
        assert_eq!(&on_disk(&path)[..15], b"from the writer");
    }

    #[test]
    fn closing_keeps_what_was_synced_and_trims_the_reserve() {
        let Some((_dir, path, mut f)) = segment("close", 64 << 10) else {
            return;
        };
        let clone = f.try_clone().unwrap();
        f.write_all(b"synced").unwrap();
        f.sync_data().unwrap();
        f.write_all(b", not acknowledged").unwrap();
        drop(f);
        assert_eq!(on_disk(&path).len(), 64 << 10, "a clone keeps it open");
        drop(clone);
        // As after a kill: what no sync covered was never acknowledged.
        assert_eq!(on_disk(&path), b"synced");
    }

    #[test]
    fn a_record_past_the_reserve_extends_it_first() {
        // A reserve that is not a whole number of blocks, as `-s` allows.
        let Some((_dir, path, mut f)) = segment("extend", 10_000) else {
            return;
        };
        assert_eq!(zeroed_to(&f), 8192, "zeros stay inside the reserve");
        let big = vec![b'x'; 12_000];
        f.write_all(&big).unwrap();
        assert!(
            on_disk(&path).len() >= 12_000,
            "reserved before it is written"
        );
        f.write_all(b"after").unwrap();
        f.sync_data().unwrap();
        assert_eq!(zeroed_to(&f), 8192);
        drop(f);
        let disk = on_disk(&path);
        assert_eq!(disk.len(), 12_005);
        assert_eq!(&disk[..12_000], &big[..]);
        assert_eq!(&disk[12_000..], b"after");
    }

    #[test]
    fn a_failed_write_breaks_the_segment() {
        let Some((_dir, path, mut f)) = segment("broken", 64 << 10) else {
            return;
        };
        f.write_all(b"kept").unwrap();
        f.sync_data().unwrap();
        // The next write fails: the descriptor cannot write any more.
        Arc::get_mut(&mut f.shared).unwrap().direct = File::open(&path).unwrap();
        f.write_all(b" lost").unwrap();
        assert!(f.sync_data().is_err());
        // Nothing is known about the disk past the sync: refuse everything.
        assert!(f.sync_data().is_err());
        assert!(f.write_all(b"more").is_err());
        assert!(f.set_len(4).is_err());
        drop(f);
        assert_eq!(on_disk(&path), b"kept");
    }

    #[test]
    fn zeros_are_written_ahead_of_the_records_a_step_at_a_time() {
        let Some((_dir, _path, mut f)) = segment("zeros", 4 * ZERO_STEP) else {
            return;
        };
        assert_eq!(zeroed_to(&f), ZERO_STEP, "the first step at creation");
        let half = vec![1u8; (ZERO_STEP / 2) as usize - 1];
        f.write_all(&half).unwrap();
        f.sync_data().unwrap();
        assert_eq!(zeroed_to(&f), ZERO_STEP, "still half a step ahead");
        f.write_all(&[1, 1]).unwrap();
        f.sync_data().unwrap();
        assert_eq!(zeroed_to(&f), 2 * ZERO_STEP);
        // Never past the reserve.
        f.write_all(&vec![1u8; 3 * ZERO_STEP as usize]).unwrap();
        f.sync_data().unwrap();
        assert_eq!(zeroed_to(&f), 4 * ZERO_STEP);
    }

    #[test]
    fn a_long_run_without_syncs_is_written_out_as_it_grows() {
        let Some((_dir, path, mut f)) = segment("backlog", 16 << 20) else {
            return;
        };
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..(MAX_PENDING >> 20) + 1 {
            f.write_all(&chunk).unwrap();
        }
        assert!(f.shared.tail().pending.len() < BLOCK);
        let disk = on_disk(&path);
        assert!(disk[..MAX_PENDING].iter().all(|&b| b == 7));
    }

    #[test]
    fn set_len_cuts_only_what_is_not_on_disk() {
        let Some((_dir, path, mut f)) = segment("cut", 64 << 10) else {
            return;
        };
        f.write_all(b"kept").unwrap();
        f.sync_data().unwrap();
        f.write_all(b" torn").unwrap();
        f.set_len(4).unwrap();
        assert!(f.set_len(3).is_err(), "synced bytes stay");
        f.write_all(b"!").unwrap();
        f.sync_data().unwrap();
        assert_eq!(&on_disk(&path)[..6], b"kept!\0");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(usize),
        Sync,
        SyncThroughClone,
        /// Cut back by this many unsynced bytes (at most what there is).
        Cut(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1usize..6000).prop_map(Op::Append),
            2 => Just(Op::Sync),
            1 => Just(Op::SyncThroughClone),
            1 => (0usize..3000).prop_map(Op::Cut),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(32),
            failure_persistence: None,
            ..Default::default()
        })]

        /// Any mix of appends, syncs (from either handle) and cuts, with
        /// reserves that are and are not whole blocks and records that run
        /// past them: after each sync the file holds exactly what was
        /// appended, followed by zeros; after closing, exactly what was synced.
        #[test]
        fn the_file_holds_what_was_synced(
            cap in proptest::sample::select(vec![8192u64, 10_000, 65_536]),
            ops in proptest::collection::vec(op(), 1..40),
        ) {
            let Some((_dir, path, mut f)) = segment("model", cap) else {
                return Ok(());
            };
            let clone = f.try_clone().unwrap();
            let mut expect: Vec<u8> = Vec::new();
            let mut synced = 0;
            for (i, op) in ops.iter().enumerate() {
                match *op {
                    Op::Append(n) => {
                        let record: Vec<u8> = (0..n).map(|k| (i * 31 + k) as u8 | 1).collect();
                        f.write_all(&record).unwrap();
                        expect.extend_from_slice(&record);
                    }
                    Op::Sync | Op::SyncThroughClone => {
                        if matches!(op, Op::Sync) {
                            f.sync_data().unwrap();
                        } else {
                            clone.sync_data().unwrap();
                        }
                        synced = expect.len();
                        let disk = on_disk(&path);
                        proptest::prop_assert_eq!(&disk[..synced], &expect[..]);
                        let pad = synced.next_multiple_of(BLOCK).min(disk.len());
                        proptest::prop_assert!(disk[synced..pad].iter().all(|&b| b == 0));
                    }
                    Op::Cut(n) => {
                        let to = expect.len() - n.min(expect.len() - synced);
                        f.set_len(to as u64).unwrap();
                        expect.truncate(to);
                    }
                }
            }
            drop(f);
            drop(clone);
            proptest::prop_assert_eq!(on_disk(&path), expect[..synced].to_vec());
        }
    }

    #[test]
    fn where_direct_io_fails_the_segment_is_mapped() {
        let dir = crate::binlog::test_dir("direct-fallback");
        let path = dir.join("seg");
        let refuse = |_: File, _: &Path, _: u64| -> io::Result<DirectFile> {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        };
        let mut f = create_or_fall_back(&path, 4096, refuse).unwrap();
        f.write_all(b"mapped").unwrap();
        // A page-cache segment: the bytes are in the file before any sync.
        assert_eq!(&on_disk(&path)[..6], b"mapped");
        drop(f);
        assert_eq!(on_disk(&path), b"mapped");
        // A file that is already there is not ours to replace.
        assert!(create_or_fall_back(&path, 4096, refuse).is_err());
        assert_eq!(on_disk(&path), b"mapped");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_burst_gives_its_memory_back_once_written() {
        let Some((_dir, _path, mut f)) = segment("shrink", 16 << 20) else {
            return;
        };
        f.write_all(&vec![3u8; 4 << 20]).unwrap();
        f.sync_data().unwrap();
        assert!(f.shared.tail().pending.capacity() <= KEPT_CAPACITY);
        assert!(f.shared.disk().staging.buf.len() <= ZERO_STEP as usize + BLOCK);
    }
}
