//! Applies the committed metadata log, in order, to the state every node serves, and
//! keeps the log bounded: after applying a checkpoint (the whole state written as one
//! record) a node removes the segments before it.
//!
//! A log that no longer starts at offset 0 was cut before a checkpoint, possibly in the
//! middle of a segment: records before the first checkpoint are skipped, and nothing is
//! published until that checkpoint has been applied, so a node never serves a state
//! rebuilt from half the history.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use spool_log::{LogError, RecordBatch};
use spool_raft::PartitionReplica;
use tokio::sync::watch;

use crate::records::{MetadataRecord, decode_batch};
use crate::state::ClusterState;

/// Most bytes read from the log at a time.
const READ_BYTES: usize = 1024 * 1024;

/// How much log the state has been built from since the last checkpoint.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogProgress {
    /// The last checkpoint applied: its offset and size in bytes.
    pub checkpoint: Option<(i64, u64)>,
    /// Bytes of batches applied after it (or from the start of the log).
    pub bytes_since: u64,
}

impl LogProgress {
    /// Whether the leader should write a checkpoint: once the records after the last one
    /// outweigh `every` bytes, and four times the checkpoint itself, so that a large
    /// state is not rewritten over and over.
    pub fn checkpoint_due(&self, every: u64) -> bool {
        let last_size = self.checkpoint.map_or(0, |(_, size)| size);
        self.bytes_since >= every.max(last_size.saturating_mul(4))
    }
}

pub(crate) struct Applier {
    pub replica: Weak<PartitionReplica>,
    pub state: watch::Sender<Arc<ClusterState>>,
    pub progress: Arc<Mutex<LogProgress>>,
}

impl Applier {
    pub async fn run(self) {
        let Some(replica) = self.replica.upgrade() else {
            return;
        };
        let reader = replica.reader().clone();
        let mut high_watermark = replica.high_watermark();
        drop(replica);
        let mut current = Rebuild::from(reader.start_offset());
        loop {
            let upper = *high_watermark.borrow_and_update();
            if current.state.offset < upper {
                let from = current.state.offset;
                let r = reader.clone();
                let read =
                    tokio::task::spawn_blocking(move || r.read(from, upper, READ_BYTES)).await;
                match read {
                    Ok(Ok(fetched)) => {
                        let checkpoint = fetched
                            .batches
                            .iter()
                            .filter_map(|batch| current.apply(batch, &self.progress))
                            .last();
                        current.state.offset = fetched.next_offset;
                        if current.based {
                            self.state.send_replace(Arc::new(current.state.clone()));
                        }
                        if let Some(offset) = checkpoint {
                            self.compact_before(offset).await;
                        }
                        continue;
                    }
                    Ok(Err(LogError::OffsetOutOfRange { start, .. })) if from < start => {
                        // The log now starts later (a snapshot was installed): the state
                        // is rebuilt from its first checkpoint.
                        current = Rebuild::from(start);
                        continue;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "could not read the metadata log");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(_) => return,
                }
            }
            if high_watermark.changed().await.is_err() {
                return;
            }
        }
    }

    async fn compact_before(&self, offset: i64) {
        let Some(replica) = self.replica.upgrade() else {
            return;
        };
        match replica.compact_before(offset).await {
            Ok(true) => tracing::debug!(offset, "metadata log compacted before a checkpoint"),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "could not compact the metadata log"),
        }
    }
}

/// The state being rebuilt from the log.
struct Rebuild {
    state: ClusterState,
    /// The state stands on the whole history: the log starts at 0, or a checkpoint has
    /// been applied.
    based: bool,
}

impl Rebuild {
    fn from(start: i64) -> Self {
        Self {
            state: ClusterState {
                offset: start,
                ..ClusterState::default()
            },
            based: start == 0,
        }
    }

    /// Applies one batch; answers with its offset if it holds a checkpoint.
    fn apply(&mut self, batch: &Bytes, progress: &Mutex<LogProgress>) -> Option<i64> {
        let base_offset = RecordBatch::peek_offsets(batch).map(|(base, _)| base);
        let records = match decode_batch(batch) {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%error, ?base_offset, "skipping a metadata batch");
                return None;
            }
        };
        let checkpoint = records
            .iter()
            .any(|r| matches!(r, MetadataRecord::Checkpoint { .. }));
        if !self.based && !checkpoint {
            return None;
        }
        self.based = true;
        records.iter().for_each(|r| self.state.apply(r));
        let mut progress = progress.lock();
        if checkpoint {
            *progress = LogProgress {
                checkpoint: base_offset.map(|offset| (offset, batch.len() as u64)),
                bytes_since: 0,
            };
            base_offset
        } else {
            progress.bytes_since += batch.len() as u64;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_due_after_enough_records_and_never_right_after_a_large_one() {
        let fresh = LogProgress::default();
        assert!(!fresh.checkpoint_due(1000));
        let grown = LogProgress {
            checkpoint: None,
            bytes_since: 1000,
        };
        assert!(grown.checkpoint_due(1000));
        let large = LogProgress {
            checkpoint: Some((10, 600)),
            bytes_since: 2000,
        };
        assert!(!large.checkpoint_due(1000));
        assert!(
            LogProgress {
                bytes_since: 2400,
                ..large
            }
            .checkpoint_due(1000)
        );
    }
}
