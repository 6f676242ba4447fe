//! `spool bench produce|consume|e2e`: load generation and measurement, like Kafka's
//! producer-perf-test and the OpenMessaging benchmark. Latencies go into an HDR histogram.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;
use spool_client::{
    Client, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use tokio::sync::mpsc;

use crate::produce::{AcksArg, CompressionArg};
use crate::{Context, Output};

/// End to end, every 16th record carries its send time after this marker.
const STAMP_EVERY: u64 = 16;
const STAMP_MARK: u64 = 0x5350_4f4f_4c5f_5453;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce records as fast as possible (or at --rate) and report throughput and
    /// send-to-acknowledgement latency.
    Produce(LoadArgs),
    /// Read records already in a topic from the beginning and report throughput.
    Consume(ConsumeArgs),
    /// Produce at --rate while consuming, and report produce-to-consume latency.
    E2e(LoadArgs),
    /// How fast a consumer group settles: a cold start, then members joining.
    Group(crate::bench_group::GroupBenchArgs),
    /// Offset commits to one group coordinator: throughput and latency.
    Commits(crate::bench_group::CommitBenchArgs),
    /// Transactional producers committing transactions back to back.
    Transactions(crate::bench_txn::TxnBenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyDistribution {
    /// No key: sticky partitioning.
    None,
    /// Keys 0, 1, 2, ...
    Sequential,
    /// Random 64-bit keys.
    Random,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[arg(long)]
    topic: String,
    /// Records to send.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Partitions to create the topic with if it does not exist.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    #[arg(long, value_enum, default_value_t = KeyDistribution::None)]
    keys: KeyDistribution,
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    acks: AcksArg,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    batch_bytes: usize,
    /// Producer linger in ms (0: batches form while requests are in flight).
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// Concurrent send loops sharing the producer.
    #[arg(long, default_value_t = 1)]
    concurrency: u64,
    /// Number records so retries are never stored twice (with acks=all; on by default,
    /// as in the SDK).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    idempotence: bool,
    /// Records per second to aim for (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    /// Records to read.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// read_committed reads what committed transactions wrote (and everything written
    /// outside transactions), skipping aborted ones.
    #[arg(long, default_value = "read_uncommitted")]
    isolation: spool_client::IsolationLevel,
    #[arg(long)]
    json: bool,
}

struct Report {
    mode: &'static str,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    latency: Option<Histogram<u64>>,
}

impl Report {
    fn print(&self, json: bool) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let records_per_sec = self.records as f64 / secs;
        let mb_per_sec = self.bytes as f64 / secs / 1e6;
        let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        if json {
            let mut value = json!({
                "mode": self.mode, "records": self.records, "bytes": self.bytes,
                "elapsed_s": secs, "records_per_sec": records_per_sec, "mb_per_sec": mb_per_sec,
            });
            if let Some(h) = &self.latency {
                value["p50_ms"] = json!(q(h, 0.5));
                value["p99_ms"] = json!(q(h, 0.99));
                value["p999_ms"] = json!(q(h, 0.999));
                value["max_ms"] = json!(h.max() as f64 / 1000.0);
            }
            crate::say!("{value}");
        } else {
            let mut line = format!(
                "{}: {} records, {} bytes in {secs:.2} s: {records_per_sec:.0} records/s, {mb_per_sec:.1} MB/s",
                self.mode, self.records, self.bytes
            );
            if let Some(h) = &self.latency {
                line.push_str(&format!(
                    "; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
                    q(h, 0.5),
                    q(h, 0.99),
                    q(h, 0.999),
                    h.max() as f64 / 1000.0
                ));
            }
            crate::say!("{line}");
        }
    }
}

pub async fn run(command: BenchCommand, context: &Context) -> anyhow::Result<ExitCode> {
    let command = match command {
        BenchCommand::Group(args) => return crate::bench_group::run(args, context).await,
        BenchCommand::Commits(args) => return crate::bench_group::commits(args, context).await,
        BenchCommand::Transactions(args) => return crate::bench_txn::run(args, context).await,
        other => other,
    };
    let client = context.connect().await?;
    let json = matches!(&command, BenchCommand::Produce(a) | BenchCommand::E2e(a) if a.json)
        || matches!(&command, BenchCommand::Consume(a) if a.json)
        || context.output == Output::Json;
    let report = match command {
        BenchCommand::Produce(args) => {
            ensure_topic(&client, &args.topic, args.partitions).await?;
            produce(client, &args, None).await?
        }
        BenchCommand::Consume(args) => consume(client, &args).await?,
        BenchCommand::E2e(args) => {
            ensure_topic(&client, &args.topic, args.partitions).await?;
            e2e(client, &args).await?
        }
        BenchCommand::Group(_) | BenchCommand::Commits(_) | BenchCommand::Transactions(_) => {
            return Ok(ExitCode::SUCCESS);
        }
    };
    report.print(json);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn ensure_topic(
    client: &Client,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<()> {
    if client.describe_topic(topic).await.is_err() {
        client
            .create_topic(NewTopic {
                name: topic.to_string(),
                partitions,
                ..NewTopic::default()
            })
            .await?;
    }
    Ok(())
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // Microseconds, from 1 us to an hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// Shows progress on a terminal; silent otherwise.
pub(crate) fn progress(
    mode: &'static str,
    done: Arc<AtomicU64>,
    total: u64,
) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let n = done.load(Ordering::Relaxed);
            let rate = n as f64 / start.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\r{mode}: {n}/{total} records ({:.0}%), {rate:.0} records/s   ",
                n as f64 * 100.0 / total.max(1) as f64
            );
            if n >= total {
                eprintln!();
                return;
            }
        }
    }))
}

