//! A node's replication: every partition replica it hosts, the shared state store,
//! flusher and peer channels, and the lifecycle the controller drives (create with
//! members, join as a learner, remove, delete data).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::{BasicNode, SnapshotPolicy};
use parking_lot::RwLock;
use spool_log::{FlushPolicy, LogConfig};
use tokio::task::JoinHandle;

use crate::disk::DiskSpace;
use crate::error::ReplicaError;
use crate::flusher::Flusher;
use crate::liveness::Liveness;
use crate::network::{Faults, GroupDirectory, GroupNetworkFactory, PeerPool, RaftTransportService};
use crate::rebuild;
use crate::replica::{Members, PartitionReplica};
use crate::state_store::NodeStateStore;
use crate::storage::open_group_storage;
use crate::types::{GroupId, NodeId, Raft};

/// How long opening a single-replica group waits for it to lead.
const SOLO_ELECTION_WAIT: Duration = Duration::from_secs(5);

/// Timing of partition groups. Idle cost grows with partitions / heartbeat interval, so
/// heartbeats are slow and elections follow from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// A group idle this long, with every follower caught up, stops its timers
    /// (`liveness`); `None` keeps every group ticking.
    pub quiesce_after_ms: Option<u64>,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            heartbeat_ms: 150,
            election_min_ms: 500,
            election_max_ms: 800,
            quiesce_after_ms: Some(3000),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RaftNodeOptions {
    pub node_id: NodeId,
    /// Where the node's Raft state file lives.
    pub state_dir: PathBuf,
    pub timing: RaftTiming,
    /// Free space on the data volume under which client writes are refused (`None`: the
    /// default, see `DiskSpace`; `Some(0)`: never).
    pub min_free_bytes: Option<u64>,
    /// An idempotent producer that writes nothing for this long is forgotten by the
    /// partitions (Kafka's `producer.id.expiration.ms`).
    pub producer_expiry: Duration,
}

/// How long an idle producer's sequence state is kept by default: a day, as in Kafka.
pub const DEFAULT_PRODUCER_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// What a new replica is created with.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    pub group: GroupId,
    pub dir: PathBuf,
    pub log_config: LogConfig,
    /// The group's first voters (node id to address). Each creates the group with the same
    /// membership; empty to join an existing group as a learner the leader adds.
    pub initial_members: Members,
}

#[derive(Debug)]
pub struct RaftNode {
    options: RaftNodeOptions,
    config: Arc<openraft::Config>,
    store: NodeStateStore,
    flusher: Arc<Flusher>,
    pool: Arc<PeerPool>,
    replicas: RwLock<HashMap<GroupId, Arc<PartitionReplica>>>,
    /// Groups whose vote requests this node turns away (see `withhold_votes`).
    withheld: parking_lot::Mutex<std::collections::HashSet<GroupId>>,
    /// Groups that take entries even on a nearly full volume (see `takes_entries_when_full`).
    essential: parking_lot::Mutex<std::collections::HashSet<GroupId>>,
    /// Set as a graceful stop hands leadership over: replicas created from then on stand
    /// in no election either.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    liveness: Liveness,
    disk: DiskSpace,
    /// Changes with every start, so that peers can tell a restart.
    boot_id: u64,
    /// Set when the node begins to stop (see `begin_shutdown`).
    closing: tokio::sync::watch::Sender<bool>,
    clock: std::time::Instant,
}

