//! Node configuration: defaults, overridden by a TOML file, overridden by `SPOOL_*`
//! environment variables and flags (the CLI applies those two). Unknown keys are an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use spool_broker::{RaftTiming, TopicConfig};
use spool_log::FlushPolicy;

use crate::error::ServerError;

/// When partition logs fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FlushSetting {
    /// fsync before acknowledging acks=all; concurrent produces share one fsync.
    #[default]
    Always,
    /// fsync every `flush_interval_ms`.
    Interval,
    /// leave write-back to the operating system.
    Os,
}

/// Everything a node needs to run. Every field has a default; a TOML file may set any.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// This node's id (default 1). Never reuse an id for a node whose data was wiped.
    pub node_id: u64,
    /// Where partitions and metadata live (default `./spool-data`).
    pub data_dir: PathBuf,
    /// gRPC listener for clients (default `127.0.0.1:7070`; port 0 picks a free one).
    pub listen: String,
    /// HTTP listener for /metrics, /health and /ready (default `127.0.0.1:7071`).
    pub http_listen: String,
    /// host:port clients should use to reach this node (default: the bound gRPC address).
    pub advertised_address: Option<String>,
    /// A second client listener, for clients outside the nodes' own network (a host
    /// reaching containers through published ports): off unless set. Clients that come in
    /// through it are given every node's `external_advertised_address`.
    pub external_listen: Option<String>,
    /// host:port clients of the external listener reach this node at (default: the bound
    /// external address).
    pub external_advertised_address: Option<String>,
    /// gRPC listener for other nodes: Raft, the controller, ReplicaAdmin (default
    /// `127.0.0.1:7072`; port 0 picks a free one). Clients never need it: firewall it.
    pub cluster_listen: String,
    /// host:port other nodes should use to reach this node's cluster listener (default:
    /// the bound cluster address). `controller_voters` names these addresses.
    pub cluster_advertised_address: Option<String>,
    /// `always` (default), `interval` or `os`.
    pub flush: FlushSetting,
    /// With `flush = "interval"`: ms between fsyncs (default 1000).
    pub flush_interval_ms: u64,
    /// Partitions of a topic created without a count (default 1).
    pub default_partitions: u32,
    /// Most partitions per topic (default 10000).
    pub max_partitions_per_topic: u32,
    /// Most partition replicas one broker may hold: a topic creation or growth that
    /// would put more on any broker is refused (default 20000).
    pub max_replicas_per_broker: u32,
    /// Default retention.ms of topics (default 7 days; -1 keeps data forever).
    pub retention_ms: i64,
    /// Default retention.bytes of topics (default -1: no limit).
    pub retention_bytes: i64,
    /// Default segment.bytes of topics (default 1 GiB).
    pub segment_bytes: u64,
    /// Default segment.ms of topics (default 7 days).
    pub segment_ms: i64,
    /// Default max.message.bytes of topics (default 1048588).
    pub max_message_bytes: u32,
    /// Seconds in-flight requests get to finish on shutdown (default 10).
    pub shutdown_grace_secs: u64,
    /// Free bytes on the data volume under which produce requests are refused with
    /// STORAGE_ERROR (and, under half of it, entries from other nodes' leaders), so that
    /// the volume never fills (default: 1 GiB, or a twentieth of a smaller volume; 0
    /// refuses nothing).
    pub min_free_bytes: Option<u64>,
    /// An idempotent producer that writes nothing for this long (ms) is forgotten by the
    /// partitions; its next batch then starts its sequences afresh (default a day, as
    /// Kafka's producer.id.expiration.ms).
    pub producer_id_expiration_ms: u64,
    /// Partition groups: ms between a leader's heartbeats (default 150).
    pub raft_heartbeat_ms: u64,
    /// Partition groups: a follower that hears no leader for a random time between these
    /// bounds starts an election (default 500 to 800 ms).
    pub raft_election_min_ms: u64,
    pub raft_election_max_ms: u64,
    /// Partition groups idle this long (ms) stop their timers; nodes then watch each other
    /// instead (default 3000; 0 keeps every group ticking).
    pub raft_quiesce_after_ms: u64,
    /// ms between retention passes (default 30000).
    pub retention_check_ms: u64,
    /// Lets `ReplicaAdmin.SetLinkFaults` cut this node's Raft links (tests only; default
    /// false).
    pub fault_injection: bool,
    /// The controller's voters as `id@host:port,...`, with each voter's cluster address
    /// (default empty: this node alone is the controller). Every node of a cluster is
    /// given the same list.
    pub controller_voters: String,
    /// This node's rack; placement spreads a partition's replicas over racks (default
    /// none).
    pub rack: Option<String>,
    /// Replication factor of topics created without one (default 0: three, or fewer when
    /// fewer brokers are live).
    pub default_replication_factor: u32,
    /// A broker that has not heartbeated to the controller for this long is fenced
    /// (default 6000).
    pub broker_session_timeout_ms: u64,
    /// ms between a broker's heartbeats to the controller (default 500).
    pub broker_heartbeat_ms: u64,
    /// Bytes of metadata records after which the controller writes a checkpoint and the
    /// log before it is removed (default 16 MiB).
    pub metadata_checkpoint_bytes: u64,
    /// Fetch sessions (consumer streams) open at once on this node; one more is refused
    /// with RESOURCE_EXHAUSTED (default 1000).
    pub max_fetch_sessions: u32,
    /// Bytes of fetched batches all fetch sessions may hold at once, queued for consumers
    /// (default 512 MiB). Consumers that read slowly hold their share until they read;
    /// beyond it, fetches wait.
    pub fetch_memory_bytes: u64,
    /// Concurrent calls one client connection may have open (HTTP/2 streams; default
    /// 1024). SDK consumers and producers built from one client share its connection.
    pub max_streams_per_connection: u32,
    /// Partitions of `__consumer_offsets`, fixed when it is first created (default 16).
    pub offsets_topic_partitions: u32,
    /// Its replication factor (default 0: three, or fewer when fewer brokers are live).
    pub offsets_topic_replication_factor: u32,
    /// Partitions of `__transaction_state`, fixed when it is first created (default 16).
    pub transaction_state_partitions: u32,
    /// Its replication factor (default 0: three, or fewer when fewer brokers are live).
    pub transaction_state_replication_factor: u32,
    /// The longest transaction timeout a producer may ask for (default 900000).
    pub transaction_max_timeout_ms: i64,
    /// A transactional id with no transaction for this long is forgotten (default
    /// 604800000, a week).
    pub transactional_id_expiration_ms: i64,
    /// A group member that sends no heartbeat for this long is removed and its
    /// partitions move (default 45000).
    pub group_session_timeout_ms: i32,
    /// How often group members heartbeat (default 5000). Assignment changes are answered
    /// at once (long polls), so this only bounds how soon a silent member is noticed.
    pub group_heartbeat_interval_ms: i32,
    /// Members one group may have (default 10000).
    pub group_max_members: u32,
    /// A group without members keeps its committed offsets this long after it emptied
    /// and after its last commit (default 7 days; -1 forever).
    pub offsets_retention_ms: i64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let topic = TopicConfig::default();
        Self {
            node_id: 1,
            data_dir: PathBuf::from("spool-data"),
            listen: "127.0.0.1:7070".into(),
            http_listen: "127.0.0.1:7071".into(),
            advertised_address: None,
            external_listen: None,
            external_advertised_address: None,
            cluster_listen: "127.0.0.1:7072".into(),
            cluster_advertised_address: None,
            flush: FlushSetting::Always,
            flush_interval_ms: 1000,
            default_partitions: 1,
            max_partitions_per_topic: 10_000,
            max_replicas_per_broker: 20_000,
            retention_ms: topic.retention_ms,
            retention_bytes: topic.retention_bytes,
            segment_bytes: topic.segment_bytes,
            segment_ms: topic.segment_ms,
            max_message_bytes: topic.max_message_bytes,
            shutdown_grace_secs: 10,
            min_free_bytes: None,
            producer_id_expiration_ms: spool_broker::DEFAULT_PRODUCER_EXPIRY.as_millis() as u64,
            raft_heartbeat_ms: RaftTiming::default().heartbeat_ms,
            raft_election_min_ms: RaftTiming::default().election_min_ms,
            raft_election_max_ms: RaftTiming::default().election_max_ms,
            raft_quiesce_after_ms: RaftTiming::default().quiesce_after_ms.unwrap_or(0),
            retention_check_ms: 30_000,
            fault_injection: false,
            controller_voters: String::new(),
            rack: None,
            default_replication_factor: 0,
            broker_session_timeout_ms: 6000,
            broker_heartbeat_ms: 500,
            metadata_checkpoint_bytes: spool_broker::DEFAULT_CHECKPOINT_BYTES,
            max_fetch_sessions: 1000,
            fetch_memory_bytes: spool_broker::FETCH_MEMORY_BYTES as u64,
            max_streams_per_connection: 1024,
            offsets_topic_partitions: 16,
            offsets_topic_replication_factor: 0,
            transaction_state_partitions: 16,
            transaction_state_replication_factor: 0,
            transaction_max_timeout_ms: 15 * 60 * 1000,
            transactional_id_expiration_ms: 7 * 24 * 60 * 60 * 1000,
            group_session_timeout_ms: 45_000,
            group_heartbeat_interval_ms: 5_000,
            group_max_members: 10_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ServerError::ParseConfig {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub(crate) fn flush_policy(&self) -> FlushPolicy {
        match self.flush {
            FlushSetting::Always => FlushPolicy::Always,
            FlushSetting::Interval => {
                FlushPolicy::Interval(Duration::from_millis(self.flush_interval_ms))
            }
            FlushSetting::Os => FlushPolicy::Os,
        }
    }

    /// Consumer group settings, checked.
    pub(crate) fn transaction_options(
        &self,
    ) -> Result<spool_broker::TransactionOptions, ServerError> {
        if !(1..=1000).contains(&self.transaction_state_partitions) {
            return Err(ServerError::InvalidSetting {
                name: "transaction_state_partitions",
                reason: "between 1 and 1000".into(),
            });
        }
        if self.transaction_max_timeout_ms < 1 {
            return Err(ServerError::InvalidSetting {
                name: "transaction_max_timeout_ms",
                reason: "at least 1".into(),
            });
        }
        if self.transactional_id_expiration_ms < 1 {
            return Err(ServerError::InvalidSetting {
                name: "transactional_id_expiration_ms",
                reason: "at least 1".into(),
            });
        }
        Ok(spool_broker::TransactionOptions {
            topic_partitions: self.transaction_state_partitions,
            topic_replication_factor: self.transaction_state_replication_factor,
            coordinator: spool_broker::TxnConfig {
                max_timeout_ms: self.transaction_max_timeout_ms,
                id_expiration_ms: self.transactional_id_expiration_ms,
            },
        })
    }

    pub(crate) fn group_options(&self) -> Result<spool_broker::GroupOptions, ServerError> {
        let (session, interval) = (
            self.group_session_timeout_ms,
            self.group_heartbeat_interval_ms,
        );
        if interval < 100 || session < 2 * interval {
            return Err(ServerError::InvalidSetting {
                name: "group timing",
                reason: format!(
                    "need 100 <= group_heartbeat_interval_ms ({interval}) <= \
                     group_session_timeout_ms / 2 ({session})"
                ),
            });
        }
        if !(1..=1000).contains(&self.offsets_topic_partitions) {
            return Err(ServerError::InvalidSetting {
                name: "offsets_topic_partitions",
                reason: "between 1 and 1000".into(),
            });
        }
        let mut options = spool_broker::GroupOptions {
            offsets_topic_partitions: self.offsets_topic_partitions,
            offsets_topic_replication_factor: self.offsets_topic_replication_factor,
            ..spool_broker::GroupOptions::default()
        };
        options.coordinator.session_timeout_ms = session;
        options.coordinator.heartbeat_interval_ms = interval;
        options.coordinator.max_members = self.group_max_members.max(1) as usize;
        if self.offsets_retention_ms < -1 {
            return Err(ServerError::InvalidSetting {
                name: "offsets_retention_ms",
                reason: "-1 (forever) or at least 0".into(),
            });
        }
        options.coordinator.offsets_retention_ms = self.offsets_retention_ms;
        Ok(options)
    }

    /// Timing of partition groups, checked: elections must wait well past heartbeats.
    pub(crate) fn raft_timing(&self) -> Result<RaftTiming, ServerError> {
        let timing = RaftTiming {
            heartbeat_ms: self.raft_heartbeat_ms,
            election_min_ms: self.raft_election_min_ms,
            election_max_ms: self.raft_election_max_ms,
            quiesce_after_ms: (self.raft_quiesce_after_ms > 0)
                .then_some(self.raft_quiesce_after_ms),
        };
        if timing.heartbeat_ms == 0
            || timing.election_min_ms < 2 * timing.heartbeat_ms
            || timing.election_max_ms <= timing.election_min_ms
        {
            return Err(ServerError::InvalidSetting {
                name: "raft timing",
                reason: format!(
                    "need 0 < raft_heartbeat_ms ({}) <= raft_election_min_ms / 2 ({}) and \
                     raft_election_min_ms < raft_election_max_ms ({})",
                    timing.heartbeat_ms, timing.election_min_ms, timing.election_max_ms
                ),
            });
        }
        Ok(timing)
    }

    /// How long partitions keep an idle producer's sequence state: at least a minute, or
    /// retries of live producers would be stored twice.
    pub(crate) fn producer_expiry(&self) -> Result<Duration, ServerError> {
        if self.producer_id_expiration_ms < 60_000 {
            return Err(ServerError::InvalidSetting {
                name: "producer_id_expiration_ms",
                reason: format!(
                    "{} ms is under the minimum of 60000: producers would be forgotten between their retries",
                    self.producer_id_expiration_ms
                ),
            });
        }
        Ok(Duration::from_millis(self.producer_id_expiration_ms))
    }

    /// The controller voters, parsed from `id@host:port,...`.
    pub fn voters(&self) -> Result<BTreeMap<u64, String>, ServerError> {
        parse_voters(&self.controller_voters)
    }

    /// Topic defaults, checked as a topic's own configs would be.
    pub(crate) fn topic_defaults(&self) -> Result<TopicConfig, ServerError> {
        let settings = [
            ("retention.ms", self.retention_ms.to_string()),
            ("retention.bytes", self.retention_bytes.to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("max.message.bytes", self.max_message_bytes.to_string()),
        ];
        let overrides = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        TopicConfig::resolve(&TopicConfig::default(), &overrides).map_err(|e| {
            ServerError::InvalidSetting {
                name: "topic defaults",
                reason: e.to_string(),
            }
        })
    }
}

/// Parses `id@host:port,...`.
pub fn parse_voters(text: &str) -> Result<BTreeMap<u64, String>, ServerError> {
    let invalid = |reason: String| ServerError::InvalidSetting {
        name: "controller_voters",
        reason,
    };
    let mut voters = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, address) = entry
            .split_once('@')
            .ok_or_else(|| invalid(format!("{entry:?} is not id@host:port")))?;
        let id: u64 = id
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| invalid(format!("{id:?} is not a node id (1 or more)")))?;
        if !address.contains(':') {
            return Err(invalid(format!("{address:?} is not host:port")));
        }
        if voters.insert(id, address.to_string()).is_some() {
            return Err(invalid(format!("node {id} is named twice")));
        }
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_file_overrides_defaults_and_unknown_keys_are_refused() {
        let config =
            ServerConfig::from_toml("node_id = 3\nflush = \"interval\"\nflush_interval_ms = 50\n")
                .unwrap();
        assert_eq!(config.node_id, 3);
        assert_eq!(
            config.flush_policy(),
            FlushPolicy::Interval(Duration::from_millis(50))
        );
        assert_eq!(config.listen, "127.0.0.1:7070");
        let err = ServerConfig::from_toml("nodeid = 3\n").unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        let err = ServerConfig::from_toml("flush = \"sometimes\"\n").unwrap_err();
        assert!(err.contains("unknown variant"), "{err}");
    }

    #[test]
    fn controller_voters_parse_and_bad_ones_are_named() {
        let voters = parse_voters("1@a:1, 2@b:2,3@c:3").unwrap();
        assert_eq!(voters.len(), 3);
        assert_eq!(voters[&2], "b:2");
        assert!(parse_voters("").unwrap().is_empty());
        for bad in ["1a:1", "x@a:1", "0@a:1", "1@a", "1@a:1,1@b:2"] {
            assert!(parse_voters(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_topic_defaults_are_named() {
        let config = ServerConfig {
            segment_bytes: 10,
            ..ServerConfig::default()
        };
        let err = config.topic_defaults().unwrap_err();
        assert!(err.to_string().contains("segment.bytes"), "{err}");
    }
}
