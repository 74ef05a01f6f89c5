//! Replies and their byte encoding: the only place the wire words live.
//!
//! Encoding appends to a caller-owned buffer so a session can gather every
//! reply of a pipelined batch and send them with one write.

use super::command::{JobId, TubeName};
use bytes::{BufMut, Bytes, BytesMut};

/// Everything the server can say to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Inserted(JobId),
    /// `put` stored the job but had to bury it.
    BuriedId(JobId),
    /// Answer to `bury` (and to a `release` that had to bury).
    Buried,
    /// `RESERVED <id> <bytes>`; `body` includes its trailing CRLF.
    Reserved {
        id: JobId,
        body: Bytes,
    },
    /// `FOUND <id> <bytes>`; `body` includes its trailing CRLF.
    Found {
        id: JobId,
        body: Bytes,
    },
    /// `OK <bytes>` followed by a YAML document (without the final CRLF).
    Ok(Bytes),
    Using(TubeName),
    Watching(usize),
    Kicked(u64),
    KickedJob,
    Deleted,
    Released,
    Touched,
    Paused,
    NotFound,
    NotIgnored,
    DeadlineSoon,
    TimedOut,
    JobTooBig,
    ExpectedCrlf,
    BadFormat,
    UnknownCommand,
    Draining,
    OutOfMemory,
    InternalError,
}

impl Reply {
    /// The reply's first line, without its CRLF (what `-VV` logs; a body
    /// that follows is left out).
    pub fn head(&self) -> String {
        let mut wire = BytesMut::new();
        // Only the line: a body (up to the job size limit, or a stats
        // document) is not copied just to be cut off.
        match self {
            Reply::Reserved { id, body } => {
                encode_body_header(&mut wire, b"RESERVED ", *id, body.len())
            }
            Reply::Found { id, body } => encode_body_header(&mut wire, b"FOUND ", *id, body.len()),
            Reply::Ok(yaml) => {
                wire.put_slice(b"OK ");
                put_number(&mut wire, yaml.len() as u64);
            }
            _ => self.encode(&mut wire),
        }
        let end = wire
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(wire.len());
        String::from_utf8_lossy(&wire[..end]).into_owned()
    }

    /// Appends the reply's exact wire bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Reply::Inserted(id) => line_with_number(out, b"INSERTED ", *id),
            Reply::BuriedId(id) => line_with_number(out, b"BURIED ", *id),
            Reply::Buried => out.put_slice(b"BURIED\r\n"),
            Reply::Reserved { id, body } => with_body(out, b"RESERVED ", *id, body),
            Reply::Found { id, body } => with_body(out, b"FOUND ", *id, body),
            Reply::Ok(yaml) => {
                out.reserve(yaml.len() + 16);
                out.put_slice(b"OK ");
                put_number(out, yaml.len() as u64);
                out.put_slice(b"\r\n");
                out.put_slice(yaml);
                out.put_slice(b"\r\n");
            }
            Reply::Using(tube) => {
                out.put_slice(b"USING ");
                out.put_slice(tube.as_str().as_bytes());
                out.put_slice(b"\r\n");
            }
            Reply::Watching(n) => line_with_number(out, b"WATCHING ", *n as u64),
            Reply::Kicked(n) => line_with_number(out, b"KICKED ", *n),
            Reply::KickedJob => out.put_slice(b"KICKED\r\n"),
            Reply::Deleted => out.put_slice(b"DELETED\r\n"),
            Reply::Released => out.put_slice(b"RELEASED\r\n"),
            Reply::Touched => out.put_slice(b"TOUCHED\r\n"),
            Reply::Paused => out.put_slice(b"PAUSED\r\n"),
            Reply::NotFound => out.put_slice(b"NOT_FOUND\r\n"),
            Reply::NotIgnored => out.put_slice(b"NOT_IGNORED\r\n"),
            Reply::DeadlineSoon => out.put_slice(b"DEADLINE_SOON\r\n"),
            Reply::TimedOut => out.put_slice(b"TIMED_OUT\r\n"),
            Reply::JobTooBig => out.put_slice(b"JOB_TOO_BIG\r\n"),
            Reply::ExpectedCrlf => out.put_slice(b"EXPECTED_CRLF\r\n"),
            Reply::BadFormat => out.put_slice(b"BAD_FORMAT\r\n"),
            Reply::UnknownCommand => out.put_slice(b"UNKNOWN_COMMAND\r\n"),
            Reply::Draining => out.put_slice(b"DRAINING\r\n"),
            Reply::OutOfMemory => out.put_slice(b"OUT_OF_MEMORY\r\n"),
            Reply::InternalError => out.put_slice(b"INTERNAL_ERROR\r\n"),
        }
    }

    /// The reply's bytes as a fresh buffer (tests and logging).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

fn put_number(out: &mut BytesMut, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

fn line_with_number(out: &mut BytesMut, word: &[u8], n: u64) {
    out.put_slice(word);
    put_number(out, n);
    out.put_slice(b"\r\n");
}

/// `<word><id> <len>\r\n<body>`; the stored body already ends with CRLF.
fn with_body(out: &mut BytesMut, word: &[u8], id: JobId, body: &Bytes) {
    out.reserve(body.len() + 48);
    encode_body_header(out, word, id, body.len());
    out.put_slice(body);
}

/// `<word><id> <len>\r\n` for a stored body of `stored_len` bytes (CRLF included).
pub(super) fn encode_body_header(out: &mut BytesMut, word: &[u8], id: JobId, stored_len: usize) {
    out.put_slice(word);
    put_number(out, id);
    out.put_u8(b' ');
    put_number(out, stored_len.saturating_sub(2) as u64);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_exact_bytes() {
        let body = Bytes::from_static(b"hello\r\n");
        let cases: Vec<(Reply, &[u8])> = vec![
            (Reply::Inserted(1), b"INSERTED 1\r\n"),
            (
                Reply::BuriedId(18446744073709551615),
                b"BURIED 18446744073709551615\r\n",
            ),
            (Reply::Buried, b"BURIED\r\n"),
            (
                Reply::Reserved {
                    id: 7,
                    body: body.clone(),
                },
                b"RESERVED 7 5\r\nhello\r\n",
            ),
            (Reply::Found { id: 0, body }, b"FOUND 0 5\r\nhello\r\n"),
            (
                Reply::Ok(Bytes::from_static(b"---\n- default\n")),
                b"OK 14\r\n---\n- default\n\r\n",
            ),
            (Reply::Using(TubeName::default_tube()), b"USING default\r\n"),
            (Reply::Watching(2), b"WATCHING 2\r\n"),
            (Reply::Kicked(0), b"KICKED 0\r\n"),
            (Reply::KickedJob, b"KICKED\r\n"),
            (Reply::NotIgnored, b"NOT_IGNORED\r\n"),
            (Reply::DeadlineSoon, b"DEADLINE_SOON\r\n"),
            (Reply::InternalError, b"INTERNAL_ERROR\r\n"),
        ];
        for (reply, bytes) in cases {
            assert_eq!(&reply.to_bytes()[..], bytes, "{reply:?}");
            let line = bytes.split(|&b| b == b'\r').next().unwrap();
            assert_eq!(reply.head().as_bytes(), line, "head of {reply:?}");
        }
    }
}
