//! A consumer group under a storm, with real processes: three `spool serve` nodes and
//! `spool consume --group` members, while a producer writes. Members are killed with
//! SIGKILL and replaced, and the node coordinating the group is killed and restarted.
//! At the end every acknowledged record has been printed by some member (at least once:
//! a killed member's uncommitted records come again from their next owner), and once the
//! members stop cleanly the group's committed offsets reach the end of every partition.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spool_client::{Producer, ProducerConfig, ProducerRecord};
use spool_testkit::{ClusterOptions, TestCluster};

const SPOOL: &str = env!("CARGO_BIN_EXE_spool");
const TOPIC: &str = "storm";
const GROUP: &str = "storm-group";
const RECORDS: usize = 3000;

/// A `spool consume --group` process; what it prints goes into `seen`.
fn member(bootstrap: &str, seen: &Arc<Mutex<BTreeSet<String>>>) -> Child {
    let mut child = Command::new(SPOOL)
        .args(["consume", TOPIC, "--group", GROUP, "--from-beginning"])
        .args(["--bootstrap", bootstrap])
        .env("SPOOL_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let seen = Arc::clone(seen);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            seen.lock().unwrap().insert(line);
        }
    });
    child
}

fn interrupt(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_under_kills_of_members_and_its_coordinator_loses_nothing() {
    let mut cluster = TestCluster::start(ClusterOptions::processes(3, SPOOL))
        .await
        .expect("cluster");
    cluster.create_topic(TOPIC, 6, 3).await.expect("topic");
    let bootstraps = cluster.addresses().join(",");
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let mut members: Vec<Child> = (0..3).map(|_| member(&bootstraps, &seen)).collect();

    // The producer writes throughout; it retries through the coordinator's node dying.
    let producer = {
        let client = cluster.client().await.expect("client");
        tokio::spawn(async move {
            let producer = Producer::new(client, ProducerConfig::default());
            let mut acked = BTreeSet::new();
            for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(100) {
                let mut deliveries = Vec::new();
                for i in chunk {
                    let record = ProducerRecord::new(TOPIC, format!("v{i}").into_bytes())
                        .key(format!("k{i}").into_bytes());
                    deliveries.push((i, producer.send(record).await.expect("send")));
                }
                for (i, delivery) in deliveries {
                    if delivery.await.is_ok() {
                        acked.insert(format!("v{i}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            acked
        })
    };

    let client = cluster.client().await.expect("client");
    for round in 0..4 {
        // Wait for progress, then kill a member without warning and start another.
        let before = seen.lock().unwrap().len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.lock().unwrap().len() < before + 200 && !producer.is_finished() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress in round {round}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let victim = round % members.len();
        members[victim].kill().unwrap();
        let _ = members[victim].wait();
        members[victim] = member(&bootstraps, &seen);
        if round == 1 {
            // The node coordinating the group dies, and comes back.
            let (coordinator, _) = client.find_coordinator(GROUP).await.expect("coordinator");
            cluster.kill(coordinator).await.expect("kill");
            cluster.restart(coordinator).await.expect("restart");
        }
    }
    let acked = producer.await.expect("producer");
    assert!(
        acked.len() >= RECORDS * 9 / 10,
        "only {} acknowledged",
        acked.len()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let missing: Vec<String> = {
            let seen = seen.lock().unwrap();
            acked
                .iter()
                .filter(|v| !seen.contains(*v))
                .take(5)
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "acknowledged records never consumed, for example {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped cleanly, the members commit what they printed: no lag is left.
    for child in &mut members {
        interrupt(child);
    }
    let out = Command::new(SPOOL)
        .args([
            "group",
            "describe",
            GROUP,
            "--output",
            "json",
            "--bootstrap",
            &bootstraps,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lag: i64 = described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lag"].as_i64().unwrap_or(i64::MAX))
        .sum();
    assert_eq!(lag, 0, "{described}");
}
