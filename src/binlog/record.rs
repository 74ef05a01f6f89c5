//! Record framing and payloads.
//!
//! Every record is `[len u32][crc32c u32][kind u8][payload]`, little-endian,
//! where `len` counts `kind` and `payload` and the checksum covers the same
//! bytes. A record that is cut short or whose checksum fails is detected on
//! read, so a torn write at the tail can never be mistaken for data.

use crate::engine::{JobCounts, State, Time};
use crate::protocol::{JobId, Priority, Seconds};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before the payload: len, crc, kind.
pub const FRAME_OVERHEAD: usize = 9;

/// Refuse to believe a length larger than this (max job + name + fields).
pub const MAX_RECORD: usize = (1 << 30) + 4096;

const KIND_PUT: u8 = 1;
const KIND_STATE: u8 = 2;
const KIND_DELETE: u8 = 3;

/// The durable part of a job's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub id: JobId,
    pub state: State,
    pub pri: Priority,
    pub delay: Seconds,
    /// Delayed: when it becomes ready (epoch-anchored engine time).
    pub deadline: Time,
    pub counts: JobCounts,
    /// Buried: the job's place in its tube's buried FIFO (ascending, never
    /// reused across restarts). 0 in every other state.
    pub bury_seq: u64,
}

/// A whole job: written on put and when compaction moves a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobImage {
    pub state: JobState,
    pub ttr: Seconds,
    pub created: Time,
    pub tube: String,
    /// Body with its trailing CRLF.
    pub body: Bytes,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Put(JobImage),
    State(JobState),
    Delete(JobId),
}

/// Why a record could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The buffer ends inside the record (a torn tail, or simply the end).
    Truncated,
    /// The bytes are all there but do not form a valid record.
    Corrupt,
}

impl Record {
    /// Appends the framed record to `out` and returns its framed size.
    pub fn encode(&self, out: &mut BytesMut) -> usize {
        let start = out.len();
        out.put_u32_le(0);
        out.put_u32_le(0);
        match self {
            Record::Put(job) => {
                out.put_u8(KIND_PUT);
                put_state(out, &job.state);
                out.put_u32_le(job.ttr);
                out.put_u64_le(job.created);
                out.put_u8(job.tube.len() as u8);
                out.put_slice(job.tube.as_bytes());
                out.put_u32_le(job.body.len() as u32);
                out.put_slice(&job.body);
            }
            Record::State(s) => {
                out.put_u8(KIND_STATE);
                put_state(out, s);
            }
            Record::Delete(id) => {
                out.put_u8(KIND_DELETE);
                out.put_u64_le(*id);
            }
        }
        let body = &out[start + 8..];
        let len = body.len() as u32;
        let crc = crc32c::crc32c(body);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        out.len() - start
    }

    /// Framed size of a put record for a job with this tube and body.
    pub fn put_size(tube_len: usize, body_len: usize) -> usize {
        FRAME_OVERHEAD + STATE_LEN + 4 + 8 + 1 + tube_len + 4 + body_len
    }

    /// Reads one record from the front of `buf`; returns it and its framed size.
    pub fn decode(buf: &[u8]) -> Result<(Record, usize), ReadError> {
        if buf.len() < 8 {
            return Err(ReadError::Truncated);
        }
        let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_RECORD {
            return Err(ReadError::Corrupt);
        }
        let Some(body) = buf.get(8..8 + len) else {
            return Err(ReadError::Truncated);
        };
        if crc32c::crc32c(body) != crc {
            return Err(ReadError::Corrupt);
        }
        let record = parse_payload(body).ok_or(ReadError::Corrupt)?;
        Ok((record, 8 + len))
    }
}

/// id, state, pri, delay, deadline, five counters, bury_seq.
const STATE_LEN: usize = 8 + 1 + 4 + 4 + 8 + 20 + 8;

fn put_state(out: &mut BytesMut, s: &JobState) {
    out.put_u64_le(s.id);
    out.put_u8(state_code(s.state));
    out.put_u32_le(s.pri);
    out.put_u32_le(s.delay);
    out.put_u64_le(s.deadline);
    let c = &s.counts;
    for n in [c.reserves, c.timeouts, c.releases, c.buries, c.kicks] {
        out.put_u32_le(n);
    }
    out.put_u64_le(s.bury_seq);
}

