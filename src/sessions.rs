//! The live session tasks, and how shutdown reaches them.
//!
//! Every session task holds a slot here from its spawn until it is
//! dropped: its waker, so shutdown can wake it, and its abort handle, so a
//! session still busy when the grace period ends can be ended. That is 24
//! bytes per connection, where a cancellation future per session and a
//! `JoinSet` entry per task cost 144 (at 5,000 idle connections, their
//! memory is a target of its own).
//!
//! Invariants:
//! - a slot is taken before its session is made and vacated once both the
//!   session has left (its drop, aborted or not, panicking or not) and its
//!   spawn is over; `live` counts the slots taken, so shutdown waits for
//!   every session, and the table is only reset when none is taken;
//! - a [`SlotId`] is not `Copy`: the one session given it is the one that
//!   leaves it;
//! - a session registers its waker before it first waits, and looks at
//!   [`Sessions::stopping`] wherever it waits. A tokio task's waker is the
//!   same for the task's whole life, so one registration is enough, and
//!   [`Sessions::stop`] sets the flag before it wakes anyone: a session
//!   either sees the flag or is woken after it is set.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// A session's place in [`Sessions`].
#[derive(Debug, PartialEq, Eq)]
pub struct SlotId(u32);

#[derive(Debug, Default)]
pub struct Sessions {
    stopping: AtomicBool,
    slots: Mutex<Slots>,
    /// Signalled when the last session is gone.
    gone: Notify,
}

#[derive(Debug, Default)]
struct Slots {
    slots: Vec<Slot>,
    vacant: Vec<u32>,
    live: usize,
}

#[derive(Debug, Default)]
struct Slot {
    waker: Option<Waker>,
    abort: Option<AbortHandle>,
    stage: Stage,
}

/// Where a slot's session is; its spawn and its end may come in either
/// order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    #[default]
    Vacant,
    /// Taken; the spawn is not over.
    Spawning,
    /// The spawn is over and the session has not left.
    Running,
    /// The session left before its spawn was over.
    Left,
}

/// Ends a spawn (even one that panicked): see [`Sessions::settle`].
struct Spawn<'a> {
    sessions: &'a Sessions,
    id: u32,
    abort: Option<AbortHandle>,
}

