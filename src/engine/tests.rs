//! Engine unit tests: every timing rule runs on explicit instants, no sleeping.

use super::*;
use crate::protocol::TubeName;

const T0: Time = 1_000 * SECOND;

fn engine() -> Engine {
    Engine::new(
        EngineConfig {
            max_job_size: 65535,
            binlog_max_size: 10_485_760,
            host: HostInfo::fixed(),
        },
        T0,
    )
}

fn tube(name: &str) -> TubeName {
    TubeName::new(name.as_bytes()).unwrap()
}

fn body(s: &str) -> PutBody {
    PutBody::Body(Bytes::from(format!("{s}\r\n")))
}

fn put(pri: u32, delay: u32, ttr: u32, s: &str) -> Command {
    Command::Put {
        pri,
        delay,
        ttr,
        body: body(s),
    }
}

/// Applies and checks invariants; returns the reply (panics on Wait).
fn reply(e: &mut Engine, now: Time, c: ClientId, cmd: Command) -> Reply {
    let out = e.apply(now, c, cmd);
    e.check_invariants();
    match out {
        Outcome::Reply(r) => r,
        Outcome::Wait => panic!("unexpected wait"),
    }
}

fn reserved(id: JobId, s: &str) -> Reply {
    Reply::Reserved {
        id,
        body: Bytes::from(format!("{s}\r\n")),
    }
}

fn wakeups(e: &mut Engine) -> Vec<(ClientId, Reply)> {
    e.take_wakeups().collect()
}

fn stat(yaml: &Reply, key: &str) -> String {
    let Reply::Ok(bytes) = yaml else {
        panic!("not an OK reply: {yaml:?}")
    };
    let text = std::str::from_utf8(bytes).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_string()
}

#[test]
fn ready_order_is_priority_then_id_across_watched_tubes() {
    let mut e = engine();
    let c = e.connect();
    reply(&mut e, T0, c, Command::Use(tube("a")));
    assert_eq!(
        reply(&mut e, T0, c, put(5, 0, 10, "a1")),
        Reply::Inserted(1)
    );
    reply(&mut e, T0, c, Command::Use(tube("b")));
    assert_eq!(
        reply(&mut e, T0, c, put(5, 0, 10, "b1")),
        Reply::Inserted(2)
    );
    assert_eq!(
        reply(&mut e, T0, c, put(4, 0, 10, "b2")),
        Reply::Inserted(3)
    );
    reply(&mut e, T0, c, Command::Watch(tube("a")));
    reply(&mut e, T0, c, Command::Watch(tube("b")));
    assert_eq!(reply(&mut e, T0, c, Command::Reserve), reserved(3, "b2"));
    assert_eq!(reply(&mut e, T0, c, Command::Reserve), reserved(1, "a1"));
    assert_eq!(reply(&mut e, T0, c, Command::Reserve), reserved(2, "b1"));
}

#[test]
fn released_job_keeps_its_place_by_id() {
    let mut e = engine();
    let c = e.connect();
    reply(&mut e, T0, c, put(1, 0, 10, "one"));
    reply(&mut e, T0, c, put(1, 0, 10, "two"));
    assert_eq!(reply(&mut e, T0, c, Command::Reserve), reserved(1, "one"));
    let rel = Command::Release {
        id: 1,
        pri: 1,
        delay: 0,
    };
    assert_eq!(reply(&mut e, T0, c, rel), Reply::Released);
    assert_eq!(reply(&mut e, T0, c, Command::Reserve), reserved(1, "one"));
}

#[test]
fn delayed_job_becomes_ready_exactly_at_its_deadline() {
    let mut e = engine();
    let c = e.connect();
    reply(&mut e, T0, c, put(0, 5, 10, "x"));
    assert_eq!(e.next_deadline(), Some(T0 + 5 * SECOND));
    e.tick(T0 + 5 * SECOND - 1);
    assert_eq!(reply(&mut e, T0, c, Command::PeekReady), Reply::NotFound);
    e.tick(T0 + 5 * SECOND);
    e.check_invariants();
    let found = Reply::Found {
        id: 1,
        body: Bytes::from_static(b"x\r\n"),
    };
    assert_eq!(reply(&mut e, T0 + 5 * SECOND, c, Command::PeekReady), found);
}

