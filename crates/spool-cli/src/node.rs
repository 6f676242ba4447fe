//! `spool serve` and `spool dev`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use spool_server::{FlushSetting, Node, ServerConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlushArg {
    Always,
    Interval,
    Os,
}

/// Settings a flag or a `SPOOL_*` variable may give; each overrides the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file; flags and SPOOL_* variables override it.
    #[arg(long, env = "SPOOL_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id.
    #[arg(long, env = "SPOOL_NODE_ID")]
    node_id: Option<u64>,
    /// Where partitions and metadata live.
    #[arg(long, env = "SPOOL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listener, host:port (port 0 picks a free one).
    #[arg(long, env = "SPOOL_LISTEN")]
    listen: Option<String>,
    /// HTTP listener for /metrics, /health and /ready, host:port.
    #[arg(long, env = "SPOOL_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// host:port clients should use to reach this node.
    #[arg(long, env = "SPOOL_ADVERTISED_ADDRESS")]
    advertised_address: Option<String>,
    /// A second client listener, host:port, for clients outside the nodes' own network
    /// (a host reaching containers through published ports).
    #[arg(long, env = "SPOOL_EXTERNAL_LISTEN")]
    external_listen: Option<String>,
    /// host:port clients of the external listener use to reach this node.
    #[arg(long, env = "SPOOL_EXTERNAL_ADVERTISED_ADDRESS")]
    external_advertised_address: Option<String>,
    /// gRPC listener for other nodes (Raft, the controller), host:port; clients never
    /// need it.
    #[arg(long, env = "SPOOL_CLUSTER_LISTEN")]
    cluster_listen: Option<String>,
    /// host:port other nodes should use to reach this node's cluster listener.
    #[arg(long, env = "SPOOL_CLUSTER_ADVERTISED_ADDRESS")]
    cluster_advertised_address: Option<String>,
    /// When partition logs fsync.
    #[arg(long, env = "SPOOL_FLUSH", value_enum)]
    flush: Option<FlushArg>,
    /// With --flush interval: ms between fsyncs.
    #[arg(long, env = "SPOOL_FLUSH_INTERVAL_MS")]
    flush_interval_ms: Option<u64>,
    /// Partitions of topics created without a count.
    #[arg(long, env = "SPOOL_DEFAULT_PARTITIONS")]
    default_partitions: Option<u32>,
    /// The controller's voters with their cluster addresses, the same on every node:
    /// 1@host:port,2@host:port,3@host:port (default: this node alone).
    #[arg(long, env = "SPOOL_CONTROLLER_VOTERS")]
    controller_voters: Option<String>,
    /// This node's rack, for spreading replicas.
    #[arg(long, env = "SPOOL_RACK")]
    rack: Option<String>,
    /// Free bytes on the data volume under which writes are refused (default: 1 GiB, or
    /// a twentieth of a smaller volume; 0 refuses nothing).
    #[arg(long, env = "SPOOL_MIN_FREE_BYTES")]
    min_free_bytes: Option<u64>,
    /// Time between retention passes, in ms (default 30000).
    #[arg(long, env = "SPOOL_RETENTION_CHECK_MS")]
    retention_check_ms: Option<u64>,
}

