//! `spool transaction`: list and describe transactional ids, abort an open transaction,
//! and find and end hanging ones, like `kafka-transactions.sh`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;
use spool_client::Client;

use crate::output::table;
use crate::{Context, Output, say};

#[derive(Debug, Subcommand)]
pub enum TransactionCommand {
    /// Every transactional id in the cluster with its producer id and state.
    List,
    /// A transactional id: producer, epoch, state, timeout, and the open transaction's
    /// partitions and age.
    Describe { transactional_id: String },
    /// The transactions a partition holds open (its last stable offset waits for the
    /// oldest). One open far longer than any transaction timeout is hanging.
    Open {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: u32,
    },
    /// Abort a transactional id's open transaction (its producer is fenced), or with
    /// --topic, --partition and --producer-id, end a hanging transaction at one partition
    /// with an abort marker.
    Abort(AbortArgs),
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The transactional id whose open transaction to abort.
    #[arg(conflicts_with_all = ["topic", "partition", "producer_id"])]
    transactional_id: Option<String>,
    #[arg(long, requires_all = ["partition", "producer_id"])]
    topic: Option<String>,
    #[arg(long)]
    partition: Option<u32>,
    #[arg(long)]
    producer_id: Option<i64>,
}

pub async fn run(command: TransactionCommand, context: &Context) -> anyhow::Result<ExitCode> {
    let client = context.connect().await?;
    match command {
        TransactionCommand::List => list(&client, context.output).await,
        TransactionCommand::Describe { transactional_id } => {
            let t = coordinator(&client, &transactional_id)
                .await?
                .describe_transaction(&transactional_id)
                .await?;
            if context.output == Output::Json {
                say!(
                    "{}",
                    serde_json::json!({
                        "transactional_id": t.transactional_id,
                        "coordinator": t.coordinator,
                        "producer_id": t.producer_id,
                        "producer_epoch": t.producer_epoch,
                        "state": t.state,
                        "timeout_ms": t.timeout_ms,
                        "started_ms": t.started_ms,
                        "updated_ms": t.updated_ms,
                        "partitions": t.partitions,
                    })
                );
            } else {
                say!("transactional id  {}", t.transactional_id);
                say!("coordinator       {}", t.coordinator);
                say!(
                    "producer          {} epoch {}",
                    t.producer_id,
                    t.producer_epoch
                );
                say!("state             {}", t.state);
                say!("timeout           {} ms", t.timeout_ms);
                if t.started_ms >= 0 {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    let age = now.saturating_sub(t.started_ms);
                    say!("open for          {age} ms");
                }
                let rows: Vec<Vec<String>> = t
                    .partitions
                    .iter()
                    .map(|(topic, p)| vec![topic.clone(), p.to_string()])
                    .collect();
                if !rows.is_empty() {
                    say!("{}", table(&["TOPIC", "PARTITION"], &rows));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TransactionCommand::Open { topic, partition } => {
            let leader = leader_of(&client, &topic, partition).await?;
            let open = leader.open_transactions(&topic, partition).await?;
            if context.output == Output::Json {
                #[derive(Serialize)]
                struct Row {
                    producer_id: i64,
                    producer_epoch: i16,
                    first_offset: i64,
                }
                let rows: Vec<Row> = open
                    .iter()
                    .map(|t| Row {
                        producer_id: t.producer_id,
                        producer_epoch: t.producer_epoch,
                        first_offset: t.first_offset,
                    })
                    .collect();
                say!("{}", serde_json::to_string(&rows)?);
            } else {
                let rows: Vec<Vec<String>> = open
                    .iter()
                    .map(|t| {
                        vec![
                            t.producer_id.to_string(),
                            t.producer_epoch.to_string(),
                            t.first_offset.to_string(),
                        ]
                    })
                    .collect();
                say!("{}", table(&["PRODUCER", "EPOCH", "FIRST OFFSET"], &rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        TransactionCommand::Abort(args) => abort(&client, args, context.output).await,
    }
}

async fn abort(client: &Client, args: AbortArgs, output: Output) -> anyhow::Result<ExitCode> {
    if let Some(id) = args.transactional_id {
        let aborted = coordinator(client, &id)
            .await?
            .abort_transaction(&id)
            .await?;
        if output == Output::Json {
            say!(
                "{}",
                serde_json::json!({ "transactional_id": id, "aborted": aborted })
            );
        } else if aborted {
            say!("aborted the open transaction of {id}");
        } else {
            say!("{id} has no open transaction");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(topic), Some(partition), Some(producer_id)) =
        (args.topic, args.partition, args.producer_id)
    else {
        anyhow::bail!("name a transactional id, or --topic, --partition and --producer-id");
    };
    leader_of(client, &topic, partition)
        .await?
        .abort_hanging_transaction(&topic, partition, producer_id)
        .await?;
    if output == Output::Json {
        say!(
            "{}",
            serde_json::json!({ "topic": topic, "partition": partition, "producer_id": producer_id, "aborted": true })
        );
    } else {
        say!("aborted producer {producer_id}'s transaction at {topic}-{partition}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &Client, output: Output) -> anyhow::Result<ExitCode> {
    let metadata = client.metadata(&[]).await?;
    let mut all = Vec::new();
    for broker in &metadata.brokers {
        let node = client.to_node(broker.node_id, &broker.address).await?;
        all.extend(node.list_transactions().await?);
    }
    all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    all.dedup_by(|a, b| a.transactional_id == b.transactional_id);
    if output == Output::Json {
        #[derive(Serialize)]
        struct Row<'a> {
            transactional_id: &'a str,
            producer_id: i64,
            state: &'a str,
        }
        let rows: Vec<Row<'_>> = all
            .iter()
            .map(|t| Row {
                transactional_id: &t.transactional_id,
                producer_id: t.producer_id,
                state: &t.state,
            })
            .collect();
        say!("{}", serde_json::to_string(&rows)?);
    } else {
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|t| {
                vec![
                    t.transactional_id.clone(),
                    t.producer_id.to_string(),
                    t.state.clone(),
                ]
            })
            .collect();
        say!(
            "{}",
            table(&["TRANSACTIONAL ID", "PRODUCER", "STATE"], &rows)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A connection to the node coordinating `id`, retried while one is being elected.
async fn coordinator(client: &Client, id: &str) -> anyhow::Result<Client> {
    crate::group::coordinator_found_by(client, || client.find_transaction_coordinator(id)).await
}

/// A connection to the leader of `topic`-`partition`.
async fn leader_of(client: &Client, topic: &str, partition: u32) -> anyhow::Result<Client> {
    let mut led = crate::consume::by_leader(client, topic, &[partition]).await?;
    match led.pop() {
        Some((leader, _)) => Ok(leader),
        None => anyhow::bail!("{topic}-{partition} has no leader"),
    }
}
