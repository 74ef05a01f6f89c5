//! Framing: lines, put bodies, over-long lines.
//!
//! The decoder turns the byte stream into [`Frame`]s. It never returns `Err`
//! for anything a client sends (tokio-util ends the stream on `Err`): protocol
//! errors are `Frame::Error` values, or a `put` carrying a [`PutBody`] error.
//!
//! * A line ends at the first `\r\n`; a bare `\n` or `\r` never ends one.
//!   (beanstalkd only considers the first `\r` in its buffer, so `use a\rb\r\n`
//!   hangs there; we take the first CRLF and the line is `BAD_FORMAT`.)
//! * A line may be [`MAX_LINE`] bytes long, CRLF included. Once that many
//!   bytes are buffered without a CRLF, the line is discarded up to the next
//!   CRLF without being buffered, and one `BAD_FORMAT` is yielded. (beanstalkd
//!   also swallows the following line when the CRLF straddles the limit; we
//!   do not.)
//! * `put`: a body over the max job size is discarded as it streams in
//!   (`bytes + 2` bytes) and then reported as [`PutBody::TooBig`]; this comes
//!   before the trailing-text check ([`PutBody::TrailingText`], nothing
//!   consumed). Otherwise `bytes + 2` bytes are taken off the buffer and must
//!   end in CRLF ([`PutBody::Body`], else [`PutBody::ExpectedCrlf`]). They are
//!   split off without copying unless they are at most 4 KiB or under half
//!   the caller's read size ([`Codec::set_read_size`]), and what follows a
//!   body split off moves to a buffer of its own: a stored job never pins a
//!   buffer many times its size, nor one anything else uses.
//! * Input left over at end of stream is dropped.

use super::parse::{parse_line, Parsed};
use super::{Command, PutBody, Reply, MAX_LINE};
use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// One unit the session acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Command(Command),
    Error(Reply),
}

/// Bodies up to this size (CRLF included) are copied out of the read buffer.
const COPY_BODIES_UP_TO: usize = 4096;

/// The size of a fresh read buffer until a big put raises it: what the
/// session reads into, and what the codec assumes until
/// [`Codec::set_read_size`].
pub const DEFAULT_READ_SIZE: usize = 16 * 1024;

/// Most the read size is raised to after a big put: enough for a put of the
/// default max job size. Bigger bodies arrive in several reads anyway (room
/// is reserved 64 KiB at a time), and this stays well under the size malloc
/// maps on its own.
const MAX_READ_SIZE: usize = 128 * 1024;

/// How far ahead of the data we reserve room for a put body (plus, for the
/// last stretch of a body, room for the command line after it).
const BODY_RESERVE_CHUNK: usize = 64 * 1024;

/// The fields of a `put` line, kept while its body is read.
#[derive(Debug, Clone, Copy)]
struct PutLine {
    pri: u32,
    delay: u32,
    ttr: u32,
}

impl PutLine {
    fn frame(self, body: PutBody) -> Frame {
        Frame::Command(Command::Put {
            pri: self.pri,
            delay: self.delay,
            ttr: self.ttr,
            body,
        })
    }
}

#[derive(Debug)]
enum State {
    /// Reading a command line.
    Line,
    /// Dropping an over-long line up to its CRLF; `cr` says the last byte
    /// dropped was a `\r`.
    Discard { cr: bool },
    /// Waiting for a put body: `len` is `bytes + 2`.
    Body { put: PutLine, len: usize },
    /// Dropping the body of a too-big put: `remaining` bytes to go.
    Skip { put: PutLine, remaining: u64 },
}

/// Decoder state; see the module doc.
#[derive(Debug)]
pub struct Codec {
    max_job_size: u32,
    /// Size of a fresh buffer the caller reads into; see [`Codec::set_read_size`].
    read_size: u32,
    state: State,
}

impl Codec {
    /// A codec for a server whose largest job body is `max_job_size` bytes.
    pub fn new(max_job_size: u32) -> Codec {
        Codec {
            max_job_size,
            read_size: DEFAULT_READ_SIZE as u32,
            state: State::Line,
        }
    }

