//! Building blocks shared by the scenarios: the run context, job budgets,
//! producer/consumer flow control, and the worker loops (pipelined puts,
//! reserve+delete consumers, paced cycle producers, drain and delete-by-id).
//!
//! Every loop is bounded twice: by a job budget and by a deadline, and every
//! read has a timeout, so a stalled or misbehaving server ends a run with
//! errors counted instead of a hang.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::cli::Settings;
use crate::clock;
use crate::proto::{BenchError, Conn};
use crate::report::{Report, Usage};
use crate::sysmon::{Probe, Sample};
use crate::tally::Tally;

/// Seconds a consumer's `reserve-with-timeout` waits.
const RESERVE_WAIT_S: u64 = 1;
/// Pipeline depth of untimed pre-fill and clean-up phases.
pub const BULK_DEPTH: usize = 100;

/// Settings plus what every scenario needs at hand.
#[derive(Debug)]
pub struct Ctx {
    pub s: Settings,
    pub server: Probe,
    /// Nothing may run past this instant.
    pub hard_deadline: Instant,
}

impl Ctx {
    /// End of a measured phase starting now: `--duration`, within the hard limit.
    pub fn phase_deadline(&self) -> Instant {
        self.cap(Instant::now() + self.s.duration)
    }

    /// End of an untimed set-up phase starting now.
    pub fn setup_deadline(&self) -> Instant {
        let allowance = (self.s.duration * 2).max(Duration::from_secs(30));
        self.cap(Instant::now() + allowance)
    }

    /// `t`, but never past the hard deadline.
    pub fn cap(&self, t: Instant) -> Instant {
        t.min(self.hard_deadline)
    }

    /// Opens a connection with the configured I/O timeout.
    pub async fn connect(&self) -> Result<Conn, BenchError> {
        Conn::connect(self.s.addr, self.s.io_timeout).await
    }

    /// Connects, or counts the failure in `tally` and returns `None`.
    pub async fn connect_counted(&self, tally: &mut Tally) -> Option<Conn> {
        match self.connect().await {
            Ok(conn) => Some(conn),
            Err(e) => {
                tally.error(&e);
                None
            }
        }
    }

    /// Samples the server (if `--pid`) and this process.
    pub fn meter(&self) -> Meter {
        Meter {
            server: self.server.sample(),
            client: Probe::this_process().sample(),
            start: Instant::now(),
        }
    }
}

/// Resource samples and the clock at the start of a measured phase.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    pub server: Option<Sample>,
    client: Option<Sample>,
    pub start: Instant,
}

impl Meter {
    /// Fills elapsed time, server usage and client CPU into `r`.
    /// Elapsed runs to the last finished job (idle waiting at the end of a
    /// phase does not count), or to now when no job finished.
    pub fn finish(&self, ctx: &Ctx, r: &mut Report) {
        let end = r.tally.last_done.unwrap_or_else(Instant::now);
        r.elapsed = end.saturating_duration_since(self.start);
        r.server = Usage::between(self.server, ctx.server.sample());
        let client = Probe::this_process().sample();
        r.client_cpu_s = Usage::between(self.client, client).map(|u| u.cpu());
    }
}

/// A shared cap on how many jobs the workers of a phase may start.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    taken: AtomicU64,
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            taken: AtomicU64::new(0),
        })
    }

    /// Claims up to `want` jobs; returns how many were granted.
    pub fn take(&self, want: usize) -> usize {
        let prev = self.taken.fetch_add(want as u64, Relaxed);
        self.limit.saturating_sub(prev).min(want as u64) as usize
    }
}

/// Producer/consumer bookkeeping of one phase.
#[derive(Debug, Default)]
pub struct Flow {
    pub produced: AtomicU64,
    pub reserved: AtomicU64,
    producers_done: AtomicBool,
    /// Permits = jobs that may be put before a consumer reserves one.
    backlog: Option<Semaphore>,
}

impl Flow {
    /// Live producers, with at most `backlog` unreserved jobs (0 = unbounded).
    pub fn live(backlog: usize) -> Arc<Flow> {
        Arc::new(Flow {
            backlog: (backlog > 0).then(|| Semaphore::new(backlog)),
            ..Flow::default()
        })
    }

