//! The node state store on disk: a base file holding every group's record, and a journal
//! of the records changed since, appended and synced in one write per batch of changes.
//! A node with thousands of groups writes only what changed (a vote, a commit index)
//! instead of rewriting every group's record on every change; the journal is folded into
//! a new base once it outgrows it.
//!
//! Both files name the generation of the base they belong to: a journal is replayed only
//! over its own base, so a crash between writing a new base and starting its journal
//! never replays older records over newer ones.
//!
//! Layout (big-endian):
//! ```text
//! base:    "SPRS" u8 version=2 u64 generation  u32 group count  records...  u32 crc32c(all before)
//!          (version 1, from before the journal: no generation, read as generation 0)
//! journal: "SPRJ" u8 version=1 u64 generation  u32 crc32c(header before it)
//!          then entries: u32 length  u32 crc32c(payload)  payload
//!          payload: u64 group  u8 kind (0 removed, 1 record)  [record]
//! record:  u8 has_vote [vote]  log_id committed  log_id applied
//!          u32 count, stored_membership each  i64 next_offset  u8 has_snapshot [log_id stored_membership i64]
//! vote: u64 term u64 node u8 committed     log_id: u8 flag [u64 term u64 index]
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::codec::{Reader, Writer};
use crate::error::CodecError;
use crate::state_store::{GroupRecord, SnapshotRecord};
use crate::types::GroupId;

const BASE_MAGIC: &[u8; 4] = b"SPRS";
const BASE_V1: u8 = 1;
const BASE_V2: u8 = 2;
const JOURNAL_MAGIC: &[u8; 4] = b"SPRJ";
const JOURNAL_V1: u8 = 1;
const JOURNAL_HEADER_LEN: u64 = 4 + 1 + 8 + 4;
/// A journal entry longer than this is damage, not a record.
const MAX_ENTRY: u32 = 16 * 1024 * 1024;
/// The journal is folded into a new base once it is this much larger than the base (and
/// at least `MIN_JOURNAL_BEFORE_FOLD`): replay stays short, and folding stays rare.
const FOLD_FACTOR: u64 = 2;
const MIN_JOURNAL_BEFORE_FOLD: u64 = 1024 * 1024;

pub(crate) type Groups = BTreeMap<GroupId, GroupRecord>;

/// What was on disk, as the node left it.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub groups: Groups,
    pub generation: u64,
    /// Bytes of the journal that replayed cleanly (where appends go on).
    pub journal_len: Option<u64>,
    /// Bytes past a journal entry that did not check out (a torn last write, or damage).
    pub journal_dropped: u64,
    /// A bad journal entry with good ones after it: damage, not a torn write.
    pub journal_damaged: bool,
}

/// Reads the base and its journal; `Err` for a damaged base or journal.
pub(crate) fn load(base: &Path) -> Result<Loaded, CodecError> {
    let (groups, generation) = match std::fs::read(base) {
        Ok(bytes) => decode_base(&bytes)?,
        Err(_) => (Groups::new(), 0),
    };
    let mut loaded = Loaded {
        groups,
        generation,
        ..Loaded::default()
    };
    if let Ok(bytes) = std::fs::read(journal_path(base)) {
        replay(&bytes, &mut loaded);
    }
    if loaded.journal_damaged {
        return Err(CodecError::Malformed {
            what: "journal entry",
        });
    }
    Ok(loaded)
}

pub(crate) fn journal_path(base: &Path) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

fn replay(bytes: &[u8], loaded: &mut Loaded) {
    if bytes.len() < JOURNAL_HEADER_LEN as usize || &bytes[..4] != JOURNAL_MAGIC {
        return;
    }
    let (header, crc) = bytes.split_at(JOURNAL_HEADER_LEN as usize - 4);
    if crc32c::crc32c(header).to_be_bytes() != crc[..4] || header[4] != JOURNAL_V1 {
        return;
    }
    let mut generation = [0u8; 8];
    generation.copy_from_slice(&header[5..13]);
    if u64::from_be_bytes(generation) != loaded.generation {
        // The journal of an older base, folded into this one before a crash.
        return;
    }
    let mut at = JOURNAL_HEADER_LEN as usize;
    while let Some((group, record, next)) = entry_at(bytes, at) {
        match record {
            Some(record) => loaded.groups.insert(group, record),
            None => loaded.groups.remove(&group),
        };
        at = next;
    }
    loaded.journal_len = Some(at as u64);
    loaded.journal_dropped = (bytes.len() - at) as u64;
    // A torn last write leaves no whole entry behind it; a whole entry past a bad one
    // means the bad one is damage, and the entries after it may hold votes.
    loaded.journal_damaged = (at + 1..bytes.len()).any(|p| entry_at(bytes, p).is_some());
}