    /// Tells the codec how big a fresh buffer its caller reads into (the
    /// largest it has used). A body under half that size is copied out of
    /// the buffer rather than split off; a bigger one is split off, and what
    /// follows it is moved to a buffer of its own. So a stored body keeps
    /// alive a buffer a few times its size at most, and nothing else: twice
    /// its size for a fresh buffer, and for one grown to take it, what
    /// geometric growth leaves over.
    pub fn set_read_size(&mut self, bytes: usize) {
        self.read_size = u32::try_from(bytes).unwrap_or(u32::MAX);
    }

    /// How big a fresh read buffer should be: the size set, raised (never
    /// lowered, see [`Codec::set_read_size`]) after a put that did not fit,
    /// to room for such a put and the line after it, at most 128 KiB, so
    /// the next one arrives in one read.
    pub fn read_size(&self) -> usize {
        self.read_size as usize
    }

    /// The largest job body this codec accepts.
    pub fn max_job_size(&self) -> u32 {
        self.max_job_size
    }

    /// Nothing is half decoded: the next byte starts a command line.
    pub fn is_between_frames(&self) -> bool {
        matches!(self.state, State::Line)
    }

    /// Handles a parsed `put` header: decides the next state, or yields at once.
    fn put_header(&mut self, put: PutLine, bytes: u32, trailing_text: bool) -> Option<Frame> {
        if bytes > self.max_job_size {
            self.state = State::Skip {
                put,
                remaining: u64::from(bytes) + 2,
            };
            None
        } else if trailing_text {
            Some(put.frame(PutBody::TrailingText))
        } else {
            self.state = State::Body {
                put,
                len: bytes as usize + 2,
            };
            None
        }
    }
}

/// Position of the first `\r\n` in `buf`. A bare `\n` does not end a
/// line: the search goes on past it.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf)
        .find(|&i| i > 0 && buf[i - 1] == b'\r')
        .map(|i| i - 1)
}

impl Decoder for Codec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        loop {
            match self.state {
                State::Line => {
                    let window = &src[..src.len().min(MAX_LINE)];
                    match find_crlf(window) {
                        Some(end) => {
                            let parsed = parse_line(&src[..end]);
                            src.advance(end + 2);
                            match parsed {
                                Parsed::Command(c) => return Ok(Some(Frame::Command(c))),
                                Parsed::Error(r) => return Ok(Some(Frame::Error(r))),
                                Parsed::PutHeader {
                                    pri,
                                    delay,
                                    ttr,
                                    bytes,
                                    trailing_text,
                                } => {
                                    let put = PutLine { pri, delay, ttr };
                                    if let Some(f) = self.put_header(put, bytes, trailing_text) {
                                        return Ok(Some(f));
                                    }
                                }
                            }
                        }
                        // Over-long: scan the whole buffer (a CRLF straddling
                        // the limit ends this line too).
                        None if src.len() >= MAX_LINE => self.state = State::Discard { cr: false },
                        None => return Ok(None),
                    }
                }
                State::Discard { cr } => {
                    let end = if cr && src.first() == Some(&b'\n') {
                        Some(1)
                    } else {
                        find_crlf(src).map(|p| p + 2)
                    };
                    match end {
                        Some(n) => {
                            src.advance(n);
                            self.state = State::Line;
                            return Ok(Some(Frame::Error(Reply::BadFormat)));
                        }
                        None => {
                            if let Some(&last) = src.last() {
                                self.state = State::Discard { cr: last == b'\r' };
                            }
                            src.clear();
                            return Ok(None);
                        }
                    }
                }
                State::Body { put, len } => {
                    if src.len() < len {
                        let missing = len - src.len();
                        let spare = src.capacity() - src.len();
                        if missing > BODY_RESERVE_CHUNK {
                            src.reserve(BODY_RESERVE_CHUNK);
                        } else if spare < missing {
                            // Room for the next command line too: a client
                            // that sends `put` and `reserve` together then
                            // has both read by one syscall and answered by one
                            // write. Only when growing anyway: growing for
                            // the line alone could double a huge buffer.
                            src.reserve(missing + MAX_LINE);
                        }
                        return Ok(None);
                    }
                    // A body split off the read buffer pins the whole shared
                    // buffer for as long as the job lives: copy a small one,
                    // and one under half a fresh read buffer.
                    let raw = src.split_to(len);
                    let read_size = self.read_size as usize;
                    let body = if len <= COPY_BODIES_UP_TO || 2 * len < read_size {
                        Bytes::copy_from_slice(&raw)
                    } else {
                        // What follows moves to a buffer of its own (at most
                        // one read's worth is copied): the body's buffer then
                        // holds nothing else, no later read or body shares
                        // it and keeps it alive once this job is gone, and a
                        // read buffer the session hands on to another
                        // connection is never a stored job's.
                        *src = BytesMut::from(&src[..]);
                        raw.freeze()
                    };
                    self.state = State::Line;
                    let body = if body.ends_with(b"\r\n") {
                        if len > DEFAULT_READ_SIZE {
                            let put = (len + 2 * MAX_LINE).min(MAX_READ_SIZE);
                            self.read_size = self.read_size.max(put as u32);
                        }
                        PutBody::Body(body)
                    } else {
                        PutBody::ExpectedCrlf
                    };
                    return Ok(Some(put.frame(body)));
                }
                State::Skip { put, remaining } => {
                    let n = remaining.min(src.len() as u64);
                    src.advance(n as usize);
                    let remaining = remaining - n;
                    if remaining > 0 {
                        self.state = State::Skip { put, remaining };
                        return Ok(None);
                    }
                    self.state = State::Line;
                    return Ok(Some(put.frame(PutBody::TooBig)));
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                src.clear();
                Ok(None)
            }
        }
    }
}

