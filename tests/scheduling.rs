//! Time and dispatch: delays, TTR, DEADLINE_SOON, timeouts, pauses, waiters,
//! disconnects and ordering (notes §2), on the manual clock.
mod common;
use common::{put, JobStats, TestServer, TubeStats};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

// ----- delays ------------------------------------------------------------------

#[tokio::test]
async fn delayed_job_becomes_ready_exactly_at_its_deadline() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(put(0, 5, 10, "a"), "INSERTED 1\r\n").await;
    c.roundtrip("peek-ready\r\n", "NOT_FOUND\r\n").await;
    server.advance_secs(4);
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "delayed", 0, 5, 10)
            .age(4)
            .time_left(1)
            .reply(),
    )
    .await;
    c.roundtrip("reserve-with-timeout 0\r\n", "TIMED_OUT\r\n")
        .await;
    server.advance(Duration::from_millis(999));
    c.roundtrip("peek-ready\r\n", "NOT_FOUND\r\n").await;
    server.advance(Duration::from_millis(1));
    c.roundtrip("peek-ready\r\n", "FOUND 1 1\r\na\r\n").await;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "ready", 0, 5, 10).age(5).reply(),
    )
    .await;
    assert_eq!(c.stat("stats\r\n", "total-jobs").await, "1");
}

#[tokio::test]
async fn delayed_job_goes_to_a_blocked_worker_when_due() {
    let server = TestServer::start().await;
    let mut w = server.client().await;
    let mut p = server.client().await;
    w.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    p.roundtrip(put(0, 2, 10, "a"), "INSERTED 1\r\n").await;
    server.advance_secs(1);
    w.expect_silence().await;
    server.advance_secs(1);
    w.expect("RESERVED 1 1\r\na\r\n").await;
}

#[tokio::test]
async fn delayed_jobs_due_together_are_promoted_in_deadline_then_id_order() {
    let server = TestServer::start().await;
    let mut w = server.client().await;
    let mut p = server.client().await;
    w.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    w.expect_silence().await;
    // Same deadline: the lower id goes first, whatever the priority (#400).
    p.send(format!("{}{}", put(100, 1, 10, "lo"), put(1, 1, 10, "hi")))
        .await;
    p.expect("INSERTED 1\r\nINSERTED 2\r\n").await;
    server.advance_secs(1);
    w.expect("RESERVED 1 2\r\nlo\r\n").await;
    p.roundtrip("peek-ready\r\n", "FOUND 2 2\r\nhi\r\n").await;
}

#[tokio::test]
async fn delayed_job_with_the_earlier_deadline_is_promoted_first() {
    let server = TestServer::start().await;
    let mut w = server.client().await;
    let mut p = server.client().await;
    p.send(format!(
        "{}{}",
        put(0, 3, 10, "late"),
        put(0, 2, 10, "soon")
    ))
    .await;
    p.expect("INSERTED 1\r\nINSERTED 2\r\n").await;
    w.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    w.expect_silence().await;
    // Both are due by the time the clock is looked at.
    server.advance_secs(5);
    w.expect("RESERVED 2 4\r\nsoon\r\n").await;
    p.roundtrip("peek-ready\r\n", "FOUND 1 4\r\nlate\r\n").await;
}

#[tokio::test]
async fn release_with_delay_makes_the_job_ready_later() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(put(0, 0, 10, "a"), "INSERTED 1\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    c.roundtrip("release 1 0 3\r\n", "RELEASED\r\n").await;
    c.roundtrip("reserve-with-timeout 0\r\n", "TIMED_OUT\r\n")
        .await;
    server.advance_secs(3);
    c.roundtrip("reserve-with-timeout 0\r\n", "RESERVED 1 1\r\na\r\n")
        .await;
}

// ----- TTR ----------------------------------------------------------------------

#[tokio::test]
async fn ttr_expiry_returns_the_job_to_ready_and_counts_a_timeout() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.roundtrip(put(7, 0, 2, "a"), "INSERTED 1\r\n").await;
    a.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    server.advance_secs(1);
    a.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "reserved", 7, 0, 2)
            .age(1)
            .time_left(1)
            .reserves(1)
            .reply(),
    )
    .await;
    server.advance_secs(1);
    b.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "ready", 7, 0, 2)
            .age(2)
            .reserves(1)
            .timeouts(1)
            .reply(),
    )
    .await;
    assert_eq!(b.stat("stats\r\n", "job-timeouts").await, "1");
    b.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    a.roundtrip("delete 1\r\n", "NOT_FOUND\r\n").await;
}

