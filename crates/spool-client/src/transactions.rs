//! Transaction calls on a [`Client`]: what a transactional producer asks its coordinator,
//! and what an operator asks of transactions.

use spool_proto::v1;

use crate::client::Client;
use crate::error::ClientError;
use crate::groups::OffsetToCommit;

/// A transactional id as a coordinator lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionSummary {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
}

/// A transactional id and its current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub coordinator: u64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: String,
    pub timeout_ms: i32,
    /// When the open transaction began (ms since the Unix epoch), or -1.
    pub started_ms: i64,
    pub updated_ms: i64,
    pub partitions: Vec<(String, u32)>,
}

/// Whose offsets a transaction commits: the group, and the member committing them
/// (Kafka's consumer group metadata). `GroupMetadata::outside` for a consumer that
/// assigns itself partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    pub group: String,
    pub member_id: String,
    pub member_epoch: i32,
}

impl GroupMetadata {
    /// A commit from outside the group's membership (allowed while it has no members).
    pub fn outside(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            member_id: String::new(),
            member_epoch: -1,
        }
    }
}

/// A transaction open at a partition, as its leader's log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTransaction {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_offset: i64,
}

fn epoch(n: i32) -> Result<i16, ClientError> {
    i16::try_from(n)
        .map_err(|_| ClientError::Transport(format!("producer epoch {n} is out of range")))
}

impl Client {
    /// The node coordinating `transactional_id`, and its address.
    pub async fn find_transaction_coordinator(
        &self,
        transactional_id: &str,
    ) -> Result<(u64, String), ClientError> {
        let answer = self
            .transactions
            .clone()
            .find_transaction_coordinator(self.call(v1::FindTransactionCoordinatorRequest {
                transactional_id: transactional_id.to_string(),
            }))
            .await?
            .into_inner();
        Ok((answer.node_id, answer.address))
    }

    /// Starts the producer of `transactional_id` (asked of its coordinator): its
    /// producer id at a new epoch, which fences older instances.
    pub async fn init_transactional_producer(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
    ) -> Result<(i64, i16), ClientError> {
        let answer = self
            .broker
            .clone()
            .init_producer_id(self.call(v1::InitProducerIdRequest {
                transactional_id: transactional_id.to_string(),
                transaction_timeout_ms: timeout_ms,
            }))
            .await?
            .into_inner();
        Ok((answer.producer_id, epoch(answer.producer_epoch)?))
    }

    /// Adds partitions to the producer's transaction (asked of its coordinator).
    pub async fn add_partitions_to_txn(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        partitions: &[(String, u32)],
    ) -> Result<(), ClientError> {
        self.transactions
            .clone()
            .add_partitions_to_txn(self.call(v1::AddPartitionsToTxnRequest {
                transactional_id: transactional_id.to_string(),
                producer_id: producer.0,
                producer_epoch: i32::from(producer.1),
                partitions: spool_proto::topic_partitions_of(partitions),
            }))
            .await?;
        Ok(())
    }

    /// Adds `group`'s coordinator partition to the producer's transaction (asked of its
    /// transaction coordinator).
    pub async fn add_offsets_to_txn(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        group: &str,
    ) -> Result<(), ClientError> {
        self.transactions
            .clone()
            .add_offsets_to_txn(self.call(v1::AddOffsetsToTxnRequest {
                transactional_id: transactional_id.to_string(),
                producer_id: producer.0,
                producer_epoch: i32::from(producer.1),
                group: group.to_string(),
            }))
            .await?;
        Ok(())
    }

