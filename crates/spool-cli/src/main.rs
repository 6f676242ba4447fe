//! `spool`: one binary for running and operating Spool.

mod bench;
mod bench_group;
mod bench_txn;
mod cluster;
mod consume;
mod consume_group;
mod demo;
mod group;
mod health;
mod log_tools;
mod node;
mod offsets;
mod output;
mod produce;
mod topic;
mod transaction;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "spool", version, about = "Spool: a distributed commit log", long_about = None)]
struct Cli {
    /// Brokers to contact first, as host:port[,host:port...].
    #[arg(
        long,
        global = true,
        env = "SPOOL_BOOTSTRAP",
        default_value = "127.0.0.1:7070"
    )]
    bootstrap: String,

    /// Reach node ID at HOST:PORT instead of the address the cluster advertises for it
    /// (through a tunnel or port forward); as ID=HOST:PORT[,ID=HOST:PORT...].
    #[arg(long, global = true, env = "SPOOL_CONNECT_TO", value_parser = parse_connect_to)]
    connect_to: Option<HashMap<u64, String>>,

    /// `text` for people, `json` for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,

    /// Log filter for diagnostics on stderr (for example `info` or `spool_log=debug`).
    #[arg(long, global = true, env = "SPOOL_LOG", default_value = "warn")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local three-node cluster with its data directories and show how to use it.
    Dev(node::DevArgs),
    /// Run a node.
    Serve(Box<node::ServeArgs>),
    /// Create, list, describe, alter and delete topics.
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// The cluster's nodes, controller and balance.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Move partitions between brokers.
    Partition {
        #[command(subcommand)]
        command: cluster::PartitionCommand,
    },
    /// Take brokers out of service.
    Broker {
        #[command(subcommand)]
        command: cluster::BrokerCommand,
    },
    /// Produce lines from stdin as records.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset and delete consumer groups.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// List, describe and abort transactions; find and end hanging ones.
    Transaction {
        #[command(subcommand)]
        command: transaction::TransactionCommand,
    },
    /// Show the earliest and latest offsets of a topic's partitions.
    Offsets(offsets::OffsetsArgs),
    /// Measure throughput and latency (produce, consume, end to end).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Self-checking demonstrations against a running cluster.
    Demo {
        #[command(subcommand)]
        command: demo::DemoCommand,
    },
    /// Exit 0 when a node answers ready on its HTTP port (for container health checks).
    Health(health::HealthArgs),
    /// Inspect and check partition log directories offline (the node need not run).
    Log {
        #[command(subcommand)]
        command: log_tools::LogCommand,
    },
}

/// What client commands share.
#[derive(Debug, Clone)]
pub struct Context {
    pub bootstrap: Vec<String>,
    pub connect_to: HashMap<u64, String>,
    pub output: Output,
}

impl Context {
    pub async fn connect(&self) -> anyhow::Result<spool_client::Client> {
        let client = spool_client::Client::connect(&self.bootstrap, Duration::from_secs(5)).await?;
        Ok(client.with_connect_to(self.connect_to.clone()))
    }
}

/// `ID=HOST:PORT[,ID=HOST:PORT...]`.
fn parse_connect_to(text: &str) -> Result<HashMap<u64, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (node, address) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not ID=HOST:PORT"))?;
            let node = node
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("{node:?} is not a node id"))?;
            let address = address.trim();
            if address.is_empty() {
                return Err(format!("no address for node {node}"));
            }
            Ok((node, address.to_string()))
        })
        .collect()
}

/// glibc returns every freed allocation above 128 KiB to the kernel (mmap, munmap), so a
/// broker's 1 MiB request buffers are faulted in and zeroed afresh on every request; with
/// the threshold at its maximum they are reused from the heap instead.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_large_buffers() {
    const MAX_MMAP_THRESHOLD: libc::c_int = 32 * 1024 * 1024;
    // SAFETY: mallopt only sets an allocator parameter; it is called first thing in main,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_buffers() {}

fn main() -> ExitCode {
    keep_large_buffers();
    let cli = Cli::parse();
    let default_filter = match cli.command {
        // openraft narrates every election and retry at info and warn; Spool logs what matters.
        Command::Dev(_) | Command::Serve(_) => "info,openraft=error",
        _ => cli.log_level.as_str(),
    };
    let filter = if std::env::var_os("SPOOL_LOG").is_some() {
        cli.log_level.as_str()
    } else {
        default_filter
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let context = Context {
        bootstrap: cli
            .bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        connect_to: cli.connect_to.unwrap_or_default(),
        output: cli.output,
    };
    // `spool log verify` exits 1 for a damaged log, so failing to run at all is 2 there.
    let (result, failure) = match cli.command {
        Command::Log { command } => (log_tools::run(command, cli.output), ExitCode::from(2)),
        command => (run_async(command, context), ExitCode::FAILURE),
    };
    match result {
        Ok(code) => code,
        // A reader that went away (`| head`) is not an error.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            failure
        }
    }
}

fn run_async(command: Command, context: Context) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Dev(args) => node::dev(args).await,
            Command::Serve(args) => node::serve(*args).await,
            Command::Topic { command } => topic::run(command, &context).await,
            Command::Cluster { command } => cluster::status(command, &context).await,
            Command::Partition { command } => cluster::partition(command, &context).await,
            Command::Broker { command } => cluster::broker(command, &context).await,
            Command::Produce(args) => produce::run(args, &context).await,
            Command::Consume(args) => consume::run(args, &context).await,
            Command::Offsets(args) => offsets::run(args, &context).await,
            Command::Group { command } => group::run(command, &context).await,
            Command::Transaction { command } => transaction::run(command, &context).await,
            Command::Bench { command } => bench::run(command, &context).await,
            Command::Demo { command } => demo::run(command, &context).await,
            Command::Health(args) => health::run(args).await,
            Command::Log { .. } => Ok(ExitCode::SUCCESS),
        }
    })
}