#[tokio::test]
async fn ttr_expiry_hands_the_job_to_a_blocked_worker() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.roundtrip(put(0, 0, 3, "a"), "INSERTED 1\r\n").await;
    a.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    b.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    server.advance_secs(2);
    b.expect_silence().await;
    server.advance_secs(1);
    b.expect("RESERVED 1 1\r\na\r\n").await;
}

#[tokio::test]
async fn touch_restarts_the_full_ttr_from_now() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(put(0, 0, 3, "a"), "INSERTED 1\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    server.advance_secs(2);
    c.roundtrip("touch 1\r\n", "TOUCHED\r\n").await;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "reserved", 0, 0, 3)
            .age(2)
            .time_left(3)
            .reserves(1)
            .reply(),
    )
    .await;
    server.advance_secs(2);
    c.roundtrip("touch 1\r\n", "TOUCHED\r\n").await;
    server.advance_secs(3);
    c.roundtrip("touch 1\r\n", "NOT_FOUND\r\n").await;
    c.roundtrip("peek-ready\r\n", "FOUND 1 1\r\na\r\n").await;
}

// ----- DEADLINE_SOON -------------------------------------------------------------

#[tokio::test]
async fn ttr_of_one_puts_the_worker_in_the_margin_at_once() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!("{}{}", put(0, 0, 1, "a"), put(0, 0, 0, "b")))
        .await;
    c.expect("INSERTED 1\r\nINSERTED 2\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    // A ready job is still handed out inside the margin (#646).
    c.roundtrip("reserve\r\n", "RESERVED 2 1\r\nb\r\n").await;
    c.roundtrip("reserve\r\n", "DEADLINE_SOON\r\n").await;
    c.roundtrip("reserve-with-timeout 5\r\n", "DEADLINE_SOON\r\n")
        .await;
    c.roundtrip("reserve-with-timeout 0\r\n", "DEADLINE_SOON\r\n")
        .await;
    // The jobs stay reserved; ttr 0 became 1.
    c.roundtrip(
        "stats-job 2\r\n",
        JobStats::new(2, "reserved", 0, 0, 1)
            .time_left(1)
            .reserves(1)
            .reply(),
    )
    .await;
    c.roundtrip("release 1 0 0\r\n", "RELEASED\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
}

#[tokio::test]
async fn deadline_soon_arrives_while_blocked_in_reserve() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(put(0, 0, 3, "a"), "INSERTED 1\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    c.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    server.advance_secs(1);
    c.expect_silence().await;
    server.advance(Duration::from_millis(999));
    c.expect_silence().await;
    server.advance(Duration::from_millis(1));
    c.expect("DEADLINE_SOON\r\n").await;
    c.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "reserved", 0, 0, 3)
            .age(2)
            .time_left(1)
            .reserves(1)
            .reply(),
    )
    .await;
    assert_eq!(c.stat("stats\r\n", "current-waiting").await, "0");
}

#[tokio::test]
async fn deadline_soon_comes_before_a_longer_reserve_timeout() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(put(0, 0, 5, "a"), "INSERTED 1\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    c.send("reserve-with-timeout 10\r\n").await;
    server.wait_for_waiters(1).await;
    server.advance_secs(3);
    c.expect_silence().await;
    server.advance_secs(1);
    c.expect("DEADLINE_SOON\r\n").await;
}

#[tokio::test]
async fn reserve_timeout_comes_before_a_later_margin() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(put(0, 0, 10, "a"), "INSERTED 1\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    c.send("reserve-with-timeout 2\r\n").await;
    server.wait_for_waiters(1).await;
    server.advance_secs(1);
    c.expect_silence().await;
    server.advance_secs(1);
    c.expect("TIMED_OUT\r\n").await;
}

#[tokio::test]
async fn deadline_soon_with_a_ready_job_only_in_a_paused_tube() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!("{}{}", put(0, 0, 1, "a"), put(0, 0, 1, "b")))
        .await;
    c.expect("INSERTED 1\r\nINSERTED 2\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    c.roundtrip("pause-tube default 10\r\n", "PAUSED\r\n").await;
    // A ready job exists (pause is not considered), so the reserve waits,
    // and its timer finds the worker inside the margin.
    c.roundtrip("reserve-with-timeout 0\r\n", "DEADLINE_SOON\r\n")
        .await;
    c.roundtrip("reserve-with-timeout 5\r\n", "DEADLINE_SOON\r\n")
        .await;
    c.roundtrip("reserve\r\n", "DEADLINE_SOON\r\n").await;
}

