//! Consumer group calls: find a group's coordinator, heartbeat, commit and fetch offsets,
//! list, describe, delete and reset groups. These go to the node the client is connected
//! to; `GroupConsumer` and the CLI send them to the group's coordinator.

use std::collections::BTreeMap;
use std::time::Duration;

use spool_proto::v1;

use crate::client::Client;
use crate::error::ClientError;

/// Partitions by topic, in order.
pub type PartitionSet = BTreeMap<String, Vec<u32>>;

/// A member's heartbeat (see the Groups service in proto/spool/v1/group.proto).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    pub group: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub rebalance_timeout_ms: Option<i32>,
    /// Set to change the subscription.
    pub topics: Option<Vec<String>>,
    pub pattern: Option<String>,
    pub server_assignor: Option<String>,
    /// What the member owns now; `None`: unchanged since its last heartbeat.
    pub owned: Option<PartitionSet>,
    pub client_id: String,
    /// Long poll: wait up to this long for a change when nothing is new.
    pub wait: Duration,
}

/// Where a member stands in its reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemberState {
    #[default]
    Stable,
    /// It must give up what it owns outside its assignment and heartbeat at once.
    UnrevokedPartitions,
    /// Partitions of its target are still held by others.
    UnreleasedPartitions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval: Duration,
    pub session_timeout: Duration,
    pub assignment: PartitionSet,
    pub state: MemberState,
}

/// One partition's offset to commit: the next record to process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    /// -1 when nothing is committed.
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group: String,
    pub state: String,
    pub members: u32,
    pub coordinator: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topics: Vec<String>,
    pub pattern: Option<String>,
    pub member_epoch: i32,
    pub state: String,
    pub assigned: PartitionSet,
    pub revoking: PartitionSet,
    pub target: PartitionSet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub coordinator: u64,
    pub members: Vec<GroupMemberInfo>,
    pub offsets: Vec<CommittedOffset>,
    /// In effect for the group: its own settings, else the coordinator's.
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
}

fn to_wire(set: &PartitionSet) -> Vec<v1::TopicPartitions> {
    set.iter()
        .map(|(topic, partitions)| v1::TopicPartitions {
            topic: topic.clone(),
            partitions: partitions.clone(),
        })
        .collect()
}

fn from_wire(topics: Vec<v1::TopicPartitions>) -> PartitionSet {
    let mut out = PartitionSet::new();
    for t in topics {
        let entry = out.entry(t.topic).or_default();
        entry.extend(t.partitions);
        entry.sort_unstable();
        entry.dedup();
    }
    out
}

fn committed(o: v1::CommittedOffset) -> CommittedOffset {
    CommittedOffset {
        topic: o.topic,
        partition: o.partition,
        offset: o.offset,
        leader_epoch: o.leader_epoch,
        metadata: o.metadata,
        commit_time_ms: o.commit_time_ms,
    }
}

pub(crate) fn offsets_to_wire(offsets: Vec<OffsetToCommit>) -> Vec<v1::OffsetToCommit> {
    offsets
        .into_iter()
        .map(|o| v1::OffsetToCommit {
            topic: o.topic,
            partition: o.partition,
            offset: o.offset,
            leader_epoch: o.leader_epoch,
            metadata: o.metadata,
        })
        .collect()
}

impl Client {
    /// The node coordinating `group` (its id and client address).
    pub async fn find_coordinator(&self, group: &str) -> Result<(u64, String), ClientError> {
        let answer = self
            .groups
            .clone()
            .find_coordinator(self.call(v1::FindCoordinatorRequest {
                group: group.to_string(),
            }))
            .await?
            .into_inner();
        Ok((answer.node_id, answer.address))
    }

    /// One heartbeat; the call may wait up to `heartbeat.wait` (a long poll).
    pub async fn group_heartbeat(
        &self,
        heartbeat: Heartbeat,
    ) -> Result<HeartbeatAnswer, ClientError> {
        let wait_ms = u32::try_from(heartbeat.wait.as_millis()).unwrap_or(u32::MAX);
        let mut request = self.call(v1::GroupHeartbeatRequest {
            group: heartbeat.group,
            member_id: heartbeat.member_id,
            member_epoch: heartbeat.member_epoch,
            instance_id: heartbeat.instance_id,
            rack: heartbeat.rack,
            rebalance_timeout_ms: heartbeat.rebalance_timeout_ms,
            topics: heartbeat.topics.map(|names| v1::SubscribedTopics { names }),
            pattern: heartbeat.pattern,
            server_assignor: heartbeat.server_assignor,
            owned: heartbeat.owned.as_ref().map(|owned| v1::OwnedPartitions {
                topics: to_wire(owned),
            }),
            client_id: heartbeat.client_id,
            wait_ms,
        });
        // The long poll must not be cut by the ordinary deadline.
        request.set_timeout(heartbeat.wait + Duration::from_secs(30));
        let answer = self.groups.clone().heartbeat(request).await?.into_inner();
        Ok(HeartbeatAnswer {
            member_id: answer.member_id,
            member_epoch: answer.member_epoch,
            heartbeat_interval: Duration::from_millis(answer.heartbeat_interval_ms.max(0) as u64),
            session_timeout: Duration::from_millis(answer.session_timeout_ms.max(0) as u64),
            state: match v1::MemberState::try_from(answer.state) {
                Ok(v1::MemberState::UnrevokedPartitions) => MemberState::UnrevokedPartitions,
                Ok(v1::MemberState::UnreleasedPartitions) => MemberState::UnreleasedPartitions,
                _ => MemberState::Stable,
            },
            assignment: from_wire(answer.assignment),
        })
    }

