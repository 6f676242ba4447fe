//! The spool.v1 wire protocol: types and service stubs generated from `proto/spool/v1`,
//! and the conversions between them and Spool's domain types. Prost types stop at the
//! service edge: nothing outside the gRPC services and the client sees them.

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations
)]
pub mod v1 {
    tonic::include_proto!("spool.v1");
}

mod error;
mod partitions;

pub use error::{error_to_status, status_error};
pub use partitions::{partition_pairs, topic_partitions, topic_partitions_of};

/// The encoded descriptor set of every spool.v1 file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/spool_descriptor.bin"));
