//! The controller on one node: its replica of the metadata group (Raft group 0), the
//! state every node rebuilds from that log, and, on the leader, the decisions that write
//! to it.
//!
//! The metadata log is a partition log like any other: the leader appends records as a
//! Kafka batch, and every replica applies what is committed (up to the high watermark)
//! by reading its own log, as a consumer would. Configured controller voters vote; every
//! other broker follows as a learner, so any node answers metadata requests locally.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spool_log::{FlushPolicy, LogConfig};
use spool_raft::{AckLevel, PartitionReplica, RaftNode, ReplicaError, ReplicaSpec};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::applier::{Applier, LogProgress};
use crate::bootstrap;
use crate::error::ControllerError;
use crate::records::{MetadataRecord, encode_batch};
use crate::remote::Peers;
use crate::state::{BrokerId, ClusterState, Incarnation};

/// The controller's Raft group id; partitions' groups start at 1.
pub const METADATA_GROUP: u64 = 0;

/// Bytes of metadata records between checkpoints, by default.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;

/// Segments a quarter of the checkpoint interval long: the log keeps at most about one
/// interval and a segment before the last checkpoint.
fn segment_bytes(checkpoint_bytes: u64) -> u64 {
    (checkpoint_bytes / 4).clamp(4096, 256 * 1024 * 1024)
}

/// How long a decision waits for the leader to be ready, or a record to apply.
const DECISION_WAIT: Duration = Duration::from_secs(10);

/// Checks a topic's configs; the broker knows them, the controller only stores them.
pub type ConfigValidator =
    Arc<dyn Fn(&BTreeMap<String, String>) -> Result<(), String> + Send + Sync>;

/// Cluster-wide defaults for topics created without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicDefaults {
    pub partitions: u32,
    /// 0: three, or fewer when fewer brokers are live.
    pub replication_factor: u32,
    pub max_partitions: u32,
    /// Most partition replicas one broker may hold; a creation or growth that would put
    /// more on any broker is refused.
    pub max_replicas_per_broker: u32,
}

#[derive(Clone)]
pub struct ControllerOptions {
    pub broker_id: BrokerId,
    pub incarnation: Incarnation,
    /// host:port of this node's cluster listener (Raft, Controller, ReplicaAdmin): what
    /// the voters list and peers use.
    pub address: String,
    /// host:port clients reach this node at.
    pub client_address: String,
    /// host:port clients outside the nodes' network reach this node at, if it has an
    /// external listener.
    pub external_address: Option<String>,
    pub rack: Option<String>,
    /// The controller's voters, by id, with their addresses.
    pub voters: BTreeMap<BrokerId, String>,
    /// Where this node keeps its replica of the metadata log.
    pub dir: PathBuf,
    pub flush: FlushPolicy,
    /// A broker that has not heartbeated for this long is fenced.
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub topic_defaults: TopicDefaults,
    /// The leader writes a checkpoint once this many bytes of records follow the last one
    /// (`DEFAULT_CHECKPOINT_BYTES`); the log before a checkpoint is then removed.
    pub checkpoint_bytes: u64,
    pub validate_configs: ConfigValidator,
}

impl std::fmt::Debug for ControllerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerOptions")
            .field("broker_id", &self.broker_id)
            .field("voters", &self.voters)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Leases of brokers, kept by the leader in memory (heartbeats are not logged). A new
/// leader starts every lease afresh.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    /// The term these leases were granted in.
    pub term: Option<u64>,
    pub renewed: HashMap<BrokerId, Instant>,
}

