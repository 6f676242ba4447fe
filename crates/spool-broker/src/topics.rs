//! Topic administration: every change goes to the controller (wherever it leads) and is
//! answered once this node's metadata shows it; descriptions come from the metadata and,
//! for replicas hosted here, from the replicas themselves.

use std::collections::BTreeMap;
use std::path::PathBuf;

use spool_controller::{Command, NewTopic};

use crate::broker::{Broker, PartitionInfo, TopicInfo, TopicState};
use crate::error::BrokerError;
use crate::topic_config::TopicConfig;

impl Broker {
    pub(crate) fn partition_dir(&self, topic: &str, index: u32) -> PathBuf {
        self.options.data_dir.join(format!("{topic}-{index}"))
    }

    /// Creates a topic placed by the controller; `partitions` and `replication_factor`
    /// of 0 take the defaults. `assignments`, when given, names each partition's
    /// replicas, the preferred leader first.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        self.create_topic_placed(
            name,
            partitions,
            replication_factor,
            configs,
            Vec::new(),
            validate_only,
        )
        .await
    }

    pub async fn create_topic_placed(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
        assignments: Vec<Vec<u64>>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        refuse_internal(name, "create")?;
        self.create_any_topic(
            name,
            partitions,
            replication_factor,
            configs,
            assignments,
            validate_only,
        )
        .await
    }

    /// Creates a topic, internal ones included.
    pub(crate) async fn create_any_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
        assignments: Vec<Vec<u64>>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        TopicConfig::resolve(&self.options.topic_defaults, &configs)?;
        self.controller
            .execute(Command::CreateTopic(NewTopic {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs,
                assignments,
                validate_only,
            }))
            .await?;
        if !validate_only {
            self.reconcile(&self.controller.current()).await;
        }
        Ok(())
    }

    /// Deletes a topic: every node removes its replicas and their data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        refuse_internal(name, "delete")?;
        self.controller
            .execute(Command::DeleteTopic {
                name: name.to_string(),
            })
            .await?;
        self.reconcile(&self.controller.current()).await;
        Ok(())
    }

    /// Grows a topic to `total` partitions.
    pub async fn create_partitions(&self, name: &str, total: u32) -> Result<(), BrokerError> {
        refuse_internal(name, "add partitions to")?;
        self.controller
            .execute(Command::CreatePartitions {
                name: name.to_string(),
                total,
            })
            .await?;
        self.reconcile(&self.controller.current()).await;
        Ok(())
    }

    /// Sets and resets topic configs.
    pub async fn alter_configs(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        reset: Vec<String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        refuse_internal(name, "change the configs of")?;
        let state = self.topic(name)?;
        let mut configs = state.record.configs.clone();
        for key in &reset {
            if !crate::topic_config::CONFIG_NAMES.contains(&key.as_str()) {
                return Err(BrokerError::InvalidConfig {
                    name: key.clone(),
                    reason: "unknown config".into(),
                });
            }
            configs.remove(key);
        }
        configs.extend(set);
        TopicConfig::resolve(&self.options.topic_defaults, &configs)?;
        if validate_only {
            return Ok(());
        }
        self.controller
            .execute(Command::SetTopicConfigs {
                name: name.to_string(),
                configs,
            })
            .await?;
        self.reconcile(&self.controller.current()).await;
        Ok(())
    }

    /// Every topic, without partition details.
    pub fn list_topics(&self, include_internal: bool) -> Vec<TopicInfo> {
        self.topics
            .read()
            .values()
            .filter(|t| include_internal || !t.record.name.starts_with("__"))
            .map(|t| self.info(t, false))
            .collect()
    }

    /// One topic with its partitions and configs.
    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo, BrokerError> {
        let state = self.topic(name)?;
        Ok(self.info(&state, true))
    }

    pub(crate) fn info(&self, state: &TopicState, details: bool) -> TopicInfo {
        let metadata = self.controller.current();
        let partitions = state
            .record
            .partitions
            .iter()
            .zip(&state.partitions)
            .enumerate()
            .map(|(index, (record, local))| {
                let replicas: Vec<u64> = record.target().iter().map(|r| r.broker).collect();
                let address = |id: Option<u64>| {
                    id.and_then(|id| metadata.client_address_of(id).map(str::to_string))
                };
                match local {
                    Some(p) => {
                        let hint = p.replica.leader();
                        let in_sync = if p.replica.is_leader() {
                            p.replica.in_sync_voters()
                        } else {
                            record.in_sync.clone()
                        };
                        PartitionInfo {
                            partition: index as u32,
                            leader: hint.node,
                            // Raft knows the leader by its cluster address; clients
                            // need its client address.
                            leader_address: address(hint.node),
                            replicas,
                            in_sync_replicas: in_sync,
                            // A replica that knows the leader is in its term; the
                            // controller's report may lag a failover.
                            leader_epoch: if hint.node.is_some() {
                                p.replica.term()
                            } else {
                                0
                            },
                            log_start_offset: if details { p.reader.start_offset() } else { 0 },
                            high_watermark: p.high_watermark(),
                            size_bytes: if details { p.reader.size_bytes() } else { 0 },
                        }
                    }
                    None => PartitionInfo {
                        partition: index as u32,
                        leader: record.leader,
                        leader_address: address(record.leader),
                        replicas,
                        in_sync_replicas: record.in_sync.clone(),
                        leader_epoch: record.leader_term,
                        log_start_offset: -1,
                        high_watermark: -1,
                        size_bytes: 0,
                    },
                }
            })
            .collect();
        TopicInfo {
            name: state.record.name.clone(),
            id: state.record.id.clone(),
            replication_factor: state.record.replication_factor,
            internal: state.record.name.starts_with("__"),
            partitions,
            configs: state.config.entries(&state.record.configs),
        }
    }
}

/// Topics whose names start with `__` are Spool's own (`__consumer_offsets`): clients may
/// read and describe them, not create, write, grow, reconfigure or delete them.
pub(crate) fn refuse_internal(name: &str, action: &'static str) -> Result<(), BrokerError> {
    if name.starts_with("__") {
        return Err(BrokerError::InternalTopic {
            topic: name.to_string(),
            action,
        });
    }
    Ok(())
}
