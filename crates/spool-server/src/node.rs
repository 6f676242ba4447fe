//! Starting and stopping a node.
//!
//! Start: bind both listeners first (so a port in use fails fast), open the broker (which
//! recovers every partition), then serve. Stop: mark not ready, hand every group led here
//! to a follower, end fetch streams, stop accepting, give in-flight requests the grace
//! period, then flush and close every log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use spool_broker::{Broker, BrokerOptions, ControllerService};
use spool_proto::v1::admin_server::AdminServer;
use spool_proto::v1::broker_server::BrokerServer;
use spool_proto::v1::groups_server::GroupsServer;
use spool_proto::v1::replica_admin_server::ReplicaAdminServer;
use spool_proto::v1::transactions_server::TransactionsServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::http::{HttpState, router};
use crate::metrics::Metrics;
use crate::services::{
    ADMIN_MESSAGE_BYTES, AdminService, BrokerService, GroupsService, Listener, MAX_MESSAGE_BYTES,
    ReplicaAdminService, TransactionsService,
};

/// How long a stopping node waits for the controller to fence it, then tries to hand its
/// groups over (both within its grace period).
const ANNOUNCE_AT_MOST: Duration = Duration::from_secs(2);
const HAND_OVER_AT_MOST: Duration = Duration::from_secs(5);
const MIN_DRAIN: Duration = Duration::from_secs(1);
/// Streams a peer may reset before the cluster listener serves them (see where it is set).
const CLUSTER_PENDING_RESETS: usize = 100_000;

/// Starts nodes.
#[derive(Debug)]
pub struct Node;

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    cluster_addr: SocketAddr,
    external_addr: Option<SocketAddr>,
    broker: Arc<Broker>,
    ready: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    external_task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    cluster_task: JoinHandle<Result<(), tonic::transport::Error>>,
    http_task: JoinHandle<std::io::Result<()>>,
    grace: Duration,
}

async fn bind(address: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind {
            address: address.to_string(),
            source,
        })
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

