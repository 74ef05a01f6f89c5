//! Replies waiting to be written, gathered without copying large bodies.
//!
//! Small replies are encoded into one contiguous buffer; a job body of
//! `BODY_BY_REFERENCE` bytes or more is kept as a reference to the stored
//! job's bytes and sent with a vectored write, as beanstalkd's `writev` does,
//! instead of being copied into the buffer first.

use super::Reply;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;

/// Bodies at least this large are sent from the job's own bytes.
pub const BODY_BY_REFERENCE: usize = 8 * 1024;

/// At most this many pieces go into one vectored write.
const MAX_SLICES: usize = 64;

#[derive(Debug, Default)]
pub struct Outbox {
    /// Finished pieces, in order.
    pieces: VecDeque<Bytes>,
    /// Small replies after the last piece.
    tail: BytesMut,
    len: usize,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a reply's exact wire bytes.
    pub fn push(&mut self, reply: &Reply) {
        let before = self.tail.len();
        match reply {
            Reply::Reserved { id, body } | Reply::Found { id, body }
                if body.len() >= BODY_BY_REFERENCE =>
            {
                let word: &[u8] = match reply {
                    Reply::Reserved { .. } => b"RESERVED ",
                    _ => b"FOUND ",
                };
                super::reply::encode_body_header(&mut self.tail, word, *id, body.len());
                self.len += self.tail.len() - before + body.len();
                self.pieces.push_back(self.tail.split().freeze());
                self.pieces.push_back(body.clone());
            }
            _ => {
                reply.encode(&mut self.tail);
                self.len += self.tail.len() - before;
            }
        }
    }

    /// Drops everything not yet written.
    pub fn clear(&mut self) {
        self.pieces.clear();
        self.tail.clear();
        self.len = 0;
    }

    /// Releases memory held while idle.
    pub fn shrink(&mut self) {
        debug_assert!(self.is_empty());
        *self = Outbox::default();
    }

    /// Keeps the buffers of an empty outbox for reuse unless they grew past
    /// `bytes` (a `stats` or `list-tubes` reply, a run of copied bodies).
    pub fn keep_at_most(&mut self, bytes: usize) {
        debug_assert!(self.is_empty());
        // The tail's own capacity is only what its view has left: after a
        // partial write or a split, a big allocation can hide behind a few
        // bytes. Reclaiming it shows its true size (and fails only if it is
        // not the tail's alone, which it is once everything is written).
        if self.tail.try_reclaim(bytes + 1) || self.pieces.capacity() > MAX_SLICES {
            self.shrink();
        }
    }

