//! The broker: the partitions this node replicates and the operations clients ask of
//! them. Every partition is a Raft group (of one replica on a single node), so there is
//! one write path whatever the replication factor.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use spool_controller::{
    AgentStatus, ClusterState, Controller, ControllerOptions, LeaderSource, TopicDefaults,
    TopicRecord,
};
use spool_log::{FlushPolicy, ValidBatch};
use spool_raft::{AckLevel, RaftNode, RaftNodeOptions, RaftTiming, ReplicaError};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::OffsetQuery;
use crate::error::BrokerError;
use crate::identity::NodeIdentity;
use crate::partition::{Acks, Partition};
use crate::topic_config::TopicConfig;

/// How a broker runs.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub node_id: u64,
    /// host:port clients use to reach this node's client listener.
    pub advertised_address: String,
    /// host:port clients outside the nodes' network use to reach its external client
    /// listener, if it has one.
    pub external_advertised_address: Option<String>,
    /// host:port other nodes use to reach its cluster listener (Raft, the controller,
    /// ReplicaAdmin).
    pub cluster_address: String,
    pub data_dir: PathBuf,
    /// Free space on the data volume under which produce requests are refused (`None`:
    /// the default, see `DiskSpace`).
    pub min_free_bytes: Option<u64>,
    /// An idempotent producer silent this long is forgotten by the partitions.
    pub producer_expiry: Duration,
    pub flush: FlushPolicy,
    pub topic_defaults: TopicConfig,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    /// Most partitions one topic may have.
    pub max_partitions: u32,
    /// Most partition replicas one broker may hold.
    pub max_replicas_per_broker: u32,
    /// Bytes of fetched batches all fetch sessions may hold at once (queued for consumers).
    pub fetch_memory_bytes: usize,
    /// Heartbeat and election timing of partition groups.
    pub raft_timing: RaftTiming,
    /// Time between retention passes over every partition.
    pub retention_check: Duration,
    /// Replication factor of a topic created without one; 0 for three, or fewer when
    /// fewer brokers are live.
    pub default_replication_factor: u32,
    /// The rack this node is in, for placement.
    pub rack: Option<String>,
    /// The controller's voters (id to address); empty for a single node that is its own
    /// controller.
    pub controller_voters: BTreeMap<u64, String>,
    /// A broker silent this long is fenced by the controller.
    pub session_timeout: Duration,
    /// How often this broker heartbeats to the controller.
    pub heartbeat_interval: Duration,
    /// Bytes of metadata records between the controller's checkpoints.
    pub metadata_checkpoint_bytes: u64,
    /// Consumer group coordination.
    pub groups: crate::groups::GroupOptions,
    /// How transactions are coordinated here.
    pub transactions: crate::transactions::TransactionOptions,
}

/// This node as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: u64,
    pub address: String,
}

/// What a partition's append gave the produced batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of the first record; -1 when acks=none did not wait to learn it.
    pub base_offset: i64,
    /// Each batch's first offset, in request order (empty with acks=none).
    pub batch_base_offsets: Vec<i64>,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// The batches a produce request carries for one partition.
#[derive(Debug, Clone)]
pub struct ProducePartition {
    pub topic: String,
    pub partition: u32,
    pub batches: Vec<Bytes>,
    /// The leader epoch the client believes in; checked when given.
    pub leader_epoch: Option<u64>,
}

/// Where a node is reached, and its rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    pub address: String,
    pub rack: Option<String>,
}

/// A topic as admin calls describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: String,
    pub replication_factor: u32,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
    /// (name, value, is default)
    pub configs: Vec<(String, String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    /// `None` when no leader is known here.
    pub leader: Option<u64>,
    pub leader_address: Option<String>,
    pub replicas: Vec<u64>,
    pub in_sync_replicas: Vec<u64>,
    /// The leader's Raft term: grows with each new leader (0 when unknown).
    pub leader_epoch: u64,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
}

/// A partition's offsets and size at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    pub topic: String,
    pub partition: u32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    pub is_leader: bool,
}