impl Drop for Spawn<'_> {
    fn drop(&mut self) {
        self.sessions.settle(self.id, self.abort.take());
    }
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns the task `session(slot)` in a slot of its own.
    pub fn spawn<F>(&self, session: impl FnOnce(SlotId) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let id = {
            let mut slots = self.lock();
            let id = slots.vacant.pop().unwrap_or_else(|| {
                slots.slots.push(Slot::default());
                u32::try_from(slots.slots.len() - 1).expect("fewer than 2^32 connections")
            });
            slots.slots[id as usize].stage = Stage::Spawning;
            slots.live += 1;
            id
        };
        // Not under the lock: making the session takes the engine's lock,
        // and a future that cannot be spawned (the runtime is shutting
        // down) is dropped at once, so the session leaves from inside
        // `tokio::spawn`.
        let mut spawn = Spawn {
            sessions: self,
            id,
            abort: None,
        };
        let task = tokio::spawn(session(SlotId(id)));
        spawn.abort = Some(task.abort_handle());
    }

    /// The spawn of slot `id` is over: the abort handle goes in, or, if the
    /// session already left or the spawn failed, the slot is vacated.
    fn settle(&self, id: u32, abort: Option<AbortHandle>) {
        let mut slots = self.lock();
        let slot = &mut slots.slots[id as usize];
        match (slot.stage, abort) {
            (Stage::Spawning, Some(abort)) => {
                slot.stage = Stage::Running;
                slot.abort = Some(abort);
            }
            _ => self.vacate(slots, id),
        }
    }

    /// Registers the waker of the task in `slot` (call from its first poll).
    pub fn register(&self, slot: &SlotId, waker: &Waker) {
        let mut slots = self.lock();
        let held = &mut slots.slots[slot.0 as usize].waker;
        if !held.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *held = Some(waker.clone());
        }
    }

    /// The session in `slot` is gone (its drop).
    pub fn leave(&self, slot: &SlotId) {
        let mut slots = self.lock();
        let entry = &mut slots.slots[slot.0 as usize];
        debug_assert!(matches!(entry.stage, Stage::Spawning | Stage::Running));
        match entry.stage {
            Stage::Spawning => entry.stage = Stage::Left,
            _ => self.vacate(slots, slot.0),
        }
    }

    fn vacate(&self, mut slots: MutexGuard<'_, Slots>, id: u32) {
        slots.slots[id as usize] = Slot::default();
        slots.vacant.push(id);
        slots.live -= 1;
        if slots.live == 0 {
            // Every slot is vacant: give back what a crowd of connections
            // grew. (Until then the table keeps the size of the peak: 24
            // to 48 bytes per connection of the peak, plus 4 in `vacant`.)
            *slots = Slots::default();
            drop(slots);
            self.gone.notify_waiters();
        }
    }

    /// Shutdown has begun: sessions answer what they have received, then
    /// end instead of waiting for more.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Begins shutdown: sets [`stopping`](Self::stopping), then wakes every
    /// session so that waiting ones see it.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.take_each(|s| s.waker.take())
            .into_iter()
            .for_each(Waker::wake);
    }

    /// Ends every session at its next await (each one's drop still runs).
    pub fn abort_all(&self) {
        self.take_each(|s| s.abort.take())
            .iter()
            .for_each(AbortHandle::abort);
    }

    /// Takes `part` out of every slot, for the caller to act on outside the
    /// lock: a session woken or aborted may end, and vacate its slot, at once.
    fn take_each<T>(&self, part: impl FnMut(&mut Slot) -> Option<T>) -> Vec<T> {
        self.lock().slots.iter_mut().filter_map(part).collect()
    }

    /// How many sessions are alive.
    pub fn live(&self) -> usize {
        self.lock().live
    }

    /// Resolves once no session is alive.
    pub async fn all_gone(&self) {
        loop {
            let gone = self.gone.notified();
            tokio::pin!(gone);
            // Registered before looking, so a leave in between is not missed.
            gone.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            gone.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Poll;
    use std::time::Duration;

    /// Vacates its slot when dropped, as `Session`'s drop does.
    struct Member(Arc<Sessions>, SlotId);

    impl Drop for Member {
        fn drop(&mut self) {
            self.0.leave(&self.1);
        }
    }

    /// A session stand-in: registers, waits until stopping, then leaves.
    fn spawn_member(sessions: &Arc<Sessions>) {
        let s = sessions.clone();
        sessions.spawn(move |slot| async move {
            let member = Member(s, slot);
            std::future::poll_fn(|cx| {
                member.0.register(&member.1, cx.waker());
                if member.0.stopping() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await
        });
    }

    async fn all_gone(sessions: &Sessions) {
        tokio::time::timeout(Duration::from_secs(5), sessions.all_gone())
            .await
            .expect("every session left");
        assert_eq!(sessions.live(), 0);
    }

    #[tokio::test]
    async fn stop_wakes_every_waiting_session_and_all_gone_sees_them_leave() {
        let sessions = Arc::new(Sessions::default());
        for _ in 0..100 {
            spawn_member(&sessions);
        }
        tokio::task::yield_now().await;
        assert_eq!(sessions.live(), 100);
        sessions.stop();
        all_gone(&sessions).await;
    }

    #[tokio::test]
    async fn a_session_spawned_after_stop_ends_at_its_first_wait() {
        let sessions = Arc::new(Sessions::default());
        sessions.stop();
        spawn_member(&sessions);
        all_gone(&sessions).await;
    }

    #[tokio::test]
    async fn abort_all_ends_sessions_that_ignore_stop_and_their_drop_runs() {
        let sessions = Arc::new(Sessions::default());
        for _ in 0..10 {
            let s = sessions.clone();
            sessions.spawn(move |slot| async move {
                let _member = Member(s, slot);
                std::future::pending::<()>().await
            });
        }
        sessions.stop();
        tokio::task::yield_now().await;
        assert_eq!(sessions.live(), 10, "they ignore stop");
        sessions.abort_all();
        all_gone(&sessions).await;
    }

    #[tokio::test]
    async fn a_session_that_leaves_during_its_spawn_is_settled() {
        // As when the runtime is shutting down: tokio::spawn drops the
        // future at once, and the session leaves from inside it.
        let sessions = Arc::new(Sessions::default());
        let s = sessions.clone();
        sessions.spawn(move |slot| {
            drop(Member(s, slot));
            async {}
        });
        all_gone(&sessions).await;
    }

    #[tokio::test]
    async fn a_spawn_that_panics_leaves_no_slot_taken() {
        let sessions = Arc::new(Sessions::default());
        let spawn = std::panic::AssertUnwindSafe(|| {
            sessions.spawn(|_slot| -> std::future::Ready<()> { panic!("no session") })
        });
        assert!(std::panic::catch_unwind(spawn).is_err());
        all_gone(&sessions).await;
        // The registry still works.
        spawn_member(&sessions);
        tokio::task::yield_now().await;
        assert_eq!(sessions.live(), 1);
        sessions.stop();
        all_gone(&sessions).await;
    }

    #[tokio::test]
    async fn a_session_whose_task_panics_still_leaves() {
        let sessions = Arc::new(Sessions::default());
        let s = sessions.clone();
        sessions.spawn(move |slot| async move {
            let _member = Member(s, slot);
            panic!("a bug in a session");
        });
        all_gone(&sessions).await;
    }

    #[tokio::test]
    async fn slots_are_reused_and_given_back_when_the_last_session_leaves() {
        let sessions = Arc::new(Sessions::default());
        // One session stays while others come and go, one at a time: they
        // all take the same second slot.
        spawn_member(&sessions);
        for _ in 0..5 {
            let s = sessions.clone();
            sessions.spawn(move |slot| async move { drop(Member(s, slot)) });
            tokio::task::yield_now().await;
        }
        assert_eq!(sessions.lock().slots.len(), 2);
        sessions.stop();
        all_gone(&sessions).await;
        assert_eq!(sessions.lock().slots.capacity(), 0);
    }
}
