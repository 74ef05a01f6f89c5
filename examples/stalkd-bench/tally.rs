//! Per-worker counters and latency histograms, merged at the end of a phase.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::proto::BenchError;

/// Error messages kept verbatim for the report.
const MAX_SAMPLES: usize = 5;
/// Highest latency tracked: ten minutes, in microseconds.
const MAX_US: u64 = 600_000_000;

/// What one worker (or a whole phase, after merging) did.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Jobs that completed the scenario's unit of work.
    pub jobs: u64,
    /// Protocol commands answered as expected.
    pub ops: u64,
    /// Wrong replies, timeouts and I/O errors.
    pub errors: u64,
    /// The first few distinct error messages.
    pub samples: Vec<String>,
    /// Latency in microseconds.
    pub hist: Histogram<u64>,
    /// When the last job completed.
    pub last_done: Option<Instant>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            jobs: 0,
            ops: 0,
            errors: 0,
            samples: Vec::new(),
            hist: new_hist(),
            last_done: None,
        }
    }
}

/// An empty microsecond histogram (1 us .. 10 min, 3 significant digits).
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid")
}

impl Tally {
    /// Records one latency.
    pub fn latency(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        self.hist.saturating_record(us);
    }

    /// Records a latency given in nanoseconds.
    pub fn latency_ns(&mut self, ns: u64) {
        self.latency(Duration::from_nanos(ns));
    }

    /// Counts `n` finished jobs now.
    pub fn done(&mut self, n: u64) {
        self.jobs += n;
        self.last_done = Some(Instant::now());
    }

    /// Counts an error; returns `true` when the connection must be dropped.
    pub fn error(&mut self, e: &BenchError) -> bool {
        self.note(e.to_string());
        e.is_fatal()
    }

    /// Counts an error described by text.
    pub fn note(&mut self, msg: String) {
        self.errors += 1;
        if self.samples.len() < MAX_SAMPLES && !self.samples.contains(&msg) {
            self.samples.push(msg);
        }
    }

    /// Adds another tally into this one.
    pub fn merge(&mut self, other: &Tally) {
        self.jobs += other.jobs;
        self.ops += other.ops;
        self.merge_errors(other);
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.last_done = self.last_done.max(other.last_done);
    }

    /// Adds only the errors of another tally (e.g. from a set-up phase).
    pub fn merge_errors(&mut self, other: &Tally) {
        self.errors += other.errors;
        for s in &other.samples {
            if self.samples.len() < MAX_SAMPLES && !self.samples.contains(s) {
                self.samples.push(s.clone());
            }
        }
    }

    /// Merges many tallies.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Tally>) -> Tally {
        let mut total = Tally::default();
        for t in all {
            total.merge(t);
        }
        total
    }
}