#[tokio::test]
async fn reserve_job_never_answers_deadline_soon() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!("{}{}", put(0, 0, 1, "a"), put(0, 0, 1, "b")))
        .await;
    c.expect("INSERTED 1\r\nINSERTED 2\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    c.roundtrip("reserve-job 2\r\n", "RESERVED 2 1\r\nb\r\n")
        .await;
    c.roundtrip("reserve-with-timeout 0\r\n", "DEADLINE_SOON\r\n")
        .await;
}

// ----- reserve-with-timeout ----------------------------------------------------------

#[tokio::test]
async fn reserve_with_timeout_zero_answers_at_once() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip("reserve-with-timeout 0\r\n", "TIMED_OUT\r\n")
        .await;
    c.roundtrip(put(0, 0, 10, "a"), "INSERTED 1\r\n").await;
    c.roundtrip("reserve-with-timeout 0\r\n", "RESERVED 1 1\r\na\r\n")
        .await;
    assert_eq!(c.stat("stats\r\n", "current-waiting").await, "0");
}

#[tokio::test]
async fn reserve_with_timeout_n_is_silent_until_n_seconds() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut d = server.client().await;
    c.send("reserve-with-timeout 3\r\n").await;
    server.wait_for_waiters(1).await;
    c.expect_silence().await;
    assert_eq!(d.stat("stats\r\n", "current-waiting").await, "1");
    server.advance_secs(2);
    c.expect_silence().await;
    server.advance(Duration::from_millis(999));
    c.expect_silence().await;
    server.advance(Duration::from_millis(1));
    c.expect("TIMED_OUT\r\n").await;
    assert_eq!(d.stat("stats\r\n", "current-waiting").await, "0");
}

#[tokio::test]
async fn reserve_with_timeout_gets_a_job_put_before_the_timeout() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut p = server.client().await;
    c.send("reserve-with-timeout 3\r\n").await;
    server.wait_for_waiters(1).await;
    server.advance_secs(2);
    p.roundtrip(put(0, 0, 10, "a"), "INSERTED 1\r\n").await;
    c.expect("RESERVED 1 1\r\na\r\n").await;
    server.advance_secs(5);
    c.expect_silence().await;
}

#[tokio::test]
async fn another_watcher_does_not_stop_a_reserve_timing_out() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.send("reserve-with-timeout 1\r\n").await;
    server.wait_for_waiters(1).await;
    b.send("reserve\r\n").await;
    server.wait_for_waiters(2).await;
    b.expect_silence().await;
    server.advance_secs(1);
    a.expect("TIMED_OUT\r\n").await;
    b.expect_silence().await;
}

// ----- pause ------------------------------------------------------------------

#[tokio::test]
async fn paused_tube_hands_out_nothing_until_the_pause_ends() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = server.client().await;
    c.roundtrip(put(0, 0, 10, "a"), "INSERTED 1\r\n").await;
    c.roundtrip("pause-tube default 2\r\n", "PAUSED\r\n").await;
    w.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    w.expect_silence().await;
    server.advance_secs(1);
    let mut t = TubeStats::new("default");
    t.urgent = 1;
    t.ready = 1;
    t.total_jobs = 1;
    t.using = 2;
    t.watching = 2;
    t.waiting = 1;
    t.cmd_pause = 1;
    t.pause = 2;
    t.pause_left = 1;
    c.roundtrip("stats-tube default\r\n", t.reply()).await;
    w.expect_silence().await;
    server.advance_secs(1);
    w.expect("RESERVED 1 1\r\na\r\n").await;
    // Once the pause is over, pause and pause-time-left read 0.
    let mut t = TubeStats::new("default");
    t.reserved = 1;
    t.total_jobs = 1;
    t.using = 2;
    t.watching = 2;
    t.cmd_pause = 1;
    c.roundtrip("stats-tube default\r\n", t.reply()).await;
}

#[tokio::test]
async fn pause_zero_ends_a_pause_on_the_next_tick() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = server.client().await;
    c.roundtrip(put(0, 0, 10, "a"), "INSERTED 1\r\n").await;
    c.roundtrip("pause-tube default 86400\r\n", "PAUSED\r\n")
        .await;
    w.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    w.expect_silence().await;
    c.roundtrip("pause-tube default 0\r\n", "PAUSED\r\n").await;
    // 0 becomes 1 ns: the next tick un-pauses and wakes the waiter.
    server.advance(Duration::from_nanos(1));
    w.expect("RESERVED 1 1\r\na\r\n").await;
}

#[tokio::test]
async fn pausing_again_replaces_the_pause() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = server.client().await;
    c.roundtrip(put(0, 0, 10, "a"), "INSERTED 1\r\n").await;
    c.roundtrip("pause-tube default 100\r\n", "PAUSED\r\n")
        .await;
    c.roundtrip("pause-tube default 2\r\n", "PAUSED\r\n").await;
    w.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    server.advance_secs(1);
    w.expect_silence().await;
    server.advance_secs(1);
    w.expect("RESERVED 1 1\r\na\r\n").await;
}

