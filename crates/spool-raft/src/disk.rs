//! Free space on the volume that holds a node's logs.
//!
//! A write the disk cannot take is fatal to a Raft group (openraft stops a group whose log
//! store fails), so a node refuses writes before its volume fills: client writes below the
//! floor, entries replicated from leaders below half of it. The half kept back takes what
//! is never refused (the metadata log, which must go on so that a full node learns of the
//! deletions that free it; consumer groups' small writes on their leaders; the Raft state
//! file; retention's own bookkeeping). Reads, heartbeats and elections go on, and writes
//! are taken again as soon as space is freed: the volume is asked on every write request,
//! which costs one `statvfs` call, not one per record.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::ReplicaError;

/// The floor when none is set: 1 GiB, or a twentieth of a smaller volume.
const DEFAULT_FLOOR: u64 = 1024 * 1024 * 1024;
const DEFAULT_SHARE: u64 = 20;

#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    floor: AtomicU64,
    /// Whether the last look found client writes refused (to log each change once).
    refusing: AtomicBool,
}

impl DiskSpace {
    /// Watches the volume of `dir`; `floor` is the free space under which client writes
    /// are refused (`None`: the default, `Some(0)`: never).
    pub fn new(dir: PathBuf, floor: Option<u64>) -> Self {
        let floor = floor.unwrap_or_else(|| {
            let total = rustix::fs::statvfs(&dir)
                .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
                .unwrap_or(u64::MAX);
            DEFAULT_FLOOR.min(total / DEFAULT_SHARE)
        });
        Self {
            dir,
            floor: AtomicU64::new(floor),
            refusing: AtomicBool::new(false),
        }
    }

    /// The free space under which client writes are refused.
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::Relaxed)
    }

    /// Moves the floor (0 refuses nothing).
    pub fn set_floor(&self, floor: u64) {
        self.floor.store(floor, Ordering::Relaxed);
    }

    /// Bytes an unprivileged writer may still use on the volume; `None` if it cannot be
    /// asked (then nothing is refused: the disk's own error is the last word).
    pub fn available(&self) -> Option<u64> {
        rustix::fs::statvfs(&self.dir)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// Refuses a client write when the volume is under its floor.
    pub fn admit_client_write(&self) -> Result<(), ReplicaError> {
        let floor = self.floor();
        let available = self.available();
        let full = floor > 0 && available.is_some_and(|a| a < floor);
        if self.refusing.swap(full, Ordering::Relaxed) != full {
            if full {
                tracing::warn!(available = ?available, floor, dir = %self.dir.display(), "the data volume is nearly full: client writes are refused until space is freed");
            } else {
                tracing::info!(available = ?available, floor, "space was freed: client writes are taken again");
            }
        }
        match available {
            Some(available) if full => Err(ReplicaError::DiskFull { available, floor }),
            _ => Ok(()),
        }
    }

    /// Whether entries replicated from a leader are refused (under half the floor).
    pub fn refuses_entries(&self) -> bool {
        let floor = self.floor();
        floor > 0 && self.available().is_some_and(|a| a < floor / 2)
    }
}
