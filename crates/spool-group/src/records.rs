//! The records that persist group state, as Kafka record keys and values.
//!
//! Every change to a group is one or more of these, appended to the group's coordinator
//! partition before it is answered; replaying them in order rebuilds the state exactly. A
//! record is keyed by what it describes, and a newer record with the same key replaces an
//! older one; a null value (a tombstone) deletes it, so the log can later be compacted.
//!
//! Key: `type u8`, then strings as `u16 length + UTF-8` and numbers big-endian:
//!
//! | type | record | key after the type | value |
//! |---|---|---|---|
//! | 0 | offset commit | group, topic, partition u32 | `OffsetValue` |
//! | 1 | group | group | `GroupValue` |
//! | 2 | member subscription | group, member | `MemberValue` |
//! | 3 | target assignment of a member | group, member | `Assignment` |
//! | 4 | target assignment epoch | group | epoch i32 |
//! | 5 | member's current assignment | group, member | `CurrentValue` |
//! | 6 | group settings | group | `GroupSettings` |
//!
//! Values start with a version byte (0 today); a reader refuses versions it does not know.

use crate::assignment::Assignment;
use crate::error::RecordError;
use crate::member::MemberState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    Offset {
        group: String,
        topic: String,
        partition: u32,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
    Member {
        group: String,
        member: String,
        value: Option<MemberValue>,
    },
    Target {
        group: String,
        member: String,
        value: Option<Assignment>,
    },
    TargetEpoch {
        group: String,
        value: Option<i32>,
    },
    Current {
        group: String,
        member: String,
        value: Option<CurrentValue>,
    },
    Settings {
        group: String,
        value: Option<GroupSettings>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// The leader epoch of the record at `offset - 1` as the consumer saw it, or -1.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub epoch: i32,
    /// `TopicsSnapshot::digest` of the subscribed topics when the epoch was set.
    pub metadata_digest: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberValue {
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub topics: Vec<String>,
    pub pattern: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub assignor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentValue {
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub revoking: Assignment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupSettings {
    pub session_timeout_ms: Option<i32>,
    pub heartbeat_interval_ms: Option<i32>,
}

const VERSION: u8 = 0;

impl GroupRecord {
    /// The group the record belongs to.
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset { group, .. }
            | GroupRecord::Group { group, .. }
            | GroupRecord::Member { group, .. }
            | GroupRecord::Target { group, .. }
            | GroupRecord::TargetEpoch { group, .. }
            | GroupRecord::Current { group, .. }
            | GroupRecord::Settings { group, .. } => group,
        }
    }

    /// Appends the key to `key` and the value (if not a tombstone) to `value`; returns
    /// whether there is a value.
    pub fn encode_into(&self, key: &mut Vec<u8>, value: &mut Vec<u8>) -> bool {
        let mut k = Writer(key);
        let mut v = Writer(value);
        match self {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                value: val,
            } => {
                k.u8(0);
                k.str(group);
                k.str(topic);
                k.u32(*partition);
                val.as_ref().map(|o| {
                    v.u8(VERSION);
                    v.i64(o.offset);
                    v.i32(o.leader_epoch);
                    v.str(&o.metadata);
                    v.i64(o.commit_ms);
                })
            }
            GroupRecord::Group { group, value: val } => {
                k.u8(1);
                k.str(group);
                val.as_ref().map(|g| {
                    v.u8(VERSION);
                    v.i32(g.epoch);
                    v.u64(g.metadata_digest);
                })
            }
            GroupRecord::Member {
                group,
                member,
                value: val,
            } => {
                k.u8(2);
                k.str(group);
                k.str(member);
                val.as_ref().map(|m| {
                    v.u8(VERSION);
                    v.opt_str(m.instance_id.as_deref());
                    v.opt_str(m.rack.as_deref());
                    v.str(&m.client_id);
                    v.str(&m.client_host);
                    v.u32(m.topics.len() as u32);
                    for topic in &m.topics {
                        v.str(topic);
                    }
                    v.opt_str(m.pattern.as_deref());
                    v.i32(m.rebalance_timeout_ms);
                    v.opt_str(m.assignor.as_deref());
                })
            }
            GroupRecord::Target {
                group,
                member,
                value: val,
            } => {
                k.u8(3);
                k.str(group);
                k.str(member);
                val.as_ref().map(|a| {
                    v.u8(VERSION);
                    v.assignment(a);
                })
            }
            GroupRecord::TargetEpoch { group, value: val } => {
                k.u8(4);
                k.str(group);
                val.map(|epoch| {
                    v.u8(VERSION);
                    v.i32(epoch);
                })
            }
            GroupRecord::Current {
                group,
                member,
                value: val,
            } => {
                k.u8(5);
                k.str(group);
                k.str(member);
                val.as_ref().map(|c| {
                    v.u8(VERSION);
                    v.i32(c.epoch);
                    v.i32(c.previous_epoch);
                    v.u8(c.state as u8);
                    v.assignment(&c.assigned);
                    v.assignment(&c.revoking);
                })
            }
            GroupRecord::Settings { group, value: val } => {
                k.u8(6);
                k.str(group);
                val.map(|s| {
                    v.u8(VERSION);
                    v.i32(s.session_timeout_ms.unwrap_or(-1));
                    v.i32(s.heartbeat_interval_ms.unwrap_or(-1));
                })
            }
        }
        .is_some()
    }

    /// Key and value as new buffers (the value is `None` for a tombstone).
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let has_value = self.encode_into(&mut key, &mut value);
        (key, has_value.then_some(value))
    }

    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self, RecordError> {
        let mut k = Reader(key);
        let kind = k.u8()?;
        let group = k.string()?;
        let mut v = match value {
            Some(bytes) => {
                let mut reader = Reader(bytes);
                let version = reader.u8()?;
                if version != VERSION {
                    return Err(RecordError::UnknownVersion {
                        what: "group record value",
                        version,
                    });
                }
                Some(reader)
            }
            None => None,
        };
        let record = match kind {
            0 => {
                let topic = k.string()?;
                let partition = k.u32()?;
                let value = match v.as_mut() {
                    Some(v) => Some(OffsetValue {
                        offset: v.i64()?,
                        leader_epoch: v.i32()?,
                        metadata: v.string()?,
                        commit_ms: v.i64()?,
                    }),
                    None => None,
                };
                GroupRecord::Offset {
                    group,
                    topic,
                    partition,
                    value,
                }
            }
            1 => {
                let value = match v.as_mut() {
                    Some(v) => Some(GroupValue {
                        epoch: v.i32()?,
                        metadata_digest: v.u64()?,
                    }),
                    None => None,
                };
                GroupRecord::Group { group, value }
            }
            2 => {
                let member = k.string()?;
                let value = match v.as_mut() {
                    Some(v) => Some(MemberValue {
                        instance_id: v.opt_string()?,
                        rack: v.opt_string()?,
                        client_id: v.string()?,
                        client_host: v.string()?,
                        topics: {
                            let n = v.u32()?;
                            (0..n).map(|_| v.string()).collect::<Result<_, _>>()?
                        },
                        pattern: v.opt_string()?,
                        rebalance_timeout_ms: v.i32()?,
                        assignor: v.opt_string()?,
                    }),
                    None => None,
                };
                GroupRecord::Member {
                    group,
                    member,
                    value,
                }
            }
            3 => {
                let member = k.string()?;
                let value = match v.as_mut() {
                    Some(v) => Some(v.assignment()?),
                    None => None,
                };
                GroupRecord::Target {
                    group,
                    member,
                    value,
                }
            }
            4 => GroupRecord::TargetEpoch {
                group,
                value: match v.as_mut() {
                    Some(v) => Some(v.i32()?),
                    None => None,
                },
            },
            5 => {
                let member = k.string()?;
                let value = match v.as_mut() {
                    Some(v) => Some(CurrentValue {
                        epoch: v.i32()?,
                        previous_epoch: v.i32()?,
                        state: MemberState::from_u8(v.u8()?)
                            .ok_or(RecordError::BadField("member state"))?,
                        assigned: v.assignment()?,
                        revoking: v.assignment()?,
                    }),
                    None => None,
                };
                GroupRecord::Current {
                    group,
                    member,
                    value,
                }
            }
            6 => {
                let value = match v.as_mut() {
                    Some(v) => Some(GroupSettings {
                        session_timeout_ms: Some(v.i32()?).filter(|ms| *ms >= 0),
                        heartbeat_interval_ms: Some(v.i32()?).filter(|ms| *ms >= 0),
                    }),
                    None => None,
                };
                GroupRecord::Settings { group, value }
            }
            other => return Err(RecordError::UnknownType(other)),
        };
        Ok(record)
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, n: u8) {
        self.0.push(n);
    }
    fn u32(&mut self, n: u32) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    fn i32(&mut self, n: i32) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    fn u64(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    fn i64(&mut self, n: i64) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    /// Strings are at most 65,535 bytes: ids and names are validated far below that.
    fn str(&mut self, s: &str) {
        let len = s.len().min(u16::MAX as usize);
        self.0.extend_from_slice(&(len as u16).to_be_bytes());
        self.0.extend_from_slice(&s.as_bytes()[..len]);
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    fn assignment(&mut self, a: &Assignment) {
        self.u32(a.topics().count() as u32);
        for (topic, partitions) in a.topics() {
            self.str(topic);
            self.u32(partitions.len() as u32);
            for p in partitions {
                self.u32(*p);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String, RecordError> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::NotUtf8)
    }
    fn opt_string(&mut self) -> Result<Option<String>, RecordError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err(RecordError::BadField("optional string flag")),
        }
    }
    fn assignment(&mut self) -> Result<Assignment, RecordError> {
        let topics = self.u32()?;
        let mut out = Assignment::new();
        for _ in 0..topics {
            let topic = self.string()?;
            let count = self.u32()?;
            // Each partition takes 4 bytes: a count the bytes cannot hold is damage.
            if self.0.len() < count as usize * 4 {
                return Err(RecordError::Truncated);
            }
            for _ in 0..count {
                out.insert(&topic, self.u32()?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<GroupRecord> {
        let a: Assignment = [("orders", 0), ("orders", 3), ("audit", 1)]
            .into_iter()
            .collect();
        vec![
            GroupRecord::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7,
                value: Some(OffsetValue {
                    offset: 42,
                    leader_epoch: 3,
                    metadata: "m".into(),
                    commit_ms: 1_700_000_000_000,
                }),
            },
            GroupRecord::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7,
                value: None,
            },
            GroupRecord::Group {
                group: "g".into(),
                value: Some(GroupValue {
                    epoch: 9,
                    metadata_digest: u64::MAX,
                }),
            },
            GroupRecord::Member {
                group: "g".into(),
                member: "m1".into(),
                value: Some(MemberValue {
                    instance_id: Some("i".into()),
                    rack: None,
                    client_id: "c".into(),
                    client_host: "h".into(),
                    topics: vec!["orders".into(), "audit".into()],
                    pattern: Some("o.*".into()),
                    rebalance_timeout_ms: 30_000,
                    assignor: Some("range".into()),
                }),
            },
            GroupRecord::Target {
                group: "g".into(),
                member: "m1".into(),
                value: Some(a.clone()),
            },
            GroupRecord::TargetEpoch {
                group: "g".into(),
                value: Some(9),
            },
            GroupRecord::Current {
                group: "g".into(),
                member: "m1".into(),
                value: Some(CurrentValue {
                    epoch: 9,
                    previous_epoch: 8,
                    state: MemberState::UnrevokedPartitions,
                    assigned: a.clone(),
                    revoking: [("audit", 2)].into_iter().collect(),
                }),
            },
            GroupRecord::Settings {
                group: "g".into(),
                value: Some(GroupSettings {
                    session_timeout_ms: Some(10_000),
                    heartbeat_interval_ms: None,
                }),
            },
        ]
    }

    #[test]
    fn every_record_round_trips() {
        for record in samples() {
            let (key, value) = record.encode();
            assert_eq!(GroupRecord::decode(&key, value.as_deref()), Ok(record));
        }
    }

    #[test]
    fn a_cut_or_unknown_record_is_an_error_not_a_guess() {
        for record in samples() {
            let (key, value) = record.encode();
            for cut in 0..key.len() {
                assert!(GroupRecord::decode(&key[..cut], value.as_deref()).is_err());
            }
            if let Some(value) = &value {
                for cut in 0..value.len() {
                    assert!(GroupRecord::decode(&key, Some(&value[..cut])).is_err());
                }
                let mut newer = value.clone();
                newer[0] = 1;
                assert!(matches!(
                    GroupRecord::decode(&key, Some(&newer)),
                    Err(RecordError::UnknownVersion { .. })
                ));
            }
        }
        assert_eq!(
            GroupRecord::decode(&[99, 0, 1, b'g'], None),
            Err(RecordError::UnknownType(99))
        );
    }
}
