//! The transactional ids of one coordinator partition and the operations on them.

use std::collections::{BTreeMap, BTreeSet};

use crate::MAX_ID_BYTES;
use crate::error::TxnError;
use crate::records::TxnRecord;
use crate::state::{LAST_PRODUCER_EPOCH, Transaction, TxnState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnConfig {
    /// The longest transaction timeout a producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`).
    pub max_timeout_ms: i64,
    /// A transactional id idle this long, with no transaction open, is forgotten (Kafka's
    /// `transactional.id.expiration.ms`).
    pub id_expiration_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        Self {
            max_timeout_ms: 15 * 60 * 1000,
            id_expiration_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

/// What an operation writes, and what it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    pub records: Vec<TxnRecord>,
    pub value: T,
}

impl<T> Outcome<T> {
    fn new(records: Vec<TxnRecord>, value: T) -> Self {
        Self { records, value }
    }
}

/// What starting a producer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitAnswer {
    /// The producer id and the new epoch to produce with.
    Ready { producer_id: i64, epoch: i16 },
    /// An older instance's open transaction is being aborted first: ask again once it is
    /// complete (Kafka's CONCURRENT_TRANSACTIONS).
    AbortingPrevious,
}

/// What ending a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOutcome {
    /// The outcome is now decided: its markers are to be written.
    Prepared,
    /// A retry of an end already decided (or there was nothing to end).
    AlreadyDone,
}

/// The answer to an end: what it did, and the producer id and epoch to go on with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub outcome: EndOutcome,
    pub producer_id: i64,
    pub epoch: i16,
}

