//! `spool cluster status`, `spool partition reassign`, `spool broker drain`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use spool_client::{Client, ClusterDescription};

use crate::output::table;
use crate::{Context, Output};

/// How often progress is polled and printed.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes, the controller leader, partitions and leaders per node, and partitions that
    /// are under-replicated or moving.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum PartitionCommand {
    /// Move a partition's replicas (learners catch up first; nothing stops serving).
    Reassign {
        topic: String,
        partition: u32,
        /// The new replicas as broker ids, the preferred leader first: 1,2,3.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u64>,
        /// Return at once instead of showing progress until the move is done.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Move every replica off a broker (before taking it out of service).
    Drain {
        id: u64,
        /// Stop draining: the broker takes new replicas again.
        #[arg(long)]
        stop: bool,
        /// Return at once instead of showing progress until the broker is empty.
        #[arg(long)]
        no_wait: bool,
    },
}

pub async fn status(command: ClusterCommand, context: &Context) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Status = command;
    let client = context.connect().await?;
    let cluster = client.describe_cluster().await?;
    match context.output {
        Output::Text => print_status(&cluster),
        Output::Json => {
            let brokers: Vec<_> = cluster
                .brokers
                .iter()
                .map(|b| {
                    json!({"id": b.id, "address": b.address, "rack": b.rack, "fenced": b.fenced,
                           "draining": b.draining, "replicas": b.replicas, "leaders": b.leaders})
                })
                .collect();
            crate::say!(
                "{}",
                json!({"cluster_id": cluster.cluster_id, "controller_leader": cluster.controller_leader,
                       "controller_voters": cluster.controller_voters, "metadata_epoch": cluster.metadata_epoch,
                       "brokers": brokers, "under_replicated_partitions": cluster.under_replicated_partitions,
                       "moving_partitions": cluster.moving_partitions})
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(cluster: &ClusterDescription) {
    let controller = cluster
        .controller_leader
        .map_or("none (electing)".to_string(), |id| format!("node {id}"));
    crate::say!(
        "cluster {}  controller leader {}  metadata epoch {}",
        cluster.cluster_id,
        controller,
        cluster.metadata_epoch
    );
    let rows: Vec<Vec<String>> = cluster
        .brokers
        .iter()
        .map(|b| {
            let state = match (b.fenced, b.draining) {
                (true, _) => "fenced",
                (false, true) => "draining",
                (false, false) => "live",
            };
            let role = if cluster.controller_leader == Some(b.id) {
                "controller leader"
            } else if cluster.controller_voters.contains(&b.id) {
                "controller voter"
            } else {
                "broker"
            };
            vec![
                b.id.to_string(),
                b.address.clone(),
                b.rack.clone().unwrap_or_else(|| "-".into()),
                state.into(),
                role.into(),
                b.replicas.to_string(),
                b.leaders.to_string(),
            ]
        })
        .collect();
    crate::say!(
        "{}",
        table(
            &[
                "NODE", "ADDRESS", "RACK", "STATE", "ROLE", "REPLICAS", "LEADERS"
            ],
            &rows
        )
    );
    crate::say!(
        "under-replicated partitions: {}   moving partitions: {}",
        cluster.under_replicated_partitions,
        cluster.moving_partitions
    );
}

pub async fn partition(command: PartitionCommand, context: &Context) -> anyhow::Result<ExitCode> {
    let PartitionCommand::Reassign {
        topic,
        partition,
        replicas,
        no_wait,
    } = command;
    let client = context.connect().await?;
    client
        .reassign_partition(&topic, partition, replicas.clone())
        .await?;
    crate::say!("moving {topic}-{partition} to brokers {replicas:?}");
    if !no_wait {
        wait_until_settled(&client, context.output, || async {
            let described = client.describe_topic(&topic).await.ok()?;
            let p = described.partitions.get(partition as usize)?;
            let mut have = p.replicas.clone();
            let mut want = replicas.clone();
            have.sort_unstable();
            want.sort_unstable();
            Some(have == want)
        })
        .await?;
        crate::say!("{topic}-{partition} now lives on {replicas:?}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn broker(command: BrokerCommand, context: &Context) -> anyhow::Result<ExitCode> {
    let BrokerCommand::Drain { id, stop, no_wait } = command;
    let client = context.connect().await?;
    client.drain_broker(id, !stop).await?;
    if stop {
        crate::say!("broker {id} takes replicas again");
        return Ok(ExitCode::SUCCESS);
    }
    crate::say!("draining broker {id}");
    if !no_wait {
        wait_until_settled(&client, context.output, || async {
            let cluster = client.describe_cluster().await.ok()?;
            let broker = cluster.brokers.iter().find(|b| b.id == id)?;
            Some(broker.replicas == 0)
        })
        .await?;
        crate::say!("broker {id} holds no replicas; it can be stopped");
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls until `done` says so and no partition is moving, printing progress.
async fn wait_until_settled<F, Fut>(client: &Client, output: Output, done: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<bool>>,
{
    let mut last = None;
    loop {
        let cluster = client.describe_cluster().await?;
        let moving = cluster.moving_partitions;
        if done().await == Some(true) && moving == 0 {
            return Ok(());
        }
        if output == Output::Text && last != Some(moving) {
            crate::say!("  {moving} partition(s) moving...");
            last = Some(moving);
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
}
