//! The scenarios. Each one sets up untimed state, runs one measured phase
//! between two resource samples, cleans up the jobs it left, and returns a
//! [`Report`].

mod conns;
mod flow;
mod simple;
mod store;

use std::sync::Arc;

use clap::ValueEnum;

use crate::cli::Scenario;
use crate::report::Report;
use crate::work::{drain, Ctx};

/// Runs the scenario chosen on the command line.
pub async fn run(ctx: Arc<Ctx>) -> Report {
    match ctx.s.scenario {
        Scenario::Put => simple::put(&ctx).await,
        Scenario::Reserve => simple::reserve(&ctx).await,
        Scenario::Pipeline => simple::pipeline(&ctx).await,
        Scenario::Big => simple::big(&ctx).await,
        Scenario::Cycle => flow::cycle(&ctx).await,
        Scenario::Tubes => flow::tubes(&ctx).await,
        Scenario::Delayed => flow::delayed(&ctx).await,
        Scenario::ManyConns => conns::many_conns(&ctx).await,
        Scenario::IdleConns => conns::idle_conns(&ctx).await,
        Scenario::Memory => store::memory(&ctx).await,
    }
}

/// An empty report carrying the run's settings.
fn new_report(ctx: &Ctx, latency_of: &'static str) -> Report {
    let s = &ctx.s;
    let name = s
        .scenario
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    let mut r = Report::new(&name, s.conns, s.body, s.depth);
    r.latency_of = latency_of;
    r
}

/// Deletes whatever is left in `tubes`; clean-up errors become a note.
async fn clean_up(ctx: &Ctx, tubes: &[String], r: &mut Report) {
    let t = drain(ctx, tubes, ctx.setup_deadline()).await;
    if t.errors > 0 {
        r.notes.push(format!(
            "clean-up: {} errors, first: {}",
            t.errors,
            t.samples.first().map(String::as_str).unwrap_or("")
        ));
    }
}

/// RSS growth per unit, when the server was sampled.
fn rss_per(
    before: Option<crate::sysmon::Sample>,
    after: Option<crate::sysmon::Sample>,
    units: u64,
) -> Option<f64> {
    let (b, a) = (before?, after?);
    (units > 0).then(|| (a.rss as f64 - b.rss as f64) / units as f64)
}
