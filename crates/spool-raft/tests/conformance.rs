//! openraft's storage conformance suite against the spool-log backed store.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use spool_log::{FlushPolicy, LogConfig};
use spool_raft::log_store::PartitionLogStore;
use spool_raft::state_machine::PartitionStateMachine;
use spool_raft::state_store::NodeStateStore;
use spool_raft::{Flusher, PartitionRaft, open_group_storage};

fn fail(error: impl std::error::Error + 'static) -> StorageError<PartitionRaft> {
    StorageError::read(PartitionRaft::err_from_error(&error))
}

/// Keeps the directory and the node's threads alive for one test.
struct Guard {
    _dir: tempfile::TempDir,
}

struct Builder {
    flush: FlushPolicy,
}

impl StoreBuilder<PartitionRaft, PartitionLogStore, PartitionStateMachine, Guard> for Builder {
    async fn build(
        &self,
    ) -> Result<(Guard, PartitionLogStore, PartitionStateMachine), StorageError<PartitionRaft>>
    {
        let dir = tempfile::tempdir().map_err(fail)?;
        let store = NodeStateStore::open(dir.path().join("raft.state")).map_err(fail)?;
        let flusher = Flusher::start("test-flusher").map_err(fail)?;
        let config = LogConfig {
            flush: self.flush,
            ..LogConfig::default()
        };
        let storage = open_group_storage(
            1,
            &dir.path().join("p"),
            config,
            store,
            flusher,
            spool_raft::DEFAULT_PRODUCER_EXPIRY.as_millis() as i64,
        )
        .map_err(fail)?;
        Ok((
            Guard { _dir: dir },
            storage.log_store,
            storage.state_machine,
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_fsync() -> Result<(), StorageError<PartitionRaft>> {
    Suite::test_all(Builder {
        flush: FlushPolicy::Always,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_without_fsync() -> Result<(), StorageError<PartitionRaft>> {
    Suite::test_all(Builder {
        flush: FlushPolicy::Os,
    })
    .await
}
