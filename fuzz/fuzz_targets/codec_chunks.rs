//! The codec fed one input whole and in fuzzer-chosen chunkings yields the same frames.
#![no_main]

#[path = "../../tests/model/mod.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| model::protocol::check_codec_chunks(data));
