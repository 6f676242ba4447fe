//! The idempotent-producer table of a partition: for each producer id, its epoch and the
//! sequence ranges and offsets of its last five batches.
//!
//! It is derived from the log alone, so every replica that holds the same log holds the
//! same table: followers record each batch as they append it, the leader also checks
//! each of its own batches before appending it, and a table is rebuilt from a snapshot
//! and the entries after it. Producers whose batches retention removed leave it, as does
//! a producer idle for longer than the configured expiry.

use std::collections::{BTreeSet, HashMap, VecDeque};

use spool_log::RecordBatch;
use spool_log::batch::ControlMarker;

use crate::error::CodecError;

pub(crate) mod aborted;
pub(crate) mod files;

/// Batches remembered per producer: a retry of any of them is answered from here.
pub const BATCHES_KEPT: usize = 5;

/// Producers one partition remembers at most. Beyond it, the one whose newest batch is
/// oldest in the log goes: a choice the log alone makes, so every replica makes it
/// alike. (Short-lived producers, each with a new id, would otherwise pile up until they
/// expire.)
pub const PRODUCERS_KEPT: usize = 10_000;

/// Who wrote a batch, which sequence numbers it carries, and what it is to a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIdentity {
    pub producer_id: i64,
    pub epoch: i16,
    /// -1 for a batch without sequences (a marker, or a coordinator's transactional
    /// offsets), which is checked for its epoch only.
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub kind: BatchKind,
    /// When this replica came upon the batch, by its clock: expiry counts from the
    /// newest. (Not the records' timestamps, which a producer replaying old data sets
    /// far in the past.)
    pub seen_ms: i64,
}

/// What a producer's batch is to its transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Records; `transactional` ones belong to the producer's open transaction.
    Data { transactional: bool },
    /// The commit or abort marker that ends the producer's transaction.
    Marker(ControlMarker),
}

impl BatchIdentity {
    /// The identity of a batch of an idempotent or transactional producer, or of a
    /// transaction marker; `None` for a batch of a plain producer.
    pub fn of(batch: &RecordBatch<'_>) -> Option<Self> {
        if batch.producer_id() < 0 {
            return None;
        }
        let kind = if batch.is_control() {
            BatchKind::Marker(ControlMarker::of(batch)?)
        } else {
            BatchKind::Data {
                transactional: batch.is_transactional(),
            }
        };
        let first = batch.base_sequence();
        let sequenced = first >= 0 && matches!(kind, BatchKind::Data { .. });
        if !sequenced
            && kind
                == (BatchKind::Data {
                    transactional: false,
                })
        {
            return None;
        }
        Some(Self {
            producer_id: batch.producer_id(),
            epoch: batch.producer_epoch(),
            first_sequence: if sequenced { first } else { -1 },
            last_sequence: if sequenced {
                add_sequence(first, batch.last_offset_delta())
            } else {
                -1
            },
            kind,
            seen_ms: wall_clock_ms(),
        })
    }

    fn sequenced(&self) -> bool {
        self.first_sequence >= 0
    }
}

/// A transaction that ended in an abort: readers at read_committed skip its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// Its first record's offset.
    pub first_offset: i64,
    /// Its abort marker's offset.
    pub last_offset: i64,
    /// The first offset of the oldest transaction still open when it was aborted (its
    /// own first offset at most): no transaction aborted later begins below it, which
    /// lets a lookup stop early.
    pub stable_bound: i64,
}

/// Sequences wrap from `i32::MAX` to 0, as Kafka's do.
pub fn add_sequence(sequence: i32, delta: i32) -> i32 {
    let sum = i64::from(sequence) + i64::from(delta);
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

/// A batch the table remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerState {
    pub epoch: i16,
    /// Oldest first.
    pub batches: VecDeque<KeptBatch>,
    /// When the newest of its batches was come upon (see `BatchIdentity::seen_ms`).
    pub last_seen_ms: i64,
    /// The offset of its newest batch or marker: what retention and the cap go by.
    pub newest_offset: i64,
    /// The first offset of its open transaction, if one is open.
    pub txn_first: Option<i64>,
    /// The epoch of the newest coordinator that wrote a marker for it (-1: none): a
    /// marker of an older coordinator (one deposed while its write was on the way) is
    /// refused, so it cannot end a later transaction of the same producer epoch.
    pub coordinator_epoch: i32,
}

/// What the leader does with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// A retry of a batch the log holds: answered with the offset it was stored at.
    Duplicate {
        base_offset: i64,
    },
    Refused(SequenceError),
}

