//! `spool bench transactions`: transactional producers, each committing transactions of
//! a fixed number of records spread over a topic's partitions, back to back; reports
//! transactions per second and the time from a transaction's first send to its commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use serde_json::json;
use spool_client::{Producer, ProducerConfig, ProducerRecord};

use crate::Context;
use crate::bench::{ensure_topic, new_histogram, progress};

#[derive(Debug, Args)]
pub struct TxnBenchArgs {
    #[arg(long)]
    topic: String,
    /// Partitions to create the topic with if it does not exist.
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Transactions to commit, in all.
    #[arg(long, default_value_t = 10_000)]
    transactions: u64,
    /// Records per transaction, spread round-robin over the partitions.
    #[arg(long, default_value_t = 100)]
    records: u32,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Transactional producers, each running its transactions one after another.
    #[arg(long, default_value_t = 16)]
    producers: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: TxnBenchArgs, context: &Context) -> anyhow::Result<std::process::ExitCode> {
    let client = context.connect().await?;
    ensure_topic(&client, &args.topic, args.partitions).await?;
    let partitions = client.describe_topic(&args.topic).await?.partitions.len() as u32;
    let value = Bytes::from(vec![0x5au8; args.record_size]);
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress("transactions", Arc::clone(&done), args.transactions);
    let producers = args.producers.max(1);
    let per_producer = args.transactions.div_ceil(producers);
    // Unique per run: an id left by an earlier run would first abort its transaction.
    let run_id = std::process::id();
    let mut started = Vec::new();
    for p in 0..producers {
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                transactional_id: Some(format!("bench-{run_id}-{p}")),
                batch_bytes: 1024 * 1024,
                ..ProducerConfig::default()
            },
        );
        producer.init_transactions().await?;
        started.push(producer);
    }
    let start = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for (p, producer) in started.into_iter().enumerate() {
        let first = p as u64 * per_producer;
        let count = per_producer.min(args.transactions.saturating_sub(first));
        let (topic, value, done) = (args.topic.clone(), value.clone(), Arc::clone(&done));
        let records = args.records;
        loops.spawn(async move {
            let mut histogram = new_histogram();
            for t in 0..count {
                let began = Instant::now();
                let txn = producer.transaction().await?;
                for r in 0..records {
                    let partition = (r + t as u32) % partitions;
                    let record = ProducerRecord {
                        topic: topic.clone(),
                        partition: Some(partition),
                        value: Some(value.clone()),
                        ..ProducerRecord::default()
                    };
                    txn.send(record).await?;
                }
                txn.commit().await?;
                let _ = histogram.record(began.elapsed().as_micros() as u64);
                done.fetch_add(1, Ordering::Relaxed);
            }
            producer.close().await;
            anyhow::Ok((count, histogram))
        });
    }
    let mut histogram = new_histogram();
    let mut committed = 0;
    while let Some(result) = loops.join_next().await {
        let (count, h) = result??;
        committed += count;
        histogram.add(&h)?;
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    if let Some(bar) = bar {
        bar.abort();
        eprintln!();
    }
    let per_sec = committed as f64 / elapsed;
    let records_per_sec = per_sec * f64::from(args.records);
    let q = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    if args.json || context.output == crate::Output::Json {
        crate::say!(
            "{}",
            json!({
                "mode": "transactions", "transactions": committed, "records_per_transaction": args.records,
                "partitions": partitions, "producers": producers, "elapsed_s": elapsed,
                "transactions_per_sec": per_sec, "records_per_sec": records_per_sec,
                "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": histogram.max() as f64 / 1000.0,
            })
        );
    } else {
        crate::say!(
            "transactions: {committed} of {} records over {partitions} partitions by {producers} producers in {elapsed:.2} s: {per_sec:.0} transactions/s ({records_per_sec:.0} records/s); send-to-commit ms p50 {:.2} p99 {:.2} max {:.2}",
            args.records,
            q(0.5),
            q(0.99),
            histogram.max() as f64 / 1000.0
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