/// The entry at `at`, if it is whole and checks out, and where the next one starts.
fn entry_at(bytes: &[u8], at: usize) -> Option<(GroupId, Option<GroupRecord>, usize)> {
    let head = bytes.get(at..at + 8)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if len > MAX_ENTRY {
        return None;
    }
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let payload = bytes.get(at + 8..at + 8 + len as usize)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let mut r = Reader::new(payload);
    let group = r.u64().ok()?;
    let record = match r.u8().ok()? {
        0 => None,
        1 => Some(read_record(&mut r).ok()?),
        _ => return None,
    };
    (r.remaining() == 0).then_some((group, record, at + 8 + len as usize))
}

/// The journal a writer appends to, with where it stands.
#[derive(Debug)]
pub(crate) struct Journal {
    base: PathBuf,
    file: Option<File>,
    len: u64,
    generation: u64,
    base_len: u64,
}

impl Journal {
    /// Continues the journal `loaded` came from, cutting anything past its clean end;
    /// starts a fresh one (a new base first) when there is none to continue.
    pub fn resume(base: &Path, loaded: &Loaded) -> std::io::Result<Self> {
        let base_len = std::fs::metadata(base).map_or(0, |m| m.len());
        let mut journal = Self {
            base: base.to_path_buf(),
            file: None,
            len: 0,
            generation: loaded.generation,
            base_len,
        };
        match loaded.journal_len {
            Some(len) => {
                // Appending: every write lands at the end, after any cut.
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(journal_path(base))?;
                if loaded.journal_dropped > 0 {
                    file.set_len(len)?;
                    file.sync_all()?;
                }
                journal.file = Some(file);
                journal.len = len;
            }
            None => {
                let base = encode_base(&loaded.groups, journal.next_generation());
                journal.fold(&base)?;
            }
        }
        Ok(journal)
    }

    /// The journal entries recording `changes` (a group's record, or `None` for a group
    /// removed).
    pub fn encode(changes: &[(GroupId, Option<&GroupRecord>)]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(changes.len() * 96);
        let mut payload = Writer(Vec::with_capacity(96));
        for (group, record) in changes {
            payload.0.clear();
            payload.u64(*group);
            match record {
                Some(record) => {
                    payload.u8(1);
                    write_record(&mut payload, record);
                }
                None => payload.u8(0),
            }
            bytes.extend_from_slice(&(payload.0.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&crc32c::crc32c(&payload.0).to_be_bytes());
            bytes.extend_from_slice(&payload.0);
        }
        bytes
    }

    /// Whether `more` bytes of entries should go to a new base instead: the journal has
    /// outgrown its base, or the last append failed part-way.
    pub fn must_fold(&self, more: usize) -> bool {
        let limit = (self.base_len * FOLD_FACTOR).max(MIN_JOURNAL_BEFORE_FOLD);
        self.file.is_none() || self.len + more as u64 > limit
    }

    /// The generation the next base is written as.
    pub fn next_generation(&self) -> u64 {
        self.generation + 1
    }

    /// Appends entries and syncs them.
    pub fn append(&mut self, entries: &[u8]) -> std::io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other(
                "the journal is closed after a failed write",
            ));
        };
        match file.write_all(entries).and_then(|()| file.sync_data()) {
            Ok(()) => {
                self.len += entries.len() as u64;
                Ok(())
            }
            Err(error) => {
                // A part of the entries may be on disk: appending after it would hide
                // later entries from replay. The next write folds instead.
                self.file = None;
                Err(error)
            }
        }
    }

    /// Puts `base` (every record, from `encode_base` with `next_generation`) in place, then
    /// starts its empty journal: the old journal is ignored from the moment the new base
    /// is in place.
    pub fn fold(&mut self, base: &[u8]) -> std::io::Result<()> {
        self.file = None;
        let generation = self.next_generation();
        write_atomically(&self.base, base)?;
        self.generation = generation;
        self.base_len = base.len() as u64;
        let mut header = Writer(Vec::with_capacity(JOURNAL_HEADER_LEN as usize));
        header.0.extend_from_slice(JOURNAL_MAGIC);
        header.u8(JOURNAL_V1);
        header.u64(generation);
        let crc = crc32c::crc32c(&header.0);
        header.u32(crc);
        let path = journal_path(&self.base);
        write_atomically(&path, &header.0)?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        self.file = Some(file);
        self.len = JOURNAL_HEADER_LEN;
        Ok(())
    }
}

