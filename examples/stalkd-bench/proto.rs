//! A minimal beanstalkd-protocol client for load generation.
//!
//! [`Conn`] queues commands into a write buffer (so a pipelined batch leaves in
//! one `write`; big bodies are sent from their own buffers, not copied into
//! it), and reads replies with a deadline on every read, offering each read
//! room for the biggest reply seen so far. Replies are
//! parsed strictly into [`Reply`]; the `expect_*` helpers turn a well-formed but
//! wrong reply into [`BenchError::Unexpected`] (counted, the stream stays in
//! sync) and anything unparseable into a fatal error.

use std::fmt::{self, Write as _};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// Longest reply line accepted before the stream is declared garbage.
const MAX_LINE: usize = 1024;
/// Smallest amount of free buffer space offered to each read.
const MIN_READ: usize = 4096;
/// Most free buffer space offered to a read before a reply asks for it.
const MAX_READ_HINT: usize = 1 << 20;
/// Bodies at least this long go out from their own buffer: a load generator
/// that copied each 64 KiB body would run out of CPU before the server.
const SEND_IN_PLACE: usize = 4096;

/// Default job priority, delay-less TTR used by all scenarios.
pub const PRI: u32 = 100;
/// TTR for benchmark jobs: long enough never to expire during a run.
pub const TTR: u32 = 120;

/// Why an operation failed.
#[derive(Debug)]
pub enum BenchError {
    /// Socket error.
    Io(io::Error),
    /// A read, write or connect did not finish in time.
    Timeout(&'static str),
    /// The server closed the connection.
    Closed,
    /// Bytes that are not a valid reply: the stream is out of sync.
    Protocol(String),
    /// A valid reply, but not the one the scenario needed.
    Unexpected { expected: &'static str, got: String },
}

impl BenchError {
    /// Whether the connection is unusable after this error.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, BenchError::Unexpected { .. })
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Io(e) => write!(f, "io error: {e}"),
            BenchError::Timeout(what) => write!(f, "timeout while {what}"),
            BenchError::Closed => write!(f, "connection closed by server"),
            BenchError::Protocol(s) => write!(f, "bad reply bytes: {s}"),
            BenchError::Unexpected { expected, got } => {
                write!(f, "expected {expected}, got {got}")
            }
        }
    }
}

impl From<io::Error> for BenchError {
    fn from(e: io::Error) -> Self {
        BenchError::Io(e)
    }
}

/// One server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Inserted(u64),
    Buried(u64),
    Reserved {
        id: u64,
        body: Bytes,
    },
    Deleted,
    TimedOut,
    DeadlineSoon,
    NotFound,
    Using(String),
    Watching(u64),
    Ok(Bytes),
    /// Any other well-formed line (errors such as `JOB_TOO_BIG`, `BAD_FORMAT`).
    Other(String),
}

impl Reply {
    /// Short text for error reports (bodies are summarised, not printed).
    pub fn describe(&self) -> String {
        match self {
            Reply::Inserted(id) => format!("INSERTED {id}"),
            Reply::Buried(id) => format!("BURIED {id}"),
            Reply::Reserved { id, body } => format!("RESERVED {id} {}", body.len()),
            Reply::Deleted => "DELETED".into(),
            Reply::TimedOut => "TIMED_OUT".into(),
            Reply::DeadlineSoon => "DEADLINE_SOON".into(),
            Reply::NotFound => "NOT_FOUND".into(),
            Reply::Using(t) => format!("USING {t}"),
            Reply::Watching(n) => format!("WATCHING {n}"),
            Reply::Ok(body) => format!("OK {}", body.len()),
            Reply::Other(line) => line.clone(),
        }
    }

    fn unexpected(self, expected: &'static str) -> BenchError {
        BenchError::Unexpected {
            expected,
            got: self.describe(),
        }
    }

    /// `INSERTED <id>` -> id.
    pub fn expect_inserted(self) -> Result<u64, BenchError> {
        match self {
            Reply::Inserted(id) => Ok(id),
            other => Err(other.unexpected("INSERTED")),
        }
    }

