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

/// A transactional id: its producer, and its current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub producer_id: i64,
    pub producer_epoch: i16,
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
