//! The openraft type configuration for partition groups, and the payload they carry.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Identifies a partition's Raft group across the cluster. Every transport message
/// carries it.
pub type GroupId = u64;

/// A node (broker) in the cluster, as Raft knows it.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Types of a partition's Raft group. Terms are stored in every frame; the standard
    /// leader id (one leader per term) keeps a committed log id to (term, index).
    pub PartitionRaft:
        D = ProduceBatch,
        R = Produced,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
);

pub type LogId = openraft::type_config::alias::LogIdOf<PartitionRaft>;
pub type Vote = openraft::type_config::alias::VoteOf<PartitionRaft>;
pub type Entry = openraft::type_config::alias::EntryOf<PartitionRaft>;
pub type Membership = openraft::Membership<NodeId, openraft::BasicNode>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<PartitionRaft>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<PartitionRaft>;
pub type Raft = openraft::Raft<PartitionRaft, crate::state_machine::PartitionStateMachine>;
pub type RaftMetrics = openraft::RaftMetrics<PartitionRaft>;

/// A log id from the (term, index) a frame stores.
pub fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(
        openraft::type_config::alias::CommittedLeaderIdOf::<PartitionRaft>::from(term),
        index,
    )
}

/// The term of a log id.
pub fn term_of(log_id: &LogId) -> u64 {
    log_id.leader_id.term
}

/// Where the leader's log put a produced batch; sent once the leader has appended it
/// (what acks=1 waits for, and where idempotent producers hear about retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub index: u64,
    /// Where the batch went; for a retried batch the log already held, where it went the
    /// first time; -1 for a refused one.
    pub base_offset: i64,
    /// What the leader's log made of the batch (an idempotent producer's retry is stored
    /// as a blank entry, a refused batch too).
    pub verdict: crate::producers::Verdict,
}

/// A one-shot notice the leader's log store fires when it appends the batch.
#[derive(Clone, Default)]
pub struct AppendNotice(Arc<Mutex<Option<oneshot::Sender<Appended>>>>);

impl fmt::Debug for AppendNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppendNotice")
    }
}

impl AppendNotice {
    pub fn new() -> (Self, oneshot::Receiver<Appended>) {
        let (tx, rx) = oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    pub(crate) fn fire(&self, appended: Appended) {
        if let Some(tx) = self.0.lock().take() {
            let _ = tx.send(appended);
        }
    }
}

/// One Kafka record batch, the payload of a data entry. On the leader it is the batch
/// as the producer sent it (validated); read back from a log it is the stored batch, with
/// its base offset and leader epoch set.
#[derive(Clone)]
pub struct ProduceBatch {
    pub batch: Bytes,
    /// Present only on the leader, in memory: never sent or stored.
    pub notice: Option<AppendNotice>,
    /// Once stored: the offset of its first record and the offset after its last. The
    /// bytes of a batch not read back from disk may still carry the producer's base
    /// offset, so this, not the bytes, says where it is.
    pub offsets: Option<(i64, i64)>,
    /// Its CRC was checked in this process already (by the broker, on the way in); a
    /// batch from the network or the disk is checked again before it is stored.
    pub verified: bool,
}

impl ProduceBatch {
    pub fn new(batch: Bytes) -> Self {
        Self {
            batch,
            notice: None,
            offsets: None,
            verified: false,
        }
    }
}

impl fmt::Debug for ProduceBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProduceBatch({} bytes)", self.batch.len())
    }
}

impl fmt::Display for ProduceBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What applying an entry answers: the Kafka offset its first record took (for entries
/// without records, the next offset of the log at that point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Produced {
    pub base_offset: i64,
}

impl fmt::Display for Produced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "base_offset={}", self.base_offset)
    }
}
