//! The node's small durable store of Raft metadata for every group it hosts: the vote,
//! the committed and applied log ids, and the snapshot (where the retained log starts).
//!
//! One file for all groups, replaced atomically (write, fsync, rename, fsync directory).
//! A vote must be durable before it is acted on, so `update_durable` waits for a write
//! that includes it; many groups voting at once share one write. Everything else (commit
//! and apply progress) is written lazily, at least once a second: losing it only makes a
//! restarted node re-apply a little, never lose or invent an entry.
//!
//! File layout (big-endian):
//! ```text
//! "SPRS" u8 version=1  u32 group count  records...  u32 crc32c(everything before)
//! record: u64 group  u8 has_vote [vote]  log_id committed  log_id applied
//!         u32 count, stored_membership each  i64 next_offset  u8 has_snapshot [log_id stored_membership i64]
//! vote: u64 term u64 node u8 committed     log_id: u8 flag [u64 term u64 index]
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::codec::{Reader, Writer};
use crate::error::{CodecError, ReplicaError};
use crate::types::{GroupId, LogId, StoredMembership, Vote};

const MAGIC: &[u8; 4] = b"SPRS";
const VERSION: u8 = 1;
/// Lazy changes reach the disk at least this often.
const LAZY_INTERVAL: Duration = Duration::from_secs(1);

/// Renames a damaged state file to `<name>.damaged-<ms>`, durably.
fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{ms}"));
    let aside = PathBuf::from(name);
    std::fs::rename(path, &aside)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(aside)
}

/// The tiny snapshot of a partition: the point the retained log starts after.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotRecord {
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
    /// The Kafka offset after the last entry the snapshot covers.
    pub next_offset: i64,
}

/// Everything the node keeps about one group outside its log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupRecord {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub applied: Option<LogId>,
    /// Membership configurations applied after the snapshot, oldest first (few: one per
    /// membership change); the last is the one in effect.
    pub memberships: Vec<StoredMembership>,
    /// The Kafka offset after the last applied entry.
    pub next_offset: i64,
    pub snapshot: Option<SnapshotRecord>,
}

#[derive(Debug, Clone, Default)]
struct Written {
    version: u64,
    /// The last write failed; waiters for versions past `version` get this.
    error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    groups: BTreeMap<GroupId, GroupRecord>,
    version: u64,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    state: Mutex<State>,
    wake: Mutex<Option<mpsc::Sender<()>>>,
    written: watch::Sender<Written>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Cheap to clone; every replica on the node holds one.
#[derive(Debug, Clone)]
pub struct NodeStateStore {
    inner: Arc<Inner>,
}

impl NodeStateStore {
    /// Opens (or creates) the state file at `path` and starts its writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReplicaError> {
        let path = path.as_ref().to_path_buf();
        let fail = |reason: String| ReplicaError::StateFile {
            path: path.clone(),
            reason,
        };
        let groups = match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes) {
                Ok(groups) => groups,
                // Not a reason to stay down, nor to make the operator delete it: the file
                // is kept aside for inspection, and every replica with a log is treated
                // as having lost its state (it rebuilds from its leader before voting).
                Err(error) => {
                    let aside = set_aside(&path).map_err(|e| fail(e.to_string()))?;
                    tracing::error!(path = %path.display(), kept_as = %aside.display(), %error, "the Raft state file is damaged; starting without it: replicas rebuild from their leaders before they vote");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(fail(e.to_string())),
        };
        let (wake, woken) = mpsc::channel();
        let inner = Arc::new(Inner {
            path: path.clone(),
            state: Mutex::new(State { groups, version: 0 }),
            wake: Mutex::new(Some(wake)),
            written: watch::Sender::new(Written::default()),
            thread: Mutex::new(None),
        });
        // The thread holds the store weakly: once every handle is gone (a node dropped
        // without `close`), it stops instead of writing on behind a successor.
        let for_thread = Arc::downgrade(&inner);
        let thread = std::thread::Builder::new()
            .name("spool-raft-state".into())
            .spawn(move || write_loop(&for_thread, &woken))
            .map_err(|e| fail(e.to_string()))?;
        *inner.thread.lock() = Some(thread);
        Ok(Self { inner })
    }

    pub fn get(&self, group: GroupId) -> Option<GroupRecord> {
        self.inner.state.lock().groups.get(&group).cloned()
    }

    pub fn groups(&self) -> Vec<GroupId> {
        self.inner.state.lock().groups.keys().copied().collect()
    }

    /// Changes a group's record; the change reaches the disk within a second.
    pub fn update(&self, group: GroupId, change: impl FnOnce(&mut GroupRecord)) {
        let mut state = self.inner.state.lock();
        change(state.groups.entry(group).or_default());
        state.version += 1;
    }

    /// Changes a group's record and returns once the change is durable.
    pub async fn update_durable(
        &self,
        group: GroupId,
        change: impl FnOnce(&mut GroupRecord),
    ) -> std::io::Result<()> {
        let version = {
            let mut state = self.inner.state.lock();
            change(state.groups.entry(group).or_default());
            state.version += 1;
            state.version
        };
        self.wait_durable(version).await
    }

