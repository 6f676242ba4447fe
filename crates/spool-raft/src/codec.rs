//! Spool's own encodings of Raft metadata: membership configurations (stored in
//! membership frames and sent between nodes) and the records of the node state file.
//! openraft's serde forms are not a stable format, so nothing durable depends on them.
//!
//! Membership, version 1 (all integers big-endian):
//! ```text
//! u8 version = 1
//! u32 config count, then per config: u32 voter count, u64 voter ids
//! u32 node count, then per node: u64 id, u32 address length, address (UTF-8)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use openraft::BasicNode;

use crate::error::CodecError;
use crate::types::{LogId, Membership, NodeId, StoredMembership, Vote, log_id, term_of};

const MEMBERSHIP_V1: u8 = 1;

pub fn encode_membership(membership: &Membership) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(64));
    out.u8(MEMBERSHIP_V1);
    let configs = membership.get_joint_config();
    out.u32(configs.len() as u32);
    for config in configs {
        out.u32(config.len() as u32);
        for id in config {
            out.u64(*id);
        }
    }
    let nodes: Vec<_> = membership.nodes().collect();
    out.u32(nodes.len() as u32);
    for (id, node) in nodes {
        out.u64(*id);
        out.bytes(node.addr.as_bytes());
    }
    out.0
}

pub fn decode_membership(bytes: &[u8]) -> Result<Membership, CodecError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != MEMBERSHIP_V1 {
        return Err(CodecError::Version { found: version });
    }
    let config_count = r.count()?;
    let mut configs = Vec::with_capacity(config_count);
    for _ in 0..config_count {
        let voters = r.count()?;
        let mut config = BTreeSet::new();
        for _ in 0..voters {
            config.insert(r.u64()?);
        }
        configs.push(config);
    }
    let node_count = r.count()?;
    let mut nodes = BTreeMap::new();
    for _ in 0..node_count {
        let id: NodeId = r.u64()?;
        let addr = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| CodecError::Malformed {
            what: "node address is not UTF-8",
        })?;
        nodes.insert(id, BasicNode { addr });
    }
    r.finish()?;
    Membership::new(configs, nodes).map_err(|_| CodecError::Malformed {
        what: "membership names a voter without a node",
    })
}

/// A little-endian-free, length-checked byte writer.
pub(crate) struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    pub fn log_id(&mut self, id: &Option<LogId>) {
        match id {
            Some(id) => {
                self.u8(1);
                self.u64(term_of(id));
                self.u64(id.index);
            }
            None => self.u8(0),
        }
    }
    pub fn vote(&mut self, vote: &Vote) {
        self.u64(vote.leader_id.term);
        self.u64(vote.leader_id.voted_for);
        self.u8(u8::from(vote.committed));
    }
    pub fn stored_membership(&mut self, m: &StoredMembership) {
        self.log_id(m.log_id());
        self.bytes(&encode_membership(m.membership()));
    }
}

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
    pub fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(self.u64()? as i64)
    }
    /// A count that must fit in what is left (each counted item takes at least a byte).
    pub fn count(&mut self) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        if n > self.bytes.len() {
            return Err(CodecError::Truncated);
        }
        Ok(n)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn log_id(&mut self) -> Result<Option<LogId>, CodecError> {
        match self.u8()? {
            0 => Ok(None),
            1 => {
                let term = self.u64()?;
                Ok(Some(log_id(term, self.u64()?)))
            }
            _ => Err(CodecError::Malformed {
                what: "log id flag",
            }),
        }
    }
    pub fn vote(&mut self) -> Result<Vote, CodecError> {
        let term = self.u64()?;
        let node = self.u64()?;
        let committed = self.u8()? != 0;
        Ok(make_vote(term, node, committed))
    }
    pub fn stored_membership(&mut self) -> Result<StoredMembership, CodecError> {
        let id = self.log_id()?;
        let membership = decode_membership(self.bytes()?)?;
        Ok(StoredMembership::new(id, membership))
    }
    pub fn finish(&self) -> Result<(), CodecError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Malformed {
                what: "trailing bytes",
            })
        }
    }
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }
}

pub fn make_vote(term: u64, node: NodeId, committed: bool) -> Vote {
    if committed {
        Vote::new_committed(term, node)
    } else {
        Vote::new(term, node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_round_trips() {
        let nodes: BTreeMap<u64, BasicNode> = [
            (1, BasicNode::new("a:1")),
            (2, BasicNode::new("b:2")),
            (3, BasicNode::new("c:3")),
            (4, BasicNode::new("d:4")),
        ]
        .into();
        let m = Membership::new(vec![[1, 2, 3].into(), [2, 3, 4].into()], nodes)
            .expect("valid membership");
        let bytes = encode_membership(&m);
        assert_eq!(decode_membership(&bytes).expect("decodes"), m);
        for cut in 0..bytes.len() {
            assert!(decode_membership(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
