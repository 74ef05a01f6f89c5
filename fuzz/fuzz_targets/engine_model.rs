//! The engine driven by arbitrary operations against a reference model, with
//! restarts that replay the binlog.
#![no_main]

#[path = "../../tests/model/mod.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| model::engine::run(data));
