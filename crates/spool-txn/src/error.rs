//! Why a transaction operation is refused, and why a stored record does not decode.

use spool_types::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("transactional id {0:?} is empty, too long or holds control characters")]
    InvalidId(String),
    #[error("transactional id {0:?} is not initialized (or is held by another producer id)")]
    UnknownMapping(String),
    #[error(
        "producer {producer_id} at epoch {epoch} is fenced: transactional id {id:?} is at epoch {current} (a newer instance took over, or the transaction timed out)"
    )]
    Fenced {
        id: String,
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("the previous transaction of {0:?} is still being completed")]
    Concurrent(String),
    #[error("transaction of {id:?} is {state}: it cannot {action}")]
    InvalidState {
        id: String,
        state: &'static str,
        action: &'static str,
    },
    #[error("transaction timeout {got} ms is outside 1..={max} ms")]
    InvalidTimeout { got: i64, max: i64 },
    #[error("no producer id could be allocated: {0}")]
    NoProducerId(String),
}

impl TxnError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TxnError::InvalidId(_) => ErrorCode::InvalidRequest,
            TxnError::UnknownMapping(_) => ErrorCode::InvalidProducerIdMapping,
            TxnError::Fenced { .. } => ErrorCode::ProducerFenced,
            TxnError::Concurrent(_) => ErrorCode::ConcurrentTransactions,
            TxnError::InvalidState { .. } => ErrorCode::InvalidTxnState,
            TxnError::InvalidTimeout { .. } => ErrorCode::InvalidTransactionTimeout,
            TxnError::NoProducerId(_) => ErrorCode::CoordinatorNotAvailable,
        }
    }
}

/// A stored record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record ends early")]
    Truncated,
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("unknown value version {0}")]
    UnknownVersion(u8),
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}
