//! Reading a partition to its end through its leader, as a reader at an isolation level
//! sees it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use spool_client::{
    AbortedTransactions, ConsumerRecord, FetchOptions, FetchPosition, IsolationLevel, decode_batch,
};

use crate::{TestCluster, TestkitError};

/// What a partition held up to where a reader may read.
#[derive(Debug, Default)]
pub struct PartitionRead {
    /// The records (read_committed: not those of aborted transactions).
    pub records: Vec<ConsumerRecord>,
    /// The aborted transactions reaching into what was read, as (producer id, first
    /// offset); answered at read_committed only.
    pub aborted: Vec<(i64, i64)>,
}

/// Reads `topic`-`partition` from offset 0 up to its high watermark (read_uncommitted) or
/// last stable offset (read_committed), from its leader.
pub(crate) async fn read_to_end(
    cluster: &TestCluster,
    topic: &str,
    partition: u32,
    isolation: IsolationLevel,
    within: Duration,
) -> Result<PartitionRead, TestkitError> {
    let leader = cluster.leader(topic, partition, within).await?;
    let client = cluster.node_client(leader).await?;
    let failed = |reason: String| TestkitError::Call {
        node: leader,
        reason,
    };
    let options = FetchOptions {
        positions: vec![FetchPosition {
            topic: topic.to_string(),
            partition,
            offset: 0,
            leader_epoch: None,
        }],
        max_bytes: 1024 * 1024,
        min_bytes: 1,
        max_wait: Duration::from_millis(100),
        follow: false,
        isolation,
    };
    let mut stream = client
        .fetch(options)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let name: Arc<str> = Arc::from(topic);
    let mut read = PartitionRead::default();
    while let Some(response) = stream.next().await {
        for fetched in response.map_err(|e| failed(e.to_string()))? {
            if let Some(error) = fetched.error {
                return Err(failed(error.to_string()));
            }
            for aborted in &fetched.aborted {
                if !read.aborted.contains(aborted) {
                    read.aborted.push(*aborted);
                }
            }
            let mut aborted = AbortedTransactions::new(&fetched.aborted);
            for batch in &fetched.batches {
                if aborted.skips(batch) {
                    continue;
                }
                decode_batch(&name, partition, batch, 0, &mut read.records)
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
    }
    Ok(read)
}
