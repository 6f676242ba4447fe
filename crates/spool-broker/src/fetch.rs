//! A fetch session: streams committed batches of several partitions to one consumer.
//!
//! It reads whatever lies below each partition's high watermark, answers once `min_bytes`
//! are gathered or `max_wait` has passed, and otherwise sleeps on the partitions' high
//! watermark watches: an append wakes it, nothing polls. Responses go through a bounded
//! channel, so a consumer that reads slowly holds the session back instead of making the
//! broker buffer: at most `capacity` responses of at most `max_bytes` each are queued.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::partition::Partition;
use spool_types::IsolationLevel;

/// The default of `BrokerOptions::fetch_memory_bytes`: bytes of fetched batches all fetch
/// sessions of a node may hold at once. Queued responses of consumers that read slowly
/// (or never) count until sent, so they slow fetches down instead of exhausting memory.
pub const FETCH_MEMORY_BYTES: usize = 512 * 1024 * 1024;
/// A read waiting for fetch memory asks for at least this much.
const MIN_FETCH_GRANT: usize = 1024 * 1024;
/// One session holds at most this share of the node's fetch memory (1/8: a consumer that
/// stops reading blocks no one alone; eight of them slow the others down).
const SESSION_SHARE_DIVISOR: usize = 8;

/// Memory a read may take.
enum Memory {
    Granted(tokio::sync::OwnedSemaphorePermit),
    /// None free, and the session already holds some: it should send what it has.
    Starved,
    /// The consumer went away or the node is closing.
    Stop,
}

/// Takes up to `want` from `pool`: all of it if free, else what is free (at least
/// `MIN_FETCH_GRANT`), waiting for that only when the session holds nothing (a session
/// that holds some and waits for more could wait on others doing the same, forever).
async fn take_memory(
    pool: &Arc<tokio::sync::Semaphore>,
    want: usize,
    holding: bool,
    tx: &mpsc::Sender<FetchChunk>,
    closing: &mut watch::Receiver<bool>,
) -> Memory {
    let want = want.clamp(1, u32::MAX as usize);
    if let Ok(grant) = Arc::clone(pool).try_acquire_many_owned(want as u32) {
        return Memory::Granted(grant);
    }
    let some = pool
        .available_permits()
        .clamp(MIN_FETCH_GRANT.min(want), want);
    if let Ok(grant) = Arc::clone(pool).try_acquire_many_owned(some as u32) {
        return Memory::Granted(grant);
    }
    if holding {
        return Memory::Starved;
    }
    tokio::select! {
        grant = Arc::clone(pool).acquire_many_owned(some as u32) => match grant {
            Ok(grant) => Memory::Granted(grant),
            Err(_) => Memory::Stop,
        },
        () = tx.closed() => Memory::Stop,
        _ = closing.changed() => Memory::Stop,
    }
}

/// How often a session whose cursors name a leader epoch checks the replica's term.
const EPOCH_RECHECK: Duration = Duration::from_secs(1);

/// Where to read one partition from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPosition {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    /// Most bytes of this partition per response; `None` for no limit of its own.
    pub max_bytes: Option<usize>,
    /// The leader epoch the client believes in; checked when given.
    pub leader_epoch: Option<u64>,
}

/// What a consumer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSpec {
    pub positions: Vec<FetchPosition>,
    /// Most bytes of batches per response (the first batch is sent regardless).
    pub max_bytes: usize,
    /// Respond once this many bytes are ready...
    pub min_bytes: usize,
    /// ...or this long after the first byte was ready.
    pub max_wait: Duration,
    /// Keep streaming new batches; otherwise end once every partition is caught up.
    pub follow: bool,
    /// read_committed reads up to each partition's last stable offset.
    pub isolation: IsolationLevel,
}

/// One response: data or an error for some partitions.
#[derive(Debug, Default)]
pub struct FetchChunk {
    pub partitions: Vec<FetchPartitionData>,
    /// The node's fetch memory this response holds (see `FETCH_MEMORY_BYTES`): keep it
    /// until the response is on its way.
    pub memory: Vec<tokio::sync::OwnedSemaphorePermit>,
}

#[derive(Debug)]
pub struct FetchPartitionData {
    pub topic: String,
    pub partition: u32,
    /// Set when the partition cannot be read on; the stream carries no more of it.
    pub error: Option<BrokerError>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub batches: Vec<Bytes>,
    pub next_offset: i64,
    pub last_stable_offset: i64,
    /// read_committed: (producer id, first offset) of each aborted transaction whose
    /// records reach into `batches`, oldest first.
    pub aborted: Vec<(i64, i64)>,
}

