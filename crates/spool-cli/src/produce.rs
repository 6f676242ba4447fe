//! `spool produce TOPIC`: each line of stdin becomes a record.
//!
//! A reader thread turns lines into Kafka batches per partition while the previous
//! request is in flight; requests go one at a time, so records of a partition land in the
//! order they were read.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde_json::json;
use spool_client::{Acks, PartitionBatches, partition_for_key};
use spool_log::batch::{BatchBuilder, BatchOptions, Header};

use crate::topic::parse_pair;
use crate::{Context, Output};

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

/// Bytes of batches gathered into one produce request.
const REQUEST_BYTES: usize = 1024 * 1024;

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
    let acks = match args.acks {
        AcksArg::All => Acks::All,
        AcksArg::Leader => Acks::Leader,
        AcksArg::None => Acks::None,
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let topic = args.topic.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<PartitionBatches>>(2);
    let reader = std::thread::spawn(move || read_stdin(&args, partitions, &tx));
    let mut sent_error = None;
    while let Some(request) = rx.recv().await {
        let results = client.produce(acks, timeout, request).await?;
        if let Some(error) = results.into_iter().find_map(Result::err) {
            sent_error = Some(error);
            break;
        }
    }
    drop(rx);
    if let Some(error) = sent_error {
        anyhow::bail!("the broker refused records: {error}");
    }
    let records = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stdin reader failed"))??;
    match context.output {
        Output::Json => crate::say!("{}", json!({"topic": topic, "records": records})),
        Output::Text if std::io::stderr().is_terminal() => {
            eprintln!("produced {records} record(s) to {topic}")
        }
        Output::Text => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads lines into batches and hands full requests to the sender; returns the count.
fn read_stdin(
    args: &ProduceArgs,
    partitions: u32,
    tx: &tokio::sync::mpsc::Sender<Vec<PartitionBatches>>,
) -> anyhow::Result<u64> {
    let headers: Vec<Header<'_>> = args
        .headers
        .iter()
        .map(|(k, v)| Header {
            key: k.as_bytes(),
            value: Some(v.as_bytes()),
        })
        .collect();
    let mut builders: Vec<Option<BatchBuilder>> = (0..partitions).map(|_| None).collect();
    let mut closed: Vec<Vec<Bytes>> = vec![Vec::new(); partitions as usize];
    let mut closed_bytes = 0usize;
    let mut sticky = 0u32;
    let mut records = 0u64;
    let send = |closed: &mut Vec<Vec<Bytes>>| -> bool {
        let request: Vec<PartitionBatches> = closed
            .iter_mut()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(p, b)| PartitionBatches {
                topic: args.topic.clone(),
                partition: p as u32,
                batches: std::mem::take(b),
            })
            .collect();
        request.is_empty() || tx.blocking_send(request).is_ok()
    };
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            break;
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
        let partition = args
            .partition
            .or_else(|| key.map(|k| partition_for_key(k.as_bytes(), partitions)))
            .unwrap_or(sticky);
        let builder = builders[partition as usize].get_or_insert_with(|| {
            BatchBuilder::with_capacity(args.batch_bytes + 1024, BatchOptions::default())
        });
        builder.append(
            now_ms(),
            key.map(str::as_bytes),
            Some(value.as_bytes()),
            &headers,
        );
        records += 1;
        if builder.size() >= args.batch_bytes {
            if let Some(full) = builders[partition as usize].take() {
                closed_bytes += full.size();
                closed[partition as usize]
                    .push(spool_client::Compression::from(args.compression).finish(full));
            }
            if key.is_none() && args.partition.is_none() {
                // Keyless records fill one partition's batch, then move on (sticky).
                sticky = (sticky + 1) % partitions;
            }
            if closed_bytes >= REQUEST_BYTES {
                if !send(&mut closed) {
                    return Ok(records);
                }
                closed_bytes = 0;
            }
        }
    }
    for (p, builder) in builders.iter_mut().enumerate() {
        if let Some(b) = builder.take() {
            closed[p].push(spool_client::Compression::from(args.compression).finish(b));
        }
    }
    send(&mut closed);
    Ok(records)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
