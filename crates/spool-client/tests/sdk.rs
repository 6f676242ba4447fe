//! The SDK against a real node in process: producer batching, ordering, back-pressure and
//! retries; consumer streams, seek, pause and resume.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use spool_client::{
    Acks, Client, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerError, ProducerRecord, SeekTo, partition_for_key,
};
use spool_server::{Node, NodeHandle, ServerConfig};

async fn node(dir: &std::path::Path, listen: &str) -> NodeHandle {
    Node::start(ServerConfig {
        data_dir: dir.to_path_buf(),
        listen: listen.into(),
        http_listen: "127.0.0.1:0".into(),
        cluster_listen: "127.0.0.1:0".into(),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

async fn connect(node: &NodeHandle) -> Client {
    Client::connect(&[node.grpc_addr().to_string()], Duration::from_secs(5))
        .await
        .unwrap()
}

async fn topic(client: &Client, name: &str, partitions: u32) {
    client
        .create_topic(NewTopic {
            name: name.into(),
            partitions,
            ..NewTopic::default()
        })
        .await
        .unwrap();
}

fn earliest() -> ConsumerConfig {
    ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        fetch_max_wait: Duration::from_millis(50),
        ..ConsumerConfig::default()
    }
}

#[tokio::test]
async fn keyed_records_land_in_kafkas_partition_in_send_order_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), "127.0.0.1:0").await;
    let client = connect(&node).await;
    topic(&client, "orders", 3).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut acks = Vec::new();
    for i in 0..3000u32 {
        let key = format!("order-{}", i % 50);
        let record = ProducerRecord::new("orders", format!("event-{i}"))
            .key(key)
            .header("n", i.to_string());
        acks.push((i, producer.send(record).await.unwrap()));
    }
    let mut last: BTreeMap<u32, i64> = BTreeMap::new();
    for (i, ack) in acks {
        let meta = ack.await.unwrap();
        let key = format!("order-{}", i % 50);
        assert_eq!(
            meta.partition,
            partition_for_key(key.as_bytes(), 3),
            "Kafka's partition for {key}"
        );
        let previous = last.insert(meta.partition, meta.offset);
        assert_eq!(
            meta.offset,
            previous.map_or(0, |o| o + 1),
            "offsets follow send order"
        );
    }
    producer.close().await;

    let mut consumer = Consumer::new(client, earliest());
    consumer
        .assign(&[("orders", 0), ("orders", 1), ("orders", 2)])
        .await
        .unwrap();
    let mut seen: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for _ in 0..3000 {
        let record = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
        let n: u32 = value.strip_prefix("event-").unwrap().parse().unwrap();
        assert_eq!(
            record.headers,
            vec![("n".to_string(), Some(bytes::Bytes::from(n.to_string())))]
        );
        seen.entry(record.partition).or_default().push(n);
    }
    for values in seen.values() {
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "per-partition order"
        );
    }
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), 3000);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_buffer_pushes_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), "127.0.0.1:0").await;
    let client = connect(&node).await;
    topic(&client, "bp", 1).await;
    let config = ProducerConfig {
        buffer_bytes: 4096,
        linger: Duration::from_secs(3600),
        batch_bytes: 1024 * 1024,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config);
    let mut pending = Vec::new();
    let full = loop {
        match producer
            .try_send(ProducerRecord::new("bp", vec![0u8; 500]))
            .await
        {
            Ok(ack) => pending.push(ack),
            Err(error) => break error,
        }
        assert!(pending.len() < 100, "the buffer never filled");
    };
    assert_eq!(full, ProducerError::BufferFull);
    assert!(matches!(
        producer
            .try_send(ProducerRecord::new("bp", vec![0u8; 10_000]))
            .await,
        Err(ProducerError::RecordTooLarge { .. })
    ));
    // A waiting send goes through once a flush has freed the buffer.
    let waiting = tokio::spawn({
        let producer = producer.clone();
        async move {
            producer
                .send(ProducerRecord::new("bp", vec![1u8; 500]))
                .await
                .unwrap()
                .await
        }
    });
    producer.flush().await;
    for ack in pending {
        ack.await.unwrap();
    }
    producer.flush().await;
    let meta = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(meta.offset >= 1);
    producer.close().await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn order_survives_retries_across_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = node(dir.path(), "127.0.0.1:0").await;
    let address = first.grpc_addr().to_string();
    let client = connect(&first).await;
    topic(&client, "r", 2).await;
    let config = ProducerConfig {
        retry_backoff: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(200),
        linger: Duration::from_millis(1),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let mut acks = Vec::new();
    for i in 0..200 {
        acks.push(
            producer
                .send(ProducerRecord::new("r", format!("{i}")).partition(i % 2))
                .await
                .unwrap(),
        );
    }
    producer.flush().await;
    first.shutdown().await.unwrap();
    // The broker is gone: these are refused and retried until it is back.
    for i in 200..400 {
        acks.push(
            producer
                .send(ProducerRecord::new("r", format!("{i}")).partition(i % 2))
                .await
                .unwrap(),
        );
    }
    let second = node(dir.path(), &address).await;
    let mut offsets = [Vec::new(), Vec::new()];
    for ack in acks {
        let meta = tokio::time::timeout(Duration::from_secs(30), ack)
            .await
            .unwrap()
            .unwrap();
        offsets[meta.partition as usize].push(meta.offset);
    }
    for partition in offsets {
        assert_eq!(
            partition,
            (0..200).collect::<Vec<i64>>(),
            "dense and in send order"
        );
    }
    let mut consumer = Consumer::new(client, earliest());
    consumer.assign(&[("r", 1)]).await.unwrap();
    for expected in (1..400).step_by(2) {
        let record = consumer.next().await.unwrap().unwrap();
        assert_eq!(record.value.unwrap(), expected.to_string());
    }
    producer.close().await;
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn seek_pause_and_resume_move_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), "127.0.0.1:0").await;
    let client = connect(&node).await;
    topic(&client, "s", 2).await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    for i in 0..20 {
        let record = ProducerRecord::new("s", format!("{i}"))
            .partition(i % 2)
            .timestamp(1_000 + i64::from(i));
        producer.send(record).await.unwrap();
    }
    producer.flush().await;
    let mut consumer = Consumer::new(client, earliest());
    consumer.assign(&[("s", 0), ("s", 1)]).await.unwrap();
    consumer.pause(&[("s", 1)]);
    let mut values = Vec::new();
    for _ in 0..10 {
        let r = consumer.next().await.unwrap().unwrap();
        assert_eq!(r.partition, 0, "partition 1 is paused");
        values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
    }
    assert_eq!(
        values,
        ["0", "2", "4", "6", "8", "10", "12", "14", "16", "18"]
    );
    consumer.seek("s", 0, SeekTo::Offset(8)).await.unwrap();
    consumer.resume(&[("s", 1)]);
    let mut got = BTreeMap::new();
    for _ in 0..12 {
        let r = consumer.next().await.unwrap().unwrap();
        got.entry(r.partition)
            .or_insert_with(Vec::new)
            .push(r.offset);
    }
    assert_eq!(got[&0], vec![8, 9]);
    assert_eq!(got[&1], (0..10).collect::<Vec<i64>>());
    consumer
        .seek("s", 1, SeekTo::Timestamp(1_015))
        .await
        .unwrap();
    consumer.seek("s", 0, SeekTo::End).await.unwrap();
    let r = consumer.next().await.unwrap().unwrap();
    assert_eq!((r.partition, r.offset, r.timestamp), (1, 7, 1_015));
    consumer.seek("s", 1, SeekTo::Offset(1_000)).await.unwrap();
    // Out of range: reset to the configured end (earliest) and read on.
    let r = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((r.partition, r.offset), (1, 0));
    producer.close().await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_codec_round_trips_through_the_broker() {
    use spool_client::Compression;
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), "127.0.0.1:0").await;
    let client = connect(&node).await;
    for (i, codec) in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("codec-{i}");
        topic(&client, &name, 1).await;
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                compression: codec,
                ..ProducerConfig::default()
            },
        );
        for n in 0..1000 {
            let record = ProducerRecord::new(
                name.clone(),
                format!("{codec:?} record {n} {}", "z".repeat(n % 40)),
            )
            .key(format!("{n}"));
            producer.send(record).await.unwrap();
        }
        producer.close().await;
        let size = client.describe_topic(&name).await.unwrap().partitions[0].size_bytes;
        if codec != Compression::None {
            assert!(size < 40_000, "{codec:?} stored {size} bytes");
        }
        let mut consumer = Consumer::new(client.clone(), earliest());
        consumer.assign(&[(name.as_str(), 0)]).await.unwrap();
        for n in 0..1000 {
            let r = consumer.next().await.unwrap().unwrap();
            assert_eq!(r.offset, n as i64);
            assert_eq!(r.key.unwrap(), n.to_string());
            assert_eq!(
                r.value.unwrap(),
                format!("{codec:?} record {n} {}", "z".repeat(n % 40))
            );
        }
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn batches_queued_behind_a_shipment_go_together_and_keep_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), "127.0.0.1:0").await;
    let client = connect(&node).await;
    topic(&client, "many", 2).await;
    // Tiny batches: dozens close while one shipment per partition is in flight.
    let config = ProducerConfig {
        batch_bytes: 512,
        linger: Duration::from_millis(0),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let mut acks = Vec::new();
    for i in 0..5000u32 {
        acks.push(
            producer
                .send(ProducerRecord::new("many", format!("{i:06}")).partition(i % 2))
                .await
                .unwrap(),
        );
    }
    let mut next = [0i64, 0];
    for ack in acks {
        let meta = ack.await.unwrap();
        assert_eq!(meta.offset, next[meta.partition as usize]);
        next[meta.partition as usize] += 1;
    }
    producer.close().await;
    let mut consumer = Consumer::new(client, earliest());
    consumer.assign(&[("many", 1)]).await.unwrap();
    for i in (1..5000u32).step_by(2) {
        let r = consumer.next().await.unwrap().unwrap();
        assert_eq!(r.value.unwrap(), format!("{i:06}"));
    }
    node.shutdown().await.unwrap();
}
