//! Transactions: records to several partitions that are committed or aborted as one.
//!
//! A producer made with a `transactional_id` starts with `init_transactions`: its
//! coordinator (the leader of the id's partition of `__transaction_state`) gives it the
//! id's producer id at a new epoch, which fences every older instance of it (their open
//! transaction is aborted). Then, per transaction: `Producer::transaction` opens one,
//! `Transaction::send` writes into it (the sender adds each partition to the transaction
//! at the coordinator before the first batch it ships there), and `commit` waits for
//! every record to be acknowledged and then asks the coordinator to commit, which writes
//! a commit marker to every partition. If a record could not be written, `commit` aborts
//! instead and says why. read_committed consumers see a transaction's records only once
//! it commits, and never those of an aborted one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use spool_types::ErrorCode;
use tokio::time::Instant;

use super::accumulator::Shipment;
use super::identity::ProducerId;
use super::{DeliveryFuture, Producer, ProducerError, ProducerRecord, Shared};
use crate::client::Client;
use crate::error::ClientError;
use crate::groups::OffsetToCommit;
use crate::transactions::GroupMetadata;

/// A transactional producer's standing with its coordinator.
#[derive(Debug)]
pub(crate) struct TxnClient {
    pub id: String,
    pub timeout: Duration,
    pub progress: tokio::sync::Mutex<Progress>,
    /// A transaction is open: sends are allowed.
    pub open: std::sync::atomic::AtomicBool,
    /// The open transaction is being ended: sends are refused, so that none ships
    /// under the epoch the end moves the producer to without its partition added.
    pub ending: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Partitions added to the open transaction.
    added: HashSet<(Arc<str>, u32)>,
    /// Groups whose offsets the open transaction commits.
    groups: HashSet<String>,
    /// The coordinator, once found.
    coordinator: Option<Client>,
    /// Why a record of the open transaction failed: it can only abort.
    failed: Option<String>,
}

impl TxnClient {
    pub(crate) fn new(id: String, timeout: Duration) -> Self {
        Self {
            id,
            timeout,
            progress: tokio::sync::Mutex::new(Progress::default()),
            open: std::sync::atomic::AtomicBool::new(false),
            ending: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::Release);
    }
}

/// Errors after which a call to the coordinator is made again (after finding it again).
fn retriable(error: &ClientError) -> bool {
    match error {
        ClientError::Transport(_) | ClientError::Unreachable { .. } => true,
        ClientError::Api(api) => matches!(
            api.code,
            ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::ConcurrentTransactions
                | ErrorCode::RequestTimedOut
        ),
        _ => false,
    }
}