    /// All `n` jobs are already stored.
    pub fn stored(n: u64) -> Arc<Flow> {
        let flow = Flow::live(0);
        flow.produced.store(n, Relaxed);
        flow.producers_done.store(true, Relaxed);
        flow
    }

    /// Producers have finished; consumers stop when they have caught up.
    pub fn close(&self) {
        self.producers_done.store(true, Relaxed);
    }

    fn consumers_done(&self) -> bool {
        self.producers_done.load(Relaxed)
            && self.reserved.load(Relaxed) >= self.produced.load(Relaxed)
    }

    /// Waits for backlog room; `false` if the deadline came first.
    async fn admit(&self, deadline: Instant) -> bool {
        let Some(sem) = &self.backlog else {
            return true;
        };
        match timeout_at(deadline, sem.acquire()).await {
            Ok(Ok(permit)) => {
                permit.forget();
                true
            }
            _ => false,
        }
    }

    fn on_reserved(&self) {
        self.reserved.fetch_add(1, Relaxed);
        if let Some(sem) = &self.backlog {
            sem.add_permits(1);
        }
    }
}

/// Connections set up at once, at most this many at a time.
const CONNECT_CONCURRENCY: usize = 128;

/// Opens `n` connections, each passed through `setup` (at most
/// [`CONNECT_CONCURRENCY`] at a time), within the set-up deadline. The tally
/// has the time from connect to the end of `setup` for each.
pub async fn open_many<F, Fut>(ctx: &Arc<Ctx>, n: usize, setup: F) -> (Vec<Conn>, Tally)
where
    F: Fn(Conn) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Conn, BenchError>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let deadline = ctx.setup_deadline();
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (ctx, gate, setup) = (ctx.clone(), gate.clone(), setup.clone());
        set.spawn(async move {
            let _permit = timeout_at(deadline, gate.acquire_owned())
                .await
                .map_err(|_| BenchError::Timeout("waiting for a connect slot"))?
                .map_err(|_| BenchError::Closed)?;
            let t0 = Instant::now();
            let conn = timeout_at(deadline, async move {
                let conn = ctx.connect().await?;
                setup(conn).await
            })
            .await
            .map_err(|_| BenchError::Timeout("setting up a connection"))??;
            Ok::<_, BenchError>((conn, t0.elapsed()))
        });
    }
    let mut conns = Vec::with_capacity(n);
    let mut tally = Tally::default();
    for res in join_all(set).await {
        match res {
            Ok((conn, took)) => {
                conns.push(conn);
                tally.latency(took);
                tally.ops += 1;
                tally.done(1);
            }
            Err(e) => {
                tally.error(&e);
            }
        }
    }
    (conns, tally)
}

/// Opens `n` connections watching exactly `tubes`.
pub async fn open_watchers(
    ctx: &Arc<Ctx>,
    n: usize,
    tubes: &Arc<Vec<String>>,
) -> (Vec<Conn>, Tally) {
    let tubes = tubes.clone();
    open_many(ctx, n, move |mut c| {
        let tubes = tubes.clone();
        async move {
            c.watch_only(&tubes).await?;
            Ok(c)
        }
    })
    .await
}

/// Opens `n` connections using `tube` (or the default tube for `None`).
pub async fn open_users(ctx: &Arc<Ctx>, n: usize, tube: Option<&str>) -> (Vec<Conn>, Tally) {
    let tube = tube.map(str::to_string);
    open_many(ctx, n, move |mut c| {
        let tube = tube.clone();
        async move {
            if let Some(t) = tube {
                c.use_tube(&t).await?;
            }
            Ok(c)
        }
    })
    .await
}

/// Waits for every task and returns their results (a panicked task is lost,
/// which cannot happen with panic=abort in release builds).
pub async fn join_all<T: 'static>(mut set: JoinSet<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(res) = set.join_next().await {
        if let Ok(v) = res {
            out.push(v);
        }
    }
    out
}

/// The body of each put.
#[derive(Debug, Clone)]
pub enum BodyKind {
    /// The same bytes every time.
    Fixed(Bytes),
    /// A send-time stamp padded to this length.
    Stamped(usize),
}

impl BodyKind {
    /// `len` bytes of `x`.
    pub fn fixed(len: usize) -> BodyKind {
        BodyKind::Fixed(Bytes::from(vec![b'x'; len]))
    }
}

