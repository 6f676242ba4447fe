//! A node in process on free ports, driven through raw spool.v1 gRPC clients: what any
//! client built from proto/ alone would send, bad input included.
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

struct Running {
    node: NodeHandle,
    broker: BrokerClient<Channel>,
    admin: AdminClient<Channel>,
    _dir: Option<tempfile::TempDir>,
}

async fn start_in(
    dir: &std::path::Path,
) -> (NodeHandle, BrokerClient<Channel>, AdminClient<Channel>) {
    let config = ServerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        cluster_listen: "127.0.0.1:0".into(),
        ..ServerConfig::default()
    };
    let node = Node::start(config).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", node.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (
        node,
        BrokerClient::new(channel.clone()),
        AdminClient::new(channel),
    )
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (node, broker, admin) = start_in(dir.path()).await;
    Running {
        node,
        broker,
        admin,
        _dir: Some(dir),
    }
}

async fn create(
    admin: &mut AdminClient<Channel>,
    name: &str,
    partitions: u32,
) -> Option<v1::Error> {
    let response = admin
        .create_topics(v1::CreateTopicsRequest {
            topics: vec![v1::NewTopic {
                name: name.into(),
                partitions,
                replication_factor: 1,
                configs: Default::default(),
                assignments: Vec::new(),
            }],
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    response.results[0].error.clone()
}

fn batch(values: &[&str]) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for v in values {
        builder.append(1_700_000_000_000, Some(b"k"), Some(v.as_bytes()), &[]);
    }
    builder.finish()
}

fn produce_request(parts: Vec<(&str, u32, Vec<Bytes>)>) -> v1::ProduceRequest {
    v1::ProduceRequest {
        acks: v1::Acks::All as i32,
        timeout_ms: 5000,
        topics: parts
            .into_iter()
            .map(|(topic, partition, batches)| v1::TopicProduceData {
                topic: topic.into(),
                partitions: vec![v1::PartitionProduceData {
                    partition,
                    batches,
                    leader_epoch: None,
                }],
            })
            .collect(),
    }
}

fn codes(response: &v1::ProduceResponse) -> Vec<Option<v1::ErrorCode>> {
    response
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            p.error
                .as_ref()
                .map(|e| v1::ErrorCode::try_from(e.code).unwrap())
        })
        .collect()
}

