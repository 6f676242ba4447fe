//! Producer-table snapshots beside a partition's segments, so that a restart replays only
//! the entries after the newest one instead of the whole log; and the replay itself.
//!
//! `{index:020}.producers`: magic "SPPT", version 3, the Raft index the table is at
//! (u64), the encoded table, and a CRC-32C of everything before it. A snapshot is only
//! ever a shortcut: one that is damaged or missing costs a longer replay, never a wrong
//! table.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use spool_log::{FrameKind, LogReader, RecordBatch};

use super::{AbortedTxn, BatchIdentity, ProducerTable};
use crate::error::CodecError;

const MAGIC: &[u8; 4] = b"SPPT";
const VERSION: u8 = 3;
const SUFFIX: &str = ".producers";
/// Snapshots kept: the newest may be past the applied point a crash leaves on record, so
/// an older one stays for that restart.
const KEPT: usize = 3;
/// Payload bytes read at once while replaying.
const REPLAY_READ: usize = 4 * 1024 * 1024;

fn path_for(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:020}{SUFFIX}"))
}

/// The snapshots in `dir`, newest first.
fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let index = name.to_str()?.strip_suffix(SUFFIX)?.parse().ok()?;
            Some((index, e.path()))
        })
        .collect();
    found.sort_unstable_by_key(|(index, _)| std::cmp::Reverse(*index));
    found
}

pub(crate) fn encode_snapshot(index: u64, table: &ProducerTable) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + table.len() * 64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&index.to_be_bytes());
    table.encode(&mut out);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<(u64, ProducerTable), CodecError> {
    let (body, crc) = bytes.split_last_chunk::<4>().ok_or(CodecError::Truncated)?;
    if crc32c::crc32c(body) != u32::from_be_bytes(*crc) {
        return Err(CodecError::Checksum);
    }
    let rest = body.strip_prefix(MAGIC).ok_or(CodecError::Malformed {
        what: "producer snapshot magic",
    })?;
    let (&version, rest) = rest.split_first().ok_or(CodecError::Truncated)?;
    if version != VERSION {
        return Err(CodecError::Version { found: version });
    }
    let (index, rest) = rest.split_first_chunk::<8>().ok_or(CodecError::Truncated)?;
    Ok((u64::from_be_bytes(*index), ProducerTable::decode(rest)?))
}

/// Writes the snapshot (the bytes of `encode_snapshot`) for `index` and removes all but
/// the newest few. Not synced: a snapshot lost in a crash only lengthens the replay.
pub(crate) fn write_snapshot(dir: &Path, index: u64, bytes: &[u8]) -> std::io::Result<()> {
    let path = path_for(dir, index);
    let tmp = path.with_extension("producers.tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    fs::rename(&tmp, &path)?;
    for (_, old) in list(dir).into_iter().skip(KEPT) {
        let _ = fs::remove_file(old);
    }
    Ok(())
}

/// The newest readable snapshot at or before `index`.
pub(crate) fn load_snapshot(dir: &Path, index: u64) -> Option<(u64, ProducerTable)> {
    for (at, path) in list(dir).into_iter().filter(|(at, _)| *at <= index) {
        let decoded = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| decode_snapshot(&bytes).map_err(|e| e.to_string()));
        match decoded {
            Ok((stored_at, table)) if stored_at == at => return Some((at, table)),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "producer snapshot names another index; skipped")
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "producer snapshot unreadable; skipped")
            }
        }
    }
    None
}

/// Records into `table` every producer's batch and marker stored at Raft indexes
/// `[from, to)`; `aborted` hears of each transaction an abort marker ended.
pub(crate) fn replay(
    reader: &LogReader,
    table: &mut ProducerTable,
    from: u64,
    to: u64,
    mut aborted: impl FnMut(AbortedTxn),
) -> Result<(), spool_log::LogError> {
    let bounds = reader.bounds();
    let mut next = from.max(bounds.first_index);
    let to = to.min(bounds.next_index);
    while next < to {
        let entries = reader.read_entries(next, to, REPLAY_READ)?;
        let Some(last) = entries.last() else { break };
        next = last.header.index + 1;
        for entry in &entries {
            if entry.header.kind != FrameKind::Data {
                continue;
            }
            // Stored batches were checked on the way in; the frame's CRC covers them.
            let Ok(batch) = RecordBatch::new_without_crc(&entry.payload) else {
                continue;
            };
            if let Some(identity) = BatchIdentity::of(&batch) {
                let base = entry.header.base_offset;
                if let Some(ended) = table.record(&identity, base, entry.header.next_offset() - 1) {
                    aborted(ended);
                }
            }
        }
    }
    Ok(())
}