#[derive(Debug)]
pub(crate) struct TopicState {
    pub record: TopicRecord,
    pub config: TopicConfig,
    /// The partitions this node hosts a replica of; `None` for the others.
    pub partitions: Vec<Option<Arc<Partition>>>,
}

/// A node's broker. Cheap to share: hold it in an `Arc`.
#[derive(Debug)]
pub struct Broker {
    pub(crate) options: BrokerOptions,
    pub(crate) identity: parking_lot::Mutex<NodeIdentity>,
    /// The topics as the metadata shows them, with this node's replicas of them.
    pub(crate) topics: RwLock<BTreeMap<String, Arc<TopicState>>>,
    pub(crate) raft: Arc<RaftNode>,
    pub(crate) controller: Arc<Controller>,
    pub(crate) agent: watch::Receiver<AgentStatus>,
    /// Serialises passes that make local replicas match the metadata.
    pub(crate) reconciling: Mutex<()>,
    /// Groups whose reassignment this node (their leader) is carrying out.
    pub(crate) moving: parking_lot::Mutex<HashSet<u64>>,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// This broker, for tasks it starts.
    pub(crate) this: std::sync::Weak<Broker>,
    /// Set when shutdown begins; fetch sessions end on it.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
    /// Compressed batches being checked at once (each may expand to 256 MiB): bounds the
    /// memory and keeps the work off the async threads.
    decompressing: Arc<tokio::sync::Semaphore>,
    /// Bytes of acks=none appends in flight (see `ACKS_NONE_BYTES`).
    acks_none_bytes: Arc<tokio::sync::Semaphore>,
    /// Bytes fetch sessions hold (see `fetch::FETCH_MEMORY_BYTES`).
    pub(crate) fetch_memory: Arc<tokio::sync::Semaphore>,
    /// The consumer groups this node coordinates.
    pub(crate) groups: crate::groups::Groups,
    pub(crate) transactions: crate::transactions::Transactions,
    /// Producer ids this node hands out.
    pub(crate) producer_ids: crate::producer_ids::ProducerIds,
}

/// How long a single node waits to have registered with itself before serving.
const SOLO_REGISTRATION_WAIT: Duration = Duration::from_secs(10);

/// Compressed batches validated at the same time, on the blocking pool.
const DECOMPRESSING_AT_ONCE: usize = 2;

/// Bytes of acks=none batches being appended at once. Nobody waits for their outcome, so
/// without a bound a flood of them would queue without limit; beyond it, a request waits
/// for room (back-pressure on the producer's connection).
const ACKS_NONE_BYTES: usize = 64 * 1024 * 1024;

