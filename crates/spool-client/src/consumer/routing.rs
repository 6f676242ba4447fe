//! Fetching for the consumer: each partition from its leader, one fetch session per node
//! (on the client's one connection to that node), and leadership changes and dead nodes
//! followed without stopping.
//!
//! A supervisor places every partition on the node the metadata names as its leader and
//! runs one session per node. A session that meets a routing error (NOT_LEADER, a lost
//! connection, a stream the node ended) hands its partitions back; the supervisor
//! refreshes the metadata and places them again after a backoff, while every other node's
//! session goes on. Each session keeps the next offset of its partitions in a shared map,
//! so a partition placed again resumes where it stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use spool_types::ErrorCode;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_stream::StreamExt;

use super::{AbortedTransactions, Chunk, ConsumerError, Key, decode_batch};
use crate::client::Client;
use crate::cluster::Cluster;
use crate::error::ClientError;
use crate::types::IsolationLevel;
use crate::types::{FetchOptions, FetchPosition};

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A session that ran this long before it ended was healthy: the backoff starts over.
const HEALTHY_SESSION: Duration = Duration::from_secs(2);

/// What every session asks of its node.
#[derive(Debug, Clone)]
pub(super) struct SessionSettings {
    pub max_bytes: u32,
    pub max_wait: Duration,
    pub isolation: IsolationLevel,
}

/// Why a session ended, and which partitions it gives back.
struct SessionEnd {
    node: u64,
    id: u64,
    partitions: BTreeSet<Key>,
    lasted: Duration,
}

/// Next offset to fetch, per partition, shared by the sessions and the supervisor.
type Positions = Arc<Mutex<BTreeMap<Key, i64>>>;

/// What every session of one consumer shares.
#[derive(Clone)]
struct Shared {
    cluster: Arc<Cluster>,
    settings: SessionSettings,
    positions: Positions,
    tx: mpsc::Sender<Chunk>,
    /// Partitions a session gives back while it goes on with the others: (session id,
    /// partition).
    returns: mpsc::UnboundedSender<(u64, Key)>,
}

/// Which session reads each placed partition: only that session may give it back, so a
/// partition is never read by two sessions at once.
#[derive(Default)]
struct Placement {
    owner: HashMap<Key, u64>,
    /// The current session of each node: (id, handle).
    sessions: HashMap<u64, (u64, AbortHandle)>,
}

