//! A model test of the group state machine: simulated consumers join, heartbeat, leave,
//! crash, come back as static members and commit, while time passes and a topic grows.
//! After every step: no partition has two owners, neither on the coordinator nor among the
//! consumers themselves; replaying every record written so far rebuilds the same state;
//! every record survives its encoding. At the end, with everyone heartbeating, the group
//! settles with every partition owned by exactly one live consumer, evenly.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use spool_group::{
    Assignment, Coordinator, CoordinatorConfig, GroupError, GroupRecord, GroupState,
    HeartbeatRequest, OffsetCommit, TopicInfo, TopicsSnapshot,
};

const GROUP: &str = "g";
const SESSION_MS: i64 = 10_000;
const MEMBERS: usize = 5;
const REBALANCE_MS: i64 = 5_000;

#[derive(Debug, Clone)]
enum Op {
    Heartbeat(usize),
    /// Heartbeats without reporting what it owns.
    QuietHeartbeat(usize),
    Leave(usize),
    StaticLeave(usize),
    Crash(usize),
    Commit(usize),
    Advance(i64),
    GrowTopic,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..MEMBERS).prop_map(Op::Heartbeat),
        1 => (0..MEMBERS).prop_map(Op::QuietHeartbeat),
        1 => (0..MEMBERS).prop_map(Op::Leave),
        1 => (0..MEMBERS).prop_map(Op::StaticLeave),
        1 => (0..MEMBERS).prop_map(Op::Crash),
        2 => (0..MEMBERS).prop_map(Op::Commit),
        2 => (1i64..6_000).prop_map(Op::Advance),
        1 => Just(Op::GrowTopic),
    ]
}

/// One simulated consumer.
#[derive(Debug, Clone, Default)]
struct Client {
    /// Joined and running (a crashed or departed consumer is not).
    running: bool,
    member_id: String,
    epoch: i32,
    owned: Assignment,
    /// When its last heartbeat was answered: it gives up its partitions once a session has
    /// passed since, before the coordinator could give them to anyone else.
    last_ok_ms: i64,
    /// What it last told the coordinator it owns: it may leave `owned` out of a heartbeat
    /// only while that is still true.
    reported: Option<Assignment>,
    /// Since when the coordinator has been waiting for it to give partitions up: it must
    /// say it has within the rebalance timeout, or stop everything (it will be removed).
    revoke_since_ms: Option<i64>,
    instance: Option<String>,
}

struct World {
    coordinator: Coordinator,
    topics: TopicsSnapshot,
    clients: Vec<Client>,
    log: Vec<GroupRecord>,
    now: i64,
    incarnation: usize,
}

impl World {
    fn new() -> Self {
        let mut topics = TopicsSnapshot::new();
        topics.insert("a", TopicInfo::new(6));
        topics.insert("b", TopicInfo::new(3));
        let config = CoordinatorConfig {
            session_timeout_ms: SESSION_MS as i32,
            heartbeat_interval_ms: 1_000,
            ..CoordinatorConfig::default()
        };
        Self {
            coordinator: Coordinator::new(config),
            topics,
            clients: (0..MEMBERS)
                .map(|i| Client {
                    instance: (i % 2 == 0).then(|| format!("instance-{i}")),
                    ..Client::default()
                })
                .collect(),
            log: Vec::new(),
            now: 1_000_000,
            incarnation: 0,
        }
    }

    fn keep<T>(&mut self, outcome: spool_group::Outcome<T>) -> T {
        for record in &outcome.records {
            let (key, value) = record.encode();
            assert_eq!(
                GroupRecord::decode(&key, value.as_deref()).as_ref(),
                Ok(record)
            );
        }
        self.log.extend(outcome.records);
        outcome.value
    }

