//! One node of a test cluster: run in this process (its own thread and runtime, so that a
//! crash can drop every task of it at once) or as a `spool serve` child process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use spool_server::{FlushSetting, Node, ServerConfig};
use tokio::sync::oneshot;

use crate::TestkitError;

/// How a node is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Flush, close, release: a clean shutdown.
    Graceful,
    /// Drop everything at once, as kill -9 would (data in the page cache survives).
    Crash,
}

/// Where and how one node runs; kept across restarts.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: u64,
    pub grpc: String,
    pub http: String,
    /// The cluster listener (Raft, Controller, ReplicaAdmin).
    pub cluster: String,
    pub data_dir: PathBuf,
    pub flush: FlushSetting,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub retention_check_ms: u64,
    /// `id@host:port,...` of the controller's voters.
    pub controller_voters: String,
    pub rack: Option<String>,
}

/// The disk floor of test nodes: their data shares the host's disk with builds, which can
/// leave it under the default floor of 1 GiB, and the nodes would rightly refuse writes.
const TEST_MIN_FREE_BYTES: u64 = 64 << 20;

impl NodeSpec {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            node_id: self.id,
            data_dir: self.data_dir.clone(),
            listen: self.grpc.clone(),
            http_listen: self.http.clone(),
            advertised_address: Some(self.grpc.clone()),
            cluster_listen: self.cluster.clone(),
            cluster_advertised_address: Some(self.cluster.clone()),
            flush: self.flush,
            raft_heartbeat_ms: self.heartbeat_ms,
            raft_election_min_ms: self.election_min_ms,
            raft_election_max_ms: self.election_max_ms,
            fault_injection: true,
            shutdown_grace_secs: 10,
            retention_check_ms: self.retention_check_ms,
            controller_voters: self.controller_voters.clone(),
            broker_session_timeout_ms: 3000,
            broker_heartbeat_ms: 200,
            // Test clusters notice a dead group member within seconds.
            group_session_timeout_ms: 6000,
            group_heartbeat_interval_ms: 500,
            // Fewer coordinator partitions than a production cluster's: each is a Raft
            // group per replica, and test clusters share a small machine.
            offsets_topic_partitions: 4,
            transaction_state_partitions: 4,
            rack: self.rack.clone(),
            min_free_bytes: Some(TEST_MIN_FREE_BYTES),
            ..ServerConfig::default()
        }
    }

    fn toml(&self) -> String {
        let flush = match self.flush {
            FlushSetting::Always => "always",
            FlushSetting::Interval => "interval",
            FlushSetting::Os => "os",
        };
        format!(
            "node_id = {}\ndata_dir = {:?}\nlisten = {:?}\nhttp_listen = {:?}\n\
             cluster_listen = {:?}\ncluster_advertised_address = {:?}\n\
             advertised_address = {:?}\nflush = {flush:?}\nraft_heartbeat_ms = {}\n\
             raft_election_min_ms = {}\nraft_election_max_ms = {}\nfault_injection = true\n\
             shutdown_grace_secs = 10\nretention_check_ms = {}\ncontroller_voters = {:?}\n\
             broker_session_timeout_ms = 3000\nbroker_heartbeat_ms = 200\n\
             group_session_timeout_ms = 6000\ngroup_heartbeat_interval_ms = 500\n\
             min_free_bytes = {TEST_MIN_FREE_BYTES}\n{}",
            self.id,
            self.data_dir.display().to_string(),
            self.grpc,
            self.http,
            self.cluster,
            self.cluster,
            self.grpc,
            self.heartbeat_ms,
            self.election_min_ms,
            self.election_max_ms,
            self.retention_check_ms,
            self.controller_voters,
            self.rack
                .as_ref()
                .map_or(String::new(), |rack| format!("rack = {rack:?}\n")),
        )
    }
}

/// A running node.
#[derive(Debug)]
pub(crate) enum Running {
    InProcess {
        control: Option<oneshot::Sender<Stop>>,
        thread: Option<std::thread::JoinHandle<()>>,
        /// After a graceful stop: how it went.
        report: std::sync::mpsc::Receiver<spool_server::ShutdownReport>,
    },
    Process(Child),
}

impl Running {
    pub(crate) fn start_in_process(spec: &NodeSpec) -> Result<Self, TestkitError> {
        let config = spec.config();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (control, stop) = oneshot::channel::<Stop>();
        let (report_tx, report) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("spool-node-{}", spec.id))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Node::start(config).await {
                        Ok(handle) => {
                            let _ = ready_tx.send(Ok(()));
                            match stop.await {
                                Ok(Stop::Crash) => drop(handle),
                                Ok(Stop::Graceful) | Err(_) => {
                                    if let Ok(stopped) = handle.shutdown().await {
                                        let _ = report_tx.send(stopped);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                        }
                    }
                });
                // Every task of the node goes with its runtime.
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .map_err(|e| TestkitError::Start(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Running::InProcess {
                control: Some(control),
                thread: Some(thread),
                report,
            }),
            Ok(Err(reason)) => Err(TestkitError::Start(reason)),
            Err(_) => Err(TestkitError::Start("the node thread ended".into())),
        }
    }

    pub(crate) fn start_process(
        spec: &NodeSpec,
        binary: &Path,
        config_path: &Path,
    ) -> Result<Self, TestkitError> {
        std::fs::write(config_path, spec.toml()).map_err(|e| TestkitError::Start(e.to_string()))?;
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(config_path)
            .env(
                "SPOOL_LOG",
                std::env::var("SPOOL_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| TestkitError::Start(format!("{}: {e}", binary.display())))?;
        // The node serves once it has printed its first line.
        let mut line = String::new();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| TestkitError::Start("no stdout".into()))?;
        let mut reader = BufReader::new(stdout);
        let read = reader.read_line(&mut line);
        if !matches!(read, Ok(n) if n > 0) || !line.starts_with("spool serving") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TestkitError::Start(format!(
                "node {} did not start: {line:?}",
                spec.id
            )));
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while matches!(reader.read_line(&mut sink), Ok(n) if n > 0) {
                sink.clear();
            }
        });
        Ok(Running::Process(child))
    }

    /// Crashes the node: SIGKILL for a process, every task dropped for one in process.
    pub(crate) fn kill(mut self) {
        match &mut self {
            Running::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::InProcess {
                control, thread, ..
            } => stop_in_process(control.take(), thread.take(), Stop::Crash),
        }
    }

    /// Stops the node cleanly: SIGTERM for a process. For a node in process, answers how
    /// the stop went.
    pub(crate) fn stop(mut self) -> Option<spool_server::ShutdownReport> {
        match &mut self {
            Running::Process(child) => {
                let terminated = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                if !terminated {
                    let _ = child.kill();
                }
                let _ = child.wait();
                None
            }
            Running::InProcess {
                control,
                thread,
                report,
            } => {
                stop_in_process(control.take(), thread.take(), Stop::Graceful);
                report.try_recv().ok()
            }
        }
    }
}

fn stop_in_process(
    control: Option<oneshot::Sender<Stop>>,
    thread: Option<std::thread::JoinHandle<()>>,
    how: Stop,
) {
    if let Some(control) = control {
        let _ = control.send(how);
    }
    if let Some(thread) = thread {
        let _ = thread.join();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        match self {
            Running::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::InProcess {
                control, thread, ..
            } => stop_in_process(control.take(), thread.take(), Stop::Crash),
        }
    }
}