#[test]
fn ttr_expiry_returns_job_and_counts_timeout() {
    let mut e = engine();
    let c = e.connect();
    reply(&mut e, T0, c, put(0, 0, 2, "x"));
    assert_eq!(reply(&mut e, T0, c, Command::Reserve), reserved(1, "x"));
    e.tick(T0 + 2 * SECOND - 1);
    let s = reply(&mut e, T0 + SECOND, c, Command::StatsJob(1));
    assert_eq!(stat(&s, "state"), "reserved");
    assert_eq!(stat(&s, "time-left"), "1");
    e.tick(T0 + 2 * SECOND);
    e.check_invariants();
    let s = reply(&mut e, T0 + 2 * SECOND, c, Command::StatsJob(1));
    assert_eq!(stat(&s, "state"), "ready");
    assert_eq!(stat(&s, "timeouts"), "1");
    let s = reply(&mut e, T0, c, Command::Stats);
    assert_eq!(stat(&s, "job-timeouts"), "1");
}

#[test]
fn ttr_zero_becomes_one_and_puts_worker_in_margin() {
    let mut e = engine();
    let c = e.connect();
    reply(&mut e, T0, c, put(0, 0, 0, "x"));
    assert_eq!(
        stat(&reply(&mut e, T0, c, Command::StatsJob(1)), "ttr"),
        "1"
    );
    reply(&mut e, T0, c, Command::Reserve);
    assert_eq!(reply(&mut e, T0, c, Command::Reserve), Reply::DeadlineSoon);
    let rwt = Command::ReserveWithTimeout(5);
    assert_eq!(reply(&mut e, T0, c, rwt), Reply::DeadlineSoon);
    // With a job ready the reserve succeeds despite the margin (#646).
    reply(&mut e, T0, c, put(0, 0, 10, "y"));
    assert_eq!(reply(&mut e, T0, c, Command::Reserve), reserved(2, "y"));
}

#[test]
fn waiting_reserve_gets_deadline_soon_when_margin_arrives() {
    let mut e = engine();
    let c = e.connect();
    reply(&mut e, T0, c, put(0, 0, 3, "x"));
    reply(&mut e, T0, c, Command::Reserve);
    assert_eq!(
        e.apply(T0, c, Command::ReserveWithTimeout(10)),
        Outcome::Wait
    );
    e.tick(T0 + 2 * SECOND - 1);
    assert!(wakeups(&mut e).is_empty());
    e.tick(T0 + 2 * SECOND);
    assert_eq!(wakeups(&mut e), vec![(c, Reply::DeadlineSoon)]);
    e.check_invariants();
    let s = reply(&mut e, T0 + 2 * SECOND, c, Command::StatsJob(1));
    assert_eq!(stat(&s, "state"), "reserved");
}

#[test]
fn reserve_with_timeout_zero_and_n() {
    let mut e = engine();
    let c = e.connect();
    let r0 = Command::ReserveWithTimeout(0);
    assert_eq!(reply(&mut e, T0, c, r0), Reply::TimedOut);
    assert_eq!(
        e.apply(T0, c, Command::ReserveWithTimeout(3)),
        Outcome::Wait
    );
    assert_eq!(stat(&Reply::Ok(e.server_stats(T0)), "current-waiting"), "1");
    e.tick(T0 + 3 * SECOND - 1);
    assert!(wakeups(&mut e).is_empty());
    e.tick(T0 + 3 * SECOND);
    assert_eq!(wakeups(&mut e), vec![(c, Reply::TimedOut)]);
    e.check_invariants();
    assert_eq!(stat(&Reply::Ok(e.server_stats(T0)), "current-waiting"), "0");
}

#[test]
fn longest_waiter_gets_the_next_job() {
    let mut e = engine();
    let (a, b, p) = (e.connect(), e.connect(), e.connect());
    assert_eq!(e.apply(T0, a, Command::Reserve), Outcome::Wait);
    assert_eq!(e.apply(T0, b, Command::Reserve), Outcome::Wait);
    reply(&mut e, T0, p, put(0, 0, 10, "1"));
    assert_eq!(wakeups(&mut e), vec![(a, reserved(1, "1"))]);
    reply(&mut e, T0, p, put(0, 0, 10, "2"));
    assert_eq!(wakeups(&mut e), vec![(b, reserved(2, "2"))]);
}

