//! Monotonic timestamps carried in job bodies.
//!
//! A stamped body starts with 16 lowercase hex digits: nanoseconds since this
//! process's epoch (its first call to [`now_ns`]). The rest is padding, so a
//! consumer in the same process can compute put->reserve latency.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use bytes::BytesMut;

/// Digits of the timestamp at the start of a stamped body.
pub const STAMP_LEN: usize = 16;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process epoch.
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Appends a stamped body of exactly `len` bytes (at least [`STAMP_LEN`]).
pub fn write_stamp(buf: &mut BytesMut, len: usize) {
    let _ = write!(buf, "{:016x}", now_ns());
    buf.resize(buf.len() + len.saturating_sub(STAMP_LEN), b'x');
}

/// Reads the timestamp back from a body, if it has one.
pub fn read_stamp(body: &[u8]) -> Option<u64> {
    let digits = std::str::from_utf8(body.get(..STAMP_LEN)?).ok()?;
    u64::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips() {
        let mut buf = BytesMut::new();
        write_stamp(&mut buf, 40);
        assert_eq!(buf.len(), 40);
        assert!(read_stamp(&buf).is_some());
        assert_eq!(read_stamp(b"short"), None);
    }
}
