//! One task per connection: socket bytes in, engine, replies out.
//!
//! The session decodes every complete frame already buffered, applies them
//! under one engine lock, and writes all their replies with one write, so a
//! pipelining client costs a fraction of the syscalls of one reply per write.
//! While blocked in `reserve` it keeps reading (bounded) only to notice a
//! half-close, which beanstalkd answers with TIMED_OUT before closing.
//!
//! Invariant: whatever way the task ends, the engine forgets the client
//! (`Session`'s drop), so its reserved jobs go back to ready at once.
//!
//! Shutdown: once [`Sessions::stopping`] (the hub's registry), a session still
//! answers every complete command it has received (reads prefer ready input
//! over the flag, so a command sent just before SIGTERM gets its reply),
//! flushes, and then closes instead of waiting for more. A blocked reserve
//! is closed without a reply. The session never stops between applying a
//! batch and writing its replies.

use crate::connection::Connection;
use crate::engine::ClientId;
use crate::hub::{Batch, Hub, Step};
use crate::protocol::{Codec, Command, Frame, Outbox, Reply, DEFAULT_READ_SIZE, MAX_LINE};
use crate::sessions::{Sessions, SlotId};
use bytes::BytesMut;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Poll};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// Bytes read ahead while a reserve is blocked; past this the session stops
/// reading until the reserve is answered.
const READ_AHEAD_WHILE_WAITING: usize = 64 * 1024;

/// Read buffer growth step, and the size of a fresh read buffer until a
/// big put raises it (the codec's, so both agree on what a default read
/// buffer is).
const READ_CHUNK: usize = DEFAULT_READ_SIZE;

/// Read buffer capacity kept while waiting for the rest of a command.
const PARTIAL_KEPT: usize = 1024;

/// Most spare [`Work`]s a runtime thread keeps.
const SPARE_WORK: usize = 32;

/// Most frame slots a spare [`Work`] keeps.
const SPARE_FRAMES: usize = 64;

/// Largest reply buffer a spare [`Work`] keeps.
const SPARE_REPLY_BUFFER: usize = 4096;

thread_local! {
    /// The `Work` of sessions that went idle on this thread, for the next
    /// session that gets input. A depth-1 client goes idle after every
    /// command; without these, each command paid for a fresh box, read
    /// buffer, frame queue, reply buffer and the reply's hand-off to the
    /// writer, and freed them again. Bounded, and only buffers of ordinary
    /// size are kept, so what they hold is a constant of the process, not
    /// of its connections. (Keeping read buffers relies on glibc's fast bins
    /// being off, see `server::tune_allocator`.)
    // Boxes, not `Work`s: a session holds its `Work` boxed (so an idle
    // task holds a null pointer), and the box is what is handed back.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<Work>>> = const { RefCell::new(Vec::new()) };
}

/// What a session holds while it has something in hand: input not yet
/// decoded, a command half decoded, frames not yet applied, replies not yet
/// written. Boxed, and given up whenever the connection is idle between
/// commands (to this thread's [`SPARE`]s): the task of an idle session then
/// holds one null pointer instead of these (every byte of the task's state
/// is paid by every connection, idle or not).
#[derive(Debug)]
struct Work {
    codec: Codec,
    input: BytesMut,
    frames: VecDeque<Frame>,
    output: Outbox,
}

impl Work {
    fn new(max_job_size: u32) -> Box<Work> {
        Box::new(Work {
            codec: Codec::new(max_job_size),
            input: BytesMut::new(),
            frames: VecDeque::new(),
            output: Outbox::new(),
        })
    }

    /// A spare `Work` of this thread if there is one (see [`SPARE`]).
    fn take(max_job_size: u32) -> Box<Work> {
        SPARE
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten()
            .filter(|w| w.codec.max_job_size() == max_job_size)
            .unwrap_or_else(|| Work::new(max_job_size))
    }

