//! The one owner of the engine: a mutex around it, plus the mailboxes that
//! carry replies to connections blocked in `reserve`, and the registry of
//! live sessions that shutdown goes through.
//!
//! Every critical section is short and does no I/O: sessions lock once per
//! batch of pipelined commands, the timer task once per tick. Keeping the
//! ownership choice in this module lets it change (owner task vs inline lock)
//! without touching sessions or the engine.

use crate::binlog::SyncShared;
use crate::clock::Clock;
use crate::engine::{ClientId, Engine, Outcome, Time};
use crate::protocol::{Command, Frame, Outbox, Reply};
use crate::sessions::Sessions;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;

/// What a session must do after a batch: wait for the binlog to reach
/// `sync_to` on disk (`-f 0`) before writing the replies, then act on `step`.
#[derive(Debug)]
pub struct Batch {
    pub step: Step,
    pub sync_to: Option<u64>,
}

/// How a session's batch ended.
#[derive(Debug)]
pub enum Step {
    /// Every frame was answered.
    Done,
    /// The client is blocked in reserve; [`Hub::poll_answer`] gives the
    /// answer.
    Wait,
    /// The client sent `quit`.
    Quit,
}

/// Where the answer to a blocked reserve is left for its session: one map
/// entry per waiting client, where a channel per wait cost an allocation
/// of 104 bytes.
#[derive(Debug)]
enum Mailbox {
    /// Not answered yet; the waker of the session waiting for it.
    Waiting(Option<Waker>),
    /// Boxed, so waiting entries stay small: an answer is only here until
    /// its session runs.
    Answered(Box<Reply>),
}

#[derive(Debug)]
struct State {
    engine: Engine,
    waiters: HashMap<ClientId, Mailbox>,
    /// The most the engine held since memory was last given back.
    held_peak: usize,
}

#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    clock: Clock,
    /// Wakes the timer task when a deadline earlier than its target appears.
    timer_wake: Notify,
    /// The deadline the timer task sleeps towards (`u64::MAX`: none).
    timer_target: AtomicU64,
    /// Set when replies must wait for their binlog records to be synced.
    sync: Option<Arc<SyncShared>>,
    /// Signalled when the engine let go of much of its memory (see
    /// [`Hub::memory_released`]).
    released: Notify,
    /// The live session tasks (shutdown wakes and waits for them here).
    sessions: Sessions,
}

/// At least this much must have been let go before a release is
/// signalled: the allocator keeps smaller amounts at no real cost.
const RELEASE_FROM: usize = 4 << 20;

/// What a connection costs, buffers aside (protocol.md §4: 0.9-1.2 KiB).
const MEMORY_PER_CONNECTION: usize = 1024;

const NO_DEADLINE: u64 = u64::MAX;

/// Replies buffered per batch before the session must write them out.
pub const MAX_BATCH_OUTPUT: usize = 256 * 1024;

impl Hub {
    /// `sync` is the binlog's sync handle, when persistence is on.
    pub fn new(engine: Engine, clock: Clock, sync: Option<Arc<SyncShared>>) -> Hub {
        Hub {
            state: Mutex::new(State {
                engine,
                waiters: HashMap::new(),
                held_peak: 0,
            }),
            clock,
            timer_wake: Notify::new(),
            timer_target: AtomicU64::new(NO_DEADLINE),
            sync: sync.filter(|s| s.sync_before_reply()),
            released: Notify::new(),
            sessions: Sessions::default(),
        }
    }

    /// The live session tasks.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Resolves once jobs and connections hold half of what they held at
    /// their peak since the last time, and at least 4 MiB less: a backlog
    /// drained, or thousands of clients left, and their memory is free. The
    /// allocator keeps freed memory for reuse; the server then asks it to
    /// give that back to the system.
    pub async fn memory_released(&self) {
        self.released.notified().await
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state is still the
        // best we have, so keep serving rather than cascading the panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn connect(&self) -> ClientId {
        self.lock().engine.connect()
    }

    pub fn disconnect(&self, client: ClientId) {
        let now = self.clock.now();
        let mut state = self.lock();
        state.waiters.remove(&client);
        state.engine.disconnect(now, client);
        self.after_change(&mut state);
    }

