//! The engine against a small reference model.
//!
//! [`run`] decodes a byte string into operations over a few clients (every
//! queue command, disconnects, time passing with or without a timer tick,
//! drain mode, and restarts that drop the engine and rebuild it from the
//! binlog) and applies each to both the real [`Engine`] and [`Model`], a
//! deliberately naive re-statement of the rules: a map of jobs with their
//! states, scanned linearly for every question. After every operation:
//!
//! - replies and wake-ups must be equal;
//! - `check_invariants()` must hold;
//! - `stats`, `stats-tube`, `list-tubes`, `list-tube-used`,
//!   `list-tubes-watched`, and `stats-job` + `peek` of each job the
//!   operation changed (of every job on every 8th check, after restarts and
//!   at the end), must show exactly the model's contents: every job in its
//!   one state, the counts equal to the real contents, no job lost,
//!   duplicated or resurrected.
//!
//! A ready job goes to the longest waiter watching its tube. Besides four
//! common tubes there are 36 rare ones; an operation that watches them all
//! makes a client a wide watcher (over 32 tubes), which the engine serves
//! through a different path (its index of tube heads and one wide-waiter
//! list), with the same observable rules.
//!
//! Restarts (when the run has a binlog): reserved jobs come back ready,
//! delayed jobs keep their deadline, buried jobs their order, pauses and
//! connections are gone, and job ids continue after the highest id logged.
//!
//! Timers fire only when the driver ticks, so commands also run while timers
//! are overdue, as they do in the server when the timer task lags. The model
//! has no timer structures: at a tick it repeatedly picks the earliest due
//! event from its state, ties broken as the engine does (delayed jobs, then
//! pause ends, then TTRs, then waits; within a kind by job or client id).
//! Two tubes whose pauses end at the same instant would be ordered by the
//! engine's internal tube index, so the driver nudges a pause off such a tie.
//!
//! Set `STALKD_MODEL_TRACE=1` to print the operations of a failing input.

use bytes::Bytes;
use stalkd::binlog;
use stalkd::config::SyncPolicy;
use stalkd::engine::{ClientId, Engine, EngineConfig, HostInfo, Outcome, Time, SECOND};
use stalkd::protocol::{Command, JobId, PutBody, Reply, TubeName};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

/// The tubes operations pick from: four common ones, then enough rarer ones
/// that a client watching all of them is a wide watcher (over 32 tubes),
/// which the engine serves through its index of tube heads.
static TUBES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let base = ["default", "a", "b", "c"].map(String::from);
    base.into_iter()
        .chain((0..WIDE_TUBES).map(|i| format!("w{i}")))
        .collect()
});
const BASE_TUBES: usize = 4;
const WIDE_TUBES: usize = 36;
/// Clients that run operations; one more (the observer) only asks questions.
const CLIENTS: usize = 3;
const OBSERVER: Slot = CLIENTS;
const T0: Time = 1_000 * SECOND;
const MAX_OPS: usize = 300;
const MAX_JOB_SIZE: u32 = 65_535;
const URGENT: u32 = 1024;

