//! A segment written through a shared memory mapping: appending a record is
//! a copy into the page cache, not a `write` system call.
//!
//! The pages belong to the kernel the moment they are written, so a record
//! survives the server being killed exactly as a `write` would, and
//! `fdatasync` on the file writes them to disk like any other dirty page.
//! The file's blocks are reserved with `fallocate` when it is created (as
//! beanstalkd reserves its binlog files), so a full disk shows up then, as an
//! error, and never as a fault while copying. Bytes past the mapping (a
//! record bigger than the segment's room) are appended with `pwrite`.
//!
//! Until the segment is closed the file is its full reserved size, the
//! unused part zero; closing cuts it to the bytes written. A crash leaves
//! the zeros, which recovery reads as the end of the log.
//!
//! What a mapping cannot survive: another process truncating the file under
//! it (the next copy would fault, SIGBUS) — the directory lock keeps other
//! stalkd servers out, and nothing else should write to a binlog.
//!
//! Safety: the mapping is private to this value (never lent out), written
//! only through `&mut self`, and unmapped exactly once, in `drop`. The file
//! is never shortened below the mapping while it exists.

use super::fs::SegmentFile;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

#[derive(Debug)]
pub struct MappedFile {
    file: File,
    map: *mut u8,
    /// Bytes mapped (and reserved on disk).
    cap: usize,
    /// Bytes written.
    len: usize,
    /// Bytes at the start whose pages were dropped from our mapping.
    dropped: usize,
}

/// Reserves `len` bytes of `file` from `from` (fallocate), so a full disk
/// shows up here and not when the bytes are written. Direct-I/O segments
/// reserve their space this way too.
pub(super) fn reserve(file: &File, from: u64, len: u64) -> io::Result<()> {
    let too_large = || io::Error::other("segment too large");
    let from = libc::off_t::try_from(from).map_err(|_| too_large())?;
    let len = libc::off_t::try_from(len).map_err(|_| too_large())?;
    // SAFETY: plain syscall on an fd the caller owns.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, from, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Written pages are dropped from the mapping in steps of this many bytes.
const DROP_STEP: usize = 1 << 20;

// SAFETY: the mapping is owned memory like a Box<[u8]>; nothing else holds
// a pointer into it, so moving the owner to another thread is sound.
unsafe impl Send for MappedFile {}

impl MappedFile {
    /// Reserves `cap` bytes for the empty, newly created `file` and maps them.
    pub fn new(file: File, cap: u64) -> io::Result<MappedFile> {
        let fd = file.as_raw_fd();
        reserve(&file, 0, cap)?;
        // SAFETY: a fresh shared mapping of `cap` bytes of our own file,
        // which now has at least that size; checked for MAP_FAILED below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            let _ = file.set_len(0);
            return Err(e);
        }
        Ok(MappedFile {
            file,
            map: map.cast(),
            cap: cap as usize,
            len: 0,
            dropped: 0,
        })
    }

    /// The mapped bytes from `from` to `to` (clamped to the mapping).
    fn mapped(&mut self, from: usize, to: usize) -> &mut [u8] {
        let (from, to) = (from.min(self.cap), to.min(self.cap));
        // SAFETY: `from..to` lies inside the live mapping, and `&mut self`
        // makes this the only reference to it.
        unsafe { std::slice::from_raw_parts_mut(self.map.add(from), to - from) }
    }
}

impl MappedFile {
    /// Written pages stay in the page cache (dirty until synced) but need
    /// not stay mapped: unmapping them keeps them out of the server's RSS,
    /// which would otherwise grow by the whole segment.
    fn drop_written_pages(&mut self) {
        let written = self.len.min(self.cap);
        if written.saturating_sub(self.dropped) < 2 * DROP_STEP {
            return;
        }
        // Keep the last step mapped: the next records go to its last page.
        let upto = (written - DROP_STEP) / DROP_STEP * DROP_STEP;
        // SAFETY: a page-aligned range inside our mapping (the mapping and
        // DROP_STEP are page-aligned). On a shared file mapping this only
        // removes our page-table entries; dirty pages stay in the page cache.
        let r = unsafe {
            libc::madvise(
                self.map.add(self.dropped).cast(),
                upto - self.dropped,
                libc::MADV_DONTNEED,
            )
        };
        if r == 0 {
            self.dropped = upto;
        }
    }
}