impl RaftNode {
    pub fn open(options: RaftNodeOptions) -> Result<Arc<Self>, ReplicaError> {
        spool_log::create_dir_durably(&options.state_dir).map_err(|e| ReplicaError::StateFile {
            path: options.state_dir.clone(),
            reason: e.to_string(),
        })?;
        let store = NodeStateStore::open(options.state_dir.join("raft.state"))?;
        let flusher =
            Flusher::start(&format!("spool-flusher-{}", options.node_id)).map_err(|e| {
                ReplicaError::StateFile {
                    path: options.state_dir.clone(),
                    reason: format!("could not start the flusher: {e}"),
                }
            })?;
        let timing = options.timing;
        let config = openraft::Config {
            cluster_name: "spool-partition".into(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            max_payload_entries: 1024,
            api_batch_capacity: 1024,
            // A broker whose data was wiped comes back with an empty log. It only rejoins
            // partition groups as a new, empty learner, but it follows the controller's
            // log from where it stands: the leader must start that over instead of
            // treating it as a bug and stopping.
            allow_log_reversion: Some(true),
            // A leader that restarts comes back as a follower and is elected again, in a
            // new term. Restored as leader in its old term, it would serve from a state
            // machine that is only as new as its last lazy save (applied entries and the
            // commit index are not persisted on every write), and "has applied an entry
            // of its own term" would wrongly say it had caught up: a coordinator that
            // replayed then would answer with committed offsets older than ones already
            // acknowledged.
            enable_leader_restore: Some(false),
            // openraft keeps a ring of recent entries' timings per lifecycle stage (six
            // per group): at its default of 1024 that is some 150 KiB per replica, for
            // statistics Spool does not read.
            log_stage_capacity: Some(8),
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let disk = DiskSpace::new(options.state_dir.clone(), options.min_free_bytes);
        let node = Arc::new(Self {
            pool: PeerPool::new(options.node_id),
            options,
            config: Arc::new(config),
            store,
            flusher,
            replicas: RwLock::new(HashMap::new()),
            withheld: parking_lot::Mutex::new(std::collections::HashSet::new()),
            essential: parking_lot::Mutex::new(std::collections::HashSet::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            tasks: parking_lot::Mutex::new(Vec::new()),
            liveness: Liveness::default(),
            disk,
            boot_id: boot_id(),
            closing: tokio::sync::watch::Sender::new(false),
            clock: std::time::Instant::now(),
        });
        let weak = Arc::downgrade(&node);
        let mut tasks = crate::liveness::start(&node);
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                let Some(node) = weak.upgrade() else { return };
                for replica in node.replicas.read().values() {
                    if replica.interval_flush.load(Ordering::Relaxed) {
                        node.flusher.sync_if_due(Arc::clone(&replica.log));
                    }
                }
            }
        }));
        *node.tasks.lock() = tasks;
        Ok(node)
    }

    pub fn node_id(&self) -> NodeId {
        self.options.node_id
    }

    pub(crate) fn timing(&self) -> RaftTiming {
        self.options.timing
    }

    pub(crate) fn pool(&self) -> &Arc<PeerPool> {
        &self.pool
    }

    /// Free space on the node's data volume.
    pub fn disk(&self) -> &DiskSpace {
        &self.disk
    }

    pub(crate) fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Every other node in a group hosted here, with its address.
    pub(crate) fn peer_addresses(&self) -> BTreeMap<NodeId, String> {
        let mut peers = BTreeMap::new();
        for replica in self.replicas.read().values() {
            replica.add_member_addresses(&mut peers);
        }
        peers.remove(&self.options.node_id);
        peers
    }

    /// The RaftTransport service to add to the node's gRPC server.
    pub fn service(
        self: &Arc<Self>,
    ) -> spool_proto::v1::raft_transport_server::RaftTransportServer<RaftTransportService<Self>>
    {
        RaftTransportService::new(Arc::clone(self)).into_server()
    }

    /// Where other nodes are now, by the cluster's metadata: Raft messages go there
    /// rather than to an older address a group's membership may hold.
    pub fn set_peer_addresses(&self, addresses: impl IntoIterator<Item = (NodeId, String)>) {
        self.pool.set_addresses(addresses);
    }

    pub fn faults(&self) -> &Arc<Faults> {
        self.pool.faults()
    }

    pub fn replica(&self, group: GroupId) -> Option<Arc<PartitionReplica>> {
        self.replicas.read().get(&group).cloned()
    }

    pub fn replicas(&self) -> Vec<Arc<PartitionReplica>> {
        self.replicas.read().values().cloned().collect()
    }

    /// Turns away vote requests of `group` (the candidate sees this node as unreachable),
    /// or takes them again. A replica whose durable Raft state was lost (a wiped data
    /// directory) must not vote until its log holds everything committed before it came
    /// back: an empty log would grant votes its lost log would have refused, and could
    /// elect a leader missing committed entries. Set before the replica is created.
    pub fn withhold_votes(&self, group: GroupId, withhold: bool) {
        let mut withheld = self.withheld.lock();
        if withhold {
            withheld.insert(group);
        } else {
            withheld.remove(&group);
        }
    }

    /// Lets `group` take entries from its leader even when the volume is under half its
    /// floor: the metadata log, without which a full node would never learn of the topic
    /// deletion that frees its space. Its entries are small and come from the half of the
    /// floor kept back.
    pub fn takes_entries_when_full(&self, group: GroupId) {
        self.essential.lock().insert(group);
    }

    /// Groups this node has Raft state for (replicas to reopen after a restart).
    pub fn known_groups(&self) -> Vec<GroupId> {
        self.store.groups()
    }

    /// Opens (or reopens after a restart) a replica of a group on this node.
    pub async fn create_replica(
        &self,
        spec: ReplicaSpec,
    ) -> Result<Arc<PartitionReplica>, ReplicaError> {
        if self.replicas.read().contains_key(&spec.group) {
            return Err(ReplicaError::GroupExists { group: spec.group });
        }
        let interval_flush = matches!(spec.log_config.flush, FlushPolicy::Interval(_));
        let record = self.store.get(spec.group);
        let had_directory = spec.dir.exists();
        if record.is_none() && !had_directory {
            // A new replica's record is durable before its log holds anything, so that a
            // log without a record always means a lost state file (see `rebuild`).
            self.store
                .update_durable(spec.group, |_| {})
                .await
                .map_err(|e| ReplicaError::StateFile {
                    path: self.options.state_dir.join("raft.state"),
                    reason: e.to_string(),
                })?;
        }
        let open = || {
            open_group_storage(
                spec.group,
                &spec.dir,
                spec.log_config.clone(),
                self.store.clone(),
                Arc::clone(&self.flusher),
                self.options.producer_expiry.as_millis() as i64,
            )
        };
        let mut storage = open()?;
        rebuild::claim_dir(&spec.dir, spec.group)?;
        let damage = rebuild::damage(&rebuild::Opened {
            record: record.as_ref(),
            had_directory,
            bounds: storage.reader.bounds(),
            recovery: storage.log.lock().recovery_report(),
            fsync_acknowledged: spec.log_config.flush == FlushPolicy::Always,
        })
        .or_else(|| rebuild::unfinished(&spec.dir));
        let bounds = storage.reader.bounds();
        if damage == Some(rebuild::Damage::StateLost) {
            drop(storage);
            if bounds.first_index > 0 {
                // The snapshot record went with the state: where the log starts and, if
                // no membership entry is left in it, who the members are. Without them
                // the group cannot start right, so they are rebuilt from what is known.
                self.restore_lost_snapshot(&spec, bounds).await?;
            }
            // The vote went too. This replica voted in no term it had not reached, and
            // its log reached the last entry's term: it votes in later terms only.
            let floor = crate::codec::make_vote(bounds.last_term, self.options.node_id, false);
            self.store
                .update_durable(spec.group, |record| record.vote = Some(floor))
                .await
                .map_err(|e| ReplicaError::StateFile {
                    path: self.options.state_dir.join("raft.state"),
                    reason: e.to_string(),
                })?;
            storage = open()?;
            rebuild::claim_dir(&spec.dir, spec.group)?;
        }
        if damage.is_some() {
            // Before the group starts and may write anything: a crash from here on must
            // still find the replica rebuilding.
            rebuild::write_marker(&spec.dir)?;
        }
        let high_watermark = storage.state_machine.high_watermark();
        let last_stable = storage.state_machine.last_stable();
        let shared = Arc::clone(&storage.shared);
        let snapshot_target = Arc::clone(&storage.state_machine.snapshot_target);
        let network = GroupNetworkFactory::new(spec.group, Arc::clone(&self.pool));
        let raft = Raft::new(
            self.options.node_id,
            Arc::clone(&self.config),
            network,
            storage.log_store,
            storage.state_machine,
        )
        .await
        .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let rebuilding = damage.as_ref().is_some_and(|damage| {
            self.gate(spec.group, &spec.dir, &raft, damage, &spec.initial_members)
        });
        if let Err(error) = self.start_group(&raft, &spec, rebuilding).await {
            // Nothing may keep running on a log the node does not hold.
            if let Err(stop) = raft.shutdown().await {
                tracing::warn!(group = spec.group, %stop, "raft did not stop cleanly");
            }
            return Err(error);
        }
        let replica = Arc::new(PartitionReplica {
            group: spec.group,
            node_id: self.options.node_id,
            raft,
            reader: storage.reader,
            high_watermark,
            last_stable,
            shared,
            log: storage.log,
            snapshot_target,
            dir: spec.dir,
            quiet: tokio::sync::watch::Sender::new(false),
            last_activity_ms: AtomicU64::new(self.clock.elapsed().as_millis() as u64),
            clock: self.clock,
            interval_flush: std::sync::atomic::AtomicBool::new(interval_flush),
            gate: rebuild::RebuildGate::new(
                rebuilding,
                damage.as_ref().map_or(0, rebuild::Damage::floor),
            ),
            abstaining: std::sync::atomic::AtomicBool::new(false),
        });
        if rebuilding {
            self.tasks
                .lock()
                .push(tokio::spawn(rebuild::release_when_caught_up(Arc::clone(
                    &replica,
                ))));
        }
        // Under the lock a hand-over lists replicas with: either it sees this one, or this
        // sees that the node is stopping.
        let mut replicas = self.replicas.write();
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            replica.abstain();
        }
        replicas.insert(spec.group, Arc::clone(&replica));
        drop(replicas);
        Ok(replica)
    }

    /// For a replica whose state record was lost and whose log was purged: a group of one
    /// (this node alone founds it) gets its snapshot record back from the log's start and
    /// its one member; any other replica's log is set aside (kept for the operator) and
    /// it rejoins empty, to receive the leader's snapshot and log.
    async fn restore_lost_snapshot(
        &self,
        spec: &ReplicaSpec,
        bounds: spool_log::LogBounds,
    ) -> Result<(), ReplicaError> {
        let me = self.options.node_id;
        let alone = spec.initial_members.len() == 1 && spec.initial_members.contains_key(&me);
        if alone {
            let last = crate::types::log_id(bounds.prev_term, bounds.first_index - 1);
            let nodes: BTreeMap<NodeId, BasicNode> = spec
                .initial_members
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            let membership =
                crate::types::Membership::new(vec![nodes.keys().copied().collect()], nodes)
                    .map_err(|e| ReplicaError::Membership(e.to_string()))?;
            let snapshot = crate::state_store::SnapshotRecord {
                last_log_id: Some(last),
                membership: crate::types::StoredMembership::new(Some(last), membership),
                next_offset: bounds.start_offset,
            };
            return self
                .store
                .update_durable(spec.group, |record| record.snapshot = Some(snapshot))
                .await
                .map_err(|e| ReplicaError::StateFile {
                    path: self.options.state_dir.join("raft.state"),
                    reason: e.to_string(),
                });
        }
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let parent = spec.dir.parent().unwrap_or(Path::new("."));
        let aside = parent.join(format!("~lost-group-{}-{ms}", spec.group));
        std::fs::rename(&spec.dir, &aside)
            .and_then(|()| std::fs::File::open(parent)?.sync_all())
            .map_err(|e| {
                ReplicaError::Storage(spool_log::LogError::Io {
                    op: "set aside",
                    path: spec.dir.clone(),
                    source: e,
                })
            })?;
        tracing::warn!(group = spec.group, kept_as = %aside.display(), "a replica whose Raft state was lost had a purged log: it is set aside, and the replica is rebuilt from its leader; remove the copy once the group is healthy");
        Ok(())
    }

    /// Whether a replica whose durable state was lost (see `rebuild`) must rebuild: no
    /// votes, no campaigns, until it has caught up with a leader. Not when there is no one
    /// to rebuild from (this node is the group's only voter).
    fn gate(
        &self,
        group: GroupId,
        dir: &Path,
        raft: &Raft,
        damage: &rebuild::Damage,
        initial_members: &Members,
    ) -> bool {
        use openraft::async_runtime::WatchReceiver;
        let mut voters: Vec<NodeId> = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters.is_empty() {
            voters = initial_members.keys().copied().collect();
        }
        let me = self.options.node_id;
        if voters.iter().all(|v| *v == me) && !voters.is_empty() {
            tracing::error!(group, dir = %dir.display(), %damage, "this replica lost Raft state and is its group's only voter: going on with what its log holds");
            if let Err(error) = rebuild::remove_marker(dir) {
                tracing::warn!(group, %error, "could not remove the rebuild marker");
            }
            return false;
        }
        raft.runtime_config().elect(false);
        tracing::warn!(group, dir = %dir.display(), %damage, "this replica lost Raft state: it withholds its votes and does not stand for election until it has caught up with a leader");
        true
    }

    /// Creates the group if this replica founds it, and has a group of one elect itself.
    /// A replica that rebuilds does neither: it waits for the group's leader.
    async fn start_group(
        &self,
        raft: &Raft,
        spec: &ReplicaSpec,
        rebuilding: bool,
    ) -> Result<(), ReplicaError> {
        if rebuilding {
            return Ok(());
        }
        if !spec.initial_members.is_empty()
            && !raft
                .is_initialized()
                .await
                .map_err(|e| ReplicaError::Raft(e.to_string()))?
        {
            let members: BTreeMap<NodeId, BasicNode> = spec
                .initial_members
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            raft.initialize(members)
                .await
                .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        }
        // A group of one needs no election timeout to find out it leads: elect now, so a
        // single node takes writes as soon as a topic is created or reopened.
        let alone = spec.initial_members.len() == 1
            && spec.initial_members.contains_key(&self.options.node_id);
        if alone {
            raft.trigger()
                .elect(false)
                .await
                .map_err(|e| ReplicaError::Raft(e.to_string()))?;
            let elected = raft
                .wait(Some(SOLO_ELECTION_WAIT))
                .state(
                    openraft::ServerState::Leader,
                    "a group of one elects itself",
                )
                .await;
            if let Err(error) = elected {
                tracing::warn!(group = spec.group, %error, "a group of one did not elect itself yet");
            }
        }
        Ok(())
    }

    /// Stops a replica; with `delete_data`, removes its log and Raft state for good.
    pub async fn remove_replica(
        &self,
        group: GroupId,
        delete_data: bool,
    ) -> Result<(), ReplicaError> {
        let Some(replica) = self.replicas.write().remove(&group) else {
            return Err(ReplicaError::UnknownGroup { group });
        };
        if let Err(error) = replica.raft.shutdown().await {
            tracing::warn!(group, %error, "raft did not stop cleanly");
        }
        if delete_data {
            self.store
                .remove(group)
                .await
                .map_err(|e| ReplicaError::Raft(e.to_string()))?;
            delete_dir(replica.dir(), group)?;
        }
        Ok(())
    }

    /// Ends the replication streams peers hold open to this node (they reconnect to it
    /// as it restarts, or elect without it): the first step of a graceful stop.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Stops every replica and writes the node's state.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        let replicas: Vec<_> = self.replicas.write().drain().map(|(_, r)| r).collect();
        for replica in replicas {
            if let Err(error) = replica.raft.shutdown().await {
                tracing::warn!(group = replica.group, %error, "raft did not stop cleanly");
            }
            if let Err(error) = replica.log.lock().sync() {
                tracing::warn!(group = replica.group, %error, "final sync failed");
            }
        }
        if let Err(error) = self.store.flush().await {
            tracing::warn!(%error, "could not write the Raft state file");
        }
        self.flusher.stop();
        self.store.close();
    }
}

