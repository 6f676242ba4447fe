//! The gRPC services: wire types in, domain calls, wire types out. Prost types go no
//! further than these files.

mod admin;
mod broker;
mod groups;
mod replica_admin;
mod transactions;

pub(crate) use admin::AdminService;
pub(crate) use broker::BrokerService;
pub(crate) use groups::GroupsService;
pub(crate) use replica_admin::ReplicaAdminService;
pub(crate) use transactions::TransactionsService;

use spool_broker::{Broker, BrokerError};
use spool_proto::v1;

/// The client listener a request came in on. Each answers with addresses its own clients
/// can reach: the external one with the nodes' external addresses (Kafka's advertised
/// listeners), falling back to their ordinary ones for nodes without an external listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    Internal,
    External,
}

impl Listener {
    /// Where clients of this listener reach `node`, whose ordinary address is `address`.
    pub(crate) fn address(self, broker: &Broker, node: u64, address: String) -> String {
        match self {
            Listener::Internal => address,
            Listener::External => broker.external_address_of(node).unwrap_or(address),
        }
    }

    /// The wire form of a broker error, its leader hint addressed for this listener.
    /// The message names the same address as the hint.
    pub(crate) fn wire_error(self, broker: &Broker, error: &BrokerError) -> v1::Error {
        if let BrokerError::NotLeader {
            leader: Some(node),
            address,
        } = error
        {
            let address = self.address(broker, *node, address.clone().unwrap_or_default());
            return wire_error(&BrokerError::NotLeader {
                leader: Some(*node),
                address: Some(address).filter(|a| !a.is_empty()),
            });
        }
        wire_error(error)
    }
}

/// The wire form of a broker error.
pub(crate) fn wire_error(error: &BrokerError) -> v1::Error {
    let mut wire = v1::Error::new(error.code(), error.to_string());
    if let BrokerError::NotLeader {
        leader: Some(node_id),
        address,
    } = error
    {
        wire.leader = Some(v1::LeaderHint {
            node_id: *node_id,
            address: address.clone().unwrap_or_default(),
        });
    }
    wire
}

/// Largest gRPC message accepted or sent: a produce request may carry many batches.
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Largest admin request accepted (a topic creation with explicit assignments of
/// thousands of partitions fits); answers may be as large as any message.
pub(crate) const ADMIN_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
