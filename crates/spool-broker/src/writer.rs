//! One writer thread per data directory owns every partition log in it. It takes all the
//! appends that have arrived, writes them, flushes each touched partition once, moves the
//! high watermarks and only then answers acks=all: one fsync per partition per round,
//! however many producers are waiting (group commit). The thread never blocks on the
//! async side: requests arrive on a bounded channel, answers leave on oneshots.

use std::collections::HashMap;
use std::path::PathBuf;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use spool_log::{Entry, EntryPayload, Log, LogConfig, LogReader, RetentionPolicy, ValidBatch};
use tokio::sync::{mpsc, oneshot, watch};

use crate::broker::AppendOutcome;
use crate::error::BrokerError;
use crate::partition::{Acks, PartitionKey};

/// Every partition on a single node is led in this term until Raft takes over.
const STANDALONE_TERM: u64 = 1;
/// Ticks between retention passes (a tick is 100 ms).
const RETENTION_EVERY_TICKS: u64 = 300;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, BrokerError>>;

pub(crate) struct AppendRequest {
    pub key: PartitionKey,
    pub batches: Vec<ValidBatch>,
    pub acks: Acks,
    pub reply: Option<Reply<AppendOutcome>>,
    pub now_ms: i64,
}

pub(crate) enum Command {
    Open {
        key: PartitionKey,
        dir: PathBuf,
        config: LogConfig,
        retention: RetentionPolicy,
        reply: Reply<(LogReader, watch::Receiver<i64>)>,
    },
    Append(Vec<AppendRequest>),
    Reconfigure {
        key: PartitionKey,
        config: LogConfig,
        retention: RetentionPolicy,
    },
    Remove {
        key: PartitionKey,
        delete_to: Option<PathBuf>,
        reply: Reply<()>,
    },
    Tick,
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

struct Slot {
    log: Log,
    high_watermark: watch::Sender<i64>,
    retention: RetentionPolicy,
    waiting: Vec<(Reply<AppendOutcome>, AppendOutcome)>,
    dirty: bool,
}

#[derive(Debug)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    pub fn spawn(name: String) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(1024);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || Writer::default().run(rx))?;
        Ok(Self {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub async fn send(&self, command: Command) -> Result<(), BrokerError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| BrokerError::ShuttingDown)
    }

    pub fn sender(&self) -> mpsc::Sender<Command> {
        self.tx.clone()
    }

    /// Closes every log cleanly and joins the thread.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = done.await;
        }
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

