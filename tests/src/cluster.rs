//! A three-node cluster of containers from `deploy/docker-compose.yml`, under a compose
//! project of its own (so tests never share containers, networks or volumes), removed
//! with its volumes when dropped.
//!
//! Host clients reach each node through its host listener, published on a port reserved
//! for this cluster; the nodes advertise those ports on that listener, so the SDK's
//! metadata leads the test to addresses it can reach.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use spool_client::Client;
use spool_testkit::{Replicas, TestkitError, reserve_port, wait_for};

use crate::{Docker, SystemError};

/// The nodes of the compose file.
pub const NODES: [u64; 3] = [1, 2, 3];
/// How long a cluster may take to serve after its containers start.
const SERVING_WITHIN: Duration = Duration::from_secs(90);
const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// Laid over the deploy file for every test: a disk floor that suits a shared test host.
const TEST_HOST: &str = "test-host.yml";

#[derive(Debug)]
pub struct ComposeCluster {
    docker: Docker,
    project: String,
    env: Vec<(String, String)>,
    /// Each node's host listener, as published on the host.
    ports: BTreeMap<u64, u16>,
    /// Nodes killed, stopped, paused or cut off by the test.
    down: Mutex<BTreeSet<u64>>,
    removed: bool,
    /// One cluster at a time in a test process: three nodes and a load already take
    /// what a small machine has.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl ComposeCluster {
    /// Builds the image if needed, starts the three nodes, and waits until they serve.
    pub async fn up(docker: &Docker) -> Result<Self, SystemError> {
        Self::up_with(docker, &[]).await
    }

