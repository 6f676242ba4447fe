//! Transactions as a plain, synchronous state machine, independent of any wire protocol
//! and of how its records are stored.
//!
//! A coordinator owns the transactional ids of one partition of `__transaction_state`.
//! Every operation (a producer starting, adding partitions, ending its transaction, a
//! timeout, an operator's abort) is checked, turned into `TxnRecord`s and applied through
//! the same `apply` that replays them after a failover. The caller persists the records
//! before it answers, and writes the commit or abort markers of every transaction in a
//! prepare state before completing it.

mod coordinator;
mod error;
mod records;
mod state;

pub use coordinator::{
    EndOutcome, Ended, InitAnswer, Outcome, TxnConfig, TxnCoordinator, check_id,
};
pub use error::{RecordError, TxnError};
pub use records::TxnRecord;
pub use state::{LAST_PRODUCER_EPOCH, Transaction, TxnState};

/// The longest transactional id taken, in bytes.
pub const MAX_ID_BYTES: usize = 255;
