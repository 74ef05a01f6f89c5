//! Every command and every reply, with exact bytes (notes §2-§4).
//!
//! Expected bytes were checked against a real beanstalkd (time-dependent
//! fields aside: here the clock is manual and does not move by itself).
mod common;
use common::{ok, put, Client, JobStats, TestServer, TubeStats};
use stalkd::config::Config;

/// Sends each request and asserts its exact reply, in order (requests may
/// be built with `put`, replies are literals).
async fn exchange(c: &mut Client, cases: &[(&str, &str)]) {
    for (request, reply) in cases {
        c.roundtrip(request, reply).await;
    }
}

// ----- put ---------------------------------------------------------------------

#[tokio::test]
async fn put_inserted_then_reserved_with_the_body_as_sent() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip("put 0 0 10 5\r\nhello\r\n", "INSERTED 1\r\n")
        .await;
    // Body bytes are raw: CRLF and NUL inside are data.
    c.roundtrip("put 0 0 10 6\r\na\r\nb\0c\r\n", "INSERTED 2\r\n")
        .await;
    c.roundtrip("reserve\r\n", "RESERVED 1 5\r\nhello\r\n")
        .await;
    c.roundtrip("reserve\r\n", "RESERVED 2 6\r\na\r\nb\0c\r\n")
        .await;
    c.roundtrip("peek 2\r\n", "FOUND 2 6\r\na\r\nb\0c\r\n")
        .await;
}

#[tokio::test]
async fn put_with_an_empty_body() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip("put 0 0 10 0\r\n\r\n", "INSERTED 1\r\n").await;
    c.roundtrip("peek 1\r\n", "FOUND 1 0\r\n\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 0\r\n\r\n").await;
}

#[tokio::test]
async fn put_bad_format_does_not_consume_the_body() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(
        "put -1 0 10 1\r\nx\r\n",
        "BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n",
    )
    .await;
    // The body line can even be a command of its own.
    c.roundtrip(
        "put 0 0 10 14 junk\r\nlist-tube-used\r\n",
        "BAD_FORMAT\r\nUSING default\r\n",
    )
    .await;
    c.roundtrip(put(0, 0, 10, "x"), "INSERTED 1\r\n").await;
}

#[tokio::test]
async fn job_too_big_replies_only_after_bytes_plus_two_arrive() {
    let server = TestServer::start_with(Config {
        max_job_size: 10,
        ..Config::default()
    })
    .await;
    let mut c = server.client().await;
    c.send("put 0 0 10 11\r\n0123456789").await;
    c.expect_silence().await;
    c.send("a\r").await;
    c.expect_silence().await;
    c.roundtrip("\n", "JOB_TOO_BIG\r\n").await;
    // The limit itself is accepted, and no id was used.
    c.roundtrip(put(0, 0, 10, "0123456789"), "INSERTED 1\r\n")
        .await;
}

#[tokio::test]
async fn job_too_big_comes_before_the_trailing_text_check() {
    let server = TestServer::start_with(Config {
        max_job_size: 10,
        ..Config::default()
    })
    .await;
    let mut c = server.client().await;
    c.send("put 0 0 10 11 garbage\r\n").await;
    c.expect_silence().await;
    c.roundtrip(
        "xxxxxxxxxxxxxlist-tube-used\r\n",
        "JOB_TOO_BIG\r\nUSING default\r\n",
    )
    .await;
}

#[tokio::test]
async fn job_too_big_discards_exactly_bytes_plus_two_whatever_they_are() {
    let server = TestServer::start_with(Config {
        max_job_size: 4,
        ..Config::default()
    })
    .await;
    let mut c = server.client().await;
    c.roundtrip(
        "put 0 0 10 5\r\nabcdefglist-tube-used\r\n",
        "JOB_TOO_BIG\r\nUSING default\r\n",
    )
    .await;
}

#[tokio::test]
async fn default_max_job_size_accepts_65535_and_rejects_65536() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let big = "q".repeat(65535);
    c.roundtrip(put(0, 0, 10, &big), "INSERTED 1\r\n").await;
    let bigger = "q".repeat(65536);
    c.roundtrip(put(0, 0, 10, &bigger), "JOB_TOO_BIG\r\n").await;
    c.roundtrip(put(0, 0, 10, "x"), "INSERTED 2\r\n").await;
    c.send("peek 1\r\n").await;
    c.expect(format!("FOUND 1 65535\r\n{big}\r\n")).await;
}

