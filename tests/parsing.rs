//! Command-line parsing, byte for byte as beanstalkd (notes §1, protocol.md §1).
//!
//! Every expected reply here was checked against a real beanstalkd, except the
//! two deliberate differences of protocol.md §5 (stray `\r`, 225-byte lines)
//! and `reserve-with-timeout`, where we follow 1.13 rather than 1.12.
mod common;
use common::{exchange, Client, JobStats, TestServer};

/// Asserts the connection still works: the next command is read normally.
async fn still_in_step(c: &mut Client) {
    c.roundtrip("list-tube-used\r\n", "USING default\r\n").await;
}

const BAD: &[u8] = b"BAD_FORMAT\r\n";
const UNKNOWN: &[u8] = b"UNKNOWN_COMMAND\r\n";
const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";

// ----- command recognition ---------------------------------------------------

#[tokio::test]
async fn commands_needing_arguments_sent_bare_are_unknown() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for verb in [
        "put", "delete", "use", "touch", "kick", "kick-job", "peek", "watch", "ignore", "bury",
        "release",
    ] {
        c.roundtrip(format!("{verb}\r\n"), UNKNOWN).await;
    }
    still_in_step(&mut c).await;
}

#[tokio::test]
async fn commands_needing_arguments_with_only_a_space_are_bad_format() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for verb in [
        "put",
        "delete",
        "use",
        "touch",
        "kick",
        "kick-job",
        "peek",
        "watch",
        "ignore",
        "bury",
        "release",
        "stats-job",
        "stats-tube",
        "reserve-job",
        "reserve-with-timeout",
        "pause-tube",
    ] {
        c.roundtrip(format!("{verb} \r\n"), BAD).await;
    }
    still_in_step(&mut c).await;
}

#[tokio::test]
async fn argument_less_commands_must_be_the_whole_line() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for line in [
        "reserve ",
        "reservex",
        "reserve-job",
        "reserve-with-timeout",
        "reserve-foo 1",
        "peek-ready ",
        "peek-readyx",
        "peek-delayed 1",
        "peek-buried ",
        "stats ",
        "stats-foo",
        "stats-job",
        "stats-tube",
        "list-tubes ",
        "list-tubes-foo",
        "list-tubesx",
        "list-tube-used ",
        "list-tubes-watched ",
        "pause-tube",
        "pause-tubes",
    ] {
        c.roundtrip(format!("{line}\r\n"), BAD).await;
    }
    still_in_step(&mut c).await;
}

#[tokio::test]
async fn unmatched_prefixes_are_unknown() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for line in [
        "qui",
        "stat",
        "list-tube",
        "peek-",
        "peekx 1",
        "kick-jobs 1",
        "putx 0 0 1 1",
        "used",
        " stats",
        "bogus",
    ] {
        c.roundtrip(format!("{line}\r\n"), UNKNOWN).await;
    }
    still_in_step(&mut c).await;
}

#[tokio::test]
async fn commands_are_case_sensitive() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            (b"PUT 0 0 1 1\r\n", UNKNOWN),
            (b"x\r\n", UNKNOWN),
            (b"Stats\r\n", UNKNOWN),
            (b"LIST-TUBES\r\n", UNKNOWN),
            (b"Quit\r\n", UNKNOWN),
        ],
    )
    .await;
    still_in_step(&mut c).await;
}

#[tokio::test]
async fn empty_line_is_unknown_command() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip("\r\n", UNKNOWN).await;
    c.roundtrip("\r\n\r\n", "UNKNOWN_COMMAND\r\nUNKNOWN_COMMAND\r\n")
        .await;
    still_in_step(&mut c).await;
}

#[tokio::test]
async fn a_tab_is_not_a_separator() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            (b"delete\t1\r\n", UNKNOWN),
            (b"kick\t1\r\n", UNKNOWN),
            // The put line is unknown, so its body is read as a command too.
            (
                b"put\t0 0 10 1\r\nx\r\n",
                b"UNKNOWN_COMMAND\r\nUNKNOWN_COMMAND\r\n",
            ),
            (
                b"put 0\t0 10 1\r\nx\r\n",
                b"BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n",
            ),
            (b"peek \t1\r\n", BAD),
            (b"use\tdefault\r\n", UNKNOWN),
        ],
    )
    .await;
    still_in_step(&mut c).await;
}

