//! stalkd: a job-queue server that speaks the beanstalkd protocol.
//!
//! ```text
//! socket bytes -> connection (one read per request; no buffer while idle)
//!   -> protocol::Codec (lines <= 224 bytes, put bodies split off as Bytes)
//!   -> Frame::Command | Frame::Error(reply)
//!   -> session: quit closes; errors are answered; commands go to the hub
//!   -> hub: one lock per batch -> Engine::apply(now, client, command)
//!        -> Outcome { reply | wait }; state changes go to the binlog first
//!   -> (-f 0: wait for the shared fsync) -> Outbox -> one (vectored) write
//! timer task: Engine::tick(now) -> wake-ups (blocked reserves) + next deadline
//! ```
//!
//! Modules: [`protocol`] (wire format only), [`engine`] (the queue, pure and
//! synchronous, time passed in), [`binlog`] (records, segments, replay,
//! sync), [`hub`] (the one owner of the engine), [`session`] and
//! [`connection`] (one task per client), [`sessions`] (the live ones, for
//! shutdown), [`server`] (listeners, timer task,
//! signals, shutdown), [`config`] (command line), [`clock`], [`sysinfo`].

pub mod binlog;
pub mod clock;
pub mod config;
pub mod connection;
pub mod engine;
pub mod hub;
pub mod protocol;
pub mod server;
pub mod session;
pub mod sessions;
pub mod sysinfo;

/// The integration tests' seedable PRNG, shared with the unit tests.
#[cfg(test)]
#[path = "../tests/common/rng.rs"]
#[allow(dead_code)]
pub(crate) mod test_rng;
