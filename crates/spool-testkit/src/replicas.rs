//! Reading back what each replica of a partition holds, from any cluster whose nodes can
//! be reached one at a time: processes and in-process nodes here, containers in the
//! system tests.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use spool_client::{Client, FetchOptions, FetchPosition, OffsetSpec};

use crate::{TestkitError, wait_for};

/// A cluster whose nodes a test can reach one by one.
pub trait Replicas {
    /// The nodes up now.
    fn running(&self) -> Vec<u64>;
    /// A client of `node` alone.
    fn node_client(&self, node: u64) -> impl Future<Output = Result<Client, TestkitError>>;
}

/// Every committed batch `node` holds of a partition, as stored.
pub async fn committed_batches(
    cluster: &impl Replicas,
    node: u64,
    topic: &str,
    partition: u32,
) -> Result<Vec<Bytes>, TestkitError> {
    let client = cluster.node_client(node).await?;
    let fail = |e: spool_client::ClientError| TestkitError::Call {
        node,
        reason: e.to_string(),
    };
    let start = client
        .list_offsets(vec![(topic.to_string(), partition, OffsetSpec::Earliest)])
        .await
        .map_err(fail)?
        .into_iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or(0);
    let mut stream = client
        .fetch(FetchOptions {
            positions: vec![FetchPosition {
                topic: topic.to_string(),
                partition,
                offset: start,
                leader_epoch: None,
            }],
            max_bytes: 16 * 1024 * 1024,
            min_bytes: 1,
            max_wait: Duration::from_millis(10),
            follow: false,
            isolation: Default::default(),
        })
        .await
        .map_err(fail)?;
    let mut batches = Vec::new();
    while let Some(response) = stream.next().await {
        for part in response.map_err(fail)? {
            if let Some(error) = part.error {
                return Err(TestkitError::Call {
                    node,
                    reason: error.message,
                });
            }
            batches.extend(part.batches);
        }
    }
    Ok(batches)
}

/// Waits until every running replica of a partition holds the same committed batches,
/// and returns them.
pub async fn replicas_agree(
    cluster: &impl Replicas,
    replicas: &[u64],
    topic: &str,
    partition: u32,
    within: Duration,
) -> Result<Vec<Bytes>, TestkitError> {
    wait_for(within, "replicas to hold the same batches", || async {
        let mut reference: Option<Vec<Bytes>> = None;
        let running = cluster.running();
        for node in replicas.iter().filter(|n| running.contains(n)) {
            let batches = committed_batches(cluster, *node, topic, partition)
                .await
                .ok()?;
            match &reference {
                None => reference = Some(batches),
                Some(r) if *r == batches => {}
                Some(_) => return None,
            }
        }
        reference
    })
    .await
}
