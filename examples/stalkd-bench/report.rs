//! The result of a run, printed for people or as one line of JSON.
//!
//! JSON keys (numbers unless noted; `null` when not measured):
//! `scenario` (string), `conns`, `body`, `depth`, `jobs`, `elapsed_s`,
//! `jobs_per_s`, `latency_of` (string), `p50_us`, `p99_us`, `p999_us`,
//! `max_us`, `errors`, `error_samples` (strings), `server_cpu_s`,
//! `cpu_s_per_100k`, `rss_before`, `rss_after`, `rss_per_job`,
//! `rss_per_conn`, `client_cpu_s`, scenario-specific extras, and for the tubes
//! scenario `steps` (objects with `tubes`, `jobs_per_s`, `p50_us`, `p99_us`,
//! `cpu_s_per_100k`).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::sysmon::Sample;
use crate::tally::Tally;

/// Server CPU and memory over the measured phase.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub before: Sample,
    pub after: Sample,
}

impl Usage {
    /// Pairs two optional samples.
    pub fn between(before: Option<Sample>, after: Option<Sample>) -> Option<Usage> {
        Some(Usage {
            before: before?,
            after: after?,
        })
    }

    /// CPU seconds spent in between.
    pub fn cpu(&self) -> f64 {
        (self.after.cpu - self.before.cpu).max(0.0)
    }
}

/// One row of the tubes sweep.
#[derive(Debug, Clone)]
pub struct Step {
    pub tubes: usize,
    pub jobs_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub cpu_s_per_100k: Option<f64>,
}

/// Everything a scenario measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub conns: usize,
    pub body: usize,
    pub depth: usize,
    /// What the latency histogram times.
    pub latency_of: &'static str,
    pub elapsed: Duration,
    pub tally: Tally,
    pub server: Option<Usage>,
    pub client_cpu_s: Option<f64>,
    pub rss_per_job: Option<f64>,
    pub rss_per_conn: Option<f64>,
    /// Scenario-specific numbers, e.g. `put_jobs_per_s`.
    pub extra: Vec<(&'static str, f64)>,
    pub notes: Vec<String>,
    pub steps: Vec<Step>,
}

