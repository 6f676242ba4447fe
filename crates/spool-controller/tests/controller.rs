//! The controller group on three nodes, each on its own runtime so that a kill drops
//! everything the node runs at once: registration, placement, forwarding, controller
//! failover with the metadata intact, fencing, a second node claiming a live id, and
//! checkpoints that bound the metadata log.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use spool_controller::{
    AgentStatus, ClusterState, Command, Controller, ControllerError, ControllerOptions,
    ControllerService, LeaderReport, LeaderSource, NewTopic, TopicDefaults,
};
use spool_log::FlushPolicy;
use spool_raft::{RaftNode, RaftNodeOptions, RaftTiming};
use tokio::sync::watch;

/// Small, so that every test here writes checkpoints and compacts the metadata log.
const CHECKPOINT_BYTES: u64 = 8 * 1024;
/// Replicas a broker may hold in these tests: enough for every topic they create.
const MAX_REPLICAS_PER_BROKER: u32 = 200;

/// A broker that leads no partition: it reports nothing.
struct NoPartitions;

impl LeaderSource for NoPartitions {
    fn leader_reports(&self, _state: &ClusterState) -> Vec<LeaderReport> {
        Vec::new()
    }
}

struct Node {
    id: u64,
    controller: Arc<Controller>,
    agent: watch::Receiver<AgentStatus>,
    runtime: Option<tokio::runtime::Runtime>,
    _source: Arc<dyn LeaderSource>,
    /// The listening socket, kept so that a restart takes the same port at once.
    listener: std::net::TcpListener,
}

impl Node {
    fn start(
        id: u64,
        incarnation: u64,
        dir: &std::path::Path,
        listener: std::net::TcpListener,
        voters: &BTreeMap<u64, String>,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let address = listener.local_addr().expect("addr").to_string();
        let kept = listener.try_clone().expect("clone listener");
        let source: Arc<dyn LeaderSource> = Arc::new(NoPartitions);
        let weak: Weak<dyn LeaderSource> = Arc::downgrade(&source);
        let voters = voters.clone();
        let dir = dir.to_path_buf();
        let (controller, agent) = runtime.block_on(async move {
            let raft = RaftNode::open(RaftNodeOptions {
                min_free_bytes: None,
                producer_expiry: spool_raft::DEFAULT_PRODUCER_EXPIRY,
                node_id: id,
                state_dir: dir.clone(),
                timing: RaftTiming {
                    heartbeat_ms: 50,
                    election_min_ms: 300,
                    election_max_ms: 500,
                    quiesce_after_ms: Some(1000),
                },
            })
            .expect("raft node");
            let controller = Controller::start(
                &raft,
                ControllerOptions {
                    broker_id: id,
                    incarnation,
                    client_address: address.clone(),
                    external_address: None,
                    address,
                    rack: None,
                    voters,
                    dir: dir.join("__controller"),
                    flush: FlushPolicy::Always,
                    session_timeout: Duration::from_millis(1500),
                    heartbeat_interval: Duration::from_millis(100),
                    topic_defaults: TopicDefaults {
                        partitions: 1,
                        replication_factor: 0,
                        max_partitions: 1000,
                        max_replicas_per_broker: MAX_REPLICAS_PER_BROKER,
                    },
                    checkpoint_bytes: CHECKPOINT_BYTES,
                    validate_configs: Arc::new(|configs| {
                        match configs.keys().find(|k| k.as_str() != "retention.ms") {
                            Some(k) => Err(format!("unknown config {k}")),
                            None => Ok(()),
                        }
                    }),
                },
            )
            .await
            .expect("controller");
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let service = ControllerService::new(Arc::clone(&controller));
            let transport = raft.service();
            tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(transport)
                    .add_service(service)
                    .serve_with_incoming(incoming)
                    .await;
            });
            let agent = controller.start_agent(weak);
            (controller, agent)
        });
        Self {
            id,
            controller,
            agent,
            runtime: Some(runtime),
            _source: source,
            listener: kept,
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().expect("running").block_on(f)
    }

    /// Drops every task of the node at once, as a crash would. Answers with its
    /// listening socket, for a restart on the same address.
    fn kill(mut self) -> std::net::TcpListener {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        self.listener
    }
}