    /// Commits `group`'s offsets inside the producer's transaction (asked of the group's
    /// coordinator).
    pub async fn txn_offset_commit(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        group: &GroupMetadata,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(), ClientError> {
        self.transactions
            .clone()
            .txn_offset_commit(self.call(v1::TxnOffsetCommitRequest {
                transactional_id: transactional_id.to_string(),
                producer_id: producer.0,
                producer_epoch: i32::from(producer.1),
                group: group.group.clone(),
                member_id: group.member_id.clone(),
                member_epoch: group.member_epoch,
                offsets: crate::groups::offsets_to_wire(offsets),
            }))
            .await?;
        Ok(())
    }

    /// Commits (or aborts) the producer's transaction (asked of its coordinator), moving
    /// the producer to a new epoch; returns the producer id and epoch to go on with (the
    /// same, from a broker that does not move epochs).
    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        commit: bool,
    ) -> Result<(i64, i16), ClientError> {
        let answer = self
            .transactions
            .clone()
            .end_txn(self.call(v1::EndTxnRequest {
                transactional_id: transactional_id.to_string(),
                producer_id: producer.0,
                producer_epoch: i32::from(producer.1),
                commit,
                bump_epoch: true,
            }))
            .await?
            .into_inner();
        if !answer.bumped {
            return Ok(producer);
        }
        Ok((answer.producer_id, epoch(answer.producer_epoch)?))
    }

    /// The transactional ids this node coordinates.
    pub async fn list_transactions(&self) -> Result<Vec<TransactionSummary>, ClientError> {
        let answer = self
            .transactions
            .clone()
            .list_transactions(self.call(v1::ListTransactionsRequest {}))
            .await?
            .into_inner();
        Ok(answer
            .transactions
            .into_iter()
            .map(|t| TransactionSummary {
                transactional_id: t.transactional_id,
                producer_id: t.producer_id,
                state: t.state,
            })
            .collect())
    }

    /// A transactional id and its current transaction (asked of its coordinator).
    pub async fn describe_transaction(
        &self,
        transactional_id: &str,
    ) -> Result<TransactionDescription, ClientError> {
        let t = self
            .transactions
            .clone()
            .describe_transaction(self.call(v1::DescribeTransactionRequest {
                transactional_id: transactional_id.to_string(),
            }))
            .await?
            .into_inner();
        Ok(TransactionDescription {
            transactional_id: t.transactional_id,
            coordinator: t.coordinator,
            producer_id: t.producer_id,
            producer_epoch: epoch(t.producer_epoch)?,
            state: t.state,
            timeout_ms: t.timeout_ms,
            started_ms: t.started_ms,
            updated_ms: t.updated_ms,
            partitions: spool_proto::partition_pairs(t.partitions),
        })
    }

    /// Aborts a transactional id's open transaction (asked of its coordinator); false if
    /// none was open.
    pub async fn abort_transaction(&self, transactional_id: &str) -> Result<bool, ClientError> {
        let answer = self
            .transactions
            .clone()
            .abort_transaction(self.call(v1::AbortTransactionRequest {
                transactional_id: transactional_id.to_string(),
            }))
            .await?
            .into_inner();
        Ok(answer.aborted)
    }

    /// The transactions open at a partition (asked of its leader).
    pub async fn open_transactions(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<OpenTransaction>, ClientError> {
        let answer = self
            .transactions
            .clone()
            .describe_open_transactions(self.call(v1::DescribeOpenTransactionsRequest {
                topic: topic.to_string(),
                partition,
            }))
            .await?
            .into_inner();
        answer
            .transactions
            .into_iter()
            .map(|t| {
                Ok(OpenTransaction {
                    producer_id: t.producer_id,
                    producer_epoch: epoch(t.producer_epoch)?,
                    first_offset: t.first_offset,
                })
            })
            .collect()
    }

    /// Ends a transaction left open at a partition with an abort marker (asked of its
    /// leader).
    pub async fn abort_hanging_transaction(
        &self,
        topic: &str,
        partition: u32,
        producer_id: i64,
    ) -> Result<(), ClientError> {
        self.transactions
            .clone()
            .abort_hanging_transaction(self.call(v1::AbortHangingTransactionRequest {
                topic: topic.to_string(),
                partition,
                producer_id,
            }))
            .await?;
        Ok(())
    }
}
