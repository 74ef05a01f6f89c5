//! Replay on start-up: rebuild every live job from the segments.
//!
//! Segments are read oldest first, records in order. The last segment may end
//! in a torn record (a crash mid-write): it is truncated away with a warning.
//! Any segment may end in zeros, the reserved space of a segment whose server
//! was killed before closing it: reading stops there.
//! A bad record anywhere else means the log was damaged after it was written;
//! that stops the start-up with the file and offset, unless the operator
//! asked to skip damage knowingly.

use super::record::{JobImage, Record};
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
            let unwritten =
                bytes.len() < segment::HEADER_LEN as usize || bytes.iter().all(|&b| b == 0);
            if is_last && unwritten {
                // Crashed while creating the file: nothing was ever acknowledged in it.
                tracing::warn!("{}: incomplete header, removing the file", path.display());
                std::fs::remove_file(&path).map_err(|e| segment::annotate(e, &path))?;
                continue;
            }
            let msg = format!(
                "{}: not a stalkd binlog segment (bad header at offset 0; start with \
                 --skip-corrupt-binlog to ignore this file)",
                path.display()
            );
            if skip_corrupt {
                tracing::error!("{msg}; skipping it");
                // Kept (and counted) so it is collected like any dead segment
                // and its number is never reused.
                out.segments.push((seq, bytes.len() as u64));
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
                Err(_) => {
                    // Zeros to the end are space reserved for the segment and
                    // never written (a server killed before closing it). A
                    // cut-short record (Truncated) is what a crash mid-write
                    // leaves; but a damaged length field looks the same, so
                    // that tail is only dropped if nothing valid follows.
                    let unused = bytes[pos..].iter().all(|&b| b == 0);
                    let torn_tail = !unused && is_last && tail_is_garbage(&bytes[pos..]);
                    if torn_tail {
                        tracing::warn!(
                            "{}: torn record at offset {pos} ({} bytes), truncating",
                            path.display(),
                            bytes.len() - pos
                        );
                    }
                    if unused || torn_tail {
                        let cut = || -> io::Result<()> {
                            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                            f.set_len(pos as u64)?;
                            f.sync_all()
                        };
                        cut().map_err(|e| segment::annotate(e, &path))?;
                        break;
                    }
                    let msg = format!(
                        "{}: corrupt record at offset {pos} (start with --skip-corrupt-binlog \
                         to drop the rest of this file)",
                        path.display()
                    );
                    if skip_corrupt {
                        tracing::error!("{msg}; skipping the rest of the file");
                        pos = bytes.len();
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
/// remains of a crash (a torn write, or zeros where the data never landed);
/// one followed by a good record is real damage. Only the first MiB after
/// the bad record is searched, which bounds start-up time.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binlog::writer::tests::put;
    use crate::binlog::{open, test_dir, Journal};
    use crate::config::SyncPolicy;
    use std::path::PathBuf;

    /// Writes jobs 1..=n (one segment per ~4 records) and closes the log.
    fn write_log(name: &str, n: u64) -> PathBuf {
        let dir = test_dir(name);
        let (mut log, _) = open(&dir, 300, SyncPolicy::Never, false).unwrap();
        for id in 1..=n {
            log.append(&put(id, "payload")).unwrap();
        }
        dir
    }

    fn ids(rec: &Recovered) -> Vec<u64> {
        rec.jobs.keys().copied().collect()
    }

    fn append_bytes(path: &Path, bytes: &[u8]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(bytes).unwrap();
    }

    fn encoded(r: &Record) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        r.encode(&mut buf);
        buf.to_vec()
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_what_precedes_it_is_kept() {
        let dir = write_log("torn", 10);
        let last = *segment::list(&dir).unwrap().last().unwrap();
        let path = segment::path(&dir, last);
        let good_len = std::fs::metadata(&path).unwrap().len();
        let record = encoded(&put(11, "torn away"));
        for cut in [1, 7, 8, 20, record.len() - 1] {
            append_bytes(&path, &record[..cut]);
            let rec = recover(&dir, false).unwrap();
            assert_eq!(ids(&rec), (1..=10).collect::<Vec<_>>(), "cut {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
            assert_eq!(rec.next_job_id, 11);
        }
        // Zeros (a crash after the size grew, before the data landed).
        append_bytes(&path, &[0; 100]);
        assert_eq!(ids(&recover(&dir, false).unwrap()).len(), 10);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        // A record cut short inside the reserved space, as a kill during the
        // copy into a mapped segment leaves it: torn bytes, then zeros.
        append_bytes(&path, &record[..20]);
        append_bytes(&path, &[0; 4096]);
        assert_eq!(ids(&recover(&dir, false).unwrap()).len(), 10);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reserved_zeros_end_any_segment_and_are_trimmed() {
        let dir = write_log("reserved-tail", 20);
        let seqs = segment::list(&dir).unwrap();
        assert!(seqs.len() >= 3, "{seqs:?}");
        // A segment closed by a crash keeps its reserved size.
        let middle = segment::path(&dir, seqs[1]);
        let len = std::fs::metadata(&middle).unwrap().len();
        append_bytes(&middle, &[0; 4096]);
        let rec = recover(&dir, false).unwrap();
        assert_eq!(ids(&rec), (1..=20).collect::<Vec<_>>());
        assert_eq!(std::fs::metadata(&middle).unwrap().len(), len);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corruption_in_the_middle_names_the_file_and_offset() {
        let dir = write_log("corrupt", 20);
        let seqs = segment::list(&dir).unwrap();
        assert!(seqs.len() >= 3, "{seqs:?}");
        let victim = segment::path(&dir, seqs[1]);
        let mut bytes = std::fs::read(&victim).unwrap();
        let first = Record::decode(&bytes[segment::HEADER_LEN as usize..])
            .unwrap()
            .1;
        let offset = segment::HEADER_LEN as usize + first;
        bytes[offset + 12] ^= 0xff; // inside the second record of the file
        std::fs::write(&victim, &bytes).unwrap();

        let err = recover(&dir, false).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(msg.contains(&victim.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("offset {offset}")), "{msg}");
        assert!(msg.contains("--skip-corrupt-binlog"), "{msg}");
        assert_eq!(std::fs::read(&victim).unwrap(), bytes, "nothing changed");

        let rec = recover(&dir, true).unwrap();
        let lost: Vec<u64> = (1..=20).filter(|id| !rec.jobs.contains_key(id)).collect();
        assert!(!lost.is_empty() && lost.len() < 5, "lost {lost:?}");
        assert!(rec.jobs.contains_key(&1) && rec.jobs.contains_key(&20));
        assert_eq!(rec.next_job_id, 21);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damage_followed_by_good_records_in_the_last_file_is_not_a_torn_tail() {
        let dir = write_log("lastdamage", 3);
        let last = *segment::list(&dir).unwrap().last().unwrap();
        let path = segment::path(&dir, last);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        append_bytes(&path, &[0xAB; 16]);
        append_bytes(&path, &encoded(&put(4, "after the damage")));
        let err = recover(&dir, false).unwrap_err();
        assert!(err.to_string().contains(&format!("offset {len}")), "{err}");
        // A damaged length field (the record seems to run past the end).
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(len);
        bytes.extend_from_slice(&encoded(&put(4, "length damaged")));
        bytes[len + 3] = 0x7f;
        bytes.extend_from_slice(&encoded(&put(5, "after the damage")));
        std::fs::write(&path, &bytes).unwrap();
        let err = recover(&dir, false).unwrap_err();
        assert!(err.to_string().contains(&format!("offset {len}")), "{err}");
        let rec = recover(&dir, true).unwrap();
        assert_eq!(ids(&rec), [1, 2, 3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_headers_are_refused_or_skipped_and_never_reused() {
        let dir = write_log("header", 4);
        let seqs = segment::list(&dir).unwrap();
        let next = seqs.last().unwrap() + 1;
        std::fs::write(segment::path(&dir, next), b"NOTALOG!garbage-garbage").unwrap();
        let err = recover(&dir, false).unwrap_err();
        assert!(err.to_string().contains("bad header"), "{err}");
        let (mut log, rec) = open(&dir, 300, SyncPolicy::Never, true).unwrap();
        assert_eq!(ids(&rec).len(), 4);
        // The new segment comes after the damaged one, which is kept until collected.
        assert_eq!(log.append(&Record::Delete(1)).unwrap(), next + 1);
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_half_created_last_segment_is_removed() {
        let dir = write_log("halfheader", 2);
        let next = segment::list(&dir).unwrap().last().unwrap() + 1;
        std::fs::write(segment::path(&dir, next), &segment::MAGIC[..5]).unwrap();
        let rec = recover(&dir, false).unwrap();
        assert_eq!(ids(&rec), [1, 2]);
        assert!(!segment::path(&dir, next).exists());
        std::fs::write(segment::path(&dir, next), [0u8; 40]).unwrap();
        assert_eq!(ids(&recover(&dir, false).unwrap()), [1, 2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ids_survive_even_when_every_job_is_gone() {
        let dir = test_dir("ids");
        let (mut log, _) = open(&dir, 300, SyncPolicy::Never, false).unwrap();
        for id in 1..=5 {
            log.append(&put(id, "x")).unwrap();
            log.append(&Record::Delete(id)).unwrap();
        }
        drop(log);
        // Each restart starts a segment whose header carries the next id;
        // the old ones hold no live job and are collected.
        for _ in 0..3 {
            let (mut log, rec) = open(&dir, 300, SyncPolicy::Never, false).unwrap();
            assert_eq!(rec.next_job_id, 6);
            assert!(rec.jobs.is_empty());
            log.collect_garbage(usize::MAX);
            assert_eq!(segment::list(&dir).unwrap().len(), 1);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