/// Waits, on each node's own metadata watch, until its state satisfies `check`.
fn wait_for_state<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    what: &str,
    deadline: Duration,
    check: impl Fn(&ClusterState) -> bool,
) {
    let until = tokio::time::Instant::now() + deadline;
    for node in nodes {
        let mut state = node.controller.state();
        let met = node.block_on(async {
            tokio::time::timeout_at(until, state.wait_for(|s| check(s)))
                .await
                .map(|r| r.is_ok())
        });
        assert_eq!(
            met,
            Ok(true),
            "timed out waiting for {what} on node {}",
            node.id
        );
    }
}

fn listeners(n: usize) -> (Vec<std::net::TcpListener>, BTreeMap<u64, String>) {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let voters = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("addr").to_string()))
        .collect();
    (listeners, voters)
}

fn registered(state: &ClusterState, brokers: usize) -> bool {
    !state.cluster_id.is_empty()
        && state.brokers.len() == brokers
        && state.brokers.values().all(|b| !b.fenced)
}

/// Starts one voter per listener (ids from 1, in the voters' order) and waits until all
/// are registered.
fn start_voters(
    dir: &std::path::Path,
    listeners: Vec<std::net::TcpListener>,
    voters: &BTreeMap<u64, String>,
) -> Vec<Node> {
    let count = listeners.len();
    let nodes: Vec<Node> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let id = i as u64 + 1;
            Node::start(id, 100 + id, &dir.join(id.to_string()), l, voters)
        })
        .collect();
    wait_for_state(
        &nodes,
        "every voter registered",
        Duration::from_secs(20),
        |s| registered(s, count),
    );
    nodes
}

#[test]
fn three_controllers_place_topics_survive_a_leader_kill_and_fence_the_dead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listeners, voters) = listeners(3);
    let mut nodes = start_voters(dir.path(), listeners, &voters);

    // Created through a follower: forwarded to the leader, then visible locally.
    let follower = nodes
        .iter()
        .find(|n| !n.controller.is_leader())
        .expect("a follower");
    follower
        .block_on(follower.controller.execute(Command::CreateTopic(NewTopic {
            name: "orders".into(),
            partitions: 6,
            replication_factor: 3,
            ..NewTopic::default()
        })))
        .expect("create");
    let state = follower.controller.current();
    let topic = &state.topics["orders"];
    assert_eq!(topic.partitions.len(), 6);
    let mut preferred = BTreeMap::new();
    for p in &topic.partitions {
        assert_eq!(p.replicas.len(), 3);
        *preferred
            .entry(p.preferred_leader().expect("leader"))
            .or_insert(0) += 1;
    }
    assert_eq!(
        preferred.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2]
    );

    // Bad requests are refused whole.
    let err = follower
        .block_on(follower.controller.execute(Command::CreateTopic(NewTopic {
            name: "orders".into(),
            ..NewTopic::default()
        })))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ControllerError::Remote { .. } | ControllerError::TopicExists { .. }
        ),
        "{err}"
    );
    let err = follower
        .block_on(follower.controller.execute(Command::CreateTopic(NewTopic {
            name: "wide".into(),
            replication_factor: 4,
            ..NewTopic::default()
        })))
        .unwrap_err();
    assert_eq!(
        err.code(),
        spool_types::ErrorCode::InvalidReplicationFactor,
        "{err}"
    );
    // More replicas than brokers may hold: refused, nothing created.
    let err = follower
        .block_on(follower.controller.execute(Command::CreateTopic(NewTopic {
            name: "huge".into(),
            partitions: MAX_REPLICAS_PER_BROKER + 1,
            replication_factor: 3,
            ..NewTopic::default()
        })))
        .unwrap_err();
    assert_eq!(
        err.code(),
        spool_types::ErrorCode::InvalidPartitions,
        "{err}"
    );
    assert!(!follower.controller.current().topics.contains_key("huge"));

    // Kill the controller leader: the others elect a new one that serves the metadata.
    let leader_at = nodes
        .iter()
        .position(|n| n.controller.is_leader())
        .expect("a leader");
    let dead = nodes.remove(leader_at);
    let dead_id = dead.id;
    let killed = Instant::now();
    dead.kill();
    let survivor = &nodes[0];
    survivor
        .block_on(survivor.controller.execute(Command::CreateTopic(NewTopic {
            name: "payments".into(),
            partitions: 2,
            replication_factor: 2,
            ..NewTopic::default()
        })))
        .expect("a new controller takes commands");
    let failover = killed.elapsed();
    assert!(
        failover < Duration::from_secs(3),
        "controller failover took {failover:?}"
    );
    wait_for_state(
        &nodes,
        "the new topic on both survivors",
        Duration::from_secs(5),
        |s| s.topics.contains_key("payments"),
    );
    for node in &nodes {
        assert_eq!(
            node.controller.current().topics["orders"].partitions.len(),
            6
        );
    }

    // The dead broker's lease lapses and it is fenced.
    wait_for_state(
        &nodes,
        "the dead broker fenced",
        Duration::from_secs(10),
        |s| s.brokers.get(&dead_id).is_some_and(|b| b.fenced),
    );
    for node in nodes {
        node.kill();
    }
}

