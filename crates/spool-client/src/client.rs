//! The connection to a cluster and its calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use spool_proto::v1;
use spool_proto::v1::admin_client::AdminClient;
use spool_proto::v1::broker_client::BrokerClient;
use spool_proto::v1::groups_client::GroupsClient;
use spool_proto::v1::transactions_client::TransactionsClient;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};

use crate::error::{ApiError, ClientError};
use crate::types::*;

const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// The largest admin request a node takes.
const ADMIN_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// A connection to a Spool cluster. Cheap to clone; clones share one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) broker: BrokerClient<Channel>,
    admin: AdminClient<Channel>,
    pub(crate) groups: GroupsClient<Channel>,
    pub(crate) transactions: TransactionsClient<Channel>,
    address: String,
    /// Deadline of every unary call (fetch streams run until closed).
    timeout: Duration,
    /// How long opening a connection may take.
    connect_timeout: Duration,
    /// Addresses used instead of the ones the cluster advertises, by node id.
    connect_to: Arc<HashMap<u64, String>>,
}

fn api(error: Option<v1::Error>) -> Result<(), ApiError> {
    match error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// How often an open connection is checked with an HTTP/2 ping...
const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
/// ...and how long the answer may take (a busy node answers pings from its connection
/// task at once; a dead one never does).
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

impl Client {
    /// Connects to the first reachable address of `bootstrap` (host:port each). `timeout`
    /// bounds each connection attempt, this one and those the client later makes to other
    /// nodes (to partition leaders, coordinators); unary calls get at least 30 s.
    pub async fn connect(bootstrap: &[String], timeout: Duration) -> Result<Self, ClientError> {
        if bootstrap.is_empty() {
            return Err(ClientError::NoBootstrap);
        }
        let mut last = String::new();
        for address in bootstrap {
            let uri = if address.contains("://") {
                address.clone()
            } else {
                format!("http://{address}")
            };
            let endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::InvalidAddress {
                address: address.clone(),
                reason: e.to_string(),
            })?;
            // HTTP/2 pings find a node that died without closing its connections (killed
            // behind a proxy, cut off, paused) within about three seconds: the requests in
            // flight to it fail and are retried elsewhere instead of waiting out their
            // timeouts.
            let endpoint = endpoint
                .connect_timeout(timeout)
                .http2_keep_alive_interval(KEEPALIVE_EVERY)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                .tcp_nodelay(true)
                .initial_stream_window_size(4 * 1024 * 1024)
                .initial_connection_window_size(16 * 1024 * 1024);
            match endpoint.connect().await {
                Ok(channel) => {
                    return Ok(Self {
                        broker: BrokerClient::new(channel.clone())
                            .max_decoding_message_size(MAX_MESSAGE_BYTES)
                            .max_encoding_message_size(MAX_MESSAGE_BYTES),
                        groups: GroupsClient::new(channel.clone())
                            .max_decoding_message_size(MAX_MESSAGE_BYTES)
                            .max_encoding_message_size(ADMIN_REQUEST_BYTES),
                        transactions: TransactionsClient::new(channel.clone())
                            .max_decoding_message_size(MAX_MESSAGE_BYTES)
                            .max_encoding_message_size(ADMIN_REQUEST_BYTES),
                        admin: AdminClient::new(channel)
                            .max_decoding_message_size(MAX_MESSAGE_BYTES)
                            .max_encoding_message_size(ADMIN_REQUEST_BYTES),
                        address: address.clone(),
                        timeout: timeout.max(Duration::from_secs(30)),
                        connect_timeout: timeout,
                        connect_to: Arc::default(),
                    });
                }
                Err(e) => last = format!("{e}: {}", source_chain(&e)),
            }
        }
        Err(ClientError::Unreachable {
            addresses: bootstrap.join(","),
            reason: last,
        })
    }

    /// A request carrying this client's deadline (sent as `grpc-timeout`).
    pub(crate) fn call<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// The address this client connected to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Reaches the given nodes at these addresses instead of the ones they advertise
    /// (through a tunnel, a port forward, or from a host the advertised names do not
    /// resolve on). Producers and consumers made from this client follow it.
    pub fn with_connect_to(mut self, addresses: HashMap<u64, String>) -> Self {
        self.connect_to = Arc::new(addresses);
        self
    }

    /// A connection to `node`, which the cluster advertises at `advertised`: this one when
    /// that is where this client is connected, else a new one (sharing `with_connect_to`).
    pub async fn to_node(&self, node: u64, advertised: &str) -> Result<Client, ClientError> {
        let address = self.connect_to(node).unwrap_or(advertised);
        if address == self.address {
            return Ok(self.clone());
        }
        let client = Client::connect(&[address.to_string()], self.connect_timeout).await?;
        Ok(Client {
            timeout: self.timeout,
            connect_to: self.connect_to.clone(),
            ..client
        })
    }

    /// The address given for `node` in place of the advertised one, if any.
    pub(crate) fn connect_to(&self, node: u64) -> Option<&str> {
        self.connect_to.get(&node).map(String::as_str)
    }

    pub async fn metadata(&self, topics: &[String]) -> Result<ClusterMetadata, ClientError> {
        let response = self
            .broker
            .clone()
            .metadata(self.call(v1::MetadataRequest {
                topics: topics.to_vec(),
            }))
            .await?
            .into_inner();
        Ok(ClusterMetadata {
            cluster_id: response.cluster_id,
            epoch: response.epoch,
            brokers: response
                .brokers
                .into_iter()
                .map(|b| MetadataBroker {
                    node_id: b.node_id,
                    address: b.address,
                    rack: (!b.rack.is_empty()).then_some(b.rack),
                })
                .collect(),
            topics: response
                .topics
                .into_iter()
                .map(|t| TopicMetadata {
                    name: t.name,
                    error: t.error.map(ApiError::from),
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionLeader {
                            partition: p.partition,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    pub async fn create_topic(&self, topic: NewTopic) -> Result<(), ClientError> {
        let response = self
            .admin
            .clone()
            .create_topics(self.call(v1::CreateTopicsRequest {
                topics: vec![v1::NewTopic {
                    name: topic.name,
                    partitions: topic.partitions,
                    replication_factor: topic.replication_factor,
                    configs: topic.configs.into_iter().collect(),
                    assignments: topic
                        .assignments
                        .into_iter()
                        .map(|brokers| v1::ReplicaAssignment { brokers })
                        .collect(),
                }],
                validate_only: false,
            }))
            .await?
            .into_inner();
        first_result(response.results)
    }

    /// Grows a topic to `total` partitions.
    pub async fn create_partitions(&self, topic: &str, total: u32) -> Result<(), ClientError> {
        let response = self
            .admin
            .clone()
            .create_partitions(self.call(v1::AdminCreatePartitionsRequest {
                topic: topic.to_string(),
                total,
            }))
            .await?
            .into_inner();
        Ok(api(response.error)?)
    }

    /// Moves a partition to `replicas` (the preferred leader first); the move runs in the
    /// background.
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: Vec<u64>,
    ) -> Result<(), ClientError> {
        let response = self
            .admin
            .clone()
            .reassign_partition(self.call(v1::AdminReassignRequest {
                topic: topic.to_string(),
                partition,
                replicas,
            }))
            .await?
            .into_inner();
        Ok(api(response.error)?)
    }

    /// Starts (or, with `drain` false, stops) moving every replica off a broker.
    pub async fn drain_broker(&self, broker: u64, drain: bool) -> Result<(), ClientError> {
        let response = self
            .admin
            .clone()
            .drain_broker(self.call(v1::AdminDrainRequest {
                broker_id: broker,
                drain,
            }))
            .await?
            .into_inner();
        Ok(api(response.error)?)
    }

    /// Brokers, the controller leader, and partitions and leaders per broker.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let c = self
            .admin
            .clone()
            .describe_cluster(self.call(v1::DescribeClusterRequest {}))
            .await?
            .into_inner();
        Ok(ClusterDescription {
            cluster_id: c.cluster_id,
            controller_leader: (c.controller_leader != 0).then_some(c.controller_leader),
            controller_voters: c.controller_voters,
            brokers: c
                .brokers
                .into_iter()
                .map(|b| ClusterBroker {
                    id: b.id,
                    address: b.address,
                    rack: (!b.rack.is_empty()).then_some(b.rack),
                    fenced: b.fenced,
                    draining: b.draining,
                    replicas: b.replicas,
                    leaders: b.leaders,
                })
                .collect(),
            metadata_epoch: c.metadata_epoch,
            under_replicated_partitions: c.under_replicated_partitions,
            moving_partitions: c.moving_partitions,
        })
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let response = self
            .admin
            .clone()
            .delete_topics(self.call(v1::DeleteTopicsRequest {
                names: vec![name.to_string()],
            }))
            .await?
            .into_inner();
        first_result(response.results)
    }

    pub async fn list_topics(
        &self,
        include_internal: bool,
    ) -> Result<Vec<TopicSummary>, ClientError> {
        let response = self
            .admin
            .clone()
            .list_topics(self.call(v1::ListTopicsRequest { include_internal }))
            .await?
            .into_inner();
        Ok(response
            .topics
            .into_iter()
            .map(|t| TopicSummary {
                name: t.name,
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                internal: t.internal,
            })
            .collect())
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let response = self
            .admin
            .clone()
            .describe_topics(self.call(v1::DescribeTopicsRequest {
                names: vec![name.to_string()],
            }))
            .await?
            .into_inner();
        let topic = response
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Transport("the broker described no topic".into()))?;
        api(topic.error)?;
        Ok(TopicDescription {
            name: topic.name,
            topic_id: topic.topic_id,
            replication_factor: topic.replication_factor,
            partitions: topic
                .partitions
                .into_iter()
                .map(|p| PartitionDescription {
                    partition: p.partition,
                    leader: p.leader,
                    replicas: p.replicas,
                    in_sync_replicas: p.in_sync_replicas,
                    log_start_offset: p.log_start_offset,
                    high_watermark: p.high_watermark,
                    size_bytes: p.size_bytes,
                })
                .collect(),
            configs: topic
                .configs
                .into_iter()
                .map(|c| ConfigEntry {
                    name: c.name,
                    value: c.value,
                    is_default: c.is_default,
                })
                .collect(),
        })
    }

    /// Sets some configs of a topic and returns others to their defaults.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        set: Vec<(String, String)>,
        reset: Vec<String>,
    ) -> Result<(), ClientError> {
        let response = self
            .admin
            .clone()
            .alter_configs(self.call(v1::AlterConfigsRequest {
                topics: vec![v1::TopicConfigChange {
                    topic: name.to_string(),
                    set: set.into_iter().collect(),
                    reset,
                }],
                validate_only: false,
            }))
            .await?
            .into_inner();
        first_result(response.results)
    }

    /// Produces batches to several partitions in one call; each partition's outcome is
    /// reported on its own, in the order given.
    pub async fn produce(
        &self,
        acks: Acks,
        timeout: Duration,
        partitions: Vec<PartitionBatches>,
    ) -> Result<ProduceOutcome, ClientError> {
        let mut topics: Vec<v1::TopicProduceData> = Vec::new();
        for p in partitions {
            let data = v1::PartitionProduceData {
                partition: p.partition,
                batches: p.batches,
                leader_epoch: p.leader_epoch,
            };
            match topics.last_mut() {
                Some(last) if last.topic == p.topic => last.partitions.push(data),
                _ => topics.push(v1::TopicProduceData {
                    topic: p.topic,
                    partitions: vec![data],
                }),
            }
        }
        let request = v1::ProduceRequest {
            acks: match acks {
                Acks::All => v1::Acks::All,
                Acks::Leader => v1::Acks::Leader,
                Acks::None => v1::Acks::None,
            } as i32,
            timeout_ms: timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            topics,
        };
        // The broker answers within `timeout`; leave room for the trip.
        let mut call = tonic::Request::new(request);
        call.set_timeout(timeout + Duration::from_secs(5));
        let response = self.broker.clone().produce(call).await?.into_inner();
        Ok(ProduceOutcome {
            metadata_epoch: response.metadata_epoch,
            partitions: response
                .topics
                .into_iter()
                .flat_map(|t| t.partitions)
                .map(|p| match p.error {
                    Some(e) => Err(ApiError::from(e)),
                    None => Ok(Produced {
                        base_offset: p.base_offset,
                        batch_base_offsets: p.batch_base_offsets,
                        log_append_time_ms: p.log_append_time_ms,
                    }),
                })
                .collect(),
        })
    }

    /// Opens a fetch stream. Each item is one response of the broker.
    pub async fn fetch(
        &self,
        options: FetchOptions,
    ) -> Result<
        impl Stream<Item = Result<Vec<FetchedPartition>, ClientError>> + Send + Unpin + 'static,
        ClientError,
    > {
        let request = v1::FetchRequest {
            partitions: options
                .positions
                .into_iter()
                .map(|p| v1::FetchPartition {
                    topic: p.topic,
                    partition: p.partition,
                    offset: p.offset,
                    max_bytes: 0,
                    leader_epoch: p.leader_epoch,
                })
                .collect(),
            max_bytes: options.max_bytes,
            min_bytes: options.min_bytes,
            max_wait_ms: options.max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
            follow: options.follow,
            isolation: match options.isolation {
                IsolationLevel::ReadUncommitted => v1::IsolationLevel::ReadUncommitted,
                IsolationLevel::ReadCommitted => v1::IsolationLevel::ReadCommitted,
            } as i32,
        };
        let stream = self.broker.clone().fetch(request).await?.into_inner();
        Ok(stream.map(|item| {
            item.map_err(ClientError::from).map(|response| {
                response
                    .partitions
                    .into_iter()
                    .map(|p| FetchedPartition {
                        topic: p.topic,
                        partition: p.partition,
                        error: p.error.map(ApiError::from),
                        high_watermark: p.high_watermark,
                        batches: p.batches,
                        next_offset: p.next_offset,
                        last_stable_offset: p.last_stable_offset,
                        aborted: p
                            .aborted_transactions
                            .into_iter()
                            .map(|a| (a.producer_id, a.first_offset))
                            .collect(),
                    })
                    .collect()
            })
        }))
    }

    /// A new producer identity (id, epoch) for an idempotent producer.
    pub async fn init_producer_id(&self) -> Result<(i64, i16), ClientError> {
        let response = self
            .broker
            .clone()
            .init_producer_id(self.call(v1::InitProducerIdRequest::default()))
            .await?
            .into_inner();
        let epoch = i16::try_from(response.producer_epoch).map_err(|_| {
            ClientError::Transport(format!(
                "the broker answered producer epoch {}, out of range",
                response.producer_epoch
            ))
        })?;
        Ok((response.producer_id, epoch))
    }

    /// Offsets of partitions, each answered on its own.
    pub async fn list_offsets(
        &self,
        queries: Vec<(String, u32, OffsetSpec)>,
    ) -> Result<Vec<Result<i64, ApiError>>, ClientError> {
        let request = v1::ListOffsetsRequest {
            partitions: queries
                .into_iter()
                .map(|(topic, partition, spec)| {
                    let (spec, timestamp_ms) = match spec {
                        OffsetSpec::Earliest => (v1::OffsetSpec::Earliest, 0),
                        OffsetSpec::Latest => (v1::OffsetSpec::Latest, 0),
                        OffsetSpec::Timestamp(ts) => (v1::OffsetSpec::Timestamp, ts),
                        OffsetSpec::LastStable => (v1::OffsetSpec::LastStable, 0),
                    };
                    v1::ListOffsetsPartition {
                        topic,
                        partition,
                        spec: spec as i32,
                        timestamp_ms,
                    }
                })
                .collect(),
        };
        let response = self
            .broker
            .clone()
            .list_offsets(self.call(request))
            .await?
            .into_inner();
        Ok(response
            .partitions
            .into_iter()
            .map(|p| match p.error {
                Some(e) => Err(ApiError::from(e)),
                None => Ok(p.offset),
            })
            .collect())
    }
}

fn first_result(results: Vec<v1::TopicResult>) -> Result<(), ClientError> {
    match results.into_iter().next() {
        Some(result) => Ok(api(result.error)?),
        None => Err(ClientError::Transport(
            "the broker returned no result".into(),
        )),
    }
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}
