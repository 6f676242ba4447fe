//! One flusher thread per node makes appends durable for every replica on it (group
//! commit): it takes every request that has arrived, fsyncs each log named once, and only
//! then tells openraft the appends are flushed. The fsync runs outside the log's lock, so
//! the replica keeps appending meanwhile, and several logs are synced at once. Interval
//! syncs take the same path.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use openraft::storage::IOFlushed;
use parking_lot::{Condvar, Mutex};
use spool_log::Log;

use crate::types::PartitionRaft;

pub(crate) type SharedLog = Arc<Mutex<Log>>;

enum Request {
    Flush {
        log: SharedLog,
        done: IOFlushed<PartitionRaft>,
    },
    SyncIfDue(SharedLog),
}

#[derive(Debug)]
pub struct Flusher {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    pub fn start(name: &str) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel();
        let pool_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(&rx, &SyncPool::start(&pool_name)))?;
        Ok(Arc::new(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Calls `done` once everything appended to `log` so far is on disk.
    pub(crate) fn flush(&self, log: SharedLog, done: IOFlushed<PartitionRaft>) {
        let request = Request::Flush { log, done };
        let rejected = match self.tx.lock().as_ref() {
            Some(tx) => tx.send(request).err().map(|e| e.0),
            None => Some(request),
        };
        if let Some(Request::Flush { done, .. }) = rejected {
            done.io_completed(Err(std::io::Error::other("the flusher has stopped")));
        }
    }

    /// Under an interval flush policy, fsyncs `log` if its interval has passed.
    pub(crate) fn sync_if_due(&self, log: SharedLog) {
        if let Some(tx) = self.tx.lock().as_ref() {
            let _ = tx.send(Request::SyncIfDue(log));
        }
    }

    /// Finishes queued requests and stops the thread.
    pub fn stop(&self) {
        self.tx.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx.lock().take();
    }
}

/// fsyncs run at once in a round: a device with a deep queue (NVMe, most SSDs) completes
/// several about as fast as one.
const PARALLEL_SYNCS: usize = 4;

fn run(rx: &mpsc::Receiver<Request>, pool: &SyncPool) {
    let mut round: Vec<Request> = Vec::with_capacity(256);
    while let Ok(first) = rx.recv() {
        round.push(first);
        while let Ok(next) = rx.try_recv() {
            round.push(next);
        }
        // Logs in the order they were first named; each synced once this round.
        let mut logs: Vec<(SharedLog, Vec<IOFlushed<PartitionRaft>>)> = Vec::new();
        let mut slot_of: HashMap<*const Mutex<Log>, usize> = HashMap::new();
        for request in round.drain(..) {
            let (log, done) = match request {
                Request::Flush { log, done } => (log, Some(done)),
                // Under an interval policy: synced like the others, outside the lock.
                Request::SyncIfDue(log) if log.lock().sync_due() => (log, None),
                Request::SyncIfDue(_) => continue,
            };
            let slot = *slot_of.entry(Arc::as_ptr(&log)).or_insert_with(|| {
                logs.push((Arc::clone(&log), Vec::new()));
                logs.len() - 1
            });
            logs[slot].1.extend(done);
        }
        let targets: Vec<SharedLog> = logs.iter().map(|(log, _)| Arc::clone(log)).collect();
        let outcomes = pool.sync_all(targets);
        for ((_, waiting), outcome) in logs.into_iter().zip(outcomes) {
            for done in waiting {
                done.io_completed(match &outcome {
                    Ok(()) => Ok(()),
                    Err(error) => Err(std::io::Error::other(error.to_string())),
                });
            }
        }
    }
}

/// A round's logs, shared with the helpers: whoever is free takes the next one.
struct Round {
    logs: Vec<SharedLog>,
    next: AtomicUsize,
    outcomes: Vec<Mutex<Option<SyncOutcome>>>,
    /// Logs not yet synced; the flusher waits for zero.
    remaining: Mutex<usize>,
    all_done: Condvar,
}

type SyncOutcome = Result<(), spool_log::LogError>;

impl Round {
    /// Syncs logs of the round until none is left to take.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(log) = self.logs.get(i) else { return };
            *self.outcomes[i].lock() = Some(sync(log));
            let mut remaining = self.remaining.lock();
            *remaining -= 1;
            if *remaining == 0 {
                self.all_done.notify_all();
            }
        }
    }
}

/// Threads that help the flusher sync the logs of a round, started once: a round with one
/// log needs none of them, and a busy node would otherwise start threads hundreds of times
/// a second.
struct SyncPool {
    tx: Option<mpsc::Sender<Arc<Round>>>,
    helpers: Vec<JoinHandle<()>>,
}