impl Encoder<Reply> for Codec {
    type Error = std::io::Error;

    fn encode(&mut self, reply: Reply, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        reply.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TubeName;
    use bytes::Bytes;

    const MAX: u32 = 65_535;

    fn bad() -> Frame {
        Frame::Error(Reply::BadFormat)
    }
    fn unknown() -> Frame {
        Frame::Error(Reply::UnknownCommand)
    }
    fn cmd(c: Command) -> Frame {
        Frame::Command(c)
    }
    fn put(pri: u32, delay: u32, ttr: u32, body: PutBody) -> Frame {
        Frame::Command(Command::Put {
            pri,
            delay,
            ttr,
            body,
        })
    }
    fn body(b: &'static [u8]) -> PutBody {
        PutBody::Body(Bytes::from_static(b))
    }
    fn tube(s: &str) -> TubeName {
        TubeName::new(s.as_bytes()).unwrap()
    }

    /// Feeds `chunks` one after another, decoding all it can after each; then EOF.
    fn decode_chunks<'a>(
        codec: &mut Codec,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        assert!(buf.is_empty(), "decode_eof leaves an empty buffer");
        out
    }

    fn decode_all(input: &[u8]) -> Vec<Frame> {
        decode_chunks(&mut Codec::new(MAX), [input])
    }

    fn decode_bytewise(input: &[u8]) -> Vec<Frame> {
        decode_chunks(&mut Codec::new(MAX), input.chunks(1))
    }

    /// Checks the whole-buffer and byte-by-byte decodings both give `want`.
    fn check(input: &[u8], want: &[Frame]) {
        assert_eq!(
            decode_all(input),
            want,
            "whole: {:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(
            decode_bytewise(input),
            want,
            "bytewise: {:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn simple_lines() {
        check(b"stats\r\n", &[cmd(Command::Stats)]);
        check(
            b"use foo\r\nlist-tube-used\r\nquit\r\n",
            &[
                cmd(Command::Use(tube("foo"))),
                cmd(Command::ListTubeUsed),
                cmd(Command::Quit),
            ],
        );
        check(b"\r\n", &[unknown()]);
        check(b"\r\n\r\n", &[unknown(), unknown()]);
        check(b"stats\0\r\nstats\r\n", &[bad(), cmd(Command::Stats)]);
    }

    #[test]
    fn incomplete_line_waits_and_is_dropped_at_eof() {
        let mut codec = Codec::new(MAX);
        let mut buf = BytesMut::from(&b"stats"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], b"stats");
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        check(b"stats", &[]);
        check(b"stats\r", &[]);
        check(b"put 0 0 1 5\r\nab", &[]);
    }

