//! In-process nodes for replication tests: each a RaftNode behind its own gRPC server
//! on a port the OS chose.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spool_log::batch::{BatchBuilder, BatchOptions};
use spool_log::{FlushPolicy, LogConfig};
use spool_raft::{
    GroupId, Members, NodeId, PartitionReplica, RaftNode, RaftNodeOptions, RaftTiming, ReplicaSpec,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct TestNode {
    pub id: NodeId,
    pub addr: String,
    pub node: Arc<RaftNode>,
    pub dir: std::path::PathBuf,
    server: JoinHandle<()>,
    /// Ends the server gracefully: its open connections are told to go away, so peers
    /// reconnect to whatever listens on the address next.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestNode {
    pub async fn start(id: NodeId, dir: std::path::PathBuf, listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("addr").to_string();
        let node = RaftNode::open(RaftNodeOptions {
            min_free_bytes: None,
            producer_expiry: spool_raft::DEFAULT_PRODUCER_EXPIRY,
            node_id: id,
            state_dir: dir.clone(),
            timing: fast_timing(),
        })
        .expect("open node");
        let service = node.service();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop.await;
                })
                .await;
        });
        Self {
            id,
            addr,
            node,
            dir,
            server,
            shutdown: Some(shutdown),
        }
    }

    /// Stops the node as a crash would: the server goes, nothing is flushed or closed.
    pub fn kill(self) -> (NodeId, std::path::PathBuf, String) {
        self.server.abort();
        (self.id, self.dir, self.addr)
    }

    pub async fn stop(mut self) -> (NodeId, std::path::PathBuf, String) {
        self.node.shutdown().await;
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // Streams still open hold a graceful stop; they are cut after a moment.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.server).await;
        self.server.abort();
        (self.id, self.dir, self.addr)
    }

    pub async fn open_replica(&self, group: GroupId, members: &Members) -> Arc<PartitionReplica> {
        self.node
            .create_replica(ReplicaSpec {
                group,
                dir: self.dir.join(format!("g{group}")),
                log_config: LogConfig {
                    flush: FlushPolicy::Always,
                    ..LogConfig::default()
                },
                initial_members: members.clone(),
            })
            .await
            .expect("create replica")
    }
}

pub fn fast_timing() -> RaftTiming {
    RaftTiming {
        heartbeat_ms: 100,
        election_min_ms: 400,
        election_max_ms: 800,
        quiesce_after_ms: Some(1000),
    }
}

pub async fn listeners(n: usize) -> Vec<TcpListener> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    out
}

pub async fn start_nodes(root: &std::path::Path, n: usize) -> (Vec<TestNode>, Members) {
    let listeners = listeners(n).await;
    let mut members = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        members.insert(i as NodeId + 1, l.local_addr().expect("addr").to_string());
    }
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as NodeId + 1;
        nodes.push(TestNode::start(id, root.join(format!("n{id}")), l).await);
    }
    (nodes, members)
}

/// Opens `group` on every node.
pub async fn open_everywhere(
    nodes: &[TestNode],
    group: GroupId,
    members: &Members,
) -> Vec<Arc<PartitionReplica>> {
    let mut replicas = Vec::new();
    for node in nodes {
        replicas.push(node.open_replica(group, members).await);
    }
    replicas
}

/// Waits until `check` holds, re-checking whenever a replica's Raft metrics or quiet
/// state change; fails the test after `within`.
pub async fn wait_for<T>(
    replicas: &[Arc<PartitionReplica>],
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    use futures_util::future::{BoxFuture, select_all};
    use openraft::async_runtime::WatchReceiver;
    let deadline = tokio::time::Instant::now() + within;
    let mut metrics: Vec<_> = replicas.iter().map(|r| r.raft().metrics()).collect();
    let mut quiet: Vec<_> = replicas.iter().map(|r| r.quiet_changes()).collect();
    loop {
        if let Some(value) = check() {
            return value;
        }
        let mut changes: Vec<BoxFuture<'_, ()>> = Vec::new();
        for m in metrics.iter_mut() {
            changes.push(Box::pin(async move {
                let _ = m.changed().await;
            }));
        }
        for q in quiet.iter_mut() {
            changes.push(Box::pin(async move {
                let _ = q.changed().await;
            }));
        }
        if tokio::time::timeout_at(deadline, select_all(changes))
            .await
            .is_err()
        {
            panic!("timed out after {within:?} waiting for {what}");
        }
    }
}

/// The replica that leads the group, once one does.
pub async fn leader_of(replicas: &[Arc<PartitionReplica>]) -> Arc<PartitionReplica> {
    wait_for(replicas, Duration::from_secs(10), "a leader", || {
        replicas.iter().find(|r| r.is_leader()).cloned()
    })
    .await
}

/// A batch of `n` records whose values are `tag-i`.
pub fn batch(tag: &str, n: usize) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    for i in 0..n {
        builder.append(
            1_700_000_000_000,
            None,
            Some(format!("{tag}-{i}").as_bytes()),
            &[],
        );
    }
    builder.finish()
}

/// Waits until the replica's high watermark reaches at least `at_least`.
pub async fn wait_high_watermark(replica: &PartitionReplica, at_least: i64, what: &str) {
    let mut hw = replica.high_watermark();
    tokio::time::timeout(Duration::from_secs(10), hw.wait_for(|hw| *hw >= at_least))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("watch open");
}

/// Waits until `replica` no longer rebuilds (it votes again), re-checking whenever any
/// of `replicas` changes.
pub async fn wait_rebuilt(replicas: &[Arc<PartitionReplica>], replica: &Arc<PartitionReplica>) {
    wait_for(
        replicas,
        Duration::from_secs(20),
        "the rebuild to finish",
        || (!replica.is_rebuilding()).then_some(()),
    )
    .await;
}

/// Whether any of `replicas` is elected leader within `within`.
pub async fn elected_within(replicas: &[Arc<PartitionReplica>], within: Duration) -> bool {
    tokio::time::timeout(
        within,
        wait_for(replicas, Duration::from_secs(60), "a leader", || {
            replicas.iter().find(|r| r.is_leader()).cloned()
        }),
    )
    .await
    .is_ok()
}

/// Starts a node again on the address it had.
pub async fn restart(id: NodeId, dir: std::path::PathBuf, addr: &str) -> TestNode {
    let listener = TcpListener::bind(addr).await.expect("rebind");
    TestNode::start(id, dir, listener).await
}

/// Stops every node, then starts each again on its address.
pub async fn restart_all(nodes: Vec<TestNode>) -> Vec<TestNode> {
    let mut restarted = Vec::with_capacity(nodes.len());
    for node in nodes {
        let (id, dir, addr) = node.stop().await;
        restarted.push(restart(id, dir, &addr).await);
    }
    restarted
}

/// Cuts every link between node `id` and the others, both ways.
pub fn isolate(nodes: &[TestNode], id: NodeId) {
    for node in nodes {
        for other in nodes {
            if (node.id == id) != (other.id == id) {
                node.node.faults().cut(other.id);
            }
        }
    }
}
