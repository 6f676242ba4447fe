//! Consumer groups through the SDK on a three-node cluster: two groups on one topic each
//! see every record; members of one group share its partitions without ever reading one
//! at the same time; a member that leaves hands its partitions over at their committed
//! offsets; and the coordinator's node can die without losing a committed offset.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use spool_client::{
    Consumer, ConsumerConfig, GroupConfig, GroupConsumer, GroupEvent, OffsetReset, Producer,
    ProducerConfig, ProducerRecord,
};
use spool_testkit::{ClusterOptions, TestCluster};

const TOPIC: &str = "orders";

async fn produce(cluster: &TestCluster, from: usize, count: usize) {
    let client = cluster.client().await.expect("client");
    let producer = Producer::new(client, ProducerConfig::default());
    let mut deliveries = Vec::new();
    for i in from..from + count {
        let record = ProducerRecord::new(TOPIC, format!("v{i}").into_bytes())
            .key(format!("k{i}").into_bytes());
        deliveries.push(producer.send(record).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("delivered");
    }
}

async fn member(cluster: &TestCluster, group: &str) -> GroupConsumer {
    let client = cluster.client().await.expect("client");
    let config = ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut settings = GroupConfig::new(group, &[TOPIC]);
    settings.auto_commit = Some(Duration::from_millis(200));
    Consumer::new(client, config).subscribe(settings)
}

/// Reads until `want` distinct values are seen; returns them with how often each came.
async fn read_values(
    consumer: &mut GroupConsumer,
    seen: &mut BTreeMap<String, usize>,
    want: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < want {
        match tokio::time::timeout_at(deadline, consumer.next_event()).await {
            Ok(Ok(GroupEvent::Record(record))) => {
                let value =
                    String::from_utf8(record.value.expect("value").to_vec()).expect("utf-8");
                *seen.entry(value).or_default() += 1;
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("the consumer failed: {error}"),
            Err(_) => panic!("timed out with {} of {want} values", seen.len()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_each_see_every_record_and_members_share_without_overlap() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    cluster.create_topic(TOPIC, 4, 3).await.expect("topic");
    produce(&cluster, 0, 200).await;

    // Pub/sub: two groups, each reads everything.
    for group in ["payments", "email"] {
        let mut consumer = member(&cluster, group).await;
        let mut seen = BTreeMap::new();
        read_values(&mut consumer, &mut seen, 200).await;
        assert!(
            seen.values().all(|n| *n == 1),
            "{group} read a record twice"
        );
        consumer.close().await.expect("close");
    }

    // Two members of one group split the partitions; neither reads what the other holds.
    let mut a = member(&cluster, "inventory").await;
    let mut b = member(&cluster, "inventory").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut seen_a, mut seen_b) = (BTreeMap::new(), BTreeMap::new());
    loop {
        let owned_a: BTreeSet<_> = a.assignment().into_iter().collect();
        let owned_b: BTreeSet<_> = b.assignment().into_iter().collect();
        assert!(
            owned_a.is_disjoint(&owned_b),
            "a partition read by two members"
        );
        if owned_a.len() == 2 && owned_b.len() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never settled"
        );
        tokio::select! {
            event = a.next_event() => if let GroupEvent::Record(r) = event.expect("a") {
                *seen_a.entry(r.offset).or_insert(0) += 1;
            },
            event = b.next_event() => if let GroupEvent::Record(r) = event.expect("b") {
                *seen_b.entry(r.offset).or_insert(0) += 1;
            },
        }
    }
    // a leaves: b takes everything over, from the committed offsets.
    a.close().await.expect("close a");
    produce(&cluster, 200, 100).await;
    let mut after = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(200..300).all(|i| after.contains_key(&format!("v{i}"))) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b did not take over"
        );
        if let Ok(Ok(GroupEvent::Record(r))) =
            tokio::time::timeout_at(deadline, b.next_event()).await
        {
            let value = String::from_utf8(r.value.expect("value").to_vec()).expect("utf-8");
            *after.entry(value).or_insert(0) += 1;
        }
    }
    assert_eq!(b.assignment().len(), 4);
    b.close().await.expect("close b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_the_coordinators_death_and_a_restart_resumes_there() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    cluster.create_topic(TOPIC, 2, 3).await.expect("topic");
    produce(&cluster, 0, 50).await;
    let mut consumer = member(&cluster, "billing").await;
    let mut seen = BTreeMap::new();
    read_values(&mut consumer, &mut seen, 50).await;
    // In the background, as an application that keeps reading would.
    consumer
        .commit_async()
        .await
        .expect("the commit task")
        .expect("commit");
    let committed = consumer.committed().await.expect("committed");
    assert_eq!(committed.iter().map(|(_, _, o)| o).sum::<i64>(), 50);
    consumer.close().await.expect("close");

    // The coordinator's node dies; a new coordinator replays the group.
    let client = cluster.client().await.expect("client");
    let (coordinator, _) = client
        .find_coordinator("billing")
        .await
        .expect("coordinator");
    cluster.kill(coordinator).await.expect("kill");
    produce(&cluster, 50, 20).await;
    // A new member resumes at the committed offsets: it reads only the new records.
    let mut resumed = member(&cluster, "billing").await;
    let mut after = BTreeMap::new();
    read_values(&mut resumed, &mut after, 20).await;
    assert!(
        after
            .keys()
            .all(|v| v[1..].parse::<usize>().expect("number") >= 50),
        "records before the committed offsets came again: {after:?}"
    );
    resumed.close().await.expect("close");
}

/// A coordinator cut off from the other nodes must stop answering for its groups, even
/// heartbeats that change nothing: otherwise its members would carry on while the new
/// coordinator gives their partitions to others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_cut_off_from_its_quorum_stops_answering() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    cluster.create_topic(TOPIC, 2, 3).await.expect("topic");
    let client = cluster.client().await.expect("client");
    // The coordinator is found once its partition has a leader, and answers once it
    // has loaded the partition: neither needs retrying.
    let (coordinator, _) = client.find_coordinator("audit").await.expect("coordinator");
    let direct = cluster.node_client(coordinator).await.expect("client");
    let join = spool_client::Heartbeat {
        group: "audit".into(),
        member_id: "m".into(),
        member_epoch: 0,
        topics: Some(vec![TOPIC.into()]),
        rebalance_timeout_ms: Some(30_000),
        owned: Some(Default::default()),
        ..spool_client::Heartbeat::default()
    };
    let joined = direct.group_heartbeat(join.clone()).await.expect("joined");
    let stay = spool_client::Heartbeat {
        member_epoch: joined.member_epoch,
        topics: None,
        owned: Some(joined.assignment.clone()),
        ..join.clone()
    };
    direct
        .group_heartbeat(stay.clone())
        .await
        .expect("a heartbeat while connected");
    cluster.isolate(coordinator).await.expect("isolate");
    // Within a few seconds, the cut-off coordinator refuses rather than vouching for the
    // member.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match direct.group_heartbeat(stay.clone()).await {
            Err(_) => break,
            Ok(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "a coordinator without a quorum kept answering"
            ),
        }
    }
    cluster.heal_all().await.expect("heal");
}

