//! The queue itself: jobs, tubes, clients and timers, as plain synchronous state.
//!
//! No I/O, no tokio, no clock: every entry point takes `now` from the caller,
//! so every timing rule is testable without sleeping. The server holds one
//! `Engine` and feeds it commands in arrival order.
//!
//! Invariants kept by every method:
//! - each job is in exactly one place: its tube's ready, delayed or buried set,
//!   or its reserver's reservation set (and the TTR timer);
//! - no waiting client watches an unpaused tube that has a ready job (a job
//!   that becomes ready is handed to the longest waiter at once);
//! - a tube other than `default` exists only while a job, a user or a watcher
//!   refers to it;
//! - the global counters equal the sums over tubes.
//!
//! Replies to clients other than the caller (a blocked reserve that got a job,
//! timed out or hit the deadline margin) are queued as wake-ups, which the
//! caller collects with [`Engine::take_wakeups`].

mod bodies;
mod client;
mod id_hash;
mod job;
mod journal;
mod ready;
mod stats;
mod store;
mod timers;
mod tube;

pub use job::{Job, JobCounts, State};
pub use stats::{HostInfo, ResourceUsage};

use crate::binlog::{JobState, Journal, Record};
use crate::protocol::{Command, JobId, Priority, PutBody, Reply, Seconds, TubeName};
use bytes::Bytes;
use client::{Client, Wait};
use id_hash::IdMap;
use job::Count;
use stats::Counters;
use std::collections::{BTreeSet, HashMap};
use store::JobStore;
use timers::{Due, Timers};
use tube::Tube;

/// Monotonic time in nanoseconds, from an origin the caller chooses.
pub type Time = u64;

/// Nanoseconds in a second.
pub const SECOND: Time = 1_000_000_000;

/// How long before its TTR runs out a worker is told DEADLINE_SOON.
pub const SAFETY_MARGIN: Time = SECOND;

/// Identifies a connection for the engine's lifetime.
pub type ClientId = u64;

/// Index of a tube in the engine's tube table.
pub type TubeIdx = u32;

/// Settings the engine needs from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub max_job_size: u32,
    pub binlog_max_size: u64,
    pub host: HostInfo,
}

/// What `apply` asks of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply(Reply),
    /// The client is blocked in reserve; its answer will come as a wake-up.
    Wait,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        Outcome::Reply(reply)
    }
}

#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    started: Time,
    jobs: JobStore,
    next_job_id: JobId,
    tubes: Vec<Option<Tube>>,
    free_tube_slots: Vec<TubeIdx>,
    tube_index: HashMap<TubeName, TubeIdx>,
    /// Tubes in listing order (creation order, with swap-remove on free).
    tube_list: Vec<TubeIdx>,
    /// Boxed: the table then grows by 16 bytes a slot, not a whole Client,
    /// and a boxed Client usually fits in memory the allocator already
    /// holds (see `client.rs`).
    clients: IdMap<ClientId, Box<Client>>,
    next_client_id: ClientId,
    /// The best ready job of every unpaused tube that has one, so a client
    /// watching many tubes finds its next job without visiting each tube.
    heads: BTreeSet<(Priority, JobId, TubeIdx)>,
    /// Waiting clients that watch more than `WIDE_WATCH` tubes, by wait order.
    wide_waiters: BTreeSet<(u64, ClientId)>,
    /// Orders waiters and buried jobs.
    next_seq: u64,
    timers: Timers,
    counters: Counters,
    draining: bool,
    wakeups: Vec<(ClientId, Reply)>,
    /// The binlog, when persistence is on.
    journal: Option<Box<dyn Journal>>,
    /// A compaction pass in progress (see `maintain_journal`).
    compaction: Option<journal::Compaction>,
    /// What the last `maintain_journal` saw, to pace the next one with the
    /// writes in between.
    upkeep: journal::Upkeep,
    /// When the timer next moves a resize or repacking of the job store on.
    /// Commands move it on a step each; without this, a store left idle
    /// mid-way would hold a past peak's memory (or two tables) until
    /// traffic resumed.
    store_upkeep: Option<Time>,
}

/// How often, and by how many steps (of 128 slots), the timer moves the
/// job store's upkeep on: 256 slots per ms. Small steps, because each holds
/// the engine lock: a few µs, up to ~3 ms on this VM while a new table's
/// pages are first touched.
const STORE_UPKEEP_EVERY: Time = SECOND / 1000;
const STORE_UPKEEP_STEPS: usize = 2;

const DEFAULT_TUBE: TubeIdx = 0;