#[tokio::test]
async fn quit_closes_without_a_reply() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send("quit\r\n").await;
    c.expect_closed().await;
}

#[tokio::test]
async fn quit_is_matched_as_a_prefix() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip("list-tube-used\r\n", "USING default\r\n").await;
    c.send("quit-tube default 1\r\nlist-tube-used\r\n").await;
    c.expect_closed().await;
    let mut d = server.client().await;
    c = server.client().await;
    c.send("quit \r\n").await;
    c.expect_closed().await;
    assert_eq!(d.stat("stats\r\n", "cmd-list-tube-used").await, "1");
}

#[tokio::test]
async fn pause_tube_needs_no_space_after_the_verb() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip("pause-tubedefault 1\r\n", "PAUSED\r\n").await;
    assert_eq!(c.stat("stats-tube default\r\n", "pause").await, "1");
}

#[tokio::test]
async fn two_commands_in_one_packet_get_two_replies() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(
        "list-tube-used\r\nuse foo\r\n",
        "USING default\r\nUSING foo\r\n",
    )
    .await;
}

// ----- line framing ----------------------------------------------------------

#[tokio::test]
async fn nul_byte_in_a_line_is_bad_format() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            (b"stats\0\r\n", BAD),
            (b"\0\r\n", BAD),
            (b"use a\0b\r\n", BAD),
            (b"peek 1\0\r\n", BAD),
            (b"bogus\0\r\n", BAD),
        ],
    )
    .await;
    still_in_step(&mut c).await;
}

#[tokio::test]
async fn bare_lf_does_not_end_a_line() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send("stats\n").await;
    c.expect_silence().await;
    c.roundtrip("\r\n", BAD).await;
    c.roundtrip("\n\r\n", UNKNOWN).await;
    still_in_step(&mut c).await;
}

#[tokio::test]
async fn lone_cr_waits_for_crlf() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send("list-tube-used\r").await;
    c.expect_silence().await;
    c.roundtrip("\n", "USING default\r\n").await;
}

/// Deliberate difference 1 (protocol.md §5): beanstalkd hangs on this line.
#[tokio::test]
async fn stray_cr_inside_a_line_is_bad_format() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(
        "use a\rb\r\nlist-tube-used\r\n",
        "BAD_FORMAT\r\nUSING default\r\n",
    )
    .await;
    c.roundtrip("stats\r\r\n", BAD).await;
}

/// A line of `len` bytes, CRLF included: `use aaa…`.
fn use_line(len: usize) -> Vec<u8> {
    let mut line = b"use ".to_vec();
    line.resize(len - 2, b'a');
    line.extend_from_slice(b"\r\n");
    line
}

#[tokio::test]
async fn line_of_224_bytes_is_parsed() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let name = "n".repeat(200);
    c.roundtrip(format!("use {name}\r\n"), format!("USING {name}\r\n"))
        .await;
    let longest = format!("pause-tube {name} 4294967295\r\n");
    assert_eq!(longest.len(), 224);
    c.roundtrip(longest, "PAUSED\r\n").await;
    // 224 bytes with a 218-byte name: parsed, and the name is too long.
    c.roundtrip(use_line(224), BAD).await;
    c.roundtrip("list-tube-used\r\n", format!("USING {name}\r\n"))
        .await;
}

/// Deliberate difference 2 (protocol.md §5): beanstalkd also swallows the
/// line after a 225-byte one.
#[tokio::test]
async fn line_of_225_bytes_is_one_bad_format_and_the_next_line_works() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut input = use_line(225);
    input.extend_from_slice(b"list-tube-used\r\n");
    c.roundtrip(input, "BAD_FORMAT\r\nUSING default\r\n").await;
}

#[tokio::test]
async fn line_of_500_bytes_is_one_bad_format_and_the_next_put_works() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut input = vec![b'x'; 498];
    input.extend_from_slice(b"\r\nput 0 0 10 1\r\nx\r\n");
    c.roundtrip(input, "BAD_FORMAT\r\nINSERTED 1\r\n").await;
}

