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
use spool_testkit::{ClusterOptions, TestCluster, wait_for};

const SPOOL: &str = env!("CARGO_BIN_EXE_spool");
const TOPIC: &str = "storm";
const GROUP: &str = "storm-group";
const RECORDS: usize = 3000;

/// What the members printed, and a count that moves with each new line.
#[derive(Clone)]
struct Seen {
    values: Arc<Mutex<BTreeSet<String>>>,
    lines: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Seen {
    fn len(&self) -> usize {
        self.values.lock().unwrap().len()
    }

    /// Waits until `done` holds of what was printed, or fails after `within`.
    async fn wait_until(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&BTreeSet<String>) -> bool,
    ) {
        let mut lines = self.lines.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let met = done(&self.values.lock().unwrap());
            if met {
                return;
            }
            let changed = tokio::time::timeout_at(deadline, lines.changed()).await;
            assert!(
                matches!(changed, Ok(Ok(()))),
                "timed out waiting for {what}"
            );
        }
    }
}

/// A `spool consume --group` process; what it prints goes into `seen`.
fn member(bootstrap: &str, seen: &Seen) -> Child {
    let mut child = Command::new(SPOOL)
        .args(["consume", TOPIC, "--group", GROUP, "--from-beginning"])
        .args(["--bootstrap", bootstrap])
        .env("SPOOL_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let seen = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            seen.values.lock().unwrap().insert(line);
            seen.lines.send_modify(|n| *n += 1);
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
    let seen = Seen {
        values: Arc::new(Mutex::new(BTreeSet::new())),
        lines: Arc::new(tokio::sync::watch::Sender::new(0)),
    };
    let mut members: Vec<Child> = (0..3).map(|_| member(&bootstraps, &seen)).collect();

    // The producer writes throughout; it retries through the coordinator's node dying.
    let producer = {
        let client = cluster.client().await.expect("client");
        tokio::spawn(async move {
            let producer = Producer::new(client, ProducerConfig::default());
            let mut acked = BTreeSet::new();
            // A steady pace, so that the kills land while records are being written.
            let mut pace = tokio::time::interval(Duration::from_millis(100));
            for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(100) {
                pace.tick().await;
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
            }
            acked
        })
    };

    let client = cluster.client().await.expect("client");
    for round in 0..4 {
        // Wait for progress, then kill a member without warning and start another.
        let before = seen.len();
        seen.wait_until(Duration::from_secs(60), "progress", |values| {
            values.len() >= (before + 200).min(RECORDS * 9 / 10)
        })
        .await;
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
    seen.wait_until(
        Duration::from_secs(90),
        "every acknowledged record to be consumed",
        |values| acked.is_subset(values),
    )
    .await;
    // Every record was printed, but a member that took over a killed one's partitions may
    // still be reading again what the dead one printed and never committed: the members
    // commit every second, so the group's lag comes down to nothing while they run...
    wait_for(
        Duration::from_secs(60),
        "the members to commit up to the end",
        || {
            let bootstraps = bootstraps.clone();
            async move { lag(&bootstraps).filter(|(left, _)| *left == 0).map(drop) }
        },
    )
    .await
    .expect("the group catches up");
    // ...and stays there once they stop cleanly (each commits what it printed and leaves).
    for child in &mut members {
        interrupt(child);
    }
    let (left, described) = lag(&bootstraps).expect("group describe");
    assert_eq!(left, 0, "{described}");
}

/// The group's lag summed over its partitions, and the description it came from; `None`
/// when the description could not be had.
fn lag(bootstraps: &str) -> Option<(i64, serde_json::Value)> {
    let out = Command::new(SPOOL)
        .args([
            "group",
            "describe",
            GROUP,
            "--output",
            "json",
            "--bootstrap",
            bootstraps,
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let lag: i64 = described["partitions"]
        .as_array()?
        .iter()
        .map(|p| p["lag"].as_i64().unwrap_or(i64::MAX))
        .sum();
    Some((lag, described))
}
