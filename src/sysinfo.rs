//! Facts about the host and process for `stats`, read once at start-up
//! (uname, pid, a random instance id) or on demand (CPU usage).

use crate::engine::{HostInfo, ResourceUsage};
use std::ffi::CStr;
use std::io::Read;

/// Detects this host's facts.
pub fn host_info() -> HostInfo {
    let (hostname, os, platform) = uname();
    HostInfo {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        instance_id: instance_id(),
        hostname,
        os,
        platform,
        rusage,
    }
}

/// CPU time of the whole process.
pub fn rusage() -> ResourceUsage {
    // SAFETY: getrusage writes a plain struct we own; zeroed is a valid value.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return ResourceUsage::default();
        }
        usage
    };
    let micros = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    ResourceUsage {
        user_micros: micros(usage.ru_utime),
        system_micros: micros(usage.ru_stime),
    }
}

/// (nodename, version, machine) from uname(2).
fn uname() -> (String, String, String) {
    // SAFETY: uname fills a struct we own with NUL-terminated strings.
    let name = unsafe {
        let mut name: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut name) != 0 {
            return Default::default();
        }
        name
    };
    let field = |raw: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates each field within its array.
        unsafe { CStr::from_ptr(raw.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    (
        field(&name.nodename),
        field(&name.version),
        field(&name.machine),
    )
}

/// 16 lowercase hex digits from 8 random bytes.
fn instance_id() -> String {
    let mut bytes = [0u8; 8];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        tracing::warn!("cannot read /dev/urandom for the instance id: {e}");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