impl Engine {
    pub fn new(config: EngineConfig, now: Time) -> Engine {
        let mut engine = Engine {
            config,
            started: now,
            jobs: JobStore::default(),
            next_job_id: 1,
            tubes: Vec::new(),
            free_tube_slots: Vec::new(),
            tube_index: HashMap::new(),
            tube_list: Vec::new(),
            clients: IdMap::default(),
            next_client_id: 1,
            next_seq: 0,
            timers: Timers::default(),
            heads: BTreeSet::new(),
            wide_waiters: BTreeSet::new(),
            counters: Counters::default(),
            draining: false,
            wakeups: Vec::new(),
            journal: None,
            compaction: None,
            upkeep: journal::Upkeep::default(),
            store_upkeep: None,
        };
        let default = engine.tube_for(&TubeName::default_tube());
        debug_assert_eq!(default, DEFAULT_TUBE);
        engine
    }

    /// Registers a new connection, which uses and watches `default`.
    pub fn connect(&mut self) -> ClientId {
        let id = self.next_client_id;
        self.next_client_id += 1;
        let tube = self.tube_mut(DEFAULT_TUBE);
        tube.using += 1;
        tube.watching += 1;
        self.clients.insert(id, Box::new(Client::new(DEFAULT_TUBE)));
        self.counters.total_connections += 1;
        id
    }

    /// Forgets a connection: its reservations go back to ready at once (no
    /// counters change), its wait ends, and tubes only it kept alive vanish.
    pub fn disconnect(&mut self, now: Time, client: ClientId) {
        self.cancel_wait(client);
        let Some(c) = self.clients.remove(&client) else {
            return;
        };
        if c.producer {
            self.counters.producers -= 1;
        }
        if c.worker {
            self.counters.workers -= 1;
        }
        // In the order they were reserved, as beanstalkd's list keeps them:
        // each one is dispatched before the next goes back.
        let mut returned: Vec<(u64, Time, JobId)> = c
            .reserved
            .iter()
            .map(|((deadline, id), seq)| (seq, deadline, id))
            .collect();
        returned.sort_unstable();
        for (_, deadline, id) in returned {
            self.timers.ttr.remove(&(deadline, id));
            self.unreserve(client, id);
            self.make_ready(now, id);
        }
        self.tube_mut(c.using).using -= 1;
        self.maybe_free_tube(c.using);
        for &t in &c.watching {
            self.tube_mut(t).watching -= 1;
            self.maybe_free_tube(t);
        }
    }

    /// Drain mode: puts are refused with DRAINING from now on.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Clients blocked in reserve right now (`current-waiting`).
    pub fn waiting_count(&self) -> usize {
        self.counters.waiting
    }

