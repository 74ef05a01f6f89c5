//! Property tests: the engine against the reference model (with restarts that
//! replay the binlog), and the parser and codec on arbitrary bytes. The same
//! checks run under cargo-fuzz (`fuzz/`); these keep them in `cargo test`
//! with a small case count.

#[path = "model/mod.rs"]
mod model;

use proptest::collection::vec;
use proptest::prelude::*;

/// A set-up byte and up to 600 bytes of operations (see `model::engine::run`).
fn ops() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), vec(any::<u8>(), 0..600)).prop_map(|(setup, mut ops)| {
        ops.insert(0, setup);
        ops
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Small by default to keep `cargo test` fast; PROPTEST_CASES=N for more.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_model(data in ops()) {
        model::engine::run(&data);
    }

    #[test]
    fn engine_matches_model_across_restarts(mut data in ops()) {
        // Always with a binlog: bit 0 of the set-up byte.
        data[0] |= 1;
        model::engine::run(&data);
    }

    #[test]
    fn parse_line_is_total_and_consistent(line in vec(any::<u8>(), 0..64)) {
        model::protocol::check_parse_line(&line);
    }

    #[test]
    fn parse_line_on_verb_like_lines(line in "(put|peek|reserve|delete|release|bury|kick|touch|stats|use|watch|ignore|list|quit|pause-tube)[-a-z]{0,12}( [0-9]{1,21}| [a-z]{1,4}| ){0,5}") {
        model::protocol::check_parse_line(line.as_bytes());
    }

    #[test]
    fn codec_chunking_does_not_matter(data in vec(any::<u8>(), 0..400)) {
        model::protocol::check_codec_chunks(&data);
    }

    #[test]
    fn codec_chunking_on_command_streams(
        size in any::<u8>(),
        cuts in vec(any::<u8>(), 0..8),
        lines in vec("(put [0-9]{1,2} [0-9] [0-9]{1,2} [0-9]{1,2}\r\n[a-z]{0,12}\r\n|reserve\r\n|use [a-z]{1,3}\r\n|stats\r\n|peek [0-9]\r\n|[a-z ]{0,250}\r\n|\r|\n)", 0..12),
    ) {
        let mut data = vec![size, cuts.len() as u8];
        data.extend_from_slice(&cuts);
        data.extend(lines.concat().into_bytes());
        model::protocol::check_codec_chunks(&data);
    }
}

/// Replays one input of the engine check, e.g. a fuzz artifact:
/// `STALKD_MODEL_REPLAY=fuzz/artifacts/engine_model/crash-… STALKD_MODEL_TRACE=1
/// cargo test --test model replay -- --nocapture`. Does nothing without the variable.
#[test]
fn replay() {
    if let Some(path) = std::env::var_os("STALKD_MODEL_REPLAY") {
        let data = std::fs::read(&path).expect("read STALKD_MODEL_REPLAY");
        model::engine::run(&data);
    }
}