#[tokio::test]
async fn over_long_line_is_answered_only_at_its_crlf() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for _ in 0..10 {
        c.send([b'z'; 1000]).await;
    }
    c.expect_silence().await;
    c.send("zz\r").await;
    c.expect_silence().await;
    c.roundtrip("\nlist-tube-used\r\n", "BAD_FORMAT\r\nUSING default\r\n")
        .await;
}

// ----- integers --------------------------------------------------------------

#[tokio::test]
async fn put_numbers_are_u32_with_spaces_and_leading_zeros() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            (b"put 4294967295 0 10 1\r\na\r\n", b"INSERTED 1\r\n"),
            (b"put 0 4294967295 10 1\r\nb\r\n", b"INSERTED 2\r\n"),
            (b"put 0 0 4294967295 1\r\nc\r\n", b"INSERTED 3\r\n"),
            (b"put 01 00 010 01\r\nd\r\n", b"INSERTED 4\r\n"),
            (b"put  1  0  10  1\r\ne\r\n", b"INSERTED 5\r\n"),
        ],
    )
    .await;
    let max = u32::MAX;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "ready", max, 0, 10).reply(),
    )
    .await;
    c.roundtrip(
        "stats-job 2\r\n",
        JobStats::new(2, "delayed", 0, max, 10)
            .time_left(u64::from(max))
            .reply(),
    )
    .await;
    c.roundtrip(
        "stats-job 3\r\n",
        JobStats::new(3, "ready", 0, 0, max).reply(),
    )
    .await;
    c.roundtrip(
        "stats-job 4\r\n",
        JobStats::new(4, "ready", 1, 0, 10).reply(),
    )
    .await;
    c.roundtrip(
        "stats-job 5\r\n",
        JobStats::new(5, "ready", 1, 0, 10).reply(),
    )
    .await;
}

#[tokio::test]
async fn put_numbers_out_of_range_or_signed_are_bad_format_and_leave_the_body() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let bad_then_body: &[u8] = b"BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n";
    for line in [
        "put 4294967296 0 10 1",
        "put 0 4294967296 10 1",
        "put 0 0 4294967296 1",
        "put 0 0 10 4294967296",
        "put 18446744073709551616 0 10 1",
        "put -1 0 10 1",
        "put +1 0 10 1",
        "put 0 -1 10 1",
        "put 0 0 -1 1",
        "put 0 0 10 -1",
        "put 1x 0 10 1",
        "put 0 0 10 x",
        "put 0 0 10",
        "put 0x1 0 10 1",
    ] {
        c.roundtrip(format!("{line}\r\nx\r\n"), bad_then_body).await;
    }
    // Trailing text after the last number: BAD_FORMAT, body not consumed.
    for line in ["put 0 0 10 1 ", "put 0 0 10 1x", "put 0 0 10 1 2"] {
        c.roundtrip(format!("{line}\r\nx\r\n"), bad_then_body).await;
    }
    // None of them used an id.
    c.roundtrip("put 0 0 10 1\r\nx\r\n", "INSERTED 1\r\n").await;
}

