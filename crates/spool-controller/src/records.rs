//! Metadata records: each one a Kafka record in the metadata log whose key names the
//! record type and whose value is the record as JSON. JSON keeps the log readable with
//! `spool log dump` and lets later versions add fields; the volume is tiny.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use spool_log::RecordBatch;
use spool_log::batch::{BatchBuilder, BatchOptions};

use crate::error::ControllerError;
use crate::state::{
    BrokerId, BrokerRecord, ClusterState, Incarnation, LeaderReport, PartitionRecord, ReplicaRef,
    TopicRecord,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MetadataRecord {
    /// The whole state: replaces everything before it. Written so that the log before it
    /// can be removed.
    Checkpoint {
        state: Box<ClusterState>,
    },
    /// The first controller leader names the cluster.
    InitCluster {
        cluster_id: String,
    },
    /// A broker (or a new incarnation of one) joined, or a fenced one came back.
    RegisterBroker {
        broker: BrokerRecord,
    },
    /// A broker's lease lapsed.
    FenceBroker {
        id: BrokerId,
        incarnation: Incarnation,
    },
    SetDraining {
        id: BrokerId,
        draining: bool,
    },
    UnregisterBroker {
        id: BrokerId,
    },
    CreateTopic {
        topic: TopicRecord,
    },
    DeleteTopic {
        name: String,
        id: String,
    },
    SetTopicConfigs {
        name: String,
        id: String,
        configs: BTreeMap<String, String>,
    },
    AddPartitions {
        name: String,
        id: String,
        partitions: Vec<PartitionRecord>,
    },
    /// Starts (or changes) moving a partition's replicas: `replicas` holds old and new,
    /// `adding` the new ones, `removing` the ones that go.
    Reassign {
        topic: String,
        partition: u32,
        group: u64,
        replicas: Vec<ReplicaRef>,
        adding: Vec<ReplicaRef>,
        removing: Vec<ReplicaRef>,
        /// Written by the controller to replace a wiped broker's replicas; an operator's
        /// reassignment also sets how many replicas the partition keeps.
        #[serde(default)]
        repair: bool,
    },
    /// The partition's group has exactly its target voters: the move is done.
    CompleteReassignment {
        topic: String,
        partition: u32,
        group: u64,
    },
    SetLeaders {
        leaders: Vec<LeaderReport>,
    },
    /// Producer ids `[first, first + count)` go to `broker`, which hands them out to
    /// idempotent producers. Blocks never overlap: `first` is where the last one ended.
    AllocateProducerIds {
        broker: BrokerId,
        first: i64,
        count: i64,
        /// The asking broker's tag for its request: it takes the block only if its own.
        request: u64,
    },
}

impl MetadataRecord {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Checkpoint { .. } => "checkpoint",
            Self::InitCluster { .. } => "init_cluster",
            Self::RegisterBroker { .. } => "register_broker",
            Self::FenceBroker { .. } => "fence_broker",
            Self::SetDraining { .. } => "set_draining",
            Self::UnregisterBroker { .. } => "unregister_broker",
            Self::CreateTopic { .. } => "create_topic",
            Self::DeleteTopic { .. } => "delete_topic",
            Self::SetTopicConfigs { .. } => "set_topic_configs",
            Self::AddPartitions { .. } => "add_partitions",
            Self::Reassign { .. } => "reassign",
            Self::CompleteReassignment { .. } => "complete_reassignment",
            Self::SetLeaders { .. } => "set_leaders",
            Self::AllocateProducerIds { .. } => "allocate_producer_ids",
        }
    }
}

/// One batch holding `records`, applied together.
pub fn encode_batch(records: &[MetadataRecord], now_ms: i64) -> Result<Bytes, ControllerError> {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for record in records {
        let value = serde_json::to_vec(record).map_err(|e| ControllerError::Encode {
            reason: e.to_string(),
        })?;
        builder.append(now_ms, Some(record.kind().as_bytes()), Some(&value), &[]);
    }
    Ok(builder.finish())
}

