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
    pub(crate) topic: String,
    /// Read as a member of this consumer group: the group's coordinator assigns the
    /// partitions, reading resumes at the group's committed offsets, and what is printed
    /// is committed. Runs until --max-messages or Ctrl-C.
    #[arg(long, conflicts_with_all = ["partition", "offset", "timestamp"])]
    pub(crate) group: Option<String>,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at the earliest retained record (default: only records that arrive later).
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    pub(crate) from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long, conflicts_with = "timestamp")]
    offset: Option<i64>,
    /// Start at the first record at or after this time (ms since the Unix epoch).
    #[arg(long)]
    timestamp: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    pub(crate) max_messages: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long)]
    follow: bool,
    #[arg(long, value_enum, default_value_t = Format::Value)]
    pub(crate) format: Format,
    /// read_committed prints only what committed transactions wrote (and everything
    /// written outside transactions), stopping at each partition's last stable offset.
    #[arg(long, default_value = "read_uncommitted")]
    pub(crate) isolation: spool_client::IsolationLevel,
}

#[derive(Serialize)]
pub(crate) struct JsonRecord<'a> {
    topic: &'a str,
    partition: u32,
    offset: i64,
    timestamp: i64,
    key: Option<Cow<'a, str>>,
    value: Option<Cow<'a, str>>,
    headers: Vec<JsonHeader<'a>>,
}

#[derive(Serialize)]
pub(crate) struct JsonHeader<'a> {
    key: Cow<'a, str>,
    value: Option<Cow<'a, str>>,
}

pub async fn run(args: ConsumeArgs, context: &Context) -> anyhow::Result<ExitCode> {
    if args.group.is_some() {
        return crate::consume_group::run(args, context).await;
    }
    let client = context.connect().await?;
    let count = client.describe_topic(&args.topic).await?.partitions.len() as u32;
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p < count => vec![p],
        Some(p) => anyhow::bail!("topic {} has no partition {p} (it has {count})", args.topic),
        None => (0..count).collect(),
    };
    // Each partition is read from (and its offsets asked of) its leader.
    let groups = by_leader(&client, &args.topic, &partitions).await?;
    let mut starts: Vec<i64> = vec![0; partitions.len()];
    for (leader, group) in &groups {
        let group_starts = start_offsets(leader, &args, group).await?;
        for (partition, start) in group.iter().zip(group_starts) {
            if let Some(i) = partitions.iter().position(|p| p == partition) {
                starts[i] = start;
            }
        }
    }
    if args.max_messages == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    let mut streams = Vec::with_capacity(groups.len());
    for (leader, group) in &groups {
        let options = FetchOptions {
            positions: group
                .iter()
                .map(|&partition| FetchPosition {
                    topic: args.topic.clone(),
                    partition,
                    offset: partitions
                        .iter()
                        .position(|&p| p == partition)
                        .map_or(0, |i| starts[i]),
                    leader_epoch: None,
                })
                .collect(),
            max_bytes: 1024 * 1024,
            min_bytes: 1,
            max_wait: Duration::from_millis(100),
            follow: args.follow,
            isolation: args.isolation,
        };
        streams.push(leader.fetch(options).await?);
    }
    let mut stream = futures_util::stream::select_all(streams);
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
            let mut aborted = spool_client::AbortedTransactions::new(&fetched.aborted);
            for bytes in &fetched.batches {
                if aborted.skips(bytes) {
                    continue;
                }
                decoded.clear();
                spool_client::decode_batch(&topic, fetched.partition, bytes, start, &mut decoded)?;
                for record in &decoded {
                    if let Err(error) = write_record(&mut out, record, args.format) {
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

/// Writes one record as the format says, with its newline.
pub(crate) fn write_record(
    out: &mut impl Write,
    record: &spool_client::ConsumerRecord,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Value => out
            .write_all(record.value.as_deref().unwrap_or_default())
            .and_then(|()| out.write_all(b"\n")),
        Format::Json => {
            let json = JsonRecord {
                topic: &record.topic,
                partition: record.partition,
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
            serde_json::to_writer(&mut *out, &json)
                .map_err(std::io::Error::other)
                .and_then(|()| out.write_all(b"\n"))
        }
    }
}

/// A reader that went away (`| head`) ends the command quietly.
pub(crate) fn broken_pipe_is_fine(error: std::io::Error) -> anyhow::Result<ExitCode> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(error.into())
    }
}

/// The partitions of `topic` grouped by their leader, each with a connection to it (the
/// bootstrap connection for a leader not known yet).
pub(crate) async fn by_leader(
    client: &spool_client::Client,
    topic: &str,
    partitions: &[u32],
) -> anyhow::Result<Vec<(spool_client::Client, Vec<u32>)>> {
    // A node may not know a new leader for a moment: ask again for a little while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (metadata, leaders) = loop {
        let metadata = client.metadata(&[topic.to_string()]).await?;
        let leaders: std::collections::HashMap<u32, u64> = metadata
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader != 0)
            .map(|p| (p.partition, p.leader))
            .collect();
        let all_led = partitions.iter().all(|p| leaders.contains_key(p));
        if all_led || tokio::time::Instant::now() >= deadline {
            break (metadata, leaders);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut groups: std::collections::BTreeMap<Option<(u64, String)>, Vec<u32>> =
        Default::default();
    for &partition in partitions {
        let leader = leaders.get(&partition).and_then(|leader| {
            metadata
                .brokers
                .iter()
                .find(|b| b.node_id == *leader)
                .map(|b| (b.node_id, b.address.clone()))
        });
        groups.entry(leader).or_default().push(partition);
    }
    let mut out = Vec::with_capacity(groups.len());
    for (leader, group) in groups {
        let leader = match leader {
            Some((node, address)) => client.to_node(node, &address).await?,
            None => client.clone(),
        };
        out.push((leader, group));
    }
    Ok(out)
}

/// Where reading starts in each of `partitions`, asked of their leader.
async fn start_offsets(
    leader: &spool_client::Client,
    args: &ConsumeArgs,
    partitions: &[u32],
) -> anyhow::Result<Vec<i64>> {
    // The end, as this reader sees it.
    let end = match args.isolation {
        spool_client::IsolationLevel::ReadUncommitted => OffsetSpec::Latest,
        spool_client::IsolationLevel::ReadCommitted => OffsetSpec::LastStable,
    };
    let spec = match (args.offset, args.from_beginning, args.timestamp) {
        (Some(offset), _, _) => return Ok(vec![offset; partitions.len()]),
        (None, true, _) => OffsetSpec::Earliest,
        (None, false, Some(ts)) => OffsetSpec::Timestamp(ts),
        (None, false, None) => end,
    };
    let queries = partitions
        .iter()
        .map(|&p| (args.topic.clone(), p, spec))
        .collect();
    let found = leader.list_offsets(queries).await?;
    let mut starts = Vec::with_capacity(found.len());
    for (i, offset) in found.into_iter().enumerate() {
        let offset = offset?;
        starts.push(if offset >= 0 {
            offset
        } else {
            // No record that recent: start at the end.
            leader
                .list_offsets(vec![(args.topic.clone(), partitions[i], end)])
                .await?
                .remove(0)?
        });
    }
    Ok(starts)
}
