//! A member's heartbeat: joining, staying, changing its subscription, reconciling toward
//! its target assignment, and leaving.

use std::collections::BTreeSet;

use crate::assignment::Assignment;
use crate::assignor::{AssignorKind, MemberSpec};
use crate::coordinator::{
    Coordinator, MAX_PATTERN_BYTES, MAX_SUBSCRIBED_BYTES, MAX_SUBSCRIBED_TOPICS, Outcome, Tx,
    check_group_id, check_id, heartbeat_interval, session_timeout,
};
use crate::error::GroupError;
use crate::group::{ConsumerGroup, LEAVE_EPOCH, STATIC_LEFT_EPOCH, current_value};
use crate::member::{MemberState, next_state};
use crate::records::{GroupRecord, GroupValue, MemberValue};
use crate::topics::TopicsSnapshot;

/// A member's heartbeat. Fields left `None` are unchanged since the last heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group: String,
    /// Chosen by the member (a UUID, say) and kept across its heartbeats.
    pub member: String,
    /// 0 to join, the epoch last received to stay, -1 to leave, -2 for a static member to
    /// leave meaning to come back.
    pub epoch: i32,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub rebalance_timeout_ms: Option<i32>,
    pub topics: Option<Vec<String>>,
    pub pattern: Option<String>,
    pub assignor: Option<String>,
    /// The partitions the member owns now.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub member: String,
    pub epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's session: with no answer for this long, it is out of the group.
    pub session_timeout_ms: i32,
    /// The partitions the member may own: any it owns outside this set it must give up.
    pub assignment: Assignment,
    pub state: MemberState,
    /// Whether this heartbeat changed the member's epoch or assignment (not sent on the
    /// wire: a heartbeat that changed nothing may wait for a change before answering).
    pub changed: bool,
}

/// Rebalance timeout of a member that names none.
const DEFAULT_REBALANCE_TIMEOUT_MS: i32 = 300_000;

impl Coordinator {
    pub fn heartbeat(
        &mut self,
        request: &HeartbeatRequest,
        now_ms: i64,
        topics: &TopicsSnapshot,
    ) -> Result<Outcome<HeartbeatResponse>, GroupError> {
        self.check_request(request)?;
        match request.epoch {
            LEAVE_EPOCH => self.leave(request, false),
            STATIC_LEFT_EPOCH => self.leave(request, true),
            epoch if epoch < STATIC_LEFT_EPOCH => Err(GroupError::InvalidRequest(format!(
                "member epoch {epoch} means nothing"
            ))),
            _ => self.beat(request, now_ms, topics),
        }
    }

    fn check_request(&mut self, request: &HeartbeatRequest) -> Result<(), GroupError> {
        check_group_id(&request.group)?;
        check_id("member id", &request.member)?;
        for (what, value) in [
            ("instance id", request.instance_id.as_deref()),
            ("rack", request.rack.as_deref()),
        ] {
            if let Some(value) = value {
                check_id(what, value)?;
            }
        }
        for (what, value) in [
            ("client id", request.client_id.as_str()),
            ("client host", request.client_host.as_str()),
        ] {
            if !value.is_empty() {
                check_id(what, value)?;
            }
        }
        if let Some(name) = &request.assignor
            && AssignorKind::from_name(name).is_none()
        {
            return Err(GroupError::UnsupportedAssignor(name.clone()));
        }
        if let Some(topics) = &request.topics {
            if topics.len() > MAX_SUBSCRIBED_TOPICS {
                return Err(GroupError::InvalidRequest(format!(
                    "a member may subscribe to at most {MAX_SUBSCRIBED_TOPICS} topics by name"
                )));
            }
            let bytes: usize = topics.iter().map(String::len).sum();
            if bytes > MAX_SUBSCRIBED_BYTES {
                return Err(GroupError::InvalidRequest(format!(
                    "subscribed topic names take {bytes} bytes; at most {MAX_SUBSCRIBED_BYTES}"
                )));
            }
            for name in topics {
                spool_types::TopicName::new(name.as_str()).map_err(|e| {
                    GroupError::InvalidRequest(format!("subscribed topic {name:?}: {e}"))
                })?;
            }
        }
        if let Some(pattern) = &request.pattern
            && pattern.len() > MAX_PATTERN_BYTES
        {
            return Err(GroupError::InvalidRequest(format!(
                "a subscription pattern is at most {MAX_PATTERN_BYTES} bytes"
            )));
        }
        if request.rebalance_timeout_ms.is_some_and(|ms| ms <= 0) {
            return Err(GroupError::InvalidRequest(
                "the rebalance timeout must be positive".into(),
            ));
        }
        if request.epoch == 0 {
            let names = request.topics.as_ref().is_some_and(|t| !t.is_empty());
            let pattern = request.pattern.as_ref().is_some_and(|p| !p.is_empty());
            if !names && !pattern {
                return Err(GroupError::InvalidRequest(
                    "a joining member subscribes to topics or a pattern".into(),
                ));
            }
        }
        Ok(())
    }

