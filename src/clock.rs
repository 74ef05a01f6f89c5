//! Where the server's notion of "now" comes from.
//!
//! The engine counts time in nanoseconds from an origin. In production that
//! is a monotonic `Instant`; in tests it is a manual clock that only moves
//! when the test says so, which makes every delay, TTR and timeout rule
//! deterministic without sleeping.

use crate::engine::Time;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum Clock {
    /// Monotonic time since `origin`.
    System { origin: Instant },
    /// Time that moves only through [`Clock::advance`].
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn system() -> Clock {
        Clock::System {
            origin: Instant::now(),
        }
    }

    /// A manual clock starting at an arbitrary non-zero instant.
    pub fn manual() -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(1_000_000_000_000)))
    }

    pub fn now(&self) -> Time {
        match self {
            Clock::System { origin } => origin.elapsed().as_nanos() as Time,
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
            Clock::System { origin } => Some(tokio::time::Instant::from_std(
                *origin + Duration::from_nanos(at),
            )),
            Clock::Manual(_) => None,
        }
    }
}
