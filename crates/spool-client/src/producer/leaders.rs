//! Watching for new leaders while a producer waits on an old one. A leader that dies
//! leaves its requests unanswered until its connection is found dead (seconds, behind a
//! proxy or a cut network), and a retry backoff that grew while the election ran keeps
//! records waiting after the new leader is up. Both end as soon as the metadata names a
//! leader elected in a newer term than the one the records were sent in; the term is what
//! tells a real election from followers naming each other mid-election.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Shared;
use super::accumulator::Shipment;

/// A request unanswered this long has its partitions' leaders checked, and again at
/// each `CHECK_EVERY`: an acks=all write normally takes milliseconds, and a dead
/// leader's partitions have new leaders within about a second.
const CHECK_AFTER: Duration = Duration::from_millis(300);
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// A partition waiting out a retry backoff.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub topic: Arc<str>,
    pub partition: u32,
    /// The leader epoch its failed attempt was sent in (0: unknown).
    pub epoch: u64,
    /// When its backoff ends.
    pub until: Instant,
}

/// Resolves, with why, once the metadata names a newly elected leader other than
/// `leader` for every partition of a request `leader` has not answered. A leader that is
/// merely slow keeps its partitions, and its request is left to finish.
pub(crate) async fn moved(
    shared: &Shared,
    leader: Option<u64>,
    shipments: &[Shipment],
    epochs: &[u64],
) -> String {
    // Sent to the bootstrap node for want of a known leader, or in a term not known:
    // nothing to judge a newer leader by.
    let Some(leader) = leader.filter(|leader| *leader != 0) else {
        return std::future::pending().await;
    };
    if epochs.contains(&0) {
        return std::future::pending().await;
    }
    let topics = topics_of(shipments.iter().map(|s| &s.topic));
    let mut checks = tokio::time::interval_at(Instant::now() + CHECK_AFTER, CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        checks.tick().await;
        refresh(shared, &topics, Some(leader)).await;
        let all_moved = shipments.iter().zip(epochs).all(|(s, epoch)| {
            shared
                .cluster
                .newer_leader(&s.topic, s.partition, *epoch)
                .is_some_and(|now| now != leader)
        });
        if all_moved {
            return format!("node {leader} did not answer, and its partitions have new leaders");
        }
    }
}

/// Sends each waiting partition on at once when the metadata names a leader elected
/// after its failed attempt, instead of at the end of its backoff. Returns when none is
/// left waiting. `suspect`: the node that failed to answer, asked for metadata last.
pub(crate) async fn expedite_when_elected(
    shared: &Shared,
    mut waiting: Vec<Waiting>,
    suspect: Option<u64>,
) {
    loop {
        // Those whose backoff ends before the next check go then anyway.
        let next_check = Instant::now() + CHECK_EVERY;
        waiting.retain(|w| w.until > next_check);
        if waiting.is_empty() {
            return;
        }
        tokio::time::sleep_until(next_check).await;
        let topics = topics_of(waiting.iter().map(|w| &w.topic));
        refresh(shared, &topics, suspect).await;
        // A refresh may have taken long: a partition whose backoff ended meanwhile may
        // have been tried and put back since, with a backoff this entry knows nothing of.
        let now = Instant::now();
        waiting.retain(|w| w.until > now);
        let before = waiting.len();
        waiting.retain(|w| {
            let elected = shared
                .cluster
                .newer_leader(&w.topic, w.partition, w.epoch)
                .is_some();
            if elected {
                shared.accumulator.lock().expedite(&w.topic, w.partition);
            }
            !elected
        });
        if waiting.len() < before {
            shared.wake.notify_one();
        }
    }
}

fn topics_of<'a>(topics: impl Iterator<Item = &'a Arc<str>>) -> Vec<Arc<str>> {
    let mut topics: Vec<Arc<str>> = topics.cloned().collect();
    topics.sort_unstable();
    topics.dedup();
    topics
}

/// Takes the topics' metadata again unless another task just asked: many requests and
/// partitions may be waiting on the same election.
async fn refresh(shared: &Shared, topics: &[Arc<str>], suspect: Option<u64>) {
    for topic in topics {
        if !shared.cluster.claim_poll(topic, CHECK_EVERY / 2) {
            continue;
        }
        if let Err(error) = shared.cluster.refresh_avoiding(topic, suspect).await {
            tracing::debug!(%error, "metadata refresh failed");
        }
    }
}
