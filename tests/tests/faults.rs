//! Faults done to the containers of a three-node cluster while a producer writes with
//! acks=all: afterwards every acknowledged record must be on every replica at the offset
//! it was acknowledged with. The time from each fault to the first write acknowledged
//! again is printed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod common;

use common::*;
use spool_client::{Acks, Client, NewTopic, OffsetToCommit, PartitionBatches, PartitionSet};
use spool_log::batch::{BatchBuilder, BatchOptions};
use spool_system_tests::{ComposeCluster, InsideReport, InsideWriter};
use spool_testkit::load::{check_exactly_once, records_of};
use spool_testkit::{Replicas, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_partition_and_controller_leaders_loses_no_acknowledged_write() {
    let Some((cluster, _, load)) =
        loaded("killing_partition_and_controller_leaders", "kills").await
    else {
        return;
    };
    let mut windows = Vec::new();
    for round in 0..4u32 {
        // Three partition leaders (timed to that partition's next acknowledged write), then
        // the controller's (timed to every partition's).
        let (victim, timed) = if round == 3 {
            let all: Vec<u32> = (0..PARTITIONS).collect();
            (
                cluster.controller_leader(WITHIN).await.expect("controller"),
                all,
            )
        } else {
            let leader = cluster
                .leader("kills", round, WITHIN)
                .await
                .expect("leader");
            (leader, vec![round])
        };
        cluster.kill(victim).await.expect("kill");
        // From when the kill returned: the node is dead by then.
        let killed_at = Instant::now();
        next_acks(&load, &timed).await;
        windows.push(killed_at.elapsed());
        cluster.start(victim).await.expect("start");
        cluster.wait_serving(WITHIN).await.expect("serving again");
    }
    eprintln!("docker kill of a leader -> next acks=all write acknowledged: {windows:?}");
    check(&cluster, "kills", load).await;
}

/// Each node in turn stopped cleanly (`docker stop`) and started again, as an upgrade
/// does: a stopping node hands its leaderships over first, so that no partition waits
/// for an election once it is gone, and it stops well within its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_no_acknowledged_write() {
    let Some((cluster, _, load)) = loaded("a_rolling_restart", "rolling").await else {
        return;
    };
    let all: Vec<u32> = (0..PARTITIONS).collect();
    let mut stops = Vec::new();
    let mut windows = Vec::new();
    for node in cluster.running() {
        let began = Instant::now();
        cluster.stop(node, STOP_GRACE).await.expect("stop");
        let took = began.elapsed();
        // Every partition acknowledges again with the node gone.
        next_acks(&load, &all).await;
        windows.push(began.elapsed());
        stops.push(took);
        assert!(
            took < STOP_GRACE,
            "node {node} took {took:?} to stop: it was killed at the end of its grace"
        );
        cluster.start(node).await.expect("start");
        cluster.wait_serving(WITHIN).await.expect("serving again");
    }
    eprintln!(
        "rolling restart: docker stop took {stops:?}; from each stop to every partition acknowledging with the node gone: {windows:?}"
    );
    check(&cluster, "rolling", load).await;
}

