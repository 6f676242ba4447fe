//! The record that persists a transactional id, as a Kafka record key and value.
//!
//! Key: `type u8 = 0`, then the transactional id as `u16 length + UTF-8`. A newer record
//! with the same key replaces an older one; a null value (a tombstone) removes the id.
//!
//! Value: `version u8 = 1`, producer id i64, producer epoch i16, last producer id i64,
//! last epoch i16, timeout ms i32, state u8 (0 empty, 1 ongoing, 2 prepare commit,
//! 3 prepare abort, 4 complete commit, 5 complete abort), started ms i64, updated ms i64,
//! partition count u32, then per partition its topic (`u16 length + UTF-8`) and index
//! u32. Numbers are big-endian. Version 0 lacks the last producer id and epoch (its
//! markers carried the producer's epoch): they read as none (-1), and a value without
//! them is written as version 0, which nodes from before version 1 read too.

use std::collections::BTreeSet;

use crate::error::RecordError;
use crate::state::{Transaction, TxnState};

const TYPE_TRANSACTION: u8 = 0;
const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub transactional_id: String,
    /// `None` removes the id.
    pub value: Option<Transaction>,
}

impl TxnRecord {
    /// Writes the key and value; false for a tombstone.
    pub fn encode_into(&self, key: &mut Vec<u8>, value: &mut Vec<u8>) -> bool {
        key.push(TYPE_TRANSACTION);
        put_str(key, &self.transactional_id);
        let Some(t) = &self.value else {
            return false;
        };
        let versioned = t.last_producer_id >= 0;
        value.push(if versioned { VERSION } else { 0 });
        value.extend_from_slice(&t.producer_id.to_be_bytes());
        value.extend_from_slice(&t.producer_epoch.to_be_bytes());
        if versioned {
            value.extend_from_slice(&t.last_producer_id.to_be_bytes());
            value.extend_from_slice(&t.last_epoch.to_be_bytes());
        }
        value.extend_from_slice(&t.timeout_ms.to_be_bytes());
        value.push(t.state.to_u8());
        value.extend_from_slice(&t.started_ms.to_be_bytes());
        value.extend_from_slice(&t.updated_ms.to_be_bytes());
        value.extend_from_slice(&(t.partitions.len() as u32).to_be_bytes());
        for (topic, partition) in &t.partitions {
            put_str(value, topic);
            value.extend_from_slice(&partition.to_be_bytes());
        }
        true
    }

    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self, RecordError> {
        let mut key = key;
        let kind = take::<1>(&mut key)?[0];
        if kind != TYPE_TRANSACTION {
            return Err(RecordError::UnknownType(kind));
        }
        let transactional_id = take_str(&mut key)?;
        if !key.is_empty() {
            return Err(RecordError::Malformed("bytes after the key"));
        }
        let Some(mut v) = value else {
            return Ok(Self {
                transactional_id,
                value: None,
            });
        };
        let version = take::<1>(&mut v)?[0];
        if version > VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        let producer_id = i64::from_be_bytes(take(&mut v)?);
        let producer_epoch = i16::from_be_bytes(take(&mut v)?);
        let (last_producer_id, last_epoch) = if version == 0 {
            (-1, -1)
        } else {
            (
                i64::from_be_bytes(take(&mut v)?),
                i16::from_be_bytes(take(&mut v)?),
            )
        };
        let timeout_ms = i32::from_be_bytes(take(&mut v)?);
        let state = TxnState::from_u8(take::<1>(&mut v)?[0])
            .ok_or(RecordError::Malformed("transaction state"))?;
        let started_ms = i64::from_be_bytes(take(&mut v)?);
        let updated_ms = i64::from_be_bytes(take(&mut v)?);
        let count = u32::from_be_bytes(take(&mut v)?);
        let mut partitions = BTreeSet::new();
        for _ in 0..count {
            let topic = take_str(&mut v)?;
            let partition = u32::from_be_bytes(take(&mut v)?);
            partitions.insert((topic, partition));
        }
        if !v.is_empty() {
            return Err(RecordError::Malformed("bytes after the value"));
        }
        Ok(Self {
            transactional_id,
            value: Some(Transaction {
                producer_id,
                producer_epoch,
                last_producer_id,
                last_epoch,
                timeout_ms,
                state,
                partitions,
                started_ms,
                updated_ms,
            }),
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], RecordError> {
    let (head, rest) = bytes
        .split_first_chunk::<N>()
        .ok_or(RecordError::Truncated)?;
    *bytes = rest;
    Ok(*head)
}

fn take_str(bytes: &mut &[u8]) -> Result<String, RecordError> {
    let len = u16::from_be_bytes(take(bytes)?) as usize;
    if bytes.len() < len {
        return Err(RecordError::Truncated);
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    String::from_utf8(head.to_vec()).map_err(|_| RecordError::Malformed("string not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TxnRecord {
        TxnRecord {
            transactional_id: "payments-1".into(),
            value: Some(Transaction {
                producer_id: 4001,
                producer_epoch: 7,
                last_producer_id: 4001,
                last_epoch: 6,
                timeout_ms: 60_000,
                state: TxnState::PrepareCommit,
                partitions: BTreeSet::from([("orders".into(), 2), ("payments".into(), 0)]),
                started_ms: 1_700_000_000_000,
                updated_ms: 1_700_000_000_500,
            }),
        }
    }

    #[test]
    fn records_round_trip_and_every_cut_is_refused() {
        for record in [
            sample(),
            TxnRecord {
                transactional_id: "gone".into(),
                value: None,
            },
        ] {
            let (mut key, mut value) = (Vec::new(), Vec::new());
            let has_value = record.encode_into(&mut key, &mut value);
            let value = has_value.then_some(value);
            assert_eq!(
                TxnRecord::decode(&key, value.as_deref()),
                Ok(record.clone())
            );
            for cut in 0..key.len() {
                assert!(TxnRecord::decode(&key[..cut], value.as_deref()).is_err());
            }
            if let Some(value) = &value {
                for cut in 0..value.len() {
                    assert!(TxnRecord::decode(&key, Some(&value[..cut])).is_err());
                }
                if let Some(t) = &record.value {
                    // Without a last producer, version 0 is written, and read back alike.
                    let none = Transaction {
                        last_producer_id: -1,
                        last_epoch: -1,
                        ..t.clone()
                    };
                    let (mut old_key, mut old) = (Vec::new(), Vec::new());
                    TxnRecord {
                        transactional_id: record.transactional_id.clone(),
                        value: Some(none.clone()),
                    }
                    .encode_into(&mut old_key, &mut old);
                    assert_eq!(old[0], 0);
                    assert_eq!(old.len() + 10, value.len());
                    let decoded = TxnRecord::decode(&old_key, Some(&old)).expect("version 0");
                    assert_eq!(decoded.value, Some(none));
                }
                let mut newer = value.clone();
                newer[0] = 9;
                assert_eq!(
                    TxnRecord::decode(&key, Some(&newer)),
                    Err(RecordError::UnknownVersion(9))
                );
            }
        }
    }
}
