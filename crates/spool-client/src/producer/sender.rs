//! The background task of a producer: ships ready batches, one request per leader, at most
//! one shipment per partition in flight; completes or retries them as the cluster answers.
//! A shipment's batches travel as one partition entry, which the broker validates all or
//! none and appends in order, so order within a partition holds through retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::accumulator::{ClosedBatch, Payload, Shipment, seed};
use super::identity::SequenceFix;
use super::leaders::{self, Waiting};
use super::{ProducerError, Shared};
use crate::error::{ApiError, ClientError};
use crate::types::PartitionBatches;
use spool_types::ErrorCode;

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut closing = shared.closing.subscribe();
    let mut requests = JoinSet::new();
    loop {
        let wake = shared.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let (shipments, next) = shared.accumulator.lock().take_ready(
            Instant::now(),
            shared.config.linger,
            max_batches(&shared),
        );
        let mut by_leader: HashMap<Option<u64>, Vec<Shipment>> = HashMap::new();
        for shipment in shipments {
            let leader = shared.cluster.leader(&shipment.topic, shipment.partition);
            by_leader.entry(leader).or_default().push(shipment);
        }
        for (leader, group) in by_leader {
            requests.spawn(ship(Arc::clone(&shared), leader, group));
        }
        if *closing.borrow() && requests.is_empty() && shared.accumulator.lock().is_idle() {
            return;
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wake => {}
            () = sleep => {}
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            _ = closing.changed() => {}
        }
    }
}

/// Sends shipments to one leader and settles each of them; then, for those put back for
/// another attempt, watches for a newly elected leader to send them to at once.
async fn ship(shared: Arc<Shared>, leader: Option<u64>, mut shipments: Vec<Shipment>) {
    // The leader epoch each partition is known to have been in when sent (0: unknown):
    // a leader elected in a newer one replaced the leader it was sent to.
    let epochs: Vec<u64> = shipments
        .iter()
        .map(|s| shared.cluster.known_epoch(&s.topic, s.partition))
        .collect();
    let producer = match shared.producer_id().await {
        Ok(producer) => producer,
        Err(error) => {
            let reason = format!("no producer id: {error}");
            return retry_unsent(&shared, shipments, epochs, reason).await;
        }
    };
    // A transactional producer's partitions join its transaction before their first
    // batch ships there.
    if let Some(producer) = producer
        && let Err(error) = shared.add_to_transaction(&shipments, producer).await
    {
        let reason = format!("not added to the transaction: {error}");
        return retry_unsent(&shared, shipments, epochs, reason).await;
    }
    let compression = {
        let mut accumulator = shared.accumulator.lock();
        // Batches shipped for the first time take their partition's next sequences.
        if let Some(producer) = producer {
            for shipment in &mut shipments {
                // A retry numbered under an earlier producer id ships alone: a shipment's
                // batches share one id, which a refusal is then about.
                let first_new = shipment
                    .batches
                    .iter()
                    .position(|b| matches!(b.payload, Payload::Building(_)));
                if let Some(first_new) = first_new
                    && shipment.batches[..first_new]
                        .iter()
                        .any(|b| b.stamped != Some(producer))
                {
                    let unsent = shipment.batches.split_off(first_new);
                    accumulator.put_back(&shipment.topic, shipment.partition, unsent);
                    continue;
                }
                for batch in &mut shipment.batches {
                    if let Payload::Building(builder) = &mut batch.payload {
                        let sequence = accumulator.take_sequence(
                            &shipment.topic,
                            shipment.partition,
                            producer.generation,
                            batch.records,
                        );
                        builder.set_producer(producer.id, producer.epoch, sequence);
                        builder.set_transactional(shared.txn.is_some());
                        batch.stamped = Some(producer);
                    }
                }
            }
        }
        accumulator.compression
    };
    for batch in shipments.iter_mut().flat_map(|s| s.batches.iter_mut()) {
        if let Payload::Building(_) = batch.payload {
            let Payload::Building(builder) =
                std::mem::replace(&mut batch.payload, Payload::Built(bytes::Bytes::new()))
            else {
                continue;
            };
            batch.payload = Payload::Built(compression.finish(builder));
        }
    }
    let request: Vec<PartitionBatches> = shipments
        .iter()
        .map(|s| PartitionBatches {
            topic: s.topic.to_string(),
            partition: s.partition,
            leader_epoch: shared.cluster.leader_epoch(&s.topic, s.partition),
            batches: s
                .batches
                .iter()
                .filter_map(|b| match &b.payload {
                    Payload::Built(bytes) => Some(bytes.clone()),
                    Payload::Building(_) => None,
                })
                .collect(),
        })
        .collect();
    let config = &shared.config;
    let answer = match shared.cluster.connection(leader).await {
        Ok(client) => {
            let produce = client.produce(config.acks, config.request_timeout, request);
            tokio::select! {
                answer = produce => answer,
                // Given up on, the request is cancelled. A deposed leader commits nothing
                // more: what it took is committed already (the retry then stores it
                // twice: at-least-once) or is lost with its term.
                reason = leaders::moved(&shared, leader, &shipments, &epochs) => {
                    Err(ClientError::Transport(reason))
                }
            }
        }
        Err(error) => Err(error),
    };
    let answered_at = Instant::now();
    let mut waiting = Vec::new();
    let mut suspect = None;
    match answer {
        Ok(outcome) => {
            if shared.cluster.is_newer_epoch(outcome.metadata_epoch) {
                // The cluster changed since our metadata: leaders may have moved.
                let mut topics: Vec<&str> = shipments.iter().map(|s| &*s.topic).collect();
                topics.dedup();
                for topic in topics {
                    if let Err(error) = shared.cluster.refresh(topic).await {
                        tracing::debug!(%error, "metadata refresh failed");
                    }
                }
            }
            // A partition the answer leaves out fails, and is never left in flight.
            let results = outcome
                .partitions
                .into_iter()
                .map(Some)
                .chain(std::iter::repeat_with(|| None));
            let answers = shipments.into_iter().zip(epochs).zip(results);
            for ((shipment, epoch), result) in answers {
                let result = result.unwrap_or_else(|| {
                    Err(ApiError {
                        code: ErrorCode::Unknown,
                        message: "the answer left this partition out".to_string(),
                        leader: None,
                    })
                });
                match result {
                    Ok(produced) => settle_produced(&shared, shipment, &produced),
                    Err(api) if api.code.is_retriable() => {
                        // A follower names the leader: go there without asking around.
                        if let Some((node, address)) = &api.leader {
                            shared.cluster.follow_leader(
                                &shipment.topic,
                                shipment.partition,
                                *node,
                                address,
                            );
                        }
                        let failed = Failed::answered(&api, epoch, answered_at);
                        waiting.extend(retry(&shared, shipment, failed).await);
                    }
                    Err(api) => match shared.fix_sequence(api.code, shipment).await {
                        Ok(SequenceFix::Renumbered(shipment)) => {
                            let failed = Failed::answered(&api, epoch, answered_at);
                            waiting.extend(retry(&shared, shipment, failed).await);
                        }
                        Ok(SequenceFix::Fail(shipment)) | Err(shipment) => {
                            fail(&shared, shipment, ProducerError::Api(api.clone())).await;
                        }
                    },
                }
            }
        }
        Err(error) => {
            let retriable = match &error {
                ClientError::Api(api) => api.code.is_retriable(),
                ClientError::Transport(_) | ClientError::Unreachable { .. } => true,
                _ => false,
            };
            suspect = leader;
            for (shipment, epoch) in shipments.into_iter().zip(epochs) {
                if retriable {
                    let failed = Failed {
                        reason: error.to_string(),
                        suspect: leader,
                        epoch,
                        at: answered_at,
                    };
                    waiting.extend(retry(&shared, shipment, failed).await);
                } else {
                    fail(&shared, shipment, ProducerError::from(clone_error(&error))).await;
                }
            }
        }
    }
    shared.wake.notify_one();
    leaders::expedite_when_elected(&shared, waiting, suspect).await;
}