/// The controller's leader cut off the network under load: the other two elect a new
/// controller, which creates a topic and keeps every partition writable; the cut node,
/// back, has thrown away whatever it wrote alone (it took the others' leases for lapsed
/// and would have fenced them) and agrees with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_leader_cut_off_decides_nothing_and_the_majority_goes_on() {
    let Some((cluster, _, load)) = loaded("a_controller_leader_cut_off", "ruled").await else {
        return;
    };
    let victim = cluster.controller_leader(WITHIN).await.expect("controller");
    cluster.disconnect(victim).await.expect("cut off");
    let cut_at = Instant::now();
    // A decision only a controller leader with a majority can take, asked of a node of
    // the majority (a client's admin calls go to the node it first connected to).
    let other = cluster
        .running()
        .into_iter()
        .next()
        .expect("a node of the majority");
    let client = cluster.node_client(other).await.expect("client");
    let last_error = parking_lot::Mutex::new(String::new());
    let decided = wait_for(WITHIN, "a topic created by the majority", || async {
        let topic = NewTopic {
            name: "decided".into(),
            partitions: 1,
            replication_factor: 2,
            configs: BTreeMap::new(),
            assignments: Vec::new(),
        };
        match client.create_topic(topic).await {
            Ok(()) => Some(()),
            Err(error) if error.to_string().contains("already exists") => Some(()),
            Err(error) => {
                *last_error.lock() = error.to_string();
                None
            }
        }
    })
    .await;
    if let Err(error) = decided {
        panic!("the majority decides: {error}; last: {}", last_error.lock());
    }
    let decided_after = cut_at.elapsed();
    let all: Vec<u32> = (0..PARTITIONS).collect();
    next_acks(&load, &all).await;
    let new_controller = cluster.controller_leader(WITHIN).await.expect("controller");
    assert_ne!(new_controller, victim);

    cluster.connect(victim).await.expect("reconnect");
    // Every node, the cut one included, names a controller and sees all three brokers
    // unfenced: the fencing it may have written alone is gone.
    cluster.wait_serving(WITHIN).await.expect("serving again");
    let back = cluster.node_client(victim).await.expect("client");
    wait_for(WITHIN, "the cut node to learn the new topic", || async {
        let metadata = back.metadata(&["decided".to_string()]).await.ok()?;
        metadata
            .topics
            .iter()
            .any(|t| t.name == "decided" && t.error.is_none())
            .then_some(())
    })
    .await
    .expect("the cut node follows the majority's metadata");
    eprintln!(
        "controller leader cut off: a topic created by the other two {decided_after:?} later"
    );
    check(&cluster, "ruled", load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_down_and_up_keeps_topics_records_and_committed_offsets() {
    let Some((cluster, client, load)) = loaded("compose_down_and_up", "kept").await else {
        return;
    };
    let report = load.finish().await;
    // A group's progress, committed through its coordinator (reached at the address the
    // host listener gives for it).
    let (_, address) = client
        .find_coordinator("keepers")
        .await
        .expect("coordinator");
    let coordinator = Client::connect(&[address], Duration::from_secs(5))
        .await
        .expect("the coordinator's host address works");
    let offsets: Vec<OffsetToCommit> = (0..PARTITIONS)
        .map(|p| OffsetToCommit {
            topic: "kept".into(),
            partition: p,
            offset: 10 + i64::from(p),
            leader_epoch: -1,
            metadata: format!("p{p}"),
        })
        .collect();
    coordinator
        .commit_offsets("keepers", "", -1, offsets)
        .await
        .expect("commit");

    cluster.down_and_up().await.expect("down and up");

    let client = cluster.client().await.expect("client");
    let replicas = vec![cluster.running(); PARTITIONS as usize];
    check_exactly_once(&cluster, "kept", &replicas, &report, WITHIN)
        .await
        .expect("every acknowledged record on every replica, exactly once");
    let committed = wait_for(WITHIN, "the group's offsets", || async {
        let (_, address) = client.find_coordinator("keepers").await.ok()?;
        let coordinator = Client::connect(&[address], Duration::from_secs(5))
            .await
            .ok()?;
        coordinator
            .fetch_committed("keepers", &PartitionSet::new())
            .await
            .ok()
    })
    .await
    .expect("committed offsets");
    let found: BTreeMap<u32, (i64, String)> = committed
        .into_iter()
        .map(|c| (c.partition, (c.offset, c.metadata)))
        .collect();
    let expected: BTreeMap<u32, (i64, String)> = (0..PARTITIONS)
        .map(|p| (p, (10 + i64::from(p), format!("p{p}"))))
        .collect();
    assert_eq!(found, expected);
    eprintln!(
        "{} acknowledged records and the group's offsets kept across compose down and up",
        report.acked.len()
    );
}

/// A fault done to one node and undone: what the fault tests have in common.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `docker pause` (SIGSTOP through the freezer) for longer than an election takes:
    /// a leader that wakes up must not acknowledge anything of its old term.
    Pause,
    /// `docker network disconnect`: the leader is cut off from the others (and from the
    /// host); the majority elects another, the cut node truncates its tail on return.
    Disconnect,
}

/// Under acks=all load, does `fault` to the leader of each partition in turn, waits for
/// that partition to acknowledge writes again elsewhere, undoes it, and checks every
/// acknowledged record on every replica.
async fn survive(name: &str, fault: Fault) {
    let Some((cluster, _, load)) = loaded(name, name).await else {
        return;
    };
    let mut windows = Vec::new();
    let mut zombies = Vec::new();
    let mut cut_off = Vec::new();
    for partition in 0..PARTITIONS {
        match fault {
            Fault::Pause => {
                let victim = cluster
                    .leader(name, partition, WITHIN)
                    .await
                    .expect("leader");
                cluster.pause(victim).await.expect("pause");
                let struck_at = Instant::now();
                next_acks(&load, &[partition]).await;
                windows.push(struck_at.elapsed());
                let value = format!("zombie-{partition}");
                write_to_a_waking_zombie(&cluster, victim, name, partition, &value).await;
                zombies.push((partition, value));
            }
            Fault::Disconnect => {
                let (window, cut) =
                    cut_off_with_a_writer_inside(&cluster, &load, name, partition).await;
                windows.push(window);
                cut_off.push(cut);
            }
        }
        cluster.wait_serving(WITHIN).await.expect("serving again");
    }
    eprintln!("{fault:?} of a leader -> next acks=all write acknowledged: {windows:?}");
    check(&cluster, name, load).await;
    // What the zombies were sent is nowhere: they wrote it in a term that had ended.
    for (partition, value) in zombies {
        for node in cluster.running() {
            let batches = spool_testkit::committed_batches(&cluster, node, name, partition)
                .await
                .expect("a read of the replica");
            let records = records_of(name, partition, &batches);
            assert!(
                !records
                    .iter()
                    .any(|r| r.value.as_deref() == Some(value.as_bytes())),
                "node {node} holds {value:?}, sent to a paused leader as it woke"
            );
            assert!(
                !log_holds(&cluster, node, name, partition, &value).await,
                "{value:?} is still in node {node}'s log"
            );
        }
    }
    for cut in cut_off {
        cut.check(&cluster, name).await;
    }
}

