//! The beanstalkd wire format, and nothing else: no queue logic lives here.
//!
//! `codec` frames the byte stream into lines (and put bodies), `parse` turns one
//! line into a [`Command`] or an error [`Reply`], and `reply` encodes answers.
//! Protocol errors are values: the codec yields them as [`Frame::Error`] and
//! keeps the stream usable wherever beanstalkd keeps it.

pub mod codec;
pub mod command;
pub mod outbox;
pub mod parse;
pub mod reply;

pub use codec::{Codec, Frame, DEFAULT_READ_SIZE};
pub use command::{Command, JobId, Priority, PutBody, Seconds, TubeName};
pub use outbox::Outbox;
pub use reply::Reply;

/// Longest command line, CRLF included (beanstalkd's `LINE_BUF_SIZE`).
pub const MAX_LINE: usize = 224;

/// Default `-z`: the largest job body accepted.
pub const DEFAULT_MAX_JOB_SIZE: u32 = 65_535;

/// Largest `-z` beanstalkd accepts (1 GiB).
pub const MAX_JOB_SIZE_LIMIT: u32 = 1 << 30;
