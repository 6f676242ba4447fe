//! Metadata reports each partition's real leader epoch (its Raft term) and each broker's
//! rack; a produce or fetch that names an older epoch is fenced, a newer one is refused
//! as unknown, and after a failover the old epoch no longer writes. Only a leader that
//! caught up in its term says where a partition ends.

use std::time::Duration;

use futures_util::StreamExt;
use spool_client::ErrorCode;
use spool_client::{Acks, Client, FetchOptions, FetchPosition, OffsetSpec, PartitionBatches};
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
    let mut stream = fetch_from(client, 0, epoch, false).await;
    let response = stream.next().await.expect("a response").expect("no error");
    response[0].error.as_ref().map(|e| e.code)
}

async fn fetch_from(
    client: &Client,
    offset: i64,
    epoch: u64,
    follow: bool,
) -> impl futures_util::Stream<
    Item = Result<Vec<spool_client::FetchedPartition>, spool_client::ClientError>,
> + Unpin
+ use<'_> {
    client
        .fetch(FetchOptions {
            positions: vec![FetchPosition {
                topic: TOPIC.to_string(),
                partition: 0,
                offset,
                leader_epoch: Some(epoch),
            }],
            max_bytes: 1024 * 1024,
            min_bytes: 1,
            max_wait: Duration::from_millis(100),
            follow,
            isolation: Default::default(),
        })
        .await
        .expect("fetch")
}

async fn list_offset(client: &Client, spec: OffsetSpec) -> Result<i64, ErrorCode> {
    client
        .list_offsets(vec![(TOPIC.to_string(), 0, spec)])
        .await
        .expect("list offsets")
        .remove(0)
        .map_err(|e| e.code)
}

/// A follower's high watermark may lag the partition's (so may that of a node restarted
/// after leading, which can still believe it leads in its old term): an offset beyond it
/// is not out of range there, or a consumer reading such a node would be sent back to its
/// reset policy and redo committed work. The fetch waits there until the offset is
/// readable; only the leader calls an offset out of range, and only the leader says where
/// the partition ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_leader_that_caught_up_calls_an_offset_out_of_range() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    cluster.create_topic(TOPIC, 1, 3).await.expect("topic");
    let leader = cluster.leader(TOPIC, 0, ELECTION).await.expect("leader");
    let to_leader = cluster.node_client(leader).await.expect("client");
    let (_, epoch) = leader_epoch(&to_leader).await;
    assert_eq!(produce_with(&to_leader, epoch).await, None);
    let end = list_offset(&to_leader, OffsetSpec::Latest)
        .await
        .expect("the leader knows the end");
    assert!(end >= 1);
    let mut beyond = fetch_from(&to_leader, end + 2, epoch, false).await;
    let answer = beyond.next().await.expect("a response").expect("no error");
    assert_eq!(
        answer[0].error.as_ref().map(|e| e.code),
        Some(ErrorCode::OffsetOutOfRange),
        "the leader knows the offset is beyond the end"
    );

    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let to_follower = cluster.node_client(follower).await.expect("client");
    assert_eq!(
        list_offset(&to_follower, OffsetSpec::Latest).await,
        Err(ErrorCode::NotLeader)
    );
    assert_eq!(
        list_offset(&to_follower, OffsetSpec::Timestamp(0)).await,
        Err(ErrorCode::NotLeader)
    );
    assert_eq!(list_offset(&to_follower, OffsetSpec::Earliest).await, Ok(0));

    // Beyond the end on the follower: it waits, and delivers once the records exist.
    let mut waiting = fetch_from(&to_follower, end + 2, epoch, true).await;
    let first = tokio::time::timeout(Duration::from_millis(500), waiting.next()).await;
    assert!(first.is_err(), "the follower answered early: {first:?}");
    for _ in 0..3 {
        assert_eq!(produce_with(&to_leader, epoch).await, None);
    }
    let answer = tokio::time::timeout(Duration::from_secs(20), waiting.next())
        .await
        .expect("the follower delivers the offset once it exists")
        .expect("a response")
        .expect("no error");
    assert!(answer[0].error.is_none(), "{:?}", answer[0].error);
    assert!(answer[0].next_offset > end + 2, "{:?}", answer[0]);
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

/// A leader cut off from its quorum keeps its term and a frozen high watermark; offsets
/// the new leader wrote since are past that, but it must not call them out of range (nor
/// say where the partition ends): a quorum no longer confirms it leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_calls_nothing_out_of_range() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    cluster.create_topic(TOPIC, 1, 3).await.expect("topic");
    let old = cluster.leader(TOPIC, 0, ELECTION).await.expect("leader");
    let to_old = cluster.node_client(old).await.expect("client");
    let (_, old_epoch) = leader_epoch(&to_old).await;
    assert_eq!(produce_with(&to_old, old_epoch).await, None);
    let end = list_offset(&to_old, OffsetSpec::Latest)
        .await
        .expect("the leader knows the end");

    cluster.isolate(old).await.expect("isolate");
    let others: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|n| *n != old)
        .collect();
    let new = spool_testkit::wait_for(ELECTION, "a new leader", || async {
        for node in &others {
            let client = cluster.node_client(*node).await.ok()?;
            let (leader, epoch) = leader_epoch(&client).await;
            if leader == *node && epoch > old_epoch {
                return Some((client, epoch));
            }
        }
        None
    })
    .await
    .expect("the majority elects a leader");
    let (to_new, new_epoch) = new;
    for _ in 0..3 {
        assert_eq!(produce_with(&to_new, new_epoch).await, None);
    }

    // Past the old leader's frozen end, in its own epoch: it waits, it does not say
    // out of range, and it does not claim to know the end.
    assert_eq!(
        list_offset(&to_old, OffsetSpec::Latest).await,
        Err(ErrorCode::NotLeader)
    );
    let mut stream = fetch_from(&to_old, end + 2, old_epoch, true).await;
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Err(_) => {}
        Ok(answer) => {
            let answer = answer.expect("a response").expect("no error");
            assert_ne!(
                answer[0].error.as_ref().map(|e| e.code),
                Some(ErrorCode::OffsetOutOfRange),
                "an isolated leader called an offset the partition has out of range"
            );
        }
    }
    cluster.heal_all().await.expect("heal");
}