impl Shared {
    /// Calls the transaction coordinator, finding it (again) as needed and retrying
    /// what is worth retrying until the request timeout.
    async fn coordinator_call<T, F, Fut>(&self, txn: &TxnClient, call: F) -> Result<T, ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.config.request_timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let found = { txn.progress.lock().await.coordinator.clone() };
            let coordinator = match found {
                Some(client) => Ok(client),
                None => self.find_coordinator(&txn.id).await,
            };
            let answer = match coordinator {
                Ok(client) => {
                    txn.progress.lock().await.coordinator = Some(client.clone());
                    call(client).await
                }
                Err(error) => Err(error),
            };
            match answer {
                Err(error) if retriable(&error) && Instant::now() < deadline => {
                    txn.progress.lock().await.coordinator = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    async fn find_coordinator(&self, id: &str) -> Result<Client, ClientError> {
        let bootstrap = self.cluster.bootstrap();
        let (node, address) = bootstrap.find_transaction_coordinator(id).await?;
        bootstrap.to_node(node, &address).await
    }

    /// Adds the shipments' partitions that are not yet in the open transaction to it,
    /// before their first batch ships.
    pub(crate) async fn add_to_transaction(
        &self,
        shipments: &[Shipment],
        producer: ProducerId,
    ) -> Result<(), ClientError> {
        let Some(txn) = &self.txn else {
            return Ok(());
        };
        let new: Vec<(String, u32)> = {
            let progress = txn.progress.lock().await;
            shipments
                .iter()
                .filter(|s| {
                    !progress
                        .added
                        .contains(&(Arc::clone(&s.topic), s.partition))
                })
                .map(|s| (s.topic.to_string(), s.partition))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        self.coordinator_call(txn, |client| {
            let new = new.clone();
            let id = txn.id.clone();
            async move {
                client
                    .add_partitions_to_txn(&id, (producer.id, producer.epoch), &new)
                    .await
            }
        })
        .await?;
        let mut progress = txn.progress.lock().await;
        progress
            .added
            .extend(new.into_iter().map(|(t, p)| (Arc::from(t.as_str()), p)));
        Ok(())
    }

    /// A record of the open transaction failed for good: the transaction can only abort.
    pub(crate) async fn transaction_failed(&self, reason: &str) {
        if let Some(txn) = &self.txn {
            let mut progress = txn.progress.lock().await;
            progress.failed.get_or_insert_with(|| reason.to_string());
        }
    }
}

/// An open transaction of a [`Producer`]. End it with `commit` or `abort`; one dropped
/// unended stays open until the next `Producer::transaction` aborts it (or it times out).
#[derive(Debug)]
pub struct Transaction<'a> {
    producer: &'a Producer,
}

impl Producer {
    fn txn(&self) -> Result<&TxnClient, ProducerError> {
        self.shared
            .txn
            .as_deref()
            .ok_or(ProducerError::NotTransactional)
    }

    /// Starts this producer's transactional id at its coordinator: the id's producer id
    /// at a new epoch, fencing every older instance (whose open transaction is aborted).
    /// Call once, before the first transaction.
    pub async fn init_transactions(&self) -> Result<(), ProducerError> {
        let txn = self.txn()?;
        let timeout_ms = i32::try_from(txn.timeout.as_millis()).unwrap_or(i32::MAX);
        let (id, epoch) = self
            .shared
            .coordinator_call(txn, |client| {
                let tid = txn.id.clone();
                async move { client.init_transactional_producer(&tid, timeout_ms).await }
            })
            .await?;
        self.shared.set_producer_id(id, epoch).await;
        tracing::debug!(transactional_id = %txn.id, producer_id = id, epoch, "transactional producer started");
        Ok(())
    }

    /// Opens a transaction. One left open by a dropped `Transaction` is aborted first.
    pub async fn transaction(&self) -> Result<Transaction<'_>, ProducerError> {
        let txn = self.txn()?;
        if self.shared.current_producer_id().await.is_none() {
            return Err(ProducerError::TransactionState(
                "call init_transactions before the first transaction".into(),
            ));
        }
        if txn.is_open() {
            // The last one was left open (dropped, or its end failed): abort it. One the
            // coordinator already ended otherwise (a commit whose answer was lost) answers
            // INVALID_TXN_STATE: it is over, and the producer starts again at a new epoch
            // (the one that end moved it to never reached it).
            match self.end(false).await {
                Err(ProducerError::Api(api)) if api.code == ErrorCode::InvalidTxnState => {
                    {
                        let mut progress = txn.progress.lock().await;
                        progress.added.clear();
                        progress.groups.clear();
                        txn.set_open(false);
                    }
                    self.init_transactions().await?;
                }
                other => other?,
            }
        }
        txn.set_open(true);
        Ok(Transaction { producer: self })
    }

    async fn send_offsets(
        &self,
        group: &GroupMetadata,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(), ProducerError> {
        let txn = self.txn()?;
        check_open(&self.shared)?;
        let producer = self.shared.current_producer_id().await.ok_or_else(|| {
            ProducerError::TransactionState("call init_transactions first".into())
        })?;
        let known = txn.progress.lock().await.groups.contains(&group.group);
        if !known {
            self.shared
                .coordinator_call(txn, |client| {
                    let (id, name) = (txn.id.clone(), group.group.clone());
                    async move {
                        client
                            .add_offsets_to_txn(&id, (producer.id, producer.epoch), &name)
                            .await
                    }
                })
                .await?;
            txn.progress.lock().await.groups.insert(group.group.clone());
        }
        // Asked of the group's coordinator, found (again) as needed.
        let deadline = Instant::now() + self.shared.config.request_timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let bootstrap = self.shared.cluster.bootstrap();
            let answer = match bootstrap.find_coordinator(&group.group).await {
                Ok((node, address)) => match bootstrap.to_node(node, &address).await {
                    Ok(coordinator) => {
                        coordinator
                            .txn_offset_commit(
                                &txn.id,
                                (producer.id, producer.epoch),
                                group,
                                offsets.clone(),
                            )
                            .await
                    }
                    Err(error) => Err(error),
                },
                Err(error) => Err(error),
            };
            match answer {
                Err(error) if retriable(&error) && Instant::now() < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(error) => {
                    // Written or not, the offsets are in doubt: the transaction can only
                    // abort, or it would commit its output without its input's progress.
                    let reason =
                        format!("offsets of group {:?} not committed: {error}", group.group);
                    self.shared.transaction_failed(&reason).await;
                    return Err(ProducerError::from(error));
                }
                Ok(()) => return Ok(()),
            }
        }
    }

    /// Flushes, then commits or aborts the open transaction at the coordinator.
    async fn end(&self, commit: bool) -> Result<(), ProducerError> {
        let txn = self.txn()?;
        txn.ending.store(true, std::sync::atomic::Ordering::Release);
        let ended = self.end_now(txn, commit).await;
        txn.ending
            .store(false, std::sync::atomic::Ordering::Release);
        ended
    }

    async fn end_now(&self, txn: &TxnClient, commit: bool) -> Result<(), ProducerError> {
        self.flush().await;
        let producer = self.shared.current_producer_id().await.ok_or_else(|| {
            ProducerError::TransactionState(
                "the producer lost its id (fenced, or a batch failed for good)".into(),
            )
        })?;
        let (added, failed) = {
            let mut progress = txn.progress.lock().await;
            let added = !progress.added.is_empty() || !progress.groups.is_empty();
            (added, progress.failed.take())
        };
        let commit = commit && failed.is_none();
        if added {
            let (id, epoch) = self
                .shared
                .coordinator_call(txn, |client| {
                    let id = txn.id.clone();
                    async move {
                        client
                            .end_txn(&id, (producer.id, producer.epoch), commit)
                            .await
                    }
                })
                .await?;
            // Every end moves the producer to a new epoch (a late write of this
            // transaction is refused under it); its partitions number afresh from 0.
            if (id, epoch) != (producer.id, producer.epoch) {
                self.shared.set_producer_id(id, epoch).await;
            }
        }
        {
            let mut progress = txn.progress.lock().await;
            progress.added.clear();
            progress.groups.clear();
        }
        txn.set_open(false);
        match failed {
            Some(reason) => {
                // The failed records left gaps in the partitions' sequences: the producer
                // goes on under a new epoch, every partition numbered afresh.
                self.init_transactions().await?;
                Err(ProducerError::TransactionAborted(reason))
            }
            None => Ok(()),
        }
    }
}

impl Transaction<'_> {
    /// Adds a record to the transaction (see `Producer::send`).
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ProducerError> {
        self.producer.send(record).await
    }

