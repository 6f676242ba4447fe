//! One flusher thread per node makes appends durable for every replica on it (group
//! commit): it takes every request that has arrived, fsyncs each log named once, and only
//! then tells openraft the appends are flushed. The fsync runs outside the log's lock, so
//! the replica keeps appending meanwhile.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use openraft::storage::IOFlushed;
use parking_lot::Mutex;
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
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(&rx))?;
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

fn run(rx: &mpsc::Receiver<Request>) {
    let mut round: Vec<Request> = Vec::with_capacity(256);
    while let Ok(first) = rx.recv() {
        round.push(first);
        while let Ok(next) = rx.try_recv() {
            round.push(next);
        }
        // Logs in the order they were first named; each synced once this round.
        let mut logs: Vec<(SharedLog, Vec<IOFlushed<PartitionRaft>>)> = Vec::new();
        for request in round.drain(..) {
            match request {
                Request::Flush { log, done } => {
                    match logs.iter_mut().find(|(l, _)| Arc::ptr_eq(l, &log)) {
                        Some((_, waiting)) => waiting.push(done),
                        None => logs.push((log, vec![done])),
                    }
                }
                Request::SyncIfDue(log) => {
                    if let Err(error) = log.lock().sync_if_due() {
                        tracing::error!(%error, "interval fsync failed");
                    }
                }
            }
        }
        for (log, waiting) in logs {
            let outcome = sync(&log);
            for done in waiting {
                done.io_completed(match &outcome {
                    Ok(()) => Ok(()),
                    Err(error) => Err(std::io::Error::other(error.to_string())),
                });
            }
        }
    }
}

fn sync(log: &SharedLog) -> Result<(), spool_log::LogError> {
    let job = log.lock().begin_sync()?;
    let outcome = job.run();
    log.lock().finish_sync(&job, &outcome);
    if let Err(error) = &outcome {
        tracing::error!(%error, "fsync failed; the partition log stops taking writes");
    }
    outcome
}
