//! Control batches: the commit and abort markers a transaction coordinator has written to
//! every partition of a transaction, in Kafka's format.
//!
//! A marker is a batch with the transactional and control bits set, the producer's id and
//! epoch, no sequence, and one record whose key is `version: i16 = 0, type: i16` (0 abort,
//! 1 commit) and whose value is `version: i16 = 0, coordinator_epoch: i32`.

use bytes::Bytes;

use super::{BatchBuilder, BatchOptions, RecordBatch};

const ABORT: i16 = 0;
const COMMIT: i16 = 1;

/// What a control batch says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMarker {
    /// Commit, or abort.
    pub commit: bool,
    /// The epoch of the coordinator that wrote it.
    pub coordinator_epoch: i32,
}

impl ControlMarker {
    /// The marker a control batch carries; `None` for any other batch, or a control
    /// record of a type this version does not know.
    pub fn of(batch: &RecordBatch<'_>) -> Option<Self> {
        if !batch.is_control() {
            return None;
        }
        let record = batch.records().ok()?.next()?.ok()?;
        let key = record.key()?;
        let kind = i16::from_be_bytes([*key.get(2)?, *key.get(3)?]);
        let commit = match kind {
            COMMIT => true,
            ABORT => false,
            _ => return None,
        };
        // The coordinator epoch is informational: a marker without it is still a marker.
        let coordinator_epoch = record
            .value()
            .and_then(|v| Some(i32::from_be_bytes(v.get(2..6)?.try_into().ok()?)))
            .unwrap_or(-1);
        Some(Self {
            commit,
            coordinator_epoch,
        })
    }
}

/// A control batch of one marker for `producer_id` at `producer_epoch`.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: ControlMarker,
    now_ms: i64,
) -> Bytes {
    let mut builder = BatchBuilder::with_capacity(
        128,
        BatchOptions {
            producer_id,
            producer_epoch,
            transactional: true,
            control: true,
            ..BatchOptions::default()
        },
    );
    let kind = if marker.commit { COMMIT } else { ABORT };
    let mut key = [0u8; 4];
    key[2..].copy_from_slice(&kind.to_be_bytes());
    let mut value = [0u8; 6];
    value[2..].copy_from_slice(&marker.coordinator_epoch.to_be_bytes());
    builder.append(now_ms, Some(&key), Some(&value), &[]);
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_as_written_and_is_kafka_shaped() {
        for commit in [true, false] {
            let marker = ControlMarker {
                commit,
                coordinator_epoch: 7,
            };
            let bytes = control_batch(42, 3, marker, 1_000);
            let batch = RecordBatch::new(&bytes).expect("valid batch");
            assert!(batch.is_control() && batch.is_transactional());
            assert_eq!((batch.producer_id(), batch.producer_epoch()), (42, 3));
            assert_eq!(batch.base_sequence(), -1);
            assert_eq!(batch.attributes(), 0x30);
            assert_eq!(ControlMarker::of(&batch), Some(marker));
        }
    }

    #[test]
    fn a_data_batch_is_no_marker() {
        let mut builder = BatchBuilder::new(BatchOptions {
            transactional: true,
            ..BatchOptions::default()
        });
        builder.append(1, Some(&[0, 0, 0, 1]), None, &[]);
        let bytes = builder.finish();
        assert_eq!(
            ControlMarker::of(&RecordBatch::new(&bytes).expect("valid")),
            None
        );
    }
}