    /// Commits `group`'s consumed offsets as part of the transaction: they take effect
    /// when it commits, and never if it aborts (consume-transform-produce: the input's
    /// progress and the output are one outcome).
    pub async fn send_offsets(
        &self,
        group: &GroupMetadata,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(), ProducerError> {
        self.producer.send_offsets(group, offsets).await
    }

    /// Waits for every record to be acknowledged, then commits. If any record failed,
    /// the transaction is aborted instead and `TransactionAborted` says why.
    pub async fn commit(self) -> Result<(), ProducerError> {
        self.producer.end(true).await
    }

    /// Aborts: read_committed consumers never see the transaction's records.
    pub async fn abort(self) -> Result<(), ProducerError> {
        self.producer.end(false).await
    }
}

/// Whether `record` may be sent now: a transactional producer sends inside transactions
/// only.
pub(crate) fn check_open(shared: &Shared) -> Result<(), ProducerError> {
    match &shared.txn {
        Some(txn) if !txn.is_open() => Err(ProducerError::TransactionState(
            "a transactional producer sends inside a transaction only".into(),
        )),
        Some(txn) if txn.ending.load(std::sync::atomic::Ordering::Acquire) => Err(
            ProducerError::TransactionState("the transaction is being committed or aborted".into()),
        ),
        _ => Ok(()),
    }
}
