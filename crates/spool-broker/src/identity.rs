//! Which node a data directory belongs to, and which life of it: `node.json` holds the
//! node id and the incarnation chosen when the directory was created. A wiped directory
//! gets a new incarnation, so the controller rebuilds its replicas instead of trusting
//! them. The directory is locked while a node uses it.

use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    format: u32,
    node_id: u64,
    incarnation: u64,
}

/// Format 3: metadata lives in the controller's log. Formats 1 and 2 (`spool.json`)
/// kept topics locally.
const FORMAT: u32 = 3;
const FILE_NAME: &str = "node.json";

#[derive(Debug)]
pub(crate) struct NodeIdentity {
    pub incarnation: u64,
    /// Held with an exclusive lock while this node owns the directory.
    lock: Option<File>,
}

impl NodeIdentity {
    pub fn open(data_dir: &Path, node_id: u64) -> Result<Self, BrokerError> {
        let io = |op: &'static str, path: PathBuf| {
            move |source| BrokerError::Storage(spool_log::LogError::Io { op, path, source })
        };
        spool_log::create_dir_durably(data_dir).map_err(BrokerError::Storage)?;
        let lock_path = data_dir.join(".lock");
        let lock = File::create(&lock_path).map_err(io("create lock file", lock_path))?;
        if lock.try_lock().is_err() {
            return Err(BrokerError::DirectoryInUse {
                dir: data_dir.display().to_string(),
            });
        }
        if data_dir.join("spool.json").exists() {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "{} was written by an earlier Spool that kept topics on each node; this \
                     one keeps them in the controller: start from an empty directory",
                    data_dir.display()
                ),
            });
        }
        let path = data_dir.join(FILE_NAME);
        let file = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<IdentityFile>(&bytes).map_err(|e| {
                BrokerError::InvalidRequest {
                    reason: format!("{} is not a valid node identity: {e}", path.display()),
                }
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = IdentityFile {
                    format: FORMAT,
                    node_id,
                    incarnation: new_incarnation(),
                };
                write_atomically(&path, &file)?;
                file
            }
            Err(e) => return Err(io("read", path)(e)),
        };
        if file.format != FORMAT {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "{} has format {}; this Spool reads format {FORMAT}",
                    path.display(),
                    file.format
                ),
            });
        }
        if file.node_id != node_id {
            return Err(BrokerError::WrongNode {
                dir: data_dir.display().to_string(),
                found: file.node_id,
                expected: node_id,
            });
        }
        Ok(Self {
            incarnation: file.incarnation,
            lock: Some(lock),
        })
    }

    /// Lets another process open the data directory (after a clean shutdown).
    pub fn release(&mut self) {
        self.lock = None;
    }
}

fn write_atomically(path: &Path, file: &IdentityFile) -> Result<(), BrokerError> {
    let tmp = path.with_extension("json.tmp");
    let io = |op| {
        let tmp = tmp.clone();
        move |source| {
            BrokerError::Storage(spool_log::LogError::Io {
                op,
                path: tmp,
                source,
            })
        }
    };
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| BrokerError::InvalidRequest {
        reason: format!("could not encode the node identity: {e}"),
    })?;
    let mut out = File::create(&tmp).map_err(io("create"))?;
    out.write_all(&bytes).map_err(io("write"))?;
    out.sync_all().map_err(io("sync"))?;
    fs::rename(&tmp, path).map_err(io("rename"))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync directory"))?;
    }
    Ok(())
}

/// A random, non-zero 63-bit number.
pub(crate) fn new_incarnation() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 1).max(1)
}