#[tokio::test]
async fn delayed_jobs_are_promoted_in_a_paused_tube() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip(put(0, 1, 10, "a"), "INSERTED 1\r\n").await;
    c.roundtrip("pause-tube default 10\r\n", "PAUSED\r\n").await;
    server.advance_secs(1);
    c.roundtrip("peek-ready\r\n", "FOUND 1 1\r\na\r\n").await;
    c.roundtrip("reserve-with-timeout 0\r\n", "TIMED_OUT\r\n")
        .await;
}

// ----- waiters ------------------------------------------------------------------

#[tokio::test]
async fn the_longest_waiter_gets_the_job() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut p = server.client().await;
    a.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    a.expect_silence().await;
    b.send("reserve\r\n").await;
    server.wait_for_waiters(2).await;
    b.expect_silence().await;
    p.roundtrip(put(0, 0, 10, "x"), "INSERTED 1\r\n").await;
    a.expect("RESERVED 1 1\r\nx\r\n").await;
    b.expect_silence().await;
    p.roundtrip(put(0, 0, 10, "y"), "INSERTED 2\r\n").await;
    b.expect("RESERVED 2 1\r\ny\r\n").await;
}

/// Strictly longest-waiting first, even for a newcomer arriving after a job
/// was handed out (beanstalkd's rotating take index would serve C before B;
/// protocol.md, deliberate differences).
#[tokio::test]
async fn waiters_are_served_strictly_longest_waiting_first() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    let mut p = server.client().await;
    a.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    a.expect_silence().await;
    b.send("reserve\r\n").await;
    server.wait_for_waiters(2).await;
    b.expect_silence().await;
    p.roundtrip(put(0, 0, 10, "x"), "INSERTED 1\r\n").await;
    a.expect("RESERVED 1 1\r\nx\r\n").await;
    c.send("reserve\r\n").await;
    server.wait_for_waiters(2).await;
    c.expect_silence().await;
    p.roundtrip(put(0, 0, 10, "y"), "INSERTED 2\r\n").await;
    b.expect("RESERVED 2 1\r\ny\r\n").await;
    c.expect_silence().await;
    p.roundtrip(put(0, 0, 10, "z"), "INSERTED 3\r\n").await;
    c.expect("RESERVED 3 1\r\nz\r\n").await;
}

#[tokio::test]
async fn a_waiter_gets_a_job_from_any_tube_it_watches() {
    let server = TestServer::start().await;
    let mut w1 = server.client().await;
    let mut w2 = server.client().await;
    let mut p = server.client().await;
    w1.roundtrip("watch a\r\n", "WATCHING 2\r\n").await;
    w2.roundtrip("watch b\r\n", "WATCHING 2\r\n").await;
    w1.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    w2.send("reserve\r\n").await;
    server.wait_for_waiters(2).await;
    w1.expect_silence().await;
    p.roundtrip(
        format!("use b\r\n{}", put(0, 0, 10, "x")),
        "USING b\r\nINSERTED 1\r\n",
    )
    .await;
    w2.expect("RESERVED 1 1\r\nx\r\n").await;
    w1.expect_silence().await;
    let mut t = TubeStats::new("a");
    t.watching = 1;
    t.waiting = 1;
    p.roundtrip("stats-tube a\r\n", t.reply()).await;
}

// ----- disconnect, quit, half-close ---------------------------------------------------

#[tokio::test]
async fn disconnect_returns_reservations_at_once() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.roundtrip(put(9, 0, 100, "x"), "INSERTED 1\r\n").await;
    a.roundtrip("reserve\r\n", "RESERVED 1 1\r\nx\r\n").await;
    b.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    b.expect_silence().await;
    drop(a);
    b.expect("RESERVED 1 1\r\nx\r\n").await;
    // No timeout or release is counted, the priority is kept.
    b.roundtrip(
        "stats-job 1\r\n",
        JobStats::new(1, "reserved", 9, 0, 100)
            .time_left(100)
            .reserves(2)
            .reply(),
    )
    .await;
}

#[tokio::test]
async fn quit_returns_reservations_at_once() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.roundtrip(put(0, 0, 100, "x"), "INSERTED 1\r\n").await;
    a.roundtrip("reserve\r\n", "RESERVED 1 1\r\nx\r\n").await;
    b.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    b.expect_silence().await;
    a.send("quit\r\n").await;
    a.expect_closed().await;
    b.expect("RESERVED 1 1\r\nx\r\n").await;
}