impl SegmentFile for MappedFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let start = self.len;
        let inside = self.cap.saturating_sub(start).min(buf.len());
        self.mapped(start, start + inside)
            .copy_from_slice(&buf[..inside]);
        if inside < buf.len() {
            let at = (start + inside) as u64;
            if let Err(e) = self.file.write_all_at(&buf[inside..], at) {
                self.len = start + inside;
                return Err(e);
            }
        }
        self.len = start + buf.len();
        self.drop_written_pages();
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = len as usize;
        if len < self.len {
            // Zeros read as the end of the log, as a cut file would.
            let end = self.len;
            self.mapped(len, end).fill(0);
            if end > self.cap {
                self.file.set_len(len.max(self.cap) as u64)?;
            }
        }
        self.len = len;
        // Cut-back pages were mapped again by the zeroing; count them so.
        self.dropped = self.dropped.min(len / DROP_STEP * DROP_STEP);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn try_clone(&self) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(self.file.try_clone()?))
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped only here.
        unsafe { libc::munmap(self.map.cast(), self.cap) };
        if self.len < self.cap {
            if let Err(e) = self.file.set_len(self.len as u64) {
                tracing::warn!("cannot trim a binlog segment's reserved space: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(name: &str) -> (std::path::PathBuf, File) {
        let dir = crate::binlog::test_dir(name);
        let path = dir.join("seg");
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (path, file)
    }

    #[test]
    fn appends_land_in_the_file_and_closing_trims_the_reserve() {
        let (path, file) = fresh("mapped-append");
        let mut m = MappedFile::new(file, 64).unwrap();
        m.write_all(b"hello ").unwrap();
        m.write_all(b"world").unwrap();
        // Visible to readers at once, before any sync: it is in the page cache.
        let now = std::fs::read(&path).unwrap();
        assert_eq!(now.len(), 64, "reserved");
        assert_eq!(&now[..11], b"hello world");
        assert!(now[11..].iter().all(|&b| b == 0));
        m.sync_data().unwrap();
        drop(m);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
    }

    #[test]
    fn a_record_past_the_reserve_is_written_beyond_it() {
        let (path, file) = fresh("mapped-overflow");
        let mut m = MappedFile::new(file, 8).unwrap();
        m.write_all(b"12345").unwrap();
        m.write_all(b"6789abcdef").unwrap();
        m.write_all(b"!").unwrap();
        drop(m);
        assert_eq!(std::fs::read(&path).unwrap(), b"123456789abcdef!");
    }

    #[test]
    fn dropped_pages_keep_their_data() {
        let (path, file) = fresh("mapped-drop");
        let mut m = MappedFile::new(file, 4 * DROP_STEP as u64).unwrap();
        let chunk: Vec<u8> = (0..=255).cycle().take(4093).collect();
        let mut expected = Vec::new();
        while expected.len() + chunk.len() <= 4 * DROP_STEP {
            m.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        assert!(m.dropped >= 2 * DROP_STEP, "{}", m.dropped);
        m.sync_data().unwrap();
        drop(m);
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    #[test]
    fn cutting_back_zeroes_the_cut_bytes() {
        let (path, file) = fresh("mapped-cut");
        let mut m = MappedFile::new(file, 16).unwrap();
        m.write_all(b"keep").unwrap();
        m.write_all(b"drop-this").unwrap();
        m.set_len(4).unwrap();
        assert!(std::fs::read(&path).unwrap()[4..].iter().all(|&b| b == 0));
        m.write_all(b"+more").unwrap();
        drop(m);
        assert_eq!(std::fs::read(&path).unwrap(), b"keep+more");
    }
}
