//! A node whose data volume fills up: node 3 runs on a 64 MiB tmpfs and keeps 16 MiB
//! free (tests/compose/small-volume.yml). It refuses writes with a clear error, stays up,
//! serves reads, lets the other replicas go on without it, and takes writes again once
//! retention frees space; no acknowledged record is lost anywhere.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use spool_client::{Acks, ApiError, Client, ErrorCode, NewTopic, PartitionBatches, Produced};
use spool_log::batch::{BatchBuilder, BatchOptions};
use spool_testkit::load::records_of;
use spool_testkit::{Replicas, wait_for};

/// Records of 250 KiB, four to a batch: just under max.message.bytes.
const VALUE_BYTES: usize = 250 * 1024;
const PER_BATCH: usize = 4;

fn megabyte_batch(tag: usize) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    let value = vec![b'a' + (tag % 26) as u8; VALUE_BYTES];
    // Stamped now: older records would be for time-based retention to remove.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for _ in 0..PER_BATCH {
        builder.append(now_ms, None, Some(&value), &[]);
    }
    builder.finish()
}

/// Segments of the ballast topic: small, so that retention can free most of it.
const BALLAST_SEGMENT_BYTES: usize = 4 * 1024 * 1024;

async fn create(client: &Client, name: &str, replicas: Vec<u64>, configs: &[(&str, String)]) {
    client
        .create_topic(NewTopic {
            name: name.to_string(),
            partitions: 1,
            replication_factor: replicas.len() as u32,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            assignments: vec![replicas],
        })
        .await
        .expect("topic");
}

/// One acks=all write of a batch to partition 0 of `topic`, sent to `node`.
async fn write(
    cluster: &impl Replicas,
    node: u64,
    topic: &str,
    tag: usize,
) -> Result<Produced, ApiError> {
    let client = cluster.node_client(node).await.expect("node client");
    let outcome = client
        .produce(
            Acks::All,
            Duration::from_secs(30),
            vec![PartitionBatches {
                topic: topic.to_string(),
                partition: 0,
                batches: vec![megabyte_batch(tag)],
                leader_epoch: None,
            }],
        )
        .await
        .expect("the node answers");
    outcome
        .partitions
        .into_iter()
        .next()
        .expect("one partition")
}

/// Records of partition 0 of `topic` committed on `node`.
async fn stored_on(cluster: &impl Replicas, node: u64, topic: &str) -> usize {
    let batches = spool_testkit::committed_batches(cluster, node, topic, 0)
        .await
        .expect("a read of the replica");
    records_of(topic, 0, &batches).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_refuses_writes_serves_reads_and_loses_nothing() {
    let Some((cluster, client, load)) =
        loaded_with("a_node_whose_disk_fills", "spare", &["small-volume.yml"]).await
    else {
        return;
    };

    // Two topics only node 3 holds: a little in one, then the other written until node 3
    // refuses.
    create(&client, "filler", vec![3], &[]).await;
    let segment = ("segment.bytes", BALLAST_SEGMENT_BYTES.to_string());
    create(&client, "ballast", vec![3], &[segment]).await;
    cluster.leader("filler", 0, WITHIN).await.expect("leader");
    cluster.leader("ballast", 0, WITHIN).await.expect("leader");
    let written = 2;
    for tag in 0..written {
        write(&cluster, 3, "filler", tag).await.expect("room yet");
    }
    let mut ballast = 0;
    let refusal = loop {
        assert!(
            ballast < 64,
            "64 MiB written to a 64 MiB volume, none refused"
        );
        match write(&cluster, 3, "ballast", ballast).await {
            Ok(_) => ballast += 1,
            Err(error) => break error,
        }
    };
    assert_eq!(refusal.code, ErrorCode::StorageError, "{refusal:?}");
    assert!(
        refusal.message.contains("min_free_bytes"),
        "the refusal says why: {}",
        refusal.message
    );
    eprintln!(
        "node 3 refused after {} MiB: {}",
        written + ballast,
        refusal.message
    );

    // A topic on every node, led elsewhere: its writes go on while node 3, under half
    // its floor, takes no more of them.
    create(&client, "bulk", vec![1, 2, 3], &[]).await;
    let leader = cluster.leader("bulk", 0, WITHIN).await.expect("leader");
    assert_ne!(leader, 3);
    for tag in 0..24 {
        write(&cluster, leader, "bulk", tag)
            .await
            .expect("acknowledged by the nodes with room");
    }
    let behind = stored_on(&cluster, 3, "bulk").await;
    assert!(
        behind < 24 * PER_BATCH,
        "node 3 took all of bulk into a full volume"
    );

    // Node 3 is up, serves what it holds, and still refuses writes.
    cluster
        .wait_serving(WITHIN)
        .await
        .expect("every node serving");
    assert_eq!(stored_on(&cluster, 3, "filler").await, written * PER_BATCH);
    let again = write(&cluster, 3, "filler", 0).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::StorageError);

    // Retention frees space: ballast is cut to its newest segments, and node 3 takes
    // writes again.
    client
        .alter_topic_configs(
            "ballast",
            vec![(
                "retention.bytes".to_string(),
                BALLAST_SEGMENT_BYTES.to_string(),
            )],
            Vec::new(),
        )
        .await
        .expect("ballast shortened");
    wait_for(WITHIN, "node 3 to take writes again", || async {
        write(&cluster, 3, "filler", written).await.ok()
    })
    .await
    .expect("writes taken once retention freed space");
    assert_eq!(
        stored_on(&cluster, 3, "filler").await,
        (written + 1) * PER_BATCH
    );
    let kept = stored_on(&cluster, 3, "ballast").await;
    assert!(
        kept < ballast * PER_BATCH,
        "retention removed none of ballast"
    );
    eprintln!(
        "node 3 held {behind} of bulk's {} records; it took writes again once retention cut ballast from {} to {kept} records",
        24 * PER_BATCH,
        ballast * PER_BATCH
    );
    // Room for node 3 to catch up with the load while the test checks it.
    client.delete_topic("bulk").await.expect("delete");
    check(&cluster, "spare", load).await;
}
