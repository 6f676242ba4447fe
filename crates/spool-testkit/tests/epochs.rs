//! Metadata reports each partition's real leader epoch (its Raft term) and each broker's
//! rack; a produce or fetch that names an older epoch is fenced, a newer one is refused
//! as unknown, and after a failover the old epoch no longer writes.

use std::time::Duration;

use futures_util::StreamExt;
use spool_client::ErrorCode;
use spool_client::{Acks, Client, FetchOptions, FetchPosition, PartitionBatches};
use spool_testkit::{ClusterOptions, TestCluster};

const ELECTION: Duration = Duration::from_secs(15);
const TOPIC: &str = "epochs";

fn batch() -> bytes::Bytes {
    let mut builder =
        spool_log::batch::BatchBuilder::new(spool_log::batch::BatchOptions::default());
    builder.append(1_700_000_000_000, None, Some(b"v"), &[]);
    builder.finish()
}

async fn leader_epoch(client: &Client) -> (u64, u64) {
    let metadata = client
        .metadata(&[TOPIC.to_string()])
        .await
        .expect("metadata");
    let p = metadata.topics[0].partitions[0];
    (p.leader, p.leader_epoch)
}

/// The error code of a produce with `epoch`, or `None` if it was taken.
async fn produce_with(client: &Client, epoch: u64) -> Option<ErrorCode> {
    let outcome = client
        .produce(
            Acks::All,
            Duration::from_secs(10),
            vec![PartitionBatches {
                topic: TOPIC.to_string(),
                partition: 0,
                batches: vec![batch()],
                leader_epoch: Some(epoch),
            }],
        )
        .await
        .expect("produce call");
    outcome.partitions[0].as_ref().err().map(|e| e.code)
}

async fn fetch_with(client: &Client, epoch: u64) -> Option<ErrorCode> {
    let mut stream = client
        .fetch(FetchOptions {
            positions: vec![FetchPosition {
                topic: TOPIC.to_string(),
                partition: 0,
                offset: 0,
                leader_epoch: Some(epoch),
            }],
            max_bytes: 1024 * 1024,
            min_bytes: 1,
            max_wait: Duration::from_millis(100),
            follow: false,
        })
        .await
        .expect("fetch");
    let response = stream.next().await.expect("a response").expect("no error");
    response[0].error.as_ref().map(|e| e.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_leader_epochs_are_fenced_and_metadata_reports_terms_and_racks() {
    let mut cluster = TestCluster::start(ClusterOptions {
        racks: vec!["east".into(), "west".into()],
        ..ClusterOptions::in_process(3)
    })
    .await
    .expect("cluster");
    cluster.create_topic(TOPIC, 1, 3).await.expect("topic");
    let leader = cluster.leader(TOPIC, 0, ELECTION).await.expect("leader");
    let client = cluster.node_client(leader).await.expect("client");
    let (named, epoch) = leader_epoch(&client).await;
    assert_eq!(named, leader);
    assert!(epoch >= 1, "a real term, not a constant");

    let metadata = client.metadata(&[]).await.expect("metadata");
    let racks: Vec<_> = (1..=3)
        .map(|id| {
            metadata
                .brokers
                .iter()
                .find(|b| b.node_id == id)
                .and_then(|b| b.rack.clone())
        })
        .collect();
    assert_eq!(
        racks,
        vec![
            Some("east".to_string()),
            Some("west".to_string()),
            Some("east".to_string())
        ]
    );

    assert_eq!(produce_with(&client, epoch).await, None);
    assert_eq!(
        produce_with(&client, epoch - 1).await,
        Some(ErrorCode::FencedLeaderEpoch)
    );
    assert_eq!(
        produce_with(&client, epoch + 1).await,
        Some(ErrorCode::UnknownLeaderEpoch)
    );
    assert_eq!(fetch_with(&client, epoch).await, None);
    assert_eq!(
        fetch_with(&client, epoch - 1).await,
        Some(ErrorCode::FencedLeaderEpoch)
    );

    // A new leader: its epoch is newer, and the old one is fenced there.
    cluster.kill(leader).await.expect("kill");
    let next = cluster
        .leader(TOPIC, 0, ELECTION)
        .await
        .expect("new leader");
    let client = cluster.node_client(next).await.expect("client");
    let (_, new_epoch) = leader_epoch(&client).await;
    assert!(new_epoch > epoch, "{new_epoch} after {epoch}");
    assert_eq!(
        produce_with(&client, epoch).await,
        Some(ErrorCode::FencedLeaderEpoch)
    );
    assert_eq!(produce_with(&client, new_epoch).await, None);
}