    #[test]
    fn bare_lf_and_cr_do_not_end_lines() {
        check(b"stats\n", &[]);
        check(b"stats\n\r\n", &[bad()]);
        check(b"stats\r\r\n", &[bad()]);
        check(
            b"use a\rb\r\nlist-tube-used\r\n",
            &[bad(), cmd(Command::ListTubeUsed)],
        );
        check(b"\n\r\nstats\r\n", &[unknown(), cmd(Command::Stats)]);
    }

    #[test]
    fn the_first_crlf_is_found_past_bare_cr_and_lf() {
        // Every string of up to 8 bytes over `a`, `\r` and `\n`, against
        // the plain definition.
        for len in 0..=8u32 {
            for n in 0..3usize.pow(len) {
                let buf: Vec<u8> = (0..len).map(|i| b"a\r\n"[n / 3usize.pow(i) % 3]).collect();
                let plain = buf.windows(2).position(|w| w == b"\r\n");
                assert_eq!(find_crlf(&buf), plain, "{buf:?}");
            }
        }
    }

    /// A line of `n` bytes, CRLF included, made of `use aaa...`.
    fn use_line(n: usize) -> Vec<u8> {
        let mut v = b"use ".to_vec();
        v.resize(n - 2, b'a');
        v.extend_from_slice(b"\r\n");
        assert_eq!(v.len(), n);
        v
    }

    #[test]
    fn line_length_limit() {
        // 224 bytes including CRLF is the longest line: it is parsed (the name
        // is 218 bytes, so BAD_FORMAT from the name check, then the next line).
        let mut input = use_line(224);
        input.extend_from_slice(b"stats\r\n");
        check(&input, &[bad(), cmd(Command::Stats)]);

        // The longest legal line.
        let mut longest = b"pause-tube ".to_vec();
        longest.extend_from_slice(&[b'b'; 200]);
        longest.extend_from_slice(b" 4294967295\r\n");
        assert_eq!(longest.len(), MAX_LINE);
        longest.extend_from_slice(b"stats\r\n");
        check(
            &longest,
            &[
                cmd(Command::PauseTube {
                    tube: tube(&"b".repeat(200)),
                    delay: u32::MAX,
                }),
                cmd(Command::Stats),
            ],
        );

        // 225 bytes: over-long, one BAD_FORMAT, and the next line is read.
        for n in [225, 226, 227, 300, 500, 5000] {
            let mut input = use_line(n);
            input.extend_from_slice(b"stats\r\n");
            check(&input, &[bad(), cmd(Command::Stats)]);
        }

        // A 223-byte line that is valid.
        let mut ok = b"pause-tube ".to_vec();
        ok.extend_from_slice(&[b'b'; 199]);
        ok.extend_from_slice(b" 4294967295\r\n");
        assert_eq!(ok.len(), 223);
        check(
            &ok,
            &[cmd(Command::PauseTube {
                tube: tube(&"b".repeat(199)),
                delay: u32::MAX,
            })],
        );
    }

