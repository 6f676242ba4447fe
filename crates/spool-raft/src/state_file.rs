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
//!          then one batch per write: u32 length  u32 crc32c(seq and entries)  u64 seq (1, 2...)  entries
//!          entry: u32 length  u64 group  u8 kind (0 removed, 1 record)  [record]
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
/// A journal batch longer than this is damage, not a write (a larger one is folded).
const MAX_BATCH: u32 = 256 * 1024 * 1024;
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
    /// Bytes of the journal that replayed cleanly (where appends go on), if it belongs to
    /// the base.
    pub journal_len: Option<u64>,
    /// The sequence number the next batch of the journal takes.
    pub next_seq: u64,
    /// Bytes past the last whole batch: a write that a crash tore, never acknowledged.
    pub journal_dropped: u64,
    /// Groups whose vote the torn write was changing: their records are dropped, so that
    /// they rebuild before they vote (were the write damage rather than a tear, the vote
    /// it held may have been acted on).
    pub votes_in_doubt: Vec<GroupId>,
}

/// Why the state could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// The files are there but do not hold what they should: set them aside.
    #[error(transparent)]
    Damaged(#[from] CodecError),
    /// The files could not be read (the disk, permissions): nothing is decided.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads the base and its journal.
pub(crate) fn load(base: &Path) -> Result<Loaded, LoadError> {
    let (groups, generation) = match std::fs::read(base) {
        Ok(bytes) => decode_base(&bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Groups::new(), 0),
        Err(e) => return Err(e.into()),
    };
    let mut loaded = Loaded {
        groups,
        generation,
        ..Loaded::default()
    };
    match std::fs::read(journal_path(base)) {
        Ok(bytes) => replay(&bytes, &mut loaded)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(loaded)
}

pub(crate) fn journal_path(base: &Path) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

fn replay(bytes: &[u8], loaded: &mut Loaded) -> Result<(), CodecError> {
    // The header is written whole (temporary file, rename) before anything is appended:
    // a bad one is damage.
    let header_len = JOURNAL_HEADER_LEN as usize;
    if bytes.len() < header_len || &bytes[..4] != JOURNAL_MAGIC {
        return Err(CodecError::Malformed {
            what: "journal header",
        });
    }
    let (header, crc) = bytes.split_at(header_len - 4);
    if crc32c::crc32c(header).to_be_bytes() != crc[..4] {
        return Err(CodecError::Checksum);
    }
    if header[4] != JOURNAL_V1 {
        return Err(CodecError::Version { found: header[4] });
    }
    let mut generation = [0u8; 8];
    generation.copy_from_slice(&header[5..13]);
    if u64::from_be_bytes(generation) != loaded.generation {
        // The journal of an older base, folded into this one before a crash.
        return Ok(());
    }
    let mut at = header_len;
    let mut seq = 1;
    while let Some(batch) = batch_at(bytes, at) {
        if batch.seq != seq {
            return Err(CodecError::Malformed {
                what: "journal batch out of sequence",
            });
        }
        let mut entries = Entries::new(batch.entries);
        for entry in &mut entries {
            match entry {
                (group, Some(record)) => loaded.groups.insert(group, record),
                (group, None) => loaded.groups.remove(&group),
            };
        }
        if !entries.whole() {
            // The batch checked out, so its entries were written as they are.
            return Err(CodecError::Malformed {
                what: "journal entry",
            });
        }
        at = batch.next;
        seq += 1;
    }
    // A tear leaves no whole batch behind the torn one: a batch that checks out further
    // on means the bad one is damage, and the batches after it may hold votes.
    if (at + 1..bytes.len()).any(|p| batch_at(bytes, p).is_some_and(|b| b.seq >= seq)) {
        return Err(CodecError::Malformed {
            what: "journal batch",
        });
    }
    // What can be read of the torn batch: a group whose vote it changed rebuilds before
    // it votes, in case this was damage to a batch that had been acknowledged.
    if let Some(entries) = bytes.get(at + BATCH_HEADER_LEN..) {
        for (group, record) in Entries::new(entries) {
            let known = loaded.groups.get(&group).and_then(|r| r.vote.as_ref());
            if record.as_ref().and_then(|r| r.vote.as_ref()) != known {
                loaded.groups.remove(&group);
                loaded.votes_in_doubt.push(group);
            }
        }
    }
    loaded.journal_len = Some(at as u64);
    loaded.next_seq = seq;
    loaded.journal_dropped = (bytes.len() - at) as u64;
    Ok(())
}

/// A batch: `u32 length  u32 crc32c(seq and entries)  u64 seq  entries`, `length` counting
/// the seq and the entries.
const BATCH_HEADER_LEN: usize = 16;

struct Batch<'a> {
    seq: u64,
    entries: &'a [u8],
    next: usize,
}

/// The batch at `at`, if it is whole and checks out.
fn batch_at(bytes: &[u8], at: usize) -> Option<Batch<'_>> {
    let head = bytes.get(at..at + 8)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if !(8..=MAX_BATCH).contains(&len) {
        return None;
    }
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let body = bytes.get(at + 8..at + 8 + len as usize)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&body[..8]);
    Some(Batch {
        seq: u64::from_be_bytes(seq),
        entries: &body[8..],
        next: at + 8 + len as usize,
    })
}

