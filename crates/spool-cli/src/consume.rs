//! `spool consume TOPIC`: prints records, as values or JSON lines.

use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
use spool_client::{FetchOptions, FetchPosition, OffsetSpec};
use tokio_stream::StreamExt;

use crate::Context;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The value of each record, one per line.
    Value,
    /// One JSON object per record: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at the earliest retained record (default: only records that arrive later).
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long, conflicts_with = "timestamp")]
    offset: Option<i64>,
    /// Start at the first record at or after this time (ms since the Unix epoch).
    #[arg(long)]
    timestamp: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long)]
    follow: bool,
    #[arg(long, value_enum, default_value_t = Format::Value)]
    format: Format,
}

#[derive(Serialize)]
struct JsonRecord<'a> {
    topic: &'a str,
    partition: u32,
    offset: i64,
    timestamp: i64,
    key: Option<Cow<'a, str>>,
    value: Option<Cow<'a, str>>,
    headers: Vec<JsonHeader<'a>>,
}

#[derive(Serialize)]
struct JsonHeader<'a> {
    key: Cow<'a, str>,
    value: Option<Cow<'a, str>>,
}

pub async fn run(args: ConsumeArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let client = context.connect().await?;
    let count = client.describe_topic(&args.topic).await?.partitions.len() as u32;
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p < count => vec![p],
        Some(p) => anyhow::bail!("topic {} has no partition {p} (it has {count})", args.topic),
        None => (0..count).collect(),
    };
    let starts: Vec<i64> = match (args.offset, args.from_beginning, args.timestamp) {
        (Some(offset), _, _) => vec![offset; partitions.len()],
        (None, from_beginning, timestamp) => {
            let spec = match (from_beginning, timestamp) {
                (true, _) => OffsetSpec::Earliest,
                (false, Some(ts)) => OffsetSpec::Timestamp(ts),
                (false, None) => OffsetSpec::Latest,
            };
            let queries = partitions
                .iter()
                .map(|&p| (args.topic.clone(), p, spec))
                .collect();
            let found = client.list_offsets(queries).await?;
            let mut starts = Vec::with_capacity(found.len());
            for (i, offset) in found.into_iter().enumerate() {
                let offset = offset?;
                starts.push(if offset >= 0 {
                    offset
                } else {
                    // No record that recent: start at the end.
                    client
                        .list_offsets(vec![(
                            args.topic.clone(),
                            partitions[i],
                            OffsetSpec::Latest,
                        )])
                        .await?
                        .remove(0)?
                });
            }
            starts
        }
    };
    if args.max_messages == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    let options = FetchOptions {
        positions: partitions
            .iter()
            .zip(&starts)
            .map(|(&partition, &offset)| FetchPosition {
                topic: args.topic.clone(),
                partition,
                offset,
                leader_epoch: None,
            })
            .collect(),
        max_bytes: 1024 * 1024,
        min_bytes: 1,
        max_wait: Duration::from_millis(100),
        follow: args.follow,
    };
    let mut stream = client.fetch(options).await?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut printed = 0u64;
    let mut decoded = Vec::new();
    let limit = args.max_messages.unwrap_or(u64::MAX);
    'stream: while let Some(response) = stream.next().await {
        for fetched in response? {
            if let Some(error) = fetched.error {
                anyhow::bail!("partition {}: {error}", fetched.partition);
            }
            let index = partitions
                .iter()
                .position(|&p| p == fetched.partition)
                .unwrap_or(0);
            let start = starts[index];
            let topic: std::sync::Arc<str> = std::sync::Arc::from(fetched.topic.as_str());
            for bytes in &fetched.batches {
                decoded.clear();
                spool_client::decode_batch(&topic, fetched.partition, bytes, start, &mut decoded)?;
                for record in &decoded {
                    let written = match args.format {
                        Format::Value => out
                            .write_all(record.value.as_deref().unwrap_or_default())
                            .and_then(|()| out.write_all(b"\n")),
                        Format::Json => {
                            let json = JsonRecord {
                                topic: &fetched.topic,
                                partition: fetched.partition,
                                offset: record.offset,
                                timestamp: record.timestamp,
                                key: record.key.as_deref().map(String::from_utf8_lossy),
                                value: record.value.as_deref().map(String::from_utf8_lossy),
                                headers: record
                                    .headers
                                    .iter()
                                    .map(|(k, v)| JsonHeader {
                                        key: Cow::Borrowed(k.as_str()),
                                        value: v.as_deref().map(String::from_utf8_lossy),
                                    })
                                    .collect(),
                            };
                            serde_json::to_writer(&mut out, &json)
                                .map_err(std::io::Error::other)
                                .and_then(|()| out.write_all(b"\n"))
                        }
                    };
                    if let Err(error) = written {
                        return broken_pipe_is_fine(error);
                    }
                    printed += 1;
                    if printed >= limit {
                        break 'stream;
                    }
                }
            }
        }
        if args.follow
            && let Err(error) = out.flush()
        {
            return broken_pipe_is_fine(error);
        }
    }
    if let Err(error) = out.flush() {
        return broken_pipe_is_fine(error);
    }
    Ok(ExitCode::SUCCESS)
}

/// A reader that went away (`| head`) ends the command quietly.
fn broken_pipe_is_fine(error: std::io::Error) -> anyhow::Result<ExitCode> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(error.into())
    }
}
