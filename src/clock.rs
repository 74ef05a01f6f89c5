//! Where the server's notion of "now" comes from.
//!
//! The engine counts time in nanoseconds. In production that is a monotonic
//! `Instant` anchored at the Unix epoch time of start-up: it never jumps
//! while the server runs, yet the binlog's deadlines and creation times stay
//! meaningful across restarts. In tests it is a manual clock that only moves
//! when the test says so, which makes every delay, TTR and timeout rule
//! deterministic without sleeping.

use crate::engine::Time;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum Clock {
    /// `base` (Unix nanoseconds at `origin`) plus monotonic time since `origin`.
    System { origin: Instant, base: u64 },
    /// Time that moves only through [`Clock::advance`].
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn system() -> Clock {
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Clock::System {
            origin: Instant::now(),
            base,
        }
    }

    /// A manual clock starting at an arbitrary non-zero instant.
    pub fn manual() -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(1_000_000_000_000)))
    }

    pub fn now(&self) -> Time {
        match self {
            Clock::System { origin, base } => base + origin.elapsed().as_nanos() as Time,
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(t) = self {
            t.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
        }
    }

    /// The tokio instant at which engine time `at` is reached, for sleeping.
    /// `None` for a manual clock, which never elapses by itself.
    pub fn deadline(&self, at: Time) -> Option<tokio::time::Instant> {
        match self {
            Clock::System { origin, base } => Some(tokio::time::Instant::from_std(
                *origin + Duration::from_nanos(at.saturating_sub(*base)),
            )),
            Clock::Manual(_) => None,
        }
    }
}
