//! The background task of a producer: ships ready batches, one request per leader, at most
//! one batch per partition in flight; completes or retries them as the cluster answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::accumulator::{ClosedBatch, Payload, seed};
use super::{ProducerError, Shared};
use crate::error::ClientError;
use crate::types::PartitionBatches;

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut closing = shared.closing.subscribe();
    let mut requests = JoinSet::new();
    loop {
        let wake = shared.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let (batches, next) = shared
            .accumulator
            .lock()
            .take_ready(Instant::now(), shared.config.linger);
        let mut by_leader: HashMap<Option<u64>, Vec<ClosedBatch>> = HashMap::new();
        for batch in batches {
            let leader = shared.cluster.leader(&batch.topic, batch.partition);
            by_leader.entry(leader).or_default().push(batch);
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

/// Sends a group of batches to one leader and settles each of them.
async fn ship(shared: Arc<Shared>, leader: Option<u64>, mut batches: Vec<ClosedBatch>) {
    let compression = shared.accumulator.lock().compression;
    for batch in &mut batches {
        if let Payload::Building(_) = batch.payload {
            let Payload::Building(builder) =
                std::mem::replace(&mut batch.payload, Payload::Built(bytes::Bytes::new()))
            else {
                continue;
            };
            batch.payload = Payload::Built(compression.finish(builder));
        }
    }
    let request: Vec<PartitionBatches> = batches
        .iter()
        .map(|b| PartitionBatches {
            topic: b.topic.to_string(),
            partition: b.partition,
            batches: match &b.payload {
                Payload::Built(bytes) => vec![bytes.clone()],
                Payload::Building(_) => Vec::new(),
            },
        })
        .collect();
    let config = &shared.config;
    let answer = match shared.cluster.connection(leader).await {
        Ok(client) => {
            client
                .produce(config.acks, config.request_timeout, request)
                .await
        }
        Err(error) => Err(error),
    };
    match answer {
        Ok(results) => {
            for (batch, result) in batches.into_iter().zip(results) {
                match result {
                    Ok(produced) => settle(&shared, batch, Ok(produced.base_offset)),
                    Err(api) if api.code.is_retriable() => {
                        retry(&shared, batch, api.to_string()).await
                    }
                    Err(api) => settle(&shared, batch, Err(ProducerError::Api(api))),
                }
            }
        }
        Err(error) => {
            let retriable = match &error {
                ClientError::Api(api) => api.code.is_retriable(),
                ClientError::Transport(_) | ClientError::Unreachable { .. } => true,
                _ => false,
            };
            for batch in batches {
                if retriable {
                    retry(&shared, batch, error.to_string()).await;
                } else {
                    settle(
                        &shared,
                        batch,
                        Err(ProducerError::from(clone_error(&error))),
                    );
                }
            }
        }
    }
    shared.wake.notify_one();
}

/// Completes every record of a batch and frees its buffer space.
fn settle(shared: &Shared, batch: ClosedBatch, outcome: Result<i64, ProducerError>) {
    batch.outcome.send_replace(Some(outcome));
    shared
        .accumulator
        .lock()
        .complete(&batch.topic, batch.partition, batch.records);
    shared.buffer.add_permits(batch.permits);
    shared.drained.notify_waiters();
}

/// Puts a batch back for another attempt after a backoff, unless its time is up.
async fn retry(shared: &Shared, mut batch: ClosedBatch, reason: String) {
    let config = &shared.config;
    if batch.created.elapsed() >= config.delivery_timeout {
        let error = ProducerError::DeliveryTimeout(config.delivery_timeout, reason);
        settle(shared, batch, Err(error));
        return;
    }
    batch.attempts += 1;
    // Leadership may have moved: ask again before the next attempt.
    shared.cluster.invalidate(&batch.topic);
    if let Err(error) = shared.cluster.refresh(&batch.topic).await {
        tracing::debug!(%error, "metadata refresh failed; retrying with what is known");
    }
    let exponent = batch.attempts.saturating_sub(1).min(16);
    let base = config
        .retry_backoff
        .saturating_mul(1 << exponent)
        .min(config.retry_backoff_max);
    // +-20% jitter so that many producers do not retry in lockstep.
    let jitter = 0.8 + f64::from(seed() % 1000) / 2500.0;
    let backoff = Duration::from_secs_f64(base.as_secs_f64() * jitter);
    tracing::debug!(topic = %batch.topic, partition = batch.partition, attempt = batch.attempts, ?backoff, %reason, "retrying a batch");
    shared
        .accumulator
        .lock()
        .requeue(batch, Instant::now() + backoff);
}

fn clone_error(error: &ClientError) -> ClientError {
    match error {
        ClientError::Api(api) => ClientError::Api(api.clone()),
        other => ClientError::Transport(other.to_string()),
    }
}
