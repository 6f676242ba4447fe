//! What the broker tests share.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spool_broker::{
    Broker, BrokerOptions, FetchPosition, FetchSpec, ProducePartition, TopicConfig,
};
use spool_log::batch::{BatchBuilder, BatchOptions};
use spool_log::{FlushPolicy, RecordBatch};

/// A single node that is its own controller, in `dir`.
pub fn options(dir: &std::path::Path) -> BrokerOptions {
    BrokerOptions {
        node_id: 1,
        advertised_address: "127.0.0.1:0".into(),
        external_advertised_address: None,
        cluster_address: "127.0.0.1:0".into(),
        max_replicas_per_broker: 20_000,
        fetch_memory_bytes: spool_broker::FETCH_MEMORY_BYTES,
        data_dir: dir.to_path_buf(),
        min_free_bytes: None,
        producer_expiry: spool_raft::DEFAULT_PRODUCER_EXPIRY,
        flush: FlushPolicy::Always,
        topic_defaults: TopicConfig::default(),
        default_partitions: 1,
        max_partitions: 1000,
        raft_timing: spool_broker::RaftTiming::default(),
        retention_check: std::time::Duration::from_secs(30),
        default_replication_factor: 0,
        rack: None,
        controller_voters: Default::default(),
        session_timeout: std::time::Duration::from_secs(6),
        heartbeat_interval: std::time::Duration::from_millis(500),
        metadata_checkpoint_bytes: spool_broker::DEFAULT_CHECKPOINT_BYTES,
        groups: spool_broker::GroupOptions::default(),
        transactions: spool_broker::TransactionOptions::default(),
    }
}

pub fn batch(values: &[&str]) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for v in values {
        builder.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    builder.finish()
}

pub fn produce(topic: &str, partition: u32, batches: Vec<Bytes>) -> ProducePartition {
    ProducePartition {
        topic: topic.into(),
        partition,
        batches,
        leader_epoch: None,
    }
}

pub fn values(batches: &[Bytes]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let batch = RecordBatch::new(b).unwrap();
            batch
                .records()
                .unwrap()
                .map(|r| String::from_utf8(r.unwrap().value().unwrap().to_vec()).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A fetch of every partition of `topic` from offset 0 that ends once caught up.
pub fn from_start(topic: &str, partitions: u32) -> FetchSpec {
    FetchSpec {
        positions: (0..partitions)
            .map(|p| FetchPosition {
                topic: topic.into(),
                partition: p,
                offset: 0,
                max_bytes: None,
                leader_epoch: None,
            })
            .collect(),
        max_bytes: 1024 * 1024,
        min_bytes: 1,
        max_wait: Duration::from_millis(100),
        follow: false,
        isolation: Default::default(),
    }
}

pub async fn read_all(broker: &Arc<Broker>, topic: &str, partitions: u32) -> Vec<Vec<String>> {
    let mut rx = broker.fetch(from_start(topic, partitions), 2);
    let mut out = vec![Vec::new(); partitions as usize];
    while let Some(chunk) = rx.recv().await {
        for p in chunk.partitions {
            assert!(p.error.is_none(), "{:?}", p.error);
            out[p.partition as usize].extend(values(&p.batches));
        }
    }
    out
}