/// Why an idempotent batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id} at epoch {epoch} is fenced: the partition has epoch {current}")]
    Fenced {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id} sent sequence {got} where {expected} was expected")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error(
        "producer {producer_id} is not known to this partition (it was idle past the expiry, or retention removed its records) and sent sequence {got}, not 0"
    )]
    UnknownProducer { producer_id: i64, got: i32 },
    #[error(
        "a transaction marker for producer {producer_id} from coordinator epoch {got} is stale: one from epoch {current} was written"
    )]
    StaleCoordinator {
        producer_id: i64,
        got: i32,
        current: i32,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerState>,
    /// Open transactions: (first offset, producer id).
    open: BTreeSet<(i64, i64)>,
}

impl ProducerTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerState> {
        self.producers.get(&producer_id)
    }

    /// The first offset of the oldest open transaction: a read_committed reader stops
    /// there.
    pub fn first_unstable(&self) -> Option<i64> {
        self.open.first().map(|(first, _)| *first)
    }

    /// Open transactions as (first offset, producer id), oldest first.
    pub fn open_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.open.iter().copied()
    }

    /// Whether the batch may be appended after everything the table has seen.
    pub fn check(&self, batch: &BatchIdentity) -> Verdict {
        let Some(state) = self.producers.get(&batch.producer_id) else {
            return if !batch.sequenced() || batch.first_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Refused(SequenceError::UnknownProducer {
                    producer_id: batch.producer_id,
                    got: batch.first_sequence,
                })
            };
        };
        if batch.epoch < state.epoch {
            return Verdict::Refused(SequenceError::Fenced {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                current: state.epoch,
            });
        }
        if let BatchKind::Marker(marker) = batch.kind
            && marker.coordinator_epoch >= 0
            && marker.coordinator_epoch < state.coordinator_epoch
        {
            return Verdict::Refused(SequenceError::StaleCoordinator {
                producer_id: batch.producer_id,
                got: marker.coordinator_epoch,
                current: state.coordinator_epoch,
            });
        }
        if !batch.sequenced() {
            return Verdict::Append;
        }
        if batch.epoch > state.epoch {
            // A new epoch starts its sequences afresh.
            return if batch.first_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Refused(SequenceError::OutOfOrder {
                    producer_id: batch.producer_id,
                    expected: 0,
                    got: batch.first_sequence,
                })
            };
        }
        if let Some(kept) = state.batches.iter().find(|k| {
            k.first_sequence == batch.first_sequence && k.last_sequence == batch.last_sequence
        }) {
            return Verdict::Duplicate {
                base_offset: kept.base_offset,
            };
        }
        let expected = state
            .batches
            .back()
            .map_or(0, |last| add_sequence(last.last_sequence, 1));
        if batch.first_sequence == expected {
            Verdict::Append
        } else {
            Verdict::Refused(SequenceError::OutOfOrder {
                producer_id: batch.producer_id,
                expected,
                got: batch.first_sequence,
            })
        }
    }

    /// Records a batch the log now holds at `[base_offset, last_offset]`; returns the
    /// transaction it aborted, if it is an abort marker that ended one. A batch of an
    /// older epoch than the table's (which a leader never stores) changes nothing.
    pub fn record(
        &mut self,
        batch: &BatchIdentity,
        base_offset: i64,
        last_offset: i64,
    ) -> Option<AbortedTxn> {
        let newcomer = !self.producers.contains_key(&batch.producer_id);
        let state = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerState {
                epoch: batch.epoch,
                batches: VecDeque::with_capacity(BATCHES_KEPT),
                last_seen_ms: batch.seen_ms,
                newest_offset: last_offset,
                txn_first: None,
                coordinator_epoch: -1,
            });
        // Whatever the log holds is recorded, even of an epoch older than the table's
        // (a leader that had forgotten the producer took it): every replica must decide
        // alike from the same log, whatever it remembered before.
        if batch.epoch > state.epoch {
            state.epoch = batch.epoch;
            state.batches.clear();
        }
        state.last_seen_ms = state.last_seen_ms.max(batch.seen_ms);
        state.newest_offset = state.newest_offset.max(last_offset);
        let mut aborted = None;
        match batch.kind {
            BatchKind::Marker(marker) => {
                state.coordinator_epoch = state.coordinator_epoch.max(marker.coordinator_epoch);
                if let Some(first) = state.txn_first.take() {
                    let stable_bound = self.open.first().map_or(first, |(f, _)| *f);
                    self.open.remove(&(first, batch.producer_id));
                    aborted = (!marker.commit).then_some(AbortedTxn {
                        producer_id: batch.producer_id,
                        first_offset: first,
                        last_offset: base_offset,
                        stable_bound,
                    });
                }
            }
            BatchKind::Data { transactional } => {
                if transactional && state.txn_first.is_none() {
                    state.txn_first = Some(base_offset);
                    self.open.insert((base_offset, batch.producer_id));
                }
                if batch.sequenced() {
                    if state.batches.len() == BATCHES_KEPT {
                        state.batches.pop_front();
                    }
                    state.batches.push_back(KeptBatch {
                        first_sequence: batch.first_sequence,
                        last_sequence: batch.last_sequence,
                        base_offset,
                        last_offset,
                    });
                }
            }
        }
        if newcomer && self.producers.len() > PRODUCERS_KEPT {
            self.evict_stalest();
        }
        aborted
    }

    /// Forgets the producer, without an open transaction, whose newest batch is oldest
    /// in the log.
    fn evict_stalest(&mut self) {
        let stalest = self
            .producers
            .iter()
            .filter(|(_, s)| s.txn_first.is_none())
            .min_by_key(|(id, s)| (s.newest_offset, **id))
            .map(|(id, _)| *id);
        if let Some(id) = stalest {
            self.producers.remove(&id);
        }
    }

    /// Forgets batches below `log_start` (retention removed them), and producers left
    /// with nothing at or above it and no open transaction: the table stays what the
    /// retained log alone gives.
    pub fn remove_below(&mut self, log_start: i64) {
        self.producers.retain(|_, state| {
            state.batches.retain(|b| b.last_offset >= log_start);
            state.newest_offset >= log_start || state.txn_first.is_some()
        });
    }

    /// Forgets producers with no batch since `now_ms - idle_ms` and no open transaction
    /// (that one ends by its coordinator's marker, however long it takes); returns how
    /// many.
    pub fn expire(&mut self, now_ms: i64, idle_ms: i64) -> usize {
        let before = self.producers.len();
        let cutoff = now_ms.saturating_sub(idle_ms);
        self.producers
            .retain(|_, s| s.last_seen_ms >= cutoff || s.txn_first.is_some());
        before - self.producers.len()
    }

    /// The table as bytes (for a snapshot file): producers in id order, so equal tables
    /// encode alike.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let state = &self.producers[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&state.epoch.to_be_bytes());
            out.extend_from_slice(&state.last_seen_ms.to_be_bytes());
            out.extend_from_slice(&state.newest_offset.to_be_bytes());
            out.extend_from_slice(&state.txn_first.unwrap_or(-1).to_be_bytes());
            out.extend_from_slice(&state.coordinator_epoch.to_be_bytes());
            out.push(state.batches.len() as u8);
            for b in &state.batches {
                out.extend_from_slice(&b.first_sequence.to_be_bytes());
                out.extend_from_slice(&b.last_sequence.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Self, CodecError> {
        let count = take::<4>(&mut bytes).map(u32::from_be_bytes)?;
        let mut producers = HashMap::with_capacity((count as usize).min(1 << 16));
        let mut open = BTreeSet::new();
        for _ in 0..count {
            let id = take::<8>(&mut bytes).map(i64::from_be_bytes)?;
            let epoch = take::<2>(&mut bytes).map(i16::from_be_bytes)?;
            let last_seen_ms = take::<8>(&mut bytes).map(i64::from_be_bytes)?;
            let newest_offset = take::<8>(&mut bytes).map(i64::from_be_bytes)?;
            let txn_first = take::<8>(&mut bytes).map(i64::from_be_bytes)?;
            let txn_first = (txn_first >= 0).then_some(txn_first);
            let coordinator_epoch = take::<4>(&mut bytes).map(i32::from_be_bytes)?;
            let n = take::<1>(&mut bytes)?[0] as usize;
            if n > BATCHES_KEPT {
                return Err(CodecError::Malformed {
                    what: "producer batch count",
                });
            }
            let mut batches = VecDeque::with_capacity(BATCHES_KEPT);
            for _ in 0..n {
                batches.push_back(KeptBatch {
                    first_sequence: take::<4>(&mut bytes).map(i32::from_be_bytes)?,
                    last_sequence: take::<4>(&mut bytes).map(i32::from_be_bytes)?,
                    base_offset: take::<8>(&mut bytes).map(i64::from_be_bytes)?,
                    last_offset: take::<8>(&mut bytes).map(i64::from_be_bytes)?,
                });
            }
            if let Some(first) = txn_first {
                open.insert((first, id));
            }
            let state = ProducerState {
                epoch,
                batches,
                last_seen_ms,
                newest_offset,
                txn_first,
                coordinator_epoch,
            };
            if producers.insert(id, state).is_some() {
                return Err(CodecError::Malformed {
                    what: "producer listed twice",
                });
            }
        }
        if !bytes.is_empty() {
            return Err(CodecError::Malformed {
                what: "bytes after the producers",
            });
        }
        Ok(Self { producers, open })
    }
}

fn take<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], CodecError> {
    let (head, rest) = bytes
        .split_first_chunk::<N>()
        .ok_or(CodecError::Truncated)?;
    *bytes = rest;
    Ok(*head)
}

#[cfg(test)]
mod tests;

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