/// What a pipelined put worker does.
#[derive(Debug, Clone)]
pub struct PutPlan {
    pub tube: String,
    pub delay: u32,
    pub body: BodyKind,
    pub depth: usize,
    pub deadline: Instant,
    /// Keep the ids of inserted jobs (for delete-by-id later).
    pub keep_ids: bool,
}

impl PutPlan {
    /// Puts of `--body` bytes of `x` to the run's tube, without delay,
    /// `depth` in flight, ids not kept.
    pub fn fixed(s: &Settings, depth: usize, deadline: Instant) -> PutPlan {
        PutPlan {
            tube: s.tube.clone(),
            delay: 0,
            body: BodyKind::fixed(s.body),
            depth,
            deadline,
            keep_ids: false,
        }
    }
}

/// What a put worker returns.
#[derive(Debug, Default)]
pub struct PutResult {
    pub tally: Tally,
    pub ids: Vec<u64>,
}

/// Runs `conns` pipelined put workers sharing `budget`; `flow.produced`
/// counts inserted jobs when given.
pub async fn put_phase(
    ctx: &Arc<Ctx>,
    conns: usize,
    plan: PutPlan,
    budget: Arc<Budget>,
    flow: Option<Arc<Flow>>,
) -> PutResult {
    let plan = Arc::new(plan);
    let mut set = JoinSet::new();
    for _ in 0..conns {
        let (ctx, plan, budget, flow) = (ctx.clone(), plan.clone(), budget.clone(), flow.clone());
        set.spawn(async move { put_worker(&ctx, &plan, &budget, flow.as_deref()).await });
    }
    let mut total = PutResult::default();
    for r in join_all(set).await {
        total.tally.merge(&r.tally);
        total.ids.extend(r.ids);
    }
    total
}

async fn put_worker(ctx: &Ctx, plan: &PutPlan, budget: &Budget, flow: Option<&Flow>) -> PutResult {
    let mut out = PutResult::default();
    let Some(mut conn) = ctx.connect_counted(&mut out.tally).await else {
        return out;
    };
    if let Err(e) = conn.use_tube(&plan.tube).await {
        out.tally.error(&e);
        return out;
    }
    while Instant::now() < plan.deadline {
        let n = budget.take(plan.depth);
        if n == 0 {
            break;
        }
        if let Err(e) = put_batch(&mut conn, plan, n, &mut out, flow).await {
            out.tally.error(&e);
            break;
        }
    }
    out
}

/// Sends `n` puts in one write and checks the `n` replies.
async fn put_batch(
    conn: &mut Conn,
    plan: &PutPlan,
    n: usize,
    out: &mut PutResult,
    flow: Option<&Flow>,
) -> Result<(), BenchError> {
    for _ in 0..n {
        match &plan.body {
            BodyKind::Fixed(b) => conn.put(plan.delay, b),
            BodyKind::Stamped(len) => conn.put_stamped(plan.delay, *len),
        }
    }
    let t0 = Instant::now();
    conn.flush().await?;
    for _ in 0..n {
        match conn.reply().await?.expect_inserted() {
            Ok(id) => {
                out.tally.latency(t0.elapsed());
                out.tally.ops += 1;
                out.tally.done(1);
                if plan.keep_ids {
                    out.ids.push(id);
                }
                if let Some(f) = flow {
                    f.produced.fetch_add(1, Relaxed);
                }
            }
            Err(e) => {
                out.tally.error(&e);
            }
        }
    }
    Ok(())
}

/// How a consumer computes the latency it records.
#[derive(Debug, Clone, Copy)]
pub enum LatencyFrom {
    /// Time of the reserve + delete round trips.
    ReserveDelete,
    /// From the put (stamp in the body) to the reservation.
    Put,
    /// From the moment the job came due (stamp + delay) to the reservation.
    Due(Duration),
}

/// What a consumer does.
#[derive(Debug, Clone)]
pub struct ConsumePlan {
    pub latency: LatencyFrom,
    pub deadline: Instant,
    /// Expected body length, checked on every job.
    pub body_len: usize,
}

