//! This node's record of its topics, kept in `spool.json` in the data directory and
//! replaced atomically (write, fsync, rename, fsync directory) on every change. The
//! metadata controller takes this role in a cluster.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicMeta {
    pub name: String,
    /// Distinguishes this topic from an earlier one with the same name.
    pub id: String,
    pub partitions: u32,
    pub replication_factor: u32,
    pub configs: BTreeMap<String, String>,
    /// Per partition: its Raft group and the replicas it was created with.
    pub placements: Vec<Placement>,
}

/// Where a partition lives: its Raft group id and its replicas (node id to address).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub group: u64,
    pub members: BTreeMap<u64, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreFile {
    pub format: u32,
    pub cluster_id: String,
    pub node_id: u64,
    /// The next Raft group id this node gives a partition it creates on its own.
    pub next_group: u64,
    pub topics: BTreeMap<String, TopicMeta>,
}

#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    pub file: StoreFile,
    /// Held open with an exclusive lock while this node owns the data directory.
    lock: Option<File>,
}

const FILE_NAME: &str = "spool.json";
/// Format 2: partitions are Raft groups. Format 1 directories predate replication.
const FORMAT: u32 = 2;

impl Store {
    /// Loads the store, or starts one for a new data directory.
    pub fn open(data_dir: &Path, node_id: u64) -> Result<Self, BrokerError> {
        let path = data_dir.join(FILE_NAME);
        let storage = |e: std::io::Error, op: &'static str| {
            BrokerError::Storage(spool_log::LogError::Io {
                op,
                path: path.clone(),
                source: e,
            })
        };
        fs::create_dir_all(data_dir).map_err(|e| storage(e, "create directory"))?;
        let lock_path = data_dir.join(".lock");
        let lock = File::create(&lock_path).map_err(|e| storage(e, "create lock file"))?;
        if lock.try_lock().is_err() {
            return Err(BrokerError::DirectoryInUse {
                dir: data_dir.display().to_string(),
            });
        }
        let file = match fs::read(&path) {
            Ok(bytes) => parse(&bytes, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreFile {
                format: FORMAT,
                cluster_id: random_id(),
                node_id,
                next_group: 1,
                topics: BTreeMap::new(),
            },
            Err(e) => return Err(storage(e, "read")),
        };
        if file.node_id != node_id {
            return Err(BrokerError::WrongNode {
                dir: data_dir.display().to_string(),
                found: file.node_id,
                expected: node_id,
            });
        }
        let store = Self {
            path,
            file,
            lock: Some(lock),
        };
        store.save()?;
        Ok(store)
    }

    /// Lets another process open the data directory (after a clean shutdown).
    pub fn release(&mut self) {
        self.lock = None;
    }

    pub fn save(&self) -> Result<(), BrokerError> {
        let tmp = self.path.with_extension("json.tmp");
        let io = |op, source| {
            BrokerError::Storage(spool_log::LogError::Io {
                op,
                path: tmp.clone(),
                source,
            })
        };
        let bytes =
            serde_json::to_vec_pretty(&self.file).map_err(|e| BrokerError::InvalidRequest {
                reason: format!("could not encode the topic store: {e}"),
            })?;
        let mut file = File::create(&tmp).map_err(|e| io("create", e))?;
        file.write_all(&bytes).map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("sync", e))?;
        fs::rename(&tmp, &self.path).map_err(|e| io("rename", e))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("sync directory", e))?;
        }
        Ok(())
    }
}

fn parse(bytes: &[u8], path: &Path) -> Result<StoreFile, BrokerError> {
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let invalid = |e: serde_json::Error| BrokerError::InvalidRequest {
        reason: format!("{} is not a valid topic store: {e}", path.display()),
    };
    let format = serde_json::from_slice::<Format>(bytes)
        .map_err(invalid)?
        .format;
    if format != FORMAT {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "{} has format {format}; this Spool reads format {FORMAT} (data directories \
                 from before replication cannot be opened: start from an empty one)",
                path.display()
            ),
        });
    }
    serde_json::from_slice::<StoreFile>(bytes).map_err(invalid)
}

/// 128 random bits as hex, from the standard library's OS-seeded hasher keys.
pub(crate) fn random_id() -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut a = state.build_hasher();
    a.write_u64(1);
    let mut b = state.build_hasher();
    b.write_u64(2);
    format!("{:016x}{:016x}", a.finish(), b.finish())
}