    /// Hands an idle session's `Work` to this thread's spares, keeping its
    /// buffers only if they are of ordinary size: the read buffer only if
    /// its allocation is exactly the default read size (the least any
    /// session uses, so the codec's copy rule holds for whoever takes it).
    /// No stored body shares it: the codec moves what follows a body it
    /// splits off to a buffer of its own.
    fn give_back(mut self: Box<Work>) {
        debug_assert!(self.is_idle());
        // `capacity()` is only the room after the view's start: reclaiming
        // shows the allocation's size (at least READ_CHUNK, and not more).
        let default_size =
            self.input.try_reclaim(READ_CHUNK) && !self.input.try_reclaim(READ_CHUNK + 1);
        if !default_size {
            self.input = BytesMut::new();
        }
        if self.frames.capacity() > SPARE_FRAMES {
            self.frames = VecDeque::new();
        }
        self.output.keep_at_most(SPARE_REPLY_BUFFER);
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_WORK {
                spare.push(self);
            }
        });
    }

    /// Nothing received is pending: no input, no frame, no half command.
    fn is_idle(&self) -> bool {
        self.input.is_empty() && self.frames.is_empty() && self.codec.is_between_frames()
    }

    /// Before the session waits on its peer (maybe for hours): true if
    /// nothing is pending, and the whole `Work` can go; otherwise lets go of
    /// spare capacity and keeps what is pending.
    fn slim(&mut self) -> bool {
        if self.is_idle() {
            return true;
        }
        self.output.shrink();
        if self.frames.is_empty() {
            self.frames = VecDeque::new();
        }
        if self.input.len() < MAX_LINE && self.input.capacity() > PARTIAL_KEPT {
            // Part of a command (a slow client, or a slowloris holding
            // thousands of connections): keep its bytes, not a read buffer.
            self.input = BytesMut::from(&self.input[..]);
        }
        false
    }
}

/// Serves one connection until it closes, quits, fails, or shutdown begins
/// and its received input is answered. The client is registered with the
/// engine at once, not when the future is first polled. Spawn it with
/// [`Sessions::spawn`], which gives the `slot`.
pub fn run<S>(hub: Arc<Hub>, stream: S, max_job_size: u32, slot: SlotId) -> impl Future<Output = ()>
where
    S: Connection,
{
    Session::new(hub, stream, max_job_size, slot).run()
}

/// One connection: its socket, its engine client and the decoder state that
/// outlives a read. Everything here lives as long as the connection, in the
/// session task's state, so it is kept to what an idle connection needs.
/// Dropping it unregisters the client (however the task ends, aborted
/// included), so its reserved jobs go back to ready at once.
#[derive(Debug)]
pub struct Session<S> {
    hub: Arc<Hub>,
    client: ClientId,
    stream: S,
    max_job_size: u32,
    /// Room a fresh read buffer offers: [`READ_CHUNK`], or what the codec
    /// raised it to after a bigger put ([`Codec::read_size`]). Kept here
    /// because the codec goes with the idle session's buffers.
    read_size: u32,
    /// Its place in the hub's [`Sessions`], through which shutdown wakes it.
    slot: SlotId,
}

impl<S: Connection> Session<S> {
    /// Registers a new client with the engine; `slot` is the task's, from
    /// [`Sessions::spawn`].
    pub fn new(hub: Arc<Hub>, stream: S, max_job_size: u32, slot: SlotId) -> Self {
        let client = hub.connect();
        Session {
            hub,
            client,
            stream,
            max_job_size,
            read_size: READ_CHUNK as u32,
            slot,
        }
    }

    fn sessions(&self) -> &Sessions {
        self.hub.sessions()
    }

    /// The engine's id of this client (also used in log lines).
    pub fn id(&self) -> ClientId {
        self.client
    }

    /// See [`run`].
    pub fn run(self) -> impl Future<Output = ()> {
        // Not an `async fn`: one moves its arguments into locals, so the
        // task would hold the session twice. An async block uses what it
        // captures in place.
        let mut session = self;
        async move {
            if let Err(e) = session.serve().await {
                tracing::debug!(conn = session.client, "connection ended: {e}");
            }
            let _ = session.stream.shutdown().await;
            tracing::debug!(conn = session.client, "connection closed");
        }
    }

