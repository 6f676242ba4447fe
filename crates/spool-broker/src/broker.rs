//! The broker: topics on this node and the operations clients ask of them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use spool_log::{FlushPolicy, ValidBatch};
use spool_types::TopicName;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use crate::OffsetQuery;
use crate::error::BrokerError;
use crate::partition::{Acks, Partition, PartitionKey};
use crate::store::{Store, TopicMeta, random_id};
use crate::topic_config::TopicConfig;
use crate::writer::{AppendRequest, Command, WriterHandle};

/// How a broker runs.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub node_id: u64,
    /// host:port clients use to reach this node's gRPC listener.
    pub advertised_address: String,
    pub data_dir: PathBuf,
    pub flush: FlushPolicy,
    pub topic_defaults: TopicConfig,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    /// Most partitions one topic may have.
    pub max_partitions: u32,
}

/// This node as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: u64,
    pub address: String,
}

/// What a partition's append gave the produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of the first record; -1 when acks=none did not wait to learn it.
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// The batches a produce request carries for one partition.
#[derive(Debug, Clone)]
pub struct ProducePartition {
    pub topic: String,
    pub partition: u32,
    pub batches: Vec<Bytes>,
}

/// A topic as admin calls describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: String,
    pub replication_factor: u32,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
    /// (name, value, is default)
    pub configs: Vec<(String, String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub leader: u64,
    pub replicas: Vec<u64>,
    pub in_sync_replicas: Vec<u64>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
}

/// A partition's offsets and size at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    pub topic: String,
    pub partition: u32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
}

#[derive(Debug)]
struct TopicState {
    meta: TopicMeta,
    config: TopicConfig,
    partitions: Vec<Arc<Partition>>,
}

/// A single node's broker. Cheap to share: hold it in an `Arc`.
#[derive(Debug)]
pub struct Broker {
    options: BrokerOptions,
    cluster_id: String,
    topics: RwLock<BTreeMap<String, Arc<TopicState>>>,
    /// Serialises topic changes and holds their durable record.
    store: Mutex<Store>,
    writer: WriterHandle,
    next_key: AtomicU64,
    epoch: AtomicU64,
    ticker: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// Set when shutdown begins; fetch sessions end on it.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
}