#[test]
fn disconnect_returns_reservations_and_dispatches() {
    let mut e = engine();
    let (a, b) = (e.connect(), e.connect());
    reply(&mut e, T0, a, put(7, 0, 10, "x"));
    reply(&mut e, T0, a, Command::Reserve);
    assert_eq!(e.apply(T0, b, Command::Reserve), Outcome::Wait);
    e.disconnect(T0, a);
    e.check_invariants();
    assert_eq!(wakeups(&mut e), vec![(b, reserved(1, "x"))]);
    let s = reply(&mut e, T0, b, Command::StatsJob(1));
    assert_eq!(stat(&s, "releases"), "0");
    assert_eq!(stat(&s, "timeouts"), "0");
    assert_eq!(stat(&s, "reserves"), "2");
    assert_eq!(stat(&s, "pri"), "7");
}

#[test]
fn kick_takes_buried_first_and_only_buried() {
    let mut e = engine();
    let c = e.connect();
    for i in 0..2 {
        reply(&mut e, T0, c, put(0, 0, 10, &format!("b{i}")));
        let Reply::Reserved { id, .. } = reply(&mut e, T0, c, Command::Reserve) else {
            panic!()
        };
        assert_eq!(
            reply(&mut e, T0, c, Command::Bury { id, pri: 0 }),
            Reply::Buried
        );
    }
    for _ in 0..3 {
        reply(&mut e, T0, c, put(0, 100, 10, "d"));
    }
    assert_eq!(reply(&mut e, T0, c, Command::Kick(10)), Reply::Kicked(2));
    assert_eq!(reply(&mut e, T0, c, Command::Kick(2)), Reply::Kicked(2));
    assert_eq!(reply(&mut e, T0, c, Command::Kick(10)), Reply::Kicked(1));
    assert_eq!(reply(&mut e, T0, c, Command::Kick(10)), Reply::Kicked(0));
    let s = reply(&mut e, T0, c, Command::StatsJob(3));
    assert_eq!(stat(&s, "kicks"), "1");
    assert_eq!(stat(&s, "delay"), "100");
}

#[test]
fn kick_job_and_reserve_job_work_across_tubes() {
    let mut e = engine();
    let c = e.connect();
    reply(&mut e, T0, c, Command::Use(tube("other")));
    reply(&mut e, T0, c, put(0, 50, 10, "d"));
    reply(&mut e, T0, c, put(0, 0, 10, "r"));
    reply(&mut e, T0, c, Command::Use(tube("default")));
    assert_eq!(reply(&mut e, T0, c, Command::KickJob(2)), Reply::NotFound);
    assert_eq!(reply(&mut e, T0, c, Command::KickJob(1)), Reply::KickedJob);
    assert_eq!(reply(&mut e, T0, c, Command::KickJob(1)), Reply::NotFound);
    assert_eq!(
        reply(&mut e, T0, c, Command::ReserveJob(2)),
        reserved(2, "r")
    );
    assert_eq!(
        reply(&mut e, T0, c, Command::ReserveJob(2)),
        Reply::NotFound
    );
    assert_eq!(
        reply(&mut e, T0, c, Command::ReserveJob(9)),
        Reply::NotFound
    );
}

#[test]
fn delete_rules() {
    let mut e = engine();
    let (a, b) = (e.connect(), e.connect());
    reply(&mut e, T0, a, put(0, 0, 10, "x"));
    reply(&mut e, T0, a, Command::Reserve);
    assert_eq!(reply(&mut e, T0, b, Command::Delete(1)), Reply::NotFound);
    assert_eq!(reply(&mut e, T0, a, Command::Delete(1)), Reply::Deleted);
    assert_eq!(reply(&mut e, T0, a, Command::Delete(1)), Reply::NotFound);
    reply(&mut e, T0, b, put(0, 9, 10, "delayed"));
    assert_eq!(reply(&mut e, T0, a, Command::Delete(2)), Reply::Deleted);
    let s = reply(&mut e, T0, a, Command::StatsTube(tube("default")));
    assert_eq!(stat(&s, "cmd-delete"), "2");
    let s = reply(&mut e, T0, a, Command::Stats);
    assert_eq!(stat(&s, "cmd-delete"), "4");
}