#[derive(Default)]
struct Writer {
    slots: HashMap<PartitionKey, Slot>,
    dirty: Vec<PartitionKey>,
    ticks: u64,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut round = Vec::with_capacity(256);
        while let Some(first) = rx.blocking_recv() {
            round.push(first);
            while round.len() < 256 {
                match rx.try_recv() {
                    Ok(command) => round.push(command),
                    Err(_) => break,
                }
            }
            for command in round.drain(..) {
                if let Command::Shutdown { reply } = command {
                    self.commit();
                    self.close_all();
                    let _ = reply.send(());
                    return;
                }
                self.handle(command);
            }
            self.commit();
        }
        self.close_all();
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Open {
                key,
                dir,
                config,
                retention,
                reply,
            } => {
                let opened = Log::open(&dir, config).map_err(BrokerError::from).map(|log| {
                    let report = log.recovery_report();
                    if report.truncated_tail.is_some() || !report.rebuilt_indexes.is_empty() {
                        tracing::warn!(dir = %dir.display(), ?report, "recovered partition log");
                    }
                    let (high_watermark, rx) = watch::channel(log.durable().next_offset);
                    let reader = log.reader();
                    self.slots.insert(
                        key,
                        Slot {
                            log,
                            high_watermark,
                            retention,
                            waiting: Vec::new(),
                            dirty: false,
                        },
                    );
                    (reader, rx)
                });
                let _ = reply.send(opened);
            }
            Command::Append(requests) => {
                for request in requests {
                    self.append(request);
                }
            }
            Command::Reconfigure {
                key,
                config,
                retention,
            } => {
                if let Some(slot) = self.slots.get_mut(&key) {
                    if let Err(error) = slot.log.set_config(config) {
                        tracing::error!(%error, "could not apply a partition config");
                    }
                    slot.retention = retention;
                }
            }
            Command::Remove {
                key,
                delete_to,
                reply,
            } => {
                let result = match self.slots.remove(&key) {
                    Some(mut slot) => {
                        fail_waiting(&mut slot, || BrokerError::ShuttingDown);
                        let dir = slot.log.dir().to_path_buf();
                        let closed = slot.log.close().map_err(BrokerError::from);
                        closed.and_then(|()| match delete_to {
                            Some(to) => delete_dir(&dir, &to),
                            None => Ok(()),
                        })
                    }
                    None => Ok(()),
                };
                let _ = reply.send(result);
            }
            Command::Tick => self.tick(),
            Command::Shutdown { .. } => {}
        }
    }

    fn append(&mut self, request: AppendRequest) {
        let Some(slot) = self.slots.get_mut(&request.key) else {
            if let Some(reply) = request.reply {
                let _ = reply.send(Err(BrokerError::ShuttingDown));
            }
            return;
        };
        let first_index = slot.log.next_index();
        let entries = request.batches.iter().enumerate().map(|(i, batch)| Entry {
            term: STANDALONE_TERM,
            index: first_index + i as u64,
            payload: EntryPayload::Data(batch.view()),
        });
        let result = slot.log.append(entries).map(|appended| AppendOutcome {
            base_offset: appended.first_offset,
            log_append_time_ms: request.now_ms,
            log_start_offset: slot.log.start_offset(),
        });
        match result {
            Ok(outcome) => {
                if !slot.dirty {
                    slot.dirty = true;
                    self.dirty.push(request.key);
                }
                match (request.acks, request.reply) {
                    (Acks::All, Some(reply)) => slot.waiting.push((reply, outcome)),
                    (_, Some(reply)) => {
                        let _ = reply.send(Ok(outcome));
                    }
                    (_, None) => {}
                }
            }
            Err(error) => {
                tracing::error!(dir = %slot.log.dir().display(), %error, "append failed");
                if let Some(reply) = request.reply {
                    let _ = reply.send(Err(BrokerError::from(error)));
                }
            }
        }
    }

    /// Flushes every partition written this round once, then publishes and answers.
    fn commit(&mut self) {
        for key in self.dirty.drain(..) {
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            slot.dirty = false;
            match slot.log.flush() {
                Ok(durable) => {
                    slot.high_watermark.send_replace(durable.next_offset);
                    for (reply, outcome) in slot.waiting.drain(..) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    tracing::error!(dir = %slot.log.dir().display(), %error, "flush failed");
                    let message = error.to_string();
                    fail_waiting(slot, || {
                        BrokerError::Storage(spool_log::LogError::Io {
                            op: "flush",
                            path: PathBuf::new(),
                            source: std::io::Error::other(message.clone()),
                        })
                    });
                }
            }
        }
    }

    fn tick(&mut self) {
        self.ticks += 1;
        for (key, slot) in &mut self.slots {
            if let Err(error) = slot.log.sync_if_due() {
                tracing::error!(key, %error, "interval flush failed");
            }
            if self.ticks.is_multiple_of(RETENTION_EVERY_TICKS) {
                match slot.log.apply_retention(&slot.retention) {
                    Ok(purged) if purged.segments > 0 => {
                        tracing::info!(dir = %slot.log.dir().display(), segments = purged.segments, bytes = purged.bytes, "retention deleted segments");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "retention failed"),
                }
            }
        }
    }

    fn close_all(&mut self) {
        for (_, mut slot) in self.slots.drain() {
            fail_waiting(&mut slot, || BrokerError::ShuttingDown);
            let dir = slot.log.dir().to_path_buf();
            if let Err(error) = slot.log.close() {
                tracing::error!(dir = %dir.display(), %error, "could not close a partition log cleanly");
            }
        }
    }
}

fn fail_waiting(slot: &mut Slot, error: impl Fn() -> BrokerError) {
    for (reply, _) in slot.waiting.drain(..) {
        let _ = reply.send(Err(error()));
    }
}

/// Renames a partition directory out of the way, then removes it, so a crash half-way
/// leaves a `.deleted` directory that startup removes, never a half-deleted partition.
fn delete_dir(dir: &std::path::Path, to: &std::path::Path) -> Result<(), BrokerError> {
    let io = |op, source| {
        BrokerError::Storage(spool_log::LogError::Io {
            op,
            path: dir.to_path_buf(),
            source,
        })
    };
    std::fs::rename(dir, to).map_err(|e| io("rename", e))?;
    std::fs::remove_dir_all(to).map_err(|e| io("remove", e))
}