/// Runs reserve+delete consumers on prepared connections (see
/// [`open_watchers`]) until `flow` says all jobs were reserved or the
/// deadline passes.
pub fn spawn_consumers(
    ctx: &Arc<Ctx>,
    conns: Vec<Conn>,
    plan: ConsumePlan,
    flow: &Arc<Flow>,
) -> JoinSet<Tally> {
    let plan = Arc::new(plan);
    let mut set = JoinSet::new();
    for conn in conns {
        let (ctx, plan, flow) = (ctx.clone(), plan.clone(), flow.clone());
        set.spawn(async move { consumer(&ctx, conn, &plan, &flow).await });
    }
    set
}

async fn consumer(ctx: &Ctx, mut conn: Conn, plan: &ConsumePlan, flow: &Flow) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < plan.deadline && !flow.consumers_done() {
        if let Err(e) = consume_one(ctx, &mut conn, plan, flow, &mut tally).await {
            if tally.error(&e) {
                break;
            }
        }
    }
    tally
}

/// One `reserve-with-timeout` and, if a job came, its `delete`.
async fn consume_one(
    ctx: &Ctx,
    conn: &mut Conn,
    plan: &ConsumePlan,
    flow: &Flow,
    tally: &mut Tally,
) -> Result<(), BenchError> {
    let t0 = Instant::now();
    conn.cmd(format_args!("reserve-with-timeout {RESERVE_WAIT_S}"));
    conn.flush().await?;
    let wait = Duration::from_secs(RESERVE_WAIT_S) + ctx.s.io_timeout;
    let Some((id, body)) = conn
        .reply_by(Instant::now() + wait)
        .await?
        .expect_reserved_or_timeout()?
    else {
        return Ok(());
    };
    let now_ns = clock::now_ns();
    flow.on_reserved();
    tally.ops += 1;
    conn.cmd(format_args!("delete {id}"));
    conn.flush().await?;
    conn.reply().await?.expect_deleted()?;
    tally.ops += 1;
    check_body(&body, plan.body_len)?;
    match plan.latency {
        LatencyFrom::ReserveDelete => tally.latency(t0.elapsed()),
        LatencyFrom::Put => tally.latency_ns(now_ns.saturating_sub(stamp(&body)?)),
        LatencyFrom::Due(d) => {
            let due = stamp(&body)? + d.as_nanos() as u64;
            tally.latency_ns(now_ns.saturating_sub(due));
        }
    }
    tally.done(1);
    Ok(())
}

fn check_body(body: &[u8], len: usize) -> Result<(), BenchError> {
    if body.len() == len {
        Ok(())
    } else {
        Err(BenchError::Unexpected {
            expected: "a body of the size put",
            got: format!("{} bytes", body.len()),
        })
    }
}

fn stamp(body: &[u8]) -> Result<u64, BenchError> {
    clock::read_stamp(body).ok_or_else(|| BenchError::Unexpected {
        expected: "a timestamped body",
        got: String::from_utf8_lossy(&body[..body.len().min(16)]).into_owned(),
    })
}

/// What a cycle producer does.
#[derive(Debug, Clone)]
pub struct CyclePlan {
    /// Tubes to `use` at random before every put, if switching.
    pub tubes: Arc<Vec<String>>,
    /// `use` a random tube before every put (else the connection's tube).
    pub switch_tubes: bool,
    pub body_len: usize,
    /// Time between puts of one producer (rate limit), if any.
    pub period: Option<Duration>,
    pub deadline: Instant,
}

/// Runs depth-1 producers of stamped jobs, paced and flow-controlled, on
/// prepared connections (see [`open_users`]).
pub fn spawn_cycle_producers(
    conns: Vec<Conn>,
    plan: CyclePlan,
    budget: &Arc<Budget>,
    flow: &Arc<Flow>,
) -> JoinSet<Tally> {
    let plan = Arc::new(plan);
    let mut set = JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let (plan, budget, flow) = (plan.clone(), budget.clone(), flow.clone());
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
        set.spawn(async move { cycle_producer(conn, &plan, &budget, &flow, seed).await });
    }
    set
}

async fn cycle_producer(
    mut conn: Conn,
    plan: &CyclePlan,
    budget: &Budget,
    flow: &Flow,
    seed: u64,
) -> Tally {
    let mut tally = Tally::default();
    let mut rng = XorShift(seed);
    let mut next = Instant::now();
    while Instant::now() < plan.deadline && budget.take(1) == 1 {
        if !flow.admit(plan.deadline).await {
            break;
        }
        let tube = plan.switch_tubes.then(|| rng.pick(&plan.tubes));
        if let Err(e) = produce_one(&mut conn, tube, plan.body_len, flow, &mut tally).await {
            if tally.error(&e) {
                break;
            }
        }
        if let Some(p) = plan.period {
            next += p;
            sleep_until(next.min(plan.deadline)).await;
        }
    }
    tally
}