impl GroupDirectory for RaftNode {
    fn local_node(&self) -> NodeId {
        self.options.node_id
    }

    fn raft(&self, group: GroupId) -> Option<Raft> {
        self.replicas.read().get(&group).map(|r| r.raft.clone())
    }

    fn boot_id(&self) -> u64 {
        self.boot_id
    }

    fn withholds_votes(&self, group: GroupId) -> bool {
        self.withheld.lock().contains(&group)
            || self
                .replicas
                .read()
                .get(&group)
                .is_some_and(|r| r.withholds_votes())
    }

    fn leader_commit(&self, group: GroupId, term: u64, index: u64) {
        if let Some(replica) = self.replicas.read().get(&group) {
            replica.gate.observe_leader_commit(term, index);
        }
    }

    fn may_not_lead(&self, group: GroupId) -> bool {
        self.replicas
            .read()
            .get(&group)
            .is_some_and(|r| r.may_not_lead())
    }

    fn refuses_entries(&self, group: GroupId) -> bool {
        self.disk.refuses_entries() && !self.essential.lock().contains(&group)
    }

    fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    fn leader_contact(&self, group: GroupId) {
        if let Some(replica) = self.replicas.read().get(&group)
            && replica.is_quiet()
        {
            replica.wake();
        }
    }