    #[test]
    fn over_long_line_waits_for_its_crlf() {
        let mut codec = Codec::new(MAX);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[b'x'; 223]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 223, "short of the limit: still buffered");
        buf.extend_from_slice(b"x");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "over the limit: discarded, not buffered");
        for _ in 0..100 {
            buf.extend_from_slice(&[b'y'; 1000]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty());
        }
        // A CRLF split across reads.
        buf.extend_from_slice(b"zz\r");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        buf.extend_from_slice(b"\nstats\r\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(bad()));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(cmd(Command::Stats)));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);

        // A `\r` that is not followed by `\n` does not end the discard.
        let mut input = vec![b'x'; 300];
        input.extend_from_slice(b"\r\rx\r\n\r\nstats\r\n");
        check(&input, &[bad(), unknown(), cmd(Command::Stats)]);
        // Nor does `\n` after a `\r` that was followed by something else.
        let mut input = vec![b'x'; 300];
        input.extend_from_slice(b"\rx\nstats\r\n");
        check(&input, &[bad()]);
    }

    #[test]
    fn over_long_line_with_crlf_at_the_limit() {
        // 225 bytes: the `\r` is byte 224 of the buffer and the `\n` byte 225.
        let mut codec = Codec::new(MAX);
        let mut buf = BytesMut::from(&use_line(225)[..224]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        buf.extend_from_slice(b"\nstats\r\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(bad()));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(cmd(Command::Stats)));
    }

    #[test]
    fn put_bodies() {
        check(
            b"put 1 2 3 5\r\nhello\r\n",
            &[put(1, 2, 3, body(b"hello\r\n"))],
        );
        check(b"put 0 0 1 0\r\n\r\n", &[put(0, 0, 1, body(b"\r\n"))]);
        // The body is raw bytes: CRLFs, NULs and command words inside are data.
        check(
            b"put 0 0 1 11\r\nstats\r\n\0\r\nx\r\nstats\r\n",
            &[
                put(0, 0, 1, body(b"stats\r\n\0\r\nx\r\n")),
                cmd(Command::Stats),
            ],
        );
        // Pipelined puts.
        check(
            b"put 0 0 1 1\r\na\r\nput 9 0 1 2\r\nbc\r\npeek-ready\r\n",
            &[
                put(0, 0, 1, body(b"a\r\n")),
                put(9, 0, 1, body(b"bc\r\n")),
                cmd(Command::PeekReady),
            ],
        );
    }

    /// Decodes one put of `len` body bytes; returns the body and whether it
    /// points into the read buffer.
    fn decode_body(len: usize) -> (Bytes, bool) {
        decode_body_read_in(len, DEFAULT_READ_SIZE)
    }

    /// Decodes a put of `len` bytes (and a stats line after it) with the
    /// codec told its caller reads `read_size` bytes at a time.
    fn decode_body_read_in(len: usize, read_size: usize) -> (Bytes, bool) {
        let mut codec = Codec::new(MAX);
        codec.set_read_size(read_size);
        let mut buf = BytesMut::from(format!("put 0 0 1 {len}\r\n").as_bytes());
        let header = buf.len();
        buf.extend_from_slice(&vec![b'x'; len]);
        buf.extend_from_slice(b"\r\nstats\r\n");
        let start = buf.as_ptr() as usize;
        let Some(Frame::Command(Command::Put {
            body: PutBody::Body(b),
            ..
        })) = codec.decode(&mut buf).unwrap()
        else {
            panic!("expected a put with a body");
        };
        assert_eq!(b.len(), len + 2);
        let in_buffer = b.as_ptr() as usize == start + header;
        (b, in_buffer)
    }

    #[test]
    fn large_put_body_is_split_off_without_copying() {
        let (_, in_buffer) = decode_body(DEFAULT_READ_SIZE / 2);
        assert!(in_buffer, "a large body points into the read buffer");
    }

    #[test]
    fn a_body_under_half_the_read_size_is_copied() {
        let len = 10_000;
        let (_, in_buffer) = decode_body_read_in(len, 2 * (len + 2));
        assert!(in_buffer, "half the read size or more is split off");
        let (b, in_buffer) = decode_body_read_in(len, 2 * (len + 2) + 1);
        assert!(!in_buffer, "under half the read size is copied");
        assert_eq!(b.len(), len + 2);
    }

    #[test]
    fn what_follows_a_body_in_a_buffer_grown_for_it_moves_out() {
        let mut codec = Codec::new(1 << 20);
        let line = b"put 0 0 1 600000\r\n";
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.extend_from_slice(line);
        buf.extend_from_slice(&[b'x'; 600_000]);
        buf.extend_from_slice(b"\r\nstats\r\n");
        let Some(Frame::Command(Command::Put {
            body: PutBody::Body(b),
            ..
        })) = codec.decode(&mut buf).unwrap()
        else {
            panic!("expected a put with a body");
        };
        assert_eq!(b.len(), 600_002);
        assert_eq!(&buf[..], b"stats\r\n");
        assert!(buf.capacity() < 1024, "{}", buf.capacity());
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::Command(Command::Stats))
        );
    }

    #[test]
    fn what_follows_a_body_split_off_a_fresh_buffer_moves_out() {
        let mut codec = Codec::new(MAX);
        let mut buf = BytesMut::with_capacity(DEFAULT_READ_SIZE);
        buf.extend_from_slice(b"put 0 0 1 8200\r\n");
        buf.extend_from_slice(&[b'x'; 8200]);
        buf.extend_from_slice(b"\r\nstats\r\n");
        let start = buf.as_ptr() as usize;
        let end = start + DEFAULT_READ_SIZE;
        let Some(Frame::Command(Command::Put {
            body: PutBody::Body(b),
            ..
        })) = codec.decode(&mut buf).unwrap()
        else {
            panic!("expected a put with a body");
        };
        assert!((start..end).contains(&(b.as_ptr() as usize)), "split off");
        assert_eq!(&buf[..], b"stats\r\n");
        let rest = buf.as_ptr() as usize;
        assert!(
            !(start..end).contains(&rest),
            "the rest shares the body's buffer"
        );
    }

    #[test]
    fn the_room_for_the_next_line_never_grows_a_buffer_the_body_fits_in() {
        let mut codec = Codec::new(MAX);
        let line = b"put 0 0 1 60000\r\n";
        let mut buf = BytesMut::with_capacity(line.len() + 60_002 + 10);
        buf.extend_from_slice(line);
        buf.extend_from_slice(&[b'x'; 500]);
        let (start, capacity) = (buf.as_ptr(), buf.capacity());
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.as_ptr(), start.wrapping_add(line.len()), "not moved");
        assert_eq!(buf.capacity(), capacity - line.len());
    }

    #[test]
    fn small_put_body_is_copied_so_it_does_not_pin_the_read_buffer() {
        let (b, in_buffer) = decode_body(3);
        assert_eq!(&b[..], b"xxx\r\n");
        assert!(!in_buffer, "a small body is an exact copy");
        let (_, in_buffer) = decode_body(COPY_BODIES_UP_TO - 2);
        assert!(!in_buffer);
    }

    #[test]
    fn put_expected_crlf() {
        // bytes+2 are consumed whatever they are; the rest is the next line.
        check(
            b"put 0 0 10 1\r\nabc\r\n",
            &[put(0, 0, 10, PutBody::ExpectedCrlf), unknown()],
        );
        check(
            b"put 0 0 10 3\r\nabcde\r\nstats\r\n",
            &[
                put(0, 0, 10, PutBody::ExpectedCrlf),
                unknown(),
                cmd(Command::Stats),
            ],
        );
        check(
            b"put 0 0 10 3\r\nabc\n\rstats\r\n",
            &[put(0, 0, 10, PutBody::ExpectedCrlf), cmd(Command::Stats)],
        );
        check(
            b"put 0 0 10 0\r\nxystats\r\n",
            &[put(0, 0, 10, PutBody::ExpectedCrlf), cmd(Command::Stats)],
        );
    }

    #[test]
    fn put_bad_format_does_not_consume_the_body() {
        check(b"put -1 0 10 1\r\nx\r\n", &[bad(), unknown()]);
        check(b"put \r\nstats\r\n", &[bad(), cmd(Command::Stats)]);
        check(b"put\r\n", &[unknown()]);
        check(b"put 0 0 1 4294967296\r\nx\r\n", &[bad(), unknown()]);
    }

    #[test]
    fn put_trailing_text() {
        check(
            b"put 0 0 10 1 \r\nx\r\n",
            &[put(0, 0, 10, PutBody::TrailingText), unknown()],
        );
        check(
            b"put 0 0 10 5 junk\r\nstats\r\n",
            &[put(0, 0, 10, PutBody::TrailingText), cmd(Command::Stats)],
        );
    }

    #[test]
    fn put_too_big() {
        // 65535 is accepted, 65536 is not.
        let mut input = b"put 0 0 10 65535\r\n".to_vec();
        input.extend_from_slice(&[b'q'; 65535]);
        input.extend_from_slice(b"\r\nstats\r\n");
        let frames = decode_all(&input);
        assert_eq!(frames.len(), 2);
        let Frame::Command(Command::Put {
            body: PutBody::Body(b),
            ..
        }) = &frames[0]
        else {
            panic!("expected a body, got {:?}", frames[0]);
        };
        assert_eq!(b.len(), 65537);
        assert_eq!(frames[1], cmd(Command::Stats));

        let mut input = b"put 0 0 10 65536\r\n".to_vec();
        input.extend_from_slice(&[b'q'; 65536]);
        input.extend_from_slice(b"\r\nstats\r\n");
        check(
            &input,
            &[put(0, 0, 10, PutBody::TooBig), cmd(Command::Stats)],
        );

        // Exactly bytes+2 are discarded, whatever they are.
        let mut codec = Codec::new(4);
        let frames = decode_chunks(&mut codec, [&b"put 1 2 3 5\r\nabcdefgstats\r\n"[..]]);
        assert_eq!(frames, [put(1, 2, 3, PutBody::TooBig), cmd(Command::Stats)]);

        // The size check comes before the trailing-text check.
        let mut codec = Codec::new(MAX);
        let mut input = b"put 0 0 10 70000 garbage\r\n".to_vec();
        input.extend_from_slice(&[b'z'; 70002]);
        input.extend_from_slice(b"stats\r\n");
        let frames = decode_chunks(&mut codec, input.chunks(1000));
        assert_eq!(
            frames,
            [put(0, 0, 10, PutBody::TooBig), cmd(Command::Stats)]
        );

        // Nothing comes back until the discarded bytes have all arrived.
        let mut codec = Codec::new(10);
        let mut buf = BytesMut::from(&b"put 0 0 1 11\r\n0123456789"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        buf.extend_from_slice(b"a\r");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\n");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(put(0, 0, 1, PutBody::TooBig))
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn put_too_big_streams_a_gibibyte_in_bounded_memory() {
        let mut codec = Codec::new(MAX);
        let mut buf = BytesMut::from(&b"put 0 0 1 1073741824\r\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        let chunk = vec![b'x'; 1 << 16];
        let total = (1u64 << 30) + 2;
        let mut sent = 0u64;
        while sent + chunk.len() as u64 <= total {
            buf.extend_from_slice(&chunk);
            sent += chunk.len() as u64;
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty());
            assert!(buf.capacity() <= 1 << 17);
        }
        let rest = (total - sent) as usize;
        assert_eq!(rest, 2);
        buf.extend_from_slice(b"ab");
        buf.extend_from_slice(b"stats\r\n");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(put(0, 0, 1, PutBody::TooBig))
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(cmd(Command::Stats)));
    }

    #[test]
    fn put_too_big_up_to_u32_max() {
        let mut codec = Codec::new(MAX);
        let mut buf = BytesMut::from(&b"put 0 0 1 4294967295\r\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        let State::Skip { remaining, .. } = codec.state else {
            panic!("expected to be skipping, got {:?}", codec.state);
        };
        assert_eq!(remaining, 4_294_967_297);
    }

    #[test]
    fn the_read_that_ends_a_body_has_room_for_the_next_line() {
        let mut codec = Codec::new(MAX);
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(b"put 0 0 1 60000\r\n");
        buf.extend_from_slice(&[b'x'; 500]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        let missing = 60_002 - 500;
        let spare = buf.capacity() - buf.len();
        assert!(spare >= missing + MAX_LINE, "{spare}");
    }

    #[test]
    fn announced_body_is_not_reserved_up_front() {
        let mut codec = Codec::new(1 << 30);
        let mut buf = BytesMut::from(&b"put 0 0 1 1073741824\r\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(
            buf.capacity() <= 2 * BODY_RESERVE_CHUNK,
            "{}",
            buf.capacity()
        );
        buf.extend_from_slice(&[b'x'; 1000]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 1000);
        assert!(
            buf.capacity() <= 2 * BODY_RESERVE_CHUNK + 1000,
            "{}",
            buf.capacity()
        );
        // At EOF the partial body is dropped.
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn body_exactly_at_max_job_size_with_small_limit() {
        let mut codec = Codec::new(3);
        let frames = decode_chunks(
            &mut codec,
            [&b"put 0 0 1 3\r\nabc\r\nput 0 0 1 4\r\nabcd\r\n"[..]],
        );
        assert_eq!(
            frames,
            [
                put(0, 0, 1, body(b"abc\r\n")),
                put(0, 0, 1, PutBody::TooBig)
            ]
        );
    }

    #[test]
    fn decode_eof_never_errors() {
        for input in [
            &b"put 0 0 1 5\r\nab"[..],
            b"put 0 0 1 70000\r\nab",
            b"xxxxxxxxxxxxxxxxxxx",
            b"stats\r\nst",
        ] {
            let mut codec = Codec::new(MAX);
            let mut buf = BytesMut::from(input);
            while codec.decode_eof(&mut buf).unwrap().is_some() {}
            assert!(buf.is_empty());
        }
        let mut codec = Codec::new(MAX);
        let mut buf = BytesMut::from(&[b'x'; 500][..]);
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    /// xorshift64*, so the test needs no extra dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn transcript() -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(b"use foo\r\nput 0 0 10 5\r\nhello\r\nreserve\r\n");
        t.extend_from_slice(b"put 1 2 3 0\r\n\r\nput 0 0 10 1\r\nabc\r\n");
        t.extend_from_slice(b"put -1 0 10 1\r\nx\r\n\r\n");
        t.extend_from_slice(b"put 0 0 10 1 trailing\r\nx\r\n");
        t.extend_from_slice(b"put 0 0 10 70000 junk\r\n");
        t.extend_from_slice(&[b'\r'; 35000]);
        t.extend_from_slice(&[b'\n'; 35002]);
        t.extend_from_slice(b"kick -1\r\nkick-job 5\r\npause-tube  x  9\r\n");
        t.extend_from_slice(&[b'\r'; 600]);
        t.extend_from_slice(b"\r\nstats\0\r\nuse a\rb\r\n");
        t.extend_from_slice(&use_line(225));
        t.extend_from_slice(&use_line(224));
        t.extend_from_slice(b"reserve-with-timeout 5 junk\r\nquitx\r\n\n\r\n");
        t.extend_from_slice(b"put 0 0 1 3\r\nab\r\nxy\r\n");
        t.extend_from_slice(b"release 1 2 3\r\nbury 4 5\r\ntouch 6\r\n");
        t.extend_from_slice(b"stats-tube default\r\nlist-tubes\r\nput 0 0 1 2\r\nab");
        t
    }

    #[test]
    fn chunking_does_not_matter() {
        let input = transcript();
        let want = decode_all(&input);
        assert_eq!(
            want,
            [
                cmd(Command::Use(tube("foo"))),
                put(0, 0, 10, body(b"hello\r\n")),
                cmd(Command::Reserve),
                put(1, 2, 3, body(b"\r\n")),
                put(0, 0, 10, PutBody::ExpectedCrlf),
                unknown(),
                bad(),
                unknown(),
                unknown(),
                put(0, 0, 10, PutBody::TrailingText),
                unknown(),
                put(0, 0, 10, PutBody::TooBig),
                cmd(Command::Kick(u32::MAX)),
                cmd(Command::KickJob(5)),
                cmd(Command::PauseTube {
                    tube: tube("x"),
                    delay: 9
                }),
                bad(),
                bad(),
                bad(),
                bad(),
                bad(),
                cmd(Command::ReserveWithTimeout(5)),
                cmd(Command::Quit),
                unknown(),
                put(0, 0, 1, PutBody::ExpectedCrlf),
                unknown(),
                cmd(Command::Release {
                    id: 1,
                    pri: 2,
                    delay: 3
                }),
                cmd(Command::Bury { id: 4, pri: 5 }),
                cmd(Command::Touch(6)),
                cmd(Command::StatsTube(tube("default"))),
                cmd(Command::ListTubes),
            ]
        );
        assert_eq!(decode_bytewise(&input), want);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..200 {
            let max = [2, 7, 64, 300, 5000][round % 5];
            let mut chunks = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = (1 + rng.next() as usize % max).min(rest.len());
                let (a, b) = rest.split_at(n);
                chunks.push(a);
                rest = b;
            }
            let got = decode_chunks(&mut Codec::new(MAX), chunks);
            assert_eq!(got, want, "round {round}");
        }
    }

    #[test]
    fn encoder_writes_reply_bytes() {
        let mut codec = Codec::new(MAX);
        let mut out = BytesMut::new();
        codec.encode(Reply::BadFormat, &mut out).unwrap();
        codec.encode(Reply::Inserted(3), &mut out).unwrap();
        assert_eq!(&out[..], b"BAD_FORMAT\r\nINSERTED 3\r\n");
    }
}