    /// Refusals that depend on the group, checked before anything is written.
    fn check_member(&self, request: &HeartbeatRequest) -> Result<(), GroupError> {
        let group = self.groups.get(&request.group);
        let unknown = || GroupError::UnknownMemberId {
            group: request.group.clone(),
            member: request.member.clone(),
        };
        if request.epoch > 0 {
            let member = group
                .and_then(|g| g.members.get(&request.member))
                .ok_or_else(unknown)?;
            let current = &member.current;
            let previous_ok = request.epoch == current.previous_epoch
                && request
                    .owned
                    .as_ref()
                    .is_some_and(|owned| owned.difference(&current.assigned).is_empty());
            if member.has_left_statically() || (request.epoch != current.epoch && !previous_ok) {
                return Err(GroupError::FencedMemberEpoch {
                    given: request.epoch,
                    current: current.epoch,
                });
            }
            if request.instance_id.is_some()
                && request.instance_id != member.subscription.instance_id
            {
                return Err(GroupError::InvalidRequest(
                    "the instance id differs from the one the member joined with".into(),
                ));
            }
            return Ok(());
        }
        let Some(group) = group else { return Ok(()) };
        if group.members.len() >= self.config.max_members
            && !group.members.contains_key(&request.member)
        {
            return Err(GroupError::GroupFull {
                group: group.id.clone(),
                max: self.config.max_members,
            });
        }
        if let Some(instance) = &request.instance_id
            && let Some(holder) = group.member_of_instance(instance)
            && holder != request.member
            && group
                .members
                .get(holder)
                .is_some_and(|m| !m.has_left_statically())
        {
            return Err(GroupError::UnreleasedInstanceId {
                instance: instance.clone(),
                holder: holder.to_string(),
            });
        }
        Ok(())
    }

    fn beat(
        &mut self,
        request: &HeartbeatRequest,
        now_ms: i64,
        topics: &TopicsSnapshot,
    ) -> Result<Outcome<HeartbeatResponse>, GroupError> {
        self.check_member(request)?;
        // Compiled only for a member that is joining or known: strangers cost nothing.
        if let Some(pattern) = request.pattern.as_deref().filter(|p| !p.is_empty()) {
            self.pattern(pattern)?;
        }
        let group_id = request.group.as_str();
        let member_id = request.member.as_str();
        // Refused before anything is written: a heartbeat moves the epoch at most twice
        // (a static member's predecessor removed, then the group's new epoch).
        if self
            .groups
            .get(group_id)
            .is_some_and(|g| g.epoch > i32::MAX - 2)
        {
            return Err(GroupError::InvalidRequest(
                "the group's epoch is exhausted: delete the group".into(),
            ));
        }
        let mut tx = Tx::new(self);
        let joined;
        let request = if request.epoch == 0 {
            join(&mut tx, request);
            // A member that joins owns nothing it has not said it owns.
            joined = HeartbeatRequest {
                owned: Some(request.owned.clone().unwrap_or_default()),
                ..request.clone()
            };
            &joined
        } else {
            request
        };
        // The subscription, with what the request changes.
        let old = tx
            .group(group_id)
            .and_then(|g| g.members.get(member_id))
            .map(|m| m.subscription.clone());
        let mut subscription = old.clone().unwrap_or_default();
        merge(&mut subscription, request);
        let mut bump = false;
        if old.as_ref() != Some(&subscription) {
            bump = old
                .as_ref()
                .is_none_or(|old| changes_assignment(old, &subscription));
            tx.write(GroupRecord::Member {
                group: group_id.to_string(),
                member: member_id.to_string(),
                value: Some(subscription),
            });
        }
        // A new epoch when membership, subscriptions or the subscribed topics changed.
        let subscribed = tx.coordinator.subscribed_topics(group_id, topics);
        let union: BTreeSet<&str> = subscribed.values().flatten().map(String::as_str).collect();
        let digest = topics.digest(union);
        let Some(group) = tx.group(group_id) else {
            return Err(GroupError::GroupIdNotFound(group_id.to_string()));
        };
        if bump || digest != group.metadata_digest {
            let epoch = group.epoch.checked_add(1).ok_or_else(|| {
                GroupError::InvalidRequest("the group's epoch is exhausted: delete it".into())
            })?;
            tx.write(GroupRecord::Group {
                group: group_id.to_string(),
                value: Some(GroupValue {
                    epoch,
                    metadata_digest: digest,
                }),
            });
        }
        assign_if_needed(&mut tx, group_id, &subscribed, topics);
        let changed = reconcile(&mut tx, request, now_ms) || request.epoch == 0;
        let coordinator = &*tx.coordinator;
        let response = coordinator
            .groups
            .get(group_id)
            .and_then(|g| {
                let member = g.members.get(member_id)?;
                Some(HeartbeatResponse {
                    member: member_id.to_string(),
                    epoch: member.current.epoch,
                    heartbeat_interval_ms: heartbeat_interval(&coordinator.config, g),
                    session_timeout_ms: session_timeout(&coordinator.config, g),
                    assignment: member.current.assigned.clone(),
                    state: member.current.state,
                    changed,
                })
            })
            .ok_or_else(|| GroupError::GroupIdNotFound(group_id.to_string()))?;
        Ok(tx.finish(response))
    }