/// The records of a stored batch.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, ControllerError> {
    let corrupt = |reason: String| ControllerError::CorruptRecord { reason };
    let batch = RecordBatch::new(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut records = Vec::with_capacity(batch.record_count().max(0) as usize);
    for record in batch.records().map_err(|e| corrupt(e.to_string()))? {
        let record = record.map_err(|e| corrupt(e.to_string()))?;
        let value = record
            .value()
            .ok_or_else(|| corrupt("a metadata record without a value".into()))?;
        records.push(serde_json::from_slice(value).map_err(|e| corrupt(e.to_string()))?);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_batch() {
        let records = vec![
            MetadataRecord::InitCluster {
                cluster_id: "c1".into(),
            },
            MetadataRecord::RegisterBroker {
                broker: BrokerRecord {
                    id: 2,
                    incarnation: 77,
                    address: "127.0.0.1:9000".into(),
                    client_address: "127.0.0.1:9001".into(),
                    external_address: Some("127.0.0.1:19001".into()),
                    rack: Some("a".into()),
                    fenced: false,
                    draining: false,
                },
            },
            MetadataRecord::DeleteTopic {
                name: "t".into(),
                id: "x".into(),
            },
        ];
        let bytes = encode_batch(&records, 5).unwrap();
        assert_eq!(decode_batch(&bytes).unwrap(), records);
    }

    /// A broker record from a later version, with a field this one does not know, reads
    /// without it (a node rolled back keeps reading the metadata log).
    #[test]
    fn a_broker_record_with_an_unknown_field_reads_without_it() {
        let newer = br#"{"id":3,"incarnation":9,"address":"h:7072","client_address":"h:7070","listeners":{"kafka":"h:9092"},"fenced":false}"#;
        let broker: BrokerRecord = serde_json::from_slice(newer).unwrap();
        assert_eq!(broker.client_address(), "h:7070");
    }

    /// Records written before brokers had a client address of their own read as before:
    /// clients are sent to the one address.
    #[test]
    fn a_broker_record_without_a_client_address_reads_as_one_listener() {
        let old = br#"{"id":3,"incarnation":9,"address":"h:7070","fenced":false}"#;
        let broker: BrokerRecord = serde_json::from_slice(old).unwrap();
        assert_eq!(broker.client_address(), "h:7070");
        assert_eq!(broker.external_address, None);
    }

    #[test]
    fn a_checkpoint_round_trips_and_replaces_the_state() {
        let mut state = ClusterState::default();
        for record in [
            MetadataRecord::InitCluster {
                cluster_id: "c1".into(),
            },
            MetadataRecord::RegisterBroker {
                broker: BrokerRecord {
                    id: 7,
                    incarnation: 70,
                    address: "h:1".into(),
                    client_address: String::new(),
                    external_address: None,
                    rack: None,
                    fenced: false,
                    draining: true,
                },
            },
        ] {
            state.apply(&record);
        }
        let checkpoint = MetadataRecord::Checkpoint {
            state: Box::new(state.clone()),
        };
        let bytes = encode_batch(std::slice::from_ref(&checkpoint), 5).unwrap();
        let decoded = decode_batch(&bytes).unwrap();
        assert_eq!(decoded, vec![checkpoint]);
        let mut rebuilt = ClusterState {
            offset: 42,
            ..ClusterState::default()
        };
        rebuilt.apply(&decoded[0]);
        assert_eq!(rebuilt.brokers, state.brokers);
        assert_eq!(rebuilt.cluster_id, "c1");
        assert_eq!(rebuilt.offset, 42);
    }

    #[test]
    fn an_unknown_record_type_is_an_error_not_a_skip() {
        let mut builder = BatchBuilder::new(BatchOptions::default());
        builder.append(0, None, Some(br#"{"type":"launch_rockets"}"#), &[]);
        let err = decode_batch(&builder.finish()).unwrap_err();
        assert!(
            matches!(err, ControllerError::CorruptRecord { .. }),
            "{err}"
        );
    }
}
