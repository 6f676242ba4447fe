//! The `spool.v1.Broker` service: metadata, produce, fetch, list offsets.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spool_broker::{
    Acks, Broker, BrokerError, FetchChunk, FetchPosition, FetchSpec, OffsetQuery, ProducePartition,
};
use spool_proto::v1;
use spool_types::{ErrorCode, IsolationLevel};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Listener;
use crate::metrics::Metrics;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_FETCH_MAX_BYTES: usize = 1024 * 1024;
const DEFAULT_FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
/// Responses a fetch session may queue ahead of a slow consumer.
const FETCH_QUEUE: usize = 2;
/// Most bytes of one fetch response, and of one partition in it, whatever the client asks:
/// a response must stay well under the message limit, and a stalled stream holds at most
/// `FETCH_QUEUE + 1` of them. (The first batch of a response is sent whole regardless.)
pub(crate) const FETCH_MAX_BYTES_CAP: usize = 64 * 1024 * 1024;
/// Most partitions one produce or fetch request may name.
pub(crate) const MAX_PARTITIONS_PER_REQUEST: usize = 10_000;
/// Most batches one produce request may carry.
pub(crate) const MAX_BATCHES_PER_REQUEST: usize = 100_000;

#[derive(Debug, Clone)]
pub(crate) struct BrokerService {
    pub broker: Arc<Broker>,
    pub metrics: Arc<Metrics>,
    /// Fetch sessions open at once on this node; one more is refused.
    pub fetch_sessions: Arc<tokio::sync::Semaphore>,
    pub listener: Listener,
}