type TubeIx = usize;
type Slot = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Ready,
    Delayed {
        until: Time,
    },
    /// `order`: when it was reserved (a disconnect returns jobs in that order).
    Reserved {
        by: Slot,
        deadline: Time,
        order: u64,
    },
    Buried {
        seq: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MJob {
    tube: TubeIx,
    pri: u32,
    delay: u32,
    ttr: u32,
    body: Bytes,
    state: St,
}

#[derive(Debug, Clone)]
struct MWait {
    timeout_at: Option<Time>,
}

/// The clients blocked on one tube, in the order they started waiting: the
/// longest waiter is served first.
#[derive(Debug, Clone, Default)]
struct MWaiters {
    items: Vec<Slot>,
}

impl MWaiters {
    fn remove(&mut self, s: Slot) {
        if let Some(i) = self.items.iter().position(|&w| w == s) {
            self.items.remove(i);
        }
    }

    fn take(&mut self) -> Option<Slot> {
        (!self.items.is_empty()).then(|| self.items.remove(0))
    }
}

#[derive(Debug, Clone)]
struct MClient {
    id: ClientId,
    using: TubeIx,
    watching: Vec<TubeIx>,
    wait: Option<MWait>,
    producer: bool,
    worker: bool,
}

impl MClient {
    fn new(id: ClientId) -> MClient {
        MClient {
            id,
            using: 0,
            watching: vec![0],
            wait: None,
            producer: false,
            worker: false,
        }
    }
}

/// What the engine should contain, kept as plainly as possible.
#[derive(Debug)]
pub struct Model {
    now: Time,
    jobs: BTreeMap<JobId, MJob>,
    next_id: JobId,
    /// The id a restart continues from: one past the highest id logged.
    durable_next_id: JobId,
    clients: Vec<MClient>,
    /// Paused tubes: (unpause time, seconds asked for).
    paused: BTreeMap<TubeIx, (Time, u32)>,
    /// Waiters of each tube that exists.
    waiters: BTreeMap<TubeIx, MWaiters>,
    seq: u64,
    draining: bool,
    wakeups: Vec<(ClientId, Reply)>,
}

fn tube_name(t: TubeIx) -> TubeName {
    TubeName::new(TUBES[t].as_bytes()).expect("valid tube name")
}

fn tube_ix(name: &TubeName) -> TubeIx {
    TUBES
        .iter()
        .position(|t| t == name.as_str())
        .expect("model tube")
}

fn secs(s: u32) -> Time {
    Time::from(s) * SECOND
}

impl Model {
    fn new(now: Time, ids: &[ClientId]) -> Model {
        Model {
            now,
            jobs: BTreeMap::new(),
            next_id: 1,
            durable_next_id: 1,
            clients: ids.iter().map(|&id| MClient::new(id)).collect(),
            paused: BTreeMap::new(),
            waiters: BTreeMap::new(),
            seq: 0,
            draining: false,
            wakeups: Vec::new(),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A tube exists while it is `default` or something refers to it.
    fn exists(&self, t: TubeIx) -> bool {
        t == 0
            || self.jobs.values().any(|j| j.tube == t)
            || self
                .clients
                .iter()
                .any(|c| c.using == t || c.watching.contains(&t))
    }

    fn jobs_in(&self, t: TubeIx) -> impl Iterator<Item = (JobId, &MJob)> {
        self.jobs
            .iter()
            .filter(move |(_, j)| j.tube == t)
            .map(|(&id, j)| (id, j))
    }

    /// The first ready job of a tube by (priority, id), paused or not.
    fn ready_first(&self, t: TubeIx) -> Option<(u32, JobId)> {
        self.jobs_in(t)
            .filter(|(_, j)| j.state == St::Ready)
            .map(|(id, j)| (j.pri, id))
            .min()
    }

    /// The job a tube hands out now.
    fn best_ready(&self, t: TubeIx) -> Option<(u32, JobId)> {
        if self.paused.contains_key(&t) {
            None
        } else {
            self.ready_first(t)
        }
    }

    fn delayed_first(&self, t: TubeIx) -> Option<JobId> {
        self.jobs_in(t)
            .filter_map(|(id, j)| match j.state {
                St::Delayed { until } => Some((until, id)),
                _ => None,
            })
            .min()
            .map(|e| e.1)
    }

    fn buried_in_order(&self, t: TubeIx) -> Vec<JobId> {
        let mut v: Vec<(u64, JobId)> = self
            .jobs_in(t)
            .filter_map(|(id, j)| match j.state {
                St::Buried { seq } => Some((seq, id)),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.into_iter().map(|e| e.1).collect()
    }

    fn delayed_in_order(&self, t: TubeIx) -> Vec<JobId> {
        let mut v: Vec<(Time, JobId)> = self
            .jobs_in(t)
            .filter_map(|(id, j)| match j.state {
                St::Delayed { until } => Some((until, id)),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.into_iter().map(|e| e.1).collect()
    }

    /// The jobs `s` holds as (reserve order, deadline, id), in reserve order.
    fn reserved_by(&self, s: Slot) -> Vec<(u64, Time, JobId)> {
        let mut v: Vec<_> = self
            .jobs
            .iter()
            .filter_map(|(&id, j)| match j.state {
                St::Reserved {
                    by,
                    deadline,
                    order,
                    ..
                } if by == s => Some((order, deadline, id)),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// When the safety margin before the client's soonest TTR starts.
    fn margin(&self, s: Slot) -> Option<Time> {
        self.reserved_by(s)
            .iter()
            .map(|&(_, deadline, _)| deadline)
            .min()
            .map(|deadline| deadline.saturating_sub(SECOND))
    }

    fn deadline_soon(&self, s: Slot) -> bool {
        self.margin(s).is_some_and(|m| self.now >= m)
    }

    fn is_reserved_by(&self, id: JobId, s: Slot) -> bool {
        matches!(self.jobs.get(&id), Some(j) if matches!(j.state, St::Reserved { by, .. } if by == s))
    }

    fn found(&self, id: Option<JobId>) -> Reply {
        match id {
            Some(id) => Reply::Found {
                id,
                body: self.jobs[&id].body.clone(),
            },
            None => Reply::NotFound,
        }
    }

    fn reserve_for(&mut self, s: Slot, id: JobId) -> Reply {
        let now = self.now;
        let order = self.next_seq();
        let job = self.jobs.get_mut(&id).expect("job to reserve");
        job.state = St::Reserved {
            by: s,
            deadline: now + secs(job.ttr),
            order,
        };
        Reply::Reserved {
            id,
            body: job.body.clone(),
        }
    }

    fn make_ready(&mut self, id: JobId) {
        let job = self.jobs.get_mut(&id).expect("job to make ready");
        job.state = St::Ready;
        let t = job.tube;
        self.dispatch(t);
    }

    /// Hands the tube's ready jobs to its waiters.
    fn dispatch(&mut self, t: TubeIx) {
        while let Some((_, id)) = self.best_ready(t) {
            let Some(s) = self.waiters.entry(t).or_default().take() else {
                return;
            };
            self.cancel_wait(s);
            let reply = self.reserve_for(s, id);
            self.wakeups.push((self.clients[s].id, reply));
        }
    }

    fn apply(&mut self, s: Slot, cmd: &Command) -> Outcome {
        let now = self.now;
        let reply = match cmd {
            Command::Put {
                pri,
                delay,
                ttr,
                body,
            } => {
                let body = match body {
                    PutBody::TooBig => return Reply::JobTooBig.into(),
                    PutBody::TrailingText => return Reply::BadFormat.into(),
                    PutBody::ExpectedCrlf => None,
                    PutBody::Body(b) => Some(b.clone()),
                };
                self.clients[s].producer = true;
                let id = self.next_id;
                self.next_id += 1;
                let Some(body) = body else {
                    return Reply::ExpectedCrlf.into();
                };
                if self.draining {
                    return Reply::Draining.into();
                }
                self.durable_next_id = self.durable_next_id.max(id + 1);
                let state = if *delay > 0 {
                    St::Delayed {
                        until: now + secs(*delay),
                    }
                } else {
                    St::Ready
                };
                let job = MJob {
                    tube: self.clients[s].using,
                    pri: *pri,
                    delay: *delay,
                    ttr: (*ttr).max(1),
                    body,
                    state,
                };
                self.jobs.insert(id, job);
                if *delay == 0 {
                    self.make_ready(id);
                }
                Reply::Inserted(id)
            }
            Command::Use(name) => {
                self.clients[s].using = tube_ix(name);
                Reply::Using(name.clone())
            }
            Command::Reserve => return self.reserve(s, None),
            Command::ReserveWithTimeout(secs) => return self.reserve(s, Some(*secs)),
            Command::ReserveJob(id) => match self.jobs.get(id) {
                Some(j) if !matches!(j.state, St::Reserved { .. }) => {
                    self.clients[s].worker = true;
                    self.reserve_for(s, *id)
                }
                _ => Reply::NotFound,
            },
            Command::Delete(id) => match self.jobs.get(id) {
                Some(j) if matches!(j.state, St::Reserved { by, .. } if by != s) => Reply::NotFound,
                Some(_) => {
                    self.jobs.remove(id);
                    Reply::Deleted
                }
                None => Reply::NotFound,
            },
            Command::Release { id, pri, delay } => {
                if !self.is_reserved_by(*id, s) {
                    return Reply::NotFound.into();
                }
                let job = self.jobs.get_mut(id).expect("reserved job");
                job.pri = *pri;
                job.delay = *delay;
                if *delay > 0 {
                    job.state = St::Delayed {
                        until: now + secs(*delay),
                    };
                } else {
                    self.make_ready(*id);
                }
                Reply::Released
            }
            Command::Bury { id, pri } => {
                if !self.is_reserved_by(*id, s) {
                    return Reply::NotFound.into();
                }
                let seq = self.next_seq();
                let job = self.jobs.get_mut(id).expect("reserved job");
                job.pri = *pri;
                job.state = St::Buried { seq };
                Reply::Buried
            }
            Command::Touch(id) => {
                if !self.is_reserved_by(*id, s) {
                    return Reply::NotFound.into();
                }
                let job = self.jobs.get_mut(id).expect("reserved job");
                if let St::Reserved { deadline, .. } = &mut job.state {
                    *deadline = now + secs(job.ttr);
                }
                Reply::Touched
            }
            Command::Watch(name) => {
                let t = tube_ix(name);
                let c = &mut self.clients[s];
                if !c.watching.contains(&t) {
                    c.watching.push(t);
                }
                Reply::Watching(c.watching.len())
            }
            Command::Ignore(name) => {
                let t = tube_ix(name);
                let c = &mut self.clients[s];
                match c.watching.iter().position(|&w| w == t) {
                    None => Reply::Watching(c.watching.len()),
                    Some(_) if c.watching.len() == 1 => Reply::NotIgnored,
                    Some(pos) => {
                        c.watching.swap_remove(pos);
                        Reply::Watching(c.watching.len())
                    }
                }
            }
            Command::Peek(id) => self.found(self.jobs.contains_key(id).then_some(*id)),
            Command::PeekReady => self.found(self.ready_first(self.clients[s].using).map(|e| e.1)),
            Command::PeekDelayed => self.found(self.delayed_first(self.clients[s].using)),
            Command::PeekBuried => {
                self.found(self.buried_in_order(self.clients[s].using).first().copied())
            }
            Command::Kick(bound) => {
                let t = self.clients[s].using;
                let mut ids = self.buried_in_order(t);
                if ids.is_empty() {
                    ids = self.delayed_in_order(t);
                }
                ids.truncate(*bound as usize);
                for &id in &ids {
                    self.make_ready(id);
                }
                Reply::Kicked(ids.len() as u64)
            }
            Command::KickJob(id) => match self.jobs.get(id).map(|j| j.state) {
                Some(St::Buried { .. } | St::Delayed { .. }) => {
                    self.make_ready(*id);
                    Reply::KickedJob
                }
                _ => Reply::NotFound,
            },
            Command::PauseTube { tube, delay } => {
                let t = tube_ix(tube);
                if !self.exists(t) {
                    return Reply::NotFound.into();
                }
                let until = now + secs(*delay).max(1);
                self.paused.insert(t, (until, *delay));
                Reply::Paused
            }
            other => panic!("model does not run {other:?}"),
        };
        reply.into()
    }

    fn reserve(&mut self, s: Slot, timeout: Option<u32>) -> Outcome {
        self.clients[s].worker = true;
        let watching = self.clients[s].watching.clone();
        let any_ready = watching.iter().any(|&t| self.ready_first(t).is_some());
        if self.deadline_soon(s) && !any_ready {
            return Reply::DeadlineSoon.into();
        }
        let best = watching.iter().filter_map(|&t| self.best_ready(t)).min();
        if let Some((_, id)) = best {
            return self.reserve_for(s, id).into();
        }
        if timeout == Some(0) {
            return if self.deadline_soon(s) {
                Reply::DeadlineSoon
            } else {
                Reply::TimedOut
            }
            .into();
        }
        let now = self.now;
        self.clients[s].wait = Some(MWait {
            timeout_at: timeout.map(|t| now + secs(t)),
        });
        for t in watching {
            self.waiters.entry(t).or_default().items.push(s);
        }
        Outcome::Wait
    }

    /// Runs every event due at `now`, earliest first.
    fn tick(&mut self) {
        loop {
            // (time, kind, key): kinds ordered as the engine orders ties.
            let mut due: Vec<(Time, u8, u64)> = Vec::new();
            for (&id, j) in &self.jobs {
                match j.state {
                    St::Delayed { until } => due.push((until, 0, id)),
                    St::Reserved { deadline, .. } => due.push((deadline, 2, id)),
                    _ => {}
                }
            }
            for (&t, &(until, _)) in &self.paused {
                due.push((until, 1, t as u64));
            }
            for (s, c) in self.clients.iter().enumerate() {
                if let Some(w) = &c.wait {
                    let at = [w.timeout_at, self.margin(s)].into_iter().flatten().min();
                    if let Some(at) = at {
                        due.push((at, 3, c.id));
                    }
                }
            }
            let Some(&(at, kind, key)) = due.iter().min() else {
                return;
            };
            if at > self.now {
                return;
            }
            match kind {
                0 | 2 => self.make_ready(key),
                1 => {
                    let t = key as TubeIx;
                    self.paused.remove(&t);
                    self.dispatch(t);
                }
                _ => {
                    let s = self
                        .clients
                        .iter()
                        .position(|c| c.id == key)
                        .expect("waiting client");
                    let reply = if self.deadline_soon(s) {
                        Reply::DeadlineSoon
                    } else {
                        Reply::TimedOut
                    };
                    self.cancel_wait(s);
                    self.wakeups.push((key, reply));
                }
            }
        }
    }

    /// The client in slot `s` goes away; `new_id` takes its slot.
    fn disconnect(&mut self, s: Slot, new_id: ClientId) {
        self.cancel_wait(s);
        for (_, _, id) in self.reserved_by(s) {
            self.make_ready(id);
        }
        self.clients[s] = MClient::new(new_id);
    }

    /// Ends a blocked reserve without an answer; false if there was none.
    fn cancel_wait(&mut self, s: Slot) -> bool {
        if self.clients[s].wait.take().is_none() {
            return false;
        }
        for &t in &self.clients[s].watching {
            self.waiters.entry(t).or_default().remove(s);
        }
        true
    }

    /// The engine was rebuilt from the binlog; `ids` are the new connections.
    fn restart(&mut self, ids: &[ClientId]) {
        let now = self.now;
        for job in self.jobs.values_mut() {
            match job.state {
                St::Reserved { .. } => job.state = St::Ready,
                St::Delayed { until } if until <= now => job.state = St::Ready,
                _ => {}
            }
        }
        self.paused.clear();
        self.waiters.clear();
        self.clients = ids.iter().map(|&id| MClient::new(id)).collect();
        self.next_id = self.durable_next_id;
        self.draining = false;
        assert!(self.wakeups.is_empty());
    }

    /// Drops pause state of tubes that no longer exist (the engine frees them).
    fn forget_dead_tubes(&mut self) {
        let dead: Vec<TubeIx> = self
            .paused
            .keys()
            .copied()
            .filter(|&t| !self.exists(t))
            .collect();
        for t in dead {
            self.paused.remove(&t);
        }
        let gone: Vec<TubeIx> = self
            .waiters
            .keys()
            .copied()
            .filter(|&t| !self.exists(t))
            .collect();
        for t in gone {
            self.waiters.remove(&t);
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "stalkd-model-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads the input a byte at a time; zeros once it runs out.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// One step of a run.
#[derive(Debug)]
enum Op {
    Cmd(Slot, Command),
    Disconnect(Slot),
    /// A half-closed peer's blocked reserve is abandoned.
    Abandon(Slot),
    Advance {
        by: Time,
        tick: bool,
    },
    Restart,
    Draining(bool),
    /// Watch every rare tube (the client becomes a wide watcher).
    WatchWide(Slot),
    /// Ignore every rare tube.
    IgnoreWide(Slot),
}

struct Harness {
    engine: Engine,
    model: Model,
    /// Set when the run uses a binlog (restarts replay it).
    dir: Option<TempDir>,
    binlog_max_size: u64,
    trace: bool,
    puts: u64,
    /// The jobs as of the last `stats-job` sweep, and checks since then.
    swept: BTreeMap<JobId, MJob>,
    checks: u64,
}

fn new_engine(now: Time, binlog_max_size: u64) -> Engine {
    Engine::new(
        EngineConfig {
            max_job_size: MAX_JOB_SIZE,
            binlog_max_size,
            host: HostInfo::fixed(),
        },
        now,
    )
}

/// The body of a YAML reply, searched line by line (no allocation per field).
struct Yaml(Bytes);

fn yaml(reply: Reply) -> Yaml {
    let Reply::Ok(body) = reply else {
        panic!("expected OK, got {reply:?}");
    };
    Yaml(body)
}

impl Yaml {
    fn get(&self, key: &str) -> Option<&str> {
        let text = std::str::from_utf8(&self.0).expect("utf-8 yaml");
        text.lines()
            .skip(1)
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
    }
}

fn yaml_list(reply: Reply) -> Vec<String> {
    let Reply::Ok(body) = reply else {
        panic!("expected OK, got {reply:?}");
    };
    let text = std::str::from_utf8(&body).expect("utf-8 yaml");
    text.lines()
        .skip(1)
        .map(|l| l.strip_prefix("- ").expect("list item").to_string())
        .collect()
}

#[track_caller]
fn expect_field(yaml: &Yaml, key: &str, want: impl std::fmt::Display, what: &str) {
    use std::fmt::Write;
    let mut buf = String::new();
    let _ = write!(buf, "{want}");
    assert_eq!(yaml.get(key), Some(buf.as_str()), "{what}: {key}");
}

impl Harness {
    fn new(journaled: bool, binlog_max_size: u64) -> Harness {
        let trace = std::env::var_os("STALKD_MODEL_TRACE").is_some();
        let mut h = Harness {
            engine: new_engine(T0, binlog_max_size),
            model: Model::new(T0, &[]),
            dir: journaled.then(TempDir::new),
            binlog_max_size,
            trace,
            puts: 0,
            swept: BTreeMap::new(),
            checks: 0,
        };
        if journaled {
            h.open_binlog();
        }
        let ids: Vec<ClientId> = (0..=CLIENTS).map(|_| h.engine.connect()).collect();
        h.model = Model::new(T0, &ids);
        h
    }

    fn open_binlog(&mut self) {
        let dir = &self.dir.as_ref().expect("journaled run").0;
        let (log, recovered) =
            binlog::open(dir, self.binlog_max_size, SyncPolicy::Never, false).expect("open binlog");
        self.engine.set_journal(Box::new(log));
        self.engine.restore(self.model.now, recovered);
    }

    fn restart(&mut self) {
        let now = self.model.now;
        // The old engine (and its binlog, with the directory lock) goes first.
        self.engine = new_engine(now, self.binlog_max_size);
        self.open_binlog();
        let ids: Vec<ClientId> = (0..=CLIENTS).map(|_| self.engine.connect()).collect();
        self.model.restart(&ids);
    }

    /// A job id: mostly a live one, sometimes any small number.
    fn pick_id(&self, b: u8) -> JobId {
        let live: Vec<JobId> = self.model.jobs.keys().copied().collect();
        if b & 0x80 == 0 && !live.is_empty() {
            live[usize::from(b) % live.len()]
        } else {
            u64::from(b & 0x7f) % (self.model.next_id + 2)
        }
    }

    /// A client slot that is not blocked in reserve, starting at `b`.
    fn pick_free(&self, b: u8) -> Option<Slot> {
        (0..CLIENTS)
            .map(|i| (usize::from(b) + i) % CLIENTS)
            .find(|&s| self.model.clients[s].wait.is_none())
    }

    fn decode(&mut self, input: &mut Input<'_>) -> Option<Op> {
        let code = input.byte() % 26;
        let slot_byte = input.byte();
        let cmd = |s: Option<Slot>, c: Command| s.map(|s| Op::Cmd(s, c));
        let free = self.pick_free(slot_byte);
        let pri = |b: u8| match b % 8 {
            0 => 0,
            1 => 1,
            2 => URGENT - 1,
            3 => URGENT,
            4 => u32::MAX,
            _ => u32::from(b / 8),
        };
        let delay = |b: u8| match b % 8 {
            0..=3 => 0,
            4 => 1,
            5 => 2,
            6 => u32::from(b / 8),
            _ => u32::MAX,
        };
        let tube = |b: u8| {
            tube_name(if b >= 224 {
                BASE_TUBES + usize::from(b) % WIDE_TUBES
            } else {
                usize::from(b) % BASE_TUBES
            })
        };
        match code {
            0..=2 => {
                let (p, d, t, b) = (input.byte(), input.byte(), input.byte(), input.byte());
                let ttr = match t % 8 {
                    0 => 0,
                    1 => 1,
                    2 => 2,
                    3 => 3,
                    4 => 10,
                    5 => u32::MAX,
                    _ => u32::from(t / 8),
                };
                self.puts += 1;
                let body = match b % 16 {
                    0 => PutBody::TooBig,
                    1 => PutBody::ExpectedCrlf,
                    2 => PutBody::TrailingText,
                    n => {
                        let mut text = format!("job{}-", self.puts);
                        text.extend(std::iter::repeat_n(
                            'x',
                            usize::from(n) * usize::from(b / 16),
                        ));
                        text.push_str("\r\n");
                        PutBody::Body(Bytes::from(text))
                    }
                };
                cmd(
                    free,
                    Command::Put {
                        pri: pri(p),
                        delay: delay(d),
                        ttr,
                        body,
                    },
                )
            }
            3 | 4 => cmd(free, Command::Reserve),
            5 => {
                let b = input.byte();
                let secs = match b % 4 {
                    3 => u32::from(b / 4),
                    n => u32::from(n),
                };
                cmd(free, Command::ReserveWithTimeout(secs))
            }
            6 => cmd(free, Command::ReserveJob(self.pick_id(input.byte()))),
            7 | 8 => cmd(free, Command::Delete(self.pick_id(input.byte()))),
            9 => {
                let id = self.pick_id(input.byte());
                let (p, d) = (input.byte(), input.byte());
                cmd(
                    free,
                    Command::Release {
                        id,
                        pri: pri(p),
                        delay: delay(d),
                    },
                )
            }
            10 => {
                let id = self.pick_id(input.byte());
                let p = input.byte();
                cmd(free, Command::Bury { id, pri: pri(p) })
            }
            11 => cmd(free, Command::Touch(self.pick_id(input.byte()))),
            12 => {
                let bound = match input.byte() % 6 {
                    4 => u32::MAX,
                    5 => 10,
                    n => u32::from(n),
                };
                cmd(free, Command::Kick(bound))
            }
            13 => cmd(free, Command::KickJob(self.pick_id(input.byte()))),
            14 => cmd(free, Command::Use(tube(input.byte()))),
            15 => cmd(free, Command::Watch(tube(input.byte()))),
            16 => cmd(free, Command::Ignore(tube(input.byte()))),
            17 => {
                let t = tube(input.byte());
                let b = input.byte();
                let mut delay = match b % 4 {
                    3 => u32::from(b / 4),
                    n => u32::from(n),
                };
                // Keep pause ends of different tubes apart (see the module doc).
                let ix = tube_ix(&t);
                while self.model.paused.iter().any(|(&other, &(until, _))| {
                    other != ix && until == self.model.now + secs(delay).max(1)
                }) {
                    delay += 1;
                }
                cmd(free, Command::PauseTube { tube: t, delay })
            }
            18 => {
                let b = input.byte();
                let c = match b % 4 {
                    0 => Command::Peek(self.pick_id(input.byte())),
                    1 => Command::PeekReady,
                    2 => Command::PeekDelayed,
                    _ => Command::PeekBuried,
                };
                cmd(free, c)
            }
            19 => Some(Op::Disconnect(usize::from(slot_byte) % CLIENTS)),
            20 | 21 => {
                let b = input.byte();
                let by = match b % 8 {
                    0 => 1,
                    1 => SECOND / 2,
                    2 => SECOND - 1,
                    3 => SECOND,
                    4 => 2 * SECOND,
                    5 => 5 * SECOND,
                    6 => 0,
                    _ => secs(u32::from(b / 8)),
                };
                Some(Op::Advance {
                    by,
                    tick: slot_byte % 8 != 0,
                })
            }
            22 => self.dir.is_some().then_some(Op::Restart),
            23 => free.map(Op::WatchWide),
            24 => free.map(Op::IgnoreWide),
            _ => match slot_byte % 8 {
                0 => Some(Op::Draining(!self.model.draining)),
                n => Some(Op::Abandon(usize::from(n) % CLIENTS)),
            },
        }
    }

    fn step(&mut self, op: Op) {
        if self.trace {
            eprintln!("@{} {op:?}", self.model.now);
        }
        let now = self.model.now;
        match op {
            Op::Cmd(s, cmd) => self.command(s, cmd),
            Op::WatchWide(s) => {
                for t in BASE_TUBES..TUBES.len() {
                    self.command(s, Command::Watch(tube_name(t)));
                }
            }
            Op::IgnoreWide(s) => {
                for t in BASE_TUBES..TUBES.len() {
                    self.command(s, Command::Ignore(tube_name(t)));
                }
            }
            Op::Disconnect(s) => {
                let old = self.model.clients[s].id;
                self.engine.disconnect(now, old);
                let new = self.engine.connect();
                self.model.disconnect(s, new);
            }
            Op::Abandon(s) => {
                let client = self.model.clients[s].id;
                let want = self.model.cancel_wait(s);
                assert_eq!(self.engine.time_out_wait(client), want, "time_out_wait");
            }
            Op::Advance { by, tick } => {
                self.model.now += by;
                if tick {
                    self.engine.tick(self.model.now);
                    self.model.tick();
                }
            }
            Op::Restart => self.restart(),
            Op::Draining(on) => {
                self.engine.set_draining(on);
                self.model.draining = on;
            }
        }
        let got: Vec<_> = self.engine.take_wakeups().collect();
        let want: Vec<_> = self.model.wakeups.drain(..).collect();
        if self.trace && !got.is_empty() {
            eprintln!("    wake-ups: {got:?}");
        }
        if self.trace && got != want {
            eprintln!("{:#?}", self.engine);
        }
        assert_eq!(got, want, "wake-ups");
        self.model.forget_dead_tubes();
        if self.dir.is_some() {
            self.engine.maintain_journal();
        }
    }

    /// Runs a command on both sides; the replies must be equal.
    fn command(&mut self, s: Slot, cmd: Command) {
        let client = self.model.clients[s].id;
        let want = self.model.apply(s, &cmd);
        let got = self.engine.apply(self.model.now, client, cmd.clone());
        if self.trace {
            eprintln!("    client {client}: {got:?}");
        }
        assert_eq!(got, want, "reply to {cmd:?} from slot {s}");
    }

    /// Asks the engine a question on behalf of a client that is not waiting.
    fn ask(&mut self, s: Slot, cmd: Command) -> Reply {
        let client = self.model.clients[s].id;
        match self.engine.apply(self.model.now, client, cmd) {
            Outcome::Reply(r) => r,
            Outcome::Wait => panic!("a question blocked"),
        }
    }

    /// Everything observable must match the model (`stats-tube` of the rare
    /// tubes only when `full`: there are many of them).
    fn check(&mut self, full: bool) {
        self.engine.check_invariants();
        let now = self.model.now;
        let m = &self.model;
        // Per tube: ready, urgent, reserved, delayed, buried.
        let mut per_tube = vec![[0usize; 5]; TUBES.len()];
        let mut referenced = vec![false; TUBES.len()];
        referenced[0] = true;
        for j in m.jobs.values() {
            let k = match j.state {
                St::Ready => 0,
                St::Reserved { .. } => 2,
                St::Delayed { .. } => 3,
                St::Buried { .. } => 4,
            };
            per_tube[j.tube][k] += 1;
            if j.state == St::Ready && j.pri < URGENT {
                per_tube[j.tube][1] += 1;
            }
            referenced[j.tube] = true;
        }
        for c in &m.clients {
            referenced[c.using] = true;
            for &t in &c.watching {
                referenced[t] = true;
            }
        }
        let total = |k: usize| per_tube.iter().map(|c| c[k]).sum::<usize>();
        let live: Vec<TubeIx> = (0..TUBES.len()).filter(|&t| referenced[t]).collect();
        let producers = m.clients.iter().filter(|c| c.producer).count();
        let workers = m.clients.iter().filter(|c| c.worker).count();
        let waiting = m.clients.iter().filter(|c| c.wait.is_some()).count();

        let stats = yaml(self.ask(OBSERVER, Command::Stats));
        let w = "stats";
        expect_field(&stats, "current-jobs-urgent", total(1), w);
        expect_field(&stats, "current-jobs-ready", total(0), w);
        expect_field(&stats, "current-jobs-reserved", total(2), w);
        expect_field(&stats, "current-jobs-delayed", total(3), w);
        expect_field(&stats, "current-jobs-buried", total(4), w);
        expect_field(&stats, "current-tubes", live.len(), w);
        expect_field(&stats, "current-connections", CLIENTS + 1, w);
        expect_field(&stats, "current-producers", producers, w);
        expect_field(&stats, "current-workers", workers, w);
        expect_field(&stats, "current-waiting", waiting, w);
        expect_field(&stats, "draining", self.model.draining, w);

        let mut listed = yaml_list(self.ask(OBSERVER, Command::ListTubes));
        listed.sort();
        let mut want: Vec<&str> = live.iter().map(|&t| TUBES[t].as_str()).collect();
        want.sort();
        assert_eq!(listed, want, "list-tubes");

        let checked = if full { TUBES.len() } else { BASE_TUBES };
        for (t, name) in TUBES.iter().enumerate().take(checked) {
            let name = name.as_str();
            let reply = self.ask(OBSERVER, Command::StatsTube(tube_name(t)));
            if !referenced[t] {
                assert_eq!(reply, Reply::NotFound, "stats-tube {name}");
                continue;
            }
            let m = &self.model;
            let st = yaml(reply);
            let w = format!("stats-tube {name}");
            let [ready, urgent, reserved, delayed, buried] = per_tube[t];
            expect_field(&st, "name", name, &w);
            expect_field(&st, "current-jobs-urgent", urgent, &w);
            expect_field(&st, "current-jobs-ready", ready, &w);
            expect_field(&st, "current-jobs-reserved", reserved, &w);
            expect_field(&st, "current-jobs-delayed", delayed, &w);
            expect_field(&st, "current-jobs-buried", buried, &w);
            let using = m.clients.iter().filter(|c| c.using == t).count();
            let watching = m.clients.iter().filter(|c| c.watching.contains(&t)).count();
            let waiting = m
                .clients
                .iter()
                .filter(|c| c.wait.is_some() && c.watching.contains(&t))
                .count();
            expect_field(&st, "current-using", using, &w);
            expect_field(&st, "current-watching", watching, &w);
            expect_field(&st, "current-waiting", waiting, &w);
            let (pause, left) = match m.paused.get(&t) {
                Some(&(until, secs)) => (secs, until.saturating_sub(now) / SECOND),
                None => (0, 0),
            };
            expect_field(&st, "pause", pause, &w);
            expect_field(&st, "pause-time-left", left, &w);
        }

        // `stats-job` and `peek` of every job dominate the cost of a check, so
        // between full checks and every 8th one only the jobs the model
        // changed are swept (the counts above cover every job every time).
        self.checks += 1;
        let sweep_all = full || self.checks % 8 == 0 || self.model.jobs.len() <= 8;
        let jobs: Vec<(JobId, MJob)> = self
            .model
            .jobs
            .iter()
            .filter(|&(id, j)| sweep_all || self.swept.get(id) != Some(j))
            .map(|(&id, j)| (id, j.clone()))
            .collect();
        self.swept.clone_from(&self.model.jobs);
        for (id, job) in jobs {
            let w = format!("stats-job {id}");
            let sj = yaml(self.ask(OBSERVER, Command::StatsJob(id)));
            let (state, left) = match job.state {
                St::Ready => ("ready", 0),
                St::Buried { .. } => ("buried", 0),
                St::Delayed { until } => ("delayed", until.saturating_sub(now) / SECOND),
                St::Reserved { deadline, .. } => {
                    ("reserved", deadline.saturating_sub(now) / SECOND)
                }
            };
            expect_field(&sj, "id", id, &w);
            expect_field(&sj, "tube", &TUBES[job.tube], &w);
            expect_field(&sj, "state", state, &w);
            expect_field(&sj, "pri", job.pri, &w);
            expect_field(&sj, "delay", job.delay, &w);
            expect_field(&sj, "ttr", job.ttr, &w);
            expect_field(&sj, "time-left", left, &w);
            assert_eq!(
                self.ask(OBSERVER, Command::Peek(id)),
                Reply::Found { id, body: job.body },
                "peek {id}"
            );
        }

        for s in 0..CLIENTS {
            if self.model.clients[s].wait.is_some() {
                continue;
            }
            let c = self.model.clients[s].clone();
            assert_eq!(
                self.ask(s, Command::ListTubeUsed),
                Reply::Using(tube_name(c.using)),
                "list-tube-used of slot {s}"
            );
            let want: Vec<&str> = c.watching.iter().map(|&t| TUBES[t].as_str()).collect();
            assert_eq!(
                yaml_list(self.ask(s, Command::ListTubesWatched)),
                want,
                "list-tubes-watched of slot {s}"
            );
        }
        assert!(
            self.engine.take_wakeups().next().is_none(),
            "questions woke someone"
        );
    }

    /// No id the model does not know is in the engine.
    fn check_no_strays(&mut self) {
        let known: BTreeSet<JobId> = self.model.jobs.keys().copied().collect();
        for id in 0..self.model.next_id + 3 {
            if !known.contains(&id) {
                assert_eq!(
                    self.ask(OBSERVER, Command::Peek(id)),
                    Reply::NotFound,
                    "stray job {id}"
                );
            }
        }
    }
}

/// Runs the operations `data` encodes against the engine and the model.
///
/// Byte 0 picks the set-up: bit 0 turns the binlog on, bits 1-2 its segment
/// size (small sizes make rotation and compaction happen).
pub fn run(data: &[u8]) {
    let mut input = Input { data };
    let setup = input.byte();
    let journaled = setup & 1 == 1;
    let binlog_max_size = [600, 2048, 16 << 10, 1 << 20][usize::from(setup >> 1) % 4];
    let mut h = Harness::new(journaled, binlog_max_size);
    h.check(true);
    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS {
        ops += 1;
        if let Some(op) = h.decode(&mut input) {
            let full = matches!(op, Op::Restart);
            h.step(op);
            h.check(full);
        }
    }
    h.check(true);
    h.check_no_strays();
    if journaled {
        if h.trace {
            eprintln!("final restart");
        }
        h.restart();
        h.check(true);
        h.check_no_strays();
    }
}