    /// `RESERVED` -> `Some((id, body))`; `TIMED_OUT`/`DEADLINE_SOON` -> `None`.
    pub fn expect_reserved_or_timeout(self) -> Result<Option<(u64, Bytes)>, BenchError> {
        match self {
            Reply::Reserved { id, body } => Ok(Some((id, body))),
            Reply::TimedOut | Reply::DeadlineSoon => Ok(None),
            other => Err(other.unexpected("RESERVED or TIMED_OUT")),
        }
    }

    /// `RESERVED` -> `(id, body)`.
    pub fn expect_reserved(self) -> Result<(u64, Bytes), BenchError> {
        match self {
            Reply::Reserved { id, body } => Ok((id, body)),
            other => Err(other.unexpected("RESERVED")),
        }
    }

    /// `DELETED`.
    pub fn expect_deleted(self) -> Result<(), BenchError> {
        match self {
            Reply::Deleted => Ok(()),
            other => Err(other.unexpected("DELETED")),
        }
    }

    /// `USING <tube>`.
    pub fn expect_using(self) -> Result<(), BenchError> {
        match self {
            Reply::Using(_) => Ok(()),
            other => Err(other.unexpected("USING")),
        }
    }

    /// `WATCHING <n>` -> n.
    pub fn expect_watching(self) -> Result<u64, BenchError> {
        match self {
            Reply::Watching(n) => Ok(n),
            other => Err(other.unexpected("WATCHING")),
        }
    }

    /// `OK <bytes>` -> body.
    pub fn expect_ok(self) -> Result<Bytes, BenchError> {
        match self {
            Reply::Ok(body) => Ok(body),
            other => Err(other.unexpected("OK")),
        }
    }
}

/// Outcome of trying to parse one reply from the read buffer.
enum Parsed {
    Done(Reply),
    /// Need at least this many bytes in the buffer in total.
    Need(usize),
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    /// Room offered to the first read of a reply: the largest reply yet,
    /// plus room for a short reply before it.
    read_hint: usize,
    wbuf: BytesMut,
    /// Output queued ahead of `wbuf`: big bodies and the text before them.
    queued: Vec<Bytes>,
    io_timeout: Duration,
}

