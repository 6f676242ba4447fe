//! Calls to other nodes: forwarding commands to the controller leader, and asking a
//! partition's leader to hand leadership over. One lazily connected channel per address.

use std::collections::HashMap;
use std::time::Duration;

use spool_proto::v1;
use spool_proto::v1::controller_client::ControllerClient;
use spool_proto::v1::replica_admin_client::ReplicaAdminClient;
use tonic::transport::{Channel, Endpoint};

use crate::bootstrap::VoterStatus;
use crate::commands::{Command, HeartbeatReply, Registration};
use crate::error::ControllerError;
use crate::state::{BrokerId, LeaderReport};

const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A transaction's outcome, to be marked in partitions another node leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMarkers {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
    pub partitions: Vec<(String, u32)>,
    /// See `WriteTxnMarkersRequest.bumped`.
    pub bumped: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Peers {
    channels: parking_lot::Mutex<HashMap<String, Channel>>,
}

impl Peers {
    fn channel(&self, address: &str) -> Result<Channel, ControllerError> {
        if let Some(channel) = self.channels.lock().get(address) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| unreachable(address, e))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT)
            // A peer cut off or paused answers nothing and resets nothing: pings find it
            // within seconds instead of the call timing out.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            .connect_lazy();
        self.channels
            .lock()
            .insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    fn controller(&self, address: &str) -> Result<ControllerClient<Channel>, ControllerError> {
        Ok(ControllerClient::new(self.channel(address)?)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024))
    }

    pub(crate) async fn transfer_leader(
        &self,
        address: &str,
        topic: &str,
        partition: u32,
        to: BrokerId,
    ) -> Result<(), ControllerError> {
        let mut client = ReplicaAdminClient::new(self.channel(address)?);
        let response = client
            .transfer_leader(v1::TransferLeaderRequest {
                topic: topic.to_string(),
                partition,
                to,
            })
            .await
            .map_err(|s| status(address, s))?
            .into_inner();
        answer(response.error).map(drop)
    }

    /// Asks the node at `address` (its cluster listener) to append a transaction marker
    /// to each of `partitions` it leads; one answer per partition.
    pub(crate) async fn write_txn_markers(
        &self,
        address: &str,
        markers: TxnMarkers,
    ) -> Result<Vec<Result<(), ControllerError>>, ControllerError> {
        let request = v1::WriteTxnMarkersRequest {
            producer_id: markers.producer_id,
            producer_epoch: i32::from(markers.producer_epoch),
            commit: markers.commit,
            coordinator_epoch: markers.coordinator_epoch,
            bumped: markers.bumped,
            partitions: markers
                .partitions
                .into_iter()
                .map(|(topic, partition)| v1::TopicPartition { topic, partition })
                .collect(),
        };
        let mut client = ReplicaAdminClient::new(self.channel(address)?);
        let response = client
            .write_txn_markers(request)
            .await
            .map_err(|s| status(address, s))?
            .into_inner();
        Ok(response
            .results
            .into_iter()
            .map(|r| answer(r.error))
            .collect())
    }

    pub(crate) async fn forward(
        &self,
        address: &str,
        command: Command,
    ) -> Result<i64, ControllerError> {
        let mut client = self.controller(address)?;
        let response = match command {
            Command::CreateTopic(t) => {
                client
                    .create_topic(v1::ControllerCreateTopicRequest {
                        name: t.name,
                        partitions: t.partitions,
                        replication_factor: t.replication_factor,
                        configs: t.configs.into_iter().collect(),
                        assignments: t
                            .assignments
                            .into_iter()
                            .map(|brokers| v1::ReplicaList { brokers })
                            .collect(),
                        validate_only: t.validate_only,
                    })
                    .await
            }
            Command::DeleteTopic { name } => {
                client
                    .delete_topic(v1::ControllerDeleteTopicRequest { name })
                    .await
            }
            Command::SetTopicConfigs { name, configs } => {
                client
                    .set_topic_configs(v1::SetTopicConfigsRequest {
                        name,
                        configs: configs.into_iter().collect(),
                    })
                    .await
            }
            Command::CreatePartitions { name, total } => {
                client
                    .create_partitions(v1::CreatePartitionsRequest { name, total })
                    .await
            }
            Command::Reassign {
                topic,
                partition,
                replicas,
            } => {
                client
                    .reassign_partition(v1::ReassignPartitionRequest {
                        topic,
                        partition,
                        replicas,
                    })
                    .await
            }
            Command::Drain { broker, drain } => {
                client
                    .drain_broker(v1::DrainBrokerRequest {
                        broker_id: broker,
                        drain,
                    })
                    .await
            }
            Command::CompleteReassignment {
                topic,
                partition,
                group,
            } => {
                client
                    .complete_reassignment(v1::CompleteReassignmentRequest {
                        topic,
                        partition,
                        group,
                    })
                    .await
            }
            Command::AllocateProducerIds {
                broker,
                count,
                request,
            } => {
                client
                    .allocate_producer_ids(v1::AllocateProducerIdsRequest {
                        broker_id: broker,
                        count,
                        request,
                    })
                    .await
            }
        }
        .map_err(|s| status(address, s))?
        .into_inner();
        answer(response.error).map(|()| response.metadata_offset)
    }

    pub(crate) async fn register(
        &self,
        address: &str,
        registration: &Registration,
    ) -> Result<i64, ControllerError> {
        let response = self
            .controller(address)?
            .register_broker(v1::RegisterBrokerRequest {
                broker_id: registration.broker,
                incarnation: registration.incarnation,
                address: registration.address.clone(),
                rack: registration.rack.clone().unwrap_or_default(),
                client_address: registration.client_address.clone(),
                external_address: registration.external_address.clone().unwrap_or_default(),
            })
            .await
            .map_err(|s| status(address, s))?
            .into_inner();
        answer(response.error).map(|()| response.metadata_offset)
    }

    pub(crate) async fn heartbeat(
        &self,
        address: &str,
        broker: BrokerId,
        incarnation: u64,
        reports: Vec<LeaderReport>,
        stopping: bool,
    ) -> Result<HeartbeatReply, ControllerError> {
        let response = self
            .controller(address)?
            .broker_heartbeat(v1::BrokerHeartbeatRequest {
                broker_id: broker,
                incarnation,
                leading: reports.into_iter().map(to_wire_report).collect(),
                stopping,
            })
            .await
            .map_err(|s| status(address, s))?
            .into_inner();
        answer(response.error)?;
        Ok(HeartbeatReply {
            register: response.register,
            metadata_offset: response.metadata_offset,
        })
    }
}