fn state_code(s: State) -> u8 {
    match s {
        State::Ready => 1,
        State::Reserved => 2,
        State::Buried => 3,
        State::Delayed => 4,
    }
}

fn parse_payload(mut b: &[u8]) -> Option<Record> {
    let kind = take_u8(&mut b)?;
    let record = match kind {
        KIND_PUT => {
            let state = take_state(&mut b)?;
            let ttr = take_u32(&mut b)?;
            let created = take_u64(&mut b)?;
            let tube_len = take_u8(&mut b)? as usize;
            let tube = std::str::from_utf8(take(&mut b, tube_len)?)
                .ok()?
                .to_string();
            let body_len = take_u32(&mut b)? as usize;
            let body = Bytes::copy_from_slice(take(&mut b, body_len)?);
            Record::Put(JobImage {
                state,
                ttr,
                created,
                tube,
                body,
            })
        }
        KIND_STATE => Record::State(take_state(&mut b)?),
        KIND_DELETE => Record::Delete(take_u64(&mut b)?),
        _ => return None,
    };
    // Every byte must be accounted for.
    b.is_empty().then_some(record)
}

fn take_state(b: &mut &[u8]) -> Option<JobState> {
    let id = take_u64(b)?;
    let state = match take_u8(b)? {
        1 => State::Ready,
        2 => State::Reserved,
        3 => State::Buried,
        4 => State::Delayed,
        _ => return None,
    };
    let pri = take_u32(b)?;
    let delay = take_u32(b)?;
    let deadline = take_u64(b)?;
    let counts = JobCounts {
        reserves: take_u32(b)?,
        timeouts: take_u32(b)?,
        releases: take_u32(b)?,
        buries: take_u32(b)?,
        kicks: take_u32(b)?,
    };
    let bury_seq = take_u64(b)?;
    Some(JobState {
        id,
        state,
        pri,
        delay,
        deadline,
        counts,
        bury_seq,
    })
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Some(head)
}

fn take_u8(b: &mut &[u8]) -> Option<u8> {
    take(b, 1).map(|mut s| s.get_u8())
}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    take(b, 4).map(|mut s| s.get_u32_le())
}

fn take_u64(b: &mut &[u8]) -> Option<u64> {
    take(b, 8).map(|mut s| s.get_u64_le())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let state = JobState {
            id: 42,
            state: State::Delayed,
            pri: 7,
            delay: 30,
            deadline: 123_456_789,
            counts: JobCounts {
                reserves: 1,
                timeouts: 2,
                releases: 3,
                buries: 4,
                kicks: 5,
            },
            bury_seq: 77,
        };
        vec![
            Record::Put(JobImage {
                state: state.clone(),
                ttr: 60,
                created: 99,
                tube: "emails".into(),
                body: Bytes::from_static(b"hello\r\n"),
            }),
            Record::State(state),
            Record::Delete(u64::MAX),
        ]
    }

    #[test]
    fn records_roundtrip_and_sizes_match() {
        for r in sample() {
            let mut buf = BytesMut::new();
            let n = r.encode(&mut buf);
            assert_eq!(n, buf.len());
            assert_eq!(Record::decode(&buf), Ok((r.clone(), n)));
            if let Record::Put(job) = &r {
                assert_eq!(Record::put_size(job.tube.len(), job.body.len()), n);
            }
        }
    }

    #[test]
    fn torn_and_corrupt_records_are_told_apart() {
        let mut buf = BytesMut::new();
        sample()[0].encode(&mut buf);
        for cut in 0..buf.len() {
            assert_eq!(
                Record::decode(&buf[..cut]),
                Err(ReadError::Truncated),
                "cut {cut}"
            );
        }
        for i in 8..buf.len() {
            let mut bad = buf.to_vec();
            bad[i] ^= 0x40;
            assert_eq!(Record::decode(&bad), Err(ReadError::Corrupt), "flip {i}");
        }
        assert_eq!(Record::decode(&[0u8; 16]), Err(ReadError::Corrupt));
    }
}
