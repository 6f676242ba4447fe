//! The `spool.v1.Admin` service: topics and their configs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use spool_broker::{Broker, BrokerError, TopicInfo};
use spool_proto::v1;
use tonic::{Request, Response, Status};

use super::{Listener, wire_error};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    pub broker: Arc<Broker>,
    pub metrics: Arc<Metrics>,
    pub listener: Listener,
}

fn result(name: String, outcome: Result<(), BrokerError>) -> v1::TopicResult {
    v1::TopicResult {
        name,
        error: outcome.err().as_ref().map(wire_error),
    }
}

fn describe(info: TopicInfo) -> v1::TopicDescription {
    v1::TopicDescription {
        name: info.name,
        error: None,
        topic_id: info.id,
        replication_factor: info.replication_factor,
        partitions: info
            .partitions
            .into_iter()
            .map(|p| v1::PartitionDescription {
                partition: p.partition,
                leader: p.leader.unwrap_or(0),
                replicas: p.replicas,
                in_sync_replicas: p.in_sync_replicas,
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                size_bytes: p.size_bytes,
            })
            .collect(),
        configs: configs(info.configs),
    }
}

fn configs(entries: Vec<(String, String, bool)>) -> Vec<v1::ConfigEntry> {
    entries
        .into_iter()
        .map(|(name, value, is_default)| v1::ConfigEntry {
            name,
            value,
            is_default,
        })
        .collect()
}

fn admin_answer(outcome: Result<(), BrokerError>) -> Result<Response<v1::AdminResponse>, Status> {
    Ok(Response::new(v1::AdminResponse {
        error: outcome.err().as_ref().map(wire_error),
    }))
}

#[tonic::async_trait]
impl v1::admin_server::Admin for AdminService {
    async fn create_partitions(
        &self,
        request: Request<v1::AdminCreatePartitionsRequest>,
    ) -> Result<Response<v1::AdminResponse>, Status> {
        let r = request.into_inner();
        admin_answer(self.broker.create_partitions(&r.topic, r.total).await)
    }

    async fn reassign_partition(
        &self,
        request: Request<v1::AdminReassignRequest>,
    ) -> Result<Response<v1::AdminResponse>, Status> {
        let r = request.into_inner();
        admin_answer(
            self.broker
                .reassign_partition(&r.topic, r.partition, r.replicas)
                .await,
        )
    }

    async fn drain_broker(
        &self,
        request: Request<v1::AdminDrainRequest>,
    ) -> Result<Response<v1::AdminResponse>, Status> {
        let r = request.into_inner();
        admin_answer(self.broker.drain_broker(r.broker_id, r.drain).await)
    }

    async fn describe_cluster(
        &self,
        _request: Request<v1::DescribeClusterRequest>,
    ) -> Result<Response<v1::DescribeClusterResponse>, Status> {
        let c = self.broker.cluster_summary();
        Ok(Response::new(v1::DescribeClusterResponse {
            cluster_id: c.cluster_id,
            controller_leader: c.controller_leader.unwrap_or(0),
            controller_voters: c.controller_voters,
            brokers: c
                .brokers
                .into_iter()
                .map(|b| v1::ClusterBroker {
                    id: b.id,
                    address: self.listener.address(&self.broker, b.id, b.address),
                    rack: b.rack.unwrap_or_default(),
                    fenced: b.fenced,
                    draining: b.draining,
                    replicas: b.replicas,
                    leaders: b.leaders,
                })
                .collect(),
            metadata_epoch: c.metadata_epoch,
            under_replicated_partitions: c.under_replicated,
            moving_partitions: c.moving,
        }))
    }