async fn high_watermark(broker: &mut BrokerClient<Channel>, topic: &str, partition: u32) -> i64 {
    let response = broker
        .list_offsets(v1::ListOffsetsRequest {
            partitions: vec![v1::ListOffsetsPartition {
                topic: topic.into(),
                partition,
                spec: v1::OffsetSpec::Latest as i32,
                timestamp_ms: 0,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    response.partitions[0].offset
}

#[tokio::test]
async fn every_bad_produce_is_refused_with_its_code_and_appends_nothing() {
    let mut s = start().await;
    assert!(create(&mut s.admin, "t", 2).await.is_none());
    let good = batch(&["a", "b"]);
    let mut crc = good.to_vec();
    crc[70] ^= 0x01;
    let mut magic = good.to_vec();
    magic[16] = 0;
    let mut count = good.to_vec();
    count[57..61].copy_from_slice(&5i32.to_be_bytes());
    count[23..27].copy_from_slice(&4i32.to_be_bytes());
    let fixed = crc32c::crc32c(&count[21..]);
    count[17..21].copy_from_slice(&fixed.to_be_bytes());
    let huge = {
        let mut b = BatchBuilder::new(BatchOptions::default());
        b.append(0, None, Some(&vec![7u8; 2 * 1024 * 1024]), &[]);
        b.finish()
    };
    let request = produce_request(vec![
        ("t", 0, vec![Bytes::from(crc)]),
        ("t", 0, vec![Bytes::from(magic)]),
        ("t", 0, vec![good.slice(..40)]),
        ("t", 0, vec![Bytes::from(count)]),
        ("t", 0, vec![huge]),
        ("t", 9, vec![good.clone()]),
        ("missing", 0, vec![good.clone()]),
        ("t", 1, vec![good.clone()]),
    ]);
    let response = s.broker.produce(request).await.unwrap().into_inner();
    use v1::ErrorCode::*;
    assert_eq!(
        codes(&response),
        vec![
            Some(CorruptBatch),
            Some(CorruptBatch),
            Some(CorruptBatch),
            Some(CorruptBatch),
            Some(RecordTooLarge),
            Some(UnknownTopicOrPartition),
            Some(UnknownTopicOrPartition),
            None,
        ]
    );
    assert_eq!(
        high_watermark(&mut s.broker, "t", 0).await,
        0,
        "nothing reached partition 0"
    );
    assert_eq!(
        high_watermark(&mut s.broker, "t", 1).await,
        2,
        "the good partition succeeded"
    );
    let unknown_acks = v1::ProduceRequest {
        acks: 7,
        ..produce_request(vec![("t", 1, vec![good])])
    };
    let status = s.broker.produce(unknown_acks).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        spool_proto::status_error(&status).error_code(),
        spool_types::ErrorCode::InvalidRequest
    );
    s.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_topic_names_and_offsets_get_typed_errors() {
    let mut s = start().await;
    use v1::ErrorCode::*;
    for name in ["", "bad/name", "sp ace", &"x".repeat(250), ".."] {
        let error = create(&mut s.admin, name, 1).await.unwrap();
        assert_eq!(
            error.code, InvalidTopic as i32,
            "{name:?}: {}",
            error.message
        );
    }
    assert!(create(&mut s.admin, &"x".repeat(249), 1).await.is_none());
    assert_eq!(
        create(&mut s.admin, "t", 0).await,
        None,
        "0 takes the default"
    );
    assert_eq!(
        create(&mut s.admin, "t", 1).await.unwrap().code,
        TopicAlreadyExists as i32
    );

    for offset in [-5, 1] {
        let request = v1::FetchRequest {
            partitions: vec![v1::FetchPartition {
                topic: "t".into(),
                partition: 0,
                offset,
                max_bytes: 0,
                leader_epoch: None,
            }],
            follow: true,
            ..Default::default()
        };
        let mut stream = s.broker.fetch(request).await.unwrap().into_inner();
        let response = stream.next().await.unwrap().unwrap();
        let error = response.partitions[0].error.as_ref().unwrap();
        assert_eq!(error.code, OffsetOutOfRange as i32, "offset {offset}");
        assert!(stream.next().await.is_none());
    }
    let status = s
        .broker
        .fetch(v1::FetchRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    s.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn fetch_streams_new_batches_as_they_are_committed() {
    let mut s = start().await;
    create(&mut s.admin, "live", 1).await;
    let request = v1::FetchRequest {
        partitions: vec![v1::FetchPartition {
            topic: "live".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
            leader_epoch: None,
        }],
        max_wait_ms: 60_000,
        min_bytes: 1,
        follow: true,
        ..Default::default()
    };
    let mut stream = s.broker.fetch(request).await.unwrap().into_inner();
    for round in 0..3 {
        let value = format!("event-{round}");
        s.broker
            .produce(produce_request(vec![("live", 0, vec![batch(&[&value])])]))
            .await
            .unwrap();
        // max_wait is a minute: only a wake-up on commit delivers within the deadline.
        let response = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let data = &response.partitions[0];
        assert_eq!(data.high_watermark, round + 1);
        let stored = spool_log::RecordBatch::new(&data.batches[0]).unwrap();
        assert_eq!(stored.base_offset(), round);
        let record = stored.records().unwrap().next().unwrap().unwrap();
        assert_eq!(record.value(), Some(value.as_bytes()));
    }
    s.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_graceful_shutdown_ends_open_streams_and_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut broker, mut admin) = start_in(dir.path()).await;
    create(&mut admin, "kept", 2).await;
    for i in 0..20 {
        let response = broker
            .produce(produce_request(vec![(
                "kept",
                i % 2,
                vec![batch(&["x", "y"])],
            )]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(codes(&response), vec![None]);
    }
    let follower = v1::FetchRequest {
        partitions: vec![v1::FetchPartition {
            topic: "kept".into(),
            partition: 0,
            offset: 20,
            max_bytes: 0,
            leader_epoch: None,
        }],
        follow: true,
        ..Default::default()
    };
    let mut stream = broker.fetch(follower).await.unwrap().into_inner();
    tokio::time::timeout(Duration::from_secs(30), node.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert!(
        stream.next().await.is_none_or(|r| r.is_err()),
        "the stream ended"
    );

    let (node, mut broker, _admin) = start_in(dir.path()).await;
    assert_eq!(high_watermark(&mut broker, "kept", 0).await, 20);
    assert_eq!(high_watermark(&mut broker, "kept", 1).await, 20);
    node.shutdown().await.unwrap();
}

async fn http_get(http: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// Group gauges, lag and rebalances reach /metrics.
#[tokio::test]
async fn group_members_lag_and_rebalances_are_in_the_metrics() {
    use spool_proto::v1::groups_client::GroupsClient;
    let mut s = start().await;
    create(&mut s.admin, "g-topic", 1).await;
    s.broker
        .produce(produce_request(vec![(
            "g-topic",
            0,
            vec![batch(&["a", "b", "c"])],
        )]))
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{}", s.node.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut groups = GroupsClient::new(channel);
    // As the protocol says: find the coordinator first (it creates __consumer_offsets and
    // waits for its leader), then join.
    groups
        .find_coordinator(v1::FindCoordinatorRequest {
            group: "billing".into(),
        })
        .await
        .unwrap();
    let joined = groups
        .heartbeat(v1::GroupHeartbeatRequest {
            group: "billing".into(),
            member_id: "m1".into(),
            member_epoch: 0,
            rebalance_timeout_ms: Some(30_000),
            topics: Some(v1::SubscribedTopics {
                names: vec!["g-topic".into()],
            }),
            owned: Some(v1::OwnedPartitions { topics: vec![] }),
            ..v1::GroupHeartbeatRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    groups
        .commit_offsets(v1::CommitOffsetsRequest {
            group: "billing".into(),
            member_id: "m1".into(),
            member_epoch: joined.member_epoch,
            offsets: vec![v1::OffsetToCommit {
                topic: "g-topic".into(),
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
            }],
        })
        .await
        .unwrap();
    // Published within about a second: look again after each of the coordinator's passes.
    let mut passes = s.node.broker().coordinator_passes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        passes.borrow_and_update();
        let metrics = http_get(s.node.http_addr(), "/metrics").await;
        let wanted = [
            "spool_groups 1",
            "spool_group_members{group=\"billing\",state=\"stable\"} 1",
            "spool_group_lag{group=\"billing\",topic=\"g-topic\",partition=\"0\"} 2",
            "spool_group_rebalance_duration_seconds_count 1",
        ];
        if wanted.iter().all(|w| metrics.contains(w)) {
            break;
        }
        let passed = tokio::time::timeout_at(deadline, passes.changed()).await;
        assert!(matches!(passed, Ok(Ok(()))), "{metrics}");
    }
    s.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_health_and_readiness_are_served_over_http() {
    let mut s = start().await;
    create(&mut s.admin, "m", 1).await;
    s.broker
        .produce(produce_request(vec![("m", 0, vec![batch(&["v"])])]))
        .await
        .unwrap();
    let http = s.node.http_addr();
    let get = |path: &'static str| http_get(http, path);
    assert!(get("/health").await.starts_with("HTTP/1.1 200"));
    assert!(get("/ready").await.starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics").await;
    assert!(
        metrics.contains("spool_requests_total{rpc=\"produce\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("spool_partition_high_watermark{topic=\"m\",partition=\"0\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("spool_produce_bytes_total"), "{metrics}");
    assert!(metrics.trim_end().ends_with("# EOF"));
    s.node.shutdown().await.unwrap();
}

/// Clients reach Broker and Admin only: the services nodes call among themselves
/// (Controller, RaftTransport, ReplicaAdmin) answer on the cluster listener and nowhere
/// else, and fault injection stays off unless configured.
#[tokio::test]
async fn inter_node_services_are_served_on_the_cluster_listener_only() {
    use spool_proto::v1::controller_client::ControllerClient;
    use spool_proto::v1::replica_admin_client::ReplicaAdminClient;
    let running = start().await;
    let client_port = format!("http://{}", running.node.grpc_addr());
    let cluster_port = format!("http://{}", running.node.cluster_addr());
    assert_ne!(client_port, cluster_port);

    let register = v1::RegisterBrokerRequest {
        broker_id: 99,
        incarnation: 1,
        address: "127.0.0.1:1".into(),
        rack: String::new(),
        client_address: String::new(),
        external_address: String::new(),
    };
    let mut on_client_port = ControllerClient::connect(client_port.clone())
        .await
        .unwrap();
    let refused = on_client_port
        .register_broker(register.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    let status = ControllerClient::connect(cluster_port.clone())
        .await
        .unwrap()
        .voter_status(v1::VoterStatusRequest { broker_id: 1 })
        .await;
    assert!(status.is_ok(), "{status:?}");

    let mut admin = ReplicaAdminClient::connect(client_port).await.unwrap();
    let faults = v1::SetLinkFaultsRequest {
        cut: vec![2],
        heal_all: false,
    };
    assert_eq!(
        admin
            .set_link_faults(faults.clone())
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unimplemented
    );
    let mut admin = ReplicaAdminClient::connect(cluster_port).await.unwrap();
    let refused = admin.set_link_faults(faults).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    running.node.shutdown().await.unwrap();
}
