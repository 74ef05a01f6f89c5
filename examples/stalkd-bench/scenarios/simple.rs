//! Single-role scenarios: `put`, `reserve`, `pipeline` and `big`.

use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{clean_up, new_report, rss_per};
use crate::cli::PipelineOps;
use crate::proto::{BenchError, Conn};
use crate::report::{rate, Report};
use crate::tally::Tally;
use crate::work::{
    join_all, open_watchers, put_phase, spawn_consumers, Budget, ConsumePlan, Ctx, Flow,
    LatencyFrom, PutPlan, BULK_DEPTH,
};

/// Producers only: `conns` connections, `depth` puts in flight each.
pub async fn put(ctx: &Arc<Ctx>) -> Report {
    put_only(ctx, "put round trip (send to INSERTED)").await
}

/// `pipeline`: puts, or put+reserve+delete rounds, `depth` deep.
pub async fn pipeline(ctx: &Arc<Ctx>) -> Report {
    match ctx.s.ops {
        PipelineOps::Put => put_only(ctx, "put in a pipelined batch (send to INSERTED)").await,
        PipelineOps::PutReserveDelete => rounds(ctx).await,
    }
}

/// 64 KiB (by default 65535-byte) bodies through put+reserve+delete.
pub async fn big(ctx: &Arc<Ctx>) -> Report {
    let mut r = rounds(ctx).await;
    let mb = r.tally.jobs as f64 * ctx.s.body as f64 / 1e6;
    let secs = r.elapsed.as_secs_f64();
    r.extra
        .push(("body_mb_per_s", if secs > 0.0 { mb / secs } else { 0.0 }));
    r
}

async fn put_only(ctx: &Arc<Ctx>, latency_of: &'static str) -> Report {
    let s = &ctx.s;
    let mut r = new_report(ctx, latency_of);
    let meter = ctx.meter();
    let plan = PutPlan::fixed(s, s.depth, ctx.phase_deadline());
    r.tally = put_phase(ctx, s.conns, plan, Budget::new(s.jobs), None)
        .await
        .tally;
    meter.finish(ctx, &mut r);
    r.rss_per_job = rss_per(meter.server, r.server.map(|u| u.after), r.tally.jobs);
    clean_up(ctx, std::slice::from_ref(&s.tube), &mut r).await;
    r
}

/// Pre-fills `jobs` jobs (untimed), then drains them with reserve+delete.
pub async fn reserve(ctx: &Arc<Ctx>) -> Report {
    let s = &ctx.s;
    let mut r = new_report(ctx, "reserve + delete round trips");
    let fill = ctx.meter();
    let plan = PutPlan::fixed(s, BULK_DEPTH, ctx.setup_deadline());
    let filled = put_phase(ctx, s.producers, plan, Budget::new(s.jobs), None).await;
    let stored = filled.tally.jobs;
    r.tally.merge_errors(&filled.tally);
    r.extra
        .push(("prefill_jobs_per_s", rate(stored, fill.start.elapsed())));
    let tubes = Arc::new(vec![s.tube.clone()]);
    let (conns, setup) = open_watchers(ctx, s.conns, &tubes).await;
    r.tally.merge_errors(&setup);
    let meter = ctx.meter();
    r.rss_per_job = rss_per(fill.server, meter.server, stored);
    let plan = ConsumePlan {
        latency: LatencyFrom::ReserveDelete,
        deadline: ctx.phase_deadline(),
        body_len: s.body,
    };
    let flow = Flow::stored(stored);
    let drained = Tally::sum(&join_all(spawn_consumers(ctx, conns, plan, &flow)).await);
    r.tally.merge(&drained);
    meter.finish(ctx, &mut r);
    if r.tally.jobs < stored {
        r.notes.push(format!(
            "drained {} of {stored} jobs before the deadline",
            r.tally.jobs
        ));
    }
    clean_up(ctx, &tubes, &mut r).await;
    r
}

/// Rounds of `depth` puts + `depth` reserves (one write), then `depth`
/// deletes, each connection on its own tube. Latency is per round.
async fn rounds(ctx: &Arc<Ctx>) -> Report {
    let s = &ctx.s;
    let mut r = new_report(ctx, "one round: depth x (put, reserve, delete)");
    let tubes: Vec<String> = (0..s.conns).map(|i| format!("{}-c{i}", s.tube)).collect();
    let body = Bytes::from(vec![b'x'; s.body]);
    let budget = Budget::new(s.jobs);
    let deadline = ctx.phase_deadline();
    let meter = ctx.meter();
    let mut set = JoinSet::new();
    for tube in &tubes {
        let (ctx, tube, body, budget) = (ctx.clone(), tube.clone(), body.clone(), budget.clone());
        set.spawn(async move { round_worker(&ctx, &tube, &body, &budget, deadline).await });
    }
    r.tally = Tally::sum(&join_all(set).await);
    meter.finish(ctx, &mut r);
    clean_up(ctx, &tubes, &mut r).await;
    r
}

async fn round_worker(
    ctx: &Ctx,
    tube: &str,
    body: &Bytes,
    budget: &Budget,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let Some(mut conn) = ctx.connect_counted(&mut tally).await else {
        return tally;
    };
    let setup = async {
        conn.use_tube(tube).await?;
        conn.watch_only(&[tube.to_string()]).await
    };
    if let Err(e) = setup.await {
        tally.error(&e);
        return tally;
    }
    while Instant::now() < deadline {
        let n = budget.take(ctx.s.depth);
        if n == 0 {
            break;
        }
        if let Err(e) = one_round(&mut conn, n, body, &mut tally).await {
            tally.error(&e);
            break;
        }
    }
    tally
}

/// `n` puts and `n` reserves in one write, then deletes for what was
/// reserved. Wrong replies are counted; I/O errors end the worker.
async fn one_round(
    conn: &mut Conn,
    n: usize,
    body: &Bytes,
    tally: &mut Tally,
) -> Result<(), BenchError> {
    let t0 = Instant::now();
    for _ in 0..n {
        conn.put(0, body);
    }
    for _ in 0..n {
        conn.cmd(format_args!("reserve-with-timeout 0"));
    }
    conn.flush().await?;
    for _ in 0..n {
        count(tally, conn.reply().await?.expect_inserted());
    }
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let reserved = conn.reply().await?.expect_reserved();
        if let Some((id, got)) = count(tally, reserved) {
            ids.push(id);
            if got.len() != body.len() {
                tally.note(format!(
                    "reserved body of {} bytes, put {}",
                    got.len(),
                    body.len()
                ));
            }
        }
    }
    for id in &ids {
        conn.cmd(format_args!("delete {id}"));
    }
    conn.flush().await?;
    for _ in &ids {
        if count(tally, conn.reply().await?.expect_deleted()).is_some() {
            tally.done(1);
        }
    }
    tally.latency(t0.elapsed());
    Ok(())
}

/// Counts a checked reply as an op or an error.
fn count<T>(tally: &mut Tally, res: Result<T, BenchError>) -> Option<T> {
    match res {
        Ok(v) => {
            tally.ops += 1;
            Some(v)
        }
        Err(e) => {
            tally.error(&e);
            None
        }
    }
}
