//! Checks shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the
//! property tests (`tests/model.rs`), so the logic exists once. Each check
//! takes raw bytes and panics on the first disagreement.
//!
//! - [`protocol::check_parse_line`]: the line parser on arbitrary bytes.
//! - [`protocol::check_codec_chunks`]: the codec, whole versus chunked.
//! - [`engine::run`]: the engine against a reference model, with restarts
//!   that replay the binlog.
#![allow(dead_code)]

pub mod engine;
pub mod protocol;