/// Settles an acknowledged shipment, each batch at the offset the answer gives it (a
/// retried batch at the offset it was first stored at); from a broker that gives only
/// the first, at consecutive offsets.
fn settle_produced(shared: &Shared, shipment: Shipment, produced: &crate::types::Produced) {
    if produced.batch_base_offsets.len() != shipment.batches.len() {
        return settle_all(shared, shipment, Ok, produced.base_offset);
    }
    for (batch, base) in shipment
        .batches
        .into_iter()
        .zip(&produced.batch_base_offsets)
    {
        settle(shared, batch, Ok(*base));
    }
    shared
        .accumulator
        .lock()
        .release(&shipment.topic, shipment.partition);
}

/// Fails a shipment for good. Its sequences are then a gap the partition would refuse
/// the next batches for (if they were not stored) or hold (if they were): the producer
/// id they were numbered under is given up, and the next batches take a new one.
async fn fail(shared: &Shared, shipment: Shipment, error: ProducerError) {
    let stamped = shipment.batches.iter().find_map(|b| b.stamped);
    settle_all(shared, shipment, |_| Err(error.clone()), -1);
    if shared.txn.is_some() {
        // The transaction can only abort; the producer keeps its id to say so, and
        // takes a new epoch after.
        shared.transaction_failed(&error.to_string()).await;
    } else if let Some(used) = stamped {
        shared.discard_producer_id(used).await;
    }
}

