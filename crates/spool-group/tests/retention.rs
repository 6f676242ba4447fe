//! Retention: offsets of deleted topics go (only on the word of current metadata), and a
//! group goes once it has been empty and without a commit for the retention period, never
//! sooner; what a pass writes replays to the same state.

#![allow(clippy::unwrap_used)]

use spool_group::{
    Assignment, Coordinator, CoordinatorConfig, GroupRecord, HeartbeatRequest, OffsetCommit,
    Outcome, TopicInfo, TopicsSnapshot,
};

const RETENTION: i64 = 60_000;

fn topics(names: &[&str]) -> TopicsSnapshot {
    let mut t = TopicsSnapshot::new();
    for name in names {
        t.insert(
            *name,
            TopicInfo {
                partitions: 2,
                racks: Vec::new(),
            },
        );
    }
    t.set_version(names.len() as u64 + 1);
    t
}

fn commit(topic: &str, partition: u32, offset: i64) -> OffsetCommit {
    OffsetCommit {
        topic: topic.into(),
        partition,
        offset,
        leader_epoch: -1,
        metadata: String::new(),
    }
}

struct World {
    coordinator: Coordinator,
    log: Vec<GroupRecord>,
}

impl World {
    fn new() -> Self {
        let config = CoordinatorConfig {
            offsets_retention_ms: RETENTION,
            ..CoordinatorConfig::default()
        };
        Self {
            coordinator: Coordinator::new(config),
            log: Vec::new(),
        }
    }

    fn keep<T>(&mut self, outcome: Outcome<T>) -> T {
        self.log.extend(outcome.records);
        outcome.value
    }

    /// A replay of everything written rebuilds the same groups.
    fn check_replay(&self) {
        let mut replayed = Coordinator::new(*self.coordinator.config());
        for record in &self.log {
            replayed.apply(record);
        }
        let ids = |c: &Coordinator| c.groups().map(|g| g.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&replayed), ids(&self.coordinator));
        for group in self.coordinator.groups() {
            let other = replayed.group(&group.id).unwrap();
            assert_eq!(other.offsets, group.offsets, "{}", group.id);
        }
    }
}

#[test]
fn offsets_of_a_deleted_topic_go_only_when_the_metadata_is_current() {
    let mut w = World::new();
    let both = topics(&["orders", "refunds"]);
    let outcome = w
        .coordinator
        .reset_offsets(
            "g",
            &[commit("orders", 0, 5), commit("refunds", 1, 7)],
            0,
            &both,
        )
        .unwrap();
    w.keep(outcome);
    let only_orders = topics(&["orders"]);
    // Metadata not known to be complete: nothing goes.
    let outcome = w.coordinator.expire_offsets(1_000, None);
    let expired = w.keep(outcome);
    assert!(expired.deleted_topics.is_empty() && expired.groups.is_empty());
    assert_eq!(w.coordinator.group("g").unwrap().offsets.len(), 2);
    // Current metadata without `refunds`: its offsets go, the rest stay.
    let outcome = w.coordinator.expire_offsets(2_000, Some(&only_orders));
    let expired = w.keep(outcome);
    assert_eq!(
        expired.deleted_topics,
        vec![("g".to_string(), "refunds".to_string())]
    );
    let offsets = &w.coordinator.group("g").unwrap().offsets;
    assert_eq!(
        offsets.keys().collect::<Vec<_>>(),
        vec![&("orders".to_string(), 0)]
    );
    w.check_replay();
}

#[test]
fn an_empty_group_goes_after_the_retention_and_a_live_one_never() {
    let mut w = World::new();
    let t = topics(&["orders"]);
    // "live" has a member; "idle" has only offsets.
    let joined = w
        .coordinator
        .heartbeat(
            &HeartbeatRequest {
                group: "live".into(),
                member: "m".into(),
                epoch: 0,
                topics: Some(vec!["orders".into()]),
                rebalance_timeout_ms: Some(30_000),
                owned: Some(Assignment::new()),
                ..HeartbeatRequest::default()
            },
            0,
            &t,
        )
        .unwrap();
    w.keep(joined);
    for group in ["live", "idle"] {
        let epoch = if group == "live" { 1 } else { -1 };
        let member = if group == "live" { "m" } else { "" };
        let outcome = w
            .coordinator
            .commit_offsets(group, member, epoch, &[commit("orders", 0, 3)], 10_000, &t)
            .unwrap();
        w.keep(outcome);
    }
    // First seen empty at 20 s: retention counts from there, not from the commit.
    let outcome = w.coordinator.expire_offsets(20_000, Some(&t));
    assert!(w.keep(outcome).groups.is_empty());
    let outcome = w
        .coordinator
        .expire_offsets(20_000 + RETENTION - 1, Some(&t));
    assert!(w.keep(outcome).groups.is_empty());
    assert!(w.coordinator.group("idle").is_some());
    let outcome = w.coordinator.expire_offsets(20_000 + RETENTION, Some(&t));
    assert_eq!(w.keep(outcome).groups, vec!["idle".to_string()]);
    assert!(w.coordinator.group("idle").is_none());
    // The member's session is not this pass's business: "live" keeps its offsets.
    let outcome = w.coordinator.expire_offsets(10 * RETENTION, Some(&t));
    assert!(w.keep(outcome).groups.is_empty());
    assert_eq!(w.coordinator.group("live").unwrap().offsets.len(), 1);
    w.check_replay();
}

#[test]
fn a_commit_to_an_empty_group_restarts_its_retention_and_minus_one_keeps_it_forever() {
    let mut w = World::new();
    let t = topics(&["orders"]);
    let outcome = w
        .coordinator
        .commit_offsets("g", "", -1, &[commit("orders", 1, 1)], 0, &t)
        .unwrap();
    w.keep(outcome);
    let outcome = w.coordinator.expire_offsets(0, Some(&t));
    w.keep(outcome);
    // A commit just before the period ends: the group stays a whole period more.
    let outcome = w
        .coordinator
        .commit_offsets("g", "", -1, &[commit("orders", 1, 2)], RETENTION - 1, &t)
        .unwrap();
    w.keep(outcome);
    let outcome = w.coordinator.expire_offsets(RETENTION, Some(&t));
    assert!(w.keep(outcome).groups.is_empty());
    let outcome = w.coordinator.expire_offsets(2 * RETENTION - 1, Some(&t));
    assert_eq!(w.keep(outcome).groups, vec!["g".to_string()]);

    let mut forever = Coordinator::new(CoordinatorConfig {
        offsets_retention_ms: -1,
        ..CoordinatorConfig::default()
    });
    forever
        .commit_offsets("g", "", -1, &[commit("orders", 0, 1)], 0, &t)
        .unwrap();
    forever.expire_offsets(0, Some(&t));
    assert!(
        forever
            .expire_offsets(i64::MAX / 2, Some(&t))
            .value
            .groups
            .is_empty()
    );
    assert!(forever.group("g").is_some());
}
