//! The `memory` scenario: server RSS per stored job.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::{clean_up, new_report, rss_per};
use crate::report::{rate, Report};
use crate::work::{delete_ids, put_phase, Budget, Ctx, PutPlan, BULK_DEPTH};

/// Pause before reading RSS, so the server has finished its bookkeeping.
const SETTLE: Duration = Duration::from_millis(500);

/// Stores `--jobs` jobs of `--body` bytes over `--producers` pipelined
/// connections, reads the RSS growth per job, then deletes them all by id.
/// Jobs/s and latency are those of the puts.
pub async fn memory(ctx: &Arc<Ctx>) -> Report {
    let s = &ctx.s;
    let mut r = new_report(ctx, "put in a batch of 100 (send to INSERTED)");
    r.conns = s.producers;
    r.depth = BULK_DEPTH;
    if !ctx.server.enabled() {
        r.notes.push("no --pid: RSS not measured".into());
    }
    let meter = ctx.meter();
    let plan = PutPlan {
        keep_ids: true,
        ..PutPlan::fixed(s, BULK_DEPTH, ctx.setup_deadline())
    };
    let put = put_phase(ctx, s.producers, plan, Budget::new(s.jobs), None).await;
    r.tally = put.tally;
    meter.finish(ctx, &mut r);
    sleep(SETTLE).await;
    let stored = ctx.server.sample();
    r.rss_per_job = rss_per(meter.server, stored, r.tally.jobs);
    let t0 = Instant::now();
    let deleted = delete_ids(ctx, put.ids, s.producers, ctx.setup_deadline()).await;
    r.extra
        .push(("delete_jobs_per_s", rate(deleted.jobs, t0.elapsed())));
    r.tally.merge_errors(&deleted);
    sleep(SETTLE).await;
    if let Some(after) = ctx.server.sample() {
        r.extra.push(("rss_after_delete", after.rss as f64));
    }
    clean_up(ctx, std::slice::from_ref(&s.tube), &mut r).await;
    r
}
