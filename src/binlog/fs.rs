//! The few file-system operations the writer needs, behind a trait so tests
//! can inject faults (a short write, a full disk, a failing fsync).
//!
//! Production uses [`RealFs`]: segments written through a memory mapping
//! (`MappedFile`) where the file system can
//! reserve their space, plain appends otherwise. Recovery
//! reads with `std::fs` directly: it runs once, before any fault matters.
//! [`FaultyFs`] wraps the real file system and fails on demand; it is public
//! (but hidden) so integration tests can drive a whole server through it.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Creating, deleting and syncing segment files.
pub trait Storage: Send + Sync + Debug {
    /// Creates a new file (it must not exist) open for appending, with room
    /// for `reserve` bytes set aside if the storage can do that.
    fn create(&self, path: &Path, reserve: u64) -> io::Result<Box<dyn SegmentFile>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes directory entries (created and removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A segment open for appending.
pub trait SegmentFile: Send + Debug {
    /// Appends all of `buf`; on error a prefix of it may have been written.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes (undoing a partial append).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// fsync of the data (and the size needed to read it back).
    fn sync_data(&self) -> io::Result<()>;
    /// Another handle to the same open file.
    fn try_clone(&self) -> io::Result<Box<dyn SegmentFile>>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl Storage for RealFs {
    fn create(&self, path: &Path, reserve: u64) -> io::Result<Box<dyn SegmentFile>> {
        if reserve > 0 {
            let file = OpenOptions::new()
                .create_new(true)
                .read(true)
                .write(true)
                .open(path)?;
            match super::mapped::MappedFile::new(file, reserve) {
                Ok(mapped) => return Ok(Box::new(mapped)),
                Err(e) => {
                    // E.g. a file system without fallocate: appends still work.
                    tracing::debug!("{}: not mapped ({e}); appending", path.display());
                    let file = OpenOptions::new().append(true).open(path)?;
                    return Ok(Box::new(file));
                }
            }
        }
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        Ok(Box::new(file))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl SegmentFile for File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn try_clone(&self) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(File::try_clone(self)?))
    }
}

/// Which faults a [`FaultyFs`] injects right now; shared with the test.
#[derive(Debug, Default)]
pub struct Faults {
    /// Bytes that may still be written before the disk is "full" (`None`:
    /// unlimited). A write that does not fit writes what fits, then fails
    /// with ENOSPC: a short write followed by an error.
    space: Mutex<Option<u64>>,
    fail_sync: AtomicBool,
    fail_set_len: AtomicBool,
    /// File fsyncs that succeeded.
    syncs: AtomicU64,
}

impl Faults {
    /// The disk fills up after `bytes` more bytes.
    pub fn disk_full_after(&self, bytes: u64) {
        *self.space.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
    }

    /// The disk has room again.
    pub fn disk_ok(&self) {
        *self.space.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Every fsync (file or directory) fails with EIO while set.
    pub fn fail_syncs(&self, on: bool) {
        self.fail_sync.store(on, Ordering::SeqCst);
    }

    /// Truncation (the undo of a partial write) fails with EIO while set.
    pub fn fail_set_len(&self, on: bool) {
        self.fail_set_len.store(on, Ordering::SeqCst);
    }

    /// How many file fsyncs have succeeded.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    fn check_sync(&self) -> io::Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

/// The real file system with faults injected on demand (tests only).
#[doc(hidden)]
#[derive(Debug, Default, Clone)]
pub struct FaultyFs {
    pub faults: Arc<Faults>,
}

impl Storage for FaultyFs {
    fn create(&self, path: &Path, _reserve: u64) -> io::Result<Box<dyn SegmentFile>> {
        // Plain appends, so every write can be made to fail part-way.
        let inner = RealFs.create(path, 0)?;
        Ok(Box::new(FaultyFile {
            inner,
            faults: self.faults.clone(),
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.faults.check_sync()?;
        RealFs.sync_dir(dir)
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn SegmentFile>,
    faults: Arc<Faults>,
}

impl SegmentFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut space = self.faults.space.lock().unwrap_or_else(|e| e.into_inner());
        match space.as_mut() {
            Some(left) if (buf.len() as u64) > *left => {
                let fits = *left as usize;
                *left = 0;
                self.inner.write_all(&buf[..fits])?;
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            Some(left) => {
                *left -= buf.len() as u64;
                self.inner.write_all(buf)
            }
            None => self.inner.write_all(buf),
        }
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if self.faults.fail_set_len.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.check_sync()?;
        self.inner.sync_data()?;
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn try_clone(&self) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(FaultyFile {
            inner: self.inner.try_clone()?,
            faults: self.faults.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faulty_fs_short_write_then_enospc() {
        let dir = crate::binlog::test_dir("fs-short");
        let fs = FaultyFs::default();
        let path = dir.join("f");
        let mut f = fs.create(&path, 0).unwrap();
        f.write_all(b"abc").unwrap();
        fs.faults.disk_full_after(2);
        let e = f.write_all(b"defg").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(std::fs::read(&path).unwrap(), b"abcde");
        assert!(f.write_all(b"x").is_err(), "the disk stays full");
        f.set_len(3).unwrap();
        fs.faults.disk_ok();
        f.write_all(b"!").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc!");
        fs.faults.fail_syncs(true);
        assert!(f.sync_data().is_err());
        assert!(f.try_clone().unwrap().sync_data().is_err());
        assert!(fs.sync_dir(&dir).is_err());
        fs.faults.fail_syncs(false);
        f.sync_data().unwrap();
        assert!(fs.create(&path, 0).is_err(), "create never overwrites");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