struct Cursor {
    partition: Arc<Partition>,
    next: i64,
    max_bytes: Option<usize>,
    /// What the reader may read up to: the high watermark, or for read_committed the
    /// last stable offset.
    readable: watch::Receiver<i64>,
    /// The high watermark too (read_committed reads up to the lesser of the two, and
    /// the stable offset may move before it).
    high_watermark: watch::Receiver<i64>,
    /// The leader epoch the client fetches in: once the replica's term moves on (a new
    /// leader), the client is told to look for it.
    epoch: Option<u64>,
    done: bool,
}

impl Broker {
    /// Starts a fetch session; its responses arrive on the returned channel, which holds
    /// at most `capacity` of them. Dropping the receiver ends the session.
    pub fn fetch(self: &Arc<Self>, spec: FetchSpec, capacity: usize) -> mpsc::Receiver<FetchChunk> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let broker = Arc::clone(self);
        tokio::spawn(async move { broker.run_fetch(spec, tx).await });
        rx
    }

    async fn run_fetch(self: Arc<Self>, spec: FetchSpec, tx: mpsc::Sender<FetchChunk>) {
        let min_bytes = spec.min_bytes.clamp(1, spec.max_bytes.max(1));
        let mut pending = FetchChunk::default();
        let mut cursors = Vec::with_capacity(spec.positions.len());
        for position in &spec.positions {
            let found = self
                .partition(&position.topic, position.partition)
                .and_then(|partition| match position.leader_epoch {
                    Some(epoch) => partition
                        .check_leader_epoch(epoch, false)
                        .map(|()| partition),
                    None => Ok(partition),
                });
            match found {
                Ok(partition) => cursors.push(Cursor {
                    readable: partition.readable_watch(spec.isolation),
                    high_watermark: partition.high_watermark.clone(),
                    epoch: position.leader_epoch,
                    partition,
                    next: position.offset,
                    max_bytes: position.max_bytes,
                    done: false,
                }),
                Err(error) => pending.partitions.push(failed(
                    &position.topic,
                    position.partition,
                    error,
                    position.offset,
                )),
            }
        }
        let mut closing = self.closing.subscribe();
        // The most this session holds at once, queued responses included.
        let session_share = (self.options.fetch_memory_bytes / SESSION_SHARE_DIVISOR)
            .max(MIN_FETCH_GRANT)
            .min(self.options.fetch_memory_bytes.max(1));
        let session_memory = Arc::new(tokio::sync::Semaphore::new(session_share));
        let mut pending_bytes = 0usize;
        let mut deadline: Option<Instant> = None;
        let mut rotate = 0usize;
        loop {
            if *closing.borrow_and_update() {
                return;
            }
            let mut failed_now = false;
            let mut starved = false;
            let count = cursors.len();
            for k in 0..count {
                let cursor = &mut cursors[(rotate + k) % count];
                if cursor.done {
                    continue;
                }
                if let Some(epoch) = cursor.epoch
                    && let Err(error) = cursor.partition.check_leader_epoch(epoch, false)
                {
                    cursor.done = true;
                    failed_now = true;
                    pending.partitions.push(failed(
                        &cursor.partition.topic,
                        cursor.partition.index,
                        error,
                        cursor.next,
                    ));
                    continue;
                }
                cursor.readable.borrow_and_update();
                cursor.high_watermark.borrow_and_update();
                let high_watermark = cursor.partition.high_watermark();
                let readable = cursor.partition.readable_end(spec.isolation);
                if cursor.next == readable {
                    continue;
                }
                let budget = spec.max_bytes.saturating_sub(pending_bytes);
                if budget == 0 && pending_bytes > 0 {
                    break;
                }
                let limit = cursor.max_bytes.map_or(budget, |m| m.min(budget)).max(1);
                // What this read may hold: of the session's share (a consumer that stops
                // reading holds at most that), then of the node's fetch memory.
                let holding = !pending.memory.is_empty();
                let want = limit.min(session_share).min(u32::MAX as usize);
                let own = match take_memory(&session_memory, want, holding, &tx, &mut closing).await
                {
                    Memory::Granted(grant) => grant,
                    Memory::Starved => {
                        starved = true;
                        break;
                    }
                    Memory::Stop => return,
                };
                let want = own.num_permits();
                let grant =
                    match take_memory(&self.fetch_memory, want, holding, &tx, &mut closing).await {
                        Memory::Granted(grant) => grant,
                        Memory::Starved => {
                            starved = true;
                            break;
                        }
                        Memory::Stop => return,
                    };
                let mut own = own;
                if grant.num_permits() < own.num_permits() {
                    drop(own.split(own.num_permits() - grant.num_permits()));
                }
                let limit = grant.num_permits().max(1);
                let partition = &cursor.partition;
                // Looked up before the read: retention removing an aborted transaction's
                // entry meanwhile also moves the log start, and the read then refuses an
                // offset below it rather than sending the records unmarked.
                let aborted = match spec.isolation {
                    IsolationLevel::ReadCommitted => partition
                        .replica
                        .aborted_transactions(cursor.next, readable.max(cursor.next)),
                    IsolationLevel::ReadUncommitted => Vec::new(),
                };
                let read = partition.read_below(cursor.next, limit, spec.isolation, readable);
                match read.await {
                    Ok(fetched) => {
                        if fetched.batches.is_empty() {
                            continue;
                        }
                        let used = fetched.total_bytes();
                        pending_bytes += used;
                        let mut grant = grant;
                        if used < grant.num_permits() {
                            // Give back what the read did not take.
                            drop(grant.split(grant.num_permits() - used));
                            drop(own.split(own.num_permits().saturating_sub(used)));
                        }
                        pending.memory.push(grant);
                        pending.memory.push(own);
                        cursor.next = fetched.next_offset;
                        deadline.get_or_insert_with(|| Instant::now() + spec.max_wait);
                        pending.partitions.push(FetchPartitionData {
                            topic: partition.topic.clone(),
                            partition: partition.index,
                            error: None,
                            high_watermark,
                            log_start_offset: partition.reader.start_offset(),
                            batches: fetched.batches,
                            next_offset: fetched.next_offset,
                            last_stable_offset: partition
                                .readable_end(IsolationLevel::ReadCommitted),
                            aborted,
                        });
                    }
                    Err(error) => {
                        cursor.done = true;
                        failed_now = true;
                        pending.partitions.push(failed(
                            &partition.topic,
                            partition.index,
                            error,
                            cursor.next,
                        ));
                    }
                }
            }
            rotate = rotate.wrapping_add(1);
            let caught_up = cursors
                .iter()
                .all(|c| c.done || c.next >= *c.readable.borrow());
            let due = deadline.is_some_and(|d| Instant::now() >= d);
            let has_errors = failed_now || pending.partitions.iter().any(|p| p.error.is_some());
            if !pending.partitions.is_empty()
                && (pending_bytes >= min_bytes
                    || due
                    || has_errors
                    || starved
                    || (!spec.follow && caught_up))
            {
                if tx.send(std::mem::take(&mut pending)).await.is_err() {
                    return;
                }
                pending_bytes = 0;
                deadline = None;
                continue;
            }
            if (!spec.follow && caught_up) || cursors.iter().all(|c| c.done) {
                return;
            }
            let active: Vec<usize> = (0..cursors.len()).filter(|&i| !cursors[i].done).collect();
            // A leader that lost its group without hearing of it keeps a frozen high
            // watermark: cursors pinned to an epoch look at the term now and then, and so
            // do cursors past their replica's high watermark, which may turn out to be
            // past the partition's end once this replica knows it.
            let recheck = cursors
                .iter()
                .any(|c| !c.done && (c.epoch.is_some() || c.next > *c.readable.borrow()))
                .then(|| Instant::now() + EPOCH_RECHECK);
            let woken = {
                let changes = cursors.iter_mut().filter(|c| !c.done).map(|c| {
                    let Cursor {
                        readable,
                        high_watermark,
                        ..
                    } = c;
                    Box::pin(async move {
                        tokio::select! {
                            changed = readable.changed() => changed,
                            changed = high_watermark.changed() => changed,
                        }
                    })
                });
                let wake = match (deadline, recheck) {
                    (Some(d), Some(r)) => Some(d.min(r)),
                    (d, r) => d.or(r),
                };
                let sleep = async {
                    match wake {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    (changed, i, _) = select_all(changes) => changed.err().map(|_| active[i]),
                    () = sleep => None,
                    () = tx.closed() => return,
                    _ = closing.changed() => return,
                }
            };
            if let Some(gone) = woken {
                // The partition's writer went away: the topic was deleted.
                let cursor = &mut cursors[gone];
                cursor.done = true;
                let error = BrokerError::UnknownTopic {
                    topic: cursor.partition.topic.clone(),
                };
                pending.partitions.push(failed(
                    &cursor.partition.topic,
                    cursor.partition.index,
                    error,
                    cursor.next,
                ));
            }
        }
    }
}

fn failed(topic: &str, partition: u32, error: BrokerError, offset: i64) -> FetchPartitionData {
    FetchPartitionData {
        topic: topic.to_string(),
        partition,
        error: Some(error),
        high_watermark: -1,
        log_start_offset: -1,
        batches: Vec::new(),
        next_offset: offset,
        last_stable_offset: -1,
        aborted: Vec::new(),
    }
}