#[derive(Debug)]
pub struct Controller {
    pub(crate) options: ControllerOptions,
    pub(crate) replica: Arc<PartitionReplica>,
    pub(crate) state: watch::Sender<Arc<ClusterState>>,
    pub(crate) leases: parking_lot::Mutex<Leases>,
    /// Serialises the leader's decisions: each reads the applied state and writes.
    pub(crate) decide: tokio::sync::Mutex<()>,
    /// This node votes in the metadata group: false while a voter that started without
    /// a metadata log is still joining (see `bootstrap`).
    pub(crate) voting: watch::Sender<bool>,
    /// How much of the log the state has applied since the last checkpoint.
    pub(crate) progress: Arc<parking_lot::Mutex<LogProgress>>,
    /// Why this node stopped applying metadata, once it has (see `applier`).
    pub(crate) halted: Arc<parking_lot::Mutex<Option<String>>>,
    pub(crate) peers: Peers,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// This broker is stopping (see `announce_stopping`).
    pub(crate) stopping: std::sync::atomic::AtomicBool,
}

impl Controller {
    /// Opens this node's replica of the metadata group and starts applying it; on the
    /// configured voters the group starts with them as its members.
    pub async fn start(
        raft: &Arc<RaftNode>,
        options: ControllerOptions,
    ) -> Result<Arc<Self>, ControllerError> {
        let voter = match options.voters.get(&options.broker_id) {
            Some(address) if *address != options.address => {
                return Err(ControllerError::InvalidRequest {
                    reason: format!(
                        "controller voter {} is configured at {address}, but this node \
                         advertises {}: another node may hold this id",
                        options.broker_id, options.address
                    ),
                });
            }
            Some(_) => true,
            None => false,
        };
        // Decided before the replica opens, which creates the log's directory.
        let joining = voter && bootstrap::must_join(&options.dir, options.voters.len());
        if joining {
            bootstrap::write_marker(&options.dir)?;
            raft.withhold_votes(METADATA_GROUP, true);
        }
        raft.takes_entries_when_full(METADATA_GROUP);
        let replica = raft
            .create_replica(ReplicaSpec {
                group: METADATA_GROUP,
                dir: options.dir.clone(),
                log_config: LogConfig {
                    segment_bytes: segment_bytes(options.checkpoint_bytes),
                    flush: options.flush,
                    ..LogConfig::default()
                },
                initial_members: if voter && !joining {
                    options.voters.clone()
                } else {
                    BTreeMap::new()
                },
            })
            .await?;
        let controller = Arc::new(Self {
            options,
            replica,
            state: watch::Sender::new(Arc::new(ClusterState::default())),
            leases: parking_lot::Mutex::new(Leases::default()),
            decide: tokio::sync::Mutex::new(()),
            progress: Arc::default(),
            halted: Arc::default(),
            voting: watch::Sender::new(!joining),
            peers: Peers::default(),
            tasks: parking_lot::Mutex::new(Vec::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        let applier = tokio::spawn(
            Applier {
                replica: Arc::downgrade(&controller.replica),
                state: controller.state.clone(),
                progress: Arc::clone(&controller.progress),
                halted: Arc::clone(&controller.halted),
            }
            .run(),
        );
        let leader = tokio::spawn(crate::leader::run(Arc::downgrade(&controller)));
        *controller.tasks.lock() = vec![applier, leader];
        if joining {
            controller.replica.set_elect(false);
            let join = tokio::spawn(bootstrap::join(
                Arc::downgrade(&controller),
                Arc::downgrade(raft),
            ));
            controller.tasks.lock().push(join);
        }
        Ok(controller)
    }

    pub fn broker_id(&self) -> BrokerId {
        self.options.broker_id
    }

    pub fn options(&self) -> &ControllerOptions {
        &self.options
    }

    /// The applied metadata; changes as records apply.
    pub fn state(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.subscribe()
    }

    pub fn current(&self) -> Arc<ClusterState> {
        self.state.borrow().clone()
    }

    pub fn replica(&self) -> &Arc<PartitionReplica> {
        &self.replica
    }

    /// Whether this node votes in the metadata group: false while a voter that started
    /// without a metadata log rebuilds it (learners never vote, and read true).
    pub fn voting(&self) -> watch::Receiver<bool> {
        self.voting.subscribe()
    }

    pub fn is_leader(&self) -> bool {
        self.replica.is_leader()
    }

    /// The controller leader this node knows of: id and address.
    pub fn leader(&self) -> Option<(BrokerId, String)> {
        let hint = self.replica.leader();
        let id = hint.node?;
        // The configuration and the metadata know where a node is now; the group's
        // membership may hold an older address.
        let address = self
            .options
            .voters
            .get(&id)
            .cloned()
            .or_else(|| self.current().address_of(id).map(str::to_string))
            .or(hint.address)?;
        Some((id, address))
    }

    /// Waits until this node's metadata has applied `offset`.
    /// Asks `broker` (through its cluster listener) to mark a transaction's outcome in
    /// the partitions it leads: one answer per partition, in order.
    pub async fn write_txn_markers(
        &self,
        broker: BrokerId,
        markers: crate::TxnMarkers,
    ) -> Result<Vec<Result<(), ControllerError>>, ControllerError> {
        let state = self.current();
        let address = state
            .address_of(broker)
            .ok_or_else(|| ControllerError::Unreachable {
                address: format!("node {broker}"),
                reason: "not in the cluster's metadata".into(),
            })?
            .to_string();
        self.peers.write_txn_markers(&address, markers).await
    }

    pub async fn wait_applied(&self, offset: i64) -> Result<Arc<ClusterState>, ControllerError> {
        let mut state = self.state.subscribe();
        let applied = tokio::time::timeout(DECISION_WAIT, state.wait_for(|s| s.offset >= offset))
            .await
            .map_err(|_| ControllerError::TimedOut {
                what: "the metadata to apply",
            })?
            .map_err(|_| ControllerError::ShuttingDown)?;
        Ok(applied.clone())
    }

    pub(crate) fn not_controller(&self) -> ControllerError {
        match self.leader() {
            Some((id, address)) if id != self.options.broker_id => ControllerError::NotController {
                leader: Some(id),
                address: Some(address),
            },
            _ => ControllerError::NotController {
                leader: None,
                address: None,
            },
        }
    }

    /// On the leader: waits until every record of earlier terms is applied here, so
    /// decisions read the whole committed state. Anywhere else: `NotController`.
    pub(crate) async fn ready_to_decide(&self) -> Result<Arc<ClusterState>, ControllerError> {
        let deadline = tokio::time::Instant::now() + DECISION_WAIT;
        let mut changes = self.replica.changes();
        let mut state = self.state.subscribe();
        loop {
            if let Some(reason) = self.halted.lock().clone() {
                return Err(ControllerError::Halted { reason });
            }
            if !self.replica.is_leader() {
                return Err(self.not_controller());
            }
            let own_term_applied = self.replica.leads_and_applied_own_term();
            let high_watermark = *self.replica.high_watermark().borrow();
            let current = state.borrow_and_update().clone();
            if own_term_applied && current.offset >= high_watermark {
                return Ok(current);
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = state.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ControllerError::TimedOut { what: "the controller to be ready" });
                }
            }
        }
    }

    /// On the leader: writes records as one batch and waits until they are applied here.
    /// Answers with the metadata offset after them.
    pub(crate) async fn propose(
        &self,
        records: Vec<MetadataRecord>,
    ) -> Result<i64, ControllerError> {
        let count = records.len() as i64;
        let batch = encode_batch(&records, crate::now_ms())?;
        let base = self
            .replica
            .append(vec![batch], AckLevel::All)
            .await
            .map_err(|e| match e {
                ReplicaError::NotLeader { .. } => self.not_controller(),
                other => ControllerError::from(other),
            })?;
        let end = base.first().copied().unwrap_or(-1) + count;
        self.wait_applied(end).await?;
        Ok(end)
    }

    /// Stops the controller's tasks (the replica stops with the node).
    pub fn stop(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop();
    }
}