#[tokio::test]
async fn expected_crlf_consumes_bytes_plus_two() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    // The leftover CRLF is an empty line.
    c.roundtrip(
        "put 0 0 10 1\r\nabc\r\n",
        "EXPECTED_CRLF\r\nUNKNOWN_COMMAND\r\n",
    )
    .await;
    c.roundtrip(
        "put 0 0 10 3\r\nabc\n\rlist-tube-used\r\n",
        "EXPECTED_CRLF\r\nUSING default\r\n",
    )
    .await;
    c.roundtrip(
        "put 0 0 10 0\r\nxylist-tube-used\r\n",
        "EXPECTED_CRLF\r\nUSING default\r\n",
    )
    .await;
    // Each of the three used up an id.
    c.roundtrip(put(0, 0, 10, "x"), "INSERTED 4\r\n").await;
    c.roundtrip("peek 1\r\n", "NOT_FOUND\r\n").await;
}

#[tokio::test]
async fn only_puts_that_got_past_the_line_checks_use_ids() {
    let server = TestServer::start_with(Config {
        max_job_size: 10,
        ..Config::default()
    })
    .await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            (
                "put 0 0 10 1 x\r\nx\r\n",
                "BAD_FORMAT\r\nUNKNOWN_COMMAND\r\n",
            ),
            ("put 0 0 10 11\r\nxxxxxxxxxxx\r\n", "JOB_TOO_BIG\r\n"),
            ("put 0 0 10 1\r\nxyz", "EXPECTED_CRLF\r\n"),
            (&put(0, 0, 10, "a"), "INSERTED 2\r\n"),
        ],
    )
    .await;
    server.hub.set_draining(true);
    c.roundtrip(
        "put 0 0 10 1\r\nx\r\nlist-tube-used\r\n",
        "DRAINING\r\nUSING default\r\n",
    )
    .await;
    server.hub.set_draining(false);
    c.roundtrip(put(0, 0, 10, "b"), "INSERTED 4\r\n").await;
    assert_eq!(c.stat("stats\r\n", "cmd-put").await, "6");
    assert_eq!(c.stat("stats\r\n", "total-jobs").await, "2");
}

#[tokio::test]
async fn draining_refuses_puts_and_serves_everything_else() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(put(0, 0, 10, "x"), "INSERTED 1\r\n").await;
    server.hub.set_draining(true);
    exchange(
        &mut c,
        &[
            (&put(0, 0, 10, "y"), "DRAINING\r\n"),
            ("reserve\r\n", "RESERVED 1 1\r\nx\r\n"),
            ("delete 1\r\n", "DELETED\r\n"),
            ("use foo\r\n", "USING foo\r\n"),
        ],
    )
    .await;
    assert_eq!(c.stat("stats\r\n", "draining").await, "true");
    assert_eq!(c.stat("stats\r\n", "current-jobs-ready").await, "0");
}

// ----- delete / release / bury / touch ---------------------------------------

#[tokio::test]
async fn delete_a_job_reserved_by_another_client_is_not_found() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.roundtrip(put(0, 0, 10, "x"), "INSERTED 1\r\n").await;
    a.roundtrip("reserve\r\n", "RESERVED 1 1\r\nx\r\n").await;
    exchange(
        &mut b,
        &[
            ("delete 1\r\n", "NOT_FOUND\r\n"),
            ("release 1 0 0\r\n", "NOT_FOUND\r\n"),
            ("bury 1 0\r\n", "NOT_FOUND\r\n"),
            ("touch 1\r\n", "NOT_FOUND\r\n"),
        ],
    )
    .await;
    a.roundtrip("delete 1\r\n", "DELETED\r\n").await;
    a.roundtrip("delete 1\r\n", "NOT_FOUND\r\n").await;
}