/// A member whose application does not come back to give partitions up within its
/// rebalance timeout is removed, and the group gives everything to the others. When the
/// application finally asks for its next event, the member must deliver no record at all
/// (not even of the partitions it was allowed to keep): they may be someone else's now.
/// It says so with `Lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_too_slow_to_give_partitions_up_reads_nothing_once_they_move() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(1))
        .await
        .expect("cluster");
    cluster.create_topic(TOPIC, 4, 1).await.expect("topic");
    let slow_member = |client: spool_client::Client| {
        let config = ConsumerConfig {
            offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        };
        let mut settings = GroupConfig::new("slow", &[TOPIC]);
        settings.rebalance_timeout = Duration::from_secs(2);
        settings.auto_commit = None;
        Consumer::new(client, config).subscribe(settings)
    };
    let mut a = slow_member(cluster.client().await.expect("client"));
    // Plenty to read: a reads a little of every partition, and its consumer fetches
    // ahead, so records of every partition wait in its buffers.
    produce(&cluster, 0, 400).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut read_from = BTreeSet::new();
    while read_from.len() < 4 {
        match tokio::time::timeout_at(deadline, a.next_event()).await {
            Ok(Ok(GroupEvent::Record(record))) => {
                read_from.insert(record.partition);
            }
            Ok(Ok(GroupEvent::Assigned(_))) => {}
            other => panic!("a never read every partition: {other:?}"),
        }
    }
    // b joins; a is asked to give half up but its application is busy elsewhere.
    let mut b = slow_member(cluster.client().await.expect("client"));
    let mut b_owned = BTreeSet::new();
    while b_owned.len() < 4 {
        match tokio::time::timeout_at(deadline, b.next_event()).await {
            Ok(Ok(GroupEvent::Assigned(partitions))) => b_owned.extend(partitions),
            Ok(Ok(GroupEvent::Revoked(p) | GroupEvent::Lost(p))) => {
                panic!("b lost {p:?}")
            }
            Ok(Ok(GroupEvent::Record(_))) => {}
            other => panic!("b never got a's partitions: {other:?}"),
        }
    }
    // a comes back: whatever it says first, it delivers no record before `Lost`.
    loop {
        match tokio::time::timeout_at(deadline, a.next_event()).await {
            Ok(Ok(GroupEvent::Lost(_))) => break,
            Ok(Ok(GroupEvent::Record(record))) => panic!(
                "a delivered partition {} offset {} after it was removed",
                record.partition, record.offset
            ),
            Ok(Ok(_)) => {}
            other => panic!("a never learned it was out: {other:?}"),
        }
    }
    drop(a);
    b.close().await.expect("close");
}