    fn heartbeat(&mut self, i: usize, report_owned: bool) {
        let client = &mut self.clients[i];
        let joining = !client.running;
        if joining {
            self.incarnation += 1;
            client.member_id = format!("member-{i}-{}", self.incarnation);
            client.epoch = 0;
            client.owned = Assignment::new();
            client.reported = None;
            client.revoke_since_ms = None;
        }
        let request = HeartbeatRequest {
            group: GROUP.into(),
            member: client.member_id.clone(),
            epoch: client.epoch,
            instance_id: client.instance.clone(),
            rebalance_timeout_ms: joining.then_some(REBALANCE_MS as i32),
            topics: joining.then(|| vec!["a".into(), "b".into()]),
            owned: (report_owned || joining || client.reported.as_ref() != Some(&client.owned))
                .then(|| client.owned.clone()),
            ..HeartbeatRequest::default()
        };
        match self.coordinator.heartbeat(&request, self.now, &self.topics) {
            Ok(outcome) => {
                let response = self.keep(outcome);
                let client = &mut self.clients[i];
                if request.owned.is_some() {
                    client.reported = request.owned.clone();
                }
                client.revoke_since_ms = match response.state {
                    spool_group::MemberState::UnrevokedPartitions => {
                        client.revoke_since_ms.or(Some(self.now))
                    }
                    _ => None,
                };
                client.running = true;
                client.epoch = response.epoch;
                // It stops what it lost and starts what it gained before it heartbeats again.
                client.owned = response.assignment;
                client.last_ok_ms = self.now;
            }
            Err(GroupError::FencedMemberEpoch { .. } | GroupError::UnknownMemberId { .. }) => {
                // Fenced: it has lost its partitions and joins again next time.
                let client = &mut self.clients[i];
                client.running = false;
                client.owned = Assignment::new();
            }
            Err(GroupError::UnreleasedInstanceId { .. }) => {
                // Its instance is still held by its previous incarnation: wait.
                let client = &mut self.clients[i];
                client.running = false;
            }
            Err(other) => panic!("heartbeat of client {i}: {other}"),
        }
    }

    fn leave(&mut self, i: usize, statically: bool) {
        let client = &self.clients[i];
        if !client.running || (statically && client.instance.is_none()) {
            return;
        }
        let request = HeartbeatRequest {
            group: GROUP.into(),
            member: client.member_id.clone(),
            epoch: if statically { -2 } else { -1 },
            instance_id: client.instance.clone(),
            ..HeartbeatRequest::default()
        };
        // It stops consuming first, then says so.
        self.clients[i].running = false;
        self.clients[i].owned = Assignment::new();
        match self.coordinator.heartbeat(&request, self.now, &self.topics) {
            Ok(outcome) => {
                self.keep(outcome);
            }
            Err(GroupError::UnknownMemberId { .. }) => {}
            Err(other) => panic!("leave of client {i}: {other}"),
        }
    }

    fn commit(&mut self, i: usize) {
        let client = &self.clients[i];
        if !client.running {
            return;
        }
        let commits: Vec<OffsetCommit> = client
            .owned
            .iter()
            .map(|(topic, partition)| OffsetCommit {
                topic: topic.to_string(),
                partition,
                offset: self.now,
                leader_epoch: -1,
                metadata: String::new(),
            })
            .collect();
        let result = self.coordinator.commit_offsets(
            GROUP,
            &client.member_id,
            client.epoch,
            &commits,
            self.now,
            &self.topics,
        );
        match result {
            Ok(outcome) => {
                self.keep(outcome);
            }
            // A consumer whose session ended, or whose epoch moved on, cannot commit.
            Err(
                GroupError::UnknownMemberId { .. }
                | GroupError::StaleMemberEpoch { .. }
                | GroupError::FencedMemberEpoch { .. },
            ) => {}
            Err(other) => panic!("commit of client {i}: {other}"),
        }
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
        for client in &mut self.clients {
            let session_over = self.now - client.last_ok_ms >= SESSION_MS;
            let revoke_late = client
                .revoke_since_ms
                .is_some_and(|since| self.now - since >= REBALANCE_MS);
            if client.running && (session_over || revoke_late) {
                client.owned = Assignment::new();
            }
        }
        let outcome = self.coordinator.expire(self.now);
        let expired = self.keep(outcome);
        for (_, member) in expired {
            if let Some(client) = self.clients.iter_mut().find(|c| c.member_id == member) {
                assert!(client.owned.is_empty() || !client.running);
                client.running = false;
            }
        }
    }