#[test]
fn failed_puts_use_up_ids() {
    let mut e = engine();
    let c = e.connect();
    let bad = Command::Put {
        pri: 0,
        delay: 0,
        ttr: 1,
        body: PutBody::ExpectedCrlf,
    };
    assert_eq!(reply(&mut e, T0, c, bad), Reply::ExpectedCrlf);
    let too_big = Command::Put {
        pri: 0,
        delay: 0,
        ttr: 1,
        body: PutBody::TooBig,
    };
    assert_eq!(reply(&mut e, T0, c, too_big), Reply::JobTooBig);
    assert_eq!(reply(&mut e, T0, c, put(0, 0, 1, "x")), Reply::Inserted(2));
    e.set_draining(true);
    assert_eq!(reply(&mut e, T0, c, put(0, 0, 1, "x")), Reply::Draining);
    e.set_draining(false);
    assert_eq!(reply(&mut e, T0, c, put(0, 0, 1, "x")), Reply::Inserted(4));
    let s = reply(&mut e, T0, c, Command::Stats);
    assert_eq!(stat(&s, "cmd-put"), "5");
    assert_eq!(stat(&s, "total-jobs"), "2");
}

#[test]
fn pause_blocks_reserve_until_it_ends() {
    let mut e = engine();
    let (w, p) = (e.connect(), e.connect());
    let pause = Command::PauseTube {
        tube: tube("default"),
        delay: 10,
    };
    assert_eq!(reply(&mut e, T0, p, pause), Reply::Paused);
    reply(&mut e, T0, p, put(0, 0, 10, "x"));
    assert_eq!(e.apply(T0, w, Command::Reserve), Outcome::Wait);
    let s = reply(
        &mut e,
        T0 + SECOND / 2,
        p,
        Command::StatsTube(tube("default")),
    );
    assert_eq!(
        (stat(&s, "pause"), stat(&s, "pause-time-left")),
        ("10".into(), "9".into())
    );
    e.tick(T0 + 10 * SECOND - 1);
    assert!(wakeups(&mut e).is_empty());
    e.tick(T0 + 10 * SECOND);
    assert_eq!(wakeups(&mut e), vec![(w, reserved(1, "x"))]);
    let s = reply(
        &mut e,
        T0 + 10 * SECOND,
        p,
        Command::StatsTube(tube("default")),
    );
    assert_eq!(stat(&s, "pause"), "0");
}

#[test]
fn pause_zero_unpauses_on_next_tick() {
    let mut e = engine();
    let (w, p) = (e.connect(), e.connect());
    let pause = |d| Command::PauseTube {
        tube: tube("default"),
        delay: d,
    };
    reply(&mut e, T0, p, pause(86400));
    reply(&mut e, T0, p, put(0, 0, 10, "x"));
    assert_eq!(e.apply(T0, w, Command::Reserve), Outcome::Wait);
    reply(&mut e, T0, p, pause(0));
    e.tick(T0 + 1);
    assert_eq!(wakeups(&mut e), vec![(w, reserved(1, "x"))]);
}

#[test]
fn unused_tubes_vanish_and_list_order_swaps() {
    let mut e = engine();
    let c = e.connect();
    for t in ["a", "b", "c"] {
        reply(&mut e, T0, c, Command::Watch(tube(t)));
    }
    let list = |e: &mut Engine| reply(e, T0, c, Command::ListTubes);
    assert_eq!(
        list(&mut e),
        Reply::Ok(Bytes::from_static(b"---\n- default\n- a\n- b\n- c\n"))
    );
    assert_eq!(
        reply(&mut e, T0, c, Command::Ignore(tube("a"))),
        Reply::Watching(3)
    );
    assert_eq!(
        list(&mut e),
        Reply::Ok(Bytes::from_static(b"---\n- default\n- c\n- b\n"))
    );
    let watched = reply(&mut e, T0, c, Command::ListTubesWatched);
    assert_eq!(
        watched,
        Reply::Ok(Bytes::from_static(b"---\n- default\n- c\n- b\n"))
    );
    assert_eq!(
        reply(&mut e, T0, c, Command::StatsTube(tube("a"))),
        Reply::NotFound
    );
    // default survives being ignored by everyone
    assert_eq!(
        reply(&mut e, T0, c, Command::Ignore(tube("default"))),
        Reply::Watching(2)
    );
    reply(&mut e, T0, c, Command::Use(tube("c")));
    assert!(matches!(
        reply(&mut e, T0, c, Command::StatsTube(tube("default"))),
        Reply::Ok(_)
    ));
}