impl Conn {
    /// Connects with a timeout and disables Nagle.
    pub async fn connect(addr: SocketAddr, io_timeout: Duration) -> Result<Conn, BenchError> {
        let deadline = Instant::now() + io_timeout;
        let stream = timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| BenchError::Timeout("connecting"))??;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            rbuf: BytesMut::new(),
            read_hint: MIN_READ,
            wbuf: BytesMut::new(),
            queued: Vec::new(),
            io_timeout,
        })
    }

    /// Queues a `put` with the given body.
    pub fn put(&mut self, delay: u32, body: &Bytes) {
        let _ = write!(self.wbuf, "put {PRI} {delay} {TTR} {}\r\n", body.len());
        if body.len() >= SEND_IN_PLACE {
            self.queued.push(self.wbuf.split().freeze());
            self.queued.push(body.clone());
        } else {
            self.wbuf.extend_from_slice(body);
        }
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Queues a `put` whose body starts with the current [`crate::clock`]
    /// timestamp (16 hex digits) and is padded with `x` to `len` bytes.
    pub fn put_stamped(&mut self, delay: u32, len: usize) {
        let _ = write!(self.wbuf, "put {PRI} {delay} {TTR} {len}\r\n");
        crate::clock::write_stamp(&mut self.wbuf, len);
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Queues one command line (CRLF is added).
    pub fn cmd(&mut self, args: fmt::Arguments<'_>) {
        let _ = self.wbuf.write_fmt(args);
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), BenchError> {
        if self.wbuf.is_empty() && self.queued.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.io_timeout;
        if !self.queued.is_empty() {
            self.queued.push(self.wbuf.split().freeze());
        }
        let write = async {
            if self.queued.is_empty() {
                self.stream.write_all(&self.wbuf).await
            } else {
                write_all_vectored(&mut self.stream, &mut self.queued).await
            }
        };
        timeout_at(deadline, write)
            .await
            .map_err(|_| BenchError::Timeout("writing"))??;
        self.wbuf.clear();
        self.queued.clear();
        Ok(())
    }

    /// Reads one reply, waiting at most the I/O timeout.
    pub async fn reply(&mut self) -> Result<Reply, BenchError> {
        self.reply_by(Instant::now() + self.io_timeout).await
    }

    /// Reads one reply, waiting at most until `deadline`.
    pub async fn reply_by(&mut self, deadline: Instant) -> Result<Reply, BenchError> {
        loop {
            let need = match parse(&mut self.rbuf)? {
                Parsed::Done(reply) => return Ok(reply),
                Parsed::Need(n) => n,
            };
            let want = need.saturating_sub(self.rbuf.len()).max(self.read_hint);
            self.rbuf.reserve(want);
            self.read_hint = self.read_hint.max((need + MIN_READ).min(MAX_READ_HINT));
            let read = self.stream.read_buf(&mut self.rbuf);
            let n = timeout_at(deadline, read)
                .await
                .map_err(|_| BenchError::Timeout("waiting for a reply"))??;
            if n == 0 {
                return Err(BenchError::Closed);
            }
        }
    }

    /// Sends one command line (CRLF is added) and reads its reply.
    pub async fn call(&mut self, line: &str) -> Result<Reply, BenchError> {
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
        self.round_trip().await
    }

    /// Flushes and reads one reply.
    pub async fn round_trip(&mut self) -> Result<Reply, BenchError> {
        self.flush().await?;
        self.reply().await
    }

    /// `use <tube>` and check the reply.
    pub async fn use_tube(&mut self, tube: &str) -> Result<(), BenchError> {
        self.call(&format!("use {tube}")).await?.expect_using()
    }

    /// Watches every tube in `tubes` and then ignores `default` (unless it is
    /// one of them), pipelined in batches.
    pub async fn watch_only(&mut self, tubes: &[String]) -> Result<(), BenchError> {
        for chunk in tubes.chunks(1000) {
            for t in chunk {
                self.cmd(format_args!("watch {t}"));
            }
            self.flush().await?;
            for _ in chunk {
                self.reply().await?.expect_watching()?;
            }
        }
        if !tubes.iter().any(|t| t == "default") {
            self.call("ignore default").await?.expect_watching()?;
        }
        Ok(())
    }
}

/// Writes all of `parts` with as few `writev` calls as the socket allows.
async fn write_all_vectored<W>(stream: &mut W, parts: &mut [Bytes]) -> io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut first = 0;
    loop {
        while first < parts.len() && parts[first].is_empty() {
            first += 1;
        }
        if first == parts.len() {
            return Ok(());
        }
        let slices: Vec<io::IoSlice<'_>> = parts[first..]
            .iter()
            .take(IOV_MAX)
            .map(|p| io::IoSlice::new(p))
            .collect();
        let mut n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let len = parts[first].len().min(n);
            parts[first].advance(len);
            n -= len;
            if parts[first].is_empty() {
                first += 1;
            }
        }
    }
}

