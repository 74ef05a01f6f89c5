//! Process resource readings from /proc: resident memory and CPU time, for
//! the server under test (`--pid`) and for the benchmark itself; and raising
//! the open-file limit for the many-connection scenarios.

use std::fs;

/// RSS and cumulative CPU time of one process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Resident set size in bytes (VmRSS).
    pub rss: u64,
    /// utime + stime in seconds.
    pub cpu: f64,
}

/// Reads samples of one process (or none, if no pid was given).
#[derive(Debug, Clone)]
pub struct Probe {
    path: Option<String>,
}

impl Probe {
    /// The server under test, if its pid is known.
    pub fn server(pid: Option<u32>) -> Probe {
        Probe {
            path: pid.map(|p| format!("/proc/{p}")),
        }
    }

    /// This benchmark process.
    pub fn this_process() -> Probe {
        Probe {
            path: Some("/proc/self".into()),
        }
    }

    /// Whether samples can be taken at all.
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Takes a sample; `None` without a pid or if the process is gone.
    pub fn sample(&self) -> Option<Sample> {
        let dir = self.path.as_ref()?;
        let status = fs::read_to_string(format!("{dir}/status")).ok()?;
        let stat = fs::read_to_string(format!("{dir}/stat")).ok()?;
        Some(Sample {
            rss: parse_vm_rss(&status)?,
            cpu: parse_cpu_seconds(&stat)?,
        })
    }
}

/// `VmRSS:   1234 kB` -> bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Fields 14 and 15 (utime, stime) of /proc/PID/stat, in seconds. The command
/// name in field 2 may contain spaces, so fields are counted after its `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit that only raises the soft limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        let cpu = parse_cpu_seconds(stat).map(|c| c * clock_ticks());
        assert_eq!(cpu, Some(300.0));
    }

    #[test]
    fn parses_rss() {
        assert_eq!(parse_vm_rss("Name: x\nVmRSS:\t  2048 kB\n"), Some(2 << 20));
    }

    #[test]
    fn samples_self() {
        assert!(Probe::this_process().sample().is_some());
    }
}