impl ServeArgs {
    fn config(self) -> anyhow::Result<ServerConfig> {
        let mut config = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        if let Some(v) = self.node_id {
            config.node_id = v;
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.http_listen {
            config.http_listen = v;
        }
        if let Some(v) = self.advertised_address {
            config.advertised_address = Some(v);
        }
        if let Some(v) = self.external_listen {
            config.external_listen = Some(v);
        }
        if let Some(v) = self.external_advertised_address {
            config.external_advertised_address = Some(v);
        }
        if let Some(v) = self.min_free_bytes {
            config.min_free_bytes = Some(v);
        }
        if let Some(v) = self.retention_check_ms {
            config.retention_check_ms = v;
        }
        if let Some(v) = self.cluster_listen {
            config.cluster_listen = v;
        }
        if let Some(v) = self.cluster_advertised_address {
            config.cluster_advertised_address = Some(v);
        }
        if let Some(v) = self.flush {
            config.flush = match v {
                FlushArg::Always => FlushSetting::Always,
                FlushArg::Interval => FlushSetting::Interval,
                FlushArg::Os => FlushSetting::Os,
            };
        }
        if let Some(v) = self.flush_interval_ms {
            config.flush_interval_ms = v;
        }
        if let Some(v) = self.default_partitions {
            config.default_partitions = v;
        }
        if let Some(v) = self.controller_voters {
            config.controller_voters = v;
        }
        if let Some(v) = self.rack {
            config.rack = Some(v);
        }
        Ok(config)
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let node = Node::start(config).await?;
    // One line scripts can read to learn the ports (useful with port 0).
    let external = node
        .external_addr()
        .map(|a| format!(" external={a}"))
        .unwrap_or_default();
    crate::say!(
        "spool serving grpc={} http={} cluster={}{external}",
        node.grpc_addr(),
        node.http_addr(),
        node.cluster_addr()
    );
    let mut agent = node.broker().agent_status();
    let refused = async move {
        match agent.wait_for(|s| s.refused.is_some()).await {
            Ok(status) => status.refused.clone(),
            Err(_) => std::future::pending().await,
        }
    };
    let refusal = tokio::select! {
        signal = wait_for_signal() => { signal?; None }
        reason = refused => reason,
    };
    tracing::info!("shutting down");
    node.shutdown().await?;
    match refusal {
        // Another node holds this id: running on would split its identity.
        Some(reason) => anyhow::bail!("the controller refused this node: {reason}"),
        None => Ok(ExitCode::SUCCESS),
    }
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the nodes keep their data (one directory per node inside it).
    #[arg(long, default_value = "spool-dev-data")]
    data_dir: PathBuf,
    /// Nodes to run; every one is a controller voter and a broker.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Host the nodes listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Node 1's gRPC port; node N listens on this + 3(N-1), its HTTP port one above and
    /// its cluster port two above.
    #[arg(long, default_value_t = 7070)]
    base_port: u16,
}

pub async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let port = |node: u64, offset: u64| -> anyhow::Result<u16> {
        u16::try_from(u64::from(args.base_port) + 3 * (node - 1) + offset)
            .context("--base-port leaves no room for every node's ports")
    };
    let mut voters = Vec::new();
    for node in 1..=args.nodes {
        voters.push(format!("{node}@{}:{}", args.host, port(node, 2)?));
    }
    let voters = voters.join(",");
    let mut configs = Vec::new();
    for node in 1..=args.nodes {
        configs.push(ServerConfig {
            node_id: node,
            data_dir: args.data_dir.join(format!("node-{node}")),
            listen: format!("{}:{}", args.host, port(node, 0)?),
            http_listen: format!("{}:{}", args.host, port(node, 1)?),
            cluster_listen: format!("{}:{}", args.host, port(node, 2)?),
            controller_voters: voters.clone(),
            // Peers' replication streams stay open until their nodes stop too: a short
            // grace keeps Ctrl-C quick.
            shutdown_grace_secs: 2,
            ..ServerConfig::default()
        });
    }
    // Started together: the controller elects once a majority of its voters is up.
    let started = futures_util::future::join_all(configs.into_iter().map(|config| {
        let listen = config.listen.clone();
        async move {
            Node::start(config).await.with_context(|| {
                format!("could not start a dev node (is something else using {listen}?)")
            })
        }
    }))
    .await;
    let nodes: Vec<_> = started.into_iter().collect::<anyhow::Result<_>>()?;
    let first = &nodes[0];
    first
        .broker()
        .wait_registered(std::time::Duration::from_secs(30))
        .await
        .context("the nodes did not form a cluster")?;
    let grpc = first.grpc_addr();
    let bootstrap = if grpc.to_string() == "127.0.0.1:7070" {
        String::new()
    } else {
        format!(" --bootstrap {grpc}")
    };
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "spool".into());
    let listing: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "\n  node {}  grpc {}  metrics http://{}/metrics",
                i + 1,
                n.grpc_addr(),
                n.http_addr()
            )
        })
        .collect();
    crate::say!(
        "\nSpool is running: {} node(s) in one cluster; stop them all with Ctrl-C.\n{}\
         \n  data directory  {data}\n\
         \nTry it from another terminal:\
         \n  spool cluster status{bootstrap}\
         \n  spool topic create orders --partitions 3{bootstrap}\
         \n  printf 'order-1:created\\norder-2:created\\norder-1:paid\\n' | spool produce orders --key-separator :{bootstrap}\
         \n  spool consume orders --from-beginning --format json{bootstrap}\
         \n  spool topic describe orders{bootstrap}\n\
         \n(`spool` here is {exe}; `cargo install --path crates/spool-cli` puts it on your PATH.)\n",
        nodes.len(),
        listing.concat(),
        data = args.data_dir.display(),
    );
    wait_for_signal().await?;
    crate::say!("stopping...");
    for stopped in futures_util::future::join_all(nodes.into_iter().map(|n| n.shutdown())).await {
        stopped?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what `docker stop` sends).
pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("could not listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("could not listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
