//! Generates the spool.v1 types and services from proto/ with protox (no system protoc),
//! and writes the encoded descriptor set for gRPC server reflection.

use std::path::PathBuf;

use protox::prost::Message;

const PROTOS: [&str; 8] = [
    "spool/v1/common.proto",
    "spool/v1/broker.proto",
    "spool/v1/admin.proto",
    "spool/v1/group.proto",
    "spool/v1/transaction.proto",
    "spool/v1/raft.proto",
    "spool/v1/cluster.proto",
    "spool/v1/controller.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let descriptors = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("spool_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