#[tokio::test]
async fn job_ids_are_u64() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip("put 0 0 10 1\r\nx\r\n", "INSERTED 1\r\n").await;
    let found: &[u8] = b"FOUND 1 1\r\nx\r\n";
    exchange(
        &mut c,
        &[
            (b"peek 1\r\n", found),
            (b"peek 01\r\n", found),
            (b"peek 00000000000000000000000000001\r\n", found),
            (b"peek  1\r\n", found),
            (b"peek 0\r\n", NOT_FOUND),
            (b"peek 18446744073709551615\r\n", NOT_FOUND),
            (b"peek 18446744073709551616\r\n", BAD),
            (b"peek 99999999999999999999999\r\n", BAD),
            (b"peek -1\r\n", BAD),
            (b"peek +1\r\n", BAD),
            (b"peek 1 \r\n", BAD),
            (b"peek 1x\r\n", BAD),
            (b"peek x1\r\n", BAD),
            (b"peek 1 2\r\n", BAD),
        ],
    )
    .await;
    for verb in ["delete", "touch", "kick-job", "stats-job", "reserve-job"] {
        exchange(
            &mut c,
            &[
                (
                    format!("{verb} 18446744073709551615\r\n").as_bytes(),
                    NOT_FOUND,
                ),
                (format!("{verb} 18446744073709551616\r\n").as_bytes(), BAD),
                (format!("{verb} -1\r\n").as_bytes(), BAD),
                (format!("{verb} +1\r\n").as_bytes(), BAD),
                (format!("{verb} 1 \r\n").as_bytes(), BAD),
                (format!("{verb} 111ABC\r\n").as_bytes(), BAD),
                (format!("{verb} 111 222\r\n").as_bytes(), BAD),
                (format!("{verb}  2\r\n").as_bytes(), NOT_FOUND),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn release_and_bury_arguments() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            (b"release 1 4294967295 4294967295\r\n", NOT_FOUND),
            (b"release  18446744073709551615   0   0\r\n", NOT_FOUND),
            (b"release 18446744073709551616 0 0\r\n", BAD),
            (b"release 1 4294967296 0\r\n", BAD),
            (b"release 1 0 4294967296\r\n", BAD),
            (b"release 1 -1 0\r\n", BAD),
            (b"release 1 0\r\n", BAD),
            (b"release 1 0 0 \r\n", BAD),
            (b"release 1 0 0 0\r\n", BAD),
            (b"bury 1 4294967295\r\n", NOT_FOUND),
            (b"bury 1 4294967296\r\n", BAD),
            (b"bury 1\r\n", BAD),
            (b"bury 1 2 \r\n", BAD),
            (b"bury x 2\r\n", BAD),
            (b"bury 1\t2\r\n", BAD),
            (b"release 1\t0 0\r\n", BAD),
            (b"release 1 0\t0\r\n", BAD),
            (b"release +1 0 0\r\n", BAD),
        ],
    )
    .await;
    assert_eq!(c.stat("stats\r\n", "cmd-release").await, "2");
    assert_eq!(c.stat("stats\r\n", "cmd-bury").await, "1");
}

#[tokio::test]
async fn kick_bound_is_lax_like_strtoul() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    // Six delayed jobs to kick.
    for _ in 0..6 {
        c.send("put 0 100 10 1\r\nx\r\n").await;
    }
    c.expect(
        "INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 4\r\nINSERTED 5\r\nINSERTED 6\r\n",
    )
    .await;
    exchange(
        &mut c,
        &[
            (b"kick 1x\r\n", b"KICKED 1\r\n"),
            (b"kick +1\r\n", b"KICKED 1\r\n"),
            (b"kick  1\r\n", b"KICKED 1\r\n"),
            (b"kick \t1 junk\r\n", b"KICKED 1\r\n"),
            // Truncated to 32 bits: 2^32 is 0.
            (b"kick 4294967296\r\n", b"KICKED 0\r\n"),
            (b"kick x\r\n", BAD),
            (b"kick -\r\n", BAD),
            (b"kick 18446744073709551616\r\n", BAD),
            // -1 wraps to the largest bound: everything left.
            (b"kick -1\r\n", b"KICKED 2\r\n"),
        ],
    )
    .await;
    assert_eq!(c.stat("stats\r\n", "cmd-kick").await, "6");
}

#[tokio::test]
async fn reserve_with_timeout_follows_1_13() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            (b"reserve-with-timeout 0\r\n", b"TIMED_OUT\r\n"),
            (b"reserve-with-timeout 00\r\n", b"TIMED_OUT\r\n"),
            (b"reserve-with-timeout  0\r\n", b"TIMED_OUT\r\n"),
            // Text after the number is not checked.
            (b"reserve-with-timeout 0 junk\r\n", b"TIMED_OUT\r\n"),
            (b"reserve-with-timeout 0x\r\n", b"TIMED_OUT\r\n"),
            (b"reserve-with-timeout 0 \r\n", b"TIMED_OUT\r\n"),
            // 1.12 would read these as 0 or "forever".
            (b"reserve-with-timeout -1\r\n", BAD),
            (b"reserve-with-timeout +0\r\n", BAD),
            (b"reserve-with-timeout abc\r\n", BAD),
            (b"reserve-with-timeout \t1\r\n", BAD),
            (b"reserve-with-timeout 2147483648\r\n", BAD),
            (b"reserve-with-timeout 4294967296\r\n", BAD),
        ],
    )
    .await;
    assert_eq!(c.stat("stats\r\n", "cmd-reserve-with-timeout").await, "6");
    // INT_MAX itself is accepted and waits.
    c.send("reserve-with-timeout 2147483647\r\n").await;
    c.expect_silence().await;
    let mut p = server.client().await;
    p.roundtrip("put 0 0 10 1\r\nx\r\n", "INSERTED 1\r\n").await;
    c.expect("RESERVED 1 1\r\nx\r\n").await;
}

