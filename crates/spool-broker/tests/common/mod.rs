//! What the broker tests share.
#![allow(dead_code)]

use spool_broker::{BrokerOptions, TopicConfig};
use spool_log::FlushPolicy;

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
    }
}
