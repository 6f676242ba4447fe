//! No request can make a node hold without bound: fetch sizes are capped, fetch sessions
//! are counted, produce requests are bounded, and a normal client still gets through.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use spool_log::batch::{BatchBuilder, BatchOptions};
use spool_proto::v1;
use spool_proto::v1::admin_client::AdminClient;
use spool_proto::v1::broker_client::BrokerClient;
use spool_server::{Node, NodeHandle, ServerConfig};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

async fn start(dir: &std::path::Path, max_fetch_sessions: u32) -> (NodeHandle, Channel) {
    let config = ServerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        cluster_listen: "127.0.0.1:0".into(),
        max_fetch_sessions,
        ..ServerConfig::default()
    };
    let node = Node::start(config).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", node.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (node, channel)
}

async fn create(channel: &Channel, name: &str, configs: &[(&str, &str)]) {
    let response = AdminClient::new(channel.clone())
        .create_topics(v1::CreateTopicsRequest {
            topics: vec![v1::NewTopic {
                name: name.into(),
                partitions: 1,
                replication_factor: 1,
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                assignments: Vec::new(),
            }],
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.results[0].error.is_none(), "{response:?}");
}

fn big_batch(bytes: usize) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    builder.append(1_700_000_000_000, None, Some(&vec![1u8; bytes]), &[]);
    builder.finish()
}

fn fetch(topic: &str, max_bytes: u32, follow: bool) -> v1::FetchRequest {
    v1::FetchRequest {
        partitions: vec![v1::FetchPartition {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            max_bytes,
            leader_epoch: None,
        }],
        max_bytes,
        min_bytes: 1,
        max_wait_ms: 100,
        follow,
        isolation: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_asking_for_gigabytes_gets_a_capped_response_it_can_decode() {
    let dir = tempfile::tempdir().unwrap();
    let (node, channel) = start(dir.path(), 100).await;
    create(&channel, "big", &[("max.message.bytes", "8388608")]).await;
    let mut broker = BrokerClient::new(channel.clone())
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    // 80 MiB in 8 MiB batches.
    for _ in 0..10 {
        let response = broker
            .produce(v1::ProduceRequest {
                acks: v1::Acks::All as i32,
                timeout_ms: 30_000,
                topics: vec![v1::TopicProduceData {
                    topic: "big".into(),
                    partitions: vec![v1::PartitionProduceData {
                        partition: 0,
                        batches: vec![big_batch(8 * 1024 * 1024 - 200)],
                        leader_epoch: None,
                    }],
                }],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(response.topics[0].partitions[0].error.is_none());
    }
    let mut stream = broker
        .fetch(fetch("big", u32::MAX, false))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let bytes: usize = first.partitions[0].batches.iter().map(Bytes::len).sum();
    assert!(bytes > 0);
    assert!(
        bytes <= 64 * 1024 * 1024,
        "a response of {bytes} bytes, over the 64 MiB cap"
    );
    // The rest follows in later responses.
    let mut total = bytes;
    while let Some(response) = stream.next().await {
        total += response.unwrap().partitions[0]
            .batches
            .iter()
            .map(Bytes::len)
            .sum::<usize>();
    }
    assert!(total >= 80 * 1024 * 1024 - 2000);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_sessions_beyond_the_limit_are_refused_and_produces_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (node, channel) = start(dir.path(), 2).await;
    create(&channel, "t", &[]).await;
    let mut broker = BrokerClient::new(channel.clone());
    let first = broker.fetch(fetch("t", 0, true)).await.unwrap();
    let second = broker.fetch(fetch("t", 0, true)).await.unwrap();
    let refused = broker.fetch(fetch("t", 0, true)).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    drop(first);
    // Its place comes back once the server sees the stream gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match broker.fetch(fetch("t", 0, true)).await {
            Ok(_) => break,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the session never ended"
                );
                tokio::task::yield_now().await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    drop(second);

    // A produce naming too many partitions is refused whole.
    let too_many = v1::ProduceRequest {
        acks: v1::Acks::All as i32,
        timeout_ms: 5000,
        topics: vec![v1::TopicProduceData {
            topic: "t".into(),
            partitions: (0..10_001)
                .map(|_| v1::PartitionProduceData {
                    partition: 0,
                    batches: Vec::new(),
                    leader_epoch: None,
                })
                .collect(),
        }],
    };
    let status = broker.produce(too_many).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    node.shutdown().await.unwrap();
}
