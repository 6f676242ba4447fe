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
    /// When partition logs fsync.
    #[arg(long, env = "SPOOL_FLUSH", value_enum)]
    flush: Option<FlushArg>,
    /// With --flush interval: ms between fsyncs.
    #[arg(long, env = "SPOOL_FLUSH_INTERVAL_MS")]
    flush_interval_ms: Option<u64>,
    /// Partitions of topics created without a count.
    #[arg(long, env = "SPOOL_DEFAULT_PARTITIONS")]
    default_partitions: Option<u32>,
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
        Ok(config)
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let node = Node::start(config).await?;
    // One line scripts can read to learn the ports (useful with port 0).
    crate::say!(
        "spool serving grpc={} http={}",
        node.grpc_addr(),
        node.http_addr()
    );
    wait_for_signal().await?;
    tracing::info!("shutting down");
    node.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the dev node keeps its data.
    #[arg(long, default_value = "spool-dev-data")]
    data_dir: PathBuf,
    /// gRPC listener.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
    /// HTTP listener.
    #[arg(long, default_value = "127.0.0.1:7071")]
    http_listen: String,
}

pub async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let config = ServerConfig {
        data_dir: args.data_dir.clone(),
        listen: args.listen.clone(),
        http_listen: args.http_listen.clone(),
        ..ServerConfig::default()
    };
    let node = Node::start(config).await.with_context(|| {
        format!(
            "could not start the dev node (is another one using {}?)",
            args.listen
        )
    })?;
    let grpc = node.grpc_addr();
    let bootstrap = if grpc.to_string() == "127.0.0.1:7070" {
        String::new()
    } else {
        format!(" --bootstrap {grpc}")
    };
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "spool".into());
    crate::say!(
        "\nSpool is running: one node, stop it with Ctrl-C.\n\
         \n  client API (gRPC)   {grpc}\
         \n  metrics and health  http://{http}/metrics  /health  /ready\
         \n  data directory      {data}\n\
         \nTry it from another terminal:\
         \n  spool topic create orders --partitions 3{bootstrap}\
         \n  printf 'order-1:created\\norder-2:created\\norder-1:paid\\n' | spool produce orders --key-separator :{bootstrap}\
         \n  spool consume orders --from-beginning --format json{bootstrap}\
         \n  spool offsets orders{bootstrap}\n\
         \n(`spool` here is {exe}; `cargo install --path crates/spool-cli` puts it on your PATH.)\n",
        http = node.http_addr(),
        data = args.data_dir.display(),
    );
    wait_for_signal().await?;
    crate::say!("stopping...");
    node.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("could not listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("could not listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