/// Cuts the partition's leader off the network while a writer inside its container
/// writes to it, waits for the partition to take writes elsewhere, and reconnects it;
/// the time the partition took no writes, and what the cut-off leader held and was told.
async fn cut_off_with_a_writer_inside(
    cluster: &ComposeCluster,
    load: &spool_testkit::load::Load,
    topic: &str,
    partition: u32,
) -> (Duration, CutOff) {
    let mut attempts = 0;
    let (victim, writer) = loop {
        let victim = cluster
            .leader(topic, partition, WITHIN)
            .await
            .expect("leader");
        let writer = InsideWriter::start(
            cluster,
            victim,
            topic,
            partition,
            &format!("inside-{partition}"),
        )
        .await
        .expect("a writer in the container");
        wait_for(WITHIN, "the inside writer's first acknowledgements", || {
            let flowing = writer.acknowledged() >= 50;
            async move { flowing.then_some(()) }
        })
        .await
        .expect("the inside writer writes");
        // Still the leader: the writer writes to it over loopback, not to another node.
        if cluster.leader(topic, partition, WITHIN).await.ok() == Some(victim) {
            break (victim, writer);
        }
        attempts += 1;
        assert!(
            attempts < 3,
            "the leader of partition {partition} keeps moving"
        );
        writer.finish().await.expect("the inside writer stops");
    };
    cluster.disconnect(victim).await.expect("disconnect");
    let struck_at = Instant::now();
    next_acks(load, &[partition]).await;
    let window = struck_at.elapsed();
    let report = writer.finish().await.expect("the inside writer stops");
    let held = log_terms(cluster, victim, topic, partition).await;
    cluster.connect(victim).await.expect("reconnect");
    assert!(
        report.acked.len() < report.sent as usize,
        "the writer inside cut-off node {victim} had all {} records acknowledged",
        report.sent
    );
    let cut = CutOff {
        partition,
        victim,
        held,
        report,
    };
    (window, cut)
}

/// A leader cut off the network while a writer inside its container wrote to it.
struct CutOff {
    partition: u32,
    victim: u64,
    /// The term of each entry of its log as it was while cut off, by index.
    held: BTreeMap<u64, u64>,
    report: InsideReport,
}

impl CutOff {
    /// Every record the cut-off leader acknowledged is on every replica at its offset
    /// (so it acknowledged nothing it could not commit), and its log now matches the
    /// others' entry for entry: what it held past what the majority kept, it cut.
    async fn check(&self, cluster: &ComposeCluster, topic: &str) {
        let (partition, victim) = (self.partition, self.victim);
        let prefix = format!("inside-{partition}-");
        for node in cluster.running() {
            let batches = spool_testkit::committed_batches(cluster, node, topic, partition)
                .await
                .expect("a read of the replica");
            let stored: BTreeMap<i64, String> = records_of(topic, partition, &batches)
                .into_iter()
                .filter_map(|r| {
                    let value = String::from_utf8(r.value?.to_vec()).ok()?;
                    value.starts_with(&prefix).then_some((r.offset, value))
                })
                .collect();
            for (n, offset) in self.report.acked.iter().enumerate() {
                assert_eq!(
                    stored.get(offset).map(String::as_str),
                    Some(format!("{prefix}{n}").as_str()),
                    "node {node}: record {n} the cut-off leader {victim} acknowledged at offset {offset} is not there"
                );
            }
        }
        let now = log_terms(cluster, victim, topic, partition).await;
        for node in cluster.running().into_iter().filter(|n| *n != victim) {
            let other = log_terms(cluster, node, topic, partition).await;
            let differing = now
                .iter()
                .filter(|(index, term)| other.get(index).is_some_and(|t| t != *term))
                .count();
            assert_eq!(
                differing, 0,
                "partition {partition}: node {victim}'s log and node {node}'s disagree on {differing} entries"
            );
        }
        let replaced = self
            .held
            .iter()
            .filter(|(index, term)| now.get(index).is_some_and(|t| t != *term))
            .count();
        eprintln!(
            "partition {partition}: cut-off leader {victim} was sent {} records from inside and acknowledged {} (all found on every replica); on return it cut {replaced} entries of its log and agrees with the others; it said: {}",
            self.report.sent,
            self.report.acked.len(),
            self.report.said.trim()
        );
    }
}