impl Node {
    /// Starts a node and returns once it serves.
    pub async fn start(config: ServerConfig) -> Result<NodeHandle, ServerError> {
        let grpc = bind(&config.listen).await?;
        let http = bind(&config.http_listen).await?;
        let cluster = bind(&config.cluster_listen).await?;
        let external = match &config.external_listen {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        let local = |listener: &TcpListener, address: &str| {
            listener.local_addr().map_err(|source| ServerError::Bind {
                address: address.to_string(),
                source,
            })
        };
        let grpc_addr = local(&grpc, &config.listen)?;
        let http_addr = local(&http, &config.http_listen)?;
        let cluster_addr = local(&cluster, &config.cluster_listen)?;
        let external_addr = match (&external, &config.external_listen) {
            (Some(listener), Some(address)) => Some(local(listener, address)?),
            _ => None,
        };
        let options = BrokerOptions {
            node_id: config.node_id,
            advertised_address: config
                .advertised_address
                .clone()
                .unwrap_or_else(|| grpc_addr.to_string()),
            external_advertised_address: external_addr.map(|bound| {
                config
                    .external_advertised_address
                    .clone()
                    .unwrap_or_else(|| bound.to_string())
            }),
            cluster_address: config
                .cluster_advertised_address
                .clone()
                .unwrap_or_else(|| cluster_addr.to_string()),
            data_dir: config.data_dir.clone(),
            min_free_bytes: config.min_free_bytes,
            producer_expiry: config.producer_expiry()?,
            flush: config.flush_policy(),
            topic_defaults: config.topic_defaults()?,
            default_partitions: config.default_partitions.max(1),
            max_partitions: config.max_partitions_per_topic.max(1),
            max_replicas_per_broker: config.max_replicas_per_broker.max(1),
            fetch_memory_bytes: usize::try_from(config.fetch_memory_bytes).unwrap_or(usize::MAX),
            raft_timing: config.raft_timing()?,
            retention_check: Duration::from_millis(config.retention_check_ms.max(10)),
            default_replication_factor: config.default_replication_factor,
            rack: config.rack.clone().filter(|r| !r.is_empty()),
            controller_voters: config.voters()?,
            session_timeout: Duration::from_millis(config.broker_session_timeout_ms.max(100)),
            heartbeat_interval: Duration::from_millis(config.broker_heartbeat_ms.max(10)),
            metadata_checkpoint_bytes: config.metadata_checkpoint_bytes.max(4096),
            groups: config.group_options()?,
            transactions: config.transaction_options()?,
        };
        if config.node_id == 0 {
            return Err(ServerError::InvalidSetting {
                name: "node_id",
                reason: "node ids start at 1 (0 means no node on the wire)".into(),
            });
        }
        let broker = Broker::open(options).await?;
        let metrics = Arc::new(Metrics::new());
        let ready = Arc::new(AtomicBool::new(false));
        let (stop, stop_rx) = watch::channel(false);

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<BrokerServer<BrokerService>>().await;
        let fetch_sessions = Arc::new(tokio::sync::Semaphore::new(
            config.max_fetch_sessions.max(1) as usize,
        ));
        // The client services behind one listener; both listeners serve the same node.
        let serve_clients = |listener: TcpListener, kind: Listener| -> Result<_, ServerError> {
            let reflection = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(spool_proto::FILE_DESCRIPTOR_SET)
                .build_v1()?;
            let incoming = TcpListenerStream::new(listener).map(|stream| {
                stream.inspect(|s| {
                    // Small responses should not wait for Nagle's algorithm.
                    let _ = s.set_nodelay(true);
                })
            });
            // Large windows: a 1 MiB produce request should not wait on window updates.
            let server = tonic::transport::Server::builder()
                .initial_stream_window_size(4 * 1024 * 1024)
                .initial_connection_window_size(16 * 1024 * 1024)
                .max_concurrent_streams(Some(config.max_streams_per_connection.max(1)))
                .add_service(
                    BrokerServer::new(BrokerService {
                        broker: Arc::clone(&broker),
                        metrics: Arc::clone(&metrics),
                        fetch_sessions: Arc::clone(&fetch_sessions),
                        listener: kind,
                    })
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(
                    AdminServer::new(AdminService {
                        broker: Arc::clone(&broker),
                        metrics: Arc::clone(&metrics),
                        listener: kind,
                    })
                    .max_decoding_message_size(ADMIN_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(
                    GroupsServer::new(GroupsService {
                        broker: Arc::clone(&broker),
                        listener: kind,
                    })
                    .max_decoding_message_size(ADMIN_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(
                    TransactionsServer::new(TransactionsService {
                        broker: Arc::clone(&broker),
                        listener: kind,
                    })
                    .max_decoding_message_size(ADMIN_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(health_service.clone())
                .add_service(reflection)
                .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
            Ok(tokio::spawn(server))
        };
        let grpc_task = serve_clients(grpc, Listener::Internal)?;
        let external_task = match external {
            Some(listener) => Some(serve_clients(listener, Listener::External)?),
            None => None,
        };
        // What only nodes call, on a listener of its own.
        let cluster_incoming = TcpListenerStream::new(cluster).map(|stream| {
            stream.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        });
        let cluster_server = tonic::transport::Server::builder()
            .initial_stream_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            // Peers cancel requests by the thousand when thousands of groups elect at
            // once (a vote answered elsewhere, a replication call that timed out). h2
            // takes more than 20 such resets of streams not yet served for an attack and
            // closes the connection, and with it every group's calls on it: the cluster
            // then never settles. Only nodes of the cluster reach this listener.
            .http2_max_pending_accept_reset_streams(Some(CLUSTER_PENDING_RESETS))
            .add_service(broker.raft().service())
            .add_service(ControllerService::new(Arc::clone(broker.controller())))
            .add_service(ReplicaAdminServer::new(ReplicaAdminService {
                broker: Arc::clone(&broker),
                fault_injection: config.fault_injection,
            }))
            .add_service(health_service)
            .serve_with_incoming_shutdown(cluster_incoming, stopped(stop_rx.clone()));
        let cluster_task = tokio::spawn(cluster_server);

        let app = router(HttpState {
            broker: Arc::clone(&broker),
            metrics,
            ready: Arc::clone(&ready),
        });
        let http_task = tokio::spawn(async move {
            axum::serve(http, app)
                .with_graceful_shutdown(stopped(stop_rx))
                .await
        });
        ready.store(true, Ordering::Release);
        tracing::info!(%grpc_addr, %http_addr, %cluster_addr, node_id = config.node_id, "node serving");
        Ok(NodeHandle {
            grpc_addr,
            http_addr,
            cluster_addr,
            external_addr,
            broker,
            ready,
            stop,
            grpc_task,
            external_task,
            cluster_task,
            http_task,
            grace: Duration::from_secs(config.shutdown_grace_secs),
        })
    }
}

impl NodeHandle {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound external client listener, if the node has one.
    pub fn external_addr(&self) -> Option<SocketAddr> {
        self.external_addr
    }

    /// The bound cluster listener (Raft, Controller, ReplicaAdmin).
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster_addr
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops gracefully; every acknowledged write is flushed before this returns.
    pub async fn shutdown(mut self) -> Result<ShutdownReport, ServerError> {
        self.ready.store(false, Ordering::Release);
        let deadline = tokio::time::Instant::now() + self.grace;
        // The controller fences this broker first, so that it hands no leadership back
        // while this node hands its own over.
        self.broker
            .controller()
            .announce_stopping(self.grace.min(ANNOUNCE_AT_MOST))
            .await;
        // Leaders move before the listeners close: peers cannot tell a closed listener
        // from a dead node, and clients would wait out an election.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        // Nodes fenced already (stopping as well, or gone) are not asked to take over.
        let metadata = self.broker.metadata();
        let fenced = |node: u64| metadata.brokers.get(&node).is_some_and(|b| b.fenced);
        let handed = self
            .broker
            .raft()
            .hand_over_leadership(left.min(HAND_OVER_AT_MOST), &fenced)
            .await;
        tracing::info!(
            led = handed.led,
            kept = handed.kept,
            "handed leadership over"
        );
        let mut report = ShutdownReport {
            kept_leadership: handed.kept,
            ..ShutdownReport::default()
        };
        self.broker.begin_shutdown();
        self.stop.send_replace(true);
        // Requests in flight get what is left of the grace period, and a moment at least.
        let drain_until = deadline.max(tokio::time::Instant::now() + MIN_DRAIN);
        let mut served = Ok(());
        let tasks = [
            ("client", Some(&mut self.grpc_task)),
            ("external client", self.external_task.as_mut()),
            ("cluster", Some(&mut self.cluster_task)),
        ];
        for (listener, task) in tasks {
            let Some(task) = task else { continue };
            match tokio::time::timeout_at(drain_until, &mut *task).await {
                Ok(joined) => {
                    if let Ok(Err(error)) = joined {
                        served = Err(error);
                    }
                }
                Err(_) => {
                    tracing::warn!(grace = ?self.grace, listener, "in-flight requests outlived the grace period");
                    report.outlived_grace = true;
                    task.abort();
                }
            }
        }
        self.broker.shutdown().await;
        if tokio::time::timeout(self.grace, &mut self.http_task)
            .await
            .is_err()
        {
            self.http_task.abort();
        }
        tracing::info!("node stopped");
        served.map_err(ServerError::from)?;
        Ok(report)
    }
}

/// How a graceful stop went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Requests still open when the grace period ended were cut off.
    pub outlived_grace: bool,
    /// Groups still led here when the node stopped (no follower could take them).
    pub kept_leadership: usize,
}