#[tokio::test]
async fn delete_ready_delayed_and_buried_jobs_in_any_tube() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.send(format!(
        "use other\r\n{}{}{}",
        put(0, 0, 10, "a"),
        put(0, 100, 10, "b"),
        put(0, 0, 10, "c")
    ))
    .await;
    a.expect("USING other\r\nINSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n")
        .await;
    a.roundtrip("reserve-job 1\r\n", "RESERVED 1 1\r\na\r\n")
        .await;
    a.roundtrip("bury 1 0\r\n", "BURIED\r\n").await;
    // b uses and watches default only.
    exchange(
        &mut b,
        &[
            ("delete 1\r\n", "DELETED\r\n"),
            ("delete 2\r\n", "DELETED\r\n"),
            ("delete 3\r\n", "DELETED\r\n"),
            ("delete 3\r\n", "NOT_FOUND\r\n"),
            ("delete 99\r\n", "NOT_FOUND\r\n"),
        ],
    )
    .await;
    let mut tube = TubeStats::new("other");
    tube.total_jobs = 3;
    tube.using = 1;
    tube.cmd_delete = 3;
    b.roundtrip("stats-tube other\r\n", tube.reply()).await;
    assert_eq!(b.stat("stats\r\n", "cmd-delete").await, "5");
}

#[tokio::test]
async fn release_sets_priority_and_delay() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(put(10, 0, 10, "a"), "INSERTED 1\r\n").await;
    exchange(
        &mut c,
        &[
            ("release 1 0 0\r\n", "NOT_FOUND\r\n"),
            ("reserve\r\n", "RESERVED 1 1\r\na\r\n"),
            ("release 1 5 0\r\n", "RELEASED\r\n"),
            ("release 1 5 0\r\n", "NOT_FOUND\r\n"),
        ],
    )
    .await;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "ready", 5, 0, 10)
            .reserves(1)
            .releases(1)
            .reply(),
    )
    .await;
    exchange(
        &mut c,
        &[
            ("reserve\r\n", "RESERVED 1 1\r\na\r\n"),
            ("release 1 7 100\r\n", "RELEASED\r\n"),
            ("peek-ready\r\n", "NOT_FOUND\r\n"),
            ("peek-delayed\r\n", "FOUND 1 1\r\na\r\n"),
        ],
    )
    .await;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "delayed", 7, 100, 10)
            .time_left(100)
            .reserves(2)
            .releases(2)
            .reply(),
    )
    .await;
}

#[tokio::test]
async fn bury_needs_the_reservation_and_replies_without_an_id() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(put(10, 0, 10, "a"), "INSERTED 1\r\n").await;
    exchange(
        &mut c,
        &[
            ("bury 1 0\r\n", "NOT_FOUND\r\n"),
            ("reserve\r\n", "RESERVED 1 1\r\na\r\n"),
            ("bury 1 4294967295\r\n", "BURIED\r\n"),
            ("bury 1 0\r\n", "NOT_FOUND\r\n"),
            ("peek-buried\r\n", "FOUND 1 1\r\na\r\n"),
        ],
    )
    .await;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "buried", 4294967295, 0, 10)
            .reserves(1)
            .buries(1)
            .reply(),
    )
    .await;
    // A kick keeps the priority given at bury.
    c.roundtrip("kick 1\r\n", "KICKED 1\r\n").await;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "ready", 4294967295, 0, 10)
            .reserves(1)
            .buries(1)
            .kicks(1)
            .reply(),
    )
    .await;
}

#[tokio::test]
async fn touch_needs_the_reservation() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(put(0, 0, 10, "a"), "INSERTED 1\r\n").await;
    exchange(
        &mut c,
        &[
            ("touch 1\r\n", "NOT_FOUND\r\n"),
            ("touch 2\r\n", "NOT_FOUND\r\n"),
            ("reserve\r\n", "RESERVED 1 1\r\na\r\n"),
            ("touch 1\r\n", "TOUCHED\r\n"),
            ("release 1 0 0\r\n", "RELEASED\r\n"),
            ("touch 1\r\n", "NOT_FOUND\r\n"),
        ],
    )
    .await;
}

// ----- peek ------------------------------------------------------------------

#[tokio::test]
async fn peek_family_looks_at_the_used_tube_and_peek_id_everywhere() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!("use foo\r\n{}use bar\r\n", put(0, 0, 10, "a")))
        .await;
    c.expect("USING foo\r\nINSERTED 1\r\nUSING bar\r\n").await;
    exchange(
        &mut c,
        &[
            ("peek-ready\r\n", "NOT_FOUND\r\n"),
            ("peek-delayed\r\n", "NOT_FOUND\r\n"),
            ("peek-buried\r\n", "NOT_FOUND\r\n"),
            ("peek 1\r\n", "FOUND 1 1\r\na\r\n"),
            ("use foo\r\n", "USING foo\r\n"),
            ("peek-ready\r\n", "FOUND 1 1\r\na\r\n"),
        ],
    )
    .await;
    // Watching does not matter, only using.
    c.roundtrip("watch foo\r\n", "WATCHING 2\r\n").await;
    c.roundtrip("use default\r\n", "USING default\r\n").await;
    c.roundtrip("peek-ready\r\n", "NOT_FOUND\r\n").await;
}