    // Not an `async fn`, for the same reason as `run`: `self` is held once.
    #[allow(clippy::manual_async_fn)]
    fn serve(&mut self) -> impl Future<Output = io::Result<()>> + '_ {
        async move {
            // Before any wait: shutdown wakes the session through this.
            poll_fn(|cx| {
                self.sessions().register(&self.slot, cx.waker());
                Poll::Ready(())
            })
            .await;
            let mut work: Option<Box<Work>> = None;
            // The peer shut down its sending side: what it sent is still served,
            // every blocking reserve times out at once, then the session ends.
            let mut eof = false;
            loop {
                let w = work.get_or_insert_with(|| Work::take(self.max_job_size));
                w.codec.set_read_size(self.read_size as usize);
                while let Some(frame) = w.codec.decode(&mut w.input)? {
                    w.frames.push_back(frame);
                }
                self.read_size = w.codec.read_size() as u32;
                if !w.frames.is_empty() {
                    if w.frames
                        .iter()
                        .any(|f| matches!(f, Frame::Command(Command::Stats)))
                    {
                        // Let connections whose close is already pending finish it,
                        // so `current-connections` does not count them.
                        tokio::task::yield_now().await;
                    }
                    let Batch { step, sync_to } =
                        self.hub.run(self.client, &mut w.frames, &mut w.output);
                    if let Some(pos) = sync_to {
                        // Nothing is acknowledged before it is on disk (-f 0).
                        // Boxed (a watch receiver and more): rarely-taken paths
                        // stay out of every idle connection's task.
                        Box::pin(self.hub.wait_synced(pos)).await?;
                    }
                    match step {
                        Step::Done => {}
                        Step::Quit => return flush(&mut self.stream, &mut w.output).await,
                        Step::Wait => {
                            let answer = if eof {
                                Box::pin(give_up_wait(&self.hub, self.client)).await
                            } else {
                                flush(&mut self.stream, &mut w.output).await?;
                                // Blocked, maybe for hours: like an idle connection,
                                // hold no buffers meanwhile (input read ahead gets
                                // one when it arrives).
                                if w.slim() {
                                    if let Some(idle) = work.take() {
                                        idle.give_back();
                                    }
                                }
                                match wait(&mut *self, &mut work).await? {
                                    WaitEnd::Answer(reply) => reply,
                                    WaitEnd::HalfClosed => {
                                        eof = true;
                                        Reply::TimedOut
                                    }
                                    WaitEnd::Shutdown => return Ok(()),
                                }
                            };
                            work.get_or_insert_with(|| Work::take(self.max_job_size))
                                .output
                                .push(&answer);
                            // Frames that arrived while blocked are served next.
                            continue;
                        }
                    }
                }
                if eof {
                    // Like beanstalkd, keep applying what was received even if the
                    // peer is gone entirely and its replies cannot be delivered.
                    let _ = flush(&mut self.stream, &mut w.output).await;
                    w.output.clear();
                    if w.frames.is_empty() {
                        return Ok(());
                    }
                    continue;
                }
                flush(&mut self.stream, &mut w.output).await?;
                if !w.frames.is_empty() {
                    // The batch stopped at its output bound: serve the rest before
                    // reading more, so input is bounded by what the client's
                    // reading lets through.
                    continue;
                }
                if w.slim() {
                    // Idle between commands: hold no buffers while waiting, so an
                    // idle connection costs little more than its task and socket.
                    if let Some(idle) = work.take() {
                        idle.give_back();
                    }
                }
                // Wait for input or shutdown. Input is looked at first: what
                // has arrived is answered even once shutdown has begun; only an
                // idle connection is closed. Written out here rather than as a
                // function or `select!`: this wait is where idle connections
                // spend their life, so its state is what each of them pays.
                let readable = poll_fn(|cx| match self.stream.poll_read_ready(cx) {
                    Poll::Ready(r) => Poll::Ready(r.map(|()| true)),
                    Poll::Pending if self.sessions().stopping() => Poll::Ready(Ok(false)),
                    Poll::Pending => Poll::Pending,
                });
                if !readable.await? {
                    return Ok(());
                }
                let w = work.get_or_insert_with(|| Work::take(self.max_job_size));
                let input = &mut w.input;
                let spare = input.capacity() - input.len();
                // A fresh read (a spare's buffer is of the default size)
                // offers the whole read size; one that continues a command,
                // at least a quarter chunk.
                let fresh = input.is_empty() && w.codec.is_between_frames();
                if spare < READ_CHUNK / 4 || (fresh && spare < self.read_size as usize) {
                    input.reserve(self.read_size as usize);
                }
                let n = match self.stream.try_read_available(input, usize::MAX) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    return Ok(());
                }
            }
        }
    }
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
async fn give_up_wait(hub: &Hub, client: ClientId) -> Reply {
    if hub.abandon_wait(client) {
        return Reply::TimedOut;
    }
    // A job was handed over first: it is in the hub's mailbox.
    poll_fn(|cx| hub.poll_answer(client, cx))
        .await
        .unwrap_or(Reply::TimedOut)
}

