//! The socket side of a session: TCP or UNIX streams, read so that an idle
//! connection holds no buffer and a request costs as few syscalls as possible.
//!
//! A read that returns less than the space offered has drained the socket's
//! receive queue, so the readiness tokio cached for it is cleared at once;
//! otherwise the next wait would cost an extra `recv` that returns EAGAIN
//! for every request of a request-reply client. Clearing goes through
//! `try_io`, which keeps any readiness that arrived during the read, so no
//! wake-up is lost.

use bytes::BytesMut;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest};

/// A client connection.
pub trait Connection: AsyncRead + AsyncWrite + Unpin {
    /// Ready when the socket may have input; otherwise the task is woken
    /// when it may. Needs no buffer, and unlike a `readable()` future it
    /// keeps no waiter in the caller's state (the waker is parked in the
    /// socket's registration), so an idle session stays small.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads what is available, at most `limit` bytes, into `buf`'s spare
    /// capacity; `Ok(0)` is EOF, `WouldBlock` means nothing was there after
    /// all. `limit` must be above 0, and so must the spare capacity.
    fn try_read_available(&self, buf: &mut BytesMut, limit: usize) -> io::Result<usize>;
}

macro_rules! connection_for {
    ($stream:ty) => {
        impl Connection for $stream {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_read_ready(self, cx)
            }

            fn try_read_available(&self, buf: &mut BytesMut, limit: usize) -> io::Result<usize> {
                let fd = self.as_raw_fd();
                let mut got = 0;
                let result = self.try_io(Interest::READABLE, || {
                    let offered = (buf.capacity() - buf.len()).min(limit);
                    got = read_into(fd, buf, offered)?;
                    if got > 0 && got < offered {
                        // Drained: let tokio wait for the next edge.
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Ok(got)
                });
                match result {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
                    other => other,
                }
            }
        }
    };
}

connection_for!(tokio::net::TcpStream);
connection_for!(tokio::net::UnixStream);

/// One `read(2)` of at most `max` bytes into the spare capacity of `buf`.
fn read_into(fd: RawFd, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: the kernel writes at most `len <= spare.len()` bytes into
    // memory we own; exactly the `n` bytes it reports are then marked
    // initialised.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: see above; `n <= len <= spare.len()`.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}
