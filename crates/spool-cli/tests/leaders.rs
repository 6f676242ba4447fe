//! `spool consume` and `spool offsets` ask each partition's leader: with one replica per
//! partition on three nodes, every partition is read through one bootstrap address.

use std::time::Duration;

use spool_client::{Acks, PartitionBatches};
use spool_testkit::{ClusterOptions, TestCluster};

const SPOOL: &str = env!("CARGO_BIN_EXE_spool");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_and_offsets_read_every_partition_from_its_leader() {
    let mut cluster = TestCluster::start(ClusterOptions::processes(3, SPOOL))
        .await
        .expect("cluster");
    cluster.create_topic("spread", 3, 1).await.expect("topic");
    for p in 0..3u32 {
        let leader = cluster
            .leader("spread", p, Duration::from_secs(15))
            .await
            .expect("leader");
        let mut builder =
            spool_log::batch::BatchBuilder::new(spool_log::batch::BatchOptions::default());
        for i in 0..5 {
            builder.append(
                1_700_000_000_000,
                None,
                Some(format!("p{p}-{i}").as_bytes()),
                &[],
            );
        }
        let outcome = cluster
            .node_client(leader)
            .await
            .expect("client")
            .produce(
                Acks::All,
                Duration::from_secs(10),
                vec![PartitionBatches {
                    topic: "spread".into(),
                    partition: p,
                    batches: vec![builder.finish()],
                    leader_epoch: None,
                }],
            )
            .await
            .expect("produce");
        outcome.partitions[0].as_ref().expect("produced");
    }
    let bootstrap = cluster.address(1).expect("address");
    let run = |args: Vec<String>| {
        std::process::Command::new(SPOOL)
            .args(args)
            .output()
            .expect("run spool")
    };
    let consumed = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || {
            run(vec![
                "consume".into(),
                "spread".into(),
                "--from-beginning".into(),
                "--bootstrap".into(),
                bootstrap,
            ])
        }
    })
    .await
    .expect("join");
    assert!(
        consumed.status.success(),
        "{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&consumed.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    let mut expected: Vec<String> = (0..3)
        .flat_map(|p| (0..5).map(move |i| format!("p{p}-{i}")))
        .collect();
    expected.sort();
    assert_eq!(lines, expected);

    let offsets = tokio::task::spawn_blocking(move || {
        run(vec![
            "offsets".into(),
            "spread".into(),
            "--output".into(),
            "json".into(),
            "--bootstrap".into(),
            bootstrap,
        ])
    })
    .await
    .expect("join");
    assert!(
        offsets.status.success(),
        "{}",
        String::from_utf8_lossy(&offsets.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&offsets.stdout).expect("json");
    let latest: Vec<i64> = json
        .as_array()
        .expect("a list")
        .iter()
        .map(|row| row["latest"].as_i64().expect("latest"))
        .collect();
    assert_eq!(latest, vec![5, 5, 5]);
}