/// Produces `args.records` records; `stamp` puts the send time into each value (e2e).
async fn produce(
    client: Client,
    args: &LoadArgs,
    stamp: Option<Instant>,
) -> anyhow::Result<Report> {
    let config = ProducerConfig {
        acks: args.acks.into(),
        batch_bytes: args.batch_bytes,
        linger: Duration::from_millis(args.linger_ms),
        compression: args.compression.into(),
        idempotence: args.idempotence,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config);
    let value = Bytes::from(vec![0x5au8; args.record_size.max(16)]);
    let done = Arc::new(AtomicU64::new(0));
    let bar = if stamp.is_none() {
        progress("produce", Arc::clone(&done), args.records)
    } else {
        None
    };
    let (acks_tx, mut acks_rx) = mpsc::channel::<(Instant, spool_client::DeliveryFuture)>(65_536);
    let collector = tokio::spawn({
        let done = Arc::clone(&done);
        async move {
            let mut histogram = new_histogram();
            let mut failures = 0u64;
            while let Some((sent, ack)) = acks_rx.recv().await {
                match ack.await {
                    Ok(_) => {
                        let _ = histogram.record(sent.elapsed().as_micros() as u64);
                    }
                    Err(_) => failures += 1,
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (histogram, failures)
        }
    });
    let start = Instant::now();
    let per_loop = args.records.div_ceil(args.concurrency.max(1));
    let mut loops = tokio::task::JoinSet::new();
    for l in 0..args.concurrency.max(1) {
        let first = l * per_loop;
        let last = (first + per_loop).min(args.records);
        let (producer, value, acks_tx, topic) = (
            producer.clone(),
            value.clone(),
            acks_tx.clone(),
            args.topic.clone(),
        );
        let (keys, rate, concurrency) = (args.keys, args.rate, args.concurrency.max(1));
        loops.spawn(async move {
            let mut random = 0x9E37_79B9_7F4A_7C15u64 ^ first;
            for i in first..last {
                if rate > 0 {
                    // Pace against the schedule, not by sleeping a fixed time per record.
                    let due = start
                        + Duration::from_secs_f64(
                            (i - first) as f64 * concurrency as f64 / rate as f64,
                        );
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let mut record = ProducerRecord {
                    topic: topic.clone(),
                    value: Some(match stamp {
                        // One record in 16 carries its send time: enough samples for
                        // p99.9, without an allocation per record skewing what we measure.
                        Some(base) if i % STAMP_EVERY == 0 => {
                            let mut v = BytesMut::with_capacity(value.len());
                            v.put_u64(STAMP_MARK);
                            v.put_u64(base.elapsed().as_nanos() as u64);
                            v.put_slice(&value[16..]);
                            v.freeze()
                        }
                        _ => value.clone(),
                    }),
                    ..ProducerRecord::default()
                };
                record.key = match keys {
                    KeyDistribution::None => None,
                    KeyDistribution::Sequential => Some(Bytes::from(i.to_string())),
                    KeyDistribution::Random => {
                        random ^= random << 13;
                        random ^= random >> 7;
                        random ^= random << 17;
                        Some(Bytes::copy_from_slice(&random.to_be_bytes()))
                    }
                };
                let sent = Instant::now();
                let ack = producer.send(record).await?;
                // End to end, the consumer proves delivery; only sampled acks are awaited.
                if (stamp.is_none() || i % STAMP_EVERY == 0)
                    && acks_tx.send((sent, ack)).await.is_err()
                {
                    break;
                }
            }
            anyhow::Ok(())
        });
    }
    drop(acks_tx);
    while let Some(result) = loops.join_next().await {
        result??;
    }
    producer.flush().await;
    let (histogram, failures) = collector.await?;
    let elapsed = start.elapsed();
    producer.close().await;
    if let Some(bar) = bar {
        bar.abort();
        eprintln!();
    }
    anyhow::ensure!(failures == 0, "{failures} record(s) were not acknowledged");
    Ok(Report {
        mode: "produce",
        records: args.records,
        bytes: args.records * args.record_size as u64,
        elapsed,
        latency: Some(histogram),
    })
}

async fn consume(client: Client, args: &ConsumeArgs) -> anyhow::Result<Report> {
    let partitions = client.describe_topic(&args.topic).await?.partitions.len() as u32;
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            offset_reset: OffsetReset::Earliest,
            isolation: args.isolation,
            ..ConsumerConfig::default()
        },
    );
    let assignment: Vec<(&str, u32)> = (0..partitions).map(|p| (args.topic.as_str(), p)).collect();
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress("consume", Arc::clone(&done), args.records);
    let start = Instant::now();
    consumer.assign(&assignment).await?;
    let mut bytes = 0u64;
    for n in 0..args.records {
        let record = consumer
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("the stream ended after {n} records"))??;
        bytes += record.value.map_or(0, |v| v.len() as u64);
        if n % 4096 == 0 {
            done.store(n, Ordering::Relaxed);
        }
    }
    let elapsed = start.elapsed();
    if let Some(bar) = bar {
        bar.abort();
        eprintln!();
    }
    Ok(Report {
        mode: "consume",
        records: args.records,
        bytes,
        elapsed,
        latency: None,
    })
}