    async fn create_topics(
        &self,
        request: Request<v1::CreateTopicsRequest>,
    ) -> Result<Response<v1::CreateTopicsResponse>, Status> {
        let start = Instant::now();
        let request = request.into_inner();
        let mut results = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let configs: BTreeMap<String, String> = topic.configs.into_iter().collect();
            let outcome = self
                .broker
                .create_topic_placed(
                    &topic.name,
                    topic.partitions,
                    topic.replication_factor,
                    configs,
                    topic.assignments.into_iter().map(|a| a.brokers).collect(),
                    request.validate_only,
                )
                .await;
            results.push(result(topic.name, outcome));
        }
        self.metrics
            .admin
            .record(start, results.iter().any(|r| r.error.is_some()));
        Ok(Response::new(v1::CreateTopicsResponse { results }))
    }

    async fn delete_topics(
        &self,
        request: Request<v1::DeleteTopicsRequest>,
    ) -> Result<Response<v1::DeleteTopicsResponse>, Status> {
        let start = Instant::now();
        let mut results = Vec::new();
        for name in request.into_inner().names {
            let outcome = self.broker.delete_topic(&name).await;
            results.push(result(name, outcome));
        }
        self.metrics
            .admin
            .record(start, results.iter().any(|r| r.error.is_some()));
        Ok(Response::new(v1::DeleteTopicsResponse { results }))
    }

    async fn list_topics(
        &self,
        request: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        let start = Instant::now();
        let topics = self
            .broker
            .list_topics(request.into_inner().include_internal)
            .into_iter()
            .map(|t| v1::TopicSummary {
                partitions: t.partitions.len() as u32,
                name: t.name,
                replication_factor: t.replication_factor,
                internal: t.internal,
            })
            .collect();
        self.metrics.admin.record(start, false);
        Ok(Response::new(v1::ListTopicsResponse { topics }))
    }

    async fn describe_topics(
        &self,
        request: Request<v1::DescribeTopicsRequest>,
    ) -> Result<Response<v1::DescribeTopicsResponse>, Status> {
        let start = Instant::now();
        let names = request.into_inner().names;
        let names = if names.is_empty() {
            self.broker
                .list_topics(true)
                .into_iter()
                .map(|t| t.name)
                .collect()
        } else {
            names
        };
        let topics: Vec<v1::TopicDescription> = names
            .into_iter()
            .map(|name| match self.broker.describe_topic(&name) {
                Ok(info) => describe(info),
                Err(error) => v1::TopicDescription {
                    name,
                    error: Some(wire_error(&error)),
                    ..v1::TopicDescription::default()
                },
            })
            .collect();
        self.metrics
            .admin
            .record(start, topics.iter().any(|t| t.error.is_some()));
        Ok(Response::new(v1::DescribeTopicsResponse { topics }))
    }

    async fn describe_configs(
        &self,
        request: Request<v1::DescribeConfigsRequest>,
    ) -> Result<Response<v1::DescribeConfigsResponse>, Status> {
        let start = Instant::now();
        let topics: Vec<v1::TopicConfigs> = request
            .into_inner()
            .topics
            .into_iter()
            .map(|topic| match self.broker.describe_topic(&topic) {
                Ok(info) => v1::TopicConfigs {
                    topic,
                    error: None,
                    configs: configs(info.configs),
                },
                Err(error) => v1::TopicConfigs {
                    topic,
                    error: Some(wire_error(&error)),
                    configs: Vec::new(),
                },
            })
            .collect();
        self.metrics
            .admin
            .record(start, topics.iter().any(|t| t.error.is_some()));
        Ok(Response::new(v1::DescribeConfigsResponse { topics }))
    }

    async fn alter_configs(
        &self,
        request: Request<v1::AlterConfigsRequest>,
    ) -> Result<Response<v1::AlterConfigsResponse>, Status> {
        let start = Instant::now();
        let request = request.into_inner();
        let mut results = Vec::new();
        for change in request.topics {
            let outcome = self
                .broker
                .alter_configs(
                    &change.topic,
                    change.set.into_iter().collect(),
                    change.reset,
                    request.validate_only,
                )
                .await;
            results.push(result(change.topic, outcome));
        }
        self.metrics
            .admin
            .record(start, results.iter().any(|r| r.error.is_some()));
        Ok(Response::new(v1::AlterConfigsResponse { results }))
    }
}
