//! The idempotent producer's identity and sequence numbers.
//!
//! A producer asks a broker for a producer id once, before its first shipment. Each
//! partition numbers its records from 0 under that id, in the order batches are first
//! shipped (at most one shipment per partition is in flight, and a retried one goes
//! back in front, so that order is send order). A retry carries the numbers it was first
//! shipped with, and the partition's leader answers it from its log instead of storing
//! it twice.
//!
//! A partition that no longer knows the producer (idle past the expiry, or its records
//! removed by retention) refuses a batch not numbered 0 with UNKNOWN_PRODUCER_ID: the
//! batches are numbered afresh from 0 and sent again. A sequence gap or a fenced epoch
//! fails the batches and the producer takes a new id, with which every partition starts
//! again from 0.

use bytes::Bytes;
use spool_types::ErrorCode;

use super::Shared;
use super::accumulator::{Payload, Shipment};
use crate::Acks;
use crate::error::ClientError;

/// Batches of one producer a partition remembers: a retry of any of them is answered
/// from there.
pub(crate) const BATCHES_REMEMBERED: usize = 5;

/// The identity the producer's batches carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerId {
    pub id: i64,
    pub epoch: i16,
    /// Changes with every new id: partitions restart their numbers when it does.
    pub generation: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Identity {
    current: Option<ProducerId>,
    generation: u64,
}

/// Sequences wrap from `i32::MAX` to 0, as Kafka's do.
pub(crate) fn add_sequence(sequence: i32, delta: usize) -> i32 {
    let modulus = i64::from(i32::MAX) + 1;
    ((i64::from(sequence) + delta as i64) % modulus) as i32
}

/// What to do with a shipment a partition refused for its sequence numbers.
pub(crate) enum SequenceFix {
    /// Numbered afresh from 0: send it again.
    Renumbered(Shipment),
    /// The batches fail; the producer takes a new id.
    Fail(Shipment),
}

impl Shared {
    /// Whether batches carry a producer id and sequences (idempotence asked for, and
    /// acks=all, without which a retry has nothing to be checked against).
    pub(crate) fn idempotent(&self) -> bool {
        (self.config.idempotence && self.config.acks == Acks::All) || self.txn.is_some()
    }

    /// The producer's identity, asked for on first use; `None` when not idempotent.
    pub(crate) async fn producer_id(&self) -> Result<Option<ProducerId>, ClientError> {
        if !self.idempotent() {
            return Ok(None);
        }
        let mut identity = self.identity.lock().await;
        if let Some(current) = identity.current {
            return Ok(Some(current));
        }
        if self.txn.is_some() {
            // A transactional producer's id comes from its coordinator only.
            return Err(ClientError::Transport(
                "the transactional producer has no producer id: init_transactions first".into(),
            ));
        }
        let (id, epoch) = self.cluster.init_producer_id().await?;
        identity.generation += 1;
        let current = ProducerId {
            id,
            epoch,
            generation: identity.generation,
        };
        identity.current = Some(current);
        tracing::debug!(producer_id = id, epoch, "idempotent producer id assigned");
        Ok(Some(current))
    }

    /// Takes `id` at `epoch` (from a transaction coordinator): every partition numbers
    /// its records afresh.
    pub(crate) async fn set_producer_id(&self, id: i64, epoch: i16) {
        let mut identity = self.identity.lock().await;
        identity.generation += 1;
        identity.current = Some(ProducerId {
            id,
            epoch,
            generation: identity.generation,
        });
    }

    /// The identity batches are stamped with now, if there is one.
    pub(crate) async fn current_producer_id(&self) -> Option<ProducerId> {
        self.identity.lock().await.current
    }

    /// Gives up `used` (if still current): the next shipment asks for a new id.
    pub(crate) async fn discard_producer_id(&self, used: ProducerId) {
        let mut identity = self.identity.lock().await;
        if identity.current == Some(used) {
            identity.current = None;
        }
    }

    /// Handles a partition's refusal of a shipment for its producer id or sequence
    /// (its batches all carry one id). `Err`: the error is not about sequences.
    pub(crate) async fn fix_sequence(
        &self,
        code: ErrorCode,
        mut shipment: Shipment,
    ) -> Result<SequenceFix, Shipment> {
        let Some(used) = shipment.batches.first().and_then(|b| b.stamped) else {
            return Err(shipment);
        };
        if shipment.batches.iter().any(|b| b.stamped != Some(used)) {
            return Err(shipment);
        }
        match code {
            // A transactional producer the partition forgot may be a zombie whose fencing
            // marker retention removed: it does not start over there, it fails.
            ErrorCode::UnknownProducerId if self.txn.is_some() => Ok(SequenceFix::Fail(shipment)),
            ErrorCode::UnknownProducerId => {
                let mut next = 0;
                for batch in &mut shipment.batches {
                    if let Payload::Built(bytes) = &batch.payload {
                        let mut renumbered = bytes.to_vec();
                        spool_log::batch::set_producer(&mut renumbered, used.id, used.epoch, next);
                        batch.payload = Payload::Built(Bytes::from(renumbered));
                    }
                    next = add_sequence(next, batch.records);
                }
                self.accumulator.lock().restart_sequence(
                    &shipment.topic,
                    shipment.partition,
                    used.generation,
                    next,
                );
                tracing::debug!(topic = %shipment.topic, partition = shipment.partition, "the partition forgot this producer; numbering afresh");
                Ok(SequenceFix::Renumbered(shipment))
            }
            // The caller fails the batches, which gives the id up.
            ErrorCode::OutOfOrderSequence | ErrorCode::InvalidProducerEpoch => {
                Ok(SequenceFix::Fail(shipment))
            }
            _ => Err(shipment),
        }
    }
}