/// The entries of a batch (`u32 length  payload` each), as far as they can be read.
struct Entries<'a> {
    bytes: &'a [u8],
    at: usize,
    broken: bool,
}

impl<'a> Entries<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            broken: false,
        }
    }

    /// Whether every byte was read as an entry.
    fn whole(&self) -> bool {
        !self.broken && self.at == self.bytes.len()
    }
}

impl Iterator for Entries<'_> {
    type Item = (GroupId, Option<GroupRecord>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.broken || self.at >= self.bytes.len() {
            return None;
        }
        let entry = self.bytes.get(self.at..self.at + 4).and_then(|head| {
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let payload = self.bytes.get(self.at + 4..self.at + 4 + len)?;
            let mut r = Reader::new(payload);
            let group = r.u64().ok()?;
            let record = match r.u8().ok()? {
                0 => None,
                1 => Some(read_record(&mut r).ok()?),
                _ => return None,
            };
            (r.remaining() == 0).then_some((group, record, 4 + len))
        });
        match entry {
            Some((group, record, len)) => {
                self.at += len;
                Some((group, record))
            }
            None => {
                self.broken = true;
                None
            }
        }
    }
}

/// The journal a writer appends to, with where it stands.
#[derive(Debug)]
pub(crate) struct Journal {
    base: PathBuf,
    file: Option<File>,
    len: u64,
    generation: u64,
    base_len: u64,
    /// The sequence number of the next batch (1 after a fold).
    next_seq: u64,
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
            next_seq: loaded.next_seq,
        };
        match loaded.journal_len {
            // Groups whose records were dropped: the drop is made durable before anything.
            Some(len) if loaded.votes_in_doubt.is_empty() => {
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
            _ => {
                let base = encode_base(&loaded.groups, journal.next_generation());
                journal.fold(&base)?;
            }
        }
        Ok(journal)
    }

    /// A batch recording `changes` (a group's record, or `None` for a group removed), its
    /// header left for `append` to fill.
    pub fn encode(changes: &[(GroupId, Option<&GroupRecord>)]) -> Vec<u8> {
        let mut batch = Writer(Vec::with_capacity(BATCH_HEADER_LEN + changes.len() * 96));
        batch.0.resize(BATCH_HEADER_LEN, 0);
        for (group, record) in changes {
            let at = batch.0.len();
            batch.u32(0);
            batch.u64(*group);
            match record {
                Some(record) => {
                    batch.u8(1);
                    write_record(&mut batch, record);
                }
                None => batch.u8(0),
            }
            let len = (batch.0.len() - at - 4) as u32;
            batch.0[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        batch.0
    }

    /// Whether `batch` should go to a new base instead: the journal has outgrown its base,
    /// the last append failed part-way, or the batch is too large for one.
    pub fn must_fold(&self, batch: &[u8]) -> bool {
        let limit = (self.base_len * FOLD_FACTOR).max(MIN_JOURNAL_BEFORE_FOLD);
        self.file.is_none()
            || self.len + batch.len() as u64 > limit
            || batch.len() - 8 > MAX_BATCH as usize
    }

    /// The generation the next base is written as.
    pub fn next_generation(&self) -> u64 {
        self.generation + 1
    }

    /// Appends a batch from `encode` and syncs it.
    pub fn append(&mut self, mut batch: Vec<u8>) -> std::io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other(
                "the journal is closed after a failed write",
            ));
        };
        let len = (batch.len() - 8) as u32;
        batch[8..16].copy_from_slice(&self.next_seq.to_be_bytes());
        let crc = crc32c::crc32c(&batch[8..]);
        batch[..4].copy_from_slice(&len.to_be_bytes());
        batch[4..8].copy_from_slice(&crc.to_be_bytes());
        match file.write_all(&batch).and_then(|()| file.sync_data()) {
            Ok(()) => {
                self.len += batch.len() as u64;
                self.next_seq += 1;
                Ok(())
            }
            Err(error) => {
                // A part of the batch may be on disk: appending after it would make it
                // look like damage. The next write folds instead.
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
        self.next_seq = 1;
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

    fn batch(changes: &[(GroupId, Option<GroupRecord>)]) -> Vec<u8> {
        let changes: Vec<(GroupId, Option<&GroupRecord>)> =
            changes.iter().map(|(g, r)| (*g, r.as_ref())).collect();
        Journal::encode(&changes)
    }

    fn started(base: &Path) -> Journal {
        Journal::resume(base, &Loaded::default()).expect("start")
    }

    fn journal_bytes(base: &Path) -> Vec<u8> {
        std::fs::read(journal_path(base)).expect("journal")
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
                groups,
                ..Loaded::default()
            },
        )
        .expect("start");
        let base_bytes = std::fs::read(&base).expect("base");
        journal
            .append(batch(&[(1, Some(record(5))), (2, None)]))
            .expect("append");
        journal
            .append(batch(&[(3, Some(record(7)))]))
            .expect("append");
        // Only the journal grew: the base is as it was.
        assert_eq!(std::fs::read(&base).expect("base"), base_bytes);
        let loaded = load(&base).expect("load");
        assert_eq!(loaded.groups.get(&1), Some(&record(5)));
        assert_eq!(loaded.groups.get(&2), None);
        assert_eq!(loaded.groups.get(&3), Some(&record(7)));
        assert_eq!(loaded.journal_dropped, 0);
        assert_eq!(loaded.next_seq, 3);
    }

    #[test]
    fn a_torn_last_write_is_cut_and_a_vote_it_was_changing_is_put_in_doubt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("raft.state");
        let mut journal = started(&base);
        journal
            .append(batch(&[(1, Some(record(2)))]))
            .expect("append");
        let whole = journal_bytes(&base).len();
        journal
            .append(batch(&[(1, Some(record(3))), (2, Some(record(3)))]))
            .expect("append");
        let full = journal_bytes(&base);
        // Where group 1's new record is whole in the torn batch.
        let first =
            whole + BATCH_HEADER_LEN + batch(&[(1, Some(record(3)))]).len() - BATCH_HEADER_LEN;
        for cut in whole..full.len() {
            std::fs::write(journal_path(&base), &full[..cut]).expect("write");
            let loaded = load(&base).expect("a torn write is no damage");
            let expected = (cut < first).then(|| record(2));
            assert_eq!(loaded.groups.get(&1), expected.as_ref(), "cut at {cut}");
            assert_eq!(loaded.votes_in_doubt.len(), usize::from(cut >= first));
            assert_eq!(loaded.groups.get(&2), None, "cut at {cut}");
            assert_eq!(loaded.journal_dropped, (cut - whole) as u64);
        }
        // Resumed past a tear, appends go on after the last whole batch.
        std::fs::write(journal_path(&base), &full[..whole + 5]).expect("write");
        let loaded = load(&base).expect("load");
        let mut journal = Journal::resume(&base, &loaded).expect("resume");
        journal
            .append(batch(&[(4, Some(record(9)))]))
            .expect("append");
        let loaded = load(&base).expect("load");
        assert_eq!(loaded.groups.get(&1), Some(&record(2)));
        assert_eq!(loaded.groups.get(&4), Some(&record(9)));
        // A vote in doubt stays dropped across another restart.
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("raft.state");
        let mut journal = started(&base);
        journal
            .append(batch(&[(1, Some(record(2)))]))
            .expect("append");
        journal
            .append(batch(&[(1, Some(record(3))), (2, Some(record(3)))]))
            .expect("append");
        let full = journal_bytes(&base);
        std::fs::write(journal_path(&base), &full[..full.len() - 1]).expect("write");
        let loaded = load(&base).expect("load");
        assert_eq!(loaded.votes_in_doubt, vec![1]);
        drop(Journal::resume(&base, &loaded).expect("resume"));
        let again = load(&base).expect("load");
        assert_eq!(again.groups.get(&1), None);
        assert!(again.votes_in_doubt.is_empty());
    }

    #[test]
    fn a_bad_batch_with_a_whole_one_after_it_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("raft.state");
        let mut journal = started(&base);
        for term in 1..4 {
            journal
                .append(batch(&[(term, Some(record(term)))]))
                .expect("append");
        }
        let mut bytes = journal_bytes(&base);
        // A bit of the first batch's entries.
        bytes[JOURNAL_HEADER_LEN as usize + BATCH_HEADER_LEN + 6] ^= 0x01;
        std::fs::write(journal_path(&base), &bytes).expect("write");
        assert!(
            matches!(load(&base), Err(LoadError::Damaged(_))),
            "later votes would be lost silently"
        );
    }

    #[test]
    fn a_bad_journal_header_is_damage_and_an_unreadable_file_is_no_decision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("raft.state");
        let mut journal = started(&base);
        journal
            .append(batch(&[(1, Some(record(2)))]))
            .expect("append");
        let mut bytes = journal_bytes(&base);
        bytes[6] ^= 0x10;
        std::fs::write(journal_path(&base), &bytes).expect("write");
        assert!(matches!(load(&base), Err(LoadError::Damaged(_))));
        // A directory where the journal should be: it cannot be read, and nothing is
        // decided from the base alone.
        std::fs::remove_file(journal_path(&base)).expect("remove");
        std::fs::create_dir(journal_path(&base)).expect("mkdir");
        assert!(matches!(load(&base), Err(LoadError::Io(_))));
    }

    #[test]
    fn a_journal_of_an_older_base_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("raft.state");
        let mut journal = started(&base);
        journal
            .append(batch(&[(1, Some(record(2)))]))
            .expect("append");
        let old_journal = journal_bytes(&base);
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
            .append(batch(&[(2, Some(record(8)))]))
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
