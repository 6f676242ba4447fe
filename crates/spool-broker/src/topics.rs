//! Topic administration on this node: creating topics (placed here, or as the cluster
//! placed them), deleting them, changing their configs, and describing them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use spool_raft::{Members, ReplicaSpec};
use spool_types::TopicName;

use crate::broker::{Broker, PartitionInfo, TopicInfo, TopicState};
use crate::error::BrokerError;
use crate::partition::Partition;
use crate::store::{Placement, TopicMeta, random_id};
use crate::topic_config::TopicConfig;

/// A topic as the cluster placed it: what `host_topic` creates on each node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlacement {
    pub name: String,
    /// Distinguishes the topic from an earlier one of the same name.
    pub id: String,
    pub configs: BTreeMap<String, String>,
    /// Per partition: its Raft group and replicas.
    pub partitions: Vec<Placement>,
}

impl Broker {
    pub(crate) async fn open_topic(
        &self,
        meta: TopicMeta,
        config: TopicConfig,
    ) -> Result<TopicState, BrokerError> {
        let mut partitions = Vec::with_capacity(meta.placements.len());
        for (index, placement) in meta.placements.iter().enumerate() {
            if !placement.members.contains_key(&self.options.node_id) {
                partitions.push(None);
                continue;
            }
            let replica = self
                .raft
                .create_replica(ReplicaSpec {
                    group: placement.group,
                    dir: self.partition_dir(&meta.name, index as u32),
                    log_config: config.log_config(self.options.flush),
                    initial_members: placement.members.clone(),
                })
                .await?;
            partitions.push(Some(Arc::new(Partition::new(
                meta.name.clone(),
                index as u32,
                replica,
                config.retention(),
            ))));
        }
        Ok(TopicState {
            meta,
            config,
            partitions,
        })
    }

    pub(crate) fn partition_dir(&self, topic: &str, index: u32) -> PathBuf {
        self.options.data_dir.join(format!("{topic}-{index}"))
    }