/// Puts shipments that could not be sent back for another attempt.
async fn retry_unsent(
    shared: &Arc<Shared>,
    shipments: Vec<Shipment>,
    epochs: Vec<u64>,
    reason: String,
) {
    let at = Instant::now();
    let mut waiting = Vec::new();
    for (shipment, epoch) in shipments.into_iter().zip(epochs) {
        let failed = Failed {
            reason: reason.clone(),
            suspect: None,
            epoch,
            at,
        };
        waiting.extend(retry(shared, shipment, failed).await);
    }
    shared.wake.notify_one();
    leaders::expedite_when_elected(shared, waiting, None).await;
}

/// Most batches of one partition in a shipment: an idempotent producer's retry must be
/// answered whole from what the partition remembers of it (its last five batches).
fn max_batches(shared: &Shared) -> usize {
    if shared.idempotent() {
        super::identity::BATCHES_REMEMBERED
    } else {
        usize::MAX
    }
}

/// Settles every batch of a shipment; batches follow each other at consecutive offsets
/// from `base` (-1, as with acks=none, stays -1).
fn settle_all(
    shared: &Shared,
    shipment: Shipment,
    outcome: impl Fn(i64) -> Result<i64, ProducerError>,
    base: i64,
) {
    let mut next = base;
    for batch in shipment.batches {
        let records = batch.records as i64;
        settle(shared, batch, outcome(next));
        if next >= 0 {
            next += records;
        }
    }
    shared
        .accumulator
        .lock()
        .release(&shipment.topic, shipment.partition);
}

/// Completes every record of a batch and frees its buffer space.
fn settle(shared: &Shared, batch: ClosedBatch, outcome: Result<i64, ProducerError>) {
    batch.outcome.send_replace(Some(outcome));
    shared.accumulator.lock().complete(batch.records);
    shared.buffer.add_permits(batch.permits);
    shared.drained.notify_waiters();
}

/// A failed attempt of a shipment.
struct Failed {
    reason: String,
    /// The node that did not answer: asked for metadata last.
    suspect: Option<u64>,
    /// The leader epoch the shipment was sent in (0: unknown).
    epoch: u64,
    /// When the failure was known.
    at: Instant,
}

impl Failed {
    /// A partition's answer refused the shipment.
    fn answered(api: &ApiError, epoch: u64, at: Instant) -> Self {
        Self {
            reason: api.to_string(),
            suspect: None,
            epoch,
            at,
        }
    }
}

/// Puts a shipment back for another attempt, unless its time is up: at once if the
/// metadata now names a leader elected since it was sent, else after a backoff. Returns
/// the partition if it waits out a backoff.
async fn retry(shared: &Shared, mut shipment: Shipment, failed: Failed) -> Option<Waiting> {
    let config = &shared.config;
    let oldest = shipment.batches.iter().map(|b| b.created).min();
    if oldest.is_some_and(|created| created.elapsed() >= config.delivery_timeout) {
        let error = ProducerError::DeliveryTimeout(config.delivery_timeout, failed.reason);
        fail(shared, shipment, error).await;
        return None;
    }
    let attempts = shipment.batches.iter_mut().map(|b| {
        b.attempts += 1;
        b.attempts
    });
    let attempt = attempts.max().unwrap_or(1);
    // Leadership may have moved: ask again before the next attempt (once for all the
    // shipments of a topic that failed together), unless the last answer named the new
    // leader. What is cached stays until a newer answer replaces it: a node that cannot
    // answer, or lags, must not leave the topic unknown, which would fail new records at
    // once.
    let (topic, partition) = (Arc::clone(&shipment.topic), shipment.partition);
    if !shared.cluster.leader_just_learned(&topic, partition)
        && !shared.cluster.refreshed_since(&topic, failed.at.into_std())
        && let Err(error) = shared
            .cluster
            .refresh_avoiding(&topic, failed.suspect)
            .await
    {
        tracing::debug!(%error, "metadata refresh failed; retrying with what is known");
    }
    let elected = shared.cluster.newer_leader(&topic, partition, failed.epoch);
    let exponent = attempt.saturating_sub(1).min(16);
    let base = config
        .retry_backoff
        .saturating_mul(1 << exponent)
        .min(config.retry_backoff_max);
    // +-20% jitter so that many producers do not retry in lockstep.
    let jitter = 0.8 + f64::from(seed() % 1000) / 2500.0;
    let backoff = match elected {
        Some(_) => Duration::ZERO,
        None => Duration::from_secs_f64(base.as_secs_f64() * jitter),
    };
    tracing::debug!(%topic, partition, attempt, ?backoff, ?elected, reason = %failed.reason, "retrying");
    let until = Instant::now() + backoff;
    shared.accumulator.lock().requeue(shipment, until);
    elected.is_none().then_some(Waiting {
        topic,
        partition,
        epoch: failed.epoch,
        until,
    })
}

fn clone_error(error: &ClientError) -> ClientError {
    match error {
        ClientError::Api(api) => ClientError::Api(api.clone()),
        other => ClientError::Transport(other.to_string()),
    }
}
