//! read_committed on the consumer side: the broker stops each partition at its last
//! stable offset and names the aborted transactions reaching into what it sends; the
//! consumer skips their batches, as Kafka's consumer does.

use std::collections::HashSet;

use spool_log::RecordBatch;
use spool_log::batch::ControlMarker;

/// Which batches of one fetched range belong to aborted transactions. Built from the
/// range's aborted list and fed its batches in offset order.
#[derive(Debug, Default)]
pub struct AbortedTransactions {
    /// (first offset, producer id), latest first: popped as the batches reach them.
    upcoming: Vec<(i64, i64)>,
    /// Producers whose aborted transaction the batches are inside.
    inside: HashSet<i64>,
}

impl AbortedTransactions {
    /// From (producer id, first offset) pairs, as a fetch response lists them.
    pub fn new(aborted: &[(i64, i64)]) -> Self {
        let mut upcoming: Vec<(i64, i64)> = aborted.iter().map(|&(p, f)| (f, p)).collect();
        upcoming.sort_unstable_by(|a, b| b.cmp(a));
        Self {
            upcoming,
            inside: HashSet::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.upcoming.is_empty() && self.inside.is_empty()
    }

    /// Whether the stored batch `bytes` is to be skipped: records of an aborted
    /// transaction. (Control batches hold no records and are skipped by decoding.)
    pub fn skips(&mut self, bytes: &[u8]) -> bool {
        if self.is_empty() {
            return false;
        }
        // Only the header is read: decoding checks the CRC of what it keeps.
        let Ok(batch) = RecordBatch::new_without_crc(bytes) else {
            return false;
        };
        if batch.producer_id() < 0 || !batch.is_transactional() {
            return false;
        }
        while let Some(&(first, producer)) = self.upcoming.last() {
            if first > batch.last_offset() {
                break;
            }
            self.inside.insert(producer);
            self.upcoming.pop();
        }
        if batch.is_control() {
            // The abort marker ends the aborted transaction.
            if ControlMarker::of(&batch).is_some_and(|m| !m.commit) {
                self.inside.remove(&batch.producer_id());
            }
            return true;
        }
        self.inside.contains(&batch.producer_id())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use spool_log::batch::{BatchBuilder, BatchOptions, control_batch};

    use super::*;

    fn at(mut bytes: Bytes, offset: i64) -> Bytes {
        let mut owned = bytes.to_vec();
        spool_log::batch::set_base_offset(&mut owned, offset);
        bytes = Bytes::from(owned);
        bytes
    }

    fn data(producer: i64, transactional: bool, offset: i64) -> Bytes {
        let mut builder = BatchBuilder::new(BatchOptions {
            producer_id: producer,
            producer_epoch: 0,
            transactional,
            ..BatchOptions::default()
        });
        builder.append(0, None, Some(b"v"), &[]);
        at(builder.finish(), offset)
    }

    fn marker(producer: i64, commit: bool, offset: i64) -> Bytes {
        let marker = ControlMarker {
            commit,
            coordinator_epoch: 0,
        };
        at(control_batch(producer, 0, marker, 0), offset)
    }

    #[test]
    fn only_the_aborted_transactions_records_are_skipped() {
        // Producer 1 aborts [0, 4]; producer 2 commits; producer 1 then commits [5, 6];
        // producer 3 is plain.
        // Some(skipped) for data batches; markers are left to decoding, which skips
        // every control batch, so either answer does for them.
        let log = [
            (data(1, true, 0), Some(true)),
            (data(2, true, 1), Some(false)),
            (data(3, false, 2), Some(false)),
            (data(1, true, 3), Some(true)),
            (marker(1, false, 4), None),
            (data(1, true, 5), Some(false)),
            (marker(2, true, 6), None),
            (marker(1, true, 7), None),
        ];
        let mut filter = AbortedTransactions::new(&[(1, 0)]);
        for (i, (batch, skipped)) in log.iter().enumerate() {
            let answer = filter.skips(batch);
            if let Some(skipped) = skipped {
                assert_eq!(answer, *skipped, "batch {i}");
            }
        }
        // A range starting inside the aborted transaction.
        let mut filter = AbortedTransactions::new(&[(1, 0)]);
        assert!(filter.skips(&log[3].0));
        filter.skips(&log[4].0);
        assert!(
            !filter.skips(&log[5].0),
            "the abort marker ends the aborted transaction"
        );
        // No aborted transaction: nothing skipped, markers are left to decoding.
        let mut none = AbortedTransactions::new(&[]);
        assert!(log.iter().all(|(batch, _)| !none.skips(batch)));
    }
}
