//! Replay on start-up: rebuild every live job from the segments.
//!
//! Segments are read oldest first, records in order. The last segment may end
//! in a torn record (a crash mid-write): it is truncated away with a warning.
//! A bad record anywhere else means the log was damaged after it was written;
//! that stops the start-up with the file and offset, unless the operator
//! asked to skip damage knowingly.

use super::record::{JobImage, ReadError, Record};
use super::segment;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;

/// A job rebuilt from the log.
#[derive(Debug, Clone)]
pub struct RecoveredJob {
    pub image: JobImage,
    /// Segment holding its latest full record.
    pub file: u32,
    /// Position of its latest state change in the log, to keep buried order.
    pub order: u64,
}

/// What the log says.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Live jobs by id.
    pub jobs: BTreeMap<u64, RecoveredJob>,
    /// Smallest id never handed out.
    pub next_job_id: u64,
    /// Existing segments and their sizes, ascending.
    pub segments: Vec<(u32, u64)>,
    pub records: u64,
}

pub fn recover(dir: &Path, skip_corrupt: bool) -> io::Result<Recovered> {
    let seqs = segment::list(dir)?;
    let mut out = Recovered {
        next_job_id: 1,
        ..Recovered::default()
    };
    let mut jobs: HashMap<u64, RecoveredJob> = HashMap::new();
    let mut order = 0u64;
    for (i, &seq) in seqs.iter().enumerate() {
        let path = segment::path(dir, seq);
        let bytes = std::fs::read(&path).map_err(|e| segment::annotate(e, &path))?;
        let is_last = i + 1 == seqs.len();
        let Some(next_id) = segment::parse_header(&bytes) else {
            if is_last && bytes.len() < segment::HEADER_LEN as usize {
                // Crashed while creating the file: nothing was ever acknowledged in it.
                tracing::warn!("{}: incomplete header, removing the file", path.display());
                std::fs::remove_file(&path).map_err(|e| segment::annotate(e, &path))?;
                continue;
            }
            let msg = format!(
                "{}: not a stalkd binlog segment (bad header)",
                path.display()
            );
            if skip_corrupt {
                tracing::error!("{msg}; skipping it");
                continue;
            }
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        };
        out.next_job_id = out.next_job_id.max(next_id);
        let mut pos = segment::HEADER_LEN as usize;
        while pos < bytes.len() {
            match Record::decode(&bytes[pos..]) {
                Ok((record, size)) => {
                    order += 1;
                    out.records += 1;
                    apply(&mut jobs, record, seq, order, &mut out.next_job_id);
                    pos += size;
                }
                Err(err) => {
                    let torn_tail =
                        is_last && (err == ReadError::Truncated || tail_is_garbage(&bytes[pos..]));
                    if torn_tail {
                        tracing::warn!(
                            "{}: torn record at offset {pos} ({} bytes), truncating",
                            path.display(),
                            bytes.len() - pos
                        );
                        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                        f.set_len(pos as u64)?;
                        f.sync_all()?;
                        break;
                    }
                    let msg = format!(
                        "{}: corrupt record at offset {pos} (start with the skip flag to drop the rest of this file)",
                        path.display()
                    );
                    if skip_corrupt {
                        tracing::error!("{msg}; skipping the rest of the file");
                        break;
                    }
                    return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
                }
            }
        }
        out.segments.push((seq, pos as u64));
    }
    out.jobs = jobs.into_iter().collect();
    Ok(out)
}

/// In the last segment a bad record with no valid record after it is the
/// remains of a crash; one followed by good records is real damage.
/// Only the first MiB after the bad record is searched, which bounds start-up time.
fn tail_is_garbage(rest: &[u8]) -> bool {
    let window = rest.len().min(1 << 20);
    (1..window).all(|off| Record::decode(&rest[off..]).is_err())
}

fn apply(
    jobs: &mut HashMap<u64, RecoveredJob>,
    record: Record,
    seq: u32,
    order: u64,
    next_id: &mut u64,
) {
    match record {
        Record::Put(image) => {
            *next_id = (*next_id).max(image.state.id + 1);
            jobs.insert(
                image.state.id,
                RecoveredJob {
                    image,
                    file: seq,
                    order,
                },
            );
        }
        Record::State(state) => {
            // A job whose full record was in a deleted segment is long gone.
            if let Some(job) = jobs.get_mut(&state.id) {
                job.image.state = state;
                job.order = order;
            }
        }
        Record::Delete(id) => {
            jobs.remove(&id);
        }
    }
}