#[tokio::test]
async fn peek_sees_a_job_reserved_by_another_client() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.roundtrip(put(0, 0, 10, "a"), "INSERTED 1\r\n").await;
    a.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    b.roundtrip("peek 1\r\n", "FOUND 1 1\r\na\r\n").await;
    b.roundtrip("peek-ready\r\n", "NOT_FOUND\r\n").await;
}

#[tokio::test]
async fn peek_ready_delayed_buried_show_the_next_job_of_each() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!(
        "{}{}{}{}{}{}",
        put(5, 0, 10, "r1"),
        put(3, 0, 10, "r2"),
        put(3, 0, 10, "r3"),
        put(0, 50, 10, "d4"),
        put(0, 40, 10, "d5"),
        put(0, 40, 10, "d6"),
    ))
    .await;
    c.expect(
        "INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 4\r\nINSERTED 5\r\nINSERTED 6\r\n",
    )
    .await;
    exchange(
        &mut c,
        &[
            // Lowest pri, ties to the lowest id.
            ("peek-ready\r\n", "FOUND 2 2\r\nr2\r\n"),
            // Soonest deadline, ties to the lowest id.
            ("peek-delayed\r\n", "FOUND 5 2\r\nd5\r\n"),
            ("reserve-job 3\r\n", "RESERVED 3 2\r\nr3\r\n"),
            ("bury 3 9\r\n", "BURIED\r\n"),
            ("reserve-job 1\r\n", "RESERVED 1 2\r\nr1\r\n"),
            ("bury 1 0\r\n", "BURIED\r\n"),
            // The oldest buried, whatever its priority.
            ("peek-buried\r\n", "FOUND 3 2\r\nr3\r\n"),
            ("delete 5\r\n", "DELETED\r\n"),
            ("peek-delayed\r\n", "FOUND 6 2\r\nd6\r\n"),
        ],
    )
    .await;
}

#[tokio::test]
async fn peek_ready_works_on_a_paused_tube() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            (&put(0, 0, 10, "a"), "INSERTED 1\r\n"),
            ("pause-tube default 100\r\n", "PAUSED\r\n"),
            ("reserve-with-timeout 0\r\n", "TIMED_OUT\r\n"),
            ("peek-ready\r\n", "FOUND 1 1\r\na\r\n"),
            ("reserve-job 1\r\n", "RESERVED 1 1\r\na\r\n"),
        ],
    )
    .await;
}

// ----- kick ------------------------------------------------------------------

#[tokio::test]
async fn kick_takes_only_buried_jobs_while_there_are_any() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!(
        "{}{}{}{}{}",
        put(0, 0, 10, "a"),
        put(0, 0, 10, "b"),
        put(0, 50, 10, "c"),
        put(0, 40, 10, "d"),
        put(0, 60, 10, "e"),
    ))
    .await;
    c.expect("INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nINSERTED 4\r\nINSERTED 5\r\n")
        .await;
    exchange(
        &mut c,
        &[
            ("reserve\r\n", "RESERVED 1 1\r\na\r\n"),
            ("bury 1 0\r\n", "BURIED\r\n"),
            ("reserve\r\n", "RESERVED 2 1\r\nb\r\n"),
            ("bury 2 0\r\n", "BURIED\r\n"),
            ("kick 10\r\n", "KICKED 2\r\n"),
            // Then delayed jobs, soonest first.
            ("kick 1\r\n", "KICKED 1\r\n"),
            ("peek-delayed\r\n", "FOUND 3 1\r\nc\r\n"),
            ("kick 10\r\n", "KICKED 2\r\n"),
            ("kick 10\r\n", "KICKED 0\r\n"),
            ("peek-ready\r\n", "FOUND 1 1\r\na\r\n"),
        ],
    )
    .await;
    c.roundtrip(
        "stats-job 4\r\n",
        JobStats::new(4, "ready", 0, 40, 10).kicks(1).reply(),
    )
    .await;
}

