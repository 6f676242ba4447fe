//! Writing a transaction's commit or abort markers to its partitions: appended here for
//! the partitions this node leads, asked of their leaders' cluster listeners for the
//! others. A marker written twice (a retry after a lost answer) is harmless: it ends
//! nothing the first did not, and readers skip control batches.

use std::collections::BTreeMap;

use spool_controller::TxnMarkers;
use spool_log::batch::{ControlMarker, control_batch};
use spool_raft::AckLevel;
use spool_txn::Transaction;

use crate::OFFSETS_TOPIC;
use crate::broker::{Broker, now_ms};
use crate::error::BrokerError;

impl Broker {
    /// Writes the markers of `t`'s outcome to every partition of it; Ok once all are
    /// committed. Partitions of topics deleted meanwhile need none.
    pub(crate) async fn write_txn_markers(
        &self,
        t: &Transaction,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<(), BrokerError> {
        let (producer_id, producer_epoch) = t.marker_producer();
        let bumped = t.last_producer_id >= 0;
        let metadata = self.controller.current();
        let mut by_leader: BTreeMap<u64, Vec<(String, u32)>> = BTreeMap::new();
        for (topic, partition) in &t.partitions {
            // Deleted (or created again with fewer partitions) per the metadata: nothing
            // is left to mark.
            let Some(found) = metadata
                .topics
                .get(topic)
                .and_then(|t| t.partitions.get(*partition as usize))
            else {
                continue;
            };
            let leader = found.leader.ok_or(BrokerError::NotLeader {
                leader: None,
                address: None,
            })?;
            by_leader
                .entry(leader)
                .or_default()
                .push((topic.clone(), *partition));
        }
        let writes = by_leader.into_iter().map(|(node, partitions)| async move {
            let markers = TxnMarkers {
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
                partitions,
                bumped,
            };
            let results = if node == self.options.node_id {
                self.write_local_markers(&markers).await
            } else {
                let expected = markers.partitions.len();
                match self.controller.write_txn_markers(node, markers).await {
                    // Every partition answered, or the write is not done.
                    Ok(results) if results.len() == expected => results
                        .into_iter()
                        .map(|r| r.map_err(BrokerError::from))
                        .collect(),
                    Ok(results) => vec![Err(BrokerError::Replication {
                        reason: format!(
                            "node {node} answered {} of {expected} markers",
                            results.len()
                        ),
                    })],
                    Err(error) => vec![Err(BrokerError::from(error))],
                }
            };
            results
                .into_iter()
                .collect::<Result<Vec<()>, BrokerError>>()
        });
        for written in futures_util::future::join_all(writes).await {
            written?;
        }
        Ok(())
    }

    /// Appends a marker to each of `partitions`, which this node must lead; one answer
    /// per partition, once its marker is committed.
    pub async fn write_local_markers(&self, markers: &TxnMarkers) -> Vec<Result<(), BrokerError>> {
        let (producer_id, producer_epoch) = (markers.producer_id, markers.producer_epoch);
        let marker = ControlMarker {
            commit: markers.commit,
            coordinator_epoch: markers.coordinator_epoch,
        };
        let bumped = markers.bumped;
        let writes = markers.partitions.iter().map(|(topic, index)| async move {
            if topic == OFFSETS_TOPIC {
                return self
                    .mark_offsets(*index, producer_id, producer_epoch, marker, bumped)
                    .await;
            }
            let partition = match self.partition(topic, *index) {
                Ok(partition) => partition,
                // Deleted, as the metadata says: nothing is left to mark. Missing here
                // only (this node stopping, or behind on metadata): not written.
                Err(BrokerError::UnknownTopic { .. } | BrokerError::UnknownPartition { .. })
                    if self
                        .controller
                        .current()
                        .topics
                        .get(topic)
                        .is_none_or(|t| t.partitions.len() <= *index as usize) =>
                {
                    return Ok(());
                }
                Err(error) => return Err(error),
            };
            if !partition.replica.is_leader() {
                let hint = partition.replica.leader();
                return Err(BrokerError::NotLeader {
                    leader: hint.node,
                    address: None,
                });
            }
            // A late copy of a marker this partition already has committed (see
            // `WriteTxnMarkersRequest.bumped`) writes nothing. Only what is committed
            // counts: a copy appended but not committed may yet be cut, so this one is
            // written (a second marker of an ended transaction changes nothing). (Checked,
            // then appended: a copy held up that long races only the producer's next
            // first write.)
            if bumped
                && partition
                    .replica
                    .applied_producer_epoch(producer_id)
                    .is_some_and(|epoch| epoch >= producer_epoch)
            {
                return Ok(());
            }
            let batch = control_batch(producer_id, producer_epoch, marker, now_ms());
            partition
                .replica
                .append(vec![batch], AckLevel::All)
                .await
                .map(drop)
                .map_err(BrokerError::from)
        });
        futures_util::future::join_all(writes).await
    }

    /// A marker for a partition of `__consumer_offsets` goes through the group
    /// coordinator running there, in order with its writes: the offsets the transaction
    /// committed there take effect, or are dropped.
    async fn mark_offsets(
        &self,
        index: u32,
        producer_id: i64,
        producer_epoch: i16,
        marker: ControlMarker,
        bumped: bool,
    ) -> Result<(), BrokerError> {
        let shard = self
            .groups
            .coordinators
            .shards
            .lock()
            .get(&index)
            .filter(|shard| !shard.is_stopped())
            .cloned();
        let Some(shard) = shard else {
            let hint = self
                .partition(OFFSETS_TOPIC, index)
                .ok()
                .and_then(|p| p.replica.leader().node);
            return Err(BrokerError::NotLeader {
                leader: hint.filter(|node| *node != self.options.node_id),
                address: None,
            });
        };
        shard
            .run("", move |s, ctx| {
                s.end_transaction(producer_id, producer_epoch, marker, bumped, ctx)
                    .map(|entries| (entries, ()))
            })
            .await
    }
}
