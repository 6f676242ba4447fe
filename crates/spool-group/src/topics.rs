//! What the coordinator knows of the cluster's topics when it assigns: partition counts
//! and, for rack-aware assignment, the racks holding each partition's replicas.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicInfo {
    pub partitions: u32,
    /// Racks of each partition's replicas (index = partition); empty when racks are unknown.
    pub racks: Vec<BTreeSet<String>>,
}

impl TopicInfo {
    pub fn new(partitions: u32) -> Self {
        Self {
            partitions,
            racks: Vec::new(),
        }
    }

    /// The racks holding `partition`'s replicas (empty if unknown).
    pub fn racks_of(&self, partition: u32) -> Option<&BTreeSet<String>> {
        self.racks.get(partition as usize).filter(|r| !r.is_empty())
    }
}

/// Topics by name. Internal topics (`__` prefix) are never matched by a pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicsSnapshot {
    topics: BTreeMap<String, TopicInfo>,
    /// Each topic's id, when known: a topic deleted and created again under its name has a
    /// new one (its old committed offsets mean nothing for it).
    ids: BTreeMap<String, String>,
    /// Moves whenever the topics may have changed (the metadata's epoch); 0: unknown,
    /// nothing derived from it is cached.
    version: u64,
}

impl TopicsSnapshot {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, info: TopicInfo) {
        self.topics.insert(name.into(), info);
        self.version = 0;
    }

    /// Marks this snapshot as the topics at `version`; a later snapshot with the same
    /// version must hold the same topics.
    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn set_id(&mut self, name: impl Into<String>, id: impl Into<String>) {
        self.ids.insert(name.into(), id.into());
    }

    /// The topic's id, if known.
    pub fn id(&self, name: &str) -> Option<&str> {
        self.ids.get(name).map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }

    pub fn partition_exists(&self, topic: &str, partition: u32) -> bool {
        self.get(topic).is_some_and(|t| partition < t.partitions)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.topics.keys().map(String::as_str)
    }

    /// A digest of what assignment depends on for `topics` (partition counts, racks): when
    /// it changes, the group's assignment must be computed again. Stable across versions
    /// (FNV-1a), since it is persisted.
    pub fn digest<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> u64 {
        let mut hash = Fnv::new();
        for name in topics {
            hash.write(name.as_bytes());
            hash.write(&[0xff]);
            match self.get(name) {
                None => hash.write(&[0]),
                Some(info) => {
                    hash.write(&info.partitions.to_le_bytes());
                    for racks in &info.racks {
                        for rack in racks {
                            hash.write(rack.as_bytes());
                            hash.write(&[0xfe]);
                        }
                        hash.write(&[0xfd]);
                    }
                }
            }
        }
        hash.0
    }
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_changes_with_partition_counts_and_racks_only() {
        let mut topics = TopicsSnapshot::new();
        topics.insert("a", TopicInfo::new(3));
        topics.insert("b", TopicInfo::new(1));
        let before = topics.digest(["a"]);
        topics.insert("b", TopicInfo::new(2));
        assert_eq!(topics.digest(["a"]), before, "b is not subscribed");
        topics.insert("a", TopicInfo::new(4));
        let grown = topics.digest(["a"]);
        assert_ne!(grown, before);
        topics.insert(
            "a",
            TopicInfo {
                partitions: 4,
                racks: vec![BTreeSet::from(["r1".to_string()]); 4],
            },
        );
        assert_ne!(topics.digest(["a"]), grown);
        assert_ne!(topics.digest(["a"]), topics.digest(["a", "missing"]));
    }
}