    fn check(&self) {
        // Coordinator: nobody holds what another holds.
        let mut held: BTreeMap<(String, u32), &str> = BTreeMap::new();
        if let Some(group) = self.coordinator.group(GROUP) {
            for member in group.members.values() {
                let current = &member.current;
                for (topic, partition) in current.assigned.iter().chain(current.revoking.iter()) {
                    let other = held.insert((topic.to_string(), partition), &member.id);
                    assert!(other.is_none(), "{topic}/{partition} held twice");
                    assert_eq!(group.owner_of(topic, partition), Some(member.id.as_str()));
                }
            }
        }
        // Consumers: nobody consumes what another consumes, nor what it does not hold.
        let mut consumed: BTreeSet<(String, u32)> = BTreeSet::new();
        for client in self.clients.iter().filter(|c| c.running) {
            for (topic, partition) in client.owned.iter() {
                assert!(
                    consumed.insert((topic.to_string(), partition)),
                    "{topic}/{partition} consumed by two consumers"
                );
                assert_eq!(
                    held.get(&(topic.to_string(), partition)).copied(),
                    Some(client.member_id.as_str())
                );
            }
        }
        // A replay of everything written rebuilds the same groups.
        let mut replayed = Coordinator::new(*self.coordinator.config());
        for record in &self.log {
            replayed.apply(record);
        }
        let live: Vec<_> = self.coordinator.groups().collect();
        let again: Vec<_> = replayed.groups().collect();
        assert_eq!(live.len(), again.len());
        for (a, b) in live.iter().zip(again) {
            assert!(a.same_persisted_state(b), "replay differs for {}", a.id);
        }
        // And so does a checkpoint.
        let mut restored = Coordinator::new(*self.coordinator.config());
        for record in self.coordinator.snapshot_records() {
            restored.apply(&record);
        }
        for (a, b) in live.iter().zip(restored.groups()) {
            assert!(a.same_persisted_state(b), "checkpoint differs for {}", a.id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_partition_ever_has_two_owners_and_the_group_settles(
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let mut world = World::new();
        for op in ops {
            match op {
                Op::Heartbeat(i) => world.heartbeat(i, true),
                Op::QuietHeartbeat(i) => {
                    if world.clients[i].running {
                        world.heartbeat(i, false);
                    }
                }
                Op::Leave(i) => world.leave(i, false),
                Op::StaticLeave(i) => world.leave(i, true),
                Op::Crash(i) => {
                    // Gone without a word: it consumes nothing, the coordinator still
                    // counts it until its session ends.
                    world.clients[i].running = false;
                    world.clients[i].owned = Assignment::new();
                }
                Op::Commit(i) => world.commit(i),
                Op::Advance(ms) => world.advance(ms),
                Op::GrowTopic => {
                    let b = world.topics.get("b").map_or(0, |t| t.partitions);
                    world.topics.insert("b", TopicInfo::new((b + 1).min(12)));
                }
            }
            world.check();
        }
        // Everyone who is gone is noticed, then every live consumer heartbeats until the
        // group settles.
        world.advance(SESSION_MS);
        let live: Vec<usize> = (0..MEMBERS).collect();
        for _ in 0..6 {
            for &i in &live {
                world.heartbeat(i, true);
                world.check();
            }
        }
        let group = world.coordinator.group(GROUP).expect("the group");
        prop_assert_eq!(group.state(), GroupState::Stable);
        let partitions: usize = ["a", "b"]
            .iter()
            .map(|t| world.topics.get(t).map_or(0, |i| i.partitions as usize))
            .sum();
        let counts: Vec<usize> = world
            .clients
            .iter()
            .filter(|c| c.running)
            .map(|c| c.owned.len())
            .collect();
        prop_assert_eq!(counts.len(), MEMBERS);
        prop_assert_eq!(counts.iter().sum::<usize>(), partitions);
        prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
    }
}

#[test]
fn bad_input_is_refused_whole_and_changes_nothing() {
    let mut world = World::new();
    world.heartbeat(0, true);
    let member = world.clients[0].member_id.clone();
    let epoch = world.clients[0].epoch;
    let before = world.log.len();
    let version = world.coordinator.version(GROUP);
    let topics = world.topics.clone();
    let join = |group: &str, member: &str| HeartbeatRequest {
        group: group.into(),
        member: member.into(),
        epoch: 0,
        topics: Some(vec!["a".into()]),
        ..HeartbeatRequest::default()
    };
    let c = &mut world.coordinator;
    let now = world.now;
    let refusals: Vec<(Result<(), GroupError>, spool_types::ErrorCode)> = vec![
        (
            c.heartbeat(&join("", "m"), now, &topics).map(drop),
            spool_types::ErrorCode::InvalidGroupId,
        ),
        (
            c.heartbeat(&join(&"g".repeat(4096), "m"), now, &topics)
                .map(drop),
            spool_types::ErrorCode::InvalidGroupId,
        ),
        (
            c.heartbeat(&join(GROUP, ""), now, &topics).map(drop),
            spool_types::ErrorCode::InvalidRequest,
        ),
        (
            c.heartbeat(
                &HeartbeatRequest {
                    epoch: 3,
                    ..join(GROUP, "nobody")
                },
                now,
                &topics,
            )
            .map(drop),
            spool_types::ErrorCode::UnknownMemberId,
        ),
        (
            c.heartbeat(
                &HeartbeatRequest {
                    epoch: epoch + 7,
                    ..join(GROUP, &member)
                },
                now,
                &topics,
            )
            .map(drop),
            spool_types::ErrorCode::FencedMemberEpoch,
        ),
        (
            c.heartbeat(
                &HeartbeatRequest {
                    topics: None,
                    ..join(GROUP, "m2")
                },
                now,
                &topics,
            )
            .map(drop),
            spool_types::ErrorCode::InvalidRequest,
        ),
        (
            c.heartbeat(
                &HeartbeatRequest {
                    pattern: Some("(".into()),
                    ..join(GROUP, "m2")
                },
                now,
                &topics,
            )
            .map(drop),
            spool_types::ErrorCode::InvalidRequest,
        ),
        (
            c.heartbeat(
                &HeartbeatRequest {
                    assignor: Some("round-robin-ish".into()),
                    ..join(GROUP, "m2")
                },
                now,
                &topics,
            )
            .map(drop),
            spool_types::ErrorCode::UnsupportedAssignor,
        ),
    ];
    let commit = |topic: &str, partition: u32, offset: i64, metadata: usize| OffsetCommit {
        topic: topic.into(),
        partition,
        offset,
        leader_epoch: -1,
        metadata: "m".repeat(metadata),
    };
    let commits = [
        (
            c.commit_offsets(
                GROUP,
                &member,
                epoch - 1,
                &[commit("a", 0, 5, 0)],
                now,
                &topics,
            ),
            spool_types::ErrorCode::StaleMemberEpoch,
        ),
        (
            c.commit_offsets(
                GROUP,
                "nobody",
                epoch,
                &[commit("a", 0, 5, 0)],
                now,
                &topics,
            ),
            spool_types::ErrorCode::UnknownMemberId,
        ),
        (
            c.commit_offsets(GROUP, "", -1, &[commit("a", 0, 5, 0)], now, &topics),
            spool_types::ErrorCode::UnknownMemberId,
        ),
        (
            c.commit_offsets(
                GROUP,
                &member,
                epoch,
                &[commit("a", 0, 5, 0), commit("nope", 0, 5, 0)],
                now,
                &topics,
            ),
            spool_types::ErrorCode::UnknownTopicOrPartition,
        ),
        (
            c.commit_offsets(
                GROUP,
                &member,
                epoch,
                &[commit("a", 0, 5, 0), commit("a", 99, 5, 0)],
                now,
                &topics,
            ),
            spool_types::ErrorCode::UnknownTopicOrPartition,
        ),
        (
            c.commit_offsets(
                GROUP,
                &member,
                epoch,
                &[commit("a", 0, 5, 0), commit("a", 1, -3, 0)],
                now,
                &topics,
            ),
            spool_types::ErrorCode::InvalidRequest,
        ),
        (
            c.commit_offsets(
                GROUP,
                &member,
                epoch,
                &[commit("a", 0, 5, 4097)],
                now,
                &topics,
            ),
            spool_types::ErrorCode::OffsetMetadataTooLarge,
        ),
        (
            c.reset_offsets(GROUP, &[commit("a", 0, 0, 0)], now, &topics),
            spool_types::ErrorCode::NonEmptyGroup,
        ),
        (c.delete_group(GROUP), spool_types::ErrorCode::NonEmptyGroup),
        (
            c.delete_group("never-was"),
            spool_types::ErrorCode::GroupIdNotFound,
        ),
    ];
    let commits = commits.into_iter().map(|(r, code)| (r.map(drop), code));
    for (result, code) in refusals.into_iter().chain(commits) {
        let error = result.expect_err("refused");
        assert_eq!(error.code(), code, "{error}");
    }
    assert_eq!(world.coordinator.version(GROUP), version, "nothing applied");
    assert_eq!(world.log.len(), before);
    assert!(world.coordinator.committed(GROUP, None).is_empty());
}

#[test]
fn a_static_member_that_comes_back_in_time_keeps_its_partitions_without_a_rebalance() {
    let mut world = World::new();
    for _ in 0..3 {
        world.heartbeat(0, true);
        world.heartbeat(1, true);
    }
    let epoch = world.coordinator.group(GROUP).unwrap().epoch;
    let owned = world.clients[0].owned.clone();
    assert!(!owned.is_empty());
    world.leave(0, true);
    world.advance(SESSION_MS / 2);
    world.heartbeat(1, true);
    world.check();
    // Back under a new member id, the same instance id.
    world.heartbeat(0, true);
    world.check();
    assert_eq!(world.clients[0].owned, owned);
    assert_eq!(world.coordinator.group(GROUP).unwrap().epoch, epoch);
    // One that stays away past its session loses them.
    world.leave(0, true);
    world.advance(SESSION_MS);
    world.heartbeat(1, true);
    world.heartbeat(1, true);
    assert_eq!(world.clients[1].owned.len(), 9);
}

#[test]
fn commits_are_fenced_by_member_epoch_and_read_back() {
    let mut world = World::new();
    world.heartbeat(0, true);
    world.commit(0);
    let committed = world.coordinator.committed(GROUP, None);
    assert_eq!(committed.len(), 9);
    assert!(
        committed
            .iter()
            .all(|(_, v)| v.as_ref().unwrap().offset == world.now)
    );
    // Once it is gone, a commit with its old identity changes nothing.
    let zombie = world.clients[0].clone();
    world.leave(0, false);
    let result = world.coordinator.commit_offsets(
        GROUP,
        &zombie.member_id,
        zombie.epoch,
        &[OffsetCommit {
            topic: "a".into(),
            partition: 0,
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
        }],
        world.now,
        &world.topics,
    );
    assert_eq!(
        result.unwrap_err().code(),
        spool_types::ErrorCode::UnknownMemberId
    );
    // An empty group can be reset, then deleted.
    let outcome = world
        .coordinator
        .reset_offsets(
            GROUP,
            &[OffsetCommit {
                topic: "a".into(),
                partition: 0,
                offset: 0,
                leader_epoch: -1,
                metadata: String::new(),
            }],
            world.now,
            &world.topics,
        )
        .unwrap();
    world.keep(outcome);
    let a0 = world
        .coordinator
        .committed(GROUP, Some(&[("a".to_string(), 0)]));
    assert_eq!(a0[0].1.as_ref().unwrap().offset, 0);
    let outcome = world.coordinator.delete_group(GROUP).unwrap();
    world.keep(outcome);
    assert!(world.coordinator.group(GROUP).is_none());
    world.check();
}
