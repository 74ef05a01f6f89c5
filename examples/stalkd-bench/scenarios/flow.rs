//! Scenarios with producers and consumers at once: `cycle`, `tubes` and
//! `delayed`. Jobs carry a send-time stamp, so consumers measure latency
//! from put (or from the moment a delayed job came due) to reservation.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{clean_up, new_report};
use crate::report::{q, rate, Report, Step};
use crate::tally::Tally;
use crate::work::{
    join_all, open_users, open_watchers, put_phase, spawn_consumers, spawn_cycle_producers,
    BodyKind, Budget, ConsumePlan, Ctx, CyclePlan, Flow, LatencyFrom, PutPlan, BULK_DEPTH,
};

/// Delay of every job in the delayed scenario, in seconds.
const DELAY_S: u32 = 1;

/// `conns` producers and `conns` consumers on one tube for `--duration`.
pub async fn cycle(ctx: &Arc<Ctx>) -> Report {
    let mut r = new_report(ctx, "put -> reserve (end to end)");
    let tubes = Arc::new(vec![ctx.s.tube.clone()]);
    run_cycle(ctx, &tubes, false, ctx.s.duration, &mut r).await;
    clean_up(ctx, &tubes, &mut r).await;
    r
}

/// The cycle workload over 1, 10, 100, ... up to `--tube-count` tubes:
/// producers `use` a random tube before each put, consumers watch them all.
/// The main numbers are those of the largest step. `--no-sweep` runs only
/// that step.
pub async fn tubes(ctx: &Arc<Ctx>) -> Report {
    let sizes = if ctx.s.sweep {
        sweep(ctx.s.tube_count)
    } else {
        vec![ctx.s.tube_count]
    };
    let step_time = ctx.s.duration / sizes.len() as u32;
    let mut last = new_report(ctx, "put -> reserve (end to end)");
    let mut steps = Vec::new();
    for &t in &sizes {
        let mut r = new_report(ctx, "put -> reserve (end to end)");
        let names: Vec<String> = (0..t).map(|i| format!("{}-{t}-{i}", ctx.s.tube)).collect();
        let names = Arc::new(names);
        run_cycle(ctx, &names, true, step_time, &mut r).await;
        clean_up(ctx, &names, &mut r).await;
        steps.push(Step {
            tubes: t,
            jobs_per_s: r.jobs_per_s(),
            p50_us: q(&r.tally.hist, 0.5),
            p99_us: q(&r.tally.hist, 0.99),
            cpu_s_per_100k: r.cpu_per_100k(),
        });
        last = r;
    }
    last.steps = steps;
    last
}

/// 1, 10, 100, ... below `max`, then `max` itself.
fn sweep(max: usize) -> Vec<usize> {
    let mut out: Vec<usize> = std::iter::successors(Some(1usize), |t| t.checked_mul(10))
        .take_while(|&t| t < max)
        .collect();
    out.push(max);
    out
}

