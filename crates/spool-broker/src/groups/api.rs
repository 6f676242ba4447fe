//! What the group services call: find a group's coordinator, heartbeat (a long poll),
//! commit and fetch offsets, list, describe, reset and delete groups.

use std::time::Duration;

use spool_group::records::OffsetValue;
use spool_group::{GroupError, HeartbeatRequest, HeartbeatResponse, MemberState, OffsetCommit};

use crate::broker::Broker;

/// How long an offset fetch waits for a decided transaction's marker before answering
/// UNSTABLE_OFFSET_COMMIT.
const UNSTABLE_WAIT: Duration = Duration::from_secs(5);
use crate::error::BrokerError;

/// A group as `list_groups` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group: String,
    pub state: String,
    pub members: usize,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetEntry {
    pub topic: String,
    pub partition: u32,
    /// -1 when nothing is committed.
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member: String,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub topics: Vec<String>,
    pub pattern: Option<String>,
    pub epoch: i32,
    pub state: String,
    pub assigned: Vec<(String, u32)>,
    pub revoking: Vec<(String, u32)>,
    pub target: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub epoch: i32,
    pub target_epoch: i32,
    pub assignor: String,
    pub coordinator: u64,
    pub members: Vec<MemberDescription>,
    pub offsets: Vec<OffsetEntry>,
    /// In effect: the group's own, else this node's.
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
}

fn entry((topic, partition): (String, u32), value: Option<OffsetValue>) -> OffsetEntry {
    match value {
        Some(v) => OffsetEntry {
            topic,
            partition,
            offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: v.metadata,
            commit_ms: v.commit_ms,
        },
        None => OffsetEntry {
            topic,
            partition,
            offset: -1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_ms: -1,
        },
    }
}

fn pairs(assignment: &spool_group::Assignment) -> Vec<(String, u32)> {
    assignment.iter().map(|(t, p)| (t.to_string(), p)).collect()
}

impl Broker {
    /// The node coordinating `group` and its client address. Creates `__consumer_offsets`
    /// on first use, and waits (at most `COORDINATOR_WAIT`) while the group's partition
    /// has no leader yet.
    pub async fn find_coordinator(&self, group: &str) -> Result<(u64, String), BrokerError> {
        spool_group::check_group_id(group)?;
        self.ensure_offsets_topic().await?;
        self.find_coordinator_of(&self.groups.coordinators, group)
            .await
    }

    /// A member's heartbeat. With `wait` and nothing new for the member, it waits up to
    /// that long for the group to change (a long poll), then answers with what changed:
    /// a rebalance costs round trips, not heartbeat intervals.
    pub async fn group_heartbeat(
        &self,
        request: HeartbeatRequest,
        wait: Duration,
    ) -> Result<HeartbeatResponse, BrokerError> {
        spool_group::check_group_id(&request.group)?;
        let shard = self.group_shard(&request.group).await?;
        let group = request.group.clone();
        let mut changes = shard.watch_group(&group);
        changes.borrow_and_update();
        // A second run after the wait says only "still here": the request's subscription
        // and owned partitions were taken by the first, and may be stale by then (the
        // member may have moved on with another heartbeat meanwhile).
        let owned = request.owned.clone();
        let again = HeartbeatRequest {
            group: request.group.clone(),
            member: request.member.clone(),
            epoch: request.epoch,
            ..HeartbeatRequest::default()
        };
        let response = shard
            .run_group(&group, move |c, ctx| {
                c.heartbeat(&request, ctx.steady_ms, &ctx.topics)
            })
            .await?;
        // Nothing new: the same epoch and the partitions it owns. A member waiting for
        // partitions others still hold waits here too, and is answered once they are
        // free; one asked to give partitions up is answered at once.
        // An unset `owned` means "unchanged since my last heartbeat" (the member's duty to
        // send it whenever it changed).
        let quiet = again.epoch > 0
            && !response.changed
            && response.epoch == again.epoch
            && response.state != MemberState::UnrevokedPartitions
            && owned
                .as_ref()
                .is_none_or(|owned| *owned == response.assignment);
        let wait = wait.min(Duration::from_millis(
            response.heartbeat_interval_ms.max(0) as u64
        ));
        if !quiet || wait.is_zero() {
            return Ok(response);
        }
        if tokio::time::timeout(wait, changes.changed()).await.is_err() {
            return Ok(response);
        }
        shard
            .run_group(&group, move |c, ctx| {
                c.heartbeat(&again, ctx.steady_ms, &ctx.topics)
            })
            .await
    }

