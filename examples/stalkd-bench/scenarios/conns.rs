//! Connection-count scenarios: `many-conns` (thousands of connections
//! blocked in `reserve`, then a burst of puts) and `idle-conns` (server RSS
//! per idle connection).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

use super::{clean_up, new_report, rss_per};
use crate::proto::{BenchError, Conn};
use crate::report::Report;
use crate::tally::Tally;
use crate::work::{join_all, open_many, put_phase, Budget, Ctx, PutPlan, BULK_DEPTH};

/// Pause before reading RSS, so the server has finished its bookkeeping.
const SETTLE: Duration = Duration::from_millis(300);

/// `conns` connections block in `reserve` on one tube; then `--producers`
/// connections put one job per waiting connection. Measures the time from
/// the first put until every connection holds a job.
pub async fn many_conns(ctx: &Arc<Ctx>) -> Report {
    let s = &ctx.s;
    let mut r = new_report(ctx, "burst start -> job received");
    let before = ctx.server.sample();
    let tube = s.tube.clone();
    let (conns, setup) = open_many(ctx, s.conns, move |c| blocked_reserve(c, tube.clone())).await;
    r.tally.merge_errors(&setup);
    let waiting = wait_for_waiting(ctx, conns.len() as u64).await;
    r.extra.push(("waiting_conns", waiting as f64));
    sleep(SETTLE).await;
    let deadline = ctx.phase_deadline();
    let opened = conns.len() as u64;
    let mut set = JoinSet::new();
    for conn in conns {
        set.spawn(await_job(conn, deadline));
    }
    let meter = ctx.meter();
    r.rss_per_conn = rss_per(before, meter.server, opened);
    let plan = PutPlan::fixed(s, BULK_DEPTH, deadline);
    let budget = Budget::new(waiting.min(s.jobs));
    let put = put_phase(ctx, s.producers, plan, budget, None).await;
    r.tally.merge_errors(&put.tally);
    let held = collect_deliveries(join_all(set).await, meter.start, &mut r.tally);
    meter.finish(ctx, &mut r);
    r.extra.push(("put_jobs", put.tally.jobs as f64));
    drop(held);
    clean_up(ctx, std::slice::from_ref(&s.tube), &mut r).await;
    r
}

/// Set-up of one waiting connection: watch only `tube`, send `reserve`.
async fn blocked_reserve(mut c: Conn, tube: String) -> Result<Conn, BenchError> {
    c.cmd(format_args!("watch {tube}"));
    c.cmd(format_args!("ignore default"));
    c.flush().await?;
    c.reply().await?.expect_watching()?;
    c.reply().await?.expect_watching()?;
    c.cmd(format_args!("reserve"));
    c.flush().await?;
    Ok(c)
}

/// Waits for the `RESERVED` of a blocked connection; returns when it came.
async fn await_job(mut conn: Conn, deadline: Instant) -> Result<(Instant, Conn), BenchError> {
    conn.reply_by(deadline).await?.expect_reserved()?;
    Ok((Instant::now(), conn))
}

/// Records delivery latencies since `start`; returns the connections, which
/// must stay open until all are counted (closing one releases its job).
fn collect_deliveries(
    results: Vec<Result<(Instant, Conn), BenchError>>,
    start: Instant,
    tally: &mut Tally,
) -> Vec<Conn> {
    let mut held = Vec::with_capacity(results.len());
    for res in results {
        match res {
            Ok((at, conn)) => {
                tally.latency(at.saturating_duration_since(start));
                tally.ops += 1;
                tally.jobs += 1;
                tally.last_done = tally.last_done.max(Some(at));
                held.push(conn);
            }
            Err(e) => {
                tally.error(&e);
            }
        }
    }
    held
}

/// Polls `stats-tube` until `want` connections wait on the tube (or the
/// set-up deadline passes); returns the last count seen. A server without
/// `stats-tube` gets a fixed grace period instead.
async fn wait_for_waiting(ctx: &Ctx, want: u64) -> u64 {
    let deadline = ctx.setup_deadline();
    let poll = async {
        let mut conn = ctx.connect().await?;
        loop {
            let tube = &ctx.s.tube;
            let body = conn
                .call(&format!("stats-tube {tube}"))
                .await?
                .expect_ok()?;
            let n = yaml_u64(&body, "current-waiting").unwrap_or(0);
            if n >= want || Instant::now() >= deadline {
                return Ok::<u64, BenchError>(n);
            }
            sleep(Duration::from_millis(50)).await;
        }
    };
    match poll.await {
        Ok(n) => n,
        Err(_) => {
            sleep(Duration::from_secs(1)).await;
            want
        }
    }
}

/// `key: 123` from a stats YAML body.
fn yaml_u64(body: &[u8], key: &str) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Opens `conns` connections, each doing one `use default` round trip, and
/// reports the server's RSS growth per connection. Jobs/s here counts
/// connections set up per second.
pub async fn idle_conns(ctx: &Arc<Ctx>) -> Report {
    let mut r = new_report(ctx, "connect + first round trip");
    let meter = ctx.meter();
    let (conns, tally) = open_many(ctx, ctx.s.conns, |mut c| async move {
        c.use_tube("default").await?;
        Ok(c)
    })
    .await;
    r.tally = tally;
    meter.finish(ctx, &mut r);
    sleep(SETTLE).await;
    let held = ctx.server.sample();
    r.rss_per_conn = rss_per(meter.server, held, conns.len() as u64);
    drop(conns);
    sleep(SETTLE).await;
    if let Some(after) = ctx.server.sample() {
        r.extra.push(("rss_after_close", after.rss as f64));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::yaml_u64;

    #[test]
    fn reads_yaml_counter() {
        let body = b"---\nname: t\ncurrent-waiting: 42\ncurrent-watching: 43\n";
        assert_eq!(yaml_u64(body, "current-waiting"), Some(42));
        assert_eq!(yaml_u64(body, "missing"), None);
    }
}
