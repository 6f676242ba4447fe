//! A nearly full data volume: produce requests are refused whole with a clear error while
//! the node goes on serving reads, and taken again once there is room.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use spool_broker::{Acks, Broker, BrokerError, BrokerOptions};
use spool_types::ErrorCode;

mod common;
use common::{batch, options, produce, read_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_volume_refuses_writes_serves_reads_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerOptions {
        min_free_bytes: Some(0),
        ..options(dir.path())
    })
    .await
    .unwrap();
    broker
        .create_topic("full", 2, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let write = |values: &'static [&'static str]| {
        let broker = broker.clone();
        async move {
            broker
                .produce(
                    vec![
                        produce("full", 0, vec![batch(values)]),
                        produce("full", 1, vec![batch(values)]),
                    ],
                    Acks::All,
                    Duration::from_secs(5),
                )
                .await
        }
    };
    assert!(write(&["a"]).await.iter().all(Result::is_ok));

    // The volume now counts as nearly full: more free space is asked for than it has.
    let disk = broker.raft().disk();
    disk.set_floor(disk.available().unwrap() + (1 << 40));
    for result in write(&["lost"]).await {
        let error = result.unwrap_err();
        assert!(matches!(error, BrokerError::DiskFull { .. }), "{error}");
        assert_eq!(error.code(), ErrorCode::StorageError);
        assert!(error.to_string().contains("min_free_bytes"), "{error}");
    }
    // Reads go on, and nothing refused was written.
    assert_eq!(read_all(&broker, "full", 2).await, vec![vec!["a"]; 2]);

    // Room again: writes are taken, at the offsets after what was there.
    disk.set_floor(0);
    for result in write(&["b"]).await {
        assert_eq!(result.unwrap().base_offset, 1);
    }
    assert_eq!(read_all(&broker, "full", 2).await, vec![vec!["a", "b"]; 2]);
    broker.shutdown().await;
}