/// One stamped put (after a `use`, when a tube is given).
async fn produce_one(
    conn: &mut Conn,
    tube: Option<&str>,
    len: usize,
    flow: &Flow,
    tally: &mut Tally,
) -> Result<(), BenchError> {
    if let Some(t) = tube {
        conn.cmd(format_args!("use {t}"));
    }
    conn.put_stamped(0, len);
    let t0 = Instant::now();
    conn.flush().await?;
    if tube.is_some() {
        conn.reply().await?.expect_using()?;
        tally.ops += 1;
    }
    conn.reply().await?.expect_inserted()?;
    flow.produced.fetch_add(1, Relaxed);
    tally.ops += 1;
    tally.latency(t0.elapsed());
    tally.done(1);
    Ok(())
}

/// A small fast PRNG (xorshift64*), good enough to spread puts over tubes.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, items: &'a [String]) -> &'a str {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// Reserves (without waiting) and deletes every ready job in `tubes`.
/// Untimed clean-up; errors are returned in the tally.
pub async fn drain(ctx: &Ctx, tubes: &[String], deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let Some(mut conn) = ctx.connect_counted(&mut tally).await else {
        return tally;
    };
    if let Err(e) = conn.watch_only(tubes).await {
        tally.error(&e);
        return tally;
    }
    while Instant::now() < deadline {
        match drain_round(&mut conn, &mut tally).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tally.error(&e);
                break;
            }
        }
    }
    tally
}

/// Up to [`BULK_DEPTH`] reserves and the deletes; returns jobs deleted.
async fn drain_round(conn: &mut Conn, tally: &mut Tally) -> Result<usize, BenchError> {
    for _ in 0..BULK_DEPTH {
        conn.cmd(format_args!("reserve-with-timeout 0"));
    }
    conn.flush().await?;
    let mut ids = Vec::new();
    for _ in 0..BULK_DEPTH {
        match conn.reply().await?.expect_reserved_or_timeout() {
            Ok(Some((id, _))) => ids.push(id),
            Ok(None) => {}
            Err(e) => {
                tally.error(&e);
            }
        }
    }
    delete_batch(conn, &ids, tally).await?;
    Ok(ids.len())
}

/// Deletes `ids` over `conns` connections, `BULK_DEPTH` in flight each,
/// recording per-delete latency.
pub async fn delete_ids(ctx: &Arc<Ctx>, ids: Vec<u64>, conns: usize, deadline: Instant) -> Tally {
    let per = ids.len().div_ceil(conns.max(1)).max(1);
    let mut set = JoinSet::new();
    for chunk in ids.chunks(per) {
        let (ctx, chunk) = (ctx.clone(), chunk.to_vec());
        set.spawn(async move { delete_worker(&ctx, &chunk, deadline).await });
    }
    Tally::sum(&join_all(set).await)
}

async fn delete_worker(ctx: &Ctx, ids: &[u64], deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let Some(mut conn) = ctx.connect_counted(&mut tally).await else {
        return tally;
    };
    for chunk in ids.chunks(BULK_DEPTH) {
        if Instant::now() >= deadline {
            tally.note("deadline passed with deletes left".into());
            break;
        }
        if let Err(e) = delete_batch(&mut conn, chunk, &mut tally).await {
            tally.error(&e);
            break;
        }
    }
    tally
}

/// Pipelines `delete` for each id and checks each `DELETED`.
async fn delete_batch(conn: &mut Conn, ids: &[u64], tally: &mut Tally) -> Result<(), BenchError> {
    if ids.is_empty() {
        return Ok(());
    }
    for id in ids {
        conn.cmd(format_args!("delete {id}"));
    }
    let t0 = Instant::now();
    conn.flush().await?;
    for _ in ids {
        match conn.reply().await?.expect_deleted() {
            Ok(()) => {
                tally.ops += 1;
                tally.latency(t0.elapsed());
                tally.done(1);
            }
            Err(e) => {
                tally.error(&e);
            }
        }
    }
    Ok(())
}