/// Write, fsync, rename, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub(crate) fn encode_base(groups: &Groups, generation: u64) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64 + groups.len() * 160));
    w.0.extend_from_slice(BASE_MAGIC);
    w.u8(BASE_V2);
    w.u64(generation);
    w.u32(groups.len() as u32);
    for (group, record) in groups {
        w.u64(*group);
        write_record(&mut w, record);
    }
    let crc = crc32c::crc32c(&w.0);
    w.u32(crc);
    w.0
}

fn decode_base(bytes: &[u8]) -> Result<(Groups, u64), CodecError> {
    if bytes.len() < BASE_MAGIC.len() + 4 || &bytes[..4] != BASE_MAGIC {
        return Err(CodecError::Malformed { what: "magic" });
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return Err(CodecError::Checksum);
    }
    let mut r = Reader::new(&body[4..]);
    let generation = match r.u8()? {
        BASE_V1 => 0,
        BASE_V2 => r.u64()?,
        found => return Err(CodecError::Version { found }),
    };
    let count = r.count()?;
    let mut groups = Groups::new();
    for _ in 0..count {
        let group = r.u64()?;
        groups.insert(group, read_record(&mut r)?);
    }
    if r.remaining() != 0 {
        return Err(CodecError::Malformed {
            what: "trailing bytes",
        });
    }
    Ok((groups, generation))
}

fn write_record(w: &mut Writer, record: &GroupRecord) {
    match &record.vote {
        Some(vote) => {
            w.u8(1);
            w.vote(vote);
        }
        None => w.u8(0),
    }
    w.log_id(&record.committed);
    w.log_id(&record.applied);
    w.u32(record.memberships.len() as u32);
    for membership in &record.memberships {
        w.stored_membership(membership);
    }
    w.i64(record.next_offset);
    match &record.snapshot {
        Some(snapshot) => {
            w.u8(1);
            w.log_id(&snapshot.last_log_id);
            w.stored_membership(&snapshot.membership);
            w.i64(snapshot.next_offset);
        }
        None => w.u8(0),
    }
}

