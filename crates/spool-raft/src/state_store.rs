//! The node's small durable store of Raft metadata for every group it hosts: the vote,
//! the committed and applied log ids, and the snapshot (where the retained log starts).
//!
//! A base file and a journal of changes (state_file.rs): each write appends the records
//! changed since the last one and syncs once. A vote must be durable before it is acted
//! on, so `update_durable` waits for a write that includes it; many groups voting at once
//! share one write. Everything else (commit and apply progress) is written lazily, at
//! least once a second: losing it only makes a restarted node re-apply a little, never
//! lose or invent an entry.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::ReplicaError;
use crate::state_file::{self, Groups, Journal, LoadError};
use crate::types::{GroupId, LogId, StoredMembership, Vote};

/// Lazy changes reach the disk at least this often.
const LAZY_INTERVAL: Duration = Duration::from_secs(1);

/// Renames a damaged state file to `<name>.damaged-<ms>`, durably (if it is there).
fn set_aside(path: &Path) -> std::io::Result<Option<PathBuf>> {
    if !path.exists() {
        return Ok(None);
    }
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
    Ok(Some(aside))
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
    groups: Groups,
    version: u64,
    /// Groups changed (or removed) since the last write.
    dirty: BTreeSet<GroupId>,
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
        let loaded = match state_file::load(&path) {
            Ok(loaded) => loaded,
            // Not a reason to stay down, nor to make the operator delete it: the files
            // are kept aside for inspection, and every replica with a log is treated
            // as having lost its state (it rebuilds from its leader before voting).
            Err(LoadError::Damaged(error)) => {
                let journal = state_file::journal_path(&path);
                let aside = set_aside(&path).map_err(|e| fail(e.to_string()))?;
                let journal_aside = set_aside(&journal).map_err(|e| fail(e.to_string()))?;
                tracing::error!(path = %path.display(), kept_as = ?aside, journal_kept_as = ?journal_aside, %error, "the Raft state file is damaged; starting without it: replicas rebuild from their leaders before they vote");
                state_file::Loaded::default()
            }
            // Unreadable is not damaged: nothing is decided on what could not be read.
            Err(LoadError::Io(error)) => return Err(fail(error.to_string())),
        };
        if loaded.journal_dropped > 0 {
            tracing::warn!(path = %path.display(), bytes = loaded.journal_dropped, groups_rebuilding = loaded.votes_in_doubt.len(), "the Raft state journal ends in a write a crash tore; it is cut there, and groups whose vote it was changing rebuild from their leaders before they vote");
        }
        let journal = Journal::resume(&path, &loaded).map_err(|e| fail(e.to_string()))?;
        let groups = loaded.groups;
        let (wake, woken) = mpsc::channel();
        let inner = Arc::new(Inner {
            path: path.clone(),
            state: Mutex::new(State {
                groups,
                ..State::default()
            }),
            wake: Mutex::new(Some(wake)),
            written: watch::Sender::new(Written::default()),
            thread: Mutex::new(None),
        });
        // The thread holds the store weakly: once every handle is gone (a node dropped
        // without `close`), it stops instead of writing on behind a successor.
        let for_thread = Arc::downgrade(&inner);
        let thread = std::thread::Builder::new()
            .name("spool-raft-state".into())
            .spawn(move || write_loop(&for_thread, &woken, journal))
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
        state.dirty.insert(group);
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
            state.dirty.insert(group);
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
            state.dirty.insert(group);
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

/// One write of the state: the changed records appended, or every record as a new base.
enum Write {
    Append(Vec<u8>),
    Fold(Vec<u8>),
}

fn write_loop(inner: &std::sync::Weak<Inner>, woken: &mpsc::Receiver<()>, mut journal: Journal) {
    loop {
        let stop = match woken.recv_timeout(LAZY_INTERVAL) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        while woken.try_recv().is_ok() {}
        // Encoded under the lock, written without it: replicas change their records
        // from async tasks, which must not wait out a sync.
        let (version, dirty, mut write) = {
            let mut state = inner.state.lock();
            if state.version == inner.written.borrow().version {
                if stop {
                    return;
                }
                continue;
            }
            let dirty = std::mem::take(&mut state.dirty);
            let changes: Vec<(GroupId, Option<&GroupRecord>)> = dirty
                .iter()
                .map(|group| (*group, state.groups.get(group)))
                .collect();
            let entries = Journal::encode(&changes);
            let write = if journal.must_fold(&entries) {
                Write::Fold(state_file::encode_base(
                    &state.groups,
                    journal.next_generation(),
                ))
            } else {
                Write::Append(entries)
            };
            (state.version, dirty, write)
        };
        let written = match &mut write {
            Write::Append(entries) => journal.append(std::mem::take(entries)),
            Write::Fold(base) => journal.fold(base),
        };
        match written {
            Ok(()) => {
                inner.written.send_modify(|w| {
                    w.version = version;
                    w.error = None;
                });
            }
            Err(error) => {
                // Written again next time (a fold writes every record anyway).
                inner.state.lock().dirty.extend(dirty);
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

    #[tokio::test]
    async fn thousands_of_groups_changing_write_only_what_changed_and_fold_when_it_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.state");
        let store = NodeStateStore::open(&path).expect("open");
        for round in 1..=12u64 {
            for group in 0..3000u64 {
                store.update(group, |r| r.committed = Some(log_id(round, group)));
            }
            store.flush().await.expect("durable");
        }
        // One group's vote: an append of one entry, not a rewrite of 3,000 records.
        let before = std::fs::metadata(&path).expect("base").len();
        let journal = state_file::journal_path(&path);
        let journal_before = std::fs::metadata(&journal).expect("journal").len();
        store
            .update_durable(5, |r| r.vote = Some(make_vote(13, 1, false)))
            .await
            .expect("durable");
        assert_eq!(std::fs::metadata(&path).expect("base").len(), before);
        let grown = std::fs::metadata(&journal).expect("journal").len() - journal_before;
        assert!(grown < 200, "one vote took {grown} bytes");
        // Twelve rounds of 3,000 changes outgrew the base at least once: it was folded.
        assert!(
            before > 3000 * 20,
            "the base holds every group ({before} bytes)"
        );
        store.close();
        let reopened = NodeStateStore::open(&path).expect("reopen");
        for group in 0..3000u64 {
            let record = reopened.get(group).expect("record");
            assert_eq!(record.committed, Some(log_id(12, group)));
        }
        assert_eq!(
            reopened.get(5).expect("record").vote,
            Some(make_vote(13, 1, false))
        );
        reopened.close();
    }
}
