//! Consumer groups on one broker: the coordinator found and loaded, members joining and
//! sharing partitions without overlap, commits fenced by epoch, and the state surviving a
//! restart (replayed from `__consumer_offsets`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::options;
use spool_broker::{Broker, BrokerError, OFFSETS_TOPIC};
use spool_group::{Assignment, HeartbeatRequest, HeartbeatResponse, OffsetCommit};
use spool_types::ErrorCode;
use tokio::time::Instant;

async fn open(dir: &std::path::Path) -> Arc<Broker> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Broker::open(options(dir)).await {
            Ok(broker) => return broker,
            Err(BrokerError::DirectoryInUse { .. }) if Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("open failed: {error}"),
        }
    }
}

fn join(member: &str) -> HeartbeatRequest {
    HeartbeatRequest {
        group: "payments".into(),
        member: member.into(),
        epoch: 0,
        topics: Some(vec!["orders".into()]),
        rebalance_timeout_ms: Some(30_000),
        owned: Some(Assignment::new()),
        ..HeartbeatRequest::default()
    }
}

fn next(member: &str, last: &HeartbeatResponse) -> HeartbeatRequest {
    HeartbeatRequest {
        epoch: last.epoch,
        topics: None,
        owned: Some(last.assignment.clone()),
        ..join(member)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_commit_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_topic("orders", 4, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let (node, _) = broker.find_coordinator("payments").await.unwrap();
    assert_eq!(node, 1);
    assert!(
        broker
            .list_topics(true)
            .iter()
            .any(|t| t.name == OFFSETS_TOPIC && t.internal)
    );

    let a = broker
        .group_heartbeat(join("a"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(a.assignment.len(), 4, "the only member takes everything");
    // b joins: it gets nothing until a has given its share up.
    let b = broker
        .group_heartbeat(join("b"), Duration::ZERO)
        .await
        .unwrap();
    assert!(b.assignment.is_empty());
    let a2 = broker
        .group_heartbeat(next("a", &a), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(a2.assignment.len(), 2, "a is asked to give two up");
    assert_eq!(a2.epoch, a.epoch, "its epoch waits for the revocation");
    // a heartbeats owning only what it kept: it moves on, and b (waiting in a long poll)
    // is answered as soon as the partitions are free.
    let waiting_b = {
        let broker = Arc::clone(&broker);
        let request = next("b", &b);
        tokio::spawn(async move {
            broker
                .group_heartbeat(request, Duration::from_secs(5))
                .await
        })
    };
    let a3 = broker
        .group_heartbeat(next("a", &a2), Duration::ZERO)
        .await
        .unwrap();
    assert!(a3.epoch > a.epoch);
    let started = Instant::now();
    let b2 = waiting_b.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the long poll answered on the change"
    );
    assert_eq!(b2.assignment.len(), 2);
    assert!(!b2.assignment.overlaps(&a3.assignment));

    // Commits: fenced by epoch, all or nothing.
    let commit = |partition, offset| OffsetCommit {
        topic: "orders".into(),
        partition,
        offset,
        leader_epoch: -1,
        metadata: "m".into(),
    };
    let mine: Vec<OffsetCommit> = a3
        .assignment
        .iter()
        .map(|(_, p)| commit(p, 10 + i64::from(p)))
        .collect();
    broker
        .commit_offsets("payments", "a", a3.epoch, mine)
        .await
        .unwrap();
    let stale = broker
        .commit_offsets("payments", "a", a3.epoch - 1, vec![commit(0, 99)])
        .await
        .unwrap_err();
    assert_eq!(stale.code(), ErrorCode::StaleMemberEpoch);
    let zombie = broker
        .commit_offsets("payments", "nobody", 1, vec![commit(0, 99)])
        .await
        .unwrap_err();
    assert_eq!(zombie.code(), ErrorCode::UnknownMemberId);
    let fetched = broker.fetch_offsets("payments", None).await.unwrap();
    assert_eq!(fetched.len(), 2);
    assert!(
        fetched
            .iter()
            .all(|e| e.offset == 10 + i64::from(e.partition))
    );

    // Internal topics are not for clients to write or delete.
    assert_eq!(
        broker.delete_topic(OFFSETS_TOPIC).await.unwrap_err().code(),
        ErrorCode::InvalidTopic
    );

    // A restart: the new coordinator replays the partition and knows it all.
    let described = broker.describe_group("payments").await.unwrap();
    broker.shutdown().await;
    drop(broker);
    let broker = open(dir.path()).await;
    let again = broker.describe_group("payments").await.unwrap();
    assert_eq!(again.epoch, described.epoch);
    assert_eq!(again.members, described.members);
    assert_eq!(again.offsets, described.offsets);
    // Members carry on at their epochs.
    let a4 = broker
        .group_heartbeat(next("a", &a3), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(a4.epoch, a3.epoch);
    assert_eq!(a4.assignment, a3.assignment);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_heartbeating_is_removed_and_its_partitions_move() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.groups.coordinator.session_timeout_ms = 1_000;
    opts.groups.coordinator.heartbeat_interval_ms = 200;
    let broker = Broker::open(opts).await.unwrap();
    broker
        .create_topic("orders", 2, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    broker.find_coordinator("payments").await.unwrap();
    let a = broker
        .group_heartbeat(join("a"), Duration::ZERO)
        .await
        .unwrap();
    let mut b = broker
        .group_heartbeat(join("b"), Duration::ZERO)
        .await
        .unwrap();
    // a goes silent; b keeps heartbeating (each a long poll) until it owns everything.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.assignment.len() < 2 {
        assert!(Instant::now() < deadline, "b never got a's partitions");
        b = broker
            .group_heartbeat(next("b", &b), Duration::from_millis(200))
            .await
            .unwrap();
    }
    let gone = broker
        .group_heartbeat(next("a", &a), Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(gone.code(), ErrorCode::UnknownMemberId);
    broker.shutdown().await;
}

/// A settled member that says nothing new (its owned partitions unset: unchanged) is
/// held in the long poll until something changes, not answered at once: otherwise every
/// member would heartbeat back to back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_member_waits_in_its_long_poll() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.groups.coordinator.heartbeat_interval_ms = 400;
    let broker = Broker::open(opts).await.unwrap();
    broker
        .create_topic("orders", 2, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    broker.find_coordinator("payments").await.unwrap();
    let a = broker
        .group_heartbeat(join("a"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(a.assignment.len(), 2);
    let steady = HeartbeatRequest {
        owned: None,
        ..next("a", &a)
    };
    let started = Instant::now();
    let answer = broker
        .group_heartbeat(steady, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer.epoch, a.epoch);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered at once although nothing changed"
    );
    broker.shutdown().await;
}

/// Retention: a deleted topic's offsets leave every group within seconds, and a group left
/// without members (and without commits) for the retention period is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_deleted_topics_and_long_empty_groups_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.groups.coordinator.offsets_retention_ms = 2_000;
    let broker = Broker::open(opts).await.unwrap();
    for topic in ["orders", "refunds"] {
        broker
            .create_topic(topic, 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
    }
    broker.find_coordinator("payments").await.unwrap();
    // "payments" has a live member holding both topics; "audit" only offsets.
    let member = HeartbeatRequest {
        topics: Some(vec!["orders".into(), "refunds".into()]),
        ..join("a")
    };
    let a = broker
        .group_heartbeat(member, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(a.assignment.len(), 2);
    let commit = |topic: &str| OffsetCommit {
        topic: topic.into(),
        partition: 0,
        offset: 3,
        leader_epoch: -1,
        metadata: String::new(),
    };
    broker
        .commit_offsets(
            "payments",
            "a",
            a.epoch,
            vec![commit("orders"), commit("refunds")],
        )
        .await
        .unwrap();
    broker
        .reset_offsets("audit", vec![commit("orders")])
        .await
        .unwrap();
    broker.delete_topic("refunds").await.unwrap();
    // Retention runs on its own cadence: look again after each of the coordinator's timed
    // passes.
    let mut passes = broker.coordinator_passes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        passes.borrow_and_update();
        let payments = broker.describe_group("payments").await.unwrap();
        let topics: Vec<&str> = payments.offsets.iter().map(|o| o.topic.as_str()).collect();
        let audit = broker.describe_group("audit").await;
        let audit_gone = matches!(&audit, Err(e) if e.code() == ErrorCode::GroupIdNotFound);
        if topics == ["orders"] && audit_gone {
            // The live group keeps its group and its other offsets.
            assert_eq!(payments.members.len(), 1);
            break;
        }
        let passed = tokio::time::timeout_at(deadline, passes.changed()).await;
        assert!(
            matches!(passed, Ok(Ok(()))),
            "payments offsets {topics:?}, audit {audit:?}"
        );
    }
    broker.shutdown().await;
}
