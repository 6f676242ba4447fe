//! Order under injected faults: a proxy in front of a real node answers some produce calls
//! with NOT_LEADER for every partition and fails others as a dropped connection would,
//! and once it has answered NOT_LEADER, fails every metadata call. The producer retries
//! with the leaders it knows; every record must still be taken by `send` and land once, in
//! send order.
#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use spool_client::{
    Client, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use spool_proto::v1;
use spool_proto::v1::broker_client::BrokerClient;
use spool_proto::v1::broker_server::{Broker, BrokerServer};
use spool_server::{Node, ServerConfig};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

struct Flaky {
    upstream: BrokerClient<Channel>,
    /// The proxy's own address, advertised in metadata so clients stay on it.
    address: String,
    produce_calls: AtomicU32,
    injected: Arc<AtomicU32>,
    /// Set with the first NOT_LEADER: metadata calls fail from then on.
    metadata_down: AtomicBool,
}

#[tonic::async_trait]
impl Broker for Flaky {
    async fn metadata(
        &self,
        request: Request<v1::MetadataRequest>,
    ) -> Result<Response<v1::MetadataResponse>, Status> {
        if self.metadata_down.load(Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unavailable("metadata unavailable"));
        }
        let mut response = self
            .upstream
            .clone()
            .metadata(request.into_inner())
            .await?
            .into_inner();
        for broker in &mut response.brokers {
            broker.address = self.address.clone();
        }
        Ok(Response::new(response))
    }

    async fn produce(
        &self,
        request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        let call = self.produce_calls.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        if call % 3 == 1 {
            self.injected.fetch_add(1, Ordering::SeqCst);
            self.metadata_down.store(true, Ordering::SeqCst);
            let topics = request
                .topics
                .iter()
                .map(|t| v1::TopicProduceResult {
                    topic: t.topic.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| v1::PartitionProduceResult {
                            partition: p.partition,
                            error: Some(v1::Error::new(
                                spool_types::ErrorCode::NotLeader,
                                "leadership moved",
                            )),
                            base_offset: -1,
                            log_append_time_ms: -1,
                            log_start_offset: -1,
                            batch_base_offsets: Vec::new(),
                        })
                        .collect(),
                })
                .collect();
            return Ok(Response::new(v1::ProduceResponse {
                topics,
                metadata_epoch: 0,
            }));
        }
        if call % 5 == 3 {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unavailable("connection reset by peer"));
        }
        self.upstream.clone().produce(request).await
    }

    type FetchStream = Pin<Box<dyn Stream<Item = Result<v1::FetchResponse, Status>> + Send>>;

    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let stream = self
            .upstream
            .clone()
            .fetch(request.into_inner())
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(stream.map(|item| item))))
    }

    async fn list_offsets(
        &self,
        request: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        self.upstream
            .clone()
            .list_offsets(request.into_inner())
            .await
    }
}

#[tokio::test]
async fn order_survives_injected_not_leader_and_dropped_calls() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        cluster_listen: "127.0.0.1:0".into(),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let direct = Client::connect(&[node.grpc_addr().to_string()], Duration::from_secs(5))
        .await
        .unwrap();
    direct
        .create_topic(NewTopic {
            name: "f".into(),
            partitions: 2,
            ..NewTopic::default()
        })
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let upstream = BrokerClient::connect(format!("http://{}", node.grpc_addr()))
        .await
        .unwrap();
    let injected = Arc::new(AtomicU32::new(0));
    let proxy = Flaky {
        upstream,
        address: address.clone(),
        produce_calls: AtomicU32::new(0),
        injected: Arc::clone(&injected),
        metadata_down: AtomicBool::new(false),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(BrokerServer::new(proxy))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let through_proxy = Client::connect(&[address], Duration::from_secs(5))
        .await
        .unwrap();
    let config = ProducerConfig {
        batch_bytes: 2048,
        linger: Duration::from_millis(1),
        retry_backoff: Duration::from_millis(5),
        retry_backoff_max: Duration::from_millis(20),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(through_proxy, config);
    let mut acks = Vec::new();
    for i in 0..3000u32 {
        acks.push(
            producer
                .send(ProducerRecord::new("f", format!("{i:05}")).partition(i % 2))
                .await
                .unwrap(),
        );
    }
    let mut next = [0i64, 0];
    for ack in acks {
        let meta = tokio::time::timeout(Duration::from_secs(30), ack)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            meta.offset, next[meta.partition as usize],
            "dense offsets in send order"
        );
        next[meta.partition as usize] += 1;
    }
    producer.close().await;
    assert!(injected.load(Ordering::SeqCst) >= 3, "faults were injected");

    let config = ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(direct, config);
    consumer.assign(&[("f", 0), ("f", 1)]).await.unwrap();
    let mut seen = [Vec::new(), Vec::new()];
    for _ in 0..3000 {
        let r = consumer.next().await.unwrap().unwrap();
        seen[r.partition as usize].push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
    }
    for (p, values) in seen.iter().enumerate() {
        let expected: Vec<String> = (0..3000u32)
            .filter(|i| i % 2 == p as u32)
            .map(|i| format!("{i:05}"))
            .collect();
        assert_eq!(
            values, &expected,
            "partition {p}: each record once, in order"
        );
    }
    node.shutdown().await.unwrap();
}