impl Broker {
    /// Opens the data directory, joins the controller group and reopens every replica
    /// the metadata gives this node.
    pub async fn open(mut options: BrokerOptions) -> Result<Arc<Self>, BrokerError> {
        let identity = NodeIdentity::open(&options.data_dir, options.node_id)?;
        // Writes an earlier process made but never synced must not pass for durable.
        spool_log::sync_filesystem(&options.data_dir).map_err(BrokerError::from)?;
        match spool_raft::sweep_deleted(&options.data_dir) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                "finished deleting partitions an earlier stop interrupted"
            ),
            Err(error) => {
                tracing::error!(dir = %options.data_dir.display(), %error, "could not finish deleting partitions an earlier stop interrupted")
            }
        }
        if options.controller_voters.is_empty() {
            options
                .controller_voters
                .insert(options.node_id, options.cluster_address.clone());
        }
        let raft = RaftNode::open(RaftNodeOptions {
            node_id: options.node_id,
            state_dir: options.data_dir.clone(),
            timing: options.raft_timing,
            min_free_bytes: options.min_free_bytes,
            producer_expiry: options.producer_expiry,
        })
        .map_err(BrokerError::from)?;
        // The voters are where the configuration says, whatever an older membership of
        // the metadata group recorded.
        raft.set_peer_addresses(options.controller_voters.clone());
        let defaults = options.topic_defaults;
        let controller = Controller::start(
            &raft,
            ControllerOptions {
                broker_id: options.node_id,
                incarnation: identity.incarnation,
                address: options.cluster_address.clone(),
                client_address: options.advertised_address.clone(),
                external_address: options.external_advertised_address.clone(),
                rack: options.rack.clone(),
                voters: options.controller_voters.clone(),
                dir: options.data_dir.join("__controller"),
                flush: options.flush,
                session_timeout: options.session_timeout,
                heartbeat_interval: options.heartbeat_interval,
                topic_defaults: TopicDefaults {
                    partitions: options.default_partitions,
                    replication_factor: options.default_replication_factor,
                    max_partitions: options.max_partitions,
                    max_replicas_per_broker: options.max_replicas_per_broker,
                },
                checkpoint_bytes: options.metadata_checkpoint_bytes,
                validate_configs: Arc::new(move |configs| {
                    TopicConfig::resolve(&defaults, configs)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }),
            },
        )
        .await?;
        let solo = options.controller_voters.len() == 1
            && options.controller_voters.contains_key(&options.node_id);
        let broker = Arc::new_cyclic(|weak: &std::sync::Weak<Broker>| {
            let source: std::sync::Weak<dyn LeaderSource> = weak.clone();
            let agent = controller.start_agent(source);
            Self {
                identity: parking_lot::Mutex::new(identity),
                topics: RwLock::new(BTreeMap::new()),
                raft,
                controller,
                agent,
                reconciling: Mutex::new(()),
                moving: parking_lot::Mutex::new(HashSet::new()),
                tasks: parking_lot::Mutex::new(Vec::new()),
                this: weak.clone(),
                closing: tokio::sync::watch::Sender::new(false),
                decompressing: Arc::new(tokio::sync::Semaphore::new(DECOMPRESSING_AT_ONCE)),
                acks_none_bytes: Arc::new(tokio::sync::Semaphore::new(ACKS_NONE_BYTES)),
                fetch_memory: Arc::new(tokio::sync::Semaphore::new(
                    options.fetch_memory_bytes.clamp(1024 * 1024, 1 << 40),
                )),
                groups: crate::groups::Groups::default(),
                transactions: crate::transactions::Transactions::default(),
                producer_ids: crate::producer_ids::ProducerIds::default(),
                options,
            }
        });
        // Reopen what the local metadata shows at once: a restarted node serves its
        // replicas before it hears from the controller.
        let committed = *broker.controller.replica().high_watermark().borrow();
        if let Err(error) = broker.controller.wait_applied(committed).await {
            tracing::warn!(%error, "the local metadata is still being applied");
        }
        broker.reconcile(&broker.controller.current()).await;
        let reconciler = tokio::spawn(crate::reconcile::run(
            Arc::downgrade(&broker),
            broker.controller.state(),
        ));
        let retention = tokio::spawn(retention_ticker(Arc::downgrade(&broker)));
        let coordinators = tokio::spawn(crate::groups::watch(Arc::downgrade(&broker)));
        *broker.tasks.lock() = vec![reconciler, retention, coordinators];
        if solo {
            broker.wait_registered(SOLO_REGISTRATION_WAIT).await?;
            broker.reconcile(&broker.controller.current()).await;
        }
        Ok(broker)
    }

    /// Waits until the controller has registered this broker and the local metadata
    /// shows it.
    pub async fn wait_registered(&self, timeout: Duration) -> Result<(), BrokerError> {
        let mut agent = self.agent.clone();
        let status = tokio::time::timeout(
            timeout,
            agent.wait_for(|s| s.registered || s.refused.is_some()),
        )
        .await
        .map_err(|_| BrokerError::TimedOut {
            ms: timeout.as_millis() as u64,
        })?
        .map_err(|_| BrokerError::ShuttingDown)?
        .clone();
        if let Some(reason) = status.refused {
            return Err(BrokerError::InvalidRequest { reason });
        }
        self.controller
            .wait_applied(status.controller_offset)
            .await?;
        Ok(())
    }

    /// Where this broker stands with the controller.
    /// Bytes of the node's fetch memory no fetch session holds now.
    pub fn fetch_memory_available(&self) -> usize {
        self.fetch_memory.available_permits()
    }

    pub fn agent_status(&self) -> watch::Receiver<AgentStatus> {
        self.agent.clone()
    }

    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The applied metadata.
    pub fn metadata(&self) -> Arc<ClusterState> {
        self.controller.current()
    }

    /// The node's Raft side: its transport service and replica lifecycle.
    pub fn raft(&self) -> &Arc<RaftNode> {
        &self.raft
    }

    /// Ends every fetch session, so that servers can drain; writes still work.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
        self.raft.begin_shutdown();
    }

    /// Stops every replica and writes what is pending.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        self.controller.stop();
        let _turn = self.reconciling.lock().await;
        self.topics.write().clear();
        self.raft.shutdown().await;
        self.identity.lock().release();
    }

    pub fn node(&self) -> NodeInfo {
        NodeInfo {
            node_id: self.options.node_id,
            address: self.options.advertised_address.clone(),
        }
    }

    /// An error as a client should see it: a NOT_LEADER hint names the leader's client
    /// address, not the cluster address Raft knows it by.
    pub(crate) fn for_clients(&self, error: BrokerError) -> BrokerError {
        match error {
            BrokerError::NotLeader {
                leader: Some(leader),
                ..
            } => BrokerError::NotLeader {
                leader: Some(leader),
                address: self
                    .controller
                    .current()
                    .client_address_of(leader)
                    .map(str::to_string),
            },
            other => other,
        }
    }

    /// Where clients of the external listener reach `node`, if it has such a listener.
    pub fn external_address_of(&self, node: u64) -> Option<String> {
        self.controller
            .current()
            .external_address_of(node)
            .map(str::to_string)
    }

    pub fn cluster_id(&self) -> String {
        self.controller.current().cluster_id.clone()
    }

    /// The metadata offset applied here: grows with every metadata change.
    pub fn metadata_epoch(&self) -> u64 {
        self.controller.current().offset.max(0) as u64
    }

    async fn apply_retention(&self) {
        let partitions: Vec<Arc<Partition>> = self
            .topics
            .read()
            .values()
            .flat_map(|t| t.partitions.iter().flatten().cloned())
            .collect();
        for partition in partitions {
            let policy = *partition.retention.lock();
            match partition.replica.apply_retention(&policy, now_ms()).await {
                Ok(true) => tracing::info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    start_offset = partition.reader.start_offset(),
                    "retention removed old segments"
                ),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "retention failed")
                }
            }
        }
    }

    pub(crate) fn topic(&self, name: &str) -> Result<Arc<TopicState>, BrokerError> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic {
                topic: name.to_string(),
            })
    }

    /// The local replica of a partition.
    pub(crate) fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<Partition>, BrokerError> {
        let state = self.topic(topic)?;
        match state.partitions.get(partition as usize) {
            Some(Some(p)) => Ok(Arc::clone(p)),
            Some(None) => {
                let metadata = self.controller.current();
                let leader = state
                    .record
                    .partitions
                    .get(partition as usize)
                    .and_then(|p| p.leader.or_else(|| p.preferred_leader()));
                Err(BrokerError::NotLeader {
                    leader,
                    address: leader
                        .and_then(|id| metadata.client_address_of(id).map(str::to_string)),
                })
            }
            None => Err(BrokerError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            }),
        }
    }

    /// The live brokers (and this node), by id, with their addresses and racks.
    pub fn known_nodes(&self) -> BTreeMap<u64, NodeAddress> {
        let mut nodes: BTreeMap<u64, NodeAddress> = self
            .controller
            .current()
            .live_brokers()
            .map(|b| {
                let node = NodeAddress {
                    address: b.client_address().to_string(),
                    rack: b.rack.clone(),
                };
                (b.id, node)
            })
            .collect();
        let rack = nodes
            .get(&self.options.node_id)
            .and_then(|n| n.rack.clone());
        nodes.insert(
            self.options.node_id,
            NodeAddress {
                address: self.options.advertised_address.clone(),
                rack: rack.or_else(|| self.options.rack.clone()),
            },
        );
        nodes
    }

    /// Offsets and size of every local replica, for metrics.
    pub fn partition_stats(&self) -> Vec<PartitionStats> {
        let topics = self.topics.read();
        topics
            .values()
            .flat_map(|t| t.partitions.iter().flatten())
            .map(|p| PartitionStats {
                topic: p.topic.clone(),
                partition: p.index,
                log_start_offset: p.reader.start_offset(),
                high_watermark: p.high_watermark(),
                size_bytes: p.reader.size_bytes(),
                is_leader: p.replica.is_leader(),
            })
            .collect()
    }

    /// Appends each partition's batches; answers come back in request order. A partition
    /// whose batches fail validation appends none of them and reports why; the others
    /// are unaffected. Partitions are written concurrently.
    pub async fn produce(
        &self,
        partitions: Vec<ProducePartition>,
        acks: Acks,
        timeout: Duration,
    ) -> Vec<Result<AppendOutcome, BrokerError>> {
        let now_ms = now_ms();
        let level = match acks {
            Acks::All => AckLevel::All,
            Acks::Leader | Acks::None => AckLevel::Leader,
        };
        // One look at the volume per request: a nearly full one refuses every write in it.
        let full = match self.raft.disk().admit_client_write() {
            Err(ReplicaError::DiskFull { available, floor }) => Some((available, floor)),
            _ => None,
        };
        let appends = partitions.into_iter().map(|produce| async move {
            let (partition, batches) = self
                .validate(&produce, now_ms)
                .await
                .map_err(|e| self.for_clients(e))?;
            if let Some((available, floor)) = full {
                return Err(BrokerError::DiskFull { available, floor });
            }
            let append = {
                let replica = Arc::clone(&partition.replica);
                async move { replica.append(batches, level).await }
            };
            if acks == Acks::None {
                let bytes: usize = produce.batches.iter().map(Bytes::len).sum();
                let room = Arc::clone(&self.acks_none_bytes)
                    .acquire_many_owned(bytes.clamp(1, ACKS_NONE_BYTES) as u32)
                    .await
                    .map_err(|_| BrokerError::ShuttingDown)?;
                tokio::spawn(async move {
                    if let Err(error) = append.await {
                        tracing::debug!(%error, "an acks=none produce failed");
                    }
                    drop(room);
                });
                return Ok(AppendOutcome {
                    base_offset: -1,
                    batch_base_offsets: Vec::new(),
                    log_append_time_ms: now_ms,
                    log_start_offset: -1,
                });
            }
            match tokio::time::timeout(timeout, append).await {
                Ok(Ok(batch_base_offsets)) => Ok(AppendOutcome {
                    base_offset: batch_base_offsets.first().copied().unwrap_or(-1),
                    batch_base_offsets,
                    log_append_time_ms: now_ms,
                    log_start_offset: partition.reader.start_offset(),
                }),
                Ok(Err(error)) => Err(self.for_clients(BrokerError::from(error))),
                Err(_) => Err(BrokerError::TimedOut {
                    ms: timeout.as_millis() as u64,
                }),
            }
        });
        futures_util::future::join_all(appends).await
    }

    async fn validate(
        &self,
        produce: &ProducePartition,
        now_ms: i64,
    ) -> Result<(Arc<Partition>, Vec<Bytes>), BrokerError> {
        crate::topics::refuse_internal(&produce.topic, "write to")?;
        let state = self.topic(&produce.topic)?;
        let partition = self.partition(&produce.topic, produce.partition)?;
        if let Some(epoch) = produce.leader_epoch {
            partition.check_leader_epoch(epoch, true)?;
        }
        if produce.batches.is_empty() {
            return Err(BrokerError::InvalidRequest {
                reason: "a partition in a produce request carries no batch".into(),
            });
        }
        let max = state.config.max_message_bytes as usize;
        let mut batches = Vec::with_capacity(produce.batches.len());
        let mut to_decompress = Vec::new();
        for bytes in &produce.batches {
            if bytes.len() > max {
                return Err(BrokerError::RecordTooLarge {
                    size: bytes.len(),
                    max,
                });
            }
            let mut batch = ValidBatch::new(bytes.clone())?;
            if batch.view().is_control() {
                // Markers are the transaction coordinator's to write, never a client's.
                return Err(BrokerError::InvalidRequest {
                    reason: "a produce request may not carry a control batch".into(),
                });
            }
            let config = &state.config;
            if config.timestamp_type == crate::topic_config::TimestampType::LogAppendTime {
                // The broker's clock: a copy of the batch, stamped (its CRC redone).
                let mut stamped = batch.view().as_bytes().to_vec();
                spool_log::batch::set_log_append_time(&mut stamped, now_ms);
                batch = ValidBatch::new(Bytes::from(stamped))?;
            } else {
                let view = batch.view();
                config.check_timestamps(view.base_timestamp(), view.max_timestamp(), now_ms)?;
            }
            let compressed = batch
                .view()
                .compression()
                .is_some_and(|c| c != spool_log::batch::Compression::None);
            if compressed {
                to_decompress.push(batch.clone());
            } else {
                batch.view().validate_records()?;
            }
            batches.push(batch.into_bytes());
        }
        if !to_decompress.is_empty() {
            // Owned and moved into the work: a request dropped meanwhile (the client went
            // away) does not free its place while the decompression still runs.
            let permit = Arc::clone(&self.decompressing)
                .acquire_owned()
                .await
                .map_err(|_| BrokerError::ShuttingDown)?;
            tokio::task::spawn_blocking(move || {
                let checked = to_decompress
                    .iter()
                    .try_for_each(|batch| batch.view().validate_records());
                drop(permit);
                checked
            })
            .await
            .map_err(|_| BrokerError::ShuttingDown)??;
        }
        Ok((partition, batches))
    }

    /// An offset of a partition: earliest, latest (the high watermark), or the first at
    /// or after a timestamp (-1 if there is none).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        query: OffsetQuery,
    ) -> Result<i64, BrokerError> {
        let partition = self.partition(topic, partition)?;
        // Only a leader that caught up in its term knows where the partition ends: a
        // follower's (or a restarted node's) high watermark may be behind. Any replica
        // answers with its own log start.
        if query != OffsetQuery::Earliest
            && !(partition.knows_high_watermark() && partition.quorum_confirms_lead().await)
        {
            let hint = partition.replica.leader();
            return Err(self.for_clients(BrokerError::NotLeader {
                leader: hint.node.filter(|node| *node != self.options.node_id),
                address: None,
            }));
        }
        match query {
            OffsetQuery::Earliest => Ok(partition.reader.start_offset()),
            OffsetQuery::Latest => Ok(partition.high_watermark()),
            OffsetQuery::LastStable => {
                Ok(partition.readable_end(spool_types::IsolationLevel::ReadCommitted))
            }
            OffsetQuery::Timestamp(ts) => {
                Ok(partition.offset_for_timestamp(ts).await?.unwrap_or(-1))
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

async fn retention_ticker(broker: std::sync::Weak<Broker>) {
    let Some(every) = broker.upgrade().map(|b| b.options.retention_check) else {
        return;
    };
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        broker.apply_retention().await;
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl From<ReplicaError> for BrokerError {
    fn from(error: ReplicaError) -> Self {
        match error {
            ReplicaError::NotLeader {
                leader,
                leader_address,
                ..
            } => BrokerError::NotLeader {
                leader,
                address: leader_address,
            },
            ReplicaError::ShuttingDown => BrokerError::ShuttingDown,
            ReplicaError::DiskFull { available, floor } => {
                BrokerError::DiskFull { available, floor }
            }
            ReplicaError::Storage(e) => BrokerError::from(e),
            ReplicaError::Sequence(e) => BrokerError::Sequence(e),
            other => BrokerError::Replication {
                reason: other.to_string(),
            },
        }
    }
}
