//! Transaction coordination on this node.
//!
//! Transactional ids live in the internal topic `__transaction_state`, created on first
//! use, and are coordinated by the shared coordinator machinery (see
//! `crate::coordinator`): the coordinator of transactional id T is the leader of
//! partition murmur2(T) mod N of that topic. A transaction's outcome is decided when its
//! prepare record is committed there; its markers are then written to every partition
//! of the transaction, and the transaction completed. A coordinator that takes over
//! finishes what its predecessor decided.

mod api;
mod machine;
mod markers;

use std::sync::Arc;

use spool_txn::TxnConfig;

use crate::broker::Broker;
use crate::coordinator::{Coordinators, Shard};
use crate::error::BrokerError;

pub use api::{OpenTransaction, TransactionDescription, TransactionListing};
pub(crate) use machine::TxnMachine;

/// The internal topic holding transactional ids and their transactions.
pub const TRANSACTIONS_TOPIC: &str = "__transaction_state";

/// How transactions are coordinated on this node.
#[derive(Debug, Clone)]
pub struct TransactionOptions {
    /// Partitions of `__transaction_state` when it is created (it never changes after).
    pub topic_partitions: u32,
    /// Its replication factor; 0 for three, or fewer when fewer brokers are live.
    pub topic_replication_factor: u32,
    pub coordinator: TxnConfig,
}

impl Default for TransactionOptions {
    fn default() -> Self {
        Self {
            topic_partitions: 16,
            topic_replication_factor: 0,
            coordinator: TxnConfig::default(),
        }
    }
}

/// This node's transaction coordinator partitions.
#[derive(Debug, Default)]
pub(crate) struct Transactions {
    pub(crate) coordinators: Coordinators<TxnMachine>,
}

impl Broker {
    fn txn_machine(&self, term: u64) -> TxnMachine {
        TxnMachine::new(
            self.options.transactions.coordinator,
            self.this.clone(),
            term,
        )
    }

    /// The running shard that coordinates `transactional_id` here.
    pub(crate) async fn txn_shard(
        &self,
        transactional_id: &str,
    ) -> Result<Arc<Shard<TxnMachine>>, BrokerError> {
        self.shard_for(&self.transactions.coordinators, transactional_id, |term| {
            self.txn_machine(term)
        })
        .await
    }

    pub(crate) fn watch_transaction_shards(&self) {
        self.watch_shards(&self.transactions.coordinators, &|term| {
            self.txn_machine(term)
        });
    }

    /// Creates `__transaction_state` if it does not exist yet.
    pub(crate) async fn ensure_transactions_topic(&self) -> Result<(), BrokerError> {
        let options = &self.options.transactions;
        self.ensure_internal_topic(
            TRANSACTIONS_TOPIC,
            options.topic_partitions,
            options.topic_replication_factor,
        )
        .await
    }
}