/// Produces stamped records while a consumer reads them; latency is send to receipt.
async fn e2e(client: Client, args: &LoadArgs) -> anyhow::Result<Report> {
    let partitions = client.describe_topic(&args.topic).await?.partitions.len() as u32;
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    let assignment: Vec<(&str, u32)> = (0..partitions).map(|p| (args.topic.as_str(), p)).collect();
    consumer.assign(&assignment).await?;
    let base = Instant::now();
    let records = args.records;
    let reader = tokio::spawn(async move {
        let mut histogram = new_histogram();
        for n in 0..records {
            let next = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await;
            let Ok(Some(record)) = next else {
                anyhow::bail!("only {n} of {records} records arrived");
            };
            let value = record?.value.unwrap_or_default();
            if value.len() >= 16 && value[..8] == STAMP_MARK.to_be_bytes() {
                let sent = u64::from_be_bytes(value[8..16].try_into().unwrap_or_default());
                let now = base.elapsed().as_nanos() as u64;
                let _ = histogram.record(now.saturating_sub(sent) / 1000);
            }
        }
        anyhow::Ok(histogram)
    });
    let produced = produce(client, args, Some(base)).await?;
    let histogram = reader.await??;
    Ok(Report {
        mode: "e2e",
        latency: Some(histogram),
        ..produced
    })
}