/// The term of each entry in the node's log of the partition, by index.
async fn log_terms(
    cluster: &ComposeCluster,
    node: u64,
    topic: &str,
    partition: u32,
) -> BTreeMap<u64, u64> {
    let dump = log_dump(cluster, node, topic, partition, &["--output", "json"]).await;
    let terms: BTreeMap<u64, u64> = dump
        .lines()
        .map(|line| {
            let frame: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let field = |name: &str| {
                frame[name]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no {name} in {line}"))
            };
            (field("index"), field("term"))
        })
        .collect();
    assert!(
        !terms.is_empty(),
        "node {node} has no log of {topic}-{partition}"
    );
    terms
}

/// Whether `value` is in any record of the node's log of the partition, committed or not.
async fn log_holds(
    cluster: &ComposeCluster,
    node: u64,
    topic: &str,
    partition: u32,
    value: &str,
) -> bool {
    let dump = log_dump(cluster, node, topic, partition, &["--records", "--values"]).await;
    assert!(
        dump.lines().any(|line| line.starts_with("| position")),
        "node {node}'s log of {topic}-{partition} shows no entry"
    );
    dump.contains(&format!("value {value:?}"))
}

/// `spool log dump` of the node's log of the partition, run in its container.
async fn log_dump(
    cluster: &ComposeCluster,
    node: u64,
    topic: &str,
    partition: u32,
    flags: &[&str],
) -> String {
    let dir = format!("/var/lib/spool/{topic}-{partition}");
    let mut args = vec!["log", "dump", dir.as_str()];
    args.extend(flags);
    let dump = cluster
        .exec_spool(node, &args, b"")
        .await
        .expect("spool log dump run in the container");
    // Exit 1 says a frame did not check out: the last one, being written as it was read.
    assert!(
        matches!(dump.status.code(), Some(0 | 1)),
        "spool log dump {dir} on node {node} failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    String::from_utf8_lossy(&dump.stdout).into_owned()
}

/// Sends an acks=all write to a paused old leader, connected while it is paused so that
/// the request waits in its socket, then wakes it: it must not acknowledge the write,
/// whether it reads the request before or after it hears of the new term.
async fn write_to_a_waking_zombie(
    cluster: &ComposeCluster,
    victim: u64,
    topic: &str,
    partition: u32,
    value: &str,
) {
    let connected = std::sync::atomic::AtomicBool::new(false);
    let write = async {
        let client = cluster.node_client(victim).await.expect("a connection");
        connected.store(true, std::sync::atomic::Ordering::Release);
        client
            .produce(
                Acks::All,
                Duration::from_secs(10),
                vec![PartitionBatches {
                    topic: topic.to_string(),
                    partition,
                    batches: vec![one_record(value)],
                    leader_epoch: None,
                }],
            )
            .await
    };
    let wake = async {
        // The kernel takes the connection for the frozen process; if the handshake
        // waits for the process, the request goes right after it wakes instead.
        let queued = wait_for(Duration::from_secs(5), "a connection to the zombie", || {
            let connected = connected.load(std::sync::atomic::Ordering::Acquire);
            async move { connected.then_some(()) }
        })
        .await
        .is_ok();
        cluster.unpause(victim).await.expect("unpause");
        queued
    };
    let (answer, queued) = tokio::join!(write, wake);
    let acknowledged = matches!(
        &answer,
        Ok(outcome) if outcome.partitions.first().is_some_and(|p| p.is_ok())
    );
    assert!(
        !acknowledged,
        "a leader paused past an election acknowledged a write as it woke: {answer:?}"
    );
    // A refusal naming the leader names it at the address this client reaches.
    if let Ok(outcome) = &answer
        && let Some(Err(refusal)) = outcome.partitions.first()
        && let Some((_, address)) = &refusal.leader
    {
        assert!(
            refusal.message.contains(address.as_str()),
            "the message and the hint disagree: {refusal:?}"
        );
    }
    eprintln!(
        "zombie node {victim} (request sent {} it woke) answered: {:?}",
        if queued { "before" } else { "as" },
        answer.map(|o| o.partitions).map_err(|e| e.to_string())
    );
}

fn one_record(value: &str) -> bytes::Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    builder.append(1_700_000_000_000, None, Some(value.as_bytes()), &[]);
    builder.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_that_wakes_up_loses_no_acknowledged_write() {
    survive("paused", Fault::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_the_network_loses_no_acknowledged_write() {
    survive("cutoff", Fault::Disconnect).await;
}
