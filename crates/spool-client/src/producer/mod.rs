//! The producer: `send` puts a record into its partition's open batch and returns at once
//! with a [`DeliveryFuture`]; a background task ships batches when they are full or have
//! waited `linger`, and completes the futures when the cluster acknowledges them.
//!
//! **Ordering.** Records of one partition are acknowledged in the order `send` was
//! called, retries included: at most one request per partition is in flight; the batches
//! it carries for that partition (all that closed while the previous one was out, up to
//! 4 MiB) travel as one partition entry, which the broker validates all or none and
//! appends as consecutive entries; and a shipment that must be retried goes back to the
//! front of its partition's queue, ahead of everything sent after it. Different partitions
//! proceed in parallel.
//!
//! **Exactly once per partition (idempotence, on by default with acks=all).** The
//! producer takes a producer id and numbers each partition's records; a retry of records
//! the partition already holds (an answer lost, a leader failing midway through a
//! shipment) is answered with the offsets they were stored at, not stored again. See
//! `identity`. Without idempotence, such a retry stores the records twice
//! (at-least-once).
//!
//! **Back-pressure.** Records wait in a buffer of `buffer_bytes`. When it is full, `send`
//! waits for room and `try_send` returns [`ProducerError::BufferFull`].

mod accumulator;
mod identity;
mod leaders;
mod sender;
mod transaction;

pub use transaction::Transaction;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::Acks;
use crate::client::Client;
use crate::cluster::Cluster;
use crate::compression::Compression;
use crate::error::{ApiError, ClientError};
use accumulator::Accumulator;
use spool_types::partition_for_key;

/// How a producer batches, acknowledges and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// Close a partition's batch at this many bytes (default 64 KiB).
    pub batch_bytes: usize,
    /// Ship a batch that is not full after waiting this long (default 0). Under load,
    /// batches form anyway: records queue while their partition's request is in flight
    /// and go together in the next one, so waiting only adds latency.
    pub linger: Duration,
    /// Bytes of records waiting to be acknowledged before `send` waits (default 64 MiB).
    pub buffer_bytes: usize,
    pub compression: Compression,
    /// Per produce request (default 30 s).
    pub request_timeout: Duration,
    /// Give up on a record this long after `send` (default 120 s), retries included.
    pub delivery_timeout: Duration,
    /// First retry backoff (default 100 ms); doubles per attempt up to `retry_backoff_max`,
    /// with jitter.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// Number records so that retries are never stored twice (default true). Takes
    /// effect with acks=all only.
    pub idempotence: bool,
    /// Makes the producer transactional (see `Producer::init_transactions`): its records
    /// are sent inside transactions, committed or aborted whole. It implies idempotence
    /// and acks=all. The id names the producer across restarts: a new instance with the
    /// same id fences the old one.
    pub transactional_id: Option<String>,
    /// A transaction open longer than this is aborted by its coordinator (default 60 s).
    pub transaction_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            batch_bytes: 64 * 1024,
            linger: Duration::ZERO,
            buffer_bytes: 64 * 1024 * 1024,
            compression: Compression::None,
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            idempotence: true,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }
}

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// `None`: by key (Kafka's murmur2), or sticky for records without a key.
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    /// ms since the Unix epoch; `None` for now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            value: Some(value.into()),
            ..Self::default()
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: Arc<str>,
    pub partition: u32,
    /// -1 with acks=none.
    pub offset: i64,
    pub timestamp: i64,
}

/// Why a record was not produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    #[error("the producer's buffer is full")]
    BufferFull,
    #[error("a record of {size} bytes does not fit the producer's buffer of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    #[error("topic {topic:?} has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("not acknowledged within the delivery timeout of {0:?}: {1}")]
    DeliveryTimeout(Duration, String),
    #[error("the producer is closed")]
    Closed,
    #[error("the connection failed: {0}")]
    Transport(String),
    #[error("the producer has no transactional id")]
    NotTransactional,
    #[error("{0}")]
    TransactionState(String),
    #[error("the transaction was aborted: {0}")]
    TransactionAborted(String),
}

impl From<ClientError> for ProducerError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Api(api) => ProducerError::Api(api),
            other => ProducerError::Transport(other.to_string()),
        }
    }
}

/// One batch's outcome, shared by the futures of all its records: the base offset.
pub(crate) type BatchOutcome = watch::Sender<Option<Result<i64, ProducerError>>>;

/// Resolves when the record is acknowledged, or has failed for good.
#[derive(Debug)]
pub struct DeliveryFuture {
    outcome: watch::Receiver<Option<Result<i64, ProducerError>>>,
    index: i64,
    topic: Arc<str>,
    partition: u32,
    timestamp: i64,
}

impl DeliveryFuture {
    pub async fn wait(mut self) -> Result<RecordMetadata, ProducerError> {
        let outcome = match self.outcome.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => return Err(ProducerError::Closed),
        };
        match outcome {
            Some(Ok(base)) => Ok(RecordMetadata {
                topic: self.topic,
                partition: self.partition,
                offset: if base < 0 { -1 } else { base + self.index },
                timestamp: self.timestamp,
            }),
            Some(Err(error)) => Err(error),
            None => Err(ProducerError::Closed),
        }
    }
}