#[tokio::test]
async fn pause_tube_delay_is_u32() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            (b"pause-tube default 4294967295\r\n", b"PAUSED\r\n"),
            (b"pause-tube default 4294967296\r\n", BAD),
            (b"pause-tube default -1\r\n", BAD),
            (b"pause-tube default x\r\n", BAD),
            (b"pause-tube default 1 \r\n", BAD),
            (b"pause-tube default\r\n", BAD),
            (b"pause-tube default \r\n", BAD),
            (b"pause-tube default\t1\r\n", BAD),
            (b"pause-tube  default  01\r\n", b"PAUSED\r\n"),
        ],
    )
    .await;
    assert_eq!(c.stat("stats-tube default\r\n", "pause").await, "1");
}

// ----- tube names ------------------------------------------------------------

#[tokio::test]
async fn tube_name_of_200_bytes_is_accepted_and_201_is_not() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let n200 = "a".repeat(200);
    let n201 = "a".repeat(201);
    c.roundtrip(format!("use {n200}\r\n"), format!("USING {n200}\r\n"))
        .await;
    c.roundtrip(format!("use {n201}\r\n"), BAD).await;
    c.roundtrip(format!("watch {n201}\r\n"), BAD).await;
    c.roundtrip(format!("ignore {n201}\r\n"), BAD).await;
    c.roundtrip(format!("stats-tube {n201}\r\n"), BAD).await;
    c.roundtrip(format!("pause-tube {n201} 1\r\n"), BAD).await;
    c.roundtrip(format!("watch {n200}\r\n"), "WATCHING 2\r\n")
        .await;
}

#[tokio::test]
async fn tube_name_charset() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            (b"use AZaz09-+/;.$_()\r\n", b"USING AZaz09-+/;.$_()\r\n"),
            (b"watch AZaz09-+/;.$_()\r\n", b"WATCHING 2\r\n"),
            (b"watch f-oo\r\n", b"WATCHING 3\r\n"),
            (b"watch +\r\n", b"WATCHING 4\r\n"),
            (b"watch under_score\r\n", b"WATCHING 5\r\n"),
            (b"use -foo\r\n", BAD),
            (b"use -\r\n", BAD),
            (b"use a*b\r\n", BAD),
            (b"use a:b\r\n", BAD),
            (b"use caf\xc3\xa9\r\n", BAD),
            (b"watch -foo\r\n", BAD),
            (b"watch a\"b\r\n", BAD),
            // Names are case-sensitive.
            (b"watch Default\r\n", b"WATCHING 6\r\n"),
        ],
    )
    .await;
    c.roundtrip(
        "list-tubes\r\n",
        "OK 67\r\n---\n- default\n- AZaz09-+/;.$_()\n- f-oo\n- +\n- under_score\n- Default\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn tube_name_is_the_whole_rest_of_the_line() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for verb in ["use", "watch", "ignore", "stats-tube"] {
        for rest in ["foo bar", "foo ", " foo", "foo\tbar"] {
            c.roundtrip(format!("{verb} {rest}\r\n"), BAD).await;
        }
    }
    c.roundtrip("list-tubes\r\n", "OK 14\r\n---\n- default\n\r\n")
        .await;
}

#[tokio::test]
async fn pause_tube_name_runs_to_the_first_non_name_byte() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            (b"pause-tube  default  1\r\n", b"PAUSED\r\n"),
            (b"pause-tube nope 1\r\n", NOT_FOUND),
            (b"pause-tube default,1\r\n", BAD),
            (b"pause-tube ,default 1\r\n", BAD),
            (b"pause-tube -x 1\r\n", BAD),
            (b"pause-tube\tdefault 1\r\n", BAD),
        ],
    )
    .await;
    // The invalid name parsed as far as the delay, so it counts.
    assert_eq!(c.stat("stats\r\n", "cmd-pause-tube").await, "3");
}