impl Placement {
    /// The partitions `session` still owns.
    fn owned_by(&self, session: u64) -> BTreeSet<Key> {
        self.owner
            .iter()
            .filter(|(_, owner)| **owner == session)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Takes back whichever of `keys` `session` owns; the others belong to a newer session.
    fn release(&mut self, session: u64, keys: impl IntoIterator<Item = Key>) -> Vec<Key> {
        let mut back = Vec::new();
        for key in keys {
            if self.owner.get(&key) == Some(&session) {
                self.owner.remove(&key);
                back.push(key);
            }
        }
        back
    }
}

/// Reads `starts` (partition to first offset) until the consumer goes away.
pub(super) async fn run(
    cluster: Arc<Cluster>,
    settings: SessionSettings,
    starts: BTreeMap<Key, i64>,
    tx: mpsc::Sender<Chunk>,
) {
    let mut unplaced: BTreeSet<Key> = starts.keys().cloned().collect();
    let (returns, mut returned) = mpsc::unbounded_channel();
    let shared = Shared {
        cluster: Arc::clone(&cluster),
        settings,
        positions: Arc::new(Mutex::new(starts)),
        tx: tx.clone(),
        returns,
    };
    let mut placement = Placement::default();
    let mut ends: JoinSet<SessionEnd> = JoinSet::new();
    let mut next_id = 0u64;
    let mut backoff = FIRST_BACKOFF;
    let mut place_at = Instant::now();
    loop {
        if !unplaced.is_empty() && Instant::now() >= place_at {
            let (placed, gone) = place(&cluster, &unplaced).await;
            for (key, error) in gone {
                unplaced.remove(&key);
                let chunk = Err(ConsumerError::Partition {
                    topic: key.0.to_string(),
                    partition: key.1,
                    error,
                });
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
            for (node, keys) in placed {
                let Ok(client) = cluster.connection(Some(node)).await else {
                    continue;
                };
                let mut partitions: BTreeSet<Key> = keys.into_iter().collect();
                for key in &partitions {
                    unplaced.remove(key);
                }
                // A node's session is started over with its partitions and the new ones.
                if let Some((old, running)) = placement.sessions.remove(&node) {
                    running.abort();
                    partitions.extend(placement.owned_by(old));
                }
                next_id += 1;
                for key in &partitions {
                    placement.owner.insert(key.clone(), next_id);
                }
                let handle = ends.spawn(session(shared.clone(), client, node, next_id, partitions));
                placement.sessions.insert(node, (next_id, handle));
            }
            if !unplaced.is_empty() {
                place_at = Instant::now() + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        let retry = async {
            if unplaced.is_empty() {
                std::future::pending::<()>().await;
            } else {
                tokio::time::sleep_until(place_at).await;
            }
        };
        tokio::select! {
            Some(joined) = ends.join_next() => {
                // An aborted session (started over with more partitions) ends as an error.
                let Ok(end) = joined else { continue };
                if placement.sessions.get(&end.node).is_some_and(|(id, _)| *id == end.id) {
                    placement.sessions.remove(&end.node);
                }
                let back = placement.release(end.id, end.partitions);
                if back.is_empty() {
                    continue;
                }
                if end.lasted >= HEALTHY_SESSION {
                    backoff = FIRST_BACKOFF;
                }
                unplaced.extend(back);
                place_at = place_at.max(Instant::now() + backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Some((id, key)) = returned.recv() => {
                let back = placement.release(id, [key]);
                if !back.is_empty() {
                    unplaced.extend(back);
                    place_at = place_at.max(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            () = retry => {}
            () = tx.closed() => {
                ends.abort_all();
                return;
            }
        }
    }
}

/// The partitions of `keys` whose leader is known, by leader, after a metadata refresh of
/// their topics (a refresh that fails leaves the cache as it was), and those whose topic
/// the cluster says is gone, with why.
pub(super) async fn place(
    cluster: &Cluster,
    keys: &BTreeSet<Key>,
) -> (BTreeMap<u64, Vec<Key>>, Vec<(Key, crate::error::ApiError)>) {
    let topics: BTreeSet<&str> = keys.iter().map(|(t, _)| &**t).collect();
    let mut missing: HashMap<&str, crate::error::ApiError> = HashMap::new();
    for topic in topics {
        match cluster.refresh(topic).await {
            Ok(()) => {}
            Err(ClientError::Api(api)) if api.code == ErrorCode::UnknownTopicOrPartition => {
                missing.insert(topic, api);
            }
            Err(error) => {
                tracing::debug!(topic, %error, "metadata refresh failed; trying the cache");
            }
        }
    }
    let mut placed: BTreeMap<u64, Vec<Key>> = BTreeMap::new();
    let mut gone = Vec::new();
    for key in keys {
        if let Some(api) = missing.get(&*key.0) {
            gone.push((key.clone(), api.clone()));
        } else if let Some(node) = cluster.leader(&key.0, key.1).filter(|n| *n != 0) {
            placed.entry(node).or_default().push(key.clone());
        }
    }
    (placed, gone)
}

/// One node's fetch session. Ends when the node cannot serve one of its partitions or
/// the stream breaks, giving back every partition it still reads (a partition that failed
/// for good, reported to the consumer, is not given back).
async fn session(
    shared: Shared,
    client: Client,
    node: u64,
    id: u64,
    mut partitions: BTreeSet<Key>,
) -> SessionEnd {
    let Shared {
        cluster,
        settings,
        positions,
        tx,
        returns,
    } = shared;
    let started = Instant::now();
    let end = |partitions| SessionEnd {
        node,
        id,
        partitions,
        lasted: started.elapsed(),
    };
    let fetch_positions: Vec<FetchPosition> = {
        let positions = positions.lock();
        partitions
            .iter()
            .map(|key| FetchPosition {
                topic: key.0.to_string(),
                partition: key.1,
                offset: positions.get(key).copied().unwrap_or(0),
                leader_epoch: cluster.leader_epoch(&key.0, key.1),
            })
            .collect()
    };
    let options = FetchOptions {
        positions: fetch_positions,
        max_bytes: settings.max_bytes,
        min_bytes: 1,
        max_wait: settings.max_wait,
        follow: true,
        isolation: settings.isolation,
    };
    let mut stream = match client.fetch(options).await {
        Ok(stream) => stream,
        Err(error) if is_routing(&error) => return end(partitions),
        Err(error) => {
            let _ = tx.send(Err(error.into())).await;
            return end(BTreeSet::new());
        }
    };
    let topics: BTreeMap<String, Arc<str>> = partitions
        .iter()
        .map(|(t, _)| (t.to_string(), Arc::clone(t)))
        .collect();
    while let Some(response) = stream.next().await {
        let response = match response {
            Ok(response) => response,
            Err(error) if is_routing(&error) => return end(partitions),
            Err(error) => {
                let _ = tx.send(Err(error.into())).await;
                return end(BTreeSet::new());
            }
        };
        let mut records = Vec::new();
        let mut advanced = Vec::new();
        for part in response {
            let topic = topics
                .get(&part.topic)
                .cloned()
                .unwrap_or_else(|| Arc::from(part.topic.as_str()));
            let key: Key = (Arc::clone(&topic), part.partition);
            if let Some(error) = part.error {
                if is_routing_code(error.code) {
                    // The node reads this partition no more; the others go on here.
                    partitions.remove(&key);
                    let _ = returns.send((id, key));
                    continue;
                }
                // Not this node's to fix (an offset out of range, a deleted topic): the
                // consumer decides, and this session reads the partition no more.
                partitions.remove(&key);
                let chunk = Err(ConsumerError::Partition {
                    topic: part.topic,
                    partition: part.partition,
                    error,
                });
                if tx.send(chunk).await.is_err() {
                    return end(BTreeSet::new());
                }
                continue;
            }
            let start = positions.lock().get(&key).copied().unwrap_or(0);
            let mut aborted = AbortedTransactions::new(&part.aborted);
            for batch in &part.batches {
                if aborted.skips(batch) {
                    continue;
                }
                if let Err(error) = decode_batch(&topic, part.partition, batch, start, &mut records)
                {
                    let _ = tx.send(Err(error)).await;
                    return end(BTreeSet::new());
                }
            }
            advanced.push((key, part.next_offset.max(start)));
        }
        if !records.is_empty() && tx.send(Ok(records)).await.is_err() {
            return end(BTreeSet::new());
        }
        // Only once the records are handed over: a session stopped before that leaves
        // them to be fetched again, never skipped.
        positions.lock().extend(advanced);
        if partitions.is_empty() {
            return end(partitions);
        }
    }
    // The node ended the stream (it is stopping): read elsewhere, or here once it is back.
    end(partitions)
}

/// Errors after which the partition is read elsewhere or later, never given up on.
pub(super) fn is_routing(error: &ClientError) -> bool {
    match error {
        ClientError::Transport(_) | ClientError::Unreachable { .. } => true,
        ClientError::Api(api) => is_routing_code(api.code),
        ClientError::NoBootstrap | ClientError::InvalidAddress { .. } => false,
    }
}

pub(super) fn is_routing_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeader
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::ResourceExhausted
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::StorageError
            | ErrorCode::RequestTimedOut
            | ErrorCode::NotController
    )
}