    /// Forgets a group, durably.
    pub async fn remove(&self, group: GroupId) -> std::io::Result<()> {
        let version = {
            let mut state = self.inner.state.lock();
            state.groups.remove(&group);
            state.version += 1;
            state.version
        };
        self.wait_durable(version).await
    }

    /// Makes every change so far durable.
    pub async fn flush(&self) -> std::io::Result<()> {
        let version = self.inner.state.lock().version;
        self.wait_durable(version).await
    }

    async fn wait_durable(&self, version: u64) -> std::io::Result<()> {
        if let Some(wake) = self.inner.wake.lock().as_ref() {
            let _ = wake.send(());
        }
        let mut written = self.inner.written.subscribe();
        let outcome = written
            .wait_for(|w| w.version >= version || w.error.is_some())
            .await
            .map(|w| w.clone());
        match outcome {
            Ok(w) if w.version >= version => Ok(()),
            Ok(w) => Err(std::io::Error::other(
                w.error.unwrap_or_else(|| "state file write failed".into()),
            )),
            Err(_) => Err(std::io::Error::other("the state file writer stopped")),
        }
    }

    /// Writes what is pending and stops the writer thread.
    pub fn close(&self) {
        self.inner.wake.lock().take();
        if let Some(thread) = self.inner.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(inner: &std::sync::Weak<Inner>, woken: &mpsc::Receiver<()>) {
    loop {
        let stop = match woken.recv_timeout(LAZY_INTERVAL) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        while woken.try_recv().is_ok() {}
        let (version, bytes) = {
            let state = inner.state.lock();
            if state.version == inner.written.borrow().version {
                if stop {
                    return;
                }
                continue;
            }
            (state.version, encode(&state.groups))
        };
        match write_atomically(&inner.path, &bytes) {
            Ok(()) => inner.written.send_modify(|w| {
                w.version = version;
                w.error = None;
            }),
            Err(error) => {
                tracing::error!(path = %inner.path.display(), %error, "could not write the Raft state file");
                inner
                    .written
                    .send_modify(|w| w.error = Some(format!("{}: {error}", inner.path.display())));
                if stop {
                    return;
                }
                // Try again after a pause rather than spinning on a failing disk.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if stop {
            return;
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn encode(groups: &BTreeMap<GroupId, GroupRecord>) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64 + groups.len() * 160));
    w.0.extend_from_slice(MAGIC);
    w.u8(VERSION);
    w.u32(groups.len() as u32);
    for (group, record) in groups {
        w.u64(*group);
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
    let crc = crc32c::crc32c(&w.0);
    w.u32(crc);
    w.0
}

fn decode(bytes: &[u8]) -> Result<BTreeMap<GroupId, GroupRecord>, CodecError> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..4] != MAGIC {
        return Err(CodecError::Malformed { what: "magic" });
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return Err(CodecError::Checksum);
    }
    let mut r = Reader::new(&body[4..]);
    let version = r.u8()?;
    if version != VERSION {
        return Err(CodecError::Version { found: version });
    }
    let count = r.count()?;
    let mut groups = BTreeMap::new();
    for _ in 0..count {
        let group = r.u64()?;
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
        groups.insert(
            group,
            GroupRecord {
                vote,
                committed,
                applied,
                memberships,
                next_offset,
                snapshot,
            },
        );
    }
    if r.remaining() != 0 {
        return Err(CodecError::Malformed {
            what: "trailing bytes",
        });
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::make_vote;
    use crate::types::log_id;

    #[tokio::test]
    async fn records_survive_reopen_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.state");
        let store = NodeStateStore::open(&path).expect("open");
        store
            .update_durable(7, |r| {
                r.vote = Some(make_vote(3, 2, true));
                r.committed = Some(log_id(3, 10));
            })
            .await
            .expect("durable");
        store.update(9, |r| {
            r.next_offset = 42;
            r.snapshot = Some(SnapshotRecord {
                last_log_id: Some(log_id(2, 5)),
                membership: StoredMembership::default(),
                next_offset: 40,
            });
        });
        store.close();
        let reopened = NodeStateStore::open(&path).expect("reopen");
        let r7 = reopened.get(7).expect("group 7");
        assert_eq!(r7.vote, Some(make_vote(3, 2, true)));
        assert_eq!(r7.committed, Some(log_id(3, 10)));
        let r9 = reopened.get(9).expect("group 9 written at close");
        assert_eq!(r9.next_offset, 42);
        assert_eq!(
            r9.snapshot.expect("snapshot").last_log_id,
            Some(log_id(2, 5))
        );
        reopened.close();

        let mut bytes = std::fs::read(&path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        // A damaged file is set aside whole, and the node starts knowing no group.
        let fresh = NodeStateStore::open(&path).expect("open past a damaged file");
        assert!(fresh.groups().is_empty());
        fresh.close();
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("raft.state.damaged-"))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(
            std::fs::read(dir.path().join(&kept[0])).expect("read"),
            bytes
        );
    }
}