    /// Writes everything, with as few syscalls as the pieces allow.
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_to(cx, Pin::new(&mut *w))).await
    }

    /// [`Outbox::write_to`] as a poll function: the caller's future keeps no
    /// state of its own across a blocked write (what is left is in `self`),
    /// which keeps every session task small.
    pub fn poll_write_to<W: AsyncWrite>(
        &mut self,
        cx: &mut Context<'_>,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<()>> {
        if self.pieces.is_empty() {
            // Small replies only (every reply of a depth-1 client): written
            // from the tail itself, which keeps its buffer for the next ones
            // instead of handing it to a piece and allocating anew.
            while !self.tail.is_empty() {
                let n = ready!(w.as_mut().poll_write(cx, &self.tail))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                if n == self.tail.len() {
                    self.tail.clear();
                } else {
                    self.tail.advance(n);
                }
            }
            self.len = 0;
            return Poll::Ready(Ok(()));
        }
        if !self.tail.is_empty() {
            self.pieces.push_back(self.tail.split().freeze());
        }
        while !self.pieces.is_empty() {
            let mut n = if self.pieces.len() == 1 {
                ready!(w.as_mut().poll_write(cx, &self.pieces[0]))?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.pieces.len().min(MAX_SLICES);
                for (slice, piece) in slices.iter_mut().zip(&self.pieces) {
                    *slice = IoSlice::new(piece);
                }
                ready!(w.as_mut().poll_write_vectored(cx, &slices[..count]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            while n > 0 {
                let first = self
                    .pieces
                    .front_mut()
                    .expect("written bytes came from pieces");
                if n >= first.len() {
                    n -= first.len();
                    self.pieces.pop_front();
                } else {
                    first.advance(n);
                    n = 0;
                }
            }
        }
        self.len = 0;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes everything `out` holds to `sink`, which must take it all.
    fn drain<W: AsyncWrite + Unpin>(out: &mut Outbox, sink: &mut W) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(out.write_to(sink))
            .unwrap();
        assert!(out.is_empty());
    }

    fn written(replies: &[Reply]) -> (Vec<u8>, usize) {
        let mut out = Outbox::new();
        for r in replies {
            out.push(r);
        }
        let len = out.len();
        let mut sink = Vec::new();
        drain(&mut out, &mut sink);
        (sink, len)
    }

    #[test]
    fn big_and_small_bodies_give_the_same_bytes_as_encode() {
        let big = Bytes::from([vec![b'x'; BODY_BY_REFERENCE], b"\r\n".to_vec()].concat());
        let replies = vec![
            Reply::Inserted(1),
            Reply::Reserved {
                id: 1,
                body: big.clone(),
            },
            Reply::Found {
                id: 2,
                body: Bytes::from_static(b"hi\r\n"),
            },
            Reply::Found { id: 3, body: big },
            Reply::Deleted,
        ];
        let mut expected = BytesMut::new();
        for r in &replies {
            r.encode(&mut expected);
        }
        let (got, len) = written(&replies);
        assert_eq!(len, expected.len());
        assert_eq!(got, expected.to_vec());
    }

    /// Takes at most 3 bytes per call and is not ready every other call.
    struct Trickle {
        got: Vec<u8>,
        stall: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.stall = !self.stall;
            if self.stall {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(3);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            self.poll_write(cx, first)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn small_replies_resume_where_a_short_write_stopped_and_keep_their_buffer() {
        let mut out = Outbox::new();
        let mut expected = BytesMut::new();
        for id in [1, 22, 333] {
            out.push(&Reply::Inserted(id));
            Reply::Inserted(id).encode(&mut expected);
        }
        let mut sink = Trickle {
            got: Vec::new(),
            stall: false,
        };
        drain(&mut out, &mut sink);
        assert_eq!(sink.got, expected.to_vec());
        // A full write leaves the buffer in place for the next replies.
        out.push(&Reply::Deleted);
        let buffer = out.tail.as_ptr();
        let mut sink = Vec::new();
        drain(&mut out, &mut sink);
        assert_eq!(sink, b"DELETED\r\n");
        out.push(&Reply::Deleted);
        assert_eq!(out.tail.as_ptr(), buffer);
        assert!(out.pieces.is_empty());
    }

    #[test]
    fn an_empty_outbox_keeps_its_buffer_unless_it_grew_past_the_bound() {
        let mut out = Outbox::new();
        out.push(&Reply::Deleted);
        drain(&mut out, &mut Vec::new());
        out.keep_at_most(1024);
        assert!(out.tail.capacity() >= b"DELETED\r\n".len());
        out.push(&Reply::Ok(Bytes::from(vec![b'x'; 4096])));
        drain(&mut out, &mut Vec::new());
        out.keep_at_most(1024);
        assert_eq!(out.tail.capacity(), 0);
    }

    #[test]
    fn a_big_buffer_hidden_behind_a_partial_write_or_a_split_is_not_kept() {
        let big = || Reply::Ok(Bytes::from(vec![b'x'; 64 * 1024]));
        // Written 3 bytes at a time: the view shrinks with every write.
        let mut out = Outbox::new();
        out.push(&big());
        let mut sink = Trickle {
            got: Vec::new(),
            stall: false,
        };
        drain(&mut out, &mut sink);
        out.keep_at_most(1024);
        assert_eq!(out.tail.capacity(), 0);
        // After a body sent by reference, the tail is split off into a piece.
        let body = Bytes::from([vec![b'y'; BODY_BY_REFERENCE], b"\r\n".to_vec()].concat());
        out.push(&Reply::Found { id: 1, body });
        out.push(&big());
        drain(&mut out, &mut Vec::new());
        out.keep_at_most(1024);
        assert_eq!(out.tail.capacity(), 0);
        // A small buffer stays.
        out.push(&Reply::Deleted);
        drain(&mut out, &mut Vec::new());
        out.keep_at_most(1024);
        assert!(out.tail.capacity() > 0);
    }

    #[test]
    fn short_and_stalled_writes_resume_where_they_stopped() {
        let big = Bytes::from([vec![b'y'; BODY_BY_REFERENCE + 1], b"\r\n".to_vec()].concat());
        let replies = [
            Reply::Found {
                id: 7,
                body: big.clone(),
            },
            Reply::Inserted(8),
            Reply::Reserved { id: 9, body: big },
        ];
        let mut out = Outbox::new();
        let mut expected = BytesMut::new();
        for r in &replies {
            out.push(r);
            r.encode(&mut expected);
        }
        let mut sink = Trickle {
            got: Vec::new(),
            stall: false,
        };
        drain(&mut out, &mut sink);
        assert_eq!(sink.got, expected.to_vec());
    }
}