#[test]
fn a_second_node_claiming_a_live_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut listeners, voters) = listeners(1);
    let controller = Node::start(1, 11, &dir.path().join("a"), listeners.remove(0), &voters);
    let broker_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let broker = Node::start(2, 21, &dir.path().join("b"), broker_listener, &voters);
    wait_for_state(
        [&controller, &broker],
        "two registered brokers",
        Duration::from_secs(20),
        |s| registered(s, 2),
    );
    // The broker, not a voter, follows the metadata as a learner.
    assert!(broker.controller.current().brokers.contains_key(&1));

    // Another node with id 2 and its own data directory (incarnation).
    let impostor_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut impostor = Node::start(2, 22, &dir.path().join("c"), impostor_listener, &voters);
    let runtime = impostor.runtime.take().expect("running");
    let agent = &mut impostor.agent;
    let status = runtime
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                agent.wait_for(|s| s.refused.is_some() || s.registered),
            )
            .await
            .map(|s| s.map(|s| s.clone()))
        })
        .expect("an answer")
        .expect("agent running");
    assert!(!status.registered, "{status:?}");
    assert!(
        status
            .refused
            .as_deref()
            .is_some_and(|r| r.contains("already registered")),
        "{status:?}"
    );
    assert_eq!(controller.controller.current().brokers[&2].incarnation, 21);

    // A voter id claimed from another address does not even start a controller.
    let err = runtime.block_on(async {
        let raft = RaftNode::open(RaftNodeOptions {
            min_free_bytes: None,
            producer_expiry: spool_raft::DEFAULT_PRODUCER_EXPIRY,
            node_id: 1,
            state_dir: dir.path().join("d"),
            timing: RaftTiming::default(),
        })
        .expect("raft node");
        let mut options = controller.controller.options().clone();
        options.address = "127.0.0.1:1".into();
        options.dir = dir.path().join("d/__controller");
        Controller::start(&raft, options).await.map(drop)
    });
    assert!(err.is_err_and(|e| e.to_string().contains("configured at")));
    runtime.shutdown_background();
    broker.kill();
    controller.kill();
}

