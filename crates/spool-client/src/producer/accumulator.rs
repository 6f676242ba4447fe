//! Open and closed batches per partition, shared by `send` (which appends) and the sender
//! task (which takes ready batches). Held under a mutex for short, allocation-free steps.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spool_log::batch::{BatchBuilder, BatchOptions, Header};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{BatchOutcome, DeliveryFuture, ProducerConfig, ProducerRecord};
use crate::compression::Compression;

/// A batch's bytes: still a builder until the sender first ships it.
#[derive(Debug)]
pub(crate) enum Payload {
    Building(BatchBuilder),
    Built(Bytes),
}

/// Bytes of batches of one partition shipped in one request at most.
const MAX_SHIPMENT_BYTES: usize = 4 * 1024 * 1024;

/// Batches of one partition shipped together: validated all or none, appended in order.
#[derive(Debug)]
pub(crate) struct Shipment {
    pub topic: Arc<str>,
    pub partition: u32,
    pub batches: Vec<ClosedBatch>,
}

/// A batch no longer taking records.
#[derive(Debug)]
pub(crate) struct ClosedBatch {
    pub payload: Payload,
    pub outcome: BatchOutcome,
    pub permits: usize,
    pub records: usize,
    pub attempts: u32,
    /// When its first record was added; the delivery timeout counts from here.
    pub created: Instant,
    /// The producer id its sequences were given under, once shipped (idempotence).
    pub stamped: Option<super::identity::ProducerId>,
}

impl ClosedBatch {
    pub fn size(&self) -> usize {
        match &self.payload {
            Payload::Building(builder) => builder.size(),
            Payload::Built(bytes) => bytes.len(),
        }
    }
}

#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    outcome: BatchOutcome,
    permits: usize,
    records: usize,
    created: Instant,
}

#[derive(Debug, Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<ClosedBatch>,
    in_flight: bool,
    retry_at: Option<Instant>,
    /// The producer id generation `next_sequence` counts under.
    sequence_generation: u64,
    /// The sequence of the next record shipped for the first time.
    next_sequence: i32,
}

#[derive(Debug)]
struct TopicQueues {
    name: Arc<str>,
    partitions: Vec<PartitionQueue>,
    /// Where records without a key go until that partition's batch closes.
    sticky: u32,
}

#[derive(Debug)]
pub(crate) struct Accumulator {
    topics: HashMap<Arc<str>, TopicQueues>,
    pub compression: Compression,
    flushing: bool,
    /// Records sent and not yet acknowledged or failed.
    pending_records: usize,
}

impl Accumulator {
    pub fn new(compression: Compression) -> Self {
        Self {
            topics: HashMap::new(),
            compression,
            flushing: false,
            pending_records: 0,
        }
    }

    /// Adds a record; returns its future and whether the sender should look again.
    pub fn append(
        &mut self,
        config: &ProducerConfig,
        record: &ProducerRecord,
        explicit: Option<u32>,
        partitions: u32,
        timestamp: i64,
        permits: u32,
    ) -> (DeliveryFuture, bool) {
        let topic = match self.topics.get_mut(record.topic.as_str()) {
            Some(t) => t,
            None => {
                let name: Arc<str> = Arc::from(record.topic.as_str());
                self.topics.entry(Arc::clone(&name)).or_insert(TopicQueues {
                    name,
                    partitions: Vec::new(),
                    sticky: seed() % partitions.max(1),
                })
            }
        };
        if topic.partitions.len() < partitions as usize {
            topic
                .partitions
                .resize_with(partitions as usize, PartitionQueue::default);
        }
        let headers: Vec<Header<'_>> = record
            .headers
            .iter()
            .map(|(k, v)| Header {
                key: k.as_bytes(),
                value: Some(v),
            })
            .collect();
        let key = record.key.as_deref();
        let value = record.value.as_deref();
        let mut wake = false;
        let mut partition = explicit.unwrap_or(topic.sticky % partitions.max(1));
        // A full batch closes before the record that does not fit; a keyless record then
        // moves on with the sticky partition.
        let queue = &mut topic.partitions[partition as usize];
        if let Some(open) = &queue.open
            && !open.builder.is_empty()
            && open.builder.size() + open.builder.record_size(timestamp, key, value, &headers)
                > config.batch_bytes
        {
            close(queue);
            wake = true;
            if explicit.is_none() {
                topic.sticky = (topic.sticky + 1) % partitions.max(1);
                partition = topic.sticky;
            }
        }
        let queue = &mut topic.partitions[partition as usize];
        let open = queue.open.get_or_insert_with(|| {
            wake = true;
            OpenBatch {
                builder: BatchBuilder::with_capacity(
                    config.batch_bytes + 1024,
                    BatchOptions::default(),
                ),
                outcome: watch::Sender::new(None),
                permits: 0,
                records: 0,
                created: Instant::now(),
            }
        });
        open.builder.append(timestamp, key, value, &headers);
        let future = DeliveryFuture {
            outcome: open.outcome.subscribe(),
            index: open.records as i64,
            topic: Arc::clone(&topic.name),
            partition,
            timestamp,
        };
        open.records += 1;
        open.permits += permits as usize;
        self.pending_records += 1;
        if open.builder.size() >= config.batch_bytes {
            close(queue);
            wake = true;
            if explicit.is_none() {
                topic.sticky = (topic.sticky + 1) % partitions.max(1);
            }
        }
        (future, wake)
    }

