//! A partition replica as the request handlers see it: where to read, the high watermark
//! to wait on, and the key the writer thread knows it by.

use std::path::PathBuf;

use spool_log::{FetchedBatches, LogReader};
use tokio::sync::watch;

use crate::error::BrokerError;

/// When a produce request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Once the batches are durable under the flush policy (and, with replication,
    /// committed by a majority).
    All,
    /// Once the leader has appended them.
    Leader,
    /// Not at all.
    None,
}

/// The writer thread's name for a partition.
pub(crate) type PartitionKey = u64;

#[derive(Debug)]
pub(crate) struct Partition {
    pub topic: String,
    pub index: u32,
    pub key: PartitionKey,
    pub dir: PathBuf,
    pub reader: LogReader,
    /// The offset after the last committed record; consumers read below it.
    pub high_watermark: watch::Receiver<i64>,
}

impl Partition {
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// Reads committed batches from `from`, off the async threads.
    pub async fn read(&self, from: i64, max_bytes: usize) -> Result<FetchedBatches, BrokerError> {
        let reader = self.reader.clone();
        let upper = self.high_watermark();
        if from == upper {
            // Nothing to read: answer without a trip to the blocking pool.
            return Ok(FetchedBatches {
                batches: Vec::new(),
                next_offset: from,
            });
        }
        let start = reader.start_offset();
        if from < start || from > upper {
            return Err(BrokerError::OffsetOutOfRange {
                requested: from,
                start,
                end: upper,
            });
        }
        tokio::task::spawn_blocking(move || reader.read(from, upper, max_bytes))
            .await
            .map_err(|_| BrokerError::ShuttingDown)?
            .map_err(BrokerError::from)
    }

    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<i64>, BrokerError> {
        let reader = self.reader.clone();
        let upper = self.high_watermark();
        tokio::task::spawn_blocking(move || reader.offset_for_timestamp(timestamp, upper))
            .await
            .map_err(|_| BrokerError::ShuttingDown)?
            .map_err(BrokerError::from)
    }
}
