//! The `spool.v1.ReplicaAdmin` service: placing partition replicas on this node and
//! changing their groups' membership.

use std::sync::Arc;

use spool_broker::{Broker, BrokerError, Placement, TopicPlacement};
use spool_proto::v1;
use tonic::{Request, Response, Status};

use super::wire_error;

#[derive(Debug, Clone)]
pub(crate) struct ReplicaAdminService {
    pub broker: Arc<Broker>,
    /// Whether `SetLinkFaults` may be used (tests only).
    pub fault_injection: bool,
}

fn answer(outcome: Result<(), BrokerError>) -> Result<Response<v1::ReplicaAdminResponse>, Status> {
    Ok(Response::new(v1::ReplicaAdminResponse {
        error: outcome.err().as_ref().map(wire_error),
    }))
}

fn member(node: Option<v1::ReplicaMember>) -> Result<v1::ReplicaMember, Status> {
    node.filter(|n| n.node_id != 0 && !n.address.is_empty())
        .ok_or_else(|| Status::invalid_argument("a replica change needs a node id and address"))
}

#[tonic::async_trait]
impl v1::replica_admin_server::ReplicaAdmin for ReplicaAdminService {
    async fn host_topic(
        &self,
        request: Request<v1::HostTopicRequest>,
    ) -> Result<Response<v1::ReplicaAdminResponse>, Status> {
        let request = request.into_inner();
        let placement = TopicPlacement {
            name: request.name,
            id: request.topic_id,
            configs: request.configs.into_iter().collect(),
            partitions: request
                .partitions
                .into_iter()
                .map(|p| Placement {
                    group: p.group,
                    members: p
                        .replicas
                        .into_iter()
                        .map(|r| (r.node_id, r.address))
                        .collect(),
                })
                .collect(),
        };
        answer(self.broker.host_topic(placement).await)
    }

    async fn drop_topic(
        &self,
        request: Request<v1::DropTopicRequest>,
    ) -> Result<Response<v1::ReplicaAdminResponse>, Status> {
        answer(self.broker.delete_topic(&request.into_inner().name).await)
    }

    async fn join_partition(
        &self,
        request: Request<v1::PartitionRef>,
    ) -> Result<Response<v1::ReplicaAdminResponse>, Status> {
        let r = request.into_inner();
        answer(self.broker.join_partition(&r.topic, r.partition).await)
    }

    async fn add_replica(
        &self,
        request: Request<v1::ChangeReplicaRequest>,
    ) -> Result<Response<v1::ReplicaAdminResponse>, Status> {
        let r = request.into_inner();
        let node = member(r.node)?;
        answer(
            self.broker
                .add_replica(&r.topic, r.partition, node.node_id, node.address)
                .await,
        )
    }

    async fn remove_replica(
        &self,
        request: Request<v1::ChangeReplicaRequest>,
    ) -> Result<Response<v1::ReplicaAdminResponse>, Status> {
        let r = request.into_inner();
        let node = r
            .node
            .filter(|n| n.node_id != 0)
            .ok_or_else(|| Status::invalid_argument("a replica change needs a node id"))?;
        answer(
            self.broker
                .remove_replica(&r.topic, r.partition, node.node_id)
                .await,
        )
    }

    async fn leave_partition(
        &self,
        request: Request<v1::PartitionRef>,
    ) -> Result<Response<v1::ReplicaAdminResponse>, Status> {
        let r = request.into_inner();
        answer(self.broker.leave_partition(&r.topic, r.partition).await)
    }

    async fn transfer_leader(
        &self,
        request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::ReplicaAdminResponse>, Status> {
        let r = request.into_inner();
        answer(
            self.broker
                .transfer_leader(&r.topic, r.partition, r.to)
                .await,
        )
    }

    async fn set_link_faults(
        &self,
        request: Request<v1::SetLinkFaultsRequest>,
    ) -> Result<Response<v1::ReplicaAdminResponse>, Status> {
        if !self.fault_injection {
            return Err(Status::permission_denied(
                "fault injection is disabled on this node",
            ));
        }
        let request = request.into_inner();
        let faults = self.broker.raft().faults();
        if request.heal_all {
            faults.heal_all();
        }
        for node in request.cut {
            faults.cut(node);
        }
        answer(Ok(()))
    }
}
