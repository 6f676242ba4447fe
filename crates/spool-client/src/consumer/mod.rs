//! The consumer: reads assigned partitions as one stream of records, prefetching the next
//! responses while the application works (at most `prefetch_bytes` ahead), with seek,
//! pause and resume. Consumer groups (subscribe, commit, rebalance callbacks) build on
//! this: assignment is already a set of partitions that can change at any time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spool_log::RecordBatch;
use spool_types::ErrorCode;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::Stream;

mod group;
mod isolation;
mod membership;
mod routing;

pub use group::{GroupConfig, GroupConsumer, GroupEvent};
pub use isolation::AbortedTransactions;

use crate::client::Client;
use crate::cluster::Cluster;
use crate::error::{ApiError, ClientError};
use crate::types::{IsolationLevel, OffsetSpec};

/// How long an offset lookup waits for partitions without a reachable leader.
const LOOKUP_PATIENCE: Duration = Duration::from_secs(30);

/// Where a partition without a position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    Earliest,
    #[default]
    Latest,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Most bytes per fetch response (default 1 MiB).
    pub fetch_max_bytes: u32,
    /// How far ahead of the application to read (default 8 MiB).
    pub prefetch_bytes: usize,
    /// Longest a fetch waits for data before answering (default 500 ms).
    pub fetch_max_wait: Duration,
    /// Where new or out-of-range positions start (default latest, as in Kafka).
    pub offset_reset: OffsetReset,
    /// read_committed reads only what committed transactions wrote (and everything
    /// written outside transactions), up to each partition's last stable offset
    /// (default read_uncommitted, as in Kafka).
    pub isolation: IsolationLevel,
}

impl ConsumerConfig {
    /// Where a partition without a position starts: at read_committed, "latest" is the
    /// last stable offset (starting at the high watermark could land inside an open
    /// transaction and show only its tail).
    pub(crate) fn reset_spec(&self) -> OffsetSpec {
        match (self.offset_reset, self.isolation) {
            (OffsetReset::Earliest, _) => OffsetSpec::Earliest,
            (OffsetReset::Latest, IsolationLevel::ReadUncommitted) => OffsetSpec::Latest,
            (OffsetReset::Latest, IsolationLevel::ReadCommitted) => OffsetSpec::LastStable,
        }
    }
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            fetch_max_bytes: 1024 * 1024,
            prefetch_bytes: 8 * 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            offset_reset: OffsetReset::Latest,
            isolation: IsolationLevel::ReadUncommitted,
        }
    }
}

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    Beginning,
    End,
    Offset(i64),
    /// The first record at or after this time (ms); the end if none is that recent.
    Timestamp(i64),
}

/// A record read from a partition. Key, value and header values share the fetched batch's
/// buffer: no copy per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Header values may be null, as in Kafka.
    pub headers: Vec<(String, Option<Bytes>)>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("partition {partition} of {topic}: {error}")]
    Partition {
        topic: String,
        partition: u32,
        error: ApiError,
    },
    #[error("a batch at offset {offset} of {topic}/{partition} cannot be read: {reason}")]
    Batch {
        topic: String,
        partition: u32,
        offset: i64,
        reason: String,
    },
}

type Key = (Arc<str>, u32);

/// Records of one fetch response, decoded, or what stopped the stream.
type Chunk = Result<Vec<ConsumerRecord>, ConsumerError>;

#[derive(Debug)]
struct Fetcher {
    rx: mpsc::Receiver<Chunk>,
    task: JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads records of assigned partitions.
#[derive(Debug)]
pub struct Consumer {
    /// Leaders and a connection per node: each partition is read from its leader.
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    /// The next offset to deliver, per assigned partition.
    positions: BTreeMap<Key, i64>,
    paused: BTreeSet<Key>,
    buffered: VecDeque<ConsumerRecord>,
    fetcher: Option<Fetcher>,
    /// A partition whose offset went out of range and awaits its reset.
    reset_pending: Option<(String, u32)>,
}

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Self {
        Self {
            cluster: Arc::new(Cluster::new(client)),
            config,
            positions: BTreeMap::new(),
            paused: BTreeSet::new(),
            buffered: VecDeque::new(),
            fetcher: None,
            reset_pending: None,
        }
    }

    /// Replaces the assignment. Partitions kept keep their positions; new ones start per
    /// `offset_reset`.
    pub async fn assign(&mut self, partitions: &[(&str, u32)]) -> Result<(), ConsumerError> {
        let wanted: BTreeSet<Key> = partitions
            .iter()
            .map(|(t, p)| (Arc::from(*t), *p))
            .collect();
        self.positions.retain(|k, _| wanted.contains(k));
        self.paused.retain(|k| wanted.contains(k));
        if self
            .reset_pending
            .as_ref()
            .is_some_and(|(t, p)| !wanted.contains(&(Arc::from(t.as_str()), *p)))
        {
            self.reset_pending = None;
        }
        let reset = self.config.reset_spec();
        let new: Vec<Key> = wanted
            .into_iter()
            .filter(|k| !self.positions.contains_key(k))
            .collect();
        let offsets = self.lookup(&new, reset).await?;
        for (key, offset) in new.into_iter().zip(offsets) {
            self.positions.insert(key, offset);
        }
        self.restart();
        Ok(())
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.positions
            .keys()
            .map(|(t, p)| (t.to_string(), *p))
            .collect()
    }

