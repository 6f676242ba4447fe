//! Commits are fenced by ownership as well as by epoch: a member's commit for a partition
//! it has handed over is refused even when it carries the member's current epoch (a
//! delayed commit, sent again after a stale-epoch answer, must not set back the next
//! owner's progress).

#![allow(clippy::unwrap_used)]

use spool_group::{
    Assignment, Coordinator, CoordinatorConfig, GroupError, HeartbeatRequest, HeartbeatResponse,
    OffsetCommit, TopicInfo, TopicsSnapshot,
};

fn beat(
    c: &mut Coordinator,
    t: &TopicsSnapshot,
    member: &str,
    epoch: i32,
    owned: Assignment,
) -> HeartbeatResponse {
    let request = HeartbeatRequest {
        group: "g".into(),
        member: member.into(),
        epoch,
        topics: (epoch == 0).then(|| vec!["orders".to_string()]),
        rebalance_timeout_ms: Some(30_000),
        owned: Some(owned),
        ..HeartbeatRequest::default()
    };
    c.heartbeat(&request, 0, t).unwrap().value
}

fn commit(
    c: &mut Coordinator,
    t: &TopicsSnapshot,
    epoch: i32,
    partition: u32,
) -> Result<(), GroupError> {
    let offsets = [OffsetCommit {
        topic: "orders".into(),
        partition,
        offset: 10,
        leader_epoch: -1,
        metadata: String::new(),
    }];
    c.commit_offsets("g", "a", epoch, &offsets, 0, t)
        .map(|_| ())
}

#[test]
fn a_member_cannot_commit_a_partition_it_has_handed_over() {
    let mut t = TopicsSnapshot::new();
    t.insert(
        "orders",
        TopicInfo {
            partitions: 2,
            racks: Vec::new(),
        },
    );
    t.set_version(1);
    let mut c = Coordinator::new(CoordinatorConfig::default());
    let a = beat(&mut c, &t, "a", 0, Assignment::new());
    assert_eq!(a.assignment.len(), 2);
    beat(&mut c, &t, "b", 0, Assignment::new());
    // a is asked to give one partition up, and does.
    let a = beat(&mut c, &t, "a", a.epoch, a.assignment.clone());
    assert_eq!(a.assignment.len(), 1);
    let kept: u32 = a.assignment.iter().map(|(_, p)| p).next().unwrap();
    let given = 1 - kept;
    let a = beat(&mut c, &t, "a", a.epoch, a.assignment.clone());
    // At its current epoch, a commits what it holds, and not what it gave up.
    commit(&mut c, &t, a.epoch, kept).unwrap();
    let refused = commit(&mut c, &t, a.epoch, given).unwrap_err();
    assert!(
        matches!(refused, GroupError::NotAssigned { .. }),
        "{refused}"
    );
    assert_eq!(refused.code(), spool_types::ErrorCode::FencedMemberEpoch);
    let committed = c.committed("g", Some(&[("orders".to_string(), given)]));
    assert!(committed[0].1.is_none(), "the refused commit wrote nothing");
}