    fn quiesce(&self, leader: NodeId, groups: Vec<(GroupId, u64)>) -> Vec<GroupId> {
        use openraft::async_runtime::WatchReceiver;
        // A leader this node cannot reach must not put its groups to sleep here: once
        // quiet, nothing would notice it die (see `liveness`).
        if self.liveness.is_down(leader) {
            return Vec::new();
        }
        let replicas = self.replicas.read();
        groups
            .into_iter()
            .filter(|(group, term)| {
                let Some(replica) = replicas.get(group) else {
                    return false;
                };
                let metrics = replica.raft.metrics().borrow_watched().clone();
                let agrees = metrics.state != openraft::ServerState::Leader
                    && metrics.current_leader == Some(leader)
                    && metrics.current_term == *term;
                if agrees {
                    replica.quiesce();
                }
                agrees
            })
            .map(|(group, _)| group)
            .collect()
    }
}

/// A number that differs from one start of the process to the next.
fn boot_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Deletes a replica directory: renamed first to a short name beside it (so a crash
/// midway never leaves a half-deleted log under the replica's name, and the rename works
/// for the longest partition name), the rename made durable, then removed.
fn delete_dir(dir: &Path, group: GroupId) -> Result<(), ReplicaError> {
    let io = |e: std::io::Error| {
        ReplicaError::Storage(spool_log::LogError::Io {
            op: "delete",
            path: dir.to_path_buf(),
            source: e,
        })
    };
    if !dir.exists() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    let to = parent.join(format!("{DELETED_PREFIX}{group}"));
    if to.exists() {
        // Left by an earlier deletion of this group that did not finish.
        std::fs::remove_dir_all(&to).map_err(io)?;
    }
    std::fs::rename(dir, &to).map_err(io)?;
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    std::fs::remove_dir_all(&to).map_err(io)
}

/// Names of replica directories being deleted (see `delete_dir`). `~` is in no topic
/// name, so no partition directory can ever be taken for one.
pub const DELETED_PREFIX: &str = "~deleted-group-";

/// Removes what deletions interrupted by a crash left in `data_dir`.
pub fn sweep_deleted(data_dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // `.deleted` suffixes were used by earlier versions; a partition directory always
        // ends in its partition number.
        let ours = name
            .strip_prefix(DELETED_PREFIX)
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        if (ours || name.ends_with(".deleted")) && entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
