//! End-to-end smoke tests over real TCP.
mod common;
use common::TestServer;

#[tokio::test]
async fn put_reserve_delete_roundtrip() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip("put 0 0 10 5\r\nhello\r\n", "INSERTED 1\r\n")
        .await;
    c.roundtrip("reserve\r\n", "RESERVED 1 5\r\nhello\r\n")
        .await;
    c.roundtrip("delete 1\r\n", "DELETED\r\n").await;
    c.roundtrip("delete 1\r\n", "NOT_FOUND\r\n").await;
    server.check_invariants();
}

#[tokio::test]
async fn pipelined_commands_answer_in_order() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send("put 0 0 10 1\r\na\r\nput 0 0 10 1\r\nb\r\nreserve\r\nlist-tube-used\r\nbogus\r\n")
        .await;
    c.expect(
        "INSERTED 1\r\nINSERTED 2\r\nRESERVED 1 1\r\na\r\nUSING default\r\nUNKNOWN_COMMAND\r\n",
    )
    .await;
}

#[tokio::test]
async fn blocked_reserve_gets_job_from_other_connection() {
    let server = TestServer::start().await;
    let mut worker = server.client().await;
    let mut producer = server.client().await;
    worker.send("reserve\r\n").await;
    worker.expect_silence().await;
    producer
        .roundtrip("put 0 0 10 2\r\nhi\r\n", "INSERTED 1\r\n")
        .await;
    worker.expect("RESERVED 1 2\r\nhi\r\n").await;
}

#[tokio::test]
async fn reserve_with_timeout_times_out_on_the_clock() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send("reserve-with-timeout 2\r\n").await;
    c.expect_silence().await;
    server.advance_secs(1);
    c.expect_silence().await;
    server.advance_secs(1);
    c.expect("TIMED_OUT\r\n").await;
    c.roundtrip("list-tube-used\r\n", "USING default\r\n").await;
}

#[tokio::test]
async fn disconnect_releases_reserved_job_to_waiter() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.roundtrip("put 0 0 100 1\r\nx\r\n", "INSERTED 1\r\n")
        .await;
    a.roundtrip("reserve\r\n", "RESERVED 1 1\r\nx\r\n").await;
    b.send("reserve\r\n").await;
    b.expect_silence().await;
    drop(a);
    b.expect("RESERVED 1 1\r\nx\r\n").await;
}

#[tokio::test]
async fn quit_closes_and_drops_pipelined_bytes() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send("quitxyz\r\nput 0 0 1 1\r\nx\r\n").await;
    c.expect_closed().await;
    let mut d = server.client().await;
    assert_eq!(d.stat("stats\r\n", "cmd-put").await, "0");
}

#[tokio::test]
async fn sessions_end_with_a_server_whose_run_is_dropped() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.roundtrip("put 0 0 10 1\r\nx\r\n", "INSERTED 1\r\n").await;
    // The server's task is aborted (its `run` future dropped mid-way): the
    // connection must not go on being served by a server that is gone.
    server.crash();
    c.expect_closed().await;
}