fn read_record(r: &mut Reader<'_>) -> Result<GroupRecord, CodecError> {
    let vote = match r.u8()? {
        0 => None,
        _ => Some(r.vote()?),
    };
    let committed = r.log_id()?;
    let applied = r.log_id()?;
    let membership_count = r.count()?;
    let mut memberships = Vec::with_capacity(membership_count);
    for _ in 0..membership_count {
        memberships.push(r.stored_membership()?);
    }
    let next_offset = r.i64()?;
    let snapshot = match r.u8()? {
        0 => None,
        _ => Some(SnapshotRecord {
            last_log_id: r.log_id()?,
            membership: r.stored_membership()?,
            next_offset: r.i64()?,
        }),
    };
    Ok(GroupRecord {
        vote,
        committed,
        applied,
        memberships,
        next_offset,
        snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::make_vote;
    use crate::types::log_id;

    fn record(term: u64) -> GroupRecord {
        GroupRecord {
            vote: Some(make_vote(term, 1, true)),
            committed: Some(log_id(term, term * 10)),
            ..GroupRecord::default()
        }
    }

    fn journal_entries(changes: &[(GroupId, Option<GroupRecord>)]) -> Vec<u8> {
        let changes: Vec<(GroupId, Option<&GroupRecord>)> =
            changes.iter().map(|(g, r)| (*g, r.as_ref())).collect();
        Journal::encode(&changes)
    }

    #[test]
    fn changes_are_appended_and_replayed_over_the_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("raft.state");
        let mut groups = Groups::new();
        groups.insert(1, record(1));
        groups.insert(2, record(1));
        let mut journal = Journal::resume(
            &base,
            &Loaded {
                groups: groups.clone(),
                ..Loaded::default()
            },
        )
        .expect("start");
        let base_bytes = std::fs::read(&base).expect("base");
        journal
            .append(&journal_entries(&[(1, Some(record(5))), (2, None)]))
            .expect("append");
        journal
            .append(&journal_entries(&[(3, Some(record(7)))]))
            .expect("append");
        // Only the journal grew: the base is as it was.
        assert_eq!(std::fs::read(&base).expect("base"), base_bytes);
        let loaded = load(&base).expect("load");
        assert_eq!(loaded.groups.get(&1), Some(&record(5)));
        assert_eq!(loaded.groups.get(&2), None);
        assert_eq!(loaded.groups.get(&3), Some(&record(7)));
        assert_eq!(loaded.journal_dropped, 0);
    }

    #[test]
    fn a_torn_last_write_is_cut_and_appends_go_on_after_the_last_whole_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("raft.state");
        let mut journal = Journal::resume(&base, &Loaded::default()).expect("start");
        journal
            .append(&journal_entries(&[(1, Some(record(2)))]))
            .expect("append");
        let whole = std::fs::metadata(journal_path(&base))
            .expect("journal")
            .len();
        // Every cut of the next write, as a crash could leave it.
        let next = journal_entries(&[(1, Some(record(3))), (2, Some(record(3)))]);
        let first = journal_entries(&[(1, Some(record(3)))]).len();
        for cut in 1..next.len() {
            let mut bytes = std::fs::read(journal_path(&base)).expect("read");
            bytes.truncate(whole as usize);
            bytes.extend_from_slice(&next[..cut]);
            std::fs::write(journal_path(&base), &bytes).expect("write");
            let loaded = load(&base).expect("a torn write is no damage");
            let expected = if cut >= first { record(3) } else { record(2) };
            assert_eq!(loaded.groups.get(&1), Some(&expected), "cut at {cut}");
            assert_eq!(loaded.groups.get(&2), None, "cut at {cut}");
            assert_eq!(loaded.journal_dropped > 0, cut != first, "cut at {cut}");
        }
        // Resumed after a torn write, later appends are replayed.
        let mut bytes = std::fs::read(journal_path(&base)).expect("read");
        bytes.truncate(whole as usize);
        bytes.extend_from_slice(&next[..next.len() / 3]);
        std::fs::write(journal_path(&base), &bytes).expect("write");
        let loaded = load(&base).expect("load");
        assert!(loaded.journal_dropped > 0);
        let mut journal = Journal::resume(&base, &loaded).expect("resume");
        journal
            .append(&journal_entries(&[(4, Some(record(9)))]))
            .expect("append");
        let loaded = load(&base).expect("load");
        assert_eq!(loaded.groups.get(&1), Some(&record(2)));
        assert_eq!(loaded.groups.get(&4), Some(&record(9)));
    }

    #[test]
    fn a_damaged_entry_with_entries_after_it_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("raft.state");
        let mut journal = Journal::resume(&base, &Loaded::default()).expect("start");
        for term in 1..4 {
            journal
                .append(&journal_entries(&[(term, Some(record(term)))]))
                .expect("append");
        }
        let mut bytes = std::fs::read(journal_path(&base)).expect("read");
        // A bit of the first entry's payload.
        bytes[JOURNAL_HEADER_LEN as usize + 12] ^= 0x01;
        std::fs::write(journal_path(&base), &bytes).expect("write");
        assert!(load(&base).is_err(), "later votes would be lost silently");
    }

    #[test]
    fn a_journal_of_an_older_base_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("raft.state");
        let mut journal = Journal::resume(&base, &Loaded::default()).expect("start");
        journal
            .append(&journal_entries(&[(1, Some(record(2)))]))
            .expect("append");
        let old_journal = std::fs::read(journal_path(&base)).expect("read");
        let mut groups = Groups::new();
        groups.insert(1, record(6));
        let folded = encode_base(&groups, journal.next_generation());
        journal.fold(&folded).expect("fold");
        // A crash after the new base and before its journal: the old journal is still
        // there, and must not take group 1 back to term 2.
        std::fs::write(journal_path(&base), &old_journal).expect("write");
        let loaded = load(&base).expect("load");
        assert_eq!(loaded.groups.get(&1), Some(&record(6)));
        assert_eq!(loaded.journal_len, None);
        // Resumed, the writer starts a journal of its own base.
        let mut journal = Journal::resume(&base, &loaded).expect("resume");
        journal
            .append(&journal_entries(&[(2, Some(record(8)))]))
            .expect("append");
        let loaded = load(&base).expect("load");
        assert_eq!(loaded.groups.get(&1), Some(&record(6)));
        assert_eq!(loaded.groups.get(&2), Some(&record(8)));
    }

    #[test]
    fn a_base_of_the_first_version_is_read() {
        let mut groups = Groups::new();
        groups.insert(9, record(4));
        let v2 = encode_base(&groups, 0);
        // Version 1: no generation, otherwise the same.
        let mut v1 = Vec::new();
        v1.extend_from_slice(BASE_MAGIC);
        v1.push(BASE_V1);
        v1.extend_from_slice(&v2[13..v2.len() - 4]);
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        let (read, generation) = decode_base(&v1).expect("decode");
        assert_eq!(read, groups);
        assert_eq!(generation, 0);
    }
}
