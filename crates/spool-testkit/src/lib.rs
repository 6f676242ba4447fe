//! A harness for Spool clusters in tests.
//!
//! [`TestCluster`] runs N nodes, in this process or as `spool serve` processes, each on
//! ports reserved for it (kept across restarts, so a restarted node keeps its address)
//! and in its own data directory. It places topics on chosen replicas, kills (kill -9),
//! stops and restarts nodes, cuts and heals Raft links through each node's fault layer,
//! finds leaders, waits on conditions with deadlines, and reads back each replica's
//! committed batches so that replicas can be compared byte for byte.

pub mod load;
mod node;
mod reads;
mod replicas;
pub mod rng;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use spool_client::Client;
use spool_proto::v1;
use spool_proto::v1::replica_admin_client::ReplicaAdminClient;
use spool_server::FlushSetting;

pub use node::NodeSpec;
use node::Running;
pub use reads::PartitionRead;
pub use replicas::{Replicas, committed_batches, replicas_agree};

#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("could not start a node: {0}")]
    Start(String),
    #[error("no such node {0}")]
    UnknownNode(u64),
    #[error("node {0} is not running")]
    NotRunning(u64),
    #[error("call to node {node} failed: {reason}")]
    Call { node: u64, reason: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { after: Duration, what: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Where nodes run.
#[derive(Debug, Clone)]
pub enum Mode {
    InProcess,
    /// `spool serve` children of this binary.
    Processes {
        binary: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub mode: Mode,
    pub flush: FlushSetting,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub retention_check_ms: u64,
    /// Node `i` (from 1) is in rack `racks[(i - 1) % len]`; empty for no racks.
    pub racks: Vec<String>,
}

impl ClusterOptions {
    pub fn in_process(nodes: usize) -> Self {
        Self {
            nodes,
            mode: Mode::InProcess,
            flush: FlushSetting::Always,
            heartbeat_ms: 100,
            election_min_ms: 500,
            election_max_ms: 1000,
            retention_check_ms: 200,
            racks: Vec::new(),
        }
    }

    pub fn processes(nodes: usize, binary: impl Into<PathBuf>) -> Self {
        Self {
            mode: Mode::Processes {
                binary: binary.into(),
            },
            ..Self::in_process(nodes)
        }
    }
}

#[derive(Debug)]
struct Slot {
    spec: NodeSpec,
    running: Option<Running>,
}

/// A cluster of nodes for one test; every node is killed when it is dropped.
#[derive(Debug)]
pub struct TestCluster {
    root: tempfile::TempDir,
    options: ClusterOptions,
    slots: BTreeMap<u64, Slot>,
}

/// A port nobody listens on now, for a node to bind later. It is taken below the
/// kernel's ephemeral range: a port from that range (what binding port 0 gives) can be
/// handed to any outgoing connection before the node binds it, and the node would then
/// fail to start. Ports are taken in turn from a random start, checked free as they are.
pub fn reserve_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    const LOWEST: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOWEST);
    if span >= 1000 {
        if NEXT.load(Ordering::Relaxed) == u32::MAX {
            // A different start in each process, so that test binaries running at once
            // rarely walk the same ports.
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
                ^ std::process::id().wrapping_mul(2_654_435_761);
            let _ =
                NEXT.compare_exchange(u32::MAX, seed % span, Ordering::Relaxed, Ordering::Relaxed);
        }
        for _ in 0..span {
            let port = LOWEST + NEXT.fetch_add(1, Ordering::Relaxed) % span;
            if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return Ok(port as u16);
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl TestCluster {
    /// Starts `options.nodes` nodes with ids 1..=n.
    pub async fn start(options: ClusterOptions) -> Result<Self, TestkitError> {
        let root = tempfile::tempdir()?;
        let mut slots = BTreeMap::new();
        let address =
            || -> std::io::Result<String> { Ok(format!("127.0.0.1:{}", reserve_port()?)) };
        let ports: Vec<(String, String, String)> = (0..options.nodes)
            .map(|_| Ok((address()?, address()?, address()?)))
            .collect::<std::io::Result<_>>()?;
        // The first three nodes are the controller's voters, as in a real deployment.
        let controller_voters = ports
            .iter()
            .take(3)
            .enumerate()
            .map(|(i, (_, _, cluster))| format!("{}@{cluster}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        for (id, (grpc, http, cluster)) in (1..=options.nodes as u64).zip(ports) {
            let spec = NodeSpec {
                id,
                grpc,
                http,
                cluster,
                controller_voters: controller_voters.clone(),
                data_dir: root.path().join(format!("node-{id}")),
                flush: options.flush,
                heartbeat_ms: options.heartbeat_ms,
                election_min_ms: options.election_min_ms,
                election_max_ms: options.election_max_ms,
                retention_check_ms: options.retention_check_ms,
                rack: (!options.racks.is_empty())
                    .then(|| options.racks[(id as usize - 1) % options.racks.len()].clone()),
            };
            slots.insert(
                id,
                Slot {
                    spec,
                    running: None,
                },
            );
        }
        let mut cluster = Self {
            root,
            options,
            slots,
        };
        // Started together: the controller needs a majority of its voters to elect.
        let starts: Vec<_> = cluster
            .node_ids()
            .into_iter()
            .map(|id| cluster.start_task(id))
            .collect::<Result<_, _>>()?;
        for (id, start) in starts {
            let running = start
                .await
                .map_err(|e| TestkitError::Start(e.to_string()))??;
            if let Some(slot) = cluster.slots.get_mut(&id) {
                slot.running = Some(running);
            }
        }
        cluster.wait_registered(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    pub fn node_ids(&self) -> Vec<u64> {
        self.slots.keys().copied().collect()
    }

    pub fn running(&self) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|(_, s)| s.running.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn spec(&self, node: u64) -> Result<&NodeSpec, TestkitError> {
        self.slots
            .get(&node)
            .map(|s| &s.spec)
            .ok_or(TestkitError::UnknownNode(node))
    }

    pub fn address(&self, node: u64) -> Result<String, TestkitError> {
        Ok(self.spec(node)?.grpc.clone())
    }

    /// Every node's address, for a client's bootstrap list.
    pub fn addresses(&self) -> Vec<String> {
        self.slots.values().map(|s| s.spec.grpc.clone()).collect()
    }

    /// The OS process id of a node running as a process.
    pub fn pid(&self, node: u64) -> Option<u32> {
        match self.slots.get(&node)?.running.as_ref()? {
            Running::Process(child) => Some(child.id()),
            Running::InProcess { .. } => None,
        }
    }

    pub fn data_dir(&self, node: u64) -> Result<PathBuf, TestkitError> {
        Ok(self.spec(node)?.data_dir.clone())
    }

    #[allow(clippy::type_complexity)]
    fn start_task(
        &self,
        id: u64,
    ) -> Result<(u64, tokio::task::JoinHandle<Result<Running, TestkitError>>), TestkitError> {
        let config_path = self.root.path().join(format!("node-{id}.toml"));
        let mode = self.options.mode.clone();
        let spec = self.spec(id)?.clone();
        let task = tokio::task::spawn_blocking(move || match mode {
            Mode::InProcess => Running::start_in_process(&spec),
            Mode::Processes { binary } => Running::start_process(&spec, &binary, &config_path),
        });
        Ok((id, task))
    }

    async fn start_node(&mut self, id: u64) -> Result<(), TestkitError> {
        if self.slots.get(&id).is_some_and(|s| s.running.is_some()) {
            return Ok(());
        }
        let (_, task) = self.start_task(id)?;
        let running = task
            .await
            .map_err(|e| TestkitError::Start(e.to_string()))??;
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.running = Some(running);
        }
        Ok(())
    }

    /// Waits until every running node is registered, live, with the controller.
    pub async fn wait_registered(&self, deadline: Duration) -> Result<(), TestkitError> {
        let running = self.running();
        wait_for(deadline, "every running node registered", || {
            let running = running.clone();
            async move {
                let client = self.client().await.ok()?;
                let cluster = client.describe_cluster().await.ok()?;
                running
                    .iter()
                    .all(|id| cluster.brokers.iter().any(|b| b.id == *id && !b.fenced))
                    .then_some(())
            }
        })
        .await
    }

    /// Kills a node as kill -9 would.
    pub async fn kill(&mut self, node: u64) -> Result<(), TestkitError> {
        self.halt(node, Running::kill).await
    }

    /// Stops a node cleanly.
    pub async fn stop(&mut self, node: u64) -> Result<(), TestkitError> {
        self.halt(node, |running| {
            let _ = running.stop();
        })
        .await
    }

    /// Stops a node in process cleanly; answers how the stop went (`None` for a process,
    /// which does not say).
    pub async fn stop_reporting(
        &mut self,
        node: u64,
    ) -> Result<Option<spool_server::ShutdownReport>, TestkitError> {
        let slot = self
            .slots
            .get_mut(&node)
            .ok_or(TestkitError::UnknownNode(node))?;
        let Some(running) = slot.running.take() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || running.stop())
            .await
            .map_err(|e| TestkitError::Start(e.to_string()))
    }

    async fn halt(&mut self, node: u64, how: fn(Running)) -> Result<(), TestkitError> {
        let slot = self
            .slots
            .get_mut(&node)
            .ok_or(TestkitError::UnknownNode(node))?;
        if let Some(running) = slot.running.take() {
            tokio::task::spawn_blocking(move || how(running))
                .await
                .map_err(|e| TestkitError::Start(e.to_string()))?;
        }
        Ok(())
    }

    /// Starts a stopped or killed node again, on the same address and data.
    pub async fn restart(&mut self, node: u64) -> Result<(), TestkitError> {
        self.start_node(node).await
    }

    /// A client that may reach any node.
    pub async fn client(&self) -> Result<Client, TestkitError> {
        let addresses: Vec<String> = self
            .running()
            .iter()
            .filter_map(|id| self.address(*id).ok())
            .collect();
        Client::connect(&addresses, Duration::from_secs(10))
            .await
            .map_err(|e| TestkitError::Call {
                node: 0,
                reason: e.to_string(),
            })
    }

    /// A client bound to one node.
    pub async fn node_client(&self, node: u64) -> Result<Client, TestkitError> {
        Client::connect(&[self.address(node)?], Duration::from_secs(10))
            .await
            .map_err(|e| TestkitError::Call {
                node,
                reason: e.to_string(),
            })
    }

    /// A client of `node`'s cluster listener (what nodes ask each other), to play a
    /// node's part in a test.
    pub async fn admin(
        &self,
        node: u64,
    ) -> Result<ReplicaAdminClient<tonic::transport::Channel>, TestkitError> {
        // ReplicaAdmin is served on the cluster listener only.
        ReplicaAdminClient::connect(format!("http://{}", self.spec(node)?.cluster))
            .await
            .map_err(|e| TestkitError::Call {
                node,
                reason: e.to_string(),
            })
    }

    async fn admin_call<F, Fut>(&self, node: u64, call: F) -> Result<(), TestkitError>
    where
        F: FnOnce(ReplicaAdminClient<tonic::transport::Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<v1::ReplicaAdminResponse>, tonic::Status>>,
    {
        let client = self.admin(node).await?;
        let response = call(client).await.map_err(|s| TestkitError::Call {
            node,
            reason: s.message().to_string(),
        })?;
        match response.into_inner().error {
            None => Ok(()),
            Some(error) => Err(TestkitError::Call {
                node,
                reason: error.message,
            }),
        }
    }

    fn call_error(error: spool_client::ClientError) -> TestkitError {
        TestkitError::Call {
            node: 0,
            reason: error.to_string(),
        }
    }

    /// Creates a topic whose partition `i` lives on `replication_factor` consecutive
    /// nodes starting at node `i % n + 1`.
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: usize,
    ) -> Result<Vec<Vec<u64>>, TestkitError> {
        self.create_topic_with(name, partitions, replication_factor, BTreeMap::new())
            .await
    }

    pub async fn create_topic_with(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: usize,
        configs: BTreeMap<String, String>,
    ) -> Result<Vec<Vec<u64>>, TestkitError> {
        let ids = self.node_ids();
        self.create_topic_on(name, partitions, replication_factor, configs, &ids)
            .await
    }

    /// As `create_topic_with`, placing replicas on `nodes` only. The controller is told
    /// the exact assignment.
    pub async fn create_topic_on(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: usize,
        configs: BTreeMap<String, String>,
        nodes: &[u64],
    ) -> Result<Vec<Vec<u64>>, TestkitError> {
        let replicas: Vec<Vec<u64>> = (0..partitions as usize)
            .map(|p| {
                (0..replication_factor)
                    .map(|k| nodes[(p + k) % nodes.len()])
                    .collect()
            })
            .collect();
        self.client()
            .await?
            .create_topic(spool_client::NewTopic {
                name: name.to_string(),
                partitions,
                replication_factor: replication_factor as u32,
                configs,
                assignments: replicas.clone(),
            })
            .await
            .map_err(Self::call_error)?;
        Ok(replicas)
    }

    /// Asks the controller to move a partition to `replicas` (the preferred leader
    /// first) and waits until the move is done.
    pub async fn reassign(
        &self,
        topic: &str,
        partition: u32,
        replicas: &[u64],
        deadline: Duration,
    ) -> Result<(), TestkitError> {
        let client = self.client().await?;
        client
            .reassign_partition(topic, partition, replicas.to_vec())
            .await
            .map_err(Self::call_error)?;
        wait_for(deadline, "the partition to move", || async {
            let cluster = client.describe_cluster().await.ok()?;
            let described = client.describe_topic(topic).await.ok()?;
            let p = described.partitions.get(partition as usize)?;
            let mut have = p.replicas.clone();
            let mut want = replicas.to_vec();
            have.sort_unstable();
            want.sort_unstable();
            (cluster.moving_partitions == 0 && have == want).then_some(())
        })
        .await
    }

    /// Deletes a topic: every node drops its replicas.
    pub async fn drop_topic(&self, topic: &str) -> Result<(), TestkitError> {
        self.client()
            .await?
            .delete_topic(topic)
            .await
            .map_err(Self::call_error)
    }

    /// Cuts the Raft links between two nodes, both ways.
    pub async fn cut(&self, a: u64, b: u64) -> Result<(), TestkitError> {
        for (from, to) in [(a, b), (b, a)] {
            if self.running().contains(&from) {
                let request = v1::SetLinkFaultsRequest {
                    cut: vec![to],
                    heal_all: false,
                };
                self.admin_call(
                    from,
                    |mut c| async move { c.set_link_faults(request).await },
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Cuts every link of `node`.
    pub async fn isolate(&self, node: u64) -> Result<(), TestkitError> {
        for other in self.node_ids() {
            if other != node {
                self.cut(node, other).await?;
            }
        }
        Ok(())
    }

    /// Heals every link of every running node.
    pub async fn heal_all(&self) -> Result<(), TestkitError> {
        for node in self.running() {
            let request = v1::SetLinkFaultsRequest {
                cut: Vec::new(),
                heal_all: true,
            };
            self.admin_call(
                node,
                |mut c| async move { c.set_link_faults(request).await },
            )
            .await?;
        }
        Ok(())
    }

    /// The leader `node` reports for a partition (`None` if it knows none).
    pub async fn leader_seen_by(
        &self,
        node: u64,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, TestkitError> {
        let client = self.node_client(node).await?;
        let metadata =
            client
                .metadata(&[topic.to_string()])
                .await
                .map_err(|e| TestkitError::Call {
                    node,
                    reason: e.to_string(),
                })?;
        Ok(metadata
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .filter(|leader| *leader != 0))
    }

    /// Waits for a running node that reports itself as the partition's leader.
    pub async fn leader(
        &self,
        topic: &str,
        partition: u32,
        within: Duration,
    ) -> Result<u64, TestkitError> {
        wait_for(within, "a partition leader", || async {
            for node in self.running() {
                if let Ok(Some(leader)) = self.leader_seen_by(node, topic, partition).await
                    && leader == node
                {
                    return Some(node);
                }
            }
            None
        })
        .await
    }

    /// A partition read to its end through its leader, as a reader at `isolation` sees
    /// it (read_committed: up to the last stable offset, aborted records left out).
    pub async fn read_to_end(
        &self,
        topic: &str,
        partition: u32,
        isolation: spool_client::IsolationLevel,
        within: Duration,
    ) -> Result<PartitionRead, TestkitError> {
        reads::read_to_end(self, topic, partition, isolation, within).await
    }

    /// Every committed batch `node` holds of a partition, as stored.
    pub async fn committed_batches(
        &self,
        node: u64,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<Bytes>, TestkitError> {
        replicas::committed_batches(self, node, topic, partition).await
    }

    /// Waits until every running replica of a partition holds the same committed batches
    /// as `reference`'s, and returns them.
    pub async fn replicas_agree(
        &self,
        replicas: &[u64],
        topic: &str,
        partition: u32,
        within: Duration,
    ) -> Result<Vec<Bytes>, TestkitError> {
        replicas::replicas_agree(self, replicas, topic, partition, within).await
    }
}

impl Replicas for TestCluster {
    fn running(&self) -> Vec<u64> {
        TestCluster::running(self)
    }

    async fn node_client(&self, node: u64) -> Result<Client, TestkitError> {
        TestCluster::node_client(self, node).await
    }
}

/// Polls `check` until it yields a value or `within` passes.
pub async fn wait_for<T, F, Fut>(
    within: Duration,
    what: &str,
    mut check: F,
) -> Result<T, TestkitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TestkitError::Timeout {
                after: within,
                what: what.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