    fn leave(
        &mut self,
        request: &HeartbeatRequest,
        leaving_statically: bool,
    ) -> Result<Outcome<HeartbeatResponse>, GroupError> {
        let group = self.groups.get(&request.group);
        let member = group
            .and_then(|g| g.members.get(&request.member))
            .ok_or_else(|| GroupError::UnknownMemberId {
                group: request.group.clone(),
                member: request.member.clone(),
            })?;
        let (interval, session) = group.map_or(
            (
                self.config.heartbeat_interval_ms,
                self.config.session_timeout_ms,
            ),
            |g| {
                (
                    heartbeat_interval(&self.config, g),
                    session_timeout(&self.config, g),
                )
            },
        );
        if leaving_statically && member.subscription.instance_id.is_none() {
            return Err(GroupError::InvalidRequest(
                "only a member with an instance id can leave meaning to come back".into(),
            ));
        }
        let mut value = current_value(&member.current);
        let mut tx = Tx::new(self);
        if leaving_statically {
            // It keeps its partitions (nobody else gets them) until it comes back or its
            // session ends; its epoch is kept as the previous one for the return.
            if value.epoch != STATIC_LEFT_EPOCH {
                value.previous_epoch = value.epoch;
                value.epoch = STATIC_LEFT_EPOCH;
                tx.write(GroupRecord::Current {
                    group: request.group.clone(),
                    member: request.member.clone(),
                    value: Some(value),
                });
            }
        } else {
            tx.remove_member(&request.group, &request.member);
        }
        Ok(tx.finish(HeartbeatResponse {
            member: request.member.clone(),
            epoch: request.epoch,
            heartbeat_interval_ms: interval,
            session_timeout_ms: session,
            assignment: Assignment::new(),
            state: MemberState::Stable,
            changed: true,
        }))
    }

    /// The assignor a group uses: the one most of its members name, else the default.
    pub fn assignor_of(&self, group: &ConsumerGroup) -> AssignorKind {
        let mut votes = [0usize; AssignorKind::ALL.len()];
        for member in group.members.values() {
            if let Some(kind) = member
                .subscription
                .assignor
                .as_deref()
                .and_then(AssignorKind::from_name)
            {
                votes[kind as usize] += 1;
            }
        }
        let best = votes.iter().copied().max().unwrap_or(0);
        if best == 0 {
            return self.config.default_assignor;
        }
        AssignorKind::ALL
            .into_iter()
            .find(|kind| votes[*kind as usize] == best)
            .unwrap_or(self.config.default_assignor)
    }
}

/// A member joining with epoch 0. One that was in the group under the same id starts
/// over (it has lost what it owned). One taking over a static instance that left takes its
/// partitions and epoch, so the group does not rebalance.
fn join(tx: &mut Tx<'_>, request: &HeartbeatRequest) {
    let group_id = request.group.as_str();
    if tx
        .group(group_id)
        .is_some_and(|g| g.members.contains_key(&request.member))
    {
        tx.remove_member(group_id, &request.member);
    }
    let Some(instance) = &request.instance_id else {
        return;
    };
    let Some((holder, subscription, mut current, target)) = tx.group(group_id).and_then(|g| {
        let holder = g.member_of_instance(instance)?;
        let m = g.members.get(holder)?;
        m.has_left_statically().then(|| {
            (
                holder.to_string(),
                m.subscription.clone(),
                current_value(&m.current),
                g.target_of(holder),
            )
        })
    }) else {
        return;
    };
    let id = || group_id.to_string();
    for record in [
        GroupRecord::Current {
            group: id(),
            member: holder.clone(),
            value: None,
        },
        GroupRecord::Target {
            group: id(),
            member: holder.clone(),
            value: None,
        },
        GroupRecord::Member {
            group: id(),
            member: holder.clone(),
            value: None,
        },
        GroupRecord::Member {
            group: id(),
            member: request.member.clone(),
            value: Some(subscription),
        },
        GroupRecord::Target {
            group: id(),
            member: request.member.clone(),
            value: Some(target),
        },
    ] {
        tx.write(record);
    }
    current.epoch = current.previous_epoch;
    tx.write(GroupRecord::Current {
        group: id(),
        member: request.member.clone(),
        value: Some(current),
    });
}