impl Peers {
    /// Where a voter's replica of the metadata log stands (see `bootstrap`).
    pub(crate) async fn voter_status(
        &self,
        address: &str,
        asking: BrokerId,
    ) -> Result<VoterStatus, ControllerError> {
        let response = self
            .controller(address)?
            .voter_status(v1::VoterStatusRequest { broker_id: asking })
            .await
            .map_err(|s| status(address, s))?
            .into_inner();
        Ok(VoterStatus {
            has_log: response.has_log,
            leader_committed: response.leader_ready.then_some(response.committed_index),
        })
    }
}

fn to_wire_report(report: LeaderReport) -> v1::PartitionLeader {
    v1::PartitionLeader {
        topic: report.topic,
        partition: report.partition,
        group: report.group,
        term: report.term,
        in_sync: report.in_sync,
    }
}

pub(crate) fn from_wire_report(broker: BrokerId, report: v1::PartitionLeader) -> LeaderReport {
    LeaderReport {
        topic: report.topic,
        partition: report.partition,
        group: report.group,
        leader: broker,
        term: report.term,
        in_sync: report.in_sync,
    }
}

/// The error a node answered with, as this node's error.
fn answer(error: Option<v1::Error>) -> Result<(), ControllerError> {
    match error {
        None => Ok(()),
        Some(e) => Err(from_wire(e)),
    }
}

pub(crate) fn from_wire(error: v1::Error) -> ControllerError {
    let code = error.error_code();
    if code == spool_types::ErrorCode::NotController {
        return ControllerError::NotController {
            leader: error
                .leader
                .as_ref()
                .map(|l| l.node_id)
                .filter(|id| *id != 0),
            address: error.leader.map(|l| l.address).filter(|a| !a.is_empty()),
        };
    }
    ControllerError::Remote {
        code,
        message: error.message,
    }
}

/// This node's error as the wire carries it.
pub fn to_wire(error: &ControllerError) -> v1::Error {
    let mut wire = v1::Error::new(error.code(), error.to_string());
    if let ControllerError::NotController {
        leader: Some(id),
        address,
    } = error
    {
        wire.leader = Some(v1::LeaderHint {
            node_id: *id,
            address: address.clone().unwrap_or_default(),
        });
    }
    wire
}

fn status(address: &str, status: tonic::Status) -> ControllerError {
    let error = spool_proto::status_error(&status);
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            if error.error_code() == spool_types::ErrorCode::Unknown =>
        {
            unreachable(address, status.message())
        }
        _ => from_wire(error),
    }
}

fn unreachable(address: &str, reason: impl std::fmt::Display) -> ControllerError {
    ControllerError::Unreachable {
        address: address.to_string(),
        reason: reason.to_string(),
    }
}