#[test]
fn checkpoints_bound_the_metadata_log_and_rebuild_restarted_and_new_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listeners, voters) = listeners(3);
    let mut nodes = start_voters(dir.path(), listeners, &voters);
    const TOPICS: usize = 40;
    for i in 0..TOPICS {
        nodes[0]
            .block_on(nodes[0].controller.execute(Command::CreateTopic(NewTopic {
                name: format!("topic-{i:02}"),
                partitions: 3,
                replication_factor: 3,
                ..NewTopic::default()
            })))
            .expect("create");
    }
    let written = nodes[0].controller.current();
    assert_eq!(written.topics.len(), TOPICS);

    // Every node has applied a checkpoint and removed the log before it.
    for node in &nodes {
        let replica = Arc::clone(node.controller.replica());
        // The purge is a Raft metrics change: wait on those.
        let compacted = node.block_on(async {
            let mut changes = replica.changes();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while replica.reader().start_offset() == 0 {
                match tokio::time::timeout_at(deadline, changes.changed()).await {
                    Ok(true) => {}
                    _ => return false,
                }
            }
            true
        });
        assert!(
            compacted,
            "node {} never compacted its metadata log: {}..{}",
            node.id,
            replica.reader().start_offset(),
            replica.reader().next_offset()
        );
        let reader = replica.reader();
        assert!(
            reader.next_offset() - reader.start_offset() < written.offset,
            "node {}: log {}..{} not shorter than the history",
            node.id,
            reader.start_offset(),
            reader.next_offset()
        );
    }

    // A broker joining now gets the state through a snapshot and the log after it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let newcomer = Node::start(4, 104, &dir.path().join("4"), listener, &voters);
    wait_for_state(
        [&newcomer],
        "the newcomer's metadata rebuilt from a checkpoint",
        Duration::from_secs(20),
        |s| s.topics == written.topics && s.brokers.contains_key(&4),
    );
    assert!(newcomer.controller.replica().reader().start_offset() > 0);

    // A voter restarted on its compacted log rebuilds the same state.
    let restarted = nodes
        .iter()
        .position(|n| !n.controller.is_leader())
        .expect("a follower");
    let old = nodes.remove(restarted);
    let id = old.id;
    let listener = old.kill();
    let node = Node::start(
        id,
        100 + id,
        &dir.path().join(id.to_string()),
        listener,
        &voters,
    );
    assert!(node.controller.replica().reader().start_offset() > 0);
    wait_for_state(
        [&node],
        "the restarted voter's metadata",
        Duration::from_secs(20),
        |s| s.topics == written.topics,
    );
    newcomer.kill();
    node.kill();
    for node in nodes {
        node.kill();
    }
}

#[test]
fn a_wiped_voter_rebuilds_its_metadata_log_before_it_votes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listeners, voters) = listeners(3);
    let mut nodes = start_voters(dir.path(), listeners, &voters);
    for i in 0..10 {
        nodes[0]
            .block_on(nodes[0].controller.execute(Command::CreateTopic(NewTopic {
                name: format!("before-{i}"),
                partitions: 2,
                replication_factor: 3,
                ..NewTopic::default()
            })))
            .expect("create");
    }
    let written = nodes[0].controller.current();

    // A follower voter loses its whole data directory and comes back as a new life.
    let at = nodes
        .iter()
        .position(|n| !n.controller.is_leader())
        .expect("a follower");
    let old = nodes.remove(at);
    let id = old.id;
    let listener = old.kill();
    let node_dir = dir.path().join(id.to_string());
    std::fs::remove_dir_all(&node_dir).expect("wipe");
    let node = Node::start(id, 900 + id, &node_dir, listener, &voters);
    let marker = node_dir.join("__controller.joining");
    assert!(marker.exists(), "a wiped voter starts by joining");
    wait_for_state(
        [&node],
        "the wiped voter's metadata rebuilt",
        Duration::from_secs(20),
        |s| {
            written
                .topics
                .iter()
                .all(|(name, t)| s.topics.get(name) == Some(t))
        },
    );
    let mut voting = node.controller.voting();
    let joined = node.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), voting.wait_for(|v| *v))
            .await
            .is_ok_and(|r| r.is_ok())
    });
    assert!(joined, "the rebuilt voter never finished joining");
    assert!(!marker.exists(), "the joining marker outlives the join");

    // It votes again: with the leader killed, it and the other survivor elect a new one
    // that has every topic.
    let leader_at = nodes
        .iter()
        .position(|n| n.controller.is_leader())
        .expect("a leader");
    nodes.remove(leader_at).kill();
    node.block_on(node.controller.execute(Command::CreateTopic(NewTopic {
        name: "after".into(),
        partitions: 1,
        replication_factor: 2,
        ..NewTopic::default()
    })))
    .expect("a new controller elected with the rebuilt voter");
    let survivors = [&node, &nodes[0]];
    wait_for_state(
        survivors,
        "every topic after the failover",
        Duration::from_secs(10),
        |s| {
            s.topics.contains_key("after")
                && written
                    .topics
                    .keys()
                    .all(|name| s.topics.contains_key(name))
        },
    );
    node.kill();
    for node in nodes {
        node.kill();
    }
}
