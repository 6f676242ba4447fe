//! `spool produce TOPIC`: each line of stdin becomes a record, sent through the SDK's
//! producer: batched per partition, keys partitioned as Kafka does, retried in order.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde_json::json;
use spool_client::{Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;

use crate::topic::parse_pair;
use crate::{Context, Output};

impl From<AcksArg> for Acks {
    fn from(arg: AcksArg) -> Self {
        match arg {
            AcksArg::All => Acks::All,
            AcksArg::Leader => Acks::Leader,
            AcksArg::None => Acks::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for spool_client::Compression {
    fn from(arg: CompressionArg) -> Self {
        match arg {
            CompressionArg::None => Self::None,
            CompressionArg::Gzip => Self::Gzip,
            CompressionArg::Snappy => Self::Snappy,
            CompressionArg::Lz4 => Self::Lz4,
            CompressionArg::Zstd => Self::Zstd,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// Wait until the records are committed and durable (Kafka acks=all).
    #[value(alias = "-1")]
    All,
    /// Wait until the leader has appended them (acks=1).
    #[value(alias = "1")]
    Leader,
    /// Do not wait (acks=0).
    #[value(alias = "0")]
    None,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    topic: String,
    /// Send every record to this partition (default: by key, or spread when keyless).
    #[arg(long)]
    partition: Option<u32>,
    /// Split each line at the first occurrence of this string into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    acks: AcksArg,
    /// A header added to every record, as name=value; repeatable.
    #[arg(long = "header", value_parser = parse_pair)]
    headers: Vec<(String, String)>,
    /// Close a batch once it reaches this many bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// Batch compression codec.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// How long the broker may take per request, in ms.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Give up on a record this long after it is read, retries included, in ms.
    #[arg(long, default_value_t = 120_000)]
    delivery_timeout_ms: u64,
    /// Print the partition and offset of each record as it is acknowledged, in the order
    /// the records were read (`partition offset`, or a JSON object per line).
    #[arg(long)]
    print_offsets: bool,
    /// Number records so that a retry never stores them twice (with acks=all; on by
    /// default). `--idempotence false` retries as at-least-once.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    idempotence: bool,
}

pub async fn run(args: ProduceArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let client = context.connect().await?;
    let partitions = client.describe_topic(&args.topic).await?.partitions.len() as u32;
    if let Some(p) = args.partition {
        anyhow::ensure!(
            p < partitions,
            "topic {} has no partition {p} (it has {partitions})",
            args.topic
        );
    }
    let config = ProducerConfig {
        acks: args.acks.into(),
        batch_bytes: args.batch_bytes,
        compression: args.compression.into(),
        request_timeout: Duration::from_millis(args.timeout_ms),
        delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
        idempotence: args.idempotence,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config);
    let (print_offsets, output) = (args.print_offsets, context.output);
    let topic = args.topic.clone();
    let (records_tx, mut records_rx) = mpsc::channel::<ProducerRecord>(8192);
    let reader = std::thread::spawn(move || read_stdin(&args, &records_tx));
    // Acknowledgements are awaited in order beside the sending, so the first failure
    // stops the command while later records are still being read.
    let (acks_tx, mut acks_rx) = mpsc::channel::<DeliveryFuture>(65_536);
    let collector = tokio::spawn(async move {
        let mut acknowledged = 0u64;
        while let Some(ack) = acks_rx.recv().await {
            let delivered = ack.await?;
            acknowledged += 1;
            if print_offsets {
                print_offset(&delivered, output);
            }
        }
        anyhow::Ok(acknowledged)
    });
    while let Some(record) = records_rx.recv().await {
        let ack = producer.send(record).await?;
        if acks_tx.send(ack).await.is_err() {
            break;
        }
    }
    drop(acks_tx);
    producer.flush().await;
    let acknowledged = collector
        .await?
        .map_err(|e| anyhow::anyhow!("the broker refused records: {e}"))?;
    producer.close().await;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stdin reader failed"))??;
    match context.output {
        // With --print-offsets the output is one object per record, nothing else.
        Output::Json if print_offsets => {}
        Output::Json => crate::say!("{}", json!({"topic": topic, "records": acknowledged})),
        Output::Text if std::io::stderr().is_terminal() => {
            eprintln!("produced {acknowledged} record(s) to {topic}")
        }
        Output::Text => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn print_offset(delivered: &spool_client::RecordMetadata, output: Output) {
    match output {
        Output::Json => crate::say!(
            "{}",
            json!({"topic": &*delivered.topic, "partition": delivered.partition, "offset": delivered.offset})
        ),
        Output::Text => crate::say!("{} {}", delivered.partition, delivered.offset),
    }
}

/// Turns each line of stdin into a record: key and value split at the separator.
fn read_stdin(args: &ProduceArgs, tx: &mpsc::Sender<ProducerRecord>) -> anyhow::Result<()> {
    let headers: Vec<(String, Bytes)> = args
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let text = line.strip_suffix('\n').unwrap_or(&line);
        let text = text.strip_suffix('\r').unwrap_or(text);
        let (key, value) = match &args.key_separator {
            Some(sep) => match text.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k), v),
                None => (None, text),
            },
            None => (None, text),
        };
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: headers.clone(),
            timestamp: None,
        };
        if tx.blocking_send(record).is_err() {
            return Ok(());
        }
    }
}