/// Sets up consumers watching `tubes` and producers (untimed), runs both for
/// `duration`, and fills `r` with the consumers' end-to-end numbers plus the
/// producers' put latency as extras.
async fn run_cycle(
    ctx: &Arc<Ctx>,
    tubes: &Arc<Vec<String>>,
    switch_tubes: bool,
    duration: Duration,
    r: &mut Report,
) {
    let s = &ctx.s;
    let (cons, setup_c) = open_watchers(ctx, s.conns, tubes).await;
    let own = (!switch_tubes).then(|| tubes[0].as_str());
    let (prods, setup_p) = open_users(ctx, s.conns, own).await;
    r.tally.merge_errors(&setup_c);
    r.tally.merge_errors(&setup_p);
    let flow = Flow::live(s.backlog);
    let deadline = ctx.cap(Instant::now() + duration);
    let period = (s.rate > 0).then(|| Duration::from_secs_f64(prods.len() as f64 / s.rate as f64));
    let meter = ctx.meter();
    let cplan = ConsumePlan {
        latency: LatencyFrom::Put,
        deadline,
        body_len: s.body,
    };
    let consumers = spawn_consumers(ctx, cons, cplan, &flow);
    let pplan = CyclePlan {
        tubes: tubes.clone(),
        switch_tubes,
        body_len: s.body,
        period,
        deadline,
    };
    let producers = spawn_cycle_producers(prods, pplan, &Budget::new(s.jobs), &flow);
    let put = Tally::sum(&join_all(producers).await);
    flow.close();
    let got = Tally::sum(&join_all(consumers).await);
    r.tally.merge(&got);
    r.tally.ops += put.ops;
    r.tally.merge_errors(&put);
    meter.finish(ctx, r);
    r.extra.push(("put_jobs", put.jobs as f64));
    if !put.hist.is_empty() {
        r.extra.push(("put_p50_us", q(&put.hist, 0.5) as f64));
        r.extra.push(("put_p99_us", q(&put.hist, 0.99) as f64));
    }
}

/// `--jobs` jobs with a 1 s delay, put as fast as possible over
/// `--producers` pipelined connections while `conns` consumers wait. Latency
/// is from when each job came due to its reservation; jobs/s counts from the
/// first job coming due to the last reservation.
pub async fn delayed(ctx: &Arc<Ctx>) -> Report {
    let s = &ctx.s;
    let mut r = new_report(ctx, "due -> reserved (lateness)");
    let tubes = Arc::new(vec![s.tube.clone()]);
    let (cons, setup) = open_watchers(ctx, s.conns, &tubes).await;
    r.tally.merge_errors(&setup);
    let flow = Flow::live(0);
    let delay = Duration::from_secs(DELAY_S.into());
    let meter = ctx.meter();
    let cplan = ConsumePlan {
        latency: LatencyFrom::Due(delay),
        deadline: ctx.cap(meter.start + s.duration * 2 + delay),
        body_len: s.body,
    };
    let consumers = spawn_consumers(ctx, cons, cplan, &flow);
    let pplan = PutPlan {
        tube: s.tube.clone(),
        delay: DELAY_S,
        body: BodyKind::Stamped(s.body),
        depth: BULK_DEPTH,
        deadline: ctx.phase_deadline(),
        keep_ids: false,
    };
    let put = put_phase(
        ctx,
        s.producers,
        pplan,
        Budget::new(s.jobs),
        Some(flow.clone()),
    )
    .await;
    let put_end = Instant::now();
    flow.close();
    let got = Tally::sum(&join_all(consumers).await);
    r.tally.merge(&got);
    r.tally.merge_errors(&put.tally);
    meter.finish(ctx, &mut r);
    let last = got.last_done.unwrap_or(put_end);
    r.elapsed = last.saturating_duration_since(meter.start + delay);
    let put_s = put_end.saturating_duration_since(meter.start);
    r.extra.push(("put_s", put_s.as_secs_f64()));
    r.extra
        .push(("put_jobs_per_s", rate(put.tally.jobs, put_s)));
    let after_last_due = signed_secs(last, put_end + delay);
    r.extra
        .push(("last_reserved_after_last_due_s", after_last_due));
    if r.tally.jobs < put.tally.jobs {
        r.notes.push(format!(
            "reserved {} of {} delayed jobs before the deadline",
            r.tally.jobs, put.tally.jobs
        ));
    }
    clean_up(ctx, &tubes, &mut r).await;
    r
}

/// `a - b` in seconds, negative when `a` is earlier.
fn signed_secs(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64()
    } else {
        -(b - a).as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::sweep;

    #[test]
    fn sweep_steps() {
        assert_eq!(sweep(10_000), vec![1, 10, 100, 1000, 10_000]);
        assert_eq!(sweep(50), vec![1, 10, 50]);
        assert_eq!(sweep(1), vec![1]);
    }
}