#[test]
fn ignore_rules() {
    let mut e = engine();
    let c = e.connect();
    assert_eq!(
        reply(&mut e, T0, c, Command::Ignore(tube("default"))),
        Reply::NotIgnored
    );
    assert_eq!(
        reply(&mut e, T0, c, Command::Ignore(tube("nope"))),
        Reply::Watching(1)
    );
    assert_eq!(
        reply(&mut e, T0, c, Command::Watch(tube("x"))),
        Reply::Watching(2)
    );
    assert_eq!(
        reply(&mut e, T0, c, Command::Watch(tube("x"))),
        Reply::Watching(2)
    );
}

#[test]
fn touch_restarts_the_full_ttr() {
    let mut e = engine();
    let c = e.connect();
    reply(&mut e, T0, c, put(0, 0, 10, "x"));
    reply(&mut e, T0, c, Command::Reserve);
    let t = T0 + 8 * SECOND;
    assert_eq!(reply(&mut e, t, c, Command::Touch(1)), Reply::Touched);
    e.tick(T0 + 10 * SECOND);
    let s = reply(&mut e, T0 + 10 * SECOND, c, Command::StatsJob(1));
    assert_eq!(
        (stat(&s, "state"), stat(&s, "time-left")),
        ("reserved".into(), "8".into())
    );
    e.tick(t + 10 * SECOND);
    let s = reply(&mut e, t + 10 * SECOND, c, Command::StatsJob(1));
    assert_eq!(stat(&s, "state"), "ready");
}

#[test]
fn stats_counts_producers_workers_and_urgent() {
    let mut e = engine();
    let (a, b) = (e.connect(), e.connect());
    reply(&mut e, T0, a, put(1023, 0, 10, "u"));
    reply(&mut e, T0, a, put(1024, 0, 10, "n"));
    reply(&mut e, T0, b, Command::ReserveWithTimeout(0));
    let s = reply(&mut e, T0, b, Command::Stats);
    assert_eq!(stat(&s, "current-jobs-urgent"), "0");
    assert_eq!(stat(&s, "current-jobs-ready"), "1");
    assert_eq!(stat(&s, "current-producers"), "1");
    assert_eq!(stat(&s, "current-workers"), "1");
    assert_eq!(stat(&s, "current-connections"), "2");
    e.disconnect(T0, a);
    let s = reply(&mut e, T0, b, Command::Stats);
    assert_eq!(stat(&s, "current-producers"), "0");
    assert_eq!(stat(&s, "current-connections"), "1");
    assert_eq!(stat(&s, "total-connections"), "2");
}

#[test]
fn late_tick_processes_events_in_time_order() {
    let mut e = engine();
    let (w, p) = (e.connect(), e.connect());
    reply(&mut e, T0, p, put(0, 8, 10, "late"));
    assert_eq!(
        e.apply(T0, w, Command::ReserveWithTimeout(5)),
        Outcome::Wait
    );
    // One tick long after both deadlines: the timeout came first.
    e.tick(T0 + 20 * SECOND);
    assert_eq!(wakeups(&mut e), vec![(w, Reply::TimedOut)]);
    e.check_invariants();
}

/// A client watching more than `WIDE_WATCH` tubes takes the wide paths.
fn watch_many(e: &mut Engine, c: ClientId, n: usize) {
    for i in 0..n {
        reply(e, T0, c, Command::Watch(tube(&format!("t{i}"))));
    }
}

#[test]
fn wide_watcher_reserves_the_best_job_across_its_tubes() {
    let mut e = engine();
    let (w, p) = (e.connect(), e.connect());
    watch_many(&mut e, w, 40);
    for (t, pri) in [("t3", 9), ("t39", 2), ("unwatched", 1), ("t7", 2)] {
        reply(&mut e, T0, p, Command::Use(tube(t)));
        reply(&mut e, T0, p, put(pri, 0, 10, t));
    }
    let pause = Command::PauseTube {
        tube: tube("t39"),
        delay: 100,
    };
    reply(&mut e, T0, p, pause);
    // t39's job (pri 2, id 2) is paused and "unwatched" is not watched.
    assert_eq!(reply(&mut e, T0, w, Command::Reserve), reserved(4, "t7"));
    assert_eq!(reply(&mut e, T0, w, Command::Reserve), reserved(1, "t3"));
    for id in [4, 1] {
        assert_eq!(reply(&mut e, T0, w, Command::Delete(id)), Reply::Deleted);
    }
    assert_eq!(e.apply(T0, w, Command::Reserve), Outcome::Wait);
    e.check_invariants();
    e.tick(T0 + 100 * SECOND);
    assert_eq!(wakeups(&mut e), vec![(w, reserved(2, "t39"))]);
    e.check_invariants();
}

