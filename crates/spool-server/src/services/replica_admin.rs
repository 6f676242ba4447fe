//! The `spool.v1.ReplicaAdmin` service: node-to-node calls about this node's replicas,
//! and link faults for tests.

use std::sync::Arc;

use spool_broker::{Broker, BrokerError};
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

#[tonic::async_trait]
impl v1::replica_admin_server::ReplicaAdmin for ReplicaAdminService {
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

    async fn write_txn_markers(
        &self,
        request: Request<v1::WriteTxnMarkersRequest>,
    ) -> Result<Response<v1::WriteTxnMarkersResponse>, Status> {
        let r = request.into_inner();
        let epoch = i16::try_from(r.producer_epoch)
            .map_err(|_| Status::invalid_argument("producer epoch out of range"))?;
        let partitions: Vec<(String, u32)> = r
            .partitions
            .into_iter()
            .map(|p| (p.topic, p.partition))
            .collect();
        let results = self
            .broker
            .write_local_markers(&spool_broker::TxnMarkers {
                producer_id: r.producer_id,
                producer_epoch: epoch,
                commit: r.commit,
                coordinator_epoch: r.coordinator_epoch,
                partitions,
                bumped: r.bumped,
            })
            .await;
        Ok(Response::new(v1::WriteTxnMarkersResponse {
            results: results
                .into_iter()
                .map(|outcome| v1::ReplicaAdminResponse {
                    error: outcome.err().as_ref().map(wire_error),
                })
                .collect(),
        }))
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
