//! Transactions as a coordinator machine: the `spool_txn::TxnCoordinator` of one
//! partition of `__transaction_state`, plus the work that follows a decided outcome
//! (writing its markers, then completing it), timeouts and id expiry.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use spool_txn::{Transaction, TxnConfig, TxnCoordinator, TxnRecord, TxnState};

use super::TRANSACTIONS_TOPIC;
use crate::broker::Broker;
use crate::coordinator::{Context, Job, Machine, Queue, Reply};

/// How often idle transactional ids are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// Longest pause between two attempts at a transaction's markers.
const MARKER_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What the request handlers share with a running transaction machine.
#[derive(Debug, Default)]
pub(crate) struct TxnShared {
    /// Moves whenever a transaction completes: producers waiting for their previous
    /// transaction to complete look again.
    pub completions: tokio::sync::watch::Sender<u64>,
}

pub(crate) struct TxnMachine {
    coordinator: TxnCoordinator,
    shared: Arc<TxnShared>,
    broker: Weak<Broker>,
    /// The coordinator's epoch (its partition's term), written into its markers.
    epoch: i32,
    /// Completions under way: (transactional id, producer id, epoch).
    completing: HashSet<(String, i64, i16)>,
    expired: Option<tokio::time::Instant>,
}

impl TxnMachine {
    pub(crate) fn new(config: TxnConfig, broker: Weak<Broker>, term: u64) -> Self {
        Self {
            coordinator: TxnCoordinator::new(config),
            shared: Arc::default(),
            broker,
            epoch: i32::try_from(term).unwrap_or(i32::MAX),
            completing: HashSet::new(),
            expired: None,
        }
    }

    /// Writes the markers of a decided transaction (retrying until they are all
    /// committed or this shard stops), then queues its completion.
    fn complete(&mut self, id: &str, t: &Transaction, queue: &Queue<Self>) {
        let (producer_id, epoch) = t.marker_producer();
        if !self.completing.insert((id.to_string(), producer_id, epoch)) {
            return;
        }
        let (id, t) = (id.to_string(), t.clone());
        let broker = self.broker.clone();
        let queue = queue.clone();
        let coordinator_epoch = self.epoch;
        tokio::spawn(async move {
            let commit = t.state == TxnState::PrepareCommit;
            let mut backoff = Duration::from_millis(20);
            loop {
                if queue.is_closed() {
                    return;
                }
                let Some(strong) = broker.upgrade() else {
                    return;
                };
                let written = strong
                    .write_txn_markers(&t, commit, coordinator_epoch)
                    .await;
                drop(strong);
                match written {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::debug!(transactional_id = %id, %error, "transaction markers not all written yet; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MARKER_BACKOFF_MAX);
                    }
                }
            }
            let job: Job<TxnMachine> = Box::new(move |c: &mut TxnCoordinator, ctx: &Context| {
                let outcome = c.complete(&id, producer_id, epoch, ctx.now_ms);
                (outcome.records, Box::new(|_| {}) as Reply)
            });
            queue.push_wait(job).await;
        });
    }
}

impl Machine for TxnMachine {
    type State = TxnCoordinator;
    type Record = TxnRecord;
    type Shared = Arc<TxnShared>;
    const KEY: &'static str = "transactional id";
    const TOPIC: &'static str = TRANSACTIONS_TOPIC;

    fn state(&mut self) -> &mut TxnCoordinator {
        &mut self.coordinator
    }

    fn scratch(&self) -> TxnCoordinator {
        TxnCoordinator::new(*self.coordinator.config())
    }

    fn shared(&self) -> Arc<TxnShared> {
        Arc::clone(&self.shared)
    }

    fn decode(key: &[u8], value: Option<&[u8]>) -> Result<TxnRecord, String> {
        TxnRecord::decode(key, value).map_err(|e| e.to_string())
    }

    fn encode(record: &TxnRecord, key: &mut Vec<u8>, value: &mut Vec<u8>) -> bool {
        record.encode_into(key, value)
    }

    fn apply(&mut self, record: &TxnRecord) {
        self.coordinator.apply(record);
    }

    fn snapshot_records(&self) -> Vec<TxnRecord> {
        self.coordinator.snapshot_records()
    }

    fn loaded(&mut self, queue: &Queue<Self>) {
        // Outcomes decided under an earlier coordinator are carried through here.
        let decided: Vec<(String, Transaction)> = self
            .coordinator
            .preparing()
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        tracing::info!(
            transactional_ids = self.coordinator.iter().count(),
            completing = decided.len(),
            "transactions loaded"
        );
        for (id, t) in decided {
            self.complete(&id, &t, queue);
        }
    }

    fn tick(&mut self) -> Vec<Job<Self>> {
        let mut jobs: Vec<Job<Self>> = vec![Box::new(|c: &mut TxnCoordinator, ctx: &Context| {
            let outcome = c.abort_timed_out(ctx.now_ms);
            for id in &outcome.value {
                tracing::info!(transactional_id = %id, "transaction aborted: open past its timeout");
            }
            (outcome.records, Box::new(|_| {}) as Reply)
        })];
        if self.expired.is_none_or(|at| at.elapsed() >= EXPIRE_EVERY) {
            self.expired = Some(tokio::time::Instant::now());
            jobs.push(Box::new(|c: &mut TxnCoordinator, ctx: &Context| {
                let outcome = c.expire_ids(ctx.now_ms);
                for id in &outcome.value {
                    tracing::info!(transactional_id = %id, "transactional id expired: idle past its expiration");
                }
                (outcome.records, Box::new(|_| {}) as Reply)
            }));
        }
        jobs
    }

    fn written(
        &mut self,
        operations: &[Vec<TxnRecord>],
        _began: tokio::time::Instant,
        queue: &Queue<Self>,
    ) {
        let mut completed = false;
        for record in operations.iter().flatten() {
            let id = &record.transactional_id;
            match &record.value {
                Some(t) if t.state.is_preparing() => self.complete(id, t, queue),
                _ => {
                    completed = true;
                    self.completing.retain(|(done, _, _)| done != id);
                }
            }
        }
        if completed {
            self.shared
                .completions
                .send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}