#[test]
fn wide_and_narrow_waiters_are_served_in_waiting_order() {
    let mut e = engine();
    let (narrow1, wide, narrow2, p) = (e.connect(), e.connect(), e.connect(), e.connect());
    watch_many(&mut e, wide, 40);
    reply(&mut e, T0, narrow1, Command::Watch(tube("t5")));
    reply(&mut e, T0, narrow2, Command::Watch(tube("t5")));
    assert_eq!(e.apply(T0, narrow1, Command::Reserve), Outcome::Wait);
    assert_eq!(e.apply(T0, wide, Command::Reserve), Outcome::Wait);
    assert_eq!(e.apply(T0, narrow2, Command::Reserve), Outcome::Wait);
    e.check_invariants();
    let s = reply(&mut e, T0, p, Command::StatsTube(tube("t5")));
    assert_eq!(stat(&s, "current-waiting"), "3");
    reply(&mut e, T0, p, Command::Use(tube("t5")));
    for (i, who) in [narrow1, wide, narrow2].into_iter().enumerate() {
        let id = i as u64 + 1;
        reply(&mut e, T0, p, put(0, 0, 10, "x"));
        assert_eq!(wakeups(&mut e), vec![(who, reserved(id, "x"))]);
        e.check_invariants();
    }
    // A job in a tube only the wide client watches goes to it.
    assert_eq!(e.apply(T0, wide, Command::Reserve), Outcome::Wait);
    reply(&mut e, T0, p, Command::Use(tube("t33")));
    reply(&mut e, T0, p, put(0, 0, 10, "y"));
    assert_eq!(wakeups(&mut e), vec![(wide, reserved(4, "y"))]);
    e.disconnect(T0, wide);
    e.check_invariants();
}

#[test]
fn an_idle_store_finishes_resizing_on_the_timer() {
    let mut e = engine();
    let c = e.connect();
    for i in 0..20_000 {
        reply_fast(&mut e, c, put(0, 0, 60, &format!("job {i}")));
    }
    // Whatever the puts left under way (a bigger table being built) is
    // finished by the timer alone.
    run_timers_until_idle(&mut e);
    assert!(!e.jobs.has_upkeep());
    // Drain until a shrink starts, then stop sending commands.
    let mut id = 0;
    while !e.jobs.has_upkeep() {
        id += 1;
        assert_eq!(reply_fast(&mut e, c, Command::Delete(id)), Reply::Deleted);
    }
    assert_eq!(e.next_deadline(), Some(T0 + STORE_UPKEEP_EVERY));
    let before = e.memory_held();
    let ticks = run_timers_until_idle(&mut e);
    e.check_invariants();
    assert!(ticks > 1, "one tick did it all: {ticks}");
    assert!(
        e.memory_held() * 10 < before * 7,
        "held {before} -> {}",
        e.memory_held()
    );
    let left = Reply::Found {
        id: 20_000,
        body: Bytes::from("job 19999\r\n"),
    };
    assert_eq!(reply(&mut e, T0, c, Command::Peek(20_000)), left);
}

/// Applies without the invariant check (a full check per command would make
/// a 20k-job test quadratic).
fn reply_fast(e: &mut Engine, c: ClientId, cmd: Command) -> Reply {
    match e.apply(T0, c, cmd) {
        Outcome::Reply(r) => r,
        Outcome::Wait => panic!("unexpected wait"),
    }
}

/// Runs every deadline in turn until none is left; returns the ticks.
fn run_timers_until_idle(e: &mut Engine) -> usize {
    let mut ticks = 0;
    while let Some(at) = e.next_deadline() {
        e.tick(at);
        ticks += 1;
        assert!(ticks < 10_000, "the timer never settles");
    }
    ticks
}