impl Broker {
    /// Opens the data directory, recovers every partition in it, and starts the writer.
    pub async fn open(options: BrokerOptions) -> Result<Arc<Self>, BrokerError> {
        let store = Store::open(&options.data_dir, options.node_id)?;
        remove_deleted_dirs(&options.data_dir);
        let writer =
            WriterHandle::spawn(format!("spool-writer-{}", options.node_id)).map_err(|e| {
                BrokerError::Storage(spool_log::LogError::Io {
                    op: "start the writer thread for",
                    path: options.data_dir.clone(),
                    source: e,
                })
            })?;
        let broker = Arc::new(Self {
            cluster_id: store.file.cluster_id.clone(),
            topics: RwLock::new(BTreeMap::new()),
            store: Mutex::new(store),
            writer,
            next_key: AtomicU64::new(1),
            epoch: AtomicU64::new(1),
            ticker: parking_lot::Mutex::new(None),
            closing: tokio::sync::watch::Sender::new(false),
            options,
        });
        let metas: Vec<TopicMeta> = broker
            .store
            .lock()
            .await
            .file
            .topics
            .values()
            .cloned()
            .collect();
        for meta in metas {
            let config = TopicConfig::resolve(&broker.options.topic_defaults, &meta.configs)?;
            let state = broker.open_topic(meta, config).await?;
            broker
                .topics
                .write()
                .insert(state.meta.name.clone(), Arc::new(state));
        }
        let ticks = broker.writer.sender();
        *broker.ticker.lock() = Some(tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            loop {
                interval.tick().await;
                if ticks.send(Command::Tick).await.is_err() {
                    return;
                }
            }
        }));
        Ok(broker)
    }

    /// Ends every fetch session, so that servers can drain; writes still work.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Finishes in-flight writes, flushes and closes every log.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        if let Some(ticker) = self.ticker.lock().take() {
            ticker.abort();
        }
        self.writer.shutdown().await;
        self.store.lock().await.release();
    }

    pub fn node(&self) -> NodeInfo {
        NodeInfo {
            node_id: self.options.node_id,
            address: self.options.advertised_address.clone(),
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Grows with every topic change.
    pub fn metadata_epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    async fn open_topic(
        &self,
        meta: TopicMeta,
        config: TopicConfig,
    ) -> Result<TopicState, BrokerError> {
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for index in 0..meta.partitions {
            let key: PartitionKey = self.next_key.fetch_add(1, Ordering::Relaxed);
            let dir = self.options.data_dir.join(format!("{}-{index}", meta.name));
            let (reply, opened) = oneshot::channel();
            self.writer
                .send(Command::Open {
                    key,
                    dir: dir.clone(),
                    config: config.log_config(self.options.flush),
                    retention: config.retention(),
                    reply,
                })
                .await?;
            let (reader, high_watermark) =
                opened.await.map_err(|_| BrokerError::ShuttingDown)??;
            partitions.push(Arc::new(Partition {
                topic: meta.name.clone(),
                index,
                key,
                dir,
                reader,
                high_watermark,
            }));
        }
        Ok(TopicState {
            meta,
            config,
            partitions,
        })
    }

    /// Creates a topic; `partitions` and `replication_factor` of 0 take the defaults.
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
        let config = TopicConfig::resolve(&self.options.topic_defaults, &configs)?;
        let mut store = self.store.lock().await;
        if store.file.topics.contains_key(&name) {
            return Err(BrokerError::TopicExists { topic: name });
        }
        if validate_only {
            return Ok(());
        }
        let meta = TopicMeta {
            name: name.clone(),
            id: random_id(),
            partitions,
            replication_factor,
            configs,
        };
        for index in 0..partitions {
            // A directory left by a topic of this name that is gone is not ours to reuse.
            let stale = self.options.data_dir.join(format!("{name}-{index}"));
            if stale.exists() {
                tracing::warn!(dir = %stale.display(), "removing a stale partition directory");
                let _ = std::fs::remove_dir_all(&stale);
            }
        }
        let state = self.open_topic(meta.clone(), config).await?;
        store.file.topics.insert(name.clone(), meta);
        store.save()?;
        self.topics.write().insert(name, Arc::new(state));
        self.epoch.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let mut store = self.store.lock().await;
        let Some(meta) = store.file.topics.remove(name) else {
            return Err(BrokerError::UnknownTopic {
                topic: name.to_string(),
            });
        };
        // Forget it durably first: a crash from here on must not bring it back.
        store.save()?;
        let state = self.topics.write().remove(name);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(state) = state {
            for partition in &state.partitions {
                let (reply, done) = oneshot::channel();
                let mut to = partition.dir.clone().into_os_string();
                to.push(format!(".{}.deleted", meta.id));
                self.writer
                    .send(Command::Remove {
                        key: partition.key,
                        delete_to: Some(PathBuf::from(to)),
                        reply,
                    })
                    .await?;
                done.await.map_err(|_| BrokerError::ShuttingDown)??;
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
            let state = TopicState {
                meta,
                config,
                partitions: old.partitions.clone(),
            };
            topics.insert(name.to_string(), Arc::new(state));
            old.partitions.clone()
        };
        for partition in partitions {
            self.writer
                .send(Command::Reconfigure {
                    key: partition.key,
                    config: config.log_config(self.options.flush),
                    retention: config.retention(),
                })
                .await?;
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

    fn info(&self, state: &TopicState, details: bool) -> TopicInfo {
        let node = self.options.node_id;
        let partitions = state
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                partition: p.index,
                leader: node,
                replicas: vec![node],
                in_sync_replicas: vec![node],
                log_start_offset: if details { p.reader.start_offset() } else { 0 },
                high_watermark: p.high_watermark(),
                size_bytes: if details { p.reader.size_bytes() } else { 0 },
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

    fn topic(&self, name: &str) -> Result<Arc<TopicState>, BrokerError> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic {
                topic: name.to_string(),
            })
    }

    pub(crate) fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<Partition>, BrokerError> {
        let state = self.topic(topic)?;
        state
            .partitions
            .get(partition as usize)
            .cloned()
            .ok_or(BrokerError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    /// Offsets and size of every partition, for metrics.
    pub fn partition_stats(&self) -> Vec<PartitionStats> {
        let topics = self.topics.read();
        topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .map(|p| PartitionStats {
                topic: p.topic.clone(),
                partition: p.index,
                log_start_offset: p.reader.start_offset(),
                high_watermark: p.high_watermark(),
                size_bytes: p.reader.size_bytes(),
            })
            .collect()
    }

    /// Appends each partition's batches; answers come back in request order. A partition
    /// whose batches fail validation appends none of them and reports why; the others
    /// are unaffected.
    pub async fn produce(
        &self,
        partitions: Vec<ProducePartition>,
        acks: Acks,
        timeout: Duration,
    ) -> Vec<Result<AppendOutcome, BrokerError>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let now_ms = now_ms();
        let mut results: Vec<Option<Result<AppendOutcome, BrokerError>>> =
            Vec::with_capacity(partitions.len());
        let mut requests = Vec::with_capacity(partitions.len());
        let mut waiting = Vec::with_capacity(partitions.len());
        for (i, produce) in partitions.into_iter().enumerate() {
            match self.validate(&produce) {
                Ok((key, batches)) => {
                    let reply = if acks == Acks::None {
                        None
                    } else {
                        let (tx, rx) = oneshot::channel();
                        waiting.push((i, rx));
                        Some(tx)
                    };
                    requests.push(AppendRequest {
                        key,
                        batches,
                        acks,
                        reply,
                        now_ms,
                    });
                    results.push(Some(Ok(AppendOutcome {
                        base_offset: -1,
                        log_append_time_ms: now_ms,
                        log_start_offset: -1,
                    })));
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        if !requests.is_empty()
            && let Err(error) = self.writer.send(Command::Append(requests)).await
        {
            for (i, _) in &waiting {
                results[*i] = Some(Err(BrokerError::ShuttingDown));
            }
            tracing::warn!(%error, "produce refused");
            waiting.clear();
        }
        for (i, reply) in waiting {
            let outcome = match tokio::time::timeout_at(deadline, reply).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(BrokerError::ShuttingDown),
                Err(_) => Err(BrokerError::TimedOut {
                    ms: timeout.as_millis() as u64,
                }),
            };
            results[i] = Some(outcome);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(BrokerError::ShuttingDown)))
            .collect()
    }

    fn validate(
        &self,
        produce: &ProducePartition,
    ) -> Result<(PartitionKey, Vec<ValidBatch>), BrokerError> {
        let state = self.topic(&produce.topic)?;
        let partition = state.partitions.get(produce.partition as usize).ok_or(
            BrokerError::UnknownPartition {
                topic: produce.topic.clone(),
                partition: produce.partition,
            },
        )?;
        if produce.batches.is_empty() {
            return Err(BrokerError::InvalidRequest {
                reason: "a partition in a produce request carries no batch".into(),
            });
        }
        let max = state.config.max_message_bytes as usize;
        let mut batches = Vec::with_capacity(produce.batches.len());
        for bytes in &produce.batches {
            if bytes.len() > max {
                return Err(BrokerError::RecordTooLarge {
                    size: bytes.len(),
                    max,
                });
            }
            let batch = ValidBatch::new(bytes.clone())?;
            batch.view().validate_records()?;
            batches.push(batch);
        }
        Ok((partition.key, batches))
    }

    /// An offset of a partition: earliest, latest (the high watermark), or the first at
    /// or after a timestamp (-1 if there is none).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        query: OffsetQuery,
    ) -> Result<i64, BrokerError> {
        let partition = self.partition(topic, partition)?;
        match query {
            OffsetQuery::Earliest => Ok(partition.reader.start_offset()),
            OffsetQuery::Latest => Ok(partition.high_watermark()),
            OffsetQuery::Timestamp(ts) => {
                Ok(partition.offset_for_timestamp(ts).await?.unwrap_or(-1))
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Without the ticker's sender the writer thread ends once the last request is in.
        if let Some(ticker) = self.ticker.lock().take() {
            ticker.abort();
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Removes partition directories a crash left half-deleted.
fn remove_deleted_dirs(data_dir: &std::path::Path) {
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
