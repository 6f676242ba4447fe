//! `spool topic create|list|describe|delete|alter`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use spool_client::{Client, NewTopic, TopicDescription};

use crate::output::table;
use crate::{Context, Output};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions (default: the broker's default, 1).
        #[arg(long, short = 'p', default_value_t = 0)]
        partitions: u32,
        /// Copies of each partition (default: the broker's default).
        #[arg(long, short = 'r', default_value_t = 0)]
        replication_factor: u32,
        /// A topic config, as name=value (for example retention.ms=86400000); repeatable.
        #[arg(long = "config", short = 'c', value_parser = parse_pair)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List {
        /// Include internal topics.
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions, offsets and configs.
    Describe { name: String },
    /// Delete a topic and all its data.
    Delete { name: String },
    /// Change a topic's configs.
    Alter {
        name: String,
        /// Set a config, as name=value; repeatable.
        #[arg(long = "set", value_parser = parse_pair)]
        set: Vec<(String, String)>,
        /// Return a config to its default; repeatable.
        #[arg(long = "reset")]
        reset: Vec<String>,
        /// Grow the topic to this many partitions (partitions are never removed).
        #[arg(long)]
        partitions: Option<u32>,
    },
}

pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected name=value, got {text:?}")),
    }
}

/// How long `topic create` waits for the new partitions' leaders.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Describes a new topic once every partition has a leader, or as it is after
/// `LEADER_WAIT`: a topic is ready for producers only once it is led.
async fn with_leaders(client: &Client, name: &str) -> anyhow::Result<TopicDescription> {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        let described = client.describe_topic(name).await?;
        let led = described.partitions.iter().all(|p| p.leader != 0);
        if led || tokio::time::Instant::now() >= deadline {
            return Ok(described);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(command: TopicCommand, context: &Context) -> anyhow::Result<ExitCode> {
    let client = context.connect().await?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            client
                .create_topic(NewTopic {
                    name: name.clone(),
                    partitions,
                    replication_factor,
                    configs: configs.into_iter().collect::<BTreeMap<_, _>>(),
                    ..NewTopic::default()
                })
                .await?;
            let described = with_leaders(&client, &name).await?;
            let led = described.partitions.iter().all(|p| p.leader != 0);
            match context.output {
                Output::Text if led => crate::say!(
                    "created topic {name} with {} partition(s), every one led",
                    described.partitions.len()
                ),
                Output::Text => crate::say!(
                    "created topic {name} with {} partition(s); leaders are still being elected",
                    described.partitions.len()
                ),
                Output::Json => crate::say!(
                    "{}",
                    json!({"topic": name, "partitions": described.partitions.len()})
                ),
            }
        }
        TopicCommand::List { internal } => {
            let topics = client.list_topics(internal).await?;
            match context.output {
                Output::Text => {
                    let rows: Vec<Vec<String>> = topics
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                t.partitions.to_string(),
                                t.replication_factor.to_string(),
                            ]
                        })
                        .collect();
                    crate::say!("{}", table(&["TOPIC", "PARTITIONS", "REPLICATION"], &rows));
                }
                Output::Json => {
                    let list: Vec<_> = topics
                        .iter()
                        .map(|t| json!({"topic": t.name, "partitions": t.partitions, "replication_factor": t.replication_factor, "internal": t.internal}))
                        .collect();
                    crate::say!("{}", json!(list));
                }
            }
        }
        TopicCommand::Describe { name } => {
            let topic = client.describe_topic(&name).await?;
            match context.output {
                Output::Text => {
                    crate::say!(
                        "topic {}  id {}  replication factor {}",
                        topic.name,
                        topic.topic_id,
                        topic.replication_factor
                    );
                    let rows: Vec<Vec<String>> = topic
                        .partitions
                        .iter()
                        .map(|p| {
                            vec![
                                p.partition.to_string(),
                                p.leader.to_string(),
                                join(&p.replicas),
                                join(&p.in_sync_replicas),
                                p.log_start_offset.to_string(),
                                p.high_watermark.to_string(),
                                p.size_bytes.to_string(),
                            ]
                        })
                        .collect();
                    crate::say!(
                        "{}",
                        table(
                            &[
                                "PARTITION",
                                "LEADER",
                                "REPLICAS",
                                "IN-SYNC",
                                "START",
                                "END",
                                "BYTES"
                            ],
                            &rows
                        )
                    );
                    crate::say!();
                    let rows: Vec<Vec<String>> = topic
                        .configs
                        .iter()
                        .map(|c| {
                            vec![
                                c.name.clone(),
                                c.value.clone(),
                                if c.is_default {
                                    "default".into()
                                } else {
                                    "set".into()
                                },
                            ]
                        })
                        .collect();
                    crate::say!("{}", table(&["CONFIG", "VALUE", "SOURCE"], &rows));
                }
                Output::Json => {
                    let partitions: Vec<_> = topic
                        .partitions
                        .iter()
                        .map(|p| {
                            json!({"partition": p.partition, "leader": (p.leader != 0).then_some(p.leader), "replicas": p.replicas,
                                   "in_sync_replicas": p.in_sync_replicas, "log_start_offset": p.log_start_offset,
                                   "high_watermark": p.high_watermark, "size_bytes": p.size_bytes})
                        })
                        .collect();
                    let configs: serde_json::Map<String, serde_json::Value> = topic
                        .configs
                        .iter()
                        .map(|c| (c.name.clone(), json!(c.value)))
                        .collect();
                    crate::say!(
                        "{}",
                        json!({"topic": topic.name, "topic_id": topic.topic_id, "replication_factor": topic.replication_factor,
                               "partitions": partitions, "configs": configs})
                    );
                }
            }
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            if context.output == Output::Text {
                crate::say!("deleted topic {name}");
            }
        }
        TopicCommand::Alter {
            name,
            set,
            reset,
            partitions,
        } => {
            anyhow::ensure!(
                !set.is_empty() || !reset.is_empty() || partitions.is_some(),
                "nothing to change: give --set name=value, --reset name or --partitions N"
            );
            if let Some(total) = partitions {
                client.create_partitions(&name, total).await?;
            }
            if !set.is_empty() || !reset.is_empty() {
                client.alter_topic_configs(&name, set, reset).await?;
            }
            if context.output == Output::Text {
                crate::say!("altered topic {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}