#[tokio::test]
async fn kick_takes_the_oldest_buried_first() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!("{}{}", put(0, 0, 10, "a"), put(0, 0, 10, "b")))
        .await;
    c.expect("INSERTED 1\r\nINSERTED 2\r\n").await;
    exchange(
        &mut c,
        &[
            ("reserve-job 2\r\n", "RESERVED 2 1\r\nb\r\n"),
            ("bury 2 0\r\n", "BURIED\r\n"),
            ("reserve-job 1\r\n", "RESERVED 1 1\r\na\r\n"),
            ("bury 1 0\r\n", "BURIED\r\n"),
            ("kick 1\r\n", "KICKED 1\r\n"),
            ("peek-ready\r\n", "FOUND 2 1\r\nb\r\n"),
            ("peek-buried\r\n", "FOUND 1 1\r\na\r\n"),
        ],
    )
    .await;
}

#[tokio::test]
async fn kick_works_on_the_used_tube_only() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(
        format!("use foo\r\n{}", put(0, 10, 10, "a")),
        "USING foo\r\nINSERTED 1\r\n",
    )
    .await;
    c.roundtrip("use default\r\n", "USING default\r\n").await;
    c.roundtrip("kick 10\r\n", "KICKED 0\r\n").await;
    c.roundtrip("use foo\r\n", "USING foo\r\n").await;
    c.roundtrip("kick 10\r\n", "KICKED 1\r\n").await;
}

#[tokio::test]
async fn kick_job_kicks_one_buried_or_delayed_job_in_any_tube() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!(
        "use foo\r\n{}{}use default\r\n",
        put(0, 0, 10, "a"),
        put(0, 50, 10, "c")
    ))
    .await;
    c.expect("USING foo\r\nINSERTED 1\r\nINSERTED 2\r\nUSING default\r\n")
        .await;
    exchange(
        &mut c,
        &[
            ("kick-job 1\r\n", "NOT_FOUND\r\n"),
            ("kick-job 2\r\n", "KICKED\r\n"),
            ("kick-job 2\r\n", "NOT_FOUND\r\n"),
            ("kick-job 99\r\n", "NOT_FOUND\r\n"),
            ("reserve-job 1\r\n", "RESERVED 1 1\r\na\r\n"),
            ("kick-job 1\r\n", "NOT_FOUND\r\n"),
            ("bury 1 3\r\n", "BURIED\r\n"),
            ("kick-job 1\r\n", "KICKED\r\n"),
        ],
    )
    .await;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "ready", 3, 0, 10)
            .tube("foo")
            .reserves(1)
            .buries(1)
            .kicks(1)
            .reply(),
    )
    .await;
    // kick-job has no counter.
    assert_eq!(c.stat("stats\r\n", "cmd-kick").await, "0");
}

// ----- reserve-job -------------------------------------------------------------

#[tokio::test]
async fn reserve_job_takes_ready_delayed_and_buried_jobs() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.send(format!(
        "{}{}{}",
        put(0, 0, 10, "a"),
        put(0, 50, 10, "c"),
        put(0, 0, 10, "d")
    ))
    .await;
    a.expect("INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n").await;
    exchange(
        &mut a,
        &[
            ("reserve\r\n", "RESERVED 1 1\r\na\r\n"),
            ("bury 3 0\r\n", "NOT_FOUND\r\n"),
            ("reserve-job 1\r\n", "NOT_FOUND\r\n"),
            ("reserve-job 2\r\n", "RESERVED 2 1\r\nc\r\n"),
            ("reserve-job 2\r\n", "NOT_FOUND\r\n"),
            ("reserve-job 3\r\n", "RESERVED 3 1\r\nd\r\n"),
            ("bury 3 0\r\n", "BURIED\r\n"),
            ("reserve-job 3\r\n", "RESERVED 3 1\r\nd\r\n"),
            ("reserve-job 9\r\n", "NOT_FOUND\r\n"),
        ],
    )
    .await;
    b.roundtrip("reserve-job 1\r\n", "NOT_FOUND\r\n").await;
    a.roundtrip(
        "stats-job 2\r\n",
        JobStats::new(2, "reserved", 0, 50, 10)
            .time_left(10)
            .reserves(1)
            .reply(),
    )
    .await;
    a.roundtrip("release 2 0 0\r\n", "RELEASED\r\n").await;
    a.roundtrip(
        "stats-job 2\r\n",
        JobStats::new(2, "ready", 0, 0, 10)
            .reserves(1)
            .releases(1)
            .reply(),
    )
    .await;
}

