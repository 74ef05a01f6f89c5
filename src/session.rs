//! One task per connection: socket bytes in, engine, replies out.
//!
//! The session decodes every complete frame already buffered, applies them
//! under one engine lock, and writes all their replies with one write, so a
//! pipelining client costs a fraction of the syscalls of one reply per write.
//! While blocked in `reserve` it keeps reading (bounded) only to notice a
//! half-close, which beanstalkd answers with TIMED_OUT before closing.
//!
//! Invariant: whatever way the task ends, the engine forgets the client
//! (`Disconnect` guard), so its reserved jobs go back to ready at once.
//!
//! Shutdown: when the server's `shutdown` token is cancelled, a session still
//! answers every complete command it has received (reads prefer ready input
//! over the token, so a command sent just before SIGTERM gets its reply),
//! flushes, and then closes instead of waiting for more. A blocked reserve
//! is closed without a reply. The session never stops between applying a
//! batch and writing its replies.

use crate::connection::Connection;
use crate::engine::ClientId;
use crate::hub::{Hub, Step};
use crate::protocol::{Codec, Command, Frame, Outbox, Reply, MAX_LINE};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// Bytes read ahead while a reserve is blocked; past this the session stops
/// reading until the reserve is answered.
const READ_AHEAD_WHILE_WAITING: usize = 64 * 1024;

/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// Read buffer capacity kept while waiting for the rest of a command.
const PARTIAL_KEPT: usize = 1024;

/// What a session holds while it has something in hand: input not yet
/// decoded, frames not yet applied, replies not yet written. Boxed, and
/// dropped whenever the connection is idle: the task of an idle session
/// then holds one null pointer instead of these headers (every byte of the
/// task's state is paid by every connection, idle or not).
#[derive(Debug, Default)]
struct Work {
    input: BytesMut,
    frames: VecDeque<Frame>,
    output: Outbox,
}

/// Serves one connection until it closes, quits, fails, or `shutdown` is
/// cancelled and its received input is answered.
pub async fn run<S>(hub: Arc<Hub>, mut stream: S, max_job_size: u32, shutdown: CancellationToken)
where
    S: Connection,
{
    let client = Disconnect::new(hub.clone());
    if let Err(e) = serve(&hub, client.id, &mut stream, max_job_size, &shutdown).await {
        tracing::debug!(client = client.id, "connection ended: {e}");
    }
    let _ = stream.shutdown().await;
}

async fn serve<S>(
    hub: &Hub,
    client: ClientId,
    stream: &mut S,
    max_job_size: u32,
    shutdown: &CancellationToken,
) -> io::Result<()>
where
    S: Connection,
{
    let mut codec = Codec::new(max_job_size);
    let mut work: Option<Box<Work>> = None;
    // The peer shut down its sending side: what it sent is still served,
    // every blocking reserve times out at once, then the session ends.
    let mut eof = false;
    loop {
        let w = work.get_or_insert_with(Box::default);
        while let Some(frame) = codec.decode(&mut w.input)? {
            w.frames.push_back(frame);
        }
        if !w.frames.is_empty() {
            if w.frames
                .iter()
                .any(|f| matches!(f, Frame::Command(Command::Stats)))
            {
                // Let connections whose close is already pending finish it,
                // so `current-connections` does not count them.
                tokio::task::yield_now().await;
            }
            let batch = hub.run(client, &mut w.frames, &mut w.output);
            if let Some(pos) = batch.sync_to {
                // Nothing is acknowledged before it is on disk (-f 0).
                // Boxed, like the blocked-reserve wait below: rarely-taken
                // paths stay out of every idle connection's task.
                Box::pin(hub.wait_synced(pos)).await?;
            }
            match batch.step {
                Step::Done => {}
                Step::Quit => return flush(stream, &mut w.output).await,
                Step::Wait(reply) => {
                    let answer = if eof {
                        Box::pin(give_up_wait(hub, client, reply)).await
                    } else {
                        flush(stream, &mut w.output).await?;
                        // Blocked, maybe for hours: like an idle connection,
                        // hold no buffers meanwhile (input read ahead gets
                        // one when it arrives).
                        if w.input.is_empty() && w.frames.is_empty() {
                            work = None;
                        } else {
                            w.output.shrink();
                            if w.frames.is_empty() {
                                w.frames = VecDeque::new();
                            }
                        }
                        let end = Box::pin(wait(hub, client, stream, &mut work, reply, shutdown));
                        match end.await? {
                            WaitEnd::Answer(reply) => reply,
                            WaitEnd::HalfClosed => {
                                eof = true;
                                Reply::TimedOut
                            }
                            WaitEnd::Shutdown => return Ok(()),
                        }
                    };
                    work.get_or_insert_with(Box::default).output.push(&answer);
                    // Frames that arrived while blocked are served next.
                    continue;
                }
            }
        }
        if eof {
            // Like beanstalkd, keep applying what was received even if the
            // peer is gone entirely and its replies cannot be delivered.
            let _ = flush(stream, &mut w.output).await;
            w.output.clear();
            if w.frames.is_empty() {
                return Ok(());
            }
            continue;
        }
        flush(stream, &mut w.output).await?;
        if !w.frames.is_empty() {
            // The batch stopped at its output bound: serve the rest before
            // reading more, so input is bounded by what the client's
            // reading lets through.
            continue;
        }
        if w.input.is_empty() {
            // Idle between commands: hold no buffers while waiting, so an
            // idle connection costs little more than its task and socket.
            work = None;
        } else {
            w.output.shrink();
            w.frames = VecDeque::new();
            if w.input.len() < MAX_LINE && w.input.capacity() > PARTIAL_KEPT {
                // Part of a command (a slow client, or a slowloris holding
                // thousands of connections): keep its bytes, not a read
                // buffer.
                w.input = BytesMut::from(&w.input[..]);
            }
        }
        if !readable_or_shutdown(stream, shutdown).await? {
            return Ok(());
        }
        let input = &mut work.get_or_insert_with(Box::default).input;
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        let n = match stream.try_read_available(input, usize::MAX) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
    }
}

