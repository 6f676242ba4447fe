//! The `spool.v1.Controller` gRPC service: what other nodes forward to this one when it
//! leads the controller. Wire types stop here.

use std::sync::Arc;

use spool_proto::v1;
use spool_proto::v1::controller_server::{self, ControllerServer};
use tonic::{Request, Response, Status};

use crate::commands::{Command, NewTopic, Registration};
use crate::controller::Controller;
use crate::error::ControllerError;
use crate::remote::{from_wire_report, to_wire};

/// Largest controller message either way.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ControllerService {
    controller: Arc<Controller>,
}

impl ControllerService {
    pub fn new(controller: Arc<Controller>) -> ControllerServer<Self> {
        // As large as the Admin requests it forwards (explicit assignments of thousands of
        // partitions).
        ControllerServer::new(Self { controller })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    async fn run(&self, command: Command) -> Result<Response<v1::ControllerResponse>, Status> {
        let answer = self.controller.execute_local(command).await;
        Ok(Response::new(respond(answer)))
    }
}

fn respond(answer: Result<i64, ControllerError>) -> v1::ControllerResponse {
    match answer {
        Ok(metadata_offset) => v1::ControllerResponse {
            error: None,
            metadata_offset,
        },
        Err(error) => v1::ControllerResponse {
            error: Some(to_wire(&error)),
            metadata_offset: 0,
        },
    }
}

#[tonic::async_trait]
impl controller_server::Controller for ControllerService {
    async fn register_broker(
        &self,
        request: Request<v1::RegisterBrokerRequest>,
    ) -> Result<Response<v1::RegisterBrokerResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .controller
            .register_local(Registration {
                broker: r.broker_id,
                incarnation: r.incarnation,
                client_address: if r.client_address.is_empty() {
                    r.address.clone()
                } else {
                    r.client_address
                },
                address: r.address,
                external_address: (!r.external_address.is_empty()).then_some(r.external_address),
                rack: (!r.rack.is_empty()).then_some(r.rack),
            })
            .await;
        Ok(Response::new(match answer {
            Ok(metadata_offset) => v1::RegisterBrokerResponse {
                error: None,
                metadata_offset,
            },
            Err(error) => v1::RegisterBrokerResponse {
                error: Some(to_wire(&error)),
                metadata_offset: 0,
            },
        }))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<v1::BrokerHeartbeatRequest>,
    ) -> Result<Response<v1::BrokerHeartbeatResponse>, Status> {
        let r = request.into_inner();
        let broker = r.broker_id;
        let reports = r
            .leading
            .into_iter()
            .map(|l| from_wire_report(broker, l))
            .collect();
        let answer = self
            .controller
            .heartbeat_local(broker, r.incarnation, reports, r.stopping)
            .await;
        Ok(Response::new(match answer {
            Ok(reply) => v1::BrokerHeartbeatResponse {
                error: None,
                register: reply.register,
                metadata_offset: reply.metadata_offset,
            },
            Err(error) => v1::BrokerHeartbeatResponse {
                error: Some(to_wire(&error)),
                register: false,
                metadata_offset: 0,
            },
        }))
    }

    async fn create_topic(
        &self,
        request: Request<v1::ControllerCreateTopicRequest>,
    ) -> Result<Response<v1::ControllerResponse>, Status> {
        let r = request.into_inner();
        self.run(Command::CreateTopic(NewTopic {
            name: r.name,
            partitions: r.partitions,
            replication_factor: r.replication_factor,
            configs: r.configs.into_iter().collect(),
            assignments: r.assignments.into_iter().map(|a| a.brokers).collect(),
            validate_only: r.validate_only,
        }))
        .await
    }

    async fn delete_topic(
        &self,
        request: Request<v1::ControllerDeleteTopicRequest>,
    ) -> Result<Response<v1::ControllerResponse>, Status> {
        let name = request.into_inner().name;
        self.run(Command::DeleteTopic { name }).await
    }

    async fn set_topic_configs(
        &self,
        request: Request<v1::SetTopicConfigsRequest>,
    ) -> Result<Response<v1::ControllerResponse>, Status> {
        let r = request.into_inner();
        self.run(Command::SetTopicConfigs {
            name: r.name,
            configs: r.configs.into_iter().collect(),
        })
        .await
    }

    async fn create_partitions(
        &self,
        request: Request<v1::CreatePartitionsRequest>,
    ) -> Result<Response<v1::ControllerResponse>, Status> {
        let r = request.into_inner();
        self.run(Command::CreatePartitions {
            name: r.name,
            total: r.total,
        })
        .await
    }

    async fn reassign_partition(
        &self,
        request: Request<v1::ReassignPartitionRequest>,
    ) -> Result<Response<v1::ControllerResponse>, Status> {
        let r = request.into_inner();
        self.run(Command::Reassign {
            topic: r.topic,
            partition: r.partition,
            replicas: r.replicas,
        })
        .await
    }

    async fn drain_broker(
        &self,
        request: Request<v1::DrainBrokerRequest>,
    ) -> Result<Response<v1::ControllerResponse>, Status> {
        let r = request.into_inner();
        self.run(Command::Drain {
            broker: r.broker_id,
            drain: r.drain,
        })
        .await
    }

    async fn complete_reassignment(
        &self,
        request: Request<v1::CompleteReassignmentRequest>,
    ) -> Result<Response<v1::ControllerResponse>, Status> {
        let r = request.into_inner();
        self.run(Command::CompleteReassignment {
            topic: r.topic,
            partition: r.partition,
            group: r.group,
        })
        .await
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<v1::AllocateProducerIdsRequest>,
    ) -> Result<Response<v1::ControllerResponse>, Status> {
        let r = request.into_inner();
        self.run(Command::AllocateProducerIds {
            broker: r.broker_id,
            count: r.count,
            request: r.request,
        })
        .await
    }

    async fn voter_status(
        &self,
        _request: Request<v1::VoterStatusRequest>,
    ) -> Result<Response<v1::VoterStatusResponse>, Status> {
        let status = self.controller.voter_status();
        Ok(Response::new(v1::VoterStatusResponse {
            has_log: status.has_log,
            leader_ready: status.leader_committed.is_some(),
            committed_index: status.leader_committed.unwrap_or(0),
        }))
    }
}
