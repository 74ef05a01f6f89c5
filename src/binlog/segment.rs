//! Segment files and the binlog directory.
//!
//! A directory holds `lock` (an exclusive flock for the server's lifetime, so
//! two servers never share a log) and segments `binlog.N`, N = 1, 2, ... in
//! write order. Each segment starts with a header: the magic `STALKDB\x01`, a
//! format version (u32 LE) and the next job id at the time it was created (u64
//! LE), so ids never restart even when every older segment is deleted.

use super::fs::{SegmentFile, Storage};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"STALKDB\x01";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 20;

/// Path of segment `seq` in `dir`.
pub fn path(dir: &Path, seq: u32) -> PathBuf {
    dir.join(format!("binlog.{seq}"))
}

/// Sequence numbers of the segments in `dir`, ascending.
pub fn list(dir: &Path) -> io::Result<Vec<u32>> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix("binlog.") {
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(seq) = n.parse() {
                    seqs.push(seq);
                }
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Creates segment `seq` with its header and returns it open for appending.
/// If the header cannot be written the file is removed again, so a later
/// attempt (after the disk has room) can create it.
pub fn create(
    fs: &dyn Storage,
    dir: &Path,
    seq: u32,
    next_job_id: u64,
    reserve: u64,
) -> io::Result<Box<dyn SegmentFile>> {
    let path = path(dir, seq);
    let mut file = fs.create(&path, reserve).map_err(|e| annotate(e, &path))?;
    if let Err(e) = file.write_all(&header(next_job_id)) {
        if let Err(e2) = fs.remove(&path) {
            tracing::warn!("cannot remove {}: {e2}", path.display());
        }
        return Err(annotate(e, &path));
    }
    Ok(file)
}

/// The header of a segment created when `next_job_id` was the next id.
pub fn header(next_job_id: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&next_job_id.to_le_bytes());
    header
}

/// Parses a segment header; returns the next job id it records.
pub fn parse_header(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < HEADER_LEN as usize || &bytes[..8] != MAGIC {
        return None;
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    if version != VERSION {
        return None;
    }
    Some(u64::from_le_bytes(bytes[12..20].try_into().ok()?))
}

/// Holds the directory's exclusive lock until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> io::Result<DirLock> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| annotate(e, &path))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot lock {}: {e} (is another server using this directory?)",
                    path.display()
                ),
            ));
        }
        Ok(DirLock { _file: file })
    }
}

pub fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
