//! Client-side hot paths: encoding records into batches, compressing them, partitioning
//! keys. `cargo bench -p spool-client --bench client`.
#![allow(clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use spool_client::{Compression, partition_for_key};
use spool_log::batch::{BatchBuilder, BatchOptions};

const RECORDS: usize = 600;

fn fill(builder: &mut BatchBuilder, value: &[u8]) {
    for i in 0..RECORDS {
        let key = (i as u64).to_be_bytes();
        builder.append(1_700_000_000_000 + i as i64, Some(&key), Some(value), &[]);
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch-encode");
    let value = vec![0x42u8; 100];
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("600x100B-records", |b| {
        b.iter(|| {
            let mut builder = BatchBuilder::with_capacity(80 * 1024, BatchOptions::default());
            fill(&mut builder, &value);
            builder.finish()
        });
    });
    // Realistic values compress: JSON-like text with repetition.
    let text = br#"{"type":"OrderCreated","order_id":"order-00042","amount_cents":1294}"#.repeat(2);
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        group.bench_with_input(
            BenchmarkId::new("finish", format!("{codec:?}")),
            &codec,
            |b, &codec| {
                b.iter_batched(
                    || {
                        let mut builder =
                            BatchBuilder::with_capacity(120 * 1024, BatchOptions::default());
                        fill(&mut builder, &text);
                        builder
                    },
                    |builder| codec.finish(builder),
                    criterion::BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

fn partitioner(c: &mut Criterion) {
    let mut group = c.benchmark_group("partitioner");
    let keys: Vec<String> = (0..1024).map(|i| format!("customer-{i:08}")).collect();
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("murmur2-16B-keys", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| partition_for_key(k.as_bytes(), 12))
                .sum::<u32>()
        });
    });
    group.finish();
}

criterion_group!(benches, encode, partitioner);
criterion_main!(benches);