impl std::future::IntoFuture for DeliveryFuture {
    type Output = Result<RecordMetadata, ProducerError>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: ProducerConfig,
    pub cluster: Cluster,
    pub accumulator: parking_lot::Mutex<Accumulator>,
    /// Wakes the sender: a batch is ready, a flush began, or a request finished.
    pub wake: Notify,
    /// Wakes `flush` callers when records are acknowledged.
    pub drained: Notify,
    pub buffer: Semaphore,
    pub closing: watch::Sender<bool>,
    /// The producer id and its generation (idempotence).
    pub identity: tokio::sync::Mutex<identity::Identity>,
    /// The transactional producer's standing with its coordinator.
    pub txn: Option<Box<transaction::TxnClient>>,
}

/// A batching, retrying producer. Cheap to clone; clones share batches and buffer.
#[derive(Debug, Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    sender: Arc<parking_lot::Mutex<Option<JoinHandle<()>>>>,
}

impl Producer {
    pub fn new(client: Client, mut config: ProducerConfig) -> Self {
        let txn = config.transactional_id.clone().map(|id| {
            // Transactions build on idempotence, which needs acks=all.
            config.idempotence = true;
            config.acks = Acks::All;
            Box::new(transaction::TxnClient::new(id, config.transaction_timeout))
        });
        let shared = Arc::new(Shared {
            txn,
            buffer: Semaphore::new(config.buffer_bytes.min(Semaphore::MAX_PERMITS)),
            accumulator: parking_lot::Mutex::new(Accumulator::new(config.compression)),
            cluster: Cluster::new(client),
            wake: Notify::new(),
            drained: Notify::new(),
            closing: watch::Sender::new(false),
            identity: tokio::sync::Mutex::new(identity::Identity::default()),
            config,
        });
        let sender = tokio::spawn(sender::run(Arc::clone(&shared)));
        Self {
            shared,
            sender: Arc::new(parking_lot::Mutex::new(Some(sender))),
        }
    }

    /// Adds a record to its batch, waiting for buffer room if needed.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ProducerError> {
        let size = record_size(&record);
        let permits = self.permits(size)?;
        let acquired = self
            .shared
            .buffer
            .acquire_many(permits)
            .await
            .map_err(|_| ProducerError::Closed)?;
        acquired.forget();
        self.enqueue(record, permits).await
    }

    /// Adds a record to its batch, or fails at once with `BufferFull`.
    pub async fn try_send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ProducerError> {
        let size = record_size(&record);
        let permits = self.permits(size)?;
        match self.shared.buffer.try_acquire_many(permits) {
            Ok(acquired) => acquired.forget(),
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(ProducerError::BufferFull),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(ProducerError::Closed),
        }
        self.enqueue(record, permits).await
    }

    fn permits(&self, size: usize) -> Result<u32, ProducerError> {
        let max = self.shared.config.buffer_bytes;
        if size > max || size > u32::MAX as usize {
            return Err(ProducerError::RecordTooLarge { size, max });
        }
        Ok(size as u32)
    }

    async fn enqueue(
        &self,
        record: ProducerRecord,
        permits: u32,
    ) -> Result<DeliveryFuture, ProducerError> {
        if *self.shared.closing.borrow() {
            self.shared.buffer.add_permits(permits as usize);
            return Err(ProducerError::Closed);
        }
        if let Err(error) = transaction::check_open(&self.shared) {
            self.shared.buffer.add_permits(permits as usize);
            return Err(error);
        }
        let partitions = match self.shared.cluster.partition_count(&record.topic).await {
            Ok(n) => n,
            Err(error) => {
                self.shared.buffer.add_permits(permits as usize);
                return Err(error.into());
            }
        };
        let explicit = match (record.partition, &record.key) {
            (Some(p), _) if p >= partitions => {
                self.shared.buffer.add_permits(permits as usize);
                return Err(ProducerError::UnknownPartition {
                    topic: record.topic,
                    partition: p,
                    partitions,
                });
            }
            (Some(p), _) => Some(p),
            (None, Some(key)) => Some(partition_for_key(key, partitions)),
            (None, None) => None,
        };
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let (future, wake) = self.shared.accumulator.lock().append(
            &self.shared.config,
            &record,
            explicit,
            partitions,
            timestamp,
            permits,
        );
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(future)
    }

    /// Sends everything buffered now and waits until all of it is acknowledged or failed.
    pub async fn flush(&self) {
        loop {
            let drained = self.shared.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.shared.accumulator.lock().begin_flush() == 0 {
                return;
            }
            self.shared.wake.notify_one();
            drained.await;
        }
    }

    /// Flushes, then stops the background task. Later sends fail with `Closed`.
    pub async fn close(&self) {
        self.flush().await;
        self.shared.closing.send_replace(true);
        self.shared.wake.notify_one();
        let sender = self.sender.lock().take();
        if let Some(sender) = sender {
            let _ = sender.await;
        }
    }
}

/// What a record takes in the buffer: its bytes plus record framing.
fn record_size(record: &ProducerRecord) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum();
    record.key.as_ref().map_or(0, Bytes::len)
        + record.value.as_ref().map_or(0, Bytes::len)
        + headers
        + 24
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
