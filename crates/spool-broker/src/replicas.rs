//! The replica lifecycle the controller drives: open an empty replica to join a group,
//! add a node to a group (learner, catch up, voter), remove one, close a replica and
//! delete its data.

use std::sync::Arc;

use spool_raft::ReplicaSpec;

use crate::broker::{Broker, TopicState};
use crate::error::BrokerError;
use crate::partition::Partition;

impl Broker {
    /// Opens an empty replica of a partition of a topic this node knows, for the leader
    /// to add as a learner. Does nothing if the replica is open already.
    pub async fn join_partition(&self, topic: &str, partition: u32) -> Result<(), BrokerError> {
        let mut store = self.store.lock().await;
        let state = self.topic(topic)?;
        let Some(local) = state.partitions.get(partition as usize) else {
            return Err(BrokerError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            });
        };
        if local.is_some() {
            return Ok(());
        }
        let placement = &state.meta.placements[partition as usize];
        let replica = self
            .raft
            .create_replica(ReplicaSpec {
                group: placement.group,
                dir: self.partition_dir(topic, partition),
                log_config: state.config.log_config(self.options.flush),
                initial_members: Default::default(),
            })
            .await?;
        let mut meta = state.meta.clone();
        meta.placements[partition as usize].members.insert(
            self.options.node_id,
            self.options.advertised_address.clone(),
        );
        store.file.topics.insert(topic.to_string(), meta.clone());
        store.save()?;
        let mut partitions = state.partitions.clone();
        partitions[partition as usize] = Some(Arc::new(Partition::new(
            topic.to_string(),
            partition,
            replica,
            state.config.retention(),
        )));
        self.replace_topic(TopicState {
            meta,
            config: state.config,
            partitions,
        });
        Ok(())
    }

    /// On the leader: adds `node` as a learner, waits for it to catch up, then makes it
    /// a voter.
    pub async fn add_replica(
        &self,
        topic: &str,
        partition: u32,
        node: u64,
        address: String,
    ) -> Result<(), BrokerError> {
        let replica = Arc::clone(&self.partition(topic, partition)?.replica);
        replica.add_learner(node, address, true).await?;
        let (mut voters, _) = replica.members();
        voters.insert(node);
        replica.change_voters(voters).await?;
        Ok(())
    }

    /// On the leader: takes `node` out of the group.
    pub async fn remove_replica(
        &self,
        topic: &str,
        partition: u32,
        node: u64,
    ) -> Result<(), BrokerError> {
        let replica = Arc::clone(&self.partition(topic, partition)?.replica);
        let (mut voters, learners) = replica.members();
        if voters.remove(&node) {
            if voters.is_empty() {
                return Err(BrokerError::InvalidRequest {
                    reason: "a partition cannot lose its last replica".into(),
                });
            }
            replica.change_voters(voters).await?;
        }
        if learners.contains(&node) || replica.member_addresses().contains_key(&node) {
            replica.remove_nodes([node].into()).await?;
        }
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

    /// Closes this node's replica of a partition and deletes its data.
    pub async fn leave_partition(&self, topic: &str, partition: u32) -> Result<(), BrokerError> {
        let mut store = self.store.lock().await;
        let state = self.topic(topic)?;
        let Some(Some(local)) = state.partitions.get(partition as usize) else {
            return Ok(());
        };
        self.raft
            .remove_replica(local.replica.group(), true)
            .await?;
        let mut meta = state.meta.clone();
        meta.placements[partition as usize]
            .members
            .remove(&self.options.node_id);
        store.file.topics.insert(topic.to_string(), meta.clone());
        store.save()?;
        let mut partitions = state.partitions.clone();
        partitions[partition as usize] = None;
        self.replace_topic(TopicState {
            meta,
            config: state.config,
            partitions,
        });
        Ok(())
    }

    fn replace_topic(&self, state: TopicState) {
        self.topics
            .write()
            .insert(state.meta.name.clone(), Arc::new(state));
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}
