//! Micro-benchmarks of the per-entry work: frame encoding and decoding, the canonical
//! encoding plus SHA-256, and offline verification in entries per second.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use witness_bench::generate::Generator;
use witness_daemon::format::chain::{GENESIS, hash_row};
use witness_daemon::format::row::{self, Origin};
use witness_daemon::format::schema::{self, Durability};
use witness_protocol::limits::MAX_FRAME_LEN;
use witness_protocol::{Ack, Append, OnFull, Request, RequestFrame, frame};

fn append_of(n: usize) -> RequestFrame {
    let mut generator = Generator::new(3);
    RequestFrame {
        id: 1,
        request: Request::Append(Append {
            ack: Ack::Committed,
            on_full: OnFull::Wait,
            producer: None,
            entries: (0..n).map(|_| generator.entry()).collect(),
        }),
    }
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    let request = append_of(64);
    group.throughput(Throughput::Elements(64));
    let mut bytes = Vec::new();
    group.bench_function("encode 64-entry append", |b| {
        b.iter(|| {
            bytes.clear();
            frame::encode(&request, MAX_FRAME_LEN, &mut bytes).unwrap();
        })
    });
    let mut encoded = Vec::new();
    frame::encode(&request, MAX_FRAME_LEN, &mut encoded).unwrap();
    group.bench_function("decode 64-entry append", |b| {
        b.iter(|| {
            frame::decode::<RequestFrame>(&encoded, MAX_FRAME_LEN)
                .unwrap()
                .unwrap()
        })
    });
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let mut generator = Generator::new(5);
    let entry = generator.entry();
    let origin = Origin {
        ts: 1,
        pid: Some(2),
        uid: Some(3),
        gid: Some(4),
    };
    let mut scratch = Vec::new();
    let mut group = c.benchmark_group("chain");
    group.throughput(Throughput::Elements(1));
    group.bench_function("canonical encoding + SHA-256 of one entry", |b| {
        b.iter(|| {
            hash_row(
                &GENESIS,
                &row::values(7, &entry, &origin, None, None),
                &mut scratch,
            )
        })
    });
    group.finish();
}

fn verification(c: &mut Criterion) {
    let n = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verify.db");
    let mut connection = schema::open_writer(&path, Durability::Normal, 8192).unwrap();
    let mut generator = Generator::new(9);
    let entries: Vec<_> = (0..n).map(|_| generator.entry()).collect();
    witness_bench::write_batches(&mut connection, &entries, 4096, |_| {}).unwrap();
    connection
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(connection);
    let mut group = c.benchmark_group("verify");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("offline verify of 200k entries", |b| {
        b.iter_batched(
            || schema::open_reader(&path).unwrap(),
            |reader| witness_daemon::format::verify::verify(&reader, Default::default()).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Pricing one append's worth of costed entries, as the intake does before the writer: a
/// known model (the memo's hit, then the arithmetic and `priced_by`), and one with no price.
fn pricing(c: &mut Criterion) {
    use witness_daemon::prices::Book;
    use witness_protocol::Cost;
    let book = Book::built_in();
    let date = 1_780_000_000_000_000_000;
    let mut group = c.benchmark_group("pricing");
    group.throughput(Throughput::Elements(1));
    for model in ["claude-sonnet-4-5-20250929", "my-finetune"] {
        let cost = Cost::tokens(1200, 300).model(model).cache_read_tokens(200);
        group.bench_function(model, |b| {
            b.iter_batched(
                || cost.clone(),
                |mut cost| {
                    book.price(&mut cost, None, date);
                    cost
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, frames, hashing, verification, pricing);
criterion_main!(benches);
