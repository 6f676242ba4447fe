//! The producer through a leader that stops answering without closing its connection (a
//! paused process, a cut network): its partitions get new leaders within about a second,
//! and the records waiting on it must go there instead of waiting out a request timeout
//! or the seconds it takes to find the connection dead.

use std::time::Duration;

use spool_client::{Acks, Producer, ProducerConfig, ProducerRecord};
use spool_testkit::load::records_of;
use spool_testkit::{ClusterOptions, TestCluster, wait_for};

const TOPIC: &str = "moved";
const WITHIN: Duration = Duration::from_secs(15);
/// Far longer than an election: a record that waits this long waited on the old leader.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_waiting_on_a_leader_cut_off_from_its_quorum_go_to_the_new_leader() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    cluster.create_topic(TOPIC, 1, 3).await.expect("topic");
    let old = cluster.leader(TOPIC, 0, WITHIN).await.expect("leader");
    let producer = Producer::new(
        cluster.client().await.expect("client"),
        ProducerConfig {
            acks: Acks::All,
            request_timeout: REQUEST_TIMEOUT,
            delivery_timeout: 2 * REQUEST_TIMEOUT,
            ..ProducerConfig::default()
        },
    );
    let send = |value: &'static str| {
        let producer = &producer;
        async move {
            producer
                .send(ProducerRecord::new(TOPIC, value).partition(0))
                .await
                .expect("taken")
        }
    };
    let first = send("before").await.wait().await.expect("acknowledged");

    // The leader keeps serving clients but reaches no other replica: it takes the next
    // record and can never commit it.
    cluster.isolate(old).await.expect("isolate");
    let waiting = send("during").await;
    let acked = tokio::time::timeout(REQUEST_TIMEOUT / 4, waiting.wait())
        .await
        .expect("acknowledged long before the request to the old leader times out")
        .expect("acknowledged");
    assert!(acked.offset > first.offset);
    // Acknowledged by a majority without the old leader: one of the others leads.
    let others: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|n| *n != old)
        .collect();
    wait_for(WITHIN, "a new leader", || async {
        for node in &others {
            if cluster.leader_seen_by(*node, TOPIC, 0).await.ok()? == Some(*node) {
                return Some(());
            }
        }
        None
    })
    .await
    .expect("the majority has a leader");

    // Once healed, the old leader drops the copy it could not commit: every replica
    // holds each record once, the acknowledged one at its offset.
    cluster.heal_all().await.expect("heal");
    let replicas = cluster.node_ids();
    let batches = cluster
        .replicas_agree(&replicas, TOPIC, 0, WITHIN)
        .await
        .expect("the replicas agree");
    let records = records_of(TOPIC, 0, &batches);
    let values: Vec<(i64, &[u8])> = records
        .iter()
        .map(|r| (r.offset, r.value.as_deref().unwrap_or_default()))
        .collect();
    assert_eq!(
        values,
        vec![
            (first.offset, &b"before"[..]),
            (acked.offset, &b"during"[..])
        ]
    );
    producer.close().await;
}

/// The idempotent producer through leader kills: while two senders write with acks=all,
/// each partition's leader is killed in turn and restarted. Every record is stored exactly
/// once, at the offset it was acknowledged with, in send order; a retry whose first
/// attempt the killed leader had committed is answered from the log, not stored again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_under_load_store_every_record_exactly_once() {
    const KILLED: &str = "killed";
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    let replicas = cluster.create_topic(KILLED, 2, 3).await.expect("topic");
    for p in 0..2 {
        cluster.leader(KILLED, p, WITHIN).await.expect("leader");
    }
    let load = spool_testkit::load::Load::start(
        cluster.client().await.expect("client"),
        KILLED,
        2,
        Acks::All,
        2,
        64,
    );
    for round in 0..4u32 {
        let partition = round % 2;
        let before = load.acked_count();
        wait_for(WITHIN, "writes before the kill", || async {
            (load.acked_count() > before + 300).then_some(())
        })
        .await
        .expect("the load makes progress");
        let leader = cluster
            .leader(KILLED, partition, WITHIN)
            .await
            .expect("leader");
        cluster.kill(leader).await.expect("kill");
        let before = load.acked_count();
        if let Err(error) = wait_for(WITHIN, "writes without the killed leader", || async {
            (load.acked_count() > before + 300).then_some(())
        })
        .await
        {
            panic!(
                "round {round}, node {leader} killed: {error}; acknowledged {} then {} (partition 0: {}, 1: {}); failures {:?}",
                before,
                load.acked_count(),
                load.acked_on(0),
                load.acked_on(1),
                load.failures_so_far()
            );
        }
        cluster.restart(leader).await.expect("restart");
    }
    let report = load.finish().await;
    assert_eq!(
        report.failed, 0,
        "no record may fail (a gap): {:?}",
        report.failures
    );
    let stored = spool_testkit::load::check_exactly_once(
        &cluster,
        KILLED,
        &replicas,
        &report,
        Duration::from_secs(60),
    )
    .await
    .expect("exactly once");
    assert!(stored > 2400, "{stored} records stored");
}