    /// Commits offsets for a member at its epoch (or, with no member, for a group without
    /// members). All or nothing.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member: &str,
        epoch: i32,
        commits: Vec<OffsetCommit>,
    ) -> Result<(), BrokerError> {
        let shard = self.group_shard(group).await?;
        let (g, m) = (group.to_string(), member.to_string());
        shard
            .run_group(group, move |c, ctx| {
                c.commit_offsets(&g, &m, epoch, &commits, ctx.now_ms, &ctx.topics)
            })
            .await
    }

    /// Committed offsets of the given partitions, or of every partition with one.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<(String, u32)>>,
    ) -> Result<Vec<OffsetEntry>, BrokerError> {
        spool_group::check_group_id(group)?;
        // Offsets a decided transaction committed take effect once its marker is here
        // (soon after): until then the answer would be older than what was committed.
        let deadline = tokio::time::Instant::now() + UNSTABLE_WAIT;
        loop {
            let shard = self.group_shard(group).await?;
            let mut markers = shard.shared.markers.subscribe();
            markers.borrow_and_update();
            let (g, keys) = (group.to_string(), partitions.clone());
            let found = shard
                .run(group, move |s, _| {
                    if s.has_pending(&g, keys.as_deref()) {
                        return Err(BrokerError::UnstableOffsets { group: g.clone() });
                    }
                    Ok((Vec::new(), s.coordinator.committed(&g, keys.as_deref())))
                })
                .await;
            match found {
                Ok(found) => return Ok(found.into_iter().map(|(key, v)| entry(key, v)).collect()),
                Err(BrokerError::UnstableOffsets { .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    let _ = tokio::time::timeout_at(deadline, markers.changed()).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The groups this node coordinates.
    pub async fn list_groups(&self) -> Vec<GroupListing> {
        let shards = self.groups.coordinators.running();
        let mut out = Vec::new();
        for shard in shards {
            let listed = shard
                .run_group("", |c, _| {
                    Ok(spool_group::Outcome {
                        records: Vec::new(),
                        value: c.list(),
                    })
                })
                .await;
            if let Ok(groups) = listed {
                out.extend(
                    groups
                        .into_iter()
                        .map(|(group, state, members)| GroupListing {
                            group,
                            state: state.name().to_string(),
                            members,
                        }),
                );
            }
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, BrokerError> {
        spool_group::check_group_id(group)?;
        let shard = self.group_shard(group).await?;
        let g = group.to_string();
        let me = self.options.node_id;
        shard
            .run_group(group, move |c, _| {
                let found = c
                    .group(&g)
                    .ok_or_else(|| GroupError::GroupIdNotFound(g.clone()))?;
                let members = found
                    .members
                    .values()
                    .map(|m| MemberDescription {
                        member: m.id.clone(),
                        instance_id: m.subscription.instance_id.clone(),
                        rack: m.subscription.rack.clone(),
                        client_id: m.subscription.client_id.clone(),
                        client_host: m.subscription.client_host.clone(),
                        topics: m.subscription.topics.clone(),
                        pattern: m.subscription.pattern.clone(),
                        epoch: m.current.epoch,
                        state: m.current.state.name().to_string(),
                        assigned: pairs(&m.current.assigned),
                        revoking: pairs(&m.current.revoking),
                        target: pairs(&found.target_of(&m.id)),
                    })
                    .collect();
                let (session_timeout_ms, heartbeat_interval_ms) = c.timeouts_of(found);
                let description = GroupDescription {
                    group: g.clone(),
                    state: found.state().name().to_string(),
                    epoch: found.epoch,
                    target_epoch: found.target_epoch,
                    assignor: c.assignor_of(found).name().to_string(),
                    coordinator: me,
                    members,
                    offsets: found
                        .offsets
                        .iter()
                        .map(|(key, v)| entry(key.clone(), Some(v.clone())))
                        .collect(),
                    session_timeout_ms,
                    heartbeat_interval_ms,
                };
                Ok(spool_group::Outcome {
                    records: Vec::new(),
                    value: description,
                })
            })
            .await
    }

    /// Deletes a group without members, offsets and all.
    pub async fn delete_group(&self, group: &str) -> Result<(), BrokerError> {
        let shard = self.group_shard(group).await?;
        let g = group.to_string();
        shard.run_group(group, move |c, _| c.delete_group(&g)).await
    }

    /// Sets the committed offsets of a group without members.
    pub async fn reset_offsets(
        &self,
        group: &str,
        offsets: Vec<OffsetCommit>,
    ) -> Result<(), BrokerError> {
        let shard = self.group_shard(group).await?;
        let g = group.to_string();
        shard
            .run_group(group, move |c, ctx| {
                c.reset_offsets(&g, &offsets, ctx.now_ms, &ctx.topics)
            })
            .await
    }

    /// Sets a group's own session timeout and heartbeat interval (`None`: this node's).
    pub async fn alter_group(
        &self,
        group: &str,
        settings: spool_group::GroupSettings,
    ) -> Result<(), BrokerError> {
        spool_group::check_group_id(group)?;
        let shard = self.group_shard(group).await?;
        let g = group.to_string();
        shard
            .run_group(group, move |c, _| c.set_settings(&g, settings))
            .await
    }
}
