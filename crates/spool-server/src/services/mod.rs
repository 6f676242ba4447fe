//! The gRPC services: wire types in, domain calls, wire types out. Prost types go no
//! further than these files.

mod admin;
mod broker;
mod groups;
mod replica_admin;

pub(crate) use admin::AdminService;
pub(crate) use broker::BrokerService;
pub(crate) use groups::GroupsService;
pub(crate) use replica_admin::ReplicaAdminService;

use spool_broker::BrokerError;
use spool_proto::v1;

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
