//! What the transaction services call: find a transactional id's coordinator, start a
//! transactional producer, add partitions, end a transaction; and for operators, list,
//! describe and abort transactions, and abort a hanging one at a partition.

use std::time::Duration;

use spool_controller::TxnMarkers;
use spool_txn::{Ended, InitAnswer, TxnCoordinator, TxnError};

use crate::OFFSETS_TOPIC;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::producer_ids::ProducerIdentity;

/// How long an operation that found its producer's previous transaction still being
/// completed waits for it before answering CONCURRENT_TRANSACTIONS.
const COMPLETION_WAIT: Duration = Duration::from_secs(5);

/// A transactional id as `list_transactions` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub coordinator: u64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: String,
    pub timeout_ms: i32,
    /// When the open transaction began, or -1.
    pub started_ms: i64,
    pub updated_ms: i64,
    pub partitions: Vec<(String, u32)>,
}

/// A transaction open at a partition, as its log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTransaction {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_offset: i64,
}

impl Broker {
    /// The node coordinating `transactional_id` and its client address. Creates
    /// `__transaction_state` on first use.
    pub async fn find_transaction_coordinator(
        &self,
        transactional_id: &str,
    ) -> Result<(u64, String), BrokerError> {
        spool_txn::check_id(transactional_id)?;
        self.ensure_transactions_topic().await?;
        self.find_coordinator_of(&self.transactions.coordinators, transactional_id)
            .await
    }

    /// Runs `operation` on the coordinator of `id`; while it answers that the producer's
    /// previous transaction is still being completed, waits for completions and asks
    /// again (at most `COMPLETION_WAIT`).
    async fn txn_run<T, F>(&self, id: &str, operation: F) -> Result<T, BrokerError>
    where
        T: Send + 'static,
        F: Fn(&mut TxnCoordinator, i64) -> Result<(Vec<spool_txn::TxnRecord>, T), TxnError>
            + Send
            + Sync
            + Clone
            + 'static,
    {
        spool_txn::check_id(id)?;
        let deadline = tokio::time::Instant::now() + COMPLETION_WAIT;
        loop {
            let shard = self.txn_shard(id).await?;
            let mut completions = shard.shared.completions.subscribe();
            completions.borrow_and_update();
            let op = operation.clone();
            let answer = shard
                .run(id, move |c, ctx| {
                    op(c, ctx.now_ms).map_err(BrokerError::Txn)
                })
                .await;
            match answer {
                Err(BrokerError::Txn(TxnError::Concurrent(_)))
                    if tokio::time::Instant::now() < deadline =>
                {
                    let _ = tokio::time::timeout_at(deadline, completions.changed()).await;
                }
                other => return other,
            }
        }
    }