    /// Creates a topic whose replicas all live on this node; `partitions` and
    /// `replication_factor` of 0 take the defaults.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let name = TopicName::new(name)?.as_str().to_string();
        let partitions = if partitions == 0 {
            self.options.default_partitions
        } else {
            partitions
        };
        if partitions > self.options.max_partitions {
            return Err(BrokerError::InvalidPartitions {
                requested: partitions,
                max: self.options.max_partitions,
            });
        }
        let replication_factor = replication_factor.max(1);
        if replication_factor > 1 {
            return Err(BrokerError::InvalidReplicationFactor {
                requested: replication_factor,
                brokers: 1,
            });
        }
        TopicConfig::resolve(&self.options.topic_defaults, &configs)?;
        if validate_only {
            return if self.store.lock().await.file.topics.contains_key(&name) {
                Err(BrokerError::TopicExists { topic: name })
            } else {
                Ok(())
            };
        }
        let members: Members = [(
            self.options.node_id,
            self.options.advertised_address.clone(),
        )]
        .into();
        let placements = {
            let mut store = self.store.lock().await;
            let first = store.file.next_group;
            store.file.next_group += u64::from(partitions);
            (0..u64::from(partitions))
                .map(|i| Placement {
                    group: first + i,
                    members: members.clone(),
                })
                .collect()
        };
        self.host_topic(TopicPlacement {
            name,
            id: random_id(),
            configs,
            partitions: placements,
        })
        .await
    }

    /// Records a topic as placed and opens this node's replicas of it. Every node named
    /// in a placement is told the same; each creates the group with the same members.
    pub async fn host_topic(&self, placement: TopicPlacement) -> Result<(), BrokerError> {
        let name = TopicName::new(&placement.name)?.as_str().to_string();
        if placement.partitions.is_empty()
            || placement.partitions.iter().any(|p| p.members.is_empty())
        {
            return Err(BrokerError::InvalidRequest {
                reason: "every partition needs at least one replica".into(),
            });
        }
        let config = TopicConfig::resolve(&self.options.topic_defaults, &placement.configs)?;
        let mut store = self.store.lock().await;
        if store.file.topics.contains_key(&name) {
            return Err(BrokerError::TopicExists { topic: name });
        }
        for index in 0..placement.partitions.len() as u32 {
            // A directory left by a topic of this name that is gone is not ours to reuse.
            let stale = self.partition_dir(&name, index);
            if stale.exists() {
                tracing::warn!(dir = %stale.display(), "removing a stale partition directory");
                let _ = std::fs::remove_dir_all(&stale);
            }
        }
        let replication_factor = placement
            .partitions
            .iter()
            .map(|p| p.members.len() as u32)
            .max()
            .unwrap_or(1);
        let meta = TopicMeta {
            name: name.clone(),
            id: placement.id,
            partitions: placement.partitions.len() as u32,
            replication_factor,
            configs: placement.configs,
            placements: placement.partitions,
        };
        let groups: Vec<u64> = meta.placements.iter().map(|p| p.group).collect();
        if let Some(top) = groups.iter().max() {
            store.file.next_group = store.file.next_group.max(top + 1);
        }
        // Durable first: a crash after this reopens the replicas instead of losing them.
        store.file.topics.insert(name.clone(), meta.clone());
        store.save()?;
        let state = match self.open_topic(meta, config).await {
            Ok(state) => state,
            Err(error) => {
                store.file.topics.remove(&name);
                store.save()?;
                return Err(error);
            }
        };
        self.topics.write().insert(name, Arc::new(state));
        self.epoch.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Deletes a topic and this node's data of it.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let mut store = self.store.lock().await;
        if store.file.topics.remove(name).is_none() {
            return Err(BrokerError::UnknownTopic {
                topic: name.to_string(),
            });
        }
        // Forget it durably first: a crash from here on must not bring it back.
        store.save()?;
        let state = self.topics.write().remove(name);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(state) = state {
            for partition in state.partitions.iter().flatten() {
                self.raft
                    .remove_replica(partition.replica.group(), true)
                    .await?;
            }
        }
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
        let mut store = self.store.lock().await;
        let Some(meta) = store.file.topics.get(name) else {
            return Err(BrokerError::UnknownTopic {
                topic: name.to_string(),
            });
        };
        let mut configs = meta.configs.clone();
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
        let config = TopicConfig::resolve(&self.options.topic_defaults, &configs)?;
        if validate_only {
            return Ok(());
        }
        let mut meta = meta.clone();
        meta.configs = configs;
        store.file.topics.insert(name.to_string(), meta.clone());
        store.save()?;
        let partitions = {
            let mut topics = self.topics.write();
            let Some(old) = topics.get(name).cloned() else {
                return Ok(());
            };
            topics.insert(
                name.to_string(),
                Arc::new(TopicState {
                    meta,
                    config,
                    partitions: old.partitions.clone(),
                }),
            );
            old.partitions.clone()
        };
        for partition in partitions.iter().flatten() {
            partition
                .replica
                .set_log_config(config.log_config(self.options.flush))?;
            *partition.retention.lock() = config.retention();
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Every topic, without partition details.
    pub fn list_topics(&self, include_internal: bool) -> Vec<TopicInfo> {
        self.topics
            .read()
            .values()
            .filter(|t| include_internal || !t.meta.name.starts_with("__"))
            .map(|t| self.info(t, false))
            .collect()
    }

    /// One topic with its partitions and configs.
    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo, BrokerError> {
        let state = self.topic(name)?;
        Ok(self.info(&state, true))
    }

    pub(crate) fn info(&self, state: &TopicState, details: bool) -> TopicInfo {
        let partitions = state
            .meta
            .placements
            .iter()
            .zip(&state.partitions)
            .enumerate()
            .map(|(index, (placement, local))| {
                let replicas: Vec<u64> = placement.members.keys().copied().collect();
                match local {
                    Some(p) => {
                        let hint = p.replica.leader();
                        let (voters, _) = p.replica.members();
                        PartitionInfo {
                            partition: index as u32,
                            leader: hint.node,
                            leader_address: hint.address,
                            replicas: if voters.is_empty() {
                                replicas
                            } else {
                                voters.iter().copied().collect()
                            },
                            in_sync_replicas: p.replica.in_sync_voters(),
                            log_start_offset: if details { p.reader.start_offset() } else { 0 },
                            high_watermark: p.high_watermark(),
                            size_bytes: if details { p.reader.size_bytes() } else { 0 },
                        }
                    }
                    None => PartitionInfo {
                        partition: index as u32,
                        leader: None,
                        leader_address: None,
                        replicas,
                        in_sync_replicas: Vec::new(),
                        log_start_offset: -1,
                        high_watermark: -1,
                        size_bytes: 0,
                    },
                }
            })
            .collect();
        TopicInfo {
            name: state.meta.name.clone(),
            id: state.meta.id.clone(),
            replication_factor: state.meta.replication_factor,
            internal: state.meta.name.starts_with("__"),
            partitions,
            configs: state.config.entries(&state.meta.configs),
        }
    }
}

/// Removes partition directories a crash left half-deleted.
pub(crate) fn remove_deleted_dirs(data_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".deleted")
            && let Err(error) = std::fs::remove_dir_all(entry.path())
        {
            tracing::warn!(dir = %entry.path().display(), %error, "could not remove a deleted partition");
        }
    }
}
