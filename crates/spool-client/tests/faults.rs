//! Order under injected faults: a proxy in front of a real node answers some produce calls
//! with NOT_LEADER for every partition and fails others as a dropped connection would,
//! and once it has answered NOT_LEADER, fails every metadata call. The producer retries
//! with the leaders it knows; every record must still be taken by `send` and land once, in
//! send order. A second proxy mode passes some produce calls on and then loses their
//! answers: the idempotent producer's retries must store nothing twice (and a producer
//! without idempotence does, which shows the faults bite).
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
    /// Pass some produce calls on and answer them with a transport error instead.
    lose_answers: bool,
    deep_losses: AtomicU32,
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
        if self.lose_answers {
            // Deep shipments (five batches of a partition or more) are the ones whose
            // retry must still be answered whole: lose a few of those answers too.
            let deep = request
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| p.batches.len() >= 5);
            let answer = self.upstream.clone().produce(request).await;
            let lose =
                call % 3 == 1 || (deep && self.deep_losses.fetch_add(1, Ordering::SeqCst) < 4);
            if lose && answer.is_ok() {
                self.injected.fetch_add(1, Ordering::SeqCst);
                return Err(Status::unavailable("connection reset by peer"));
            }
            return answer;
        }
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

    async fn init_producer_id(
        &self,
        request: Request<v1::InitProducerIdRequest>,
    ) -> Result<Response<v1::InitProducerIdResponse>, Status> {
        self.upstream
            .clone()
            .init_producer_id(request.into_inner())
            .await
    }
}

#[tokio::test]
async fn order_survives_injected_not_leader_and_dropped_calls() {
    let run = through_proxy(false, ProducerConfig::default()).await;
    assert!(run.injected >= 3, "faults were injected");
    assert_eq!(
        run.acknowledged, run.expected,
        "dense offsets in send order"
    );
    assert_eq!(run.stored, run.expected, "each record once, in order");
    run.node.shutdown().await.unwrap();
}

/// Answers lost after the records were stored: the idempotent producer's retries are
/// answered from the log, so every record is stored once, at the offset its sender was
/// told. Without idempotence the same faults store records twice.
#[tokio::test]
async fn lost_answers_store_nothing_twice_with_idempotence() {
    let run = through_proxy(true, ProducerConfig::default()).await;
    assert!(run.injected >= 3, "answers were lost");
    assert_eq!(run.stored, run.expected, "each record once, in order");
    assert_eq!(run.acknowledged, run.expected, "acknowledged where stored");
    run.node.shutdown().await.unwrap();

    let without = ProducerConfig {
        idempotence: false,
        ..ProducerConfig::default()
    };
    let run = through_proxy(true, without).await;
    assert!(run.injected >= 3, "answers were lost");
    let stored: usize = run.stored.iter().map(Vec::len).sum();
    assert!(
        stored > 3000,
        "without idempotence, lost answers must show as duplicates ({stored} stored)"
    );
    run.node.shutdown().await.unwrap();
}

/// What one run through the proxy produced.
struct Run {
    node: spool_server::NodeHandle,
    _dir: tempfile::TempDir,
    injected: u32,
    /// Per partition: the values in the order the records were acknowledged, each at
    /// the offset it was acknowledged with.
    acknowledged: [Vec<String>; 2],
    /// Per partition: the values the log holds, in offset order.
    stored: [Vec<String>; 2],
    /// Per partition: each value once, in send order.
    expected: [Vec<String>; 2],
}

/// Sends 3000 records over two partitions through a faulty proxy; reads back what the
/// node stored directly.
async fn through_proxy(lose_answers: bool, config: ProducerConfig) -> Run {
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
        lose_answers,
        deep_losses: AtomicU32::new(0),
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
        ..config
    };
    let producer = Producer::new(through_proxy, config);
    let mut acks = Vec::new();
    for i in 0..3000u32 {
        let value = value_of(i);
        let ack = producer
            .send(ProducerRecord::new("f", value.clone()).partition(i % 2))
            .await
            .unwrap();
        acks.push((value, ack));
        // In waves, so that the records take many requests.
        if i % 1000 == 999 {
            producer.flush().await;
        }
    }
    let mut acknowledged: [Vec<(i64, String)>; 2] = [Vec::new(), Vec::new()];
    for (value, ack) in acks {
        let meta = tokio::time::timeout(Duration::from_secs(30), ack)
            .await
            .unwrap()
            .unwrap();
        acknowledged[meta.partition as usize].push((meta.offset, value));
    }
    producer.close().await;

    let consumer_config = ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut stored = [Vec::new(), Vec::new()];
    for p in 0..2u32 {
        let end = direct
            .list_offsets(vec![("f".into(), p, spool_client::OffsetSpec::Latest)])
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        let mut consumer = Consumer::new(direct.clone(), consumer_config.clone());
        consumer.assign(&[("f", p)]).await.unwrap();
        while (stored[p as usize].len() as i64) < end {
            let r = consumer.next().await.unwrap().unwrap();
            assert_eq!(r.offset, stored[p as usize].len() as i64, "dense offsets");
            stored[p as usize].push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    // Each acknowledged offset holds the acknowledged value.
    let acknowledged = acknowledged.map(|records| {
        let mut placed = vec![String::new(); records.len()];
        for (offset, value) in records {
            if let Some(slot) = usize::try_from(offset).ok().and_then(|o| placed.get_mut(o)) {
                *slot = value;
            }
        }
        placed
    });
    let expected = [0u32, 1].map(|p| (0..3000u32).filter(|i| i % 2 == p).map(value_of).collect());
    Run {
        node,
        _dir: dir,
        injected: injected.load(Ordering::SeqCst),
        acknowledged,
        stored,
        expected,
    }
}

/// Record `i`'s value: numbered, and long enough that a 2 KiB batch holds about twenty.
fn value_of(i: u32) -> String {
    format!("{i:05}-{}", "v".repeat(90))
}