    /// Starts (or starts again) the producer of `transactional_id`: its producer id at a
    /// new epoch, which fences older instances. An older instance's open transaction is
    /// aborted first.
    pub async fn init_transactional_producer(
        &self,
        transactional_id: &str,
        timeout_ms: i64,
    ) -> Result<ProducerIdentity, BrokerError> {
        let mut fresh_id = None;
        loop {
            let id = transactional_id.to_string();
            let answer = self
                .txn_run(transactional_id, move |c, now_ms| {
                    c.init_producer_id(&id, timeout_ms, now_ms, fresh_id)
                        .map(|o| (o.records, o.value))
                })
                .await;
            match answer {
                Ok(InitAnswer::Ready { producer_id, epoch }) => {
                    return Ok(ProducerIdentity { producer_id, epoch });
                }
                // The older instance's transaction is being aborted: asked again, the
                // coordinator answers "concurrent" until the abort completes, and the
                // ask waits for that.
                Ok(InitAnswer::AbortingPrevious) => {}
                Err(BrokerError::Txn(TxnError::NoProducerId(_))) if fresh_id.is_none() => {
                    fresh_id = Some(self.init_producer_id().await?.producer_id);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Adds partitions to the producer's transaction (opening one if none is open).
    pub async fn add_partitions_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, u32)>,
    ) -> Result<(), BrokerError> {
        for (topic, _) in &partitions {
            crate::topics::refuse_internal(topic, "write to")?;
        }
        self.add_to_txn(transactional_id, producer_id, epoch, partitions)
            .await
    }

    /// Adds `group`'s coordinator partition to the producer's transaction, before the
    /// producer commits the group's offsets inside it (`txn_offset_commit`).
    pub async fn add_offsets_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), BrokerError> {
        spool_group::check_group_id(group)?;
        self.ensure_offsets_topic().await?;
        let index = self
            .coordinator_partition::<crate::groups::GroupMachine>(group)
            .ok_or_else(|| BrokerError::CoordinatorNotAvailable {
                key: format!("group {group:?}"),
                reason: format!("{OFFSETS_TOPIC} is not in this node's metadata yet"),
            })?;
        let partitions = vec![(OFFSETS_TOPIC.to_string(), index)];
        self.add_to_txn(transactional_id, producer_id, epoch, partitions)
            .await
    }

    /// Commits offsets of `group` inside the producer's transaction (asked of the group's
    /// coordinator): they take effect when the transaction commits, and never if it
    /// aborts. `member` and `member_epoch` fence it as a plain commit is fenced.
    #[allow(clippy::too_many_arguments)]
    pub async fn txn_offset_commit(
        &self,
        producer_id: i64,
        epoch: i16,
        group: &str,
        member: &str,
        member_epoch: i32,
        commits: Vec<spool_group::OffsetCommit>,
    ) -> Result<(), BrokerError> {
        let shard = self.group_shard(group).await?;
        let (g, m) = (group.to_string(), member.to_string());
        shard
            .run(group, move |s, ctx| {
                s.stage_offsets(producer_id, epoch, &g, &m, member_epoch, &commits, ctx)
                    .map(|entries| (entries, ()))
            })
            .await
    }

    async fn add_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, u32)>,
    ) -> Result<(), BrokerError> {
        let metadata = self.controller.current();
        for (topic, partition) in &partitions {
            let count = metadata
                .topics
                .get(topic)
                .map(|t| t.partitions.len() as u32)
                .ok_or_else(|| BrokerError::UnknownTopic {
                    topic: topic.clone(),
                })?;
            if *partition >= count {
                return Err(BrokerError::UnknownPartition {
                    topic: topic.clone(),
                    partition: *partition,
                });
            }
        }
        let id = transactional_id.to_string();
        self.txn_run(transactional_id, move |c, now_ms| {
            c.add_partitions(&id, producer_id, epoch, &partitions, now_ms)
                .map(|o| (o.records, o.value))
        })
        .await
    }

    /// Commits or aborts the producer's transaction. Answered once the outcome is decided
    /// (durably: a coordinator taking over carries it through); its markers follow.
    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        bump: bool,
    ) -> Result<Ended, BrokerError> {
        let mut fresh_id = None;
        loop {
            let id = transactional_id.to_string();
            let answer = self
                .txn_run(transactional_id, move |c, now_ms| {
                    let next = bump.then_some(fresh_id);
                    c.end(&id, producer_id, epoch, commit, now_ms, next)
                        .map(|o| (o.records, o.value))
                })
                .await;
            match answer {
                // The producer's epochs ran out: it goes on under a new id.
                Err(BrokerError::Txn(TxnError::NoProducerId(_))) if fresh_id.is_none() => {
                    fresh_id = Some(self.init_producer_id().await?.producer_id);
                }
                other => return other,
            }
        }
    }

    /// The transactional ids this node coordinates.
    pub async fn list_transactions(&self) -> Vec<TransactionListing> {
        let mut out = Vec::new();
        for shard in self.transactions.coordinators.running() {
            let listed = shard
                .run("", |c: &mut TxnCoordinator, _| {
                    let all = c
                        .iter()
                        .map(|(id, t)| TransactionListing {
                            transactional_id: id.clone(),
                            producer_id: t.producer_id,
                            state: t.state.name().to_string(),
                        })
                        .collect::<Vec<_>>();
                    Ok((Vec::new(), all))
                })
                .await;
            out.extend(listed.unwrap_or_default());
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }

    pub async fn describe_transaction(
        &self,
        transactional_id: &str,
    ) -> Result<TransactionDescription, BrokerError> {
        spool_txn::check_id(transactional_id)?;
        let shard = self.txn_shard(transactional_id).await?;
        let id = transactional_id.to_string();
        let me = self.options.node_id;
        shard
            .run(transactional_id, move |c: &mut TxnCoordinator, _| {
                let t = c
                    .get(&id)
                    .ok_or_else(|| BrokerError::Txn(TxnError::UnknownMapping(id.clone())))?;
                let description = TransactionDescription {
                    transactional_id: id.clone(),
                    coordinator: me,
                    producer_id: t.producer_id,
                    producer_epoch: t.producer_epoch,
                    state: t.state.name().to_string(),
                    timeout_ms: t.timeout_ms,
                    started_ms: t.started_ms,
                    updated_ms: t.updated_ms,
                    partitions: t.partitions.iter().cloned().collect(),
                };
                Ok((Vec::new(), description))
            })
            .await
    }

    /// Aborts `transactional_id`'s open transaction (an operator's call), fencing its
    /// producer; false if none was open.
    pub async fn abort_transaction(&self, transactional_id: &str) -> Result<bool, BrokerError> {
        let id = transactional_id.to_string();
        self.txn_run(transactional_id, move |c, now_ms| {
            let outcome = c.abort(&id, now_ms);
            Ok((outcome.records, outcome.value))
        })
        .await
    }

    /// The transactions open at a partition this node leads, as its log shows them.
    pub fn open_transactions(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<OpenTransaction>, BrokerError> {
        let partition = self.partition(topic, partition)?;
        Ok(partition
            .replica
            .open_transactions()
            .into_iter()
            .map(
                |(first_offset, producer_id, producer_epoch)| OpenTransaction {
                    producer_id,
                    producer_epoch,
                    first_offset,
                },
            )
            .collect())
    }

    /// Ends a transaction left open at one partition with an abort marker (an operator's
    /// last resort for a transaction its coordinator does not know of, which holds the
    /// partition's last stable offset back). The partition must be led here.
    pub async fn abort_hanging_transaction(
        &self,
        topic: &str,
        partition: u32,
        producer_id: i64,
    ) -> Result<(), BrokerError> {
        let open = self.open_transactions(topic, partition)?;
        let found = open
            .iter()
            .find(|t| t.producer_id == producer_id)
            .ok_or_else(|| BrokerError::InvalidRequest {
                reason: format!(
                    "producer {producer_id} has no transaction open at {topic}-{partition}"
                ),
            })?;
        let written = self
            .write_local_markers(&TxnMarkers {
                producer_id,
                producer_epoch: found.producer_epoch,
                commit: false,
                coordinator_epoch: -1,
                partitions: vec![(topic.to_string(), partition)],
                bumped: false,
            })
            .await;
        written
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(drop)
    }
}
