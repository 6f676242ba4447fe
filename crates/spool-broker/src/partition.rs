//! A partition replica as the request handlers see it: where to read, the high watermark
//! to wait on, and the Raft replica that takes its writes.

use std::sync::Arc;

use parking_lot::Mutex;
use spool_log::{FetchedBatches, LogReader, RetentionPolicy};
use spool_raft::PartitionReplica;
use spool_types::IsolationLevel;
use tokio::sync::watch;

use crate::error::BrokerError;

/// How long a replica about to call an offset out of range (or to say where the partition
/// ends) waits for a quorum to confirm that it still leads.
const CONFIRM_LEAD_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// When a produce request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Once a majority of replicas hold the batches durably under the flush policy
    /// (committed).
    All,
    /// Once the leader has appended them.
    Leader,
    /// Not at all.
    None,
}

#[derive(Debug)]
pub(crate) struct Partition {
    pub topic: String,
    pub index: u32,
    pub replica: Arc<PartitionReplica>,
    pub reader: LogReader,
    /// The offset after the last committed record; consumers read below it.
    pub high_watermark: watch::Receiver<i64>,
    /// The first offset of the oldest open transaction, or the high watermark:
    /// read_committed consumers read below it.
    pub last_stable: watch::Receiver<i64>,
    pub retention: Mutex<RetentionPolicy>,
}

impl Partition {
    /// Refuses a request made with another leader epoch than this replica's term. With
    /// `must_lead`, a replica that does not lead answers NOT_LEADER with its hint first:
    /// that tells the client more than an epoch mismatch.
    pub(crate) fn check_leader_epoch(
        &self,
        requested: u64,
        must_lead: bool,
    ) -> Result<(), BrokerError> {
        if must_lead && !self.replica.is_leader() {
            let hint = self.replica.leader();
            return Err(BrokerError::NotLeader {
                leader: hint.node,
                address: None,
            });
        }
        let current = self.replica.term();
        match requested.cmp(&current) {
            std::cmp::Ordering::Less => Err(BrokerError::FencedLeaderEpoch { requested, current }),
            std::cmp::Ordering::Greater => {
                Err(BrokerError::UnknownLeaderEpoch { requested, current })
            }
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    pub fn new(
        topic: String,
        index: u32,
        replica: Arc<PartitionReplica>,
        retention: RetentionPolicy,
    ) -> Self {
        Self {
            topic,
            index,
            reader: replica.reader().clone(),
            high_watermark: replica.high_watermark(),
            last_stable: replica.last_stable(),
            replica,
            retention: Mutex::new(retention),
        }
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// What a reader at `isolation` reads up to now. (The stable offset is published
    /// before the high watermark, so it may be a step ahead of the value read here.)
    pub fn readable_end(&self, isolation: IsolationLevel) -> i64 {
        let high_watermark = self.high_watermark();
        match isolation {
            IsolationLevel::ReadUncommitted => high_watermark,
            IsolationLevel::ReadCommitted => (*self.last_stable.borrow()).min(high_watermark),
        }
    }

    /// The watch that moves when what a reader at `isolation` may read grows.
    pub fn readable_watch(&self, isolation: IsolationLevel) -> watch::Receiver<i64> {
        match isolation {
            IsolationLevel::ReadUncommitted => self.high_watermark.clone(),
            IsolationLevel::ReadCommitted => self.last_stable.clone(),
        }
    }

    /// Whether this replica's high watermark is the partition's: it leads and has applied
    /// an entry of its own term. A follower's lags the leader's, and so does a restarted
    /// node's until it has caught up (it may still believe it leads in its old term).
    pub fn knows_high_watermark(&self) -> bool {
        self.replica.leads_and_applied_own_term()
    }

    /// Whether a quorum still has this replica as its leader: a leader cut off from the
    /// others keeps its term and a frozen high watermark until it hears of a new one.
    pub async fn quorum_confirms_lead(&self) -> bool {
        self.replica
            .confirm_leadership(CONFIRM_LEAD_WITHIN)
            .await
            .is_ok()
    }

    /// Reads committed batches from `from` (up to the stable offset for read_committed),
    /// off the async threads.
    pub async fn read(
        &self,
        from: i64,
        max_bytes: usize,
        isolation: IsolationLevel,
    ) -> Result<FetchedBatches, BrokerError> {
        self.read_below(from, max_bytes, isolation, i64::MAX).await
    }

    /// As `read`, but nothing at or past `end` (what a read_committed fetch looked its
    /// aborted transactions up for).
    pub async fn read_below(
        &self,
        from: i64,
        max_bytes: usize,
        isolation: IsolationLevel,
        end: i64,
    ) -> Result<FetchedBatches, BrokerError> {
        let reader = self.reader.clone();
        // Asked before the high watermark is read: the state machine moves the high
        // watermark before the entry shows as applied, so a yes is never older than the
        // value read after it.
        let knows = self.knows_high_watermark();
        let upper = self.high_watermark();
        let readable = self.readable_end(isolation).min(end);
        if from == upper || (from >= readable && from <= upper) {
            // Nothing to read: answer without a trip to the blocking pool.
            return Ok(FetchedBatches {
                batches: Vec::new(),
                next_offset: from,
            });
        }
        let start = reader.start_offset();
        if from > upper && from >= start && !(knows && self.quorum_confirms_lead().await) {
            // Beyond what this replica knows to be committed, but perhaps not beyond the
            // partition's: nothing to read here yet. Only the high watermark of a leader
            // that caught up in its term, and that a quorum still follows, may call the
            // offset out of range (a consumer told so starts over from its reset policy).
            return Ok(FetchedBatches {
                batches: Vec::new(),
                next_offset: from,
            });
        }
        if from < start || from > upper {
            return Err(BrokerError::OffsetOutOfRange {
                requested: from,
                start,
                end: upper,
            });
        }
        tokio::task::spawn_blocking(move || reader.read(from, readable, max_bytes))
            .await
            .map_err(|_| BrokerError::ShuttingDown)?
            .map_err(BrokerError::from)
    }

    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<i64>, BrokerError> {
        let reader = self.reader.clone();
        let upper = self.high_watermark();
        tokio::task::spawn_blocking(move || reader.offset_for_timestamp(timestamp, upper))
            .await
            .map_err(|_| BrokerError::ShuttingDown)?
            .map_err(BrokerError::from)
    }
}