/// Waits until the socket may have input (`true`) or `shutdown` is cancelled
/// (`false`). Input is looked at first: what has arrived is answered even
/// once shutdown has begun; only an idle connection is closed.
async fn readable_or_shutdown<S: Connection>(
    stream: &S,
    shutdown: &CancellationToken,
) -> io::Result<bool> {
    let mut cancelled = pin!(shutdown.cancelled());
    poll_fn(|cx| {
        if let Poll::Ready(r) = stream.poll_read_ready(cx) {
            return Poll::Ready(r.map(|()| true));
        }
        cancelled.as_mut().poll(cx).map(|()| Ok(false))
    })
    .await
}

/// How a blocked reserve ended.
enum WaitEnd {
    Answer(Reply),
    /// The peer half-closed: the reserve was withdrawn; answer TIMED_OUT.
    HalfClosed,
    /// The server is shutting down: end the session without a reply (the
    /// disconnect guard returns a job that may have been handed over).
    Shutdown,
}

/// Withdraws a reserve at once (the peer already half-closed): TIMED_OUT,
/// unless a job was handed over first.
async fn give_up_wait(hub: &Hub, client: ClientId, reply: oneshot::Receiver<Reply>) -> Reply {
    if hub.abandon_wait(client) {
        return Reply::TimedOut;
    }
    reply.await.unwrap_or(Reply::TimedOut)
}

/// Waits for the answer to a blocked reserve, reading ahead at most
/// [`READ_AHEAD_WHILE_WAITING`] bytes of input meanwhile (to notice a
/// half-close); `work` gets buffers only once input arrives.
async fn wait<S>(
    hub: &Hub,
    client: ClientId,
    stream: &mut S,
    work: &mut Option<Box<Work>>,
    mut reply: oneshot::Receiver<Reply>,
    shutdown: &CancellationToken,
) -> io::Result<WaitEnd>
where
    S: Connection,
{
    loop {
        let held = work.as_ref().map_or(0, |w| w.input.len());
        let room = READ_AHEAD_WHILE_WAITING.saturating_sub(held);
        if room == 0 {
            return Ok(tokio::select! {
                r = &mut reply => r.map_or(WaitEnd::Shutdown, WaitEnd::Answer),
                () = shutdown.cancelled() => WaitEnd::Shutdown,
            });
        }
        tokio::select! {
            r = &mut reply => return Ok(r.map_or(WaitEnd::Shutdown, WaitEnd::Answer)),
            () = shutdown.cancelled() => return Ok(WaitEnd::Shutdown),
            r = poll_fn(|cx| stream.poll_read_ready(cx)) => r?,
        }
        let input = &mut work.get_or_insert_with(Box::default).input;
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK.min(room));
        }
        match stream.try_read_available(input, room) {
            Ok(0) => {}
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        if hub.abandon_wait(client) {
            return Ok(WaitEnd::HalfClosed);
        }
        // The answer raced the half-close: it is in the channel.
        return Ok(reply.await.map_or(WaitEnd::Shutdown, WaitEnd::Answer));
    }
}

async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, output: &mut Outbox) -> io::Result<()> {
    if !output.is_empty() {
        output.write_to(stream).await?;
    }
    Ok(())
}

/// Registers the client with the engine and unregisters it on drop.
struct Disconnect {
    hub: Arc<Hub>,
    id: ClientId,
}

impl Disconnect {
    fn new(hub: Arc<Hub>) -> Disconnect {
        let id = hub.connect();
        Disconnect { hub, id }
    }
}

impl Drop for Disconnect {
    fn drop(&mut self) {
        self.hub.disconnect(self.id);
    }
}