    /// From now until everything is acknowledged, open batches ship without lingering.
    /// Returns the records still pending.
    pub fn begin_flush(&mut self) -> usize {
        if self.pending_records > 0 {
            self.flushing = true;
        }
        self.pending_records
    }

    /// Takes what is shippable of each idle partition (its closed batches, up to 4 MiB
    /// and `max_batches`); returns them and when to look again.
    pub fn take_ready(
        &mut self,
        now: Instant,
        linger: Duration,
        max_batches: usize,
    ) -> (Vec<Shipment>, Option<Instant>) {
        let mut out = Vec::new();
        let mut next: Option<Instant> = None;
        let mut earliest = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        for topic in self.topics.values_mut() {
            for (p, queue) in topic.partitions.iter_mut().enumerate() {
                if queue.in_flight {
                    continue;
                }
                if let Some(at) = queue.retry_at {
                    if at > now {
                        earliest(at);
                        continue;
                    }
                    queue.retry_at = None;
                }
                if queue.ready.is_empty()
                    && let Some(open) = &queue.open
                {
                    let due = open.created + linger;
                    if self.flushing || due <= now {
                        close(queue);
                    } else {
                        earliest(due);
                    }
                }
                let mut batches = Vec::new();
                let mut bytes = 0;
                while let Some(front) = queue.ready.front() {
                    let size = front.size();
                    if !batches.is_empty()
                        && (bytes + size > MAX_SHIPMENT_BYTES || batches.len() >= max_batches)
                    {
                        break;
                    }
                    bytes += size;
                    batches.extend(queue.ready.pop_front());
                }
                if !batches.is_empty() {
                    queue.in_flight = true;
                    out.push(Shipment {
                        topic: Arc::clone(&topic.name),
                        partition: p as u32,
                        batches,
                    });
                }
            }
        }
        (out, next)
    }

    /// A shipment is settled: its partition may ship again.
    pub fn release(&mut self, topic: &str, partition: u32) {
        if let Some(queue) = self.queue(topic, partition) {
            queue.in_flight = false;
        }
    }

    /// A batch is done (acknowledged or failed for good).
    pub fn complete(&mut self, records: usize) {
        self.pending_records = self.pending_records.saturating_sub(records);
        if self.pending_records == 0 {
            self.flushing = false;
        }
    }

    /// A shipment must be tried again: its batches go back in front of everything sent
    /// after them, in their order.
    pub fn requeue(&mut self, shipment: Shipment, retry_at: Instant) {
        if let Some(queue) = self.queue(&shipment.topic, shipment.partition) {
            for batch in shipment.batches.into_iter().rev() {
                queue.ready.push_front(batch);
            }
            queue.in_flight = false;
            queue.retry_at = Some(retry_at);
        }
    }

    /// Batches taken for a shipment go back in front of their partition's queue, unsent,
    /// while the shipment they were taken with is in flight.
    pub fn put_back(&mut self, topic: &str, partition: u32, batches: Vec<ClosedBatch>) {
        if let Some(queue) = self.queue(topic, partition) {
            for batch in batches.into_iter().rev() {
                queue.ready.push_front(batch);
            }
        }
    }

    /// A partition waiting out a retry backoff may go at once (its new leader is known).
    pub fn expedite(&mut self, topic: &str, partition: u32) {
        if let Some(queue) = self.queue(topic, partition)
            && !queue.in_flight
        {
            queue.retry_at = None;
        }
    }

    /// The first sequence for a batch of `records` shipped for the first time under
    /// producer id generation `generation`.
    pub fn take_sequence(
        &mut self,
        topic: &str,
        partition: u32,
        generation: u64,
        records: usize,
    ) -> i32 {
        let Some(queue) = self.queue(topic, partition) else {
            return 0;
        };
        if queue.sequence_generation != generation {
            queue.sequence_generation = generation;
            queue.next_sequence = 0;
        }
        let first = queue.next_sequence;
        queue.next_sequence = super::identity::add_sequence(first, records);
        first
    }

    /// The partition's batches were numbered afresh up to `next`.
    pub fn restart_sequence(&mut self, topic: &str, partition: u32, generation: u64, next: i32) {
        if let Some(queue) = self.queue(topic, partition) {
            queue.sequence_generation = generation;
            queue.next_sequence = next;
        }
    }

    /// True when nothing is buffered or in flight.
    pub fn is_idle(&self) -> bool {
        self.pending_records == 0
    }

    fn queue(&mut self, topic: &str, partition: u32) -> Option<&mut PartitionQueue> {
        self.topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(partition as usize))
    }
}

fn close(queue: &mut PartitionQueue) {
    if let Some(open) = queue.open.take() {
        queue.ready.push_back(ClosedBatch {
            payload: Payload::Building(open.builder),
            outcome: open.outcome,
            permits: open.permits,
            records: open.records,
            attempts: 0,
            created: open.created,
            stamped: None,
        });
    }
}

/// A random-enough starting point for sticky partitions and jitter.
pub(crate) fn seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(0);
    hasher.finish() as u32
}
