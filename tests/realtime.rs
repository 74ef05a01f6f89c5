//! The only tests on the real clock: timers fire on time (not early, and
//! promptly). About 2 s in all.
mod common;
use common::TestServer;
use stalkd::clock::Clock;
use stalkd::config::Config;
use std::time::{Duration, Instant};

async fn real_time_server() -> TestServer {
    TestServer::start_with_clock(Config::default(), Clock::system()).await
}

#[tokio::test]
async fn reserve_with_timeout_1_times_out_after_one_second() {
    let server = real_time_server().await;
    let mut c = server.client().await;
    let sent = Instant::now();
    c.send("reserve-with-timeout 1\r\n").await;
    c.expect("TIMED_OUT\r\n").await;
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1050),
        "TIMED_OUT after {took:?}"
    );
}

#[tokio::test]
async fn delayed_job_becomes_reservable_at_its_due_time() {
    let server = real_time_server().await;
    let mut c = server.client().await;
    let sent = Instant::now();
    c.roundtrip("put 0 1 10 1\r\nx\r\n", "INSERTED 1\r\n").await;
    let inserted = sent.elapsed();
    c.send("reserve\r\n").await;
    c.expect("RESERVED 1 1\r\nx\r\n").await;
    let took = sent.elapsed();
    // Due one second after the put was processed, somewhere in [sent, inserted].
    assert!(took >= Duration::from_secs(1), "reserved after {took:?}");
    assert!(
        took < inserted + Duration::from_millis(1050),
        "reserved after {took:?} (put answered after {inserted:?})"
    );
}