impl SyncPool {
    fn start(name: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Arc<Round>>();
        let rx = Arc::new(Mutex::new(rx));
        let helpers = (1..PARALLEL_SYNCS)
            .filter_map(|i| {
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        loop {
                            // One helper waits on the channel at a time, the others on its
                            // lock; the lock is let go before the work.
                            let next = rx.lock().recv();
                            let Ok(round) = next else { return };
                            round.work();
                        }
                    })
                    // Without helpers the flusher syncs every log itself: slower, not wrong.
                    .inspect_err(|error| tracing::warn!(%error, "no flusher helper thread"))
                    .ok()
            })
            .collect();
        Self {
            tx: Some(tx),
            helpers,
        }
    }

    /// Syncs every log, up to `PARALLEL_SYNCS` at once; outcomes in the same order.
    fn sync_all(&self, logs: Vec<SharedLog>) -> Vec<SyncOutcome> {
        if logs.len() <= 1 || self.helpers.is_empty() {
            return logs.iter().map(sync).collect();
        }
        let count = logs.len();
        let round = Arc::new(Round {
            outcomes: logs.iter().map(|_| Mutex::new(None)).collect(),
            logs,
            next: AtomicUsize::new(0),
            remaining: Mutex::new(count),
            all_done: Condvar::new(),
        });
        if let Some(tx) = &self.tx {
            for _ in 0..self.helpers.len().min(count - 1) {
                let _ = tx.send(Arc::clone(&round));
            }
        }
        round.work();
        let mut remaining = round.remaining.lock();
        while *remaining > 0 {
            round.all_done.wait(&mut remaining);
        }
        drop(remaining);
        round
            .outcomes
            .iter()
            // Every slot is filled; were one not, it must not pass for synced.
            .map(|o| o.lock().take().unwrap_or(Err(spool_log::LogError::Failed)))
            .collect()
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        self.tx.take();
        for helper in self.helpers.drain(..) {
            let _ = helper.join();
        }
    }
}

fn sync(log: &SharedLog) -> Result<(), spool_log::LogError> {
    let job = log.lock().begin_sync()?;
    let ran = job.run();
    let finished = log.lock().finish_sync(&job, &ran);
    let outcome = ran.and(finished);
    if let Err(error) = &outcome {
        tracing::error!(%error, "fsync failed; the partition log stops taking writes");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_log::batch::{BatchBuilder, BatchOptions};
    use spool_log::{Entry, EntryPayload, FlushPolicy, LogConfig, RecordBatch};

    fn log_with_data(dir: &std::path::Path, flush: FlushPolicy) -> SharedLog {
        let mut log = Log::open(
            dir,
            LogConfig {
                flush,
                ..LogConfig::default()
            },
        )
        .expect("open");
        let mut builder = BatchBuilder::new(BatchOptions::default());
        builder.append(1, None, Some(b"v"), &[]);
        let bytes = builder.finish();
        let batch = RecordBatch::new(&bytes).expect("batch");
        log.append([Entry {
            term: 1,
            index: 0,
            payload: EntryPayload::Data(batch),
        }])
        .expect("append");
        Arc::new(Mutex::new(log))
    }

    #[test]
    fn every_log_of_a_round_is_synced_whether_alone_or_in_parallel() {
        let root = tempfile::tempdir().expect("tempdir");
        for count in [1, 7] {
            let logs: Vec<SharedLog> = (0..count)
                .map(|i| {
                    log_with_data(
                        &root.path().join(format!("{count}-{i}")),
                        FlushPolicy::Always,
                    )
                })
                .collect();
            for log in &logs {
                let log = log.lock();
                assert!(log.durable().next_index < log.end().next_index);
            }
            let pool = SyncPool::start("test-sync");
            let outcomes = pool.sync_all(logs.clone());
            assert_eq!(outcomes.len(), count);
            assert!(outcomes.iter().all(Result::is_ok));
            for log in &logs {
                let log = log.lock();
                assert_eq!(log.durable(), log.end());
            }
        }
    }

    #[test]
    fn an_interval_sync_runs_through_the_flusher_and_outside_the_lock() {
        let root = tempfile::tempdir().expect("tempdir");
        let log = log_with_data(
            root.path(),
            FlushPolicy::Interval(std::time::Duration::ZERO),
        );
        assert!(log.lock().sync_due());
        let flusher = Flusher::start("test-flusher").expect("flusher");
        flusher.sync_if_due(Arc::clone(&log));
        // Stopping finishes what was queued.
        flusher.stop();
        let log = log.lock();
        assert!(!log.sync_due());
        assert_eq!(log.durable(), log.end());
    }
}
