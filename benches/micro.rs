//! Micro-benchmarks: the parser, the codec, the engine's put/reserve/delete
//! cycle and binlog appends under each sync policy.
//!
//! `cargo bench --bench micro` (add `-- <filter>` to pick one). These time
//! single components in-process; `stalkd-bench` (examples/) measures the
//! server over TCP like real clients.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use stalkd::binlog::{self, JobImage, JobState, Journal, Record};
use stalkd::config::SyncPolicy;
use stalkd::engine::{Engine, EngineConfig, HostInfo, JobCounts, Outcome, State, SECOND};
use stalkd::protocol::parse::parse_line;
use stalkd::protocol::{Codec, Command, PutBody, Reply};
use std::hint::black_box;
use std::time::Duration;
use tokio_util::codec::Decoder;

fn parser(c: &mut Criterion) {
    let lines: &[&[u8]] = &[
        b"put 1024 0 60 100",
        b"reserve-with-timeout 5",
        b"delete 123456789",
        b"release 42 1024 10",
        b"use emails.outgoing",
        b"stats-tube default",
        b"pause-tube default 10",
    ];
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("parse_line/mixed", |b| {
        b.iter(|| {
            for line in lines {
                black_box(parse_line(black_box(line)));
            }
        })
    });
    let mut stream = Vec::new();
    for _ in 0..100 {
        stream.extend_from_slice(b"put 0 0 60 100\r\n");
        stream.extend_from_slice(&[b'x'; 100]);
        stream.extend_from_slice(b"\r\nreserve\r\ndelete 1\r\n");
    }
    g.throughput(Throughput::Elements(300));
    g.bench_function("codec/pipelined_put_reserve_delete", |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                let mut codec = Codec::new(65535);
                while let Some(frame) = codec.decode(&mut buf).unwrap() {
                    black_box(frame);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn engine(c: &mut Criterion) {
    let mut e = Engine::new(
        EngineConfig {
            max_job_size: 65535,
            binlog_max_size: 10 << 20,
            host: HostInfo::fixed(),
        },
        SECOND,
    );
    let client = e.connect();
    let body = Bytes::from(vec![b'x'; 102]);
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    g.bench_function("put_reserve_delete", |b| {
        b.iter(|| {
            let put = Command::Put {
                pri: 0,
                delay: 0,
                ttr: 60,
                body: PutBody::Body(body.clone()),
            };
            let Outcome::Reply(Reply::Inserted(id)) = e.apply(SECOND, client, put) else {
                panic!("put failed")
            };
            black_box(e.apply(SECOND, client, Command::Reserve));
            black_box(e.apply(SECOND, client, Command::Delete(id)));
        })
    });
    g.finish();
}

fn binlog_append(c: &mut Criterion) {
    let image = JobImage {
        state: JobState {
            id: 1,
            state: State::Ready,
            pri: 0,
            delay: 0,
            deadline: 0,
            counts: JobCounts::default(),
            bury_seq: 0,
        },
        ttr: 60,
        created: 0,
        tube: "default".into(),
        body: Bytes::from(vec![b'x'; 102]),
    };
    let parent = std::env::var_os("BINLOG_PARENT").unwrap_or_else(|| "/var/tmp".into());
    let mut g = c.benchmark_group("binlog_append");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    for (name, policy, sync_each) in [
        ("never_sync", SyncPolicy::Never, false),
        (
            "sync_50ms",
            SyncPolicy::Every(Duration::from_millis(50)),
            false,
        ),
        ("sync_each_record", SyncPolicy::Every(Duration::ZERO), true),
    ] {
        let dir = std::path::Path::new(&parent)
            .join(format!("stalkd-micro-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut log, _) = binlog::open(&dir, 10 << 20, policy, false).unwrap();
        let mut id = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                id += 1;
                let mut record = image.clone();
                record.state.id = id;
                log.append(&Record::Put(record)).unwrap();
                log.append(&Record::Delete(id)).unwrap();
                log.collect_garbage(usize::MAX);
                if sync_each {
                    log.sync_now().unwrap();
                }
            })
        });
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

criterion_group!(benches, parser, engine, binlog_append);
criterion_main!(benches);
