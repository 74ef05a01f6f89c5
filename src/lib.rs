//! stalkd: a job-queue server that speaks the beanstalkd protocol.
//!
//! ```text
//! socket bytes -> protocol::Codec (lines <= 224 bytes, put bodies split off as Bytes)
//!   -> Frame::Command | Frame::Error(reply)
//!   -> session: quit closes; errors are answered; commands go to the engine
//!   -> Engine::apply(now, client, command) -> Outcome { reply | wait }
//!   -> replies of a pipelined batch are encoded into one buffer, written once
//! timer task: Engine::tick(now) -> wake-ups (blocked reserves) + next deadline
//! ```
//!
//! Modules: [`protocol`] (wire format only), [`engine`] (the queue, pure and
//! synchronous, time passed in), [`session`] (one task per connection),
//! [`server`] (listeners, timer task, shutdown), [`config`] (command line).

pub mod binlog;
pub mod clock;
pub mod config;
pub mod connection;
pub mod engine;
pub mod hub;
pub mod protocol;
pub mod server;
pub mod session;
pub mod sysinfo;
