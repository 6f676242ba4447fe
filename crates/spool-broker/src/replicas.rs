//! Moving replicas: operators ask the controller to reassign a partition or drain a
//! broker; the partition's leader carries the move out (learner, catch up, voters) and
//! tells the controller when its group has exactly the target voters.

use std::collections::BTreeSet;
use std::sync::Arc;

use spool_controller::{Command, PartitionRecord};

use crate::broker::Broker;
use crate::error::BrokerError;

impl Broker {
    /// Asks the controller to move a partition to `replicas` (the preferred leader first).
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: Vec<u64>,
    ) -> Result<(), BrokerError> {
        self.controller
            .execute(Command::Reassign {
                topic: topic.to_string(),
                partition,
                replicas,
            })
            .await?;
        Ok(())
    }

    /// Starts (or stops) moving every replica off a broker.
    pub async fn drain_broker(&self, broker: u64, drain: bool) -> Result<(), BrokerError> {
        self.controller
            .execute(Command::Drain { broker, drain })
            .await?;
        Ok(())
    }

    /// On the leader: hands leadership to `to` if it holds every committed entry.
    pub async fn transfer_leader(
        &self,
        topic: &str,
        partition: u32,
        to: u64,
    ) -> Result<(), BrokerError> {
        let replica = Arc::clone(&self.partition(topic, partition)?.replica);
        if !replica.is_leader() {
            let hint = replica.leader();
            return Err(BrokerError::NotLeader {
                leader: hint.node,
                address: hint.address,
            });
        }
        if !replica.in_sync_voters().contains(&to) {
            return Err(BrokerError::InvalidRequest {
                reason: format!("node {to} is not an in-sync voter of {topic}-{partition}"),
            });
        }
        replica.transfer_leader(to).await?;
        Ok(())
    }

    /// On the partition's leader: brings the group to the record's target voters, then
    /// reports the move done. Safe to repeat from any step.
    pub(crate) async fn carry_out_move(
        &self,
        topic: &str,
        index: u32,
        record: &PartitionRecord,
    ) -> Result<(), BrokerError> {
        let replica = Arc::clone(&self.partition(topic, index)?.replica);
        let metadata = self.controller.current();
        let target: BTreeSet<u64> = record.target().iter().map(|r| r.broker).collect();
        let (voters, _) = replica.members();
        for added in &record.adding {
            if voters.contains(&added.broker) {
                continue;
            }
            let address = metadata
                .address_of(added.broker)
                .ok_or(BrokerError::InvalidRequest {
                    reason: format!("broker {} has no address", added.broker),
                })?
                .to_string();
            // Also for a learner added before: this waits until it has caught up.
            replica.add_learner(added.broker, address, true).await?;
        }
        let (voters, _) = replica.members();
        if voters != target {
            replica.change_voters(target.clone()).await?;
        }
        let extra: BTreeSet<u64> = replica
            .member_addresses()
            .into_keys()
            .filter(|id| !target.contains(id))
            .collect();
        if !extra.is_empty() {
            replica.remove_nodes(extra).await?;
        }
        self.controller
            .execute(Command::CompleteReassignment {
                topic: topic.to_string(),
                partition: index,
                group: record.group,
            })
            .await?;
        tracing::info!(topic, partition = index, voters = ?target, "partition moved");
        Ok(())
    }
}