#[tokio::test]
async fn reserve_job_works_across_tubes_and_through_pauses() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    a.roundtrip(
        format!("use foo\r\n{}pause-tube foo 100\r\n", put(0, 0, 10, "a")),
        "USING foo\r\nINSERTED 1\r\nPAUSED\r\n",
    )
    .await;
    let mut b = server.client().await;
    b.roundtrip("reserve-job 1\r\n", "RESERVED 1 1\r\na\r\n")
        .await;
    assert_eq!(b.stat("stats\r\n", "current-workers").await, "1");
}

// ----- tubes: use, watch, ignore, lists -------------------------------------------

#[tokio::test]
async fn use_and_list_tube_used() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            ("list-tube-used\r\n", "USING default\r\n"),
            ("use foo\r\n", "USING foo\r\n"),
            ("use foo\r\n", "USING foo\r\n"),
            ("list-tube-used\r\n", "USING foo\r\n"),
        ],
    )
    .await;
}

#[tokio::test]
async fn watch_and_ignore_counts() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            ("watch default\r\n", "WATCHING 1\r\n"),
            ("watch a\r\n", "WATCHING 2\r\n"),
            ("watch b\r\n", "WATCHING 3\r\n"),
            ("watch a\r\n", "WATCHING 3\r\n"),
            ("ignore nope\r\n", "WATCHING 3\r\n"),
            ("ignore default\r\n", "WATCHING 2\r\n"),
            ("ignore default\r\n", "WATCHING 2\r\n"),
            ("list-tubes-watched\r\n", "OK 12\r\n---\n- b\n- a\n\r\n"),
            ("ignore a\r\n", "WATCHING 1\r\n"),
            ("ignore b\r\n", "NOT_IGNORED\r\n"),
            ("list-tubes-watched\r\n", "OK 8\r\n---\n- b\n\r\n"),
            ("list-tubes\r\n", "OK 18\r\n---\n- default\n- b\n\r\n"),
        ],
    )
    .await;
}

#[tokio::test]
async fn ignore_and_stats_tube_create_no_tube() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            ("ignore nope\r\n", "WATCHING 1\r\n"),
            ("stats-tube nope\r\n", "NOT_FOUND\r\n"),
            ("pause-tube nope 1\r\n", "NOT_FOUND\r\n"),
            ("list-tubes\r\n", "OK 14\r\n---\n- default\n\r\n"),
        ],
    )
    .await;
}

#[tokio::test]
async fn list_orders_swap_the_last_entry_into_a_removed_slot() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            ("watch x\r\n", "WATCHING 2\r\n"),
            ("watch y\r\n", "WATCHING 3\r\n"),
            ("watch z\r\n", "WATCHING 4\r\n"),
            ("ignore default\r\n", "WATCHING 3\r\n"),
            (
                "list-tubes-watched\r\n",
                "OK 16\r\n---\n- z\n- x\n- y\n\r\n",
            ),
            (
                "list-tubes\r\n",
                "OK 26\r\n---\n- default\n- x\n- y\n- z\n\r\n",
            ),
            ("ignore x\r\n", "WATCHING 2\r\n"),
            ("list-tubes-watched\r\n", "OK 12\r\n---\n- z\n- y\n\r\n"),
            ("list-tubes\r\n", "OK 22\r\n---\n- default\n- z\n- y\n\r\n"),
        ],
    )
    .await;
}

#[tokio::test]
async fn tube_vanishes_when_nothing_refers_to_it() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.send(format!("use foo\r\n{}use default\r\n", put(0, 0, 10, "a")))
        .await;
    a.expect("USING foo\r\nINSERTED 1\r\nUSING default\r\n")
        .await;
    // Held by its job only.
    let mut foo = TubeStats::new("foo");
    foo.urgent = 1;
    foo.ready = 1;
    foo.total_jobs = 1;
    a.roundtrip("stats-tube foo\r\n", foo.reply()).await;
    a.roundtrip("delete 1\r\n", "DELETED\r\n").await;
    a.roundtrip("stats-tube foo\r\n", "NOT_FOUND\r\n").await;
    // Held by a watcher only, until it disconnects.
    b.roundtrip("watch bar\r\n", "WATCHING 2\r\n").await;
    a.roundtrip("list-tubes\r\n", "OK 20\r\n---\n- default\n- bar\n\r\n")
        .await;
    drop(b);
    let mut c = server.client().await;
    assert_eq!(c.stat("stats\r\n", "current-tubes").await, "1");
    c.roundtrip("stats-tube bar\r\n", "NOT_FOUND\r\n").await;
    c.roundtrip("list-tubes\r\n", "OK 14\r\n---\n- default\n\r\n")
        .await;
    // `default` never vanishes.
    c.roundtrip("use foo\r\n", "USING foo\r\n").await;
    c.roundtrip("watch foo\r\n", "WATCHING 2\r\n").await;
    c.roundtrip("ignore default\r\n", "WATCHING 1\r\n").await;
    a.roundtrip("use foo\r\n", "USING foo\r\n").await;
    a.roundtrip("watch foo\r\n", "WATCHING 2\r\n").await;
    a.roundtrip("ignore default\r\n", "WATCHING 1\r\n").await;
    a.roundtrip("stats-tube default\r\n", TubeStats::new("default").reply())
        .await;
}