#[tokio::test]
async fn disconnect_returns_reservations_in_the_order_they_were_made() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    // Job 1 has the later TTR deadline but was reserved first.
    a.send(format!("{}{}", put(0, 0, 100, "x"), put(0, 0, 10, "y")))
        .await;
    a.expect("INSERTED 1\r\nINSERTED 2\r\n").await;
    a.roundtrip("reserve\r\n", "RESERVED 1 1\r\nx\r\n").await;
    a.roundtrip("reserve\r\n", "RESERVED 2 1\r\ny\r\n").await;
    b.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    b.expect_silence().await;
    a.send("quit\r\n").await;
    a.expect_closed().await;
    b.expect("RESERVED 1 1\r\nx\r\n").await;
    c.roundtrip("peek-ready\r\n", "FOUND 2 1\r\ny\r\n").await;
}

#[tokio::test]
async fn half_close_while_waiting_gives_timed_out_then_close() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send("reserve\r\n").await;
    server.wait_for_waiters(1).await;
    c.expect_silence().await;
    c.stream.shutdown().await.unwrap();
    c.expect("TIMED_OUT\r\n").await;
    c.expect_closed().await;
    let mut d = server.client().await;
    assert_eq!(d.stat("stats\r\n", "current-waiting").await, "0");
}

#[tokio::test]
async fn half_close_with_a_reserve_with_timeout_gives_timed_out() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send("reserve-with-timeout 100\r\n").await;
    server.wait_for_waiters(1).await;
    c.expect_silence().await;
    c.stream.shutdown().await.unwrap();
    c.expect("TIMED_OUT\r\n").await;
    c.expect_closed().await;
}

/// beanstalkd answers TIMED_OUT, then still runs the commands already
/// received, then closes at end of input.
#[tokio::test]
async fn half_close_while_waiting_still_answers_pipelined_commands() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send("reserve\r\nreserve\r\nlist-tube-used\r\n").await;
    server.wait_for_waiters(1).await;
    c.expect_silence().await;
    c.stream.shutdown().await.unwrap();
    c.expect("TIMED_OUT\r\nTIMED_OUT\r\nUSING default\r\n")
        .await;
    c.expect_closed().await;
}

/// beanstalkd reads on after the client is gone: the put behind the reserve
/// is stored (and uses an id) even though its reply cannot be delivered.
#[tokio::test]
async fn commands_behind_a_blocked_reserve_still_run_when_the_client_closes() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send("reserve\r\nput 0 0 10 1\r\nx\r\n").await;
    server.wait_for_waiters(1).await;
    drop(c);
    server.wait_for_waiters(0).await;
    let mut d = server.client().await;
    d.roundtrip("list-tube-used\r\n", "USING default\r\n").await;
    d.roundtrip("peek 1\r\n", "FOUND 1 1\r\nx\r\n").await;
}

// ----- order ------------------------------------------------------------------

#[tokio::test]
async fn ready_jobs_go_by_priority_then_id_across_watched_tubes() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!(
        "use A\r\n{}use B\r\n{}{}",
        put(5, 0, 10, "A1"),
        put(5, 0, 10, "B1"),
        put(4, 0, 10, "B2")
    ))
    .await;
    c.expect("USING A\r\nINSERTED 1\r\nUSING B\r\nINSERTED 2\r\nINSERTED 3\r\n")
        .await;
    c.roundtrip("watch A\r\nwatch B\r\n", "WATCHING 2\r\nWATCHING 3\r\n")
        .await;
    c.roundtrip("reserve\r\n", "RESERVED 3 2\r\nB2\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 2\r\nA1\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 2 2\r\nB1\r\n").await;
}

#[tokio::test]
async fn a_released_job_goes_back_ahead_of_newer_jobs_of_equal_priority() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!("{}{}", put(1, 0, 10, "a"), put(1, 0, 10, "b")))
        .await;
    c.expect("INSERTED 1\r\nINSERTED 2\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    c.roundtrip("release 1 1 0\r\n", "RELEASED\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    // A new priority moves it behind.
    c.roundtrip("release 1 2 0\r\n", "RELEASED\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 2 1\r\nb\r\n").await;
}

#[tokio::test]
async fn a_timed_out_job_keeps_its_priority_and_place() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(format!("{}{}", put(3, 0, 1, "a"), put(3, 0, 10, "b")))
        .await;
    c.expect("INSERTED 1\r\nINSERTED 2\r\n").await;
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
    server.advance_secs(1);
    c.roundtrip("reserve\r\n", "RESERVED 1 1\r\na\r\n").await;
}
