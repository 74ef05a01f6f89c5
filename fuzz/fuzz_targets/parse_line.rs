//! `parse_line` on arbitrary bytes: never panics, a parsed command re-encoded
//! canonically parses back to itself, and the codec frames the line the same.
#![no_main]

#[path = "../../tests/model/mod.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| model::protocol::check_parse_line(data));