    /// Applies queued frames in order until they run out, the client blocks
    /// or quits, or `MAX_BATCH_OUTPUT` bytes of replies are pending (the rest
    /// stay queued). Replies are appended to `out`.
    pub fn run(&self, client: ClientId, frames: &mut VecDeque<Frame>, out: &mut Outbox) -> Batch {
        let now = self.clock.now();
        let mut state = self.lock();
        let logged_before = state.engine.journal_position();
        let mut step = Step::Done;
        // Bounded output per batch: a client that pipelines thousands of
        // `peek`s of a big job, and reads slowly, costs at most this much
        // buffered reply (plus one reply) before back-pressure applies.
        while out.len() < MAX_BATCH_OUTPUT {
            let Some(frame) = frames.pop_front() else {
                break;
            };
            let cmd = match frame {
                Frame::Error(reply) => {
                    tracing::trace!(conn = client, "-> {}", reply.head());
                    out.push(&reply);
                    continue;
                }
                Frame::Command(Command::Quit) => {
                    tracing::trace!(conn = client, "<- quit");
                    step = Step::Quit;
                    break;
                }
                Frame::Command(cmd) => cmd,
            };
            // -VV: every command and reply, as beanstalkd prints them (the
            // arguments are only formatted when trace is on).
            tracing::trace!(conn = client, "<- {cmd}");
            match state.engine.apply(now, client, cmd) {
                Outcome::Reply(reply) => {
                    tracing::trace!(conn = client, "-> {}", reply.head());
                    out.push(&reply)
                }
                Outcome::Wait => {
                    state.waiters.insert(client, Mailbox::Waiting(None));
                    step = Step::Wait;
                    break;
                }
            }
        }
        state.engine.maintain_journal();
        let logged = state.engine.journal_position();
        self.after_change(&mut state);
        let sync_to = match (&self.sync, logged) {
            (Some(_), Some(pos)) if Some(pos) != logged_before => Some(pos),
            _ => None,
        };
        Batch { step, sync_to }
    }

    /// Tracks the peak memory of jobs and connections; signals `released`
    /// when half of it has been let go since.
    fn watch_memory(&self, state: &mut State) {
        let held = state.engine.memory_held() + state.engine.client_count() * MEMORY_PER_CONNECTION;
        if held > state.held_peak {
            state.held_peak = held;
        } else if held <= state.held_peak / 2 && state.held_peak - held >= RELEASE_FROM {
            state.held_peak = held;
            self.released.notify_one();
        }
    }

    /// Waits until the binlog is on disk up to `pos` (group commit: one
    /// fsync serves every session waiting at that moment).
    pub async fn wait_synced(&self, pos: u64) -> std::io::Result<()> {
        match &self.sync {
            Some(sync) => sync.wait_synced(pos).await,
            None => Ok(()),
        }
    }

    /// Flushes the binlog to disk (graceful shutdown).
    pub fn sync_journal(&self) -> std::io::Result<()> {
        self.lock().engine.sync_journal()
    }

    /// The answer to `client`'s blocked reserve, once it has one. `None`
    /// if the client is not waiting (its wait was abandoned).
    pub fn poll_answer(&self, client: ClientId, cx: &mut Context<'_>) -> Poll<Option<Reply>> {
        let mut state = self.lock();
        match state.waiters.get_mut(&client) {
            None => Poll::Ready(None),
            Some(Mailbox::Waiting(waker)) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(Mailbox::Answered(_)) => match state.waiters.remove(&client) {
                Some(Mailbox::Answered(reply)) => Poll::Ready(Some(*reply)),
                _ => unreachable!("the entry just seen"),
            },
        }
    }

    /// Ends a blocked reserve because the peer half-closed. Returns false if
    /// the reserve had already been answered: the answer then waits for
    /// [`poll_answer`](Self::poll_answer).
    pub fn abandon_wait(&self, client: ClientId) -> bool {
        let mut state = self.lock();
        if let Some(Mailbox::Answered(_)) = state.waiters.get(&client) {
            return false;
        }
        state.waiters.remove(&client);
        state.engine.time_out_wait(client)
    }

    /// Runs due timers; returns the next deadline.
    pub fn tick(&self) -> Option<Time> {
        let now = self.clock.now();
        let mut state = self.lock();
        let next = state.engine.tick(now);
        self.timer_target
            .store(next.unwrap_or(NO_DEADLINE), Ordering::SeqCst);
        self.deliver_wakeups(&mut state);
        next
    }