/// Waits for the answer to a blocked reserve, reading ahead at most
/// [`READ_AHEAD_WHILE_WAITING`] bytes of input meanwhile (to notice a
/// half-close); `work` gets buffers only once input arrives.
///
/// Written as one poll function rather than an `async fn` with `select!`:
/// this future is part of every connection's task state, and this way it
/// is two references and a flag (24 bytes, against 168 for the `select!`
/// version, which had to be boxed). The answer is looked at first: a job
/// handed over is delivered even if shutdown has begun.
fn wait<'a, S: Connection>(
    session: &'a mut Session<S>,
    work: &'a mut Option<Box<Work>>,
) -> impl Future<Output = io::Result<WaitEnd>> + 'a {
    // The peer half-closed, but the answer came first: only it is awaited.
    let mut answered = false;
    poll_fn(move |cx| loop {
        if let Poll::Ready(r) = session.hub.poll_answer(session.client, cx) {
            return Poll::Ready(Ok(r.map_or(WaitEnd::Shutdown, WaitEnd::Answer)));
        }
        if answered {
            return Poll::Pending;
        }
        if session.sessions().stopping() {
            return Poll::Ready(Ok(WaitEnd::Shutdown));
        }
        let held = work.as_ref().map_or(0, |w| w.input.len());
        let room = READ_AHEAD_WHILE_WAITING.saturating_sub(held);
        if room == 0 {
            return Poll::Pending;
        }
        if let Err(e) = ready!(session.stream.poll_read_ready(cx)) {
            return Poll::Ready(Err(e));
        }
        let input = &mut work
            .get_or_insert_with(|| Work::take(session.max_job_size))
            .input;
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK.min(room));
        }
        match session.stream.try_read_available(input, room) {
            Ok(0) => {}
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
        if session.hub.abandon_wait(session.client) {
            return Poll::Ready(Ok(WaitEnd::HalfClosed));
        }
        answered = true;
    })
}

/// Writes `output` out; its future holds two references, the rest of the
/// write's state is in `output`.
fn flush<'a, S: AsyncWrite + Unpin>(
    stream: &'a mut S,
    output: &'a mut Outbox,
) -> impl Future<Output = io::Result<()>> + 'a {
    poll_fn(move |cx| {
        if output.is_empty() {
            return Poll::Ready(Ok(()));
        }
        output.poll_write_to(cx, Pin::new(&mut *stream))
    })
}

impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        /// Leaves the registry after the disconnect, and even if it
        /// panics: shutdown waits for every slot to be vacated.
        struct Leave<'a>(&'a Sessions, &'a SlotId);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.leave(self.1);
            }
        }
        let _leave = Leave(self.hub.sessions(), &self.slot);
        self.hub.disconnect(self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use std::task::Context;

    /// Every connection pays for its task's state, idle or not. tokio
    /// allocates a task (~104 bytes of header and trailer plus this state)
    /// 128-byte aligned, so up to this much state takes 256 bytes; one
    /// byte more takes 384. (Release builds measured 128, debug 136.)
    const MAX_TASK_STATE: usize = 152;

    /// A blocked reserve's state, part of the task's.
    const MAX_WAIT_STATE: usize = 24;

    #[tokio::test]
    async fn a_session_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let hub = Arc::new(Hub::for_tests());
        let (mut blocked, mut size) = (0, 0);
        hub.sessions().spawn(|slot| {
            let mut session = Session::new(hub.clone(), stream, 65535, slot);
            blocked = std::mem::size_of_val(&wait(&mut session, &mut None));
            let task = session.run();
            size = std::mem::size_of_val(&task);
            task
        });
        println!("blocked reserve state: {blocked} bytes");
        assert!(
            blocked <= MAX_WAIT_STATE,
            "blocked reserve state is {blocked} bytes"
        );
        println!("session task state: {size} bytes");
        assert!(size <= MAX_TASK_STATE, "session task state is {size} bytes");
    }

    /// A UNIX stream that records the room each read offered.
    struct Recording {
        inner: tokio::net::UnixStream,
        offers: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl tokio::io::AsyncRead for Recording {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recording {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl Connection for Recording {
        fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.inner.poll_read_ready(cx)
        }

        fn try_read_available(&self, buf: &mut BytesMut, limit: usize) -> io::Result<usize> {
            let offered = buf.capacity() - buf.len();
            self.offers.lock().unwrap().push(offered);
            self.inner.try_read_available(buf, limit)
        }
    }

    #[tokio::test]
    async fn after_a_big_put_a_fresh_read_has_room_for_the_next_one() {
        use tokio::io::AsyncReadExt;
        let (server, mut client) = tokio::net::UnixStream::pair().unwrap();
        let offers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hub = Arc::new(Hub::for_tests());
        let stream = Recording {
            inner: server,
            offers: offers.clone(),
        };
        hub.sessions()
            .spawn(|slot| Session::new(hub.clone(), stream, 65535, slot).run());
        let body = 40_000;
        let put = |len: usize| {
            let mut put = format!("put 0 0 10 {len}\r\n").into_bytes();
            put.resize(put.len() + len, b'x');
            put.extend_from_slice(b"\r\n");
            put
        };
        let mut first_reads = Vec::new();
        // A smaller big put does not lower the room offered.
        for (id, len) in [(1, body), (2, body), (3, 20_000), (4, 20_000)] {
            let before = offers.lock().unwrap().len();
            client.write_all(&put(len)).await.unwrap();
            let expected = format!("INSERTED {id}\r\n");
            let mut reply = vec![0; expected.len()];
            client.read_exact(&mut reply).await.unwrap();
            assert_eq!(reply, expected.as_bytes());
            first_reads.push(offers.lock().unwrap()[before]);
        }
        assert!(first_reads[0] < body, "{first_reads:?}");
        for offered in &first_reads[1..] {
            assert!(*offered >= body + 2 + MAX_LINE, "{first_reads:?}");
        }
    }

    /// Runs `f` on a thread of its own, so the spares start empty.
    fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    #[test]
    fn a_session_takes_its_work_from_the_spares_and_gives_it_back_when_idle() {
        on_fresh_thread(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                use tokio::io::AsyncReadExt;
                let (server, mut client) = tokio::net::UnixStream::pair().unwrap();
                let hub = Arc::new(Hub::for_tests());
                hub.sessions()
                    .spawn(|slot| Session::new(hub.clone(), server, 65535, slot).run());
                for _ in 0..3 {
                    client.write_all(b"delete 1\r\n").await.unwrap();
                    let mut reply = [0; 11];
                    client.read_exact(&mut reply).await.unwrap();
                    assert_eq!(&reply, b"NOT_FOUND\r\n");
                    // Let the session go idle after its reply.
                    tokio::task::yield_now().await;
                    // One spare, used again for each command: a fresh `Work`
                    // per command would leave one more spare each time.
                    assert_eq!(SPARE.with_borrow(|s| s.len()), 1);
                }
            });
        });
    }

    #[test]
    fn an_idle_sessions_work_serves_the_next_with_its_buffers() {
        on_fresh_thread(|| {
            let mut w = Work::take(100);
            w.input.reserve(READ_CHUNK);
            w.input.extend_from_slice(b"delete 1\r\n");
            while let Some(frame) = w.codec.decode(&mut w.input).unwrap() {
                w.frames.push_back(frame);
            }
            w.frames.clear();
            w.output.push(&Reply::Deleted);
            w.output.clear();
            let (boxed, frames) = (&*w as *const Work, w.frames.capacity());
            let read = w.input.as_ptr() as usize - b"delete 1\r\n".len();
            assert!(w.slim());
            w.give_back();
            let w = Work::take(100);
            assert_eq!(&*w as *const Work, boxed);
            assert_eq!(w.frames.capacity(), frames);
            // The read buffer is reused from its start.
            assert_eq!(
                (w.input.as_ptr() as usize, w.input.capacity()),
                (read, READ_CHUNK)
            );
            // Another server's limit (tests run several) gets its own.
            w.give_back();
            assert_eq!(Work::take(200).codec.max_job_size(), 200);
            assert_eq!(SPARE.with_borrow(|s| s.len()), 0);
        });
    }

    #[test]
    fn a_spare_keeps_no_big_or_shared_buffer_and_the_spares_are_bounded() {
        on_fresh_thread(|| {
            let mut big = Work::take(100);
            big.frames.reserve(10 * SPARE_FRAMES);
            big.input.reserve(8 * READ_CHUNK);
            big.give_back();
            let mut w = Work::take(100);
            assert_eq!((w.frames.capacity(), w.input.capacity()), (0, 0));

            // A 16 KiB view at the end of a bigger allocation (helper-21's
            // case: a body split off its front) is not kept.
            w.input.reserve(2 * READ_CHUNK);
            w.input.extend_from_slice(&[b'y'; READ_CHUNK]);
            w.input.advance(READ_CHUNK);
            assert_eq!(w.input.capacity(), READ_CHUNK);
            w.give_back();
            assert_eq!(Work::take(100).input.capacity(), 0);

            for _ in 0..SPARE_WORK + 5 {
                Work::new(100).give_back();
            }
            assert_eq!(SPARE.with_borrow(|s| s.len()), SPARE_WORK);
        });
    }
}