    /// Replies owed to clients other than the one whose command ran.
    pub fn take_wakeups(&mut self) -> std::vec::Drain<'_, (ClientId, Reply)> {
        self.wakeups.drain(..)
    }

    /// The next instant at which `tick` has work to do.
    pub fn next_deadline(&self) -> Option<Time> {
        match (self.timers.next(), self.store_upkeep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs every timer due at `now`, in time order, and returns the next deadline.
    pub fn tick(&mut self, now: Time) -> Option<Time> {
        while let Some(due) = self.timers.pop_due(now) {
            match due {
                Due::Delayed(id) => self.promote_delayed(now, id),
                Due::Pause(t) => self.unpause(now, t),
                Due::Ttr(id, client) => self.expire_ttr(now, id, client),
                Due::Wait(c) => self.wait_timer_fired(now, c),
            }
        }
        if self.store_upkeep.is_some_and(|at| at <= now) {
            self.jobs.upkeep(STORE_UPKEEP_STEPS);
            self.store_upkeep = self.jobs.has_upkeep().then_some(now + STORE_UPKEEP_EVERY);
        }
        self.next_deadline()
    }

    /// Applies one command from `client`. `Command::Quit` is the session's
    /// business and is answered here only as a no-op.
    pub fn apply(&mut self, now: Time, client: ClientId, cmd: Command) -> Outcome {
        debug_assert!(
            self.clients.get(&client).is_some_and(|c| c.wait.is_none()),
            "commands from unknown or waiting client {client}"
        );
        if !self.clients.contains_key(&client) {
            return Reply::InternalError.into();
        }
        let c = &mut self.counters;
        let outcome = match cmd {
            Command::Put {
                pri,
                delay,
                ttr,
                body,
            } => {
                c.cmd_put += 1;
                self.put(now, client, pri, delay, ttr, body).into()
            }
            Command::Use(name) => {
                c.cmd_use += 1;
                self.use_tube(client, name).into()
            }
            Command::Reserve => {
                c.cmd_reserve += 1;
                self.reserve(now, client, None)
            }
            Command::ReserveWithTimeout(secs) => {
                c.cmd_reserve_with_timeout += 1;
                self.reserve(now, client, Some(secs))
            }
            Command::ReserveJob(id) => self.reserve_job(now, client, id).into(),
            Command::Delete(id) => {
                c.cmd_delete += 1;
                self.delete(client, id).into()
            }
            Command::Release { id, pri, delay } => {
                c.cmd_release += 1;
                self.release(now, client, id, pri, delay).into()
            }
            Command::Bury { id, pri } => {
                c.cmd_bury += 1;
                self.bury(client, id, pri).into()
            }
            Command::Touch(id) => {
                c.cmd_touch += 1;
                self.touch(now, client, id).into()
            }
            Command::Watch(name) => {
                c.cmd_watch += 1;
                self.watch(client, name).into()
            }
            Command::Ignore(name) => {
                c.cmd_ignore += 1;
                self.ignore(client, &name).into()
            }
            Command::Peek(id) => {
                c.cmd_peek += 1;
                self.found(Some(id)).into()
            }
            Command::PeekReady => {
                c.cmd_peek_ready += 1;
                let t = self.used_tube(client);
                self.found(t.ready.first().map(|e| e.1)).into()
            }
            Command::PeekDelayed => {
                c.cmd_peek_delayed += 1;
                let t = self.used_tube(client);
                self.found(t.delayed.first().map(|e| e.1)).into()
            }
            Command::PeekBuried => {
                c.cmd_peek_buried += 1;
                let t = self.used_tube(client);
                self.found(t.buried.first().map(|e| e.1)).into()
            }
            Command::Kick(bound) => {
                c.cmd_kick += 1;
                self.kick(now, client, bound).into()
            }
            Command::KickJob(id) => self.kick_job(now, id).into(),
            Command::StatsJob(id) => {
                c.cmd_stats_job += 1;
                match self.jobs.get(id) {
                    Some(job) => Reply::Ok(self.job_stats(now, job)),
                    None => Reply::NotFound,
                }
                .into()
            }
            Command::StatsTube(name) => {
                c.cmd_stats_tube += 1;
                match self.tube_index.get(&name) {
                    Some(&t) => Reply::Ok(self.tube_stats(now, t)),
                    None => Reply::NotFound,
                }
                .into()
            }
            Command::Stats => {
                c.cmd_stats += 1;
                Reply::Ok(self.server_stats(now)).into()
            }
            Command::ListTubes => {
                c.cmd_list_tubes += 1;
                let names = self.tube_list.iter().map(|&t| &self.tube(t).name);
                Reply::Ok(stats::yaml_list(names)).into()
            }
            Command::ListTubeUsed => {
                c.cmd_list_tube_used += 1;
                Reply::Using(self.used_tube(client).name.clone()).into()
            }
            Command::ListTubesWatched => {
                c.cmd_list_tubes_watched += 1;
                let names = self.clients[&client]
                    .watching
                    .iter()
                    .map(|&t| &self.tube(t).name);
                Reply::Ok(stats::yaml_list(names)).into()
            }
            Command::PauseTube { tube, delay } => {
                c.cmd_pause_tube += 1;
                self.pause_tube(now, &tube, delay).into()
            }
            Command::PauseTubeBadName => {
                c.cmd_pause_tube += 1;
                Reply::BadFormat.into()
            }
            Command::Quit => Reply::InternalError.into(),
        };
        if self.store_upkeep.is_none() && self.jobs.has_upkeep() {
            self.store_upkeep = Some(now + STORE_UPKEEP_EVERY);
        }
        outcome
    }

    // ----- commands -------------------------------------------------------

    fn put(
        &mut self,
        now: Time,
        client: ClientId,
        pri: Priority,
        delay: Seconds,
        ttr: Seconds,
        body: PutBody,
    ) -> Reply {
        let body = match body {
            PutBody::TooBig => return Reply::JobTooBig,
            PutBody::TrailingText => return Reply::BadFormat,
            PutBody::ExpectedCrlf => Err(Reply::ExpectedCrlf),
            PutBody::Body(body) => Ok(body),
        };
        let c = self.clients.get_mut(&client).expect("checked by apply");
        if !c.producer {
            c.producer = true;
            self.counters.producers += 1;
        }
        let tube = c.using;
        // beanstalkd allocates the id before reading the body, so a put that
        // then fails still uses one up.
        let id = self.next_job_id;
        self.next_job_id += 1;
        let body = match body {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        if self.draining {
            return Reply::Draining;
        }
        let mut job = Job::new(id, pri, delay, ttr, tube);
        job.created = now;
        if delay > 0 {
            job.state = State::Delayed;
            job.key = now + Time::from(delay) * SECOND;
        }
        match self.log_put(&job, &body) {
            Ok(file) => job.file = file,
            Err(()) => return Reply::OutOfMemory,
        }
        self.jobs.insert(job, JobCounts::default(), &body);
        self.counters.total_jobs += 1;
        self.tube_mut(tube).total_jobs += 1;
        if delay > 0 {
            self.make_delayed(now, id, delay);
        } else {
            self.make_ready(now, id);
        }
        Reply::Inserted(id)
    }

    fn use_tube(&mut self, client: ClientId, name: TubeName) -> Reply {
        let new = self.tube_for(&name);
        self.tube_mut(new).using += 1;
        let c = self.clients.get_mut(&client).expect("checked by apply");
        let old = std::mem::replace(&mut c.using, new);
        self.tube_mut(old).using -= 1;
        self.maybe_free_tube(old);
        Reply::Using(name)
    }

    fn watch(&mut self, client: ClientId, name: TubeName) -> Reply {
        let t = self.tube_for(&name);
        let c = self.clients.get_mut(&client).expect("checked by apply");
        if c.watching.insert(t) {
            let n = c.watching.len();
            self.tube_mut(t).watching += 1;
            return Reply::Watching(n);
        }
        Reply::Watching(c.watching.len())
    }

    fn ignore(&mut self, client: ClientId, name: &TubeName) -> Reply {
        let c = self.clients.get_mut(&client).expect("checked by apply");
        let Some(&t) = self.tube_index.get(name) else {
            return Reply::Watching(c.watching.len());
        };
        if !c.watching.contains(&t) {
            return Reply::Watching(c.watching.len());
        }
        if c.watching.len() == 1 {
            return Reply::NotIgnored;
        }
        c.watching.remove(t);
        let n = c.watching.len();
        self.tube_mut(t).watching -= 1;
        self.maybe_free_tube(t);
        Reply::Watching(n)
    }

    fn reserve(&mut self, now: Time, client: ClientId, timeout: Option<Seconds>) -> Outcome {
        let c = self.clients.get_mut(&client).expect("checked by apply");
        if !c.worker {
            c.worker = true;
            self.counters.workers += 1;
        }
        let c = &self.clients[&client];
        // Inside the safety margin a worker is warned instead of blocked, but
        // only when nothing is ready: a ready job is still handed out (#646).
        if c.is_deadline_soon(now) && !c.watching.iter().any(|&t| !self.tube(t).ready.is_empty()) {
            return Reply::DeadlineSoon.into();
        }
        if let Some(id) = self.best_for(client) {
            self.detach(id);
            return self.reserve_for(now, client, id).into();
        }
        if timeout == Some(0) {
            // beanstalkd waits for 0 s and its timer fires at once; inside
            // the margin (a ready job only in a paused tube) that timer
            // answers DEADLINE_SOON, not TIMED_OUT.
            let c = &self.clients[&client];
            return if c.is_deadline_soon(now) {
                Reply::DeadlineSoon
            } else {
                Reply::TimedOut
            }
            .into();
        }
        let timeout_at = timeout.map(|s| now + Time::from(s) * SECOND);
        let seq = self.next_seq();
        let c = self.clients.get_mut(&client).expect("checked by apply");
        let wide = c.is_wide();
        c.wait = Some(Wait {
            seq,
            timeout_at,
            timer: None,
            wide,
        });
        if wide {
            self.wide_waiters.insert((seq, client));
        } else {
            for i in 0..c.watching.len() {
                let t = self.clients[&client].watching[i];
                self.tube_mut(t).waiters.push(seq, client);
            }
        }
        self.counters.waiting += 1;
        self.schedule_wait_timer(client);
        Outcome::Wait
    }

    fn reserve_job(&mut self, now: Time, client: ClientId, id: JobId) -> Reply {
        let Some(job) = self.jobs.get(id) else {
            return Reply::NotFound;
        };
        if job.state == State::Reserved {
            return Reply::NotFound;
        }
        // Taking a buried or delayed job must survive a restart (it comes
        // back ready, like every reserved job); a ready one already will.
        if job.state != State::Ready {
            let record = JobState {
                state: State::Reserved,
                ..self.job_state(job)
            };
            if self.log(Record::State(record)).is_err() {
                return Reply::InternalError;
            }
        }
        self.detach(id);
        let c = self.clients.get_mut(&client).expect("checked by apply");
        if !c.worker {
            c.worker = true;
            self.counters.workers += 1;
        }
        self.reserve_for(now, client, id)
    }

    fn delete(&mut self, client: ClientId, id: JobId) -> Reply {
        let Some(job) = self.jobs.get(id) else {
            return Reply::NotFound;
        };
        let (reserver, deadline) = (self.reserver(job), job.key);
        if reserver.is_some_and(|holder| holder != client) {
            return Reply::NotFound;
        }
        if self.log(Record::Delete(id)).is_err() {
            return Reply::InternalError;
        }
        if reserver.is_some() {
            self.timers.ttr.remove(&(deadline, id));
            self.unreserve(client, id);
        } else {
            self.detach(id);
        }
        self.forget_record(id);
        let job = self.jobs.remove(id).expect("present");
        self.tube_mut(job.tube).cmd_delete += 1;
        self.maybe_free_tube(job.tube);
        Reply::Deleted
    }

    fn release(
        &mut self,
        now: Time,
        client: ClientId,
        id: JobId,
        pri: Priority,
        delay: Seconds,
    ) -> Reply {
        let Some(job) = self.jobs.get(id).filter(|j| self.holds(client, j)) else {
            return Reply::NotFound;
        };
        let mut record = self.job_state(job);
        record.state = if delay > 0 {
            State::Delayed
        } else {
            State::Ready
        };
        record.pri = pri;
        record.delay = delay;
        record.deadline = now + Time::from(delay) * SECOND;
        record.counts.releases += 1;
        if self.log(Record::State(record)).is_err() {
            return Reply::OutOfMemory;
        }
        self.take_reservation(client, id);
        let job = self.jobs.get_mut(id).expect("reserved job exists");
        job.pri = pri;
        job.delay = delay;
        self.jobs.bump(id, Count::Releases);
        if delay > 0 {
            self.make_delayed(now, id, delay);
        } else {
            self.make_ready(now, id);
        }
        Reply::Released
    }

    fn bury(&mut self, client: ClientId, id: JobId, pri: Priority) -> Reply {
        let Some(job) = self.jobs.get(id).filter(|j| self.holds(client, j)) else {
            return Reply::NotFound;
        };
        let mut record = self.job_state(job);
        record.state = State::Buried;
        record.pri = pri;
        record.counts.buries += 1;
        if self.log(Record::State(record)).is_err() {
            return Reply::InternalError;
        }
        self.take_reservation(client, id);
        self.jobs.get_mut(id).expect("reserved job exists").pri = pri;
        self.jobs.bump(id, Count::Buries);
        self.make_buried(id);
        Reply::Buried
    }

    fn touch(&mut self, now: Time, client: ClientId, id: JobId) -> Reply {
        let Some(job) = self.jobs.get(id).filter(|j| self.holds(client, j)) else {
            return Reply::NotFound;
        };
        let old = (job.key, id);
        let new = (now + Time::from(job.ttr) * SECOND, id);
        self.jobs.get_mut(id).expect("reserved job exists").key = new.0;
        self.timers.ttr.remove(&old);
        self.timers.ttr.insert(new, client);
        let c = self.clients.get_mut(&client).expect("checked by apply");
        let seq = c.reserved.remove(&old).expect("reservation of a held job");
        c.reserved.insert(new, seq);
        Reply::Touched
    }

    fn kick(&mut self, now: Time, client: ClientId, bound: u32) -> Reply {
        let t = self.clients[&client].using;
        let tube = self.tube(t);
        // Buried jobs first, and only buried jobs if there are any.
        let ids: Vec<JobId> = if tube.buried.is_empty() {
            tube.delayed
                .iter()
                .take(bound as usize)
                .map(|e| e.1)
                .collect()
        } else {
            tube.buried
                .iter()
                .take(bound as usize)
                .map(|e| e.1)
                .collect()
        };
        let mut kicked = 0;
        for &id in &ids {
            if !self.kick_one(now, id) {
                break;
            }
            kicked += 1;
        }
        Reply::Kicked(kicked)
    }

    fn kick_job(&mut self, now: Time, id: JobId) -> Reply {
        match self.jobs.get(id).map(|j| j.state) {
            Some(State::Buried | State::Delayed) => {
                if self.kick_one(now, id) {
                    Reply::KickedJob
                } else {
                    Reply::InternalError
                }
            }
            _ => Reply::NotFound,
        }
    }

    fn pause_tube(&mut self, now: Time, name: &TubeName, delay: Seconds) -> Reply {
        let Some(&t) = self.tube_index.get(name) else {
            return Reply::NotFound;
        };
        // A pause of 0 becomes 1 ns: it ends on the next tick and wakes waiters.
        let until = now + (Time::from(delay) * SECOND).max(1);
        let old = self.with_head(t, |tube| {
            tube.pause = delay;
            tube.cmd_pause += 1;
            tube.unpause_at.replace(until)
        });
        if let Some(old) = old {
            self.timers.pauses.remove(&(old, t));
        }
        self.timers.pauses.insert((until, t));
        Reply::Paused
    }

    fn found(&self, id: Option<JobId>) -> Reply {
        match id.and_then(|id| self.jobs.get(id)) {
            Some(job) => Reply::Found {
                id: job.id,
                body: self.jobs.body_bytes(job),
            },
            None => Reply::NotFound,
        }
    }

    // ----- job movement ----------------------------------------------------

    /// Takes a job out of whichever tube structure holds it (not reserved).
    fn detach(&mut self, id: JobId) {
        let job = &self.jobs[&id];
        let (state, pri, key, t) = (job.state, job.pri, job.key, job.tube);
        let urgent = job.is_urgent();
        if state == State::Ready {
            self.with_head(t, |tube| tube.ready.remove(pri, id));
        }
        let tube = self.tube_mut(t);
        match state {
            State::Ready => {
                if urgent {
                    tube.urgent -= 1;
                    self.counters.urgent -= 1;
                }
                self.counters.ready -= 1;
            }
            State::Delayed => {
                tube.delayed.remove(&(key, id));
                self.timers.delayed.remove(&(key, id));
            }
            State::Buried => {
                tube.buried.remove(&(key, id));
                self.counters.buried -= 1;
            }
            State::Reserved => unreachable!("detach of a reserved job"),
        }
    }

    /// Removes `id` from the set of `client`, its reserver (if still
    /// connected); the TTR timer is the caller's business.
    fn unreserve(&mut self, client: ClientId, id: JobId) {
        let job = &self.jobs[&id];
        let (key, t) = ((job.key, id), job.tube);
        if let Some(c) = self.clients.get_mut(&client) {
            c.reserved.remove(&key);
        }
        self.tube_mut(t).reserved -= 1;
        self.counters.reserved -= 1;
    }

    /// If `client` holds `id`, ends the reservation and returns true.
    fn take_reservation(&mut self, client: ClientId, id: JobId) -> bool {
        match self.jobs.get(id) {
            Some(job) if self.holds(client, job) => {
                self.timers.ttr.remove(&(job.key, id));
                self.unreserve(client, id);
                true
            }
            _ => false,
        }
    }

    /// Reserves a job already taken out of its tube structure by the caller.
    fn reserve_for(&mut self, now: Time, client: ClientId, id: JobId) -> Reply {
        let seq = self.next_seq();
        let job = self.jobs.get_mut(id).expect("job to reserve exists");
        job.state = State::Reserved;
        job.key = now + Time::from(job.ttr) * SECOND;
        let (key, t) = ((job.key, id), job.tube);
        self.jobs.bump(id, Count::Reserves);
        let body = self.jobs.body_bytes(&self.jobs[&id]);
        self.timers.ttr.insert(key, client);
        self.clients
            .get_mut(&client)
            .expect("reserving client exists")
            .reserved
            .insert(key, seq);
        self.tube_mut(t).reserved += 1;
        self.counters.reserved += 1;
        Reply::Reserved { id, body }
    }

    fn make_ready(&mut self, now: Time, id: JobId) {
        let job = self.jobs.get_mut(id).expect("job exists");
        job.state = State::Ready;
        job.key = 0;
        let (t, pri, urgent) = (job.tube, job.pri, job.is_urgent());
        self.with_head(t, |tube| tube.ready.insert(pri, id));
        let tube = self.tube_mut(t);
        if urgent {
            tube.urgent += 1;
            self.counters.urgent += 1;
        }
        self.counters.ready += 1;
        self.dispatch(now, t);
    }

    fn make_delayed(&mut self, now: Time, id: JobId, delay: Seconds) {
        let job = self.jobs.get_mut(id).expect("job exists");
        job.state = State::Delayed;
        job.key = now + Time::from(delay) * SECOND;
        let key = (job.key, id);
        let t = job.tube;
        self.tube_mut(t).delayed.insert(key);
        self.timers.delayed.insert(key);
    }

    fn make_buried(&mut self, id: JobId) {
        let seq = self.next_seq();
        let job = self.jobs.get_mut(id).expect("job exists");
        job.state = State::Buried;
        job.key = seq;
        let t = job.tube;
        self.tube_mut(t).buried.insert((seq, id));
        self.counters.buried += 1;
    }

    /// Kicks a buried or delayed job to ready; false if it could not be logged.
    fn kick_one(&mut self, now: Time, id: JobId) -> bool {
        let mut record = self.job_state(&self.jobs[&id]);
        record.state = State::Ready;
        record.counts.kicks += 1;
        if self.log(Record::State(record)).is_err() {
            return false;
        }
        self.detach(id);
        self.jobs.bump(id, Count::Kicks);
        self.make_ready(now, id);
        true
    }

    /// Runs `f` on tube `t` and keeps the index of tube heads in step with
    /// whatever it changed (ready set or pause).
    fn with_head<R>(&mut self, t: TubeIdx, f: impl FnOnce(&mut Tube) -> R) -> R {
        let before = self.tube(t).best_ready();
        let result = f(self.tube_mut(t));
        let after = self.tube(t).best_ready();
        if before != after {
            if let Some((pri, id)) = before {
                self.heads.remove(&(pri, id, t));
            }
            if let Some((pri, id)) = after {
                self.heads.insert((pri, id, t));
            }
        }
        result
    }

    /// The best ready job in the unpaused tubes `client` watches.
    ///
    /// A narrow watcher visits its tubes. A wide one walks the index of tube
    /// heads in (priority, id) order until it meets a tube it watches, and
    /// gives up on that walk after as many steps as visiting would cost.
    fn best_for(&self, client: ClientId) -> Option<JobId> {
        let c = &self.clients[&client];
        if c.is_wide() {
            let found = self
                .heads
                .iter()
                .take(c.watching.len())
                .find(|&&(_, _, t)| c.watching.contains(&t));
            if let Some(&(_, id, _)) = found {
                return Some(id);
            }
            if self.heads.len() <= c.watching.len() {
                return None;
            }
        }
        c.watching
            .iter()
            .filter_map(|&t| self.tube(t).best_ready())
            .min()
            .map(|(_, id)| id)
    }

    // ----- waiting and timers ----------------------------------------------

    /// Hands ready jobs of tube `t` to its longest waiters while both exist.
    fn dispatch(&mut self, now: Time, t: TubeIdx) {
        loop {
            let tube = self.tube(t);
            let Some((_, job)) = tube.best_ready() else {
                return;
            };
            let narrow = tube.waiters.first();
            let wide = self
                .wide_waiters
                .iter()
                .find(|&&(_, c)| self.clients[&c].watching.contains(&t))
                .copied();
            let Some((_, client)) = [narrow, wide].into_iter().flatten().min() else {
                return;
            };
            // Also leaves the waiter lists of its other watched tubes.
            self.cancel_wait(client);
            self.detach(job);
            let reply = self.reserve_for(now, client, job);
            self.wakeups.push((client, reply));
        }
    }

    /// Ends `client`'s blocking reserve, if any, without replying.
    fn cancel_wait(&mut self, client: ClientId) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        let Some(wait) = c.wait.take() else {
            return;
        };
        if let Some(at) = wait.timer {
            self.timers.waits.remove(&(at, client));
        }
        if wait.wide {
            self.wide_waiters.remove(&(wait.seq, client));
        } else {
            for i in 0..self.clients[&client].watching.len() {
                let t = self.clients[&client].watching[i];
                self.tube_mut(t).waiters.remove(wait.seq, client);
            }
        }
        self.counters.waiting -= 1;
    }

    /// (Re)arms the timer of a waiting client: the earlier of its timeout and
    /// the start of its deadline margin.
    fn schedule_wait_timer(&mut self, client: ClientId) {
        let c = self
            .clients
            .get_mut(&client)
            .expect("waiting client exists");
        let margin = c.margin_at();
        let Some(wait) = c.wait.as_mut() else {
            return;
        };
        if let Some(old) = wait.timer.take() {
            self.timers.waits.remove(&(old, client));
        }
        let at = match (wait.timeout_at, margin) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = at {
            wait.timer = Some(at);
            self.timers.waits.insert((at, client));
        }
    }

    fn wait_timer_fired(&mut self, now: Time, client: ClientId) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        let Some(wait) = c.wait.as_mut() else {
            return;
        };
        // The timer was popped already.
        wait.timer = None;
        let timeout_at = wait.timeout_at;
        let reply = if c.is_deadline_soon(now) {
            Reply::DeadlineSoon
        } else if timeout_at.is_some_and(|at| now >= at) {
            Reply::TimedOut
        } else {
            // The margin moved (a reservation ended): wait on.
            self.schedule_wait_timer(client);
            return;
        };
        self.cancel_wait(client);
        self.wakeups.push((client, reply));
    }

    /// Ends a blocking reserve of `client` with TIMED_OUT (a half-closed peer).
    pub fn time_out_wait(&mut self, client: ClientId) -> bool {
        if self.clients.get(&client).is_some_and(|c| c.wait.is_some()) {
            self.cancel_wait(client);
            true
        } else {
            false
        }
    }

    fn promote_delayed(&mut self, now: Time, id: JobId) {
        let job = &self.jobs[&id];
        let key = (job.key, id);
        let t = job.tube;
        self.tube_mut(t).delayed.remove(&key);
        self.make_ready(now, id);
    }

    fn unpause(&mut self, now: Time, t: TubeIdx) {
        self.with_head(t, |tube| {
            tube.unpause_at = None;
            tube.pause = 0;
        });
        self.dispatch(now, t);
    }

    /// The TTR of `id`, reserved by `client`, ran out (its timer is popped).
    fn expire_ttr(&mut self, now: Time, id: JobId, client: ClientId) {
        self.unreserve(client, id);
        self.jobs.bump(id, Count::Timeouts);
        self.counters.job_timeouts += 1;
        // Its margin may have moved later; a waiting owner re-arms.
        self.schedule_wait_timer(client);
        self.make_ready(now, id);
    }

    // ----- tubes -----------------------------------------------------------

    fn tube(&self, t: TubeIdx) -> &Tube {
        self.tubes[t as usize].as_ref().expect("live tube index")
    }

    fn tube_mut(&mut self, t: TubeIdx) -> &mut Tube {
        self.tubes[t as usize].as_mut().expect("live tube index")
    }

    fn used_tube(&self, client: ClientId) -> &Tube {
        self.tube(self.clients[&client].using)
    }

    /// The tube with this name, created if needed.
    fn tube_for(&mut self, name: &TubeName) -> TubeIdx {
        if let Some(&t) = self.tube_index.get(name) {
            return t;
        }
        let tube = Tube::new(name.clone(), self.tube_list.len());
        let t = match self.free_tube_slots.pop() {
            Some(t) => {
                self.tubes[t as usize] = Some(tube);
                t
            }
            None => {
                self.tubes.push(Some(tube));
                (self.tubes.len() - 1) as TubeIdx
            }
        };
        self.tube_index.insert(name.clone(), t);
        self.tube_list.push(t);
        t
    }

    fn maybe_free_tube(&mut self, t: TubeIdx) {
        if t == DEFAULT_TUBE || !self.tube(t).is_unreferenced() {
            return;
        }
        let tube = self.tubes[t as usize].take().expect("live tube");
        if let Some(at) = tube.unpause_at {
            self.timers.pauses.remove(&(at, t));
        }
        self.tube_index.remove(&tube.name);
        self.tube_list.swap_remove(tube.list_pos);
        if let Some(&moved) = self.tube_list.get(tube.list_pos) {
            self.tube_mut(moved).list_pos = tube.list_pos;
        }
        self.free_tube_slots.push(t);
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    // ----- stats -------------------------------------------------------------

    fn job_stats(&self, now: Time, job: &Job) -> Bytes {
        let time_left = match job.state {
            State::Reserved | State::Delayed => job.key.saturating_sub(now) / SECOND,
            _ => 0,
        };
        let counts = self.jobs.counts(job);
        stats::job_yaml(job, &counts, &self.tube(job.tube).name, now, time_left)
    }

    /// The client holding `job`, if it is reserved.
    fn reserver(&self, job: &Job) -> Option<ClientId> {
        if job.state != State::Reserved {
            return None;
        }
        self.timers.ttr.get(&(job.key, job.id)).copied()
    }

    fn holds(&self, client: ClientId, job: &Job) -> bool {
        self.reserver(job) == Some(client)
    }

    fn tube_stats(&self, now: Time, t: TubeIdx) -> Bytes {
        let wide = self
            .wide_waiters
            .iter()
            .filter(|&&(_, c)| self.clients[&c].watching.contains(&t))
            .count();
        stats::tube_yaml(self.tube(t), self.tube(t).waiters.len() + wide, now)
    }

    fn server_stats(&self, now: Time) -> Bytes {
        let delayed: usize = self.timers.delayed.len();
        stats::server_yaml(&stats::ServerSnapshot {
            journal: self.journal.as_ref().map(|j| j.stats()).unwrap_or_default(),
            counters: &self.counters,
            delayed,
            max_job_size: self.config.max_job_size,
            tubes: self.tube_list.len(),
            connections: self.clients.len(),
            uptime: (now - self.started) / SECOND,
            binlog_max_size: self.config.binlog_max_size,
            draining: self.draining,
            host: &self.config.host,
        })
    }

    /// Bytes allocated for jobs and their bodies, spare capacity included.
    pub fn memory_held(&self) -> usize {
        self.jobs.memory_held()
    }

    /// Connections open.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Checks the invariants listed in the module doc; for tests and fuzzing.
    pub fn check_invariants(&self) {
        self.jobs.check_invariants();
        let mut ready = 0;
        let mut buried = 0;
        let mut reserved = 0;
        let mut delayed = 0;
        let mut urgent = 0;
        for job in self.jobs.values() {
            let tube = self.tube(job.tube);
            match job.state {
                State::Ready => {
                    ready += 1;
                    urgent += usize::from(job.is_urgent());
                    assert!(tube.ready.contains(job.pri, job.id));
                }
                State::Delayed => {
                    delayed += 1;
                    assert!(tube.delayed.contains(&(job.key, job.id)));
                    assert!(self.timers.delayed.contains(&(job.key, job.id)));
                }
                State::Buried => {
                    buried += 1;
                    assert!(tube.buried.contains(&(job.key, job.id)));
                }
                State::Reserved => {
                    reserved += 1;
                    let c = self.reserver(job).expect("reserved job has a TTR timer");
                    assert!(self.clients[&c].reserved.contains_key(&(job.key, job.id)));
                }
            }
        }
        let c = &self.counters;
        assert_eq!(
            (c.ready, c.buried, c.reserved, c.urgent),
            (ready, buried, reserved, urgent)
        );
        assert_eq!(self.timers.delayed.len(), delayed);
        assert_eq!(self.timers.ttr.len(), reserved);
        let tube_jobs: usize = self
            .tube_list
            .iter()
            .map(|&t| self.tube(t).job_count())
            .sum();
        assert_eq!(tube_jobs, self.jobs.len());
        for &t in &self.tube_list {
            let tube = self.tube(t);
            assert!(
                tube.waiters.is_empty() || tube.best_ready().is_none(),
                "waiter beside a ready job"
            );
            for client in tube.waiters.iter() {
                assert!(self.clients[&client].wait.is_some());
                assert!(self.clients[&client].watching.contains(&t));
            }
            assert!(t == DEFAULT_TUBE || !tube.is_unreferenced());
        }
        let waiting = self.clients.values().filter(|c| c.wait.is_some()).count();
        assert_eq!(c.waiting, waiting);
        let heads: BTreeSet<_> = self
            .tube_list
            .iter()
            .filter_map(|&t| self.tube(t).best_ready().map(|(p, id)| (p, id, t)))
            .collect();
        assert_eq!(self.heads, heads, "index of tube heads");
        for &(_, client) in &self.wide_waiters {
            let c = &self.clients[&client];
            assert!(c.wait.is_some_and(|w| w.wide));
            for &t in &c.watching {
                assert!(
                    self.tube(t).best_ready().is_none(),
                    "wide waiter beside a ready job"
                );
            }
        }
        for c in self.clients.values() {
            c.watching.check();
        }
    }
}

#[cfg(test)]
mod tests;
