//! One transactional id's state.

use std::collections::BTreeSet;

/// Where a transactional id's current transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    /// No transaction open (just initialized).
    Empty,
    /// Partitions were added: a transaction is open.
    Ongoing,
    /// Commit decided: its markers are being written. It will commit, whatever fails.
    PrepareCommit,
    /// Abort decided: its markers are being written.
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "empty",
            TxnState::Ongoing => "ongoing",
            TxnState::PrepareCommit => "prepare_commit",
            TxnState::PrepareAbort => "prepare_abort",
            TxnState::CompleteCommit => "complete_commit",
            TxnState::CompleteAbort => "complete_abort",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    pub(crate) fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }

    /// Whether markers are being written: the outcome is decided, not yet everywhere.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// The newest epoch a producer may use; the one after it only marks a transaction ended.
pub const LAST_PRODUCER_EPOCH: i16 = i16::MAX - 1;

/// A transactional id: its producer, and its current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The producer id and epoch the producer goes on with.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The producer id and epoch the last transaction its producer ended ran under (-1
    /// and -1 if none, or if the coordinator aborted the transaction since, fencing the
    /// producer). Every end moves the producer to a newer epoch (or a new id, when the
    /// epochs run out), and the end's markers carry the epoch after this one: a write of
    /// the ended transaction that arrives late is refused as fenced, instead of opening a
    /// transaction nobody will end. An end asked again under these is answered as done.
    pub last_producer_id: i64,
    pub last_epoch: i16,
    /// A transaction open longer than this is aborted.
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the current transaction, as (topic, partition).
    pub partitions: BTreeSet<(String, u32)>,
    /// When the current transaction began (its first partition was added), or -1.
    pub started_ms: i64,
    /// When the state last changed.
    pub updated_ms: i64,
}

impl Transaction {
    /// The producer id and epoch of the markers of the transaction ending or last ended:
    /// the epoch after the one it ran under.
    pub fn marker_producer(&self) -> (i64, i16) {
        if self.last_producer_id >= 0 {
            (self.last_producer_id, self.last_epoch.saturating_add(1))
        } else {
            // Aborted by the coordinator, which moved the producer on itself.
            (self.producer_id, self.producer_epoch)
        }
    }
}