fn too_many(what: String) -> Status {
    spool_proto::error_to_status(v1::Error::new(ErrorCode::InvalidRequest, what))
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<v1::FetchResponse, Status>> + Send>>;

/// A transactional producer's transaction timeout when it names none (Kafka's default).
const DEFAULT_TRANSACTION_TIMEOUT_MS: i64 = 60_000;

#[tonic::async_trait]
impl v1::broker_server::Broker for BrokerService {
    async fn metadata(
        &self,
        request: Request<v1::MetadataRequest>,
    ) -> Result<Response<v1::MetadataResponse>, Status> {
        let start = Instant::now();
        let request = request.into_inner();
        let described = if request.topics.is_empty() {
            self.broker
                .list_topics(true)
                .into_iter()
                .map(Ok)
                .collect::<Vec<_>>()
        } else {
            request
                .topics
                .iter()
                .map(|name| {
                    self.broker
                        .describe_topic(name)
                        .map_err(|e| (name.clone(), e))
                })
                .collect()
        };
        let topics = described
            .into_iter()
            .map(|topic| match topic {
                Ok(info) => v1::TopicMetadata {
                    name: info.name,
                    error: None,
                    internal: info.internal,
                    partitions: info
                        .partitions
                        .into_iter()
                        .map(|p| v1::PartitionMetadata {
                            partition: p.partition,
                            leader: p.leader.unwrap_or(0),
                            replicas: p.replicas,
                            in_sync_replicas: p.in_sync_replicas,
                            leader_epoch: p.leader_epoch,
                        })
                        .collect(),
                },
                Err((name, error)) => v1::TopicMetadata {
                    name,
                    error: Some(self.listener.wire_error(&self.broker, &error)),
                    internal: false,
                    partitions: Vec::new(),
                },
            })
            .collect();
        let response = v1::MetadataResponse {
            cluster_id: self.broker.cluster_id().to_string(),
            brokers: self
                .broker
                .known_nodes()
                .into_iter()
                .map(|(node_id, node)| v1::BrokerInfo {
                    node_id,
                    address: self.listener.address(&self.broker, node_id, node.address),
                    rack: node.rack.unwrap_or_default(),
                })
                .collect(),
            topics,
            epoch: self.broker.metadata_epoch(),
        };
        self.metrics.metadata.record(start, false);
        Ok(Response::new(response))
    }

    async fn produce(
        &self,
        request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        let start = Instant::now();
        let request = request.into_inner();
        let acks = match v1::Acks::try_from(request.acks) {
            Ok(v1::Acks::All) => Acks::All,
            Ok(v1::Acks::Leader) => Acks::Leader,
            Ok(v1::Acks::None) => Acks::None,
            Err(_) => {
                self.metrics.produce.record(start, true);
                return Err(spool_proto::error_to_status(v1::Error::new(
                    ErrorCode::InvalidRequest,
                    format!("unknown acks value {}", request.acks),
                )));
            }
        };
        let timeout = match request.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let named: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
        let batches: usize = request
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.batches.len())
            .sum();
        if named > MAX_PARTITIONS_PER_REQUEST || batches > MAX_BATCHES_PER_REQUEST {
            self.metrics.produce.record(start, true);
            return Err(too_many(format!(
                "a produce request may name at most {MAX_PARTITIONS_PER_REQUEST} partitions \
                 and carry at most {MAX_BATCHES_PER_REQUEST} batches; this one has {named} \
                 and {batches}"
            )));
        }
        let mut partitions = Vec::new();
        let mut shape = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let mut indexes = Vec::with_capacity(topic.partitions.len());
            for partition in topic.partitions {
                let bytes: u64 = partition.batches.iter().map(|b| b.len() as u64).sum();
                self.metrics.bytes_in.inc_by(bytes);
                indexes.push(partition.partition);
                partitions.push(ProducePartition {
                    topic: topic.topic.clone(),
                    partition: partition.partition,
                    batches: partition.batches,
                    leader_epoch: partition.leader_epoch,
                });
            }
            shape.push((topic.topic, indexes));
        }
        let mut results = self
            .broker
            .produce(partitions, acks, timeout)
            .await
            .into_iter();
        let mut failed = false;
        let topics = shape
            .into_iter()
            .map(|(topic, indexes)| v1::TopicProduceResult {
                topic,
                partitions: indexes
                    .into_iter()
                    .map(|partition| match results.next() {
                        Some(Ok(outcome)) => v1::PartitionProduceResult {
                            partition,
                            error: None,
                            base_offset: outcome.base_offset,
                            log_append_time_ms: outcome.log_append_time_ms,
                            log_start_offset: outcome.log_start_offset,
                            batch_base_offsets: outcome.batch_base_offsets,
                        },
                        Some(Err(error)) => {
                            failed = true;
                            v1::PartitionProduceResult {
                                partition,
                                error: Some(self.listener.wire_error(&self.broker, &error)),
                                base_offset: -1,
                                log_append_time_ms: -1,
                                log_start_offset: -1,
                                batch_base_offsets: Vec::new(),
                            }
                        }
                        None => v1::PartitionProduceResult {
                            partition,
                            error: Some(v1::Error::new(ErrorCode::Unknown, "no result")),
                            base_offset: -1,
                            log_append_time_ms: -1,
                            log_start_offset: -1,
                            batch_base_offsets: Vec::new(),
                        },
                    })
                    .collect(),
            })
            .collect();
        self.metrics.produce.record(start, failed);
        Ok(Response::new(v1::ProduceResponse {
            topics,
            metadata_epoch: self.broker.metadata_epoch(),
        }))
    }

    type FetchStream = FetchStream;

    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<FetchStream>, Status> {
        let start = Instant::now();
        let request = request.into_inner();
        if request.partitions.is_empty() {
            self.metrics.fetch.record(start, true);
            return Err(spool_proto::error_to_status(v1::Error::new(
                ErrorCode::InvalidRequest,
                "a fetch names no partition",
            )));
        }
        if request.partitions.len() > MAX_PARTITIONS_PER_REQUEST {
            self.metrics.fetch.record(start, true);
            return Err(too_many(format!(
                "a fetch may name at most {MAX_PARTITIONS_PER_REQUEST} partitions; this one \
                 names {}",
                request.partitions.len()
            )));
        }
        let Ok(session) = Arc::clone(&self.fetch_sessions).try_acquire_owned() else {
            self.metrics.fetch.record(start, true);
            return Err(spool_proto::error_to_status(v1::Error::new(
                ErrorCode::ResourceExhausted,
                "this node has as many fetch sessions open as it takes; retry later",
            )));
        };
        let spec = FetchSpec {
            positions: request
                .partitions
                .into_iter()
                .map(|p| FetchPosition {
                    topic: p.topic,
                    partition: p.partition,
                    offset: p.offset,
                    max_bytes: (p.max_bytes > 0)
                        .then_some((p.max_bytes as usize).min(FETCH_MAX_BYTES_CAP)),
                    leader_epoch: p.leader_epoch,
                })
                .collect(),
            max_bytes: match request.max_bytes {
                0 => DEFAULT_FETCH_MAX_BYTES,
                n => (n as usize).min(FETCH_MAX_BYTES_CAP),
            },
            min_bytes: request.min_bytes as usize,
            max_wait: match request.max_wait_ms {
                0 => DEFAULT_FETCH_MAX_WAIT,
                ms => Duration::from_millis(u64::from(ms)),
            },
            follow: request.follow,
            isolation: match v1::IsolationLevel::try_from(request.isolation) {
                Ok(v1::IsolationLevel::ReadCommitted) => IsolationLevel::ReadCommitted,
                Ok(v1::IsolationLevel::ReadUncommitted) => IsolationLevel::ReadUncommitted,
                Err(_) => {
                    return Err(spool_proto::error_to_status(v1::Error::new(
                        ErrorCode::InvalidRequest,
                        format!("unknown isolation level {}", request.isolation),
                    )));
                }
            },
        };
        let chunks = self.broker.fetch(spec, FETCH_QUEUE);
        let stream = MeteredFetch {
            chunks: ReceiverStream::new(chunks),
            sent: Vec::new(),
            _session: session,
            metrics: Arc::clone(&self.metrics),
            broker: Arc::clone(&self.broker),
            listener: self.listener,
        };
        self.metrics.fetch.record(start, false);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn init_producer_id(
        &self,
        request: Request<v1::InitProducerIdRequest>,
    ) -> Result<Response<v1::InitProducerIdResponse>, Status> {
        let request = request.into_inner();
        let identity = if request.transactional_id.is_empty() {
            self.broker.init_producer_id().await
        } else {
            let timeout_ms = match request.transaction_timeout_ms {
                0 => DEFAULT_TRANSACTION_TIMEOUT_MS,
                ms => i64::from(ms),
            };
            self.broker
                .init_transactional_producer(&request.transactional_id, timeout_ms)
                .await
        };
        let identity = identity.map_err(|e| {
            spool_proto::error_to_status(self.listener.wire_error(&self.broker, &e))
        })?;
        Ok(Response::new(v1::InitProducerIdResponse {
            producer_id: identity.producer_id,
            producer_epoch: i32::from(identity.epoch),
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        let start = Instant::now();
        let mut results = Vec::new();
        let mut failed = false;
        for p in request.into_inner().partitions {
            let query = match v1::OffsetSpec::try_from(p.spec) {
                Ok(v1::OffsetSpec::Latest) => Some(OffsetQuery::Latest),
                Ok(v1::OffsetSpec::LastStable) => Some(OffsetQuery::LastStable),
                Ok(v1::OffsetSpec::Earliest) => Some(OffsetQuery::Earliest),
                Ok(v1::OffsetSpec::Timestamp) => Some(OffsetQuery::Timestamp(p.timestamp_ms)),
                Err(_) => None,
            };
            let outcome = match query {
                Some(query) => self
                    .broker
                    .list_offset(&p.topic, p.partition, query)
                    .await
                    .map_err(|e| self.listener.wire_error(&self.broker, &e)),
                None => Err(v1::Error::new(
                    ErrorCode::InvalidRequest,
                    format!("unknown offset spec {}", p.spec),
                )),
            };
            failed |= outcome.is_err();
            let (offset, error) = match outcome {
                Ok(offset) => (offset, None),
                Err(error) => (-1, Some(error)),
            };
            results.push(v1::ListOffsetsResult {
                topic: p.topic,
                partition: p.partition,
                error,
                offset,
            });
        }
        self.metrics.list_offsets.record(start, failed);
        Ok(Response::new(v1::ListOffsetsResponse {
            partitions: results,
        }))
    }
}

/// A fetch session's responses on their way out. A response's share of the node's fetch
/// memory is held until the transport asks for the next one: by then it has taken this
/// one (HTTP/2 keeps at most a few hundred KiB of it buffered per stream), so a consumer
/// that stops reading holds its last response's share, and one that reads gives it back
/// even when no next response is ready. Released on receipt of the next response instead,
/// sessions waiting for memory held by their own sent responses could all wait forever.
struct MeteredFetch {
    chunks: ReceiverStream<FetchChunk>,
    sent: Vec<tokio::sync::OwnedSemaphorePermit>,
    /// The session's place among the node's fetch sessions, held while the stream lives.
    _session: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
    /// For the leader hints of errors, addressed for the listener the fetch came in on.
    broker: Arc<Broker>,
    listener: Listener,
}

impl Stream for MeteredFetch {
    type Item = Result<v1::FetchResponse, Status>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.sent.clear();
        Pin::new(&mut this.chunks).poll_next(cx).map(|next| {
            next.map(|mut chunk| {
                this.sent = std::mem::take(&mut chunk.memory);
                Ok(to_wire(chunk, &this.metrics, |e| {
                    this.listener.wire_error(&this.broker, e)
                }))
            })
        })
    }
}

fn to_wire(
    chunk: FetchChunk,
    metrics: &Metrics,
    wire_error: impl Fn(&BrokerError) -> v1::Error,
) -> v1::FetchResponse {
    let partitions = chunk
        .partitions
        .into_iter()
        .map(|p| {
            let bytes: u64 = p.batches.iter().map(|b| b.len() as u64).sum();
            metrics.bytes_out.inc_by(bytes);
            v1::FetchPartitionData {
                topic: p.topic,
                partition: p.partition,
                error: p.error.as_ref().map(&wire_error),
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                batches: p.batches,
                next_offset: p.next_offset,
                last_stable_offset: p.last_stable_offset,
                aborted_transactions: p
                    .aborted
                    .into_iter()
                    .map(|(producer_id, first_offset)| v1::AbortedTransaction {
                        producer_id,
                        first_offset,
                    })
                    .collect(),
            }
        })
        .collect();
    v1::FetchResponse { partitions }
}
