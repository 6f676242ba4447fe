//! The `spool.v1.Groups` service: consumer groups, their members and committed offsets.

use std::sync::Arc;
use std::time::Duration;

use spool_broker::{Broker, BrokerError, GroupDescription, OffsetEntry};
use spool_group::{Assignment, HeartbeatRequest, MemberState, OffsetCommit};
use spool_proto::v1;
use tonic::{Request, Response, Status};

use super::{Listener, wire_error};

#[derive(Debug, Clone)]
pub(crate) struct GroupsService {
    pub broker: Arc<Broker>,
    pub listener: Listener,
}

fn status(error: &BrokerError) -> Status {
    spool_proto::error_to_status(wire_error(error))
}

fn assignment(topics: Vec<v1::TopicPartitions>) -> Assignment {
    let mut out = Assignment::new();
    for t in topics {
        for p in t.partitions {
            out.insert(&t.topic, p);
        }
    }
    out
}

pub(crate) fn commits(offsets: Vec<v1::OffsetToCommit>) -> Vec<OffsetCommit> {
    offsets
        .into_iter()
        .map(|o| OffsetCommit {
            topic: o.topic,
            partition: o.partition,
            offset: o.offset,
            leader_epoch: o.leader_epoch,
            metadata: o.metadata,
        })
        .collect()
}

fn committed(entry: OffsetEntry) -> v1::CommittedOffset {
    v1::CommittedOffset {
        topic: entry.topic,
        partition: entry.partition,
        offset: entry.offset,
        leader_epoch: entry.leader_epoch,
        metadata: entry.metadata,
        commit_time_ms: entry.commit_ms,
    }
}

fn described(d: GroupDescription) -> v1::DescribeGroupResponse {
    v1::DescribeGroupResponse {
        group: d.group,
        state: d.state,
        group_epoch: d.epoch,
        assignment_epoch: d.target_epoch,
        assignor: d.assignor,
        coordinator: d.coordinator,
        session_timeout_ms: d.session_timeout_ms,
        heartbeat_interval_ms: d.heartbeat_interval_ms,
        members: d
            .members
            .into_iter()
            .map(|m| v1::GroupMember {
                member_id: m.member,
                instance_id: m.instance_id,
                rack: m.rack,
                client_id: m.client_id,
                client_host: m.client_host,
                subscribed_topics: m.topics,
                pattern: m.pattern,
                member_epoch: m.epoch,
                state: m.state,
                assigned: spool_proto::topic_partitions_of(&m.assigned),
                revoking: spool_proto::topic_partitions_of(&m.revoking),
                target: spool_proto::topic_partitions_of(&m.target),
            })
            .collect(),
        offsets: d.offsets.into_iter().map(committed).collect(),
    }
}

#[tonic::async_trait]
impl v1::groups_server::Groups for GroupsService {
    async fn find_coordinator(
        &self,
        request: Request<v1::FindCoordinatorRequest>,
    ) -> Result<Response<v1::FindCoordinatorResponse>, Status> {
        let group = request.into_inner().group;
        let (node_id, address) = self
            .broker
            .find_coordinator(&group)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::FindCoordinatorResponse {
            node_id,
            address: self.listener.address(&self.broker, node_id, address),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::GroupHeartbeatRequest>,
    ) -> Result<Response<v1::GroupHeartbeatResponse>, Status> {
        let client_host = request
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let r = request.into_inner();
        let wait = Duration::from_millis(u64::from(r.wait_ms));
        let heartbeat = HeartbeatRequest {
            group: r.group,
            member: r.member_id,
            epoch: r.member_epoch,
            instance_id: r.instance_id,
            rack: r.rack,
            rebalance_timeout_ms: r.rebalance_timeout_ms,
            topics: r.topics.map(|t| t.names),
            pattern: r.pattern,
            assignor: r.server_assignor,
            owned: r.owned.map(|o| assignment(o.topics)),
            client_id: r.client_id,
            client_host,
        };
        let answer = self
            .broker
            .group_heartbeat(heartbeat, wait)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::GroupHeartbeatResponse {
            member_id: answer.member,
            member_epoch: answer.epoch,
            heartbeat_interval_ms: answer.heartbeat_interval_ms,
            assignment: spool_proto::topic_partitions(answer.assignment.iter()),
            state: match answer.state {
                MemberState::Stable => v1::MemberState::Stable,
                MemberState::UnrevokedPartitions => v1::MemberState::UnrevokedPartitions,
                MemberState::UnreleasedPartitions => v1::MemberState::UnreleasedPartitions,
            } as i32,
            session_timeout_ms: answer.session_timeout_ms,
        }))
    }

    async fn commit_offsets(
        &self,
        request: Request<v1::CommitOffsetsRequest>,
    ) -> Result<Response<v1::CommitOffsetsResponse>, Status> {
        let r = request.into_inner();
        self.broker
            .commit_offsets(&r.group, &r.member_id, r.member_epoch, commits(r.offsets))
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(
        &self,
        request: Request<v1::FetchOffsetsRequest>,
    ) -> Result<Response<v1::FetchOffsetsResponse>, Status> {
        let r = request.into_inner();
        let partitions = (!r.partitions.is_empty()).then(|| {
            r.partitions
                .into_iter()
                .flat_map(|t| {
                    let topic = t.topic;
                    t.partitions.into_iter().map(move |p| (topic.clone(), p))
                })
                .collect()
        });
        let found = self
            .broker
            .fetch_offsets(&r.group, partitions)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::FetchOffsetsResponse {
            offsets: found.into_iter().map(committed).collect(),
        }))
    }

    async fn list_groups(
        &self,
        _request: Request<v1::ListGroupsRequest>,
    ) -> Result<Response<v1::ListGroupsResponse>, Status> {
        let me = self.broker.node().node_id;
        let groups = self
            .broker
            .list_groups()
            .await
            .into_iter()
            .map(|g| v1::GroupSummary {
                group: g.group,
                state: g.state,
                members: g.members as u32,
                coordinator: me,
            })
            .collect();
        Ok(Response::new(v1::ListGroupsResponse { groups }))
    }

    async fn describe_group(
        &self,
        request: Request<v1::DescribeGroupRequest>,
    ) -> Result<Response<v1::DescribeGroupResponse>, Status> {
        let group = request.into_inner().group;
        let description = self
            .broker
            .describe_group(&group)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(described(description)))
    }

    async fn delete_group(
        &self,
        request: Request<v1::DeleteGroupRequest>,
    ) -> Result<Response<v1::DeleteGroupResponse>, Status> {
        let group = request.into_inner().group;
        self.broker
            .delete_group(&group)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::DeleteGroupResponse {}))
    }

    async fn reset_offsets(
        &self,
        request: Request<v1::ResetOffsetsRequest>,
    ) -> Result<Response<v1::ResetOffsetsResponse>, Status> {
        let r = request.into_inner();
        self.broker
            .reset_offsets(&r.group, commits(r.offsets))
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::ResetOffsetsResponse {}))
    }

    async fn alter_group(
        &self,
        request: Request<v1::AlterGroupRequest>,
    ) -> Result<Response<v1::AlterGroupResponse>, Status> {
        let r = request.into_inner();
        let settings = spool_group::GroupSettings {
            session_timeout_ms: r.session_timeout_ms,
            heartbeat_interval_ms: r.heartbeat_interval_ms,
        };
        self.broker
            .alter_group(&r.group, settings)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::AlterGroupResponse {}))
    }
}