/// Most slices one `writev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Parses one reply off the front of `buf`, consuming it only when complete.
fn parse(buf: &mut BytesMut) -> Result<Parsed, BenchError> {
    let scan = &buf[..buf.len().min(MAX_LINE)];
    let Some(eol) = scan.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_LINE {
            return Err(BenchError::Protocol(format!(
                "no CRLF in {MAX_LINE} bytes: {:?}",
                String::from_utf8_lossy(&buf[..64])
            )));
        }
        return Ok(Parsed::Need(buf.len() + 1));
    };
    let line = std::str::from_utf8(&buf[..eol])
        .map_err(|_| BenchError::Protocol("reply line is not UTF-8".into()))?;
    let mut words = line.split(' ');
    let head = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    let reply = match (head, args.as_slice()) {
        ("INSERTED", [id]) => Reply::Inserted(num(id, line)?),
        ("BURIED", [id]) => Reply::Buried(num(id, line)?),
        ("RESERVED", [id, len]) => {
            let (id, len) = (num(id, line)?, num(len, line)? as usize);
            return take_body(buf, eol, len, |body| Reply::Reserved { id, body });
        }
        ("OK", [len]) => {
            let len = num(len, line)? as usize;
            return take_body(buf, eol, len, Reply::Ok);
        }
        ("DELETED", []) => Reply::Deleted,
        ("TIMED_OUT", []) => Reply::TimedOut,
        ("DEADLINE_SOON", []) => Reply::DeadlineSoon,
        ("NOT_FOUND", []) => Reply::NotFound,
        ("USING", [tube]) => Reply::Using((*tube).to_string()),
        ("WATCHING", [n]) => Reply::Watching(num(n, line)?),
        _ => Reply::Other(line.to_string()),
    };
    buf.advance(eol + 2);
    Ok(Parsed::Done(reply))
}

/// Splits a `<line>\r\n<len bytes>\r\n` reply off `buf` once it is complete.
fn take_body(
    buf: &mut BytesMut,
    eol: usize,
    len: usize,
    make: impl FnOnce(Bytes) -> Reply,
) -> Result<Parsed, BenchError> {
    let total = eol + 2 + len + 2;
    if buf.len() < total {
        return Ok(Parsed::Need(total));
    }
    if &buf[total - 2..total] != b"\r\n" {
        return Err(BenchError::Protocol(format!(
            "body of {len} bytes not followed by CRLF"
        )));
    }
    buf.advance(eol + 2);
    let body = buf.split_to(len).freeze();
    buf.advance(2);
    Ok(Parsed::Done(make(body)))
}

fn num(word: &str, line: &str) -> Result<u64, BenchError> {
    word.parse()
        .map_err(|_| BenchError::Protocol(format!("bad number in reply {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn vectored_writes_resume_after_partial_writes() {
        // A 7-byte pipe forces writes that end mid-slice.
        let (mut tx, mut rx) = tokio::io::duplex(7);
        let mut parts = vec![
            Bytes::new(),
            Bytes::from_static(b"put 1 2 3 10\r\n"),
            Bytes::new(),
            Bytes::from_static(b"0123456789"),
            Bytes::from_static(b"\r\nreserve\r\n"),
        ];
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).await.map(|_| got)
        });
        write_all_vectored(&mut tx, &mut parts).await.unwrap();
        drop(tx);
        let got = reader.await.unwrap().unwrap();
        assert_eq!(got, b"put 1 2 3 10\r\n0123456789\r\nreserve\r\n");
        let (mut tx, _rx) = tokio::io::duplex(7);
        let mut nothing = vec![Bytes::new(), Bytes::new()];
        write_all_vectored(&mut tx, &mut nothing).await.unwrap();
    }

    fn parse_all(bytes: &[u8]) -> Vec<Reply> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Ok(Parsed::Done(r)) = parse(&mut buf) {
            out.push(r);
        }
        out
    }

    #[test]
    fn parses_pipelined_replies() {
        let got = parse_all(b"INSERTED 7\r\nRESERVED 7 3\r\nabc\r\nDELETED\r\nTIMED_OUT\r\n");
        assert_eq!(
            got,
            vec![
                Reply::Inserted(7),
                Reply::Reserved {
                    id: 7,
                    body: Bytes::from_static(b"abc")
                },
                Reply::Deleted,
                Reply::TimedOut
            ]
        );
    }

    #[test]
    fn waits_for_full_body() {
        let mut buf = BytesMut::from(&b"RESERVED 1 10\r\nabc"[..]);
        assert!(matches!(parse(&mut buf), Ok(Parsed::Need(27))));
    }

    #[test]
    fn body_without_crlf_is_fatal() {
        let mut buf = BytesMut::from(&b"RESERVED 1 3\r\nabcXY"[..]);
        assert!(parse(&mut buf).is_err());
    }
}
