//! The broker end to end, in process: topics, produce, fetch, offsets and restarts.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spool_broker::{
    Acks, Broker, BrokerError, BrokerOptions, FetchPosition, FetchSpec, OffsetQuery,
    ProducePartition,
};
use spool_log::RecordBatch;
use spool_log::batch::{BatchBuilder, BatchOptions, Compression};
use spool_types::ErrorCode;

mod common;
use common::{batch, from_start, options, produce, read_all, values};

/// Opens the broker once the dropped one's writer thread has let go of the directory.
async fn reopen(dir: &std::path::Path) -> Arc<Broker> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Broker::open(options(dir)).await {
            Ok(broker) => return broker,
            Err(BrokerError::DirectoryInUse { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("reopen failed: {error}"),
        }
    }
}

#[tokio::test]
async fn produced_batches_are_fetched_back_per_partition_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(options(dir.path())).await.unwrap();
    broker
        .create_topic("orders", 3, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    for round in 0..10 {
        let requests = (0..3)
            .map(|p| {
                produce(
                    "orders",
                    p,
                    vec![batch(&[
                        &format!("p{p}-r{round}-a"),
                        &format!("p{p}-r{round}-b"),
                    ])],
                )
            })
            .collect();
        for result in broker
            .produce(requests, Acks::All, Duration::from_secs(5))
            .await
        {
            assert_eq!(result.unwrap().base_offset, round * 2);
        }
    }
    let read = read_all(&broker, "orders", 3).await;
    for (p, values) in read.iter().enumerate() {
        let expected: Vec<String> = (0..10)
            .flat_map(|r| [format!("p{p}-r{r}-a"), format!("p{p}-r{r}-b")])
            .collect();
        assert_eq!(values, &expected);
    }
    assert_eq!(
        broker
            .list_offset("orders", 1, OffsetQuery::Latest)
            .await
            .unwrap(),
        20
    );
    assert_eq!(
        broker
            .list_offset("orders", 1, OffsetQuery::Earliest)
            .await
            .unwrap(),
        0
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn acknowledged_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(options(dir.path())).await.unwrap();
    broker
        .create_topic("events", 2, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    for acks in [Acks::All, Acks::Leader] {
        let results = broker
            .produce(
                vec![produce("events", 1, vec![batch(&["x", "y"])])],
                acks,
                Duration::from_secs(5),
            )
            .await;
        assert!(results[0].is_ok());
    }
    // A second process cannot open the same data directory.
    let second = Broker::open(options(dir.path())).await.unwrap_err();
    assert_eq!(second.code(), ErrorCode::StorageError);
    assert!(second.to_string().contains("in use"), "{second}");
    // No clean shutdown: what a crash leaves behind. The lock goes with the process.
    drop(broker);
    let broker = reopen(dir.path()).await;
    // A restarted leader is elected again before its high watermark shows what it had
    // acknowledged (it comes back as a follower with the state it last saved): a
    // following fetch wakes as the high watermark moves, and must see all four.
    let mut spec = from_start("events", 2);
    spec.follow = true;
    let mut rx = broker.fetch(spec, 2);
    let mut read: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while read.len() < 4 {
        let chunk = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the acknowledged records never became readable again")
            .expect("the fetch ended");
        for p in chunk.partitions {
            assert!(p.error.is_none(), "{:?}", p.error);
            if p.partition == 1 {
                read.extend(values(&p.batches));
            }
        }
    }
    drop(rx);
    assert_eq!(read, vec!["x", "y", "x", "y"]);
    let info = broker.describe_topic("events").unwrap();
    assert_eq!(info.partitions.len(), 2);
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_batches_are_refused_whole_and_good_partitions_still_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(options(dir.path())).await.unwrap();
    let small = BTreeMap::from([("max.message.bytes".to_string(), "2048".to_string())]);
    broker.create_topic("t", 2, 1, small, false).await.unwrap();
    let good = batch(&["ok"]);
    let mut corrupt = good.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let mut magic = good.to_vec();
    magic[16] = 1;
    let big = batch(&[&"x".repeat(4000)]);
    // Flagged gzip, records section not gzip; the CRC made right.
    let mut builder = BatchBuilder::new(BatchOptions::default());
    builder.append(1_000, None, Some(b"ok"), &[]);
    let fake_gzip = builder.finish_compressed(Compression::Gzip, &[0x1f, 0x8b, 8, 0, 1, 2, 3]);
    let cases: Vec<(ProducePartition, ErrorCode)> = vec![
        (
            produce("t", 0, vec![good.clone(), fake_gzip]),
            ErrorCode::CorruptBatch,
        ),
        (
            produce("t", 0, vec![Bytes::from(corrupt)]),
            ErrorCode::CorruptBatch,
        ),
        (
            produce("t", 0, vec![Bytes::from(magic)]),
            ErrorCode::CorruptBatch,
        ),
        (
            produce("t", 0, vec![good.slice(..good.len() - 3)]),
            ErrorCode::CorruptBatch,
        ),
        (produce("t", 0, vec![big]), ErrorCode::RecordTooLarge),
        (
            produce("t", 7, vec![good.clone()]),
            ErrorCode::UnknownTopicOrPartition,
        ),
        (
            produce("nope", 0, vec![good.clone()]),
            ErrorCode::UnknownTopicOrPartition,
        ),
        (produce("t", 0, vec![]), ErrorCode::InvalidRequest),
        // A good batch and a bad one: neither is appended.
        (
            produce("t", 0, vec![good.clone(), Bytes::from_static(b"junk")]),
            ErrorCode::CorruptBatch,
        ),
    ];
    let (requests, expected): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
    let mut requests = requests;
    requests.push(produce("t", 1, vec![good.clone()]));
    let results = broker
        .produce(requests, Acks::All, Duration::from_secs(5))
        .await;
    for (result, code) in results.iter().zip(&expected) {
        assert_eq!(result.as_ref().unwrap_err().code(), *code, "{result:?}");
    }
    assert_eq!(results.last().unwrap().as_ref().unwrap().base_offset, 0);
    assert_eq!(
        broker
            .list_offset("t", 0, OffsetQuery::Latest)
            .await
            .unwrap(),
        0,
        "nothing appended"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_waiting_fetch_wakes_when_a_batch_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(options(dir.path())).await.unwrap();
    broker
        .create_topic("wake", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let spec = FetchSpec {
        positions: vec![FetchPosition {
            topic: "wake".into(),
            partition: 0,
            offset: 0,
            max_bytes: None,
            leader_epoch: None,
        }],
        max_bytes: 1024 * 1024,
        min_bytes: 1,
        max_wait: Duration::from_secs(60),
        follow: true,
        isolation: Default::default(),
    };
    let mut rx = broker.fetch(spec, 1);
    broker
        .produce(
            vec![produce("wake", 0, vec![batch(&["hello"])])],
            Acks::Leader,
            Duration::from_secs(5),
        )
        .await;
    // max_wait is a minute: only a wake-up on append can deliver within the deadline.
    let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(values(&chunk.partitions[0].batches), vec!["hello"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn fetching_outside_the_log_reports_offset_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(options(dir.path())).await.unwrap();
    broker
        .create_topic("r", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    for offset in [-1, 5] {
        let spec = FetchSpec {
            positions: vec![FetchPosition {
                topic: "r".into(),
                partition: 0,
                offset,
                max_bytes: None,
                leader_epoch: None,
            }],
            max_bytes: 1024,
            min_bytes: 1,
            max_wait: Duration::from_millis(10),
            follow: true,
            isolation: Default::default(),
        };
        let mut rx = broker.fetch(spec, 1);
        let chunk = rx.recv().await.unwrap();
        let error = chunk.partitions[0].error.as_ref().unwrap();
        assert_eq!(error.code(), ErrorCode::OffsetOutOfRange);
        assert!(
            rx.recv().await.is_none(),
            "the session ends with its only partition"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn topics_are_created_described_altered_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(options(dir.path())).await.unwrap();
    let err = |e: BrokerError| e.code();
    assert_eq!(
        err(broker
            .create_topic("bad/name", 1, 1, BTreeMap::new(), false)
            .await
            .unwrap_err()),
        ErrorCode::InvalidTopic
    );
    assert_eq!(
        err(broker
            .create_topic(&"x".repeat(250), 1, 1, BTreeMap::new(), false)
            .await
            .unwrap_err()),
        ErrorCode::InvalidTopic
    );
    assert_eq!(
        err(broker
            .create_topic("t", 1, 3, BTreeMap::new(), false)
            .await
            .unwrap_err()),
        ErrorCode::InvalidReplicationFactor
    );
    assert_eq!(
        err(broker
            .create_topic("t", 5000, 1, BTreeMap::new(), false)
            .await
            .unwrap_err()),
        ErrorCode::InvalidPartitions
    );
    let bad_config = BTreeMap::from([("retention.ms".to_string(), "never".to_string())]);
    assert_eq!(
        err(broker
            .create_topic("t", 1, 1, bad_config, false)
            .await
            .unwrap_err()),
        ErrorCode::InvalidConfig
    );
    broker
        .create_topic("t", 2, 1, BTreeMap::new(), true)
        .await
        .unwrap();
    assert!(
        broker.list_topics(false).is_empty(),
        "validate_only creates nothing"
    );

    broker
        .create_topic("t", 2, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    assert_eq!(
        err(broker
            .create_topic("t", 2, 1, BTreeMap::new(), false)
            .await
            .unwrap_err()),
        ErrorCode::TopicAlreadyExists
    );
    let set = BTreeMap::from([("retention.ms".to_string(), "60000".to_string())]);
    broker.alter_configs("t", set, vec![], false).await.unwrap();
    let info = broker.describe_topic("t").unwrap();
    assert!(
        info.configs
            .contains(&("retention.ms".into(), "60000".into(), false))
    );
    let first_id = info.id.clone();
    broker
        .produce(
            vec![produce("t", 0, vec![batch(&["old"])])],
            Acks::All,
            Duration::from_secs(5),
        )
        .await;

    broker.delete_topic("t").await.unwrap();
    assert_eq!(
        err(broker.describe_topic("t").unwrap_err()),
        ErrorCode::UnknownTopicOrPartition
    );
    broker
        .create_topic("t", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let info = broker.describe_topic("t").unwrap();
    assert_ne!(info.id, first_id);
    assert_eq!(
        info.partitions[0].high_watermark, 0,
        "a recreated topic starts empty"
    );
    broker.shutdown().await;

    let broker = Broker::open(options(dir.path())).await.unwrap();
    assert_eq!(broker.list_topics(false).len(), 1);
    assert!(
        broker
            .describe_topic("t")
            .unwrap()
            .configs
            .iter()
            .all(|c| c.2),
        "defaults after recreate"
    );
    broker.shutdown().await;
}

/// A topic with the longest name creation accepts (249 characters) is deleted with its
/// data: the partition directory's name leaves no room for a suffix, so deletion must not
/// need one.
#[tokio::test]
async fn a_topic_with_the_longest_name_is_deleted_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(options(dir.path())).await.unwrap();
    let name = "n".repeat(249);
    broker
        .create_topic(&name, 2, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    broker
        .produce(
            vec![produce(&name, 1, vec![batch(&["a", "b"])])],
            Acks::All,
            Duration::from_secs(5),
        )
        .await;
    let partition_dir = dir.path().join(format!("{name}-1"));
    assert!(partition_dir.is_dir());
    broker.delete_topic(&name).await.unwrap();
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nnnn") || n.contains("deleted"))
        .collect();
    assert!(left.is_empty(), "left on disk after the delete: {left:?}");
    broker.shutdown().await;
}

/// Topic names that look like the names deletions use keep their data across restarts
/// and other topics' deletions.
#[tokio::test]
async fn a_topic_named_like_a_deletion_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(options(dir.path())).await.unwrap();
    for name in [".deleted-group", "x.deleted", "other"] {
        broker
            .create_topic(name, 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        broker
            .produce(
                vec![produce(name, 0, vec![batch(&["kept"])])],
                Acks::All,
                Duration::from_secs(5),
            )
            .await;
    }
    broker.delete_topic("other").await.unwrap();
    broker.shutdown().await;
    drop(broker);
    let broker = reopen(dir.path()).await;
    for name in [".deleted-group", "x.deleted"] {
        assert_eq!(
            read_all(&broker, name, 1).await,
            vec![vec!["kept".to_string()]],
            "{name}"
        );
    }
    broker.shutdown().await;
}

/// message.timestamp.*: a CreateTime batch stamped too far ahead (or, with a bound, too
/// far behind) is refused whole with INVALID_TIMESTAMP; a LogAppendTime topic stores the
/// broker's time as every record's timestamp.
#[tokio::test]
async fn batch_timestamps_are_checked_or_replaced_as_the_topic_says() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(options(dir.path())).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let stamped = |ts: i64| {
        let mut builder = BatchBuilder::new(BatchOptions::default());
        builder.append(ts, None, Some(b"v"), &[]);
        builder.finish()
    };
    let bounded = BTreeMap::from([(
        "message.timestamp.before.max.ms".to_string(),
        "60000".to_string(),
    )]);
    broker
        .create_topic("create", 1, 1, bounded, false)
        .await
        .unwrap();
    let appended = BTreeMap::from([(
        "message.timestamp.type".to_string(),
        "LogAppendTime".to_string(),
    )]);
    broker
        .create_topic("append", 1, 1, appended, false)
        .await
        .unwrap();

    let results = broker
        .produce(
            vec![
                produce(
                    "create",
                    0,
                    vec![stamped(now), stamped(now + 2 * 3600 * 1000)],
                ),
                produce("create", 0, vec![stamped(now - 3600 * 1000)]),
                produce("create", 0, vec![stamped(now + 1000)]),
                produce("append", 0, vec![stamped(now + 30 * 24 * 3600 * 1000)]),
            ],
            Acks::All,
            Duration::from_secs(5),
        )
        .await;
    let codes: Vec<Option<ErrorCode>> = results
        .iter()
        .map(|r| r.as_ref().err().map(BrokerError::code))
        .collect();
    assert_eq!(
        codes,
        vec![
            Some(ErrorCode::InvalidTimestamp),
            Some(ErrorCode::InvalidTimestamp),
            None,
            None
        ]
    );
    assert_eq!(
        broker
            .list_offset("create", 0, OffsetQuery::Latest)
            .await
            .unwrap(),
        1,
        "only the batch within bounds was appended"
    );

    let mut rx = broker.fetch(from_start("append", 1), 2);
    let chunk = rx.recv().await.unwrap();
    let stored = RecordBatch::new(&chunk.partitions[0].batches[0]).unwrap();
    assert_eq!(
        stored.timestamp_type(),
        spool_log::batch::TimestampType::LogAppendTime
    );
    let record = stored.records().unwrap().next().unwrap().unwrap();
    assert!(
        (record.timestamp() - now).abs() < 60_000,
        "the broker's time, not the producer's: {}",
        record.timestamp()
    );
    broker.shutdown().await;
}

/// Fetch sessions share a bounded amount of memory: one whose consumer never reads holds
/// at most that much, others wait for it rather than the node buffering without bound, and
/// all of it comes back when the stalled consumer goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_sessions_share_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerOptions {
        fetch_memory_bytes: 1024 * 1024,
        ..options(dir.path())
    })
    .await
    .unwrap();
    broker
        .create_topic("mem", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let value = "x".repeat(400 * 1024);
    for _ in 0..6 {
        let results = broker
            .produce(
                vec![produce("mem", 0, vec![batch(&[&value])])],
                Acks::All,
                Duration::from_secs(5),
            )
            .await;
        assert!(results[0].is_ok());
    }
    // A consumer that never reads: its session takes what memory there is.
    let mut stalled = from_start("mem", 1);
    stalled.follow = true;
    stalled.max_bytes = 8 * 1024 * 1024;
    let stalled = broker.fetch(stalled, 2);
    // Once less than a batch is left free...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while broker.fetch_memory_available() >= value.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled session took no memory: {} bytes free",
            broker.fetch_memory_available()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...another consumer waits for memory instead of the node buffering more.
    let mut reader = tokio::spawn({
        let broker = Arc::clone(&broker);
        async move { read_all(&broker, "mem", 1).await }
    });
    let waited = tokio::time::timeout(Duration::from_secs(1), &mut reader).await;
    assert!(waited.is_err(), "a fetch went past the node's fetch memory");
    // The stalled consumer goes away: its memory comes back and the other reads it all.
    drop(stalled);
    let values = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the waiting fetch finished")
        .unwrap();
    assert_eq!(values[0].len(), 6);
    broker.shutdown().await;
}

/// Sessions that each gather several partitions before answering never wait for memory
/// while holding some: otherwise, with the fetch memory shared out among them, each would
/// wait for the others' share and none would ever answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_gathering_several_partitions_do_not_wait_on_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerOptions {
        fetch_memory_bytes: 1024 * 1024,
        ..options(dir.path())
    })
    .await
    .unwrap();
    broker
        .create_topic("gather", 3, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let value = "x".repeat(400 * 1024);
    for partition in 0..3 {
        for _ in 0..3 {
            let results = broker
                .produce(
                    vec![produce("gather", partition, vec![batch(&[&value])])],
                    Acks::All,
                    Duration::from_secs(5),
                )
                .await;
            assert!(results[0].is_ok());
        }
    }
    let sessions: Vec<_> = (0..4)
        .map(|_| {
            let mut spec = from_start("gather", 3);
            // Gather as much as possible before answering.
            spec.max_bytes = 8 * 1024 * 1024;
            spec.min_bytes = 8 * 1024 * 1024;
            spec.max_wait = Duration::from_secs(60);
            let mut rx = broker.fetch(spec, 2);
            tokio::spawn(async move {
                let mut batches = 0;
                while let Some(chunk) = rx.recv().await {
                    for p in chunk.partitions {
                        assert!(p.error.is_none(), "{:?}", p.error);
                        batches += p.batches.len();
                    }
                }
                batches
            })
        })
        .collect();
    for session in sessions {
        let batches = tokio::time::timeout(Duration::from_secs(20), session)
            .await
            .expect("every session answered and finished")
            .unwrap();
        assert_eq!(batches, 9);
    }
    broker.shutdown().await;
}

/// A consumer that stops reading holds at most its session's share of the fetch memory
/// (an eighth), so another consumer carries on beside it instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_holds_only_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerOptions {
        fetch_memory_bytes: 8 * 1024 * 1024,
        ..options(dir.path())
    })
    .await
    .unwrap();
    broker
        .create_topic("share", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let value = "x".repeat(400 * 1024);
    for _ in 0..30 {
        let results = broker
            .produce(
                vec![produce("share", 0, vec![batch(&[&value])])],
                Acks::All,
                Duration::from_secs(5),
            )
            .await;
        assert!(results[0].is_ok());
    }
    // Never read: with no share, it would take all 8 MiB (responses of up to 8 MiB, two
    // queued and one being gathered).
    let mut stalled = from_start("share", 1);
    stalled.follow = true;
    stalled.max_bytes = 8 * 1024 * 1024;
    let _stalled = broker.fetch(stalled, 2);
    let values = tokio::time::timeout(Duration::from_secs(10), read_all(&broker, "share", 1))
        .await
        .expect("the other consumer read everything beside the stalled one");
    assert_eq!(values[0].len(), 30);
    broker.shutdown().await;
}
