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

/// How long a halted leader waits for one voter to take leadership over.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);

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
    /// Set, with the reason, when a record cannot be applied.
    pub halted: Arc<Mutex<Option<String>>>,
}

/// A committed metadata batch this node cannot read: applying on past it would let nodes
/// of different versions serve different metadata without anyone knowing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Halt {
    pub offset: i64,
    pub reason: String,
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
                        let applied = current.apply_all(
                            &fetched.batches,
                            fetched.next_offset,
                            &self.progress,
                        );
                        if current.based {
                            self.state.send_replace(Arc::new(current.state.clone()));
                        }
                        match applied {
                            Ok(Some(offset)) => self.compact_before(offset).await,
                            Ok(None) => {}
                            Err(halt) => return self.halt(halt).await,
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

    /// Stops applying for good (until a restart, by a version that reads the record):
    /// the node keeps serving the metadata before the record, takes no part in electing
    /// a controller and hands leadership over if it holds it.
    async fn halt(&self, halt: Halt) {
        tracing::error!(offset = halt.offset, reason = %halt.reason, "metadata record cannot be applied: this node stops applying metadata, serves what it applied before it, and stays out of controller elections; upgrade it or check the metadata log");
        *self.halted.lock() = Some(format!(
            "the metadata record at offset {} cannot be applied here: {}",
            halt.offset, halt.reason
        ));
        let Some(replica) = self.replica.upgrade() else {
            return;
        };
        replica.abstain();
        // Hand leadership to the first voter that takes it (one that halted too refuses).
        let (voters, _) = replica.members();
        for other in voters.into_iter().filter(|v| *v != replica.node_id()) {
            if !replica.is_leader() {
                return;
            }
            if let Err(error) = replica.transfer_leader(other).await {
                tracing::warn!(%error, to = other, "could not hand controller leadership over");
                continue;
            }
            let mut changes = replica.changes();
            let _ = tokio::time::timeout(HANDOVER_WAIT, async {
                while replica.is_leader() && changes.changed().await {}
            })
            .await;
        }
        if replica.is_leader() {
            tracing::error!(
                "no other controller voter took leadership: this node still leads and refuses every decision"
            );
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

    /// Applies batches in order up to `next_offset`; answers with the offset of the last
    /// checkpoint among them. Stops at the first batch it cannot decode, with the state
    /// standing just before it.
    fn apply_all(
        &mut self,
        batches: &[Bytes],
        next_offset: i64,
        progress: &Mutex<LogProgress>,
    ) -> Result<Option<i64>, Halt> {
        let mut checkpoint = None;
        for batch in batches {
            match self.apply(batch, progress) {
                Ok(found) => checkpoint = found.or(checkpoint),
                Err(reason) => {
                    let offset = RecordBatch::peek_offsets(batch)
                        .map_or(self.state.offset, |(base, _)| base);
                    self.state.offset = offset;
                    return Err(Halt { offset, reason });
                }
            }
            if let Some((_, next)) = RecordBatch::peek_offsets(batch) {
                self.state.offset = next;
            }
        }
        self.state.offset = next_offset;
        Ok(checkpoint)
    }

    /// Applies one batch; answers with its offset if it holds a checkpoint.
    fn apply(
        &mut self,
        batch: &Bytes,
        progress: &Mutex<LogProgress>,
    ) -> Result<Option<i64>, String> {
        let base_offset = RecordBatch::peek_offsets(batch).map(|(base, _)| base);
        let records = decode_batch(batch).map_err(|e| e.to_string())?;
        let checkpoint = records
            .iter()
            .any(|r| matches!(r, MetadataRecord::Checkpoint { .. }));
        if !self.based && !checkpoint {
            return Ok(None);
        }
        self.based = true;
        records.iter().for_each(|r| self.state.apply(r));
        let mut progress = progress.lock();
        if checkpoint {
            *progress = LogProgress {
                checkpoint: base_offset.map(|offset| (offset, batch.len() as u64)),
                bytes_since: 0,
            };
            Ok(base_offset)
        } else {
            progress.bytes_since += batch.len() as u64;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::encode_batch;

    /// A stored batch of `records` at `base`.
    fn stored(records: &[MetadataRecord], base: i64) -> Bytes {
        let bytes = encode_batch(records, 1).expect("encode");
        let mut bytes = bytes.to_vec();
        bytes[..8].copy_from_slice(&base.to_be_bytes());
        Bytes::from(bytes)
    }

    #[test]
    fn a_batch_that_does_not_decode_stops_applying_before_it() {
        let good = MetadataRecord::FenceBroker {
            id: 7,
            incarnation: 1,
        };
        let first = stored(std::slice::from_ref(&good), 0);
        // A record of a kind this build does not know (written by a newer version).
        let unreadable = {
            let mut builder = spool_log::batch::BatchBuilder::new(Default::default());
            builder.append(
                1,
                Some(b"future_record"),
                Some(b"{\"from\":\"a newer version\"}"),
                &[],
            );
            let mut bytes = builder.finish().to_vec();
            bytes[..8].copy_from_slice(&1i64.to_be_bytes());
            Bytes::from(bytes)
        };
        let third = stored(std::slice::from_ref(&good), 2);
        let mut rebuild = Rebuild::from(0);
        let progress = Mutex::new(LogProgress::default());
        let halt = rebuild
            .apply_all(&[first, unreadable, third], 3, &progress)
            .expect_err("an unreadable record halts");
        assert_eq!(halt.offset, 1);
        assert!(
            halt.reason.contains("corrupt metadata record"),
            "{}",
            halt.reason
        );
        // The state stands after the first batch, not past the unreadable one.
        assert_eq!(rebuild.state.offset, 1);
    }

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