    /// Puts the server in drain mode (SIGUSR1).
    pub fn set_draining(&self, draining: bool) {
        self.lock().engine.set_draining(draining);
    }

    /// Runs `f` on the engine (tests, invariant checks).
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        let mut state = self.lock();
        let r = f(&mut state.engine);
        self.after_change(&mut state);
        r
    }

    /// Waits until a new, earlier deadline may exist.
    pub async fn timer_changed(&self) {
        self.timer_wake.notified().await
    }

    fn after_change(&self, state: &mut State) {
        self.deliver_wakeups(state);
        self.watch_memory(state);
        if let Some(next) = state.engine.next_deadline() {
            if next < self.timer_target.load(Ordering::SeqCst) {
                self.timer_target.store(next, Ordering::SeqCst);
                self.timer_wake.notify_one();
            }
        }
    }

    fn deliver_wakeups(&self, state: &mut State) {
        let State {
            engine, waiters, ..
        } = state;
        for (client, reply) in engine.take_wakeups() {
            tracing::trace!(conn = client, "-> {}", reply.head());
            // A session that is gone has no mailbox; its disconnect
            // returned its reservation, so nothing is lost.
            if let Some(mailbox) = waiters.get_mut(&client) {
                let answered = Mailbox::Answered(Box::new(reply));
                if let Mailbox::Waiting(Some(waker)) = std::mem::replace(mailbox, answered) {
                    waker.wake();
                }
            }
        }
    }
}

#[cfg(test)]
impl Hub {
    /// A hub over an empty in-memory engine with a manual clock.
    pub(crate) fn for_tests() -> Hub {
        let config = crate::engine::EngineConfig {
            max_job_size: 65535,
            binlog_max_size: 10_485_760,
            host: crate::engine::HostInfo::fixed(),
        };
        let clock = Clock::manual();
        Hub::new(Engine::new(config, clock.now()), clock, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PutBody;
    use bytes::Bytes;
    use std::task::Waker;

    /// Runs one command for `client` and returns how its batch ended.
    fn run(hub: &Hub, client: ClientId, cmd: Command) -> Step {
        let mut out = Outbox::new();
        let mut frames = VecDeque::from([Frame::Command(cmd)]);
        hub.run(client, &mut frames, &mut out).step
    }

    fn put(body: &'static [u8]) -> Command {
        Command::Put {
            pri: 0,
            delay: 0,
            ttr: 60,
            body: PutBody::Body(Bytes::from_static(body)),
        }
    }

    /// A hub with a worker blocked in `reserve`, and a producer.
    fn blocked_worker() -> (Hub, ClientId, ClientId) {
        let hub = Hub::for_tests();
        let (worker, producer) = (hub.connect(), hub.connect());
        assert!(matches!(run(&hub, worker, Command::Reserve), Step::Wait));
        (hub, worker, producer)
    }

    #[test]
    fn an_answer_that_beat_a_half_close_is_still_delivered_once() {
        let (hub, worker, producer) = blocked_worker();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(hub.poll_answer(worker, &mut cx).is_pending());
        run(&hub, producer, put(b"job\r\n"));
        // The peer half-closes after the job was handed over: the reserve
        // is not withdrawn, and the answer is there exactly once.
        assert!(!hub.abandon_wait(worker));
        let Poll::Ready(Some(Reply::Reserved { id, .. })) = hub.poll_answer(worker, &mut cx) else {
            panic!("the handed-over job was not delivered");
        };
        assert_eq!(id, 1);
        assert!(matches!(
            hub.poll_answer(worker, &mut cx),
            Poll::Ready(None)
        ));
    }

    #[test]
    fn a_half_close_before_any_job_withdraws_the_reserve() {
        let (hub, worker, producer) = blocked_worker();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(hub.abandon_wait(worker));
        assert!(matches!(
            hub.poll_answer(worker, &mut cx),
            Poll::Ready(None)
        ));
        // The job goes to nobody: it stays ready.
        run(&hub, producer, put(b"job\r\n"));
        assert_eq!(hub.with_engine(|e| e.waiting_count()), 0);
        assert!(matches!(
            hub.poll_answer(worker, &mut cx),
            Poll::Ready(None)
        ));
        let peek = hub.with_engine(|e| e.apply(0, producer, Command::PeekReady));
        assert!(matches!(peek, Outcome::Reply(Reply::Found { id: 1, .. })));
    }
}