/// The request's changes to a member's subscription.
fn merge(subscription: &mut MemberValue, request: &HeartbeatRequest) {
    if request.instance_id.is_some() {
        subscription.instance_id.clone_from(&request.instance_id);
    }
    if request.rack.is_some() {
        subscription.rack.clone_from(&request.rack);
    }
    if !request.client_id.is_empty() {
        subscription.client_id.clone_from(&request.client_id);
    }
    if !request.client_host.is_empty() {
        subscription.client_host.clone_from(&request.client_host);
    }
    if let Some(topics) = &request.topics {
        let mut topics = topics.clone();
        topics.sort();
        topics.dedup();
        subscription.topics = topics;
    }
    if let Some(pattern) = &request.pattern {
        subscription.pattern = (!pattern.is_empty()).then(|| pattern.clone());
    }
    if let Some(ms) = request.rebalance_timeout_ms {
        subscription.rebalance_timeout_ms = ms;
    }
    if subscription.rebalance_timeout_ms <= 0 {
        subscription.rebalance_timeout_ms = DEFAULT_REBALANCE_TIMEOUT_MS;
    }
    if request.assignor.is_some() {
        subscription.assignor.clone_from(&request.assignor);
    }
}

/// Whether a subscription change can change the assignment.
fn changes_assignment(old: &MemberValue, new: &MemberValue) -> bool {
    old.topics != new.topics
        || old.pattern != new.pattern
        || old.rack != new.rack
        || old.assignor != new.assignor
}

/// Computes the target assignment if the group epoch moved past it.
fn assign_if_needed(
    tx: &mut Tx<'_>,
    group_id: &str,
    subscribed: &std::collections::BTreeMap<String, BTreeSet<String>>,
    topics: &TopicsSnapshot,
) {
    let Some(group) = tx.group(group_id) else {
        return;
    };
    if group.epoch <= group.target_epoch {
        return;
    }
    let assignor = tx.coordinator.assignor_of(group).assignor();
    let empty = BTreeSet::new();
    let none = Assignment::new();
    let specs: Vec<MemberSpec<'_>> = group
        .members
        .values()
        .map(|m| MemberSpec {
            id: &m.id,
            rack: m.subscription.rack.as_deref(),
            topics: subscribed.get(&m.id).unwrap_or(&empty),
            previous: group.targets.get(&m.id).unwrap_or(&none),
        })
        .collect();
    let targets = assignor.assign(&specs, topics);
    let changed: Vec<(String, crate::assignment::Assignment)> = targets
        .into_iter()
        .filter(|(member, target)| group.targets.get(member) != Some(target))
        .collect();
    let epoch = group.epoch;
    for (member, target) in changed {
        tx.write(GroupRecord::Target {
            group: group_id.to_string(),
            member,
            value: Some(target),
        });
    }
    tx.write(GroupRecord::TargetEpoch {
        group: group_id.to_string(),
        value: Some(epoch),
    });
}

/// Moves the member one step toward its target and restarts its session; returns whether
/// its epoch or assignment changed.
fn reconcile(tx: &mut Tx<'_>, request: &HeartbeatRequest, now_ms: i64) -> bool {
    let member_id = request.member.as_str();
    let Some(group) = tx.group(&request.group) else {
        return false;
    };
    let Some(member) = group.members.get(member_id) else {
        return false;
    };
    let target = group.target_of(member_id);
    let next = next_state(
        &member.current,
        group.target_epoch,
        &target,
        request.owned.as_ref(),
        |topic, partition| {
            group
                .owner_of(topic, partition)
                .is_some_and(|o| o != member_id)
        },
    );
    let revoking_before = member.current.revoking.clone();
    let session = session_timeout(&tx.coordinator.config, group);
    let rebalance = member.subscription.rebalance_timeout_ms;
    let changed = next != member.current;
    if changed {
        tx.write(GroupRecord::Current {
            group: request.group.clone(),
            member: member_id.to_string(),
            value: Some(current_value(&next)),
        });
    }
    if let Some(member) = tx
        .coordinator
        .groups
        .get_mut(&request.group)
        .and_then(|g| g.members.get_mut(member_id))
    {
        member.session_deadline_ms = now_ms.saturating_add(i64::from(session));
        // Each set of partitions to give up gets the whole rebalance timeout.
        let revoking = member.current.state == MemberState::UnrevokedPartitions;
        let same_request = member.current.revoking == revoking_before;
        member.revoke_deadline_ms = match member.revoke_deadline_ms {
            _ if !revoking => None,
            Some(deadline) if same_request => Some(deadline),
            _ => Some(now_ms.saturating_add(i64::from(rebalance))),
        };
    }
    changed
}
