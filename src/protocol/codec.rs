//! Framing: lines, put bodies, over-long lines.
use super::{Command, Reply};

/// One unit the session acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Command(Command),
    Error(Reply),
}

/// Decoder state; see the module doc.
#[derive(Debug)]
pub struct Codec {}