    /// As `up`, with compose files of `tests/compose/` laid over the deploy file and
    /// `test-host.yml` (a node's volume made small, say).
    pub async fn up_with(docker: &Docker, overrides: &[&str]) -> Result<Self, SystemError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let turn = TURN.lock().await;
        docker.remove_abandoned().await;
        let image = docker.image().await?;
        let project = format!(
            "{}{}x{}",
            crate::docker::PROJECT_PREFIX,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut env = vec![("SPOOL_IMAGE".to_string(), image)];
        let dir = crate::docker::workspace_root().join("tests/compose");
        let files: Vec<String> = std::iter::once(&TEST_HOST)
            .chain(overrides)
            .map(|file| dir.join(file).to_string_lossy().into_owned())
            .collect();
        env.push((crate::docker::COMPOSE_FILE.to_string(), files.join(":")));
        let mut ports = BTreeMap::new();
        for node in NODES {
            let (port, http) = (reserve()?, reserve()?);
            env.push((format!("SPOOL_PORT_{node}"), port.to_string()));
            env.push((format!("SPOOL_HTTP_PORT_{node}"), http.to_string()));
            ports.insert(node, port);
        }
        let cluster = Self {
            docker: docker.clone(),
            project,
            env,
            ports,
            down: Mutex::new(BTreeSet::new()),
            removed: false,
            _turn: turn,
        };
        let services: Vec<String> = NODES.iter().map(|n| service(*n)).collect();
        let mut args = vec!["up", "-d"];
        args.extend(services.iter().map(String::as_str));
        cluster.compose(&args).await?;
        cluster.wait_serving(SERVING_WITHIN).await?;
        Ok(cluster)
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// Host addresses of every node.
    pub fn bootstrap(&self) -> Vec<String> {
        self.ports
            .values()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// A client bootstrapped from every node.
    pub async fn client(&self) -> Result<Client, SystemError> {
        Ok(Client::connect(&self.bootstrap(), CONNECT_WITHIN).await?)
    }

    /// Waits until every node that is up answers on its own port and the controller has
    /// all three registered (a node restarted within its session is never fenced, so the
    /// registrations alone would not show that it serves again).
    pub async fn wait_serving(&self, within: Duration) -> Result<(), SystemError> {
        wait_for(within, "every node serving, three registered", || async {
            for node in self.running() {
                let client = self.node_client(node).await.ok()?;
                let cluster = client.describe_cluster().await.ok()?;
                let live = cluster.brokers.iter().filter(|b| !b.fenced).count();
                if live != NODES.len() || cluster.controller_leader.is_none() {
                    return None;
                }
            }
            Some(())
        })
        .await?;
        Ok(())
    }

    /// The leader of a partition as the metadata names it, among nodes that are up.
    pub async fn leader(
        &self,
        topic: &str,
        partition: u32,
        within: Duration,
    ) -> Result<u64, SystemError> {
        let topics = [topic.to_string()];
        Ok(wait_for(within, "a partition leader", || async {
            for node in self.running() {
                let Ok(client) = self.node_client(node).await else {
                    continue;
                };
                let Ok(metadata) = client.metadata(&topics).await else {
                    continue;
                };
                let leader = metadata
                    .topics
                    .first()?
                    .partitions
                    .iter()
                    .find(|p| p.partition == partition)?
                    .leader;
                if self.running().contains(&leader) {
                    return Some(leader);
                }
            }
            None
        })
        .await?)
    }

    /// The controller's leader, among nodes that are up.
    pub async fn controller_leader(&self, within: Duration) -> Result<u64, SystemError> {
        Ok(wait_for(within, "a controller leader", || async {
            for node in self.running() {
                let Ok(client) = self.node_client(node).await else {
                    continue;
                };
                if let Ok(cluster) = client.describe_cluster().await
                    && let Some(leader) = cluster.controller_leader
                    && self.running().contains(&leader)
                {
                    return Some(leader);
                }
            }
            None
        })
        .await?)
    }

    /// SIGKILL: the container dies at once, its volume stays.
    pub async fn kill(&self, node: u64) -> Result<(), SystemError> {
        self.down.lock().insert(node);
        self.compose(&["kill", "-s", "SIGKILL", &service(node)])
            .await
            .map(drop)
    }

    /// Starts a killed or stopped node again (on its volume).
    pub async fn start(&self, node: u64) -> Result<(), SystemError> {
        self.compose(&["start", &service(node)]).await?;
        self.down.lock().remove(&node);
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, node: u64, grace: Duration) -> Result<(), SystemError> {
        self.down.lock().insert(node);
        let grace = grace.as_secs().to_string();
        self.compose(&["stop", "-t", &grace, &service(node)])
            .await
            .map(drop)
    }

    /// Freezes every process of the node (SIGSTOP through the cgroup freezer).
    pub async fn pause(&self, node: u64) -> Result<(), SystemError> {
        self.down.lock().insert(node);
        self.compose(&["pause", &service(node)]).await.map(drop)
    }

    pub async fn unpause(&self, node: u64) -> Result<(), SystemError> {
        self.compose(&["unpause", &service(node)]).await?;
        self.down.lock().remove(&node);
        Ok(())
    }

    /// Cuts the node off the cluster's network: it can reach no other node, and the
    /// test (on the host) can no longer reach it either.
    pub async fn disconnect(&self, node: u64) -> Result<(), SystemError> {
        let container = self.container(node).await?;
        self.down.lock().insert(node);
        self.docker
            .docker(&["network", "disconnect", &self.network(), &container])
            .await
            .map(drop)
    }

    /// Puts the node back on the network under its service name.
    pub async fn connect(&self, node: u64) -> Result<(), SystemError> {
        let container = self.container(node).await?;
        let alias = service(node);
        self.docker
            .docker(&[
                "network",
                "connect",
                "--alias",
                &alias,
                &self.network(),
                &container,
            ])
            .await?;
        self.down.lock().remove(&node);
        Ok(())
    }

    /// Runs `spool ARGS` inside the node's container (which reaches the node on its own
    /// loopback even when it is cut off the network), `input` on its stdin.
    pub async fn exec_spool(
        &self,
        node: u64,
        args: &[&str],
        input: &[u8],
    ) -> Result<std::process::Output, SystemError> {
        let container = self.container(node).await?;
        let mut all = vec!["exec", "-i", container.as_str(), "/spool"];
        all.extend(args);
        self.docker.docker_with_input(&all, input).await
    }

    /// `compose down` (volumes kept) then `up`: new containers on the same volumes.
    pub async fn down_and_up(&self) -> Result<(), SystemError> {
        self.compose(&["down", "-t", "30"]).await?;
        let services: Vec<String> = NODES.iter().map(|n| service(*n)).collect();
        let mut args = vec!["up", "-d"];
        args.extend(services.iter().map(String::as_str));
        self.compose(&args).await?;
        self.down.lock().clear();
        self.wait_serving(SERVING_WITHIN).await
    }

    /// Runs compose for this project.
    pub async fn compose(&self, args: &[&str]) -> Result<String, SystemError> {
        self.docker.compose(&self.project, &self.env, args).await
    }

    fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    /// The id of the node's container.
    pub async fn container(&self, node: u64) -> Result<String, SystemError> {
        let id = self.compose(&["ps", "-q", &service(node)]).await?;
        let id = id.trim();
        if id.is_empty() {
            return Err(SystemError::NoSuchNode(node));
        }
        Ok(id.to_string())
    }
}

impl Replicas for ComposeCluster {
    fn running(&self) -> Vec<u64> {
        let down = self.down.lock();
        NODES
            .iter()
            .copied()
            .filter(|n| !down.contains(n))
            .collect()
    }

    async fn node_client(&self, node: u64) -> Result<Client, TestkitError> {
        let port = self
            .ports
            .get(&node)
            .ok_or(TestkitError::UnknownNode(node))?;
        Client::connect(&[format!("127.0.0.1:{port}")], CONNECT_WITHIN)
            .await
            .map_err(|e| TestkitError::Call {
                node,
                reason: e.to_string(),
            })
    }
}

impl Drop for ComposeCluster {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        // On success and on failure alike: containers, network and volumes go.
        if let Err(error) = self.docker.compose_blocking(
            &self.project,
            &self.env,
            &["down", "-v", "-t", "1", "--remove-orphans"],
        ) {
            eprintln!("could not remove compose project {}: {error}", self.project);
        }
    }
}

fn service(node: u64) -> String {
    format!("spool-{node}")
}

fn reserve() -> Result<u16, SystemError> {
    reserve_port().map_err(|e| SystemError::Command {
        command: "reserve a port".into(),
        reason: e.to_string(),
    })
}