impl Report {
    /// An empty report for a scenario.
    pub fn new(scenario: &str, conns: usize, body: usize, depth: usize) -> Report {
        Report {
            scenario: scenario.to_string(),
            conns,
            body,
            depth,
            latency_of: "",
            elapsed: Duration::ZERO,
            tally: Tally::default(),
            server: None,
            client_cpu_s: None,
            rss_per_job: None,
            rss_per_conn: None,
            extra: Vec::new(),
            notes: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// Jobs per second over the measured phase.
    pub fn jobs_per_s(&self) -> f64 {
        rate(self.tally.jobs, self.elapsed)
    }

    /// Server CPU seconds per 100k jobs.
    pub fn cpu_per_100k(&self) -> Option<f64> {
        per_100k(self.server?.cpu(), self.tally.jobs)
    }

    /// Multi-line text for a terminal.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let t = &self.tally;
        let _ = writeln!(
            s,
            "scenario {}: conns {}, body {} B, depth {}",
            self.scenario, self.conns, self.body, self.depth
        );
        let _ = writeln!(
            s,
            "  jobs      {} in {:.3} s = {:.0} jobs/s ({} ops)",
            t.jobs,
            self.elapsed.as_secs_f64(),
            self.jobs_per_s(),
            t.ops
        );
        if !t.hist.is_empty() {
            let _ = writeln!(
                s,
                "  latency   p50 {} us, p99 {} us, p99.9 {} us, max {} us  [{}]",
                q(&t.hist, 0.5),
                q(&t.hist, 0.99),
                q(&t.hist, 0.999),
                t.hist.max(),
                self.latency_of
            );
        }
        let _ = writeln!(s, "  errors    {}", t.errors);
        for e in &t.samples {
            let _ = writeln!(s, "    {e}");
        }
        self.human_server(&mut s);
        for (k, v) in &self.extra {
            let _ = writeln!(s, "  {k}: {}", short_num(*v));
        }
        self.human_steps(&mut s);
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }

    fn human_server(&self, s: &mut String) {
        if let Some(u) = &self.server {
            let per = self
                .cpu_per_100k()
                .map(|c| format!(" = {c:.3} s per 100k jobs"))
                .unwrap_or_default();
            let _ = writeln!(s, "  server    cpu {:.2} s{per}", u.cpu());
            let _ = writeln!(
                s,
                "  server    rss {} -> {}",
                mib(u.before.rss),
                mib(u.after.rss)
            );
        }
        if let Some(b) = self.rss_per_job {
            let _ = writeln!(s, "  server    rss per stored job {b:.1} B");
        }
        if let Some(b) = self.rss_per_conn {
            let _ = writeln!(s, "  server    rss per connection {b:.1} B");
        }
        if let Some(c) = self.client_cpu_s {
            let _ = writeln!(s, "  bench     cpu {c:.2} s");
        }
    }

    fn human_steps(&self, s: &mut String) {
        if self.steps.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "  {:>8} {:>12} {:>10} {:>10} {:>14}",
            "tubes", "jobs/s", "p50 us", "p99 us", "cpu s/100k"
        );
        for st in &self.steps {
            let cpu = st
                .cpu_s_per_100k
                .map(|c| format!("{c:.3}"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "  {:>8} {:>12.0} {:>10} {:>10} {:>14}",
                st.tubes, st.jobs_per_s, st.p50_us, st.p99_us, cpu
            );
        }
    }

    /// One line of JSON.
    pub fn json(&self) -> String {
        let t = &self.tally;
        let h = |p: f64| (!t.hist.is_empty()).then(|| q(&t.hist, p) as f64);
        let mut o = JsonObj::default();
        o.str("scenario", &self.scenario);
        o.num("conns", Some(self.conns as f64));
        o.num("body", Some(self.body as f64));
        o.num("depth", Some(self.depth as f64));
        o.num("jobs", Some(t.jobs as f64));
        o.num("ops", Some(t.ops as f64));
        o.num("elapsed_s", Some(self.elapsed.as_secs_f64()));
        o.num("jobs_per_s", Some(self.jobs_per_s()));
        o.str("latency_of", self.latency_of);
        o.num("p50_us", h(0.5));
        o.num("p99_us", h(0.99));
        o.num("p999_us", h(0.999));
        o.num("max_us", (!t.hist.is_empty()).then(|| t.hist.max() as f64));
        o.num("errors", Some(t.errors as f64));
        o.strs("error_samples", &t.samples);
        o.num("server_cpu_s", self.server.map(|u| u.cpu()));
        o.num("cpu_s_per_100k", self.cpu_per_100k());
        o.num("rss_before", self.server.map(|u| u.before.rss as f64));
        o.num("rss_after", self.server.map(|u| u.after.rss as f64));
        o.num("rss_per_job", self.rss_per_job);
        o.num("rss_per_conn", self.rss_per_conn);
        o.num("client_cpu_s", self.client_cpu_s);
        for (k, v) in &self.extra {
            o.num(k, Some(*v));
        }
        o.strs("notes", &self.notes);
        if !self.steps.is_empty() {
            let steps: Vec<String> = self.steps.iter().map(step_json).collect();
            o.raw("steps", &format!("[{}]", steps.join(",")));
        }
        o.finish()
    }
}

fn step_json(st: &Step) -> String {
    let mut o = JsonObj::default();
    o.num("tubes", Some(st.tubes as f64));
    o.num("jobs_per_s", Some(st.jobs_per_s));
    o.num("p50_us", Some(st.p50_us as f64));
    o.num("p99_us", Some(st.p99_us as f64));
    o.num("cpu_s_per_100k", st.cpu_s_per_100k);
    o.finish()
}

/// Events per second, 0 for an empty interval.
pub fn rate(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// `cpu` seconds per 100k of `jobs`.
pub fn per_100k(cpu: f64, jobs: u64) -> Option<f64> {
    (jobs > 0).then(|| cpu / jobs as f64 * 100_000.0)
}

/// A quantile in microseconds.
pub fn q(h: &Histogram<u64>, quantile: f64) -> u64 {
    h.value_at_quantile(quantile)
}

/// Integers without decimals, other values with three.
fn short_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A tiny JSON object writer (keys are trusted identifiers).
#[derive(Debug, Default)]
struct JsonObj {
    out: String,
}

impl JsonObj {
    fn key(&mut self, k: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        let _ = write!(self.out, "\"{k}\":");
    }

    fn raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.out.push_str(v);
    }

    fn num(&mut self, k: &str, v: Option<f64>) {
        let text = match v {
            Some(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
            Some(x) if x.is_finite() => format!("{x:.6}"),
            _ => "null".into(),
        };
        self.raw(k, &text);
    }

    fn str(&mut self, k: &str, v: &str) {
        let quoted = quote(v);
        self.raw(k, &quoted);
    }

    fn strs(&mut self, k: &str, vs: &[String]) {
        let items: Vec<String> = vs.iter().map(|v| quote(v)).collect();
        self.raw(k, &format!("[{}]", items.join(",")));
    }

    fn finish(mut self) -> String {
        if self.out.is_empty() {
            self.out.push('{');
        }
        self.out.push('}');
        self.out
    }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_flat_line() {
        let mut r = Report::new("put", 2, 100, 1);
        r.tally.jobs = 10;
        r.tally.note("expected \"DELETED\"\n".into());
        r.elapsed = Duration::from_secs(2);
        let j = r.json();
        assert!(j.starts_with("{\"scenario\":\"put\""));
        assert!(j.contains("\"jobs_per_s\":5,"));
        assert!(j.contains("\\\"DELETED\\\"\\u000a"));
        assert!(j.contains("\"p99_us\":null"));
        assert!(!j.contains('\n'));
    }
}