    /// The next offset this consumer will deliver for a partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.positions.get(&(Arc::from(topic), partition)).copied()
    }

    /// Moves a partition's position; records buffered for it are dropped.
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: u32,
        to: SeekTo,
    ) -> Result<(), ConsumerError> {
        let key: Key = (Arc::from(topic), partition);
        let offset = match to {
            SeekTo::Offset(offset) => offset,
            SeekTo::Beginning => {
                self.lookup(std::slice::from_ref(&key), OffsetSpec::Earliest)
                    .await?[0]
            }
            SeekTo::End => {
                self.lookup(std::slice::from_ref(&key), OffsetSpec::Latest)
                    .await?[0]
            }
            SeekTo::Timestamp(ts) => {
                let found = self
                    .lookup(std::slice::from_ref(&key), OffsetSpec::Timestamp(ts))
                    .await?[0];
                if found >= 0 {
                    found
                } else {
                    self.lookup(std::slice::from_ref(&key), OffsetSpec::Latest)
                        .await?[0]
                }
            }
        };
        self.positions.insert(key, offset);
        self.restart();
        Ok(())
    }

    /// Stops delivering records of these partitions until `resume`.
    pub fn pause(&mut self, partitions: &[(&str, u32)]) {
        for (t, p) in partitions {
            self.paused.insert((Arc::from(*t), *p));
        }
        self.restart();
    }

    pub fn resume(&mut self, partitions: &[(&str, u32)]) {
        for (t, p) in partitions {
            self.paused.remove(&(Arc::from(*t), *p));
        }
        self.restart();
    }

    /// The next record; waits for one to arrive. `None` once nothing is assigned.
    pub async fn next(&mut self) -> Option<Result<ConsumerRecord, ConsumerError>> {
        loop {
            // A reset cut short by a dropped call is done now: its partition is not being
            // read until it is.
            if let Some((topic, partition)) = self.reset_pending.clone() {
                let to = match self.config.offset_reset {
                    OffsetReset::Earliest => SeekTo::Beginning,
                    OffsetReset::Latest => SeekTo::End,
                };
                if let Err(error) = self.seek(&topic, partition, to).await {
                    return Some(Err(error));
                }
                self.reset_pending = None;
                continue;
            }
            if let Some(record) = self.buffered.pop_front() {
                let key = (Arc::clone(&record.topic), record.partition);
                self.positions.insert(key, record.offset + 1);
                return Some(Ok(record));
            }
            let fetcher = self.fetcher.as_mut()?;
            match fetcher.rx.recv().await {
                Some(Ok(records)) => self.buffered.extend(records),
                Some(Err(ConsumerError::Partition {
                    topic,
                    partition,
                    error,
                })) if error.code == ErrorCode::OffsetOutOfRange => {
                    // Kafka's auto.offset.reset: move to the configured end and go on
                    // (at the top of the loop, so that a dropped call resumes it).
                    self.reset_pending = Some((topic, partition));
                }
                Some(Err(error)) => {
                    self.fetcher = None;
                    return Some(Err(error));
                }
                None => {
                    self.fetcher = None;
                    return None;
                }
            }
        }
    }

    /// The records as a stream.
    pub fn stream(&mut self) -> impl Stream<Item = Result<ConsumerRecord, ConsumerError>> + '_ {
        futures_util::stream::unfold(self, |consumer| async move {
            consumer.next().await.map(|item| (item, consumer))
        })
    }

    /// Offsets of partitions, each asked of its leader; a leader that moved or a node
    /// that is down is waited out (with a metadata refresh between tries) for up to
    /// `LOOKUP_PATIENCE`.
    async fn lookup(&self, keys: &[Key], spec: OffsetSpec) -> Result<Vec<i64>, ConsumerError> {
        let mut answers: Vec<Option<i64>> = vec![None; keys.len()];
        let deadline = tokio::time::Instant::now() + LOOKUP_PATIENCE;
        let mut backoff = Duration::from_millis(50);
        loop {
            let pending: BTreeSet<Key> = keys
                .iter()
                .zip(&answers)
                .filter(|(_, a)| a.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            if pending.is_empty() {
                return Ok(answers.into_iter().flatten().collect());
            }
            let mut last: Option<ConsumerError> = None;
            let (placed, gone) = routing::place(&self.cluster, &pending).await;
            if let Some((key, error)) = gone.into_iter().next() {
                return Err(ConsumerError::Partition {
                    topic: key.0.to_string(),
                    partition: key.1,
                    error,
                });
            }
            for (node, group) in placed {
                let queries = group
                    .iter()
                    .map(|(t, p)| (t.to_string(), *p, spec))
                    .collect();
                let asked = match self.cluster.connection(Some(node)).await {
                    Ok(client) => client.list_offsets(queries).await,
                    Err(error) => Err(error),
                };
                let results = match asked {
                    Ok(results) => results,
                    Err(error) if routing::is_routing(&error) => {
                        last = Some(error.into());
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                for (key, result) in group.iter().zip(results) {
                    let error = match result {
                        Ok(offset) => {
                            if let Some(i) = keys.iter().position(|k| k == key) {
                                answers[i] = Some(offset);
                            }
                            continue;
                        }
                        Err(error) => ConsumerError::Partition {
                            topic: key.0.to_string(),
                            partition: key.1,
                            error,
                        },
                    };
                    match &error {
                        ConsumerError::Partition { error: api, .. }
                            if routing::is_routing_code(api.code) =>
                        {
                            last = Some(error);
                        }
                        _ => return Err(error),
                    }
                }
            }
            if answers.iter().all(Option::is_some) {
                return Ok(answers.into_iter().flatten().collect());
            }
            if tokio::time::Instant::now() + backoff > deadline {
                let (topic, partition) = pending.first().cloned().unwrap_or_default();
                return Err(last.unwrap_or_else(|| ConsumerError::Partition {
                    topic: topic.to_string(),
                    partition,
                    error: ApiError {
                        code: ErrorCode::NotLeader,
                        message: "no leader is known".into(),
                        leader: None,
                    },
                }));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Starts reading again from the current positions of the unpaused partitions.
    fn restart(&mut self) {
        self.fetcher = None;
        self.buffered.clear();
        let starts: BTreeMap<Key, i64> = self
            .positions
            .iter()
            .filter(|(k, _)| !self.paused.contains(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if starts.is_empty() {
            return;
        }
        let capacity =
            (self.config.prefetch_bytes / self.config.fetch_max_bytes.max(1) as usize).max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let settings = routing::SessionSettings {
            max_bytes: self.config.fetch_max_bytes,
            max_wait: self.config.fetch_max_wait,
            isolation: self.config.isolation,
        };
        let task = tokio::spawn(routing::run(
            Arc::clone(&self.cluster),
            settings,
            starts,
            tx,
        ));
        self.fetcher = Some(Fetcher { rx, task });
    }
}

/// Decodes the records of one stored batch at or after `from_offset`, decompressing it if
/// needed. Keys, values and header values are slices of the batch (or of its decompressed
/// records): no copy per record.
pub fn decode_batch(
    topic: &Arc<str>,
    partition: u32,
    bytes: &Bytes,
    from_offset: i64,
    out: &mut Vec<ConsumerRecord>,
) -> Result<(), ConsumerError> {
    let fail = |offset, reason: String| ConsumerError::Batch {
        topic: topic.to_string(),
        partition,
        offset,
        reason,
    };
    let batch = RecordBatch::new(bytes).map_err(|e| fail(-1, e.to_string()))?;
    if batch.is_control() || batch.last_offset() < from_offset {
        return Ok(());
    }
    let records_buffer = match batch.compression() {
        Some(spool_log::batch::Compression::None) => None,
        Some(codec) => {
            let records = spool_log::batch::codec::decompress(codec, batch.records_section())
                .map_err(|e| fail(batch.base_offset(), e.to_string()))?;
            Some(Bytes::from(records))
        }
        None => {
            return Err(fail(
                batch.base_offset(),
                "unknown compression codec".into(),
            ));
        }
    };
    let (source, records) = match &records_buffer {
        Some(buffer) => (buffer, batch.records_from(buffer)),
        None => (
            bytes,
            batch
                .records()
                .map_err(|e| fail(batch.base_offset(), e.to_string()))?,
        ),
    };
    for record in records {
        let record = record.map_err(|e| fail(batch.base_offset(), e.to_string()))?;
        if record.offset() < from_offset {
            continue;
        }
        out.push(ConsumerRecord {
            topic: Arc::clone(topic),
            partition,
            offset: record.offset(),
            timestamp: record.timestamp(),
            key: record.key().map(|k| source.slice_ref(k)),
            value: record.value().map(|v| source.slice_ref(v)),
            headers: record
                .headers()
                .map(|h| {
                    (
                        String::from_utf8_lossy(h.key).into_owned(),
                        h.value.map(|v| source.slice_ref(v)),
                    )
                })
                .collect(),
        });
    }
    Ok(())
}