    /// Commits offsets as `member_id` at `member_epoch` (empty and -1 for a consumer
    /// outside the group's membership). All or nothing.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(), ClientError> {
        self.groups
            .clone()
            .commit_offsets(self.call(v1::CommitOffsetsRequest {
                group: group.to_string(),
                member_id: member_id.to_string(),
                member_epoch,
                offsets: offsets_to_wire(offsets),
            }))
            .await?;
        Ok(())
    }

    /// Committed offsets of the given partitions (empty: all with one).
    pub async fn fetch_committed(
        &self,
        group: &str,
        partitions: &PartitionSet,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let answer = self
            .groups
            .clone()
            .fetch_offsets(self.call(v1::FetchOffsetsRequest {
                group: group.to_string(),
                partitions: to_wire(partitions),
            }))
            .await?
            .into_inner();
        Ok(answer.offsets.into_iter().map(committed).collect())
    }

    /// The groups this node coordinates.
    pub async fn list_groups_here(&self) -> Result<Vec<GroupSummary>, ClientError> {
        let answer = self
            .groups
            .clone()
            .list_groups(self.call(v1::ListGroupsRequest {}))
            .await?
            .into_inner();
        Ok(answer
            .groups
            .into_iter()
            .map(|g| GroupSummary {
                group: g.group,
                state: g.state,
                members: g.members,
                coordinator: g.coordinator,
            })
            .collect())
    }

    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let d = self
            .groups
            .clone()
            .describe_group(self.call(v1::DescribeGroupRequest {
                group: group.to_string(),
            }))
            .await?
            .into_inner();
        Ok(GroupDescription {
            group: d.group,
            state: d.state,
            group_epoch: d.group_epoch,
            assignment_epoch: d.assignment_epoch,
            assignor: d.assignor,
            coordinator: d.coordinator,
            session_timeout: Duration::from_millis(d.session_timeout_ms.max(0) as u64),
            heartbeat_interval: Duration::from_millis(d.heartbeat_interval_ms.max(0) as u64),
            members: d
                .members
                .into_iter()
                .map(|m| GroupMemberInfo {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    rack: m.rack,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    subscribed_topics: m.subscribed_topics,
                    pattern: m.pattern,
                    member_epoch: m.member_epoch,
                    state: m.state,
                    assigned: from_wire(m.assigned),
                    revoking: from_wire(m.revoking),
                    target: from_wire(m.target),
                })
                .collect(),
            offsets: d.offsets.into_iter().map(committed).collect(),
        })
    }

    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        self.groups
            .clone()
            .delete_group(self.call(v1::DeleteGroupRequest {
                group: group.to_string(),
            }))
            .await?;
        Ok(())
    }

    /// Sets a group's own session timeout and heartbeat interval (`None`: the
    /// coordinator's settings). Send it to the group's coordinator.
    pub async fn alter_group(
        &self,
        group: &str,
        session_timeout: Option<Duration>,
        heartbeat_interval: Option<Duration>,
    ) -> Result<(), ClientError> {
        let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        self.groups
            .clone()
            .alter_group(self.call(v1::AlterGroupRequest {
                group: group.to_string(),
                session_timeout_ms: session_timeout.map(ms),
                heartbeat_interval_ms: heartbeat_interval.map(ms),
            }))
            .await?;
        Ok(())
    }

    /// Sets the committed offsets of a group without members.
    pub async fn reset_offsets(
        &self,
        group: &str,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(), ClientError> {
        self.groups
            .clone()
            .reset_offsets(self.call(v1::ResetOffsetsRequest {
                group: group.to_string(),
                offsets: offsets_to_wire(offsets),
            }))
            .await?;
        Ok(())
    }
}