/// The transactional ids whose coordinator partition this is.
#[derive(Debug, Default)]
pub struct TxnCoordinator {
    config: TxnConfig,
    transactions: BTreeMap<String, Transaction>,
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> Self {
        Self {
            config,
            transactions: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    pub fn get(&self, transactional_id: &str) -> Option<&Transaction> {
        self.transactions.get(transactional_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Transaction)> {
        self.transactions.iter()
    }

    /// Transactions whose outcome is decided and whose markers are still to be written.
    pub fn preparing(&self) -> impl Iterator<Item = (&String, &Transaction)> {
        self.transactions
            .iter()
            .filter(|(_, t)| t.state.is_preparing())
    }

    pub fn apply(&mut self, record: &TxnRecord) {
        match &record.value {
            Some(t) => {
                self.transactions
                    .insert(record.transactional_id.clone(), t.clone());
            }
            None => {
                self.transactions.remove(&record.transactional_id);
            }
        }
    }

    /// The whole state as records.
    pub fn snapshot_records(&self) -> Vec<TxnRecord> {
        self.transactions
            .iter()
            .map(|(id, t)| TxnRecord {
                transactional_id: id.clone(),
                value: Some(t.clone()),
            })
            .collect()
    }

    /// Writes `t` as the new state of `id`: the record, applied.
    fn put(&mut self, id: &str, t: Transaction) -> TxnRecord {
        let record = TxnRecord {
            transactional_id: id.to_string(),
            value: Some(t),
        };
        self.apply(&record);
        record
    }

    /// A producer starts (or starts again) with this transactional id: it gets the id's
    /// producer id at a new epoch, which fences every older instance. A transaction left
    /// open by an older instance is aborted first (`AbortingPrevious`). `fresh_id` is a
    /// new producer id, needed for a new transactional id or one whose epochs are
    /// exhausted: without one, those are refused with `NoProducerId` (and change nothing),
    /// so that the caller allocates one only when it must.
    pub fn init_producer_id(
        &mut self,
        id: &str,
        timeout_ms: i64,
        now_ms: i64,
        fresh_id: Option<i64>,
    ) -> Result<Outcome<InitAnswer>, TxnError> {
        let allocate = || fresh_id.ok_or_else(|| "a new producer id is needed".to_string());
        check_id(id)?;
        if timeout_ms < 1 || timeout_ms > self.config.max_timeout_ms {
            return Err(TxnError::InvalidTimeout {
                got: timeout_ms,
                max: self.config.max_timeout_ms,
            });
        }
        let timeout = timeout_ms as i32;
        let Some(current) = self.transactions.get(id).cloned() else {
            let producer_id = allocate().map_err(TxnError::NoProducerId)?;
            let record = self.put(id, fresh(producer_id, timeout, now_ms));
            let ready = InitAnswer::Ready {
                producer_id,
                epoch: 0,
            };
            return Ok(Outcome::new(vec![record], ready));
        };
        match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(TxnError::Concurrent(id.to_string()))
            }
            TxnState::Ongoing => {
                // The older instance's transaction is aborted under a new epoch, so its
                // markers fence that instance at every partition it wrote to.
                let aborting = Transaction {
                    producer_epoch: next_epoch(current.producer_epoch),
                    last_producer_id: -1,
                    last_epoch: -1,
                    state: TxnState::PrepareAbort,
                    updated_ms: now_ms,
                    ..current
                };
                let record = self.put(id, aborting);
                Ok(Outcome::new(vec![record], InitAnswer::AbortingPrevious))
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let t = if current.producer_epoch >= LAST_PRODUCER_EPOCH {
                    let producer_id = allocate().map_err(TxnError::NoProducerId)?;
                    fresh(producer_id, timeout, now_ms)
                } else {
                    Transaction {
                        producer_epoch: current.producer_epoch + 1,
                        last_producer_id: -1,
                        last_epoch: -1,
                        timeout_ms: timeout,
                        state: TxnState::Empty,
                        partitions: BTreeSet::new(),
                        started_ms: -1,
                        updated_ms: now_ms,
                        ..current
                    }
                };
                let answer = InitAnswer::Ready {
                    producer_id: t.producer_id,
                    epoch: t.producer_epoch,
                };
                let record = self.put(id, t);
                Ok(Outcome::new(vec![record], answer))
            }
        }
    }

    /// The transaction of `id`, if `producer_id` at `epoch` is its current producer.
    fn current(&self, id: &str, producer_id: i64, epoch: i16) -> Result<&Transaction, TxnError> {
        let t = self
            .transactions
            .get(id)
            .filter(|t| t.producer_id == producer_id)
            .ok_or_else(|| TxnError::UnknownMapping(id.to_string()))?;
        if epoch != t.producer_epoch {
            return Err(TxnError::Fenced {
                id: id.to_string(),
                producer_id,
                epoch,
                current: t.producer_epoch,
            });
        }
        Ok(t)
    }

    /// Adds partitions to the producer's transaction, opening one if none is open.
    pub fn add_partitions(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, u32)],
        now_ms: i64,
    ) -> Result<Outcome<()>, TxnError> {
        let t = self.current(id, producer_id, epoch)?;
        if t.state.is_preparing() {
            return Err(TxnError::Concurrent(id.to_string()));
        }
        let open = t.state == TxnState::Ongoing;
        if open && partitions.iter().all(|p| t.partitions.contains(p)) {
            return Ok(Outcome::new(Vec::new(), ()));
        }
        let mut t = t.clone();
        if !open {
            t.partitions.clear();
            t.started_ms = now_ms;
        }
        t.partitions.extend(partitions.iter().cloned());
        t.state = TxnState::Ongoing;
        t.updated_ms = now_ms;
        let record = self.put(id, t);
        Ok(Outcome::new(vec![record], ()))
    }

    /// Commits or aborts the producer's transaction: the outcome is decided once the
    /// record is written, and completes once every partition has its marker. With
    /// `bump` (`Some`), the producer goes on at the next epoch; past the last one, under
    /// the fresh producer id it holds (without one, that end is refused with
    /// `NoProducerId` and changes nothing). Without (`None`, a producer that does not
    /// know epochs move), it keeps its epoch. An end asked again by the producer that
    /// ended is answered as done, with where it goes on.
    pub fn end(
        &mut self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
        bump: Option<Option<i64>>,
    ) -> Result<Outcome<Ended>, TxnError> {
        let refused = |t: &Transaction| TxnError::InvalidState {
            id: id.to_string(),
            state: t.state.name(),
            action: if commit { "commit" } else { "abort" },
        };
        if let Some(t) = self.transactions.get(id)
            && t.last_producer_id >= 0
            && (t.last_producer_id, t.last_epoch) == (producer_id, epoch)
            && (t.producer_id, t.producer_epoch) != (producer_id, epoch)
        {
            // The end of the last transaction, asked again: done if it ended as asked;
            // the other outcome is refused as such (the producer, unsure how its end went,
            // starts again); once the producer moved on, it is stale.
            let done = match t.state {
                TxnState::PrepareCommit | TxnState::CompleteCommit => commit,
                TxnState::PrepareAbort | TxnState::CompleteAbort => !commit,
                TxnState::Empty | TxnState::Ongoing => {
                    return Err(TxnError::Fenced {
                        id: id.to_string(),
                        producer_id,
                        epoch,
                        current: t.producer_epoch,
                    });
                }
            };
            if !done {
                return Err(refused(t));
            }
            let ended = Ended {
                outcome: EndOutcome::AlreadyDone,
                producer_id: t.producer_id,
                epoch: t.producer_epoch,
            };
            return Ok(Outcome::new(Vec::new(), ended));
        }
        let t = self.current(id, producer_id, epoch)?;
        let unchanged = Ended {
            outcome: EndOutcome::AlreadyDone,
            producer_id,
            epoch,
        };
        match (t.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut t = t.clone();
                match bump {
                    Some(_) if epoch < LAST_PRODUCER_EPOCH => {
                        (t.last_producer_id, t.last_epoch) = (producer_id, epoch);
                        t.producer_epoch = epoch + 1;
                    }
                    Some(fresh_id) => {
                        t.producer_id = fresh_id
                            .ok_or_else(|| TxnError::NoProducerId("the epochs ran out".into()))?;
                        (t.last_producer_id, t.last_epoch) = (producer_id, epoch);
                        t.producer_epoch = 0;
                    }
                    // The markers carry the epoch the transaction ran under.
                    None => (t.last_producer_id, t.last_epoch) = (-1, -1),
                }
                t.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                t.updated_ms = now_ms;
                let ended = Ended {
                    outcome: EndOutcome::Prepared,
                    producer_id: t.producer_id,
                    epoch: t.producer_epoch,
                };
                let record = self.put(id, t);
                Ok(Outcome::new(vec![record], ended))
            }
            (TxnState::Empty, _)
            | (TxnState::PrepareCommit | TxnState::CompleteCommit, true)
            | (TxnState::PrepareAbort | TxnState::CompleteAbort, false) => {
                Ok(Outcome::new(Vec::new(), unchanged))
            }
            _ => Err(refused(t)),
        }
    }

    /// Marks the transaction of `id` complete, once every marker of its outcome is
    /// written at producer `producer_id`, `epoch` (its `marker_producer`). Nothing if it
    /// moved on meanwhile.
    pub fn complete(&mut self, id: &str, producer_id: i64, epoch: i16, now_ms: i64) -> Outcome<()> {
        let Some(t) = self.transactions.get(id) else {
            return Outcome::new(Vec::new(), ());
        };
        if !t.state.is_preparing() || t.marker_producer() != (producer_id, epoch) {
            return Outcome::new(Vec::new(), ());
        }
        let mut t = t.clone();
        t.state = if t.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        t.partitions.clear();
        t.started_ms = -1;
        t.updated_ms = now_ms;
        let record = self.put(id, t);
        Outcome::new(vec![record], ())
    }

    /// Aborts `id`'s open transaction under a new epoch (fencing its producer): for a
    /// timeout, or an operator. Nothing if no transaction is open.
    pub fn abort(&mut self, id: &str, now_ms: i64) -> Outcome<bool> {
        let Some(t) = self.transactions.get(id) else {
            return Outcome::new(Vec::new(), false);
        };
        if t.state != TxnState::Ongoing {
            return Outcome::new(Vec::new(), false);
        }
        let mut t = t.clone();
        // Not an end the producer asked for: it is fenced, and cannot ask it again.
        (t.last_producer_id, t.last_epoch) = (-1, -1);
        t.producer_epoch = next_epoch(t.producer_epoch);
        t.state = TxnState::PrepareAbort;
        t.updated_ms = now_ms;
        let record = self.put(id, t);
        Outcome::new(vec![record], true)
    }

    /// Aborts every transaction open longer than its timeout; returns their ids.
    pub fn abort_timed_out(&mut self, now_ms: i64) -> Outcome<Vec<String>> {
        let late: Vec<String> = self
            .transactions
            .iter()
            .filter(|(_, t)| {
                t.state == TxnState::Ongoing
                    && now_ms.saturating_sub(t.started_ms) > i64::from(t.timeout_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut records = Vec::with_capacity(late.len());
        for id in &late {
            records.extend(self.abort(id, now_ms).records);
        }
        Outcome::new(records, late)
    }

    /// Forgets transactional ids idle past the expiration with nothing open; returns them.
    pub fn expire_ids(&mut self, now_ms: i64) -> Outcome<Vec<String>> {
        let cutoff = now_ms.saturating_sub(self.config.id_expiration_ms);
        let idle: Vec<String> = self
            .transactions
            .iter()
            .filter(|(_, t)| {
                matches!(
                    t.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && t.updated_ms < cutoff
            })
            .map(|(id, _)| id.clone())
            .collect();
        let records = idle
            .iter()
            .map(|id| {
                let record = TxnRecord {
                    transactional_id: id.clone(),
                    value: None,
                };
                self.apply(&record);
                record
            })
            .collect();
        Outcome::new(records, idle)
    }
}

fn fresh(producer_id: i64, timeout_ms: i32, now_ms: i64) -> Transaction {
    Transaction {
        producer_id,
        producer_epoch: 0,
        last_producer_id: -1,
        last_epoch: -1,
        timeout_ms,
        state: TxnState::Empty,
        partitions: BTreeSet::new(),
        started_ms: -1,
        updated_ms: now_ms,
    }
}

/// The epoch after `epoch`, for an abort that fences the producer: past the last one it
/// stays there (the next start takes a new id).
fn next_epoch(epoch: i16) -> i16 {
    epoch.saturating_add(1)
}

/// A transactional id: 1 to `MAX_ID_BYTES` bytes, no control characters.
pub fn check_id(id: &str) -> Result<(), TxnError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(TxnError::InvalidId(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
