//! Retention: offsets of topics seen and then gone (or replaced by a new topic of the
//! name) go, and a group goes once it has been empty and without a commit for the
//! retention period, never sooner; what a pass writes replays to the same state.

#![allow(clippy::unwrap_used)]

use spool_group::{
    Assignment, Coordinator, CoordinatorConfig, GroupRecord, HeartbeatRequest, OffsetCommit,
    Outcome, TopicIncarnations, TopicInfo, TopicsSnapshot,
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

fn versioned(names: &[(&str, &str)], version: u64) -> TopicsSnapshot {
    let mut t = TopicsSnapshot::new();
    for (name, id) in names {
        t.insert(
            *name,
            TopicInfo {
                partitions: 2,
                racks: Vec::new(),
            },
        );
        t.set_id(*name, *id);
    }
    t.set_version(version);
    t
}

#[test]
fn only_topics_seen_and_then_gone_or_replaced_count_as_gone() {
    let mut seen = TopicIncarnations::default();
    // The first look (perhaps of metadata still catching up) removes nothing.
    assert!(seen.gone(&versioned(&[("orders", "o1")], 5)).is_empty());
    // A version already looked at is not looked at again.
    assert!(seen.gone(&versioned(&[], 5)).is_empty());
    let gone = seen.gone(&versioned(&[("refunds", "r1")], 6));
    assert_eq!(
        gone.into_iter().collect::<Vec<_>>(),
        vec!["orders".to_string()]
    );
    // Deleted and created again between two looks: a new id.
    let gone = seen.gone(&versioned(&[("refunds", "r2")], 7));
    assert_eq!(
        gone.into_iter().collect::<Vec<_>>(),
        vec!["refunds".to_string()]
    );
    assert!(seen.gone(&versioned(&[("refunds", "r2")], 8)).is_empty());
}

#[test]
fn a_gone_topics_offsets_leave_every_group_and_nothing_else_does() {
    let mut w = World::new();
    let both = topics(&["orders", "refunds"]);
    for group in ["g", "h"] {
        let outcome = w
            .coordinator
            .reset_offsets(
                group,
                &[commit("orders", 0, 5), commit("refunds", 1, 7)],
                0,
                &both,
            )
            .unwrap();
        w.keep(outcome);
    }
    let gone = std::collections::BTreeSet::from(["refunds".to_string()]);
    let outcome = w.coordinator.drop_topic_offsets(&gone);
    let dropped = w.keep(outcome);
    assert_eq!(
        dropped,
        vec![
            ("g".to_string(), "refunds".to_string()),
            ("h".to_string(), "refunds".to_string())
        ]
    );
    for group in ["g", "h"] {
        let offsets = &w.coordinator.group(group).unwrap().offsets;
        assert_eq!(
            offsets.keys().collect::<Vec<_>>(),
            vec![&("orders".to_string(), 0)]
        );
    }
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
    // First seen empty at steady 20 s: retention counts from there, not from the commit.
    let outcome = w.coordinator.expire_groups(20_000, 20_000);
    assert!(w.keep(outcome).is_empty());
    let outcome = w
        .coordinator
        .expire_groups(20_000 + RETENTION - 1, 20_000 + RETENTION - 1);
    assert!(w.keep(outcome).is_empty());
    assert!(w.coordinator.group("idle").is_some());
    let outcome = w
        .coordinator
        .expire_groups(20_000 + RETENTION, 20_000 + RETENTION);
    assert_eq!(w.keep(outcome), vec!["idle".to_string()]);
    assert!(w.coordinator.group("idle").is_none());
    // A live group keeps its offsets however long.
    let outcome = w.coordinator.expire_groups(10 * RETENTION, 10 * RETENTION);
    assert!(w.keep(outcome).is_empty());
    assert_eq!(w.coordinator.group("live").unwrap().offsets.len(), 1);
    w.check_replay();
}

#[test]
fn a_wall_clock_jump_alone_expires_nothing_and_a_recent_commit_keeps_a_group() {
    let mut w = World::new();
    let t = topics(&["orders"]);
    let outcome = w
        .coordinator
        .commit_offsets("g", "", -1, &[commit("orders", 1, 1)], 0, &t)
        .unwrap();
    w.keep(outcome);
    let outcome = w.coordinator.expire_groups(0, 0);
    w.keep(outcome);
    // The wall clock jumps a year; the coordinator has seen the group empty for 1 ms.
    let outcome = w.coordinator.expire_groups(365 * 24 * 3_600_000, 1);
    assert!(w.keep(outcome).is_empty());
    // Empty long enough, but a commit just before the period ends keeps it a while more.
    let outcome = w
        .coordinator
        .commit_offsets("g", "", -1, &[commit("orders", 1, 2)], RETENTION - 1, &t)
        .unwrap();
    w.keep(outcome);
    let outcome = w.coordinator.expire_groups(RETENTION, RETENTION);
    assert!(w.keep(outcome).is_empty());
    let outcome = w
        .coordinator
        .expire_groups(2 * RETENTION - 1, 2 * RETENTION - 1);
    assert_eq!(w.keep(outcome), vec!["g".to_string()]);

    let mut forever = Coordinator::new(CoordinatorConfig {
        offsets_retention_ms: -1,
        ..CoordinatorConfig::default()
    });
    forever
        .commit_offsets("g", "", -1, &[commit("orders", 0, 1)], 0, &t)
        .unwrap();
    forever.expire_groups(0, 0);
    assert!(
        forever
            .expire_groups(i64::MAX / 2, i64::MAX / 2)
            .value
            .is_empty()
    );
    assert!(forever.group("g").is_some());
}