// ----- pause-tube ----------------------------------------------------------------

#[tokio::test]
async fn pause_tube_replies_and_stats() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            ("pause-tube default 100\r\n", "PAUSED\r\n"),
            ("pause-tube nope 100\r\n", "NOT_FOUND\r\n"),
        ],
    )
    .await;
    let mut t = TubeStats::new("default");
    t.using = 1;
    t.watching = 1;
    t.cmd_pause = 1;
    t.pause = 100;
    t.pause_left = 100;
    c.roundtrip("stats-tube default\r\n", t.reply()).await;
    assert_eq!(c.stat("stats\r\n", "cmd-pause-tube").await, "2");
}

// ----- the remaining replies ----------------------------------------------------------

#[tokio::test]
async fn timed_out_and_deadline_soon_bytes() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    exchange(
        &mut c,
        &[
            ("reserve-with-timeout 0\r\n", "TIMED_OUT\r\n"),
            (&put(0, 0, 1, "a"), "INSERTED 1\r\n"),
            ("reserve\r\n", "RESERVED 1 1\r\na\r\n"),
            ("reserve\r\n", "DEADLINE_SOON\r\n"),
            ("reserve-with-timeout 0\r\n", "DEADLINE_SOON\r\n"),
        ],
    )
    .await;
}

#[tokio::test]
async fn stats_job_of_a_missing_job_is_not_found() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip("stats-job 1\r\n", "NOT_FOUND\r\n").await;
    c.roundtrip(put(0, 0, 10, "a"), "INSERTED 1\r\n").await;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "ready", 0, 0, 10).reply(),
    )
    .await;
}

#[tokio::test]
async fn ok_length_counts_the_yaml_without_the_final_crlf() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip("list-tubes\r\n", ok("---\n- default\n")).await;
    c.roundtrip("list-tubes\r\n", "OK 14\r\n---\n- default\n\r\n")
        .await;
}

/// protocol.md §5, difference 6: a put is taken once its body has arrived.
/// beanstalkd allocates the id (and shows the half-received job) at the
/// put line.
#[tokio::test]
async fn a_put_whose_body_is_still_arriving_is_invisible_and_has_no_id_yet() {
    let server = TestServer::start().await;
    let mut slow = server.client().await;
    let mut c = server.client().await;
    slow.send("put 5 0 100 3\r\nab").await;
    // Let the server read the partial put before the other one arrives.
    slow.expect_silence().await;
    c.roundtrip("put 0 0 100 1\r\nz\r\n", "INSERTED 1\r\n")
        .await;
    c.roundtrip("peek 2\r\n", "NOT_FOUND\r\n").await;
    c.roundtrip("stats-job 2\r\n", "NOT_FOUND\r\n").await;
    assert_eq!(c.stat("stats\r\n", "cmd-put").await, "1");
    assert_eq!(c.stat("stats\r\n", "current-producers").await, "1");
    slow.roundtrip("c\r\n", "INSERTED 2\r\n").await;
    c.roundtrip("peek 2\r\n", "FOUND 2 3\r\nabc\r\n").await;
    assert_eq!(c.stat("stats\r\n", "cmd-put").await, "2");

    // A client gone mid-body leaves nothing behind, not even a count.
    let mut gone = server.client().await;
    gone.send("put 0 0 100 3\r\nab").await;
    gone.expect_silence().await;
    drop(gone);
    c.roundtrip("put 0 0 100 1\r\ny\r\n", "INSERTED 3\r\n")
        .await;
    assert_eq!(c.stat("stats\r\n", "cmd-put").await, "3");
    server.check_invariants();
}
