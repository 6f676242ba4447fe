//! `spool group`: list, describe (members, committed offsets, lag), reset offsets and
//! delete consumer groups, like `kafka-consumer-groups.sh`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use spool_client::{Client, CommittedOffset, GroupDescription, OffsetSpec, OffsetToCommit};

use crate::output::table;
use crate::{Context, Output, say};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Every group in the cluster with its state and member count.
    List,
    /// A group's members and, per partition, committed offset, log end and lag.
    Describe { group: String },
    /// Set a group's committed offsets (the group must have no members). Shows the plan
    /// unless --execute is given.
    ResetOffsets(ResetArgs),
    /// Delete a group without members, with its committed offsets.
    Delete { group: String },
    /// Set a group's own session timeout and heartbeat interval (like Kafka's group
    /// configs); an option left out goes back to the node's setting.
    Alter(AlterArgs),
}

#[derive(Debug, Args)]
pub struct AlterArgs {
    group: String,
    /// A member silent this long is removed and its partitions move (1000 to 3600000).
    #[arg(long)]
    session_timeout_ms: Option<u64>,
    /// How often members heartbeat (at least 100, below the session timeout).
    #[arg(long)]
    heartbeat_interval_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    group: String,
    /// The topic whose offsets to reset.
    #[arg(long)]
    topic: String,
    /// Only this partition (default: every partition of the topic).
    #[arg(long)]
    partition: Option<u32>,
    #[command(flatten)]
    to: ResetTo,
    /// Apply the plan (without it, only show it).
    #[arg(long)]
    execute: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ResetTo {
    /// The earliest retained offset.
    #[arg(long)]
    to_earliest: bool,
    /// The end of the log: skip everything not yet read.
    #[arg(long)]
    to_latest: bool,
    /// The first record at or after this time (ms since the Unix epoch).
    #[arg(long)]
    to_datetime: Option<i64>,
    /// This offset.
    #[arg(long)]
    to_offset: Option<i64>,
    /// The committed offset moved by this many records (negative: back).
    #[arg(long, allow_hyphen_values = true)]
    shift_by: Option<i64>,
}

pub async fn run(command: GroupCommand, context: &Context) -> anyhow::Result<ExitCode> {
    let client = context.connect().await?;
    match command {
        GroupCommand::List => list(&client, context.output).await,
        GroupCommand::Describe { group } => describe(&client, &group, context.output).await,
        GroupCommand::ResetOffsets(args) => reset(&client, args, context.output).await,
        GroupCommand::Alter(args) => {
            coordinator(&client, &args.group)
                .await?
                .alter_group(
                    &args.group,
                    args.session_timeout_ms.map(Duration::from_millis),
                    args.heartbeat_interval_ms.map(Duration::from_millis),
                )
                .await?;
            if context.output == Output::Json {
                say!("{}", serde_json::json!({ "altered": args.group }));
            } else {
                say!("altered group {}", args.group);
            }
            Ok(ExitCode::SUCCESS)
        }
        GroupCommand::Delete { group } => {
            coordinator(&client, &group)
                .await?
                .delete_group(&group)
                .await?;
            if context.output == Output::Json {
                say!("{}", serde_json::json!({ "deleted": group }));
            } else {
                say!("deleted group {group}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A connection to the node coordinating `group`, retried while one is being elected.
pub(crate) async fn coordinator(client: &Client, group: &str) -> anyhow::Result<Client> {
    coordinator_found_by(client, || client.find_coordinator(group)).await
}

/// A connection to the coordinator `find` names, asked again while one is being elected.
pub(crate) async fn coordinator_found_by<F, Fut>(client: &Client, find: F) -> anyhow::Result<Client>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(u64, String), spool_client::ClientError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match find().await {
            Ok((node, address)) => return Ok(client.to_node(node, &address).await?),
            Err(error)
                if error
                    .code()
                    .is_some_and(spool_client::ErrorCode::is_retriable)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

async fn list(client: &Client, output: Output) -> anyhow::Result<ExitCode> {
    let metadata = client.metadata(&[]).await?;
    let mut groups = Vec::new();
    for broker in &metadata.brokers {
        let node = client.to_node(broker.node_id, &broker.address).await?;
        groups.extend(node.list_groups_here().await?);
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    groups.dedup_by(|a, b| a.group == b.group);
    if output == Output::Json {
        #[derive(Serialize)]
        struct Row<'a> {
            group: &'a str,
            state: &'a str,
            members: u32,
            coordinator: u64,
        }
        let rows: Vec<Row<'_>> = groups
            .iter()
            .map(|g| Row {
                group: &g.group,
                state: &g.state,
                members: g.members,
                coordinator: g.coordinator,
            })
            .collect();
        say!("{}", serde_json::to_string(&rows)?);
    } else {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                vec![
                    g.group.clone(),
                    g.state.clone(),
                    g.members.to_string(),
                    g.coordinator.to_string(),
                ]
            })
            .collect();
        say!(
            "{}",
            table(&["GROUP", "STATE", "MEMBERS", "COORDINATOR"], &rows)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct PartitionRow {
    topic: String,
    partition: u32,
    committed: Option<i64>,
    log_end: Option<i64>,
    lag: Option<i64>,
    member: Option<String>,
}

/// Log end offsets of these partitions, each asked of its leader.
async fn log_ends(
    client: &Client,
    partitions: &[(String, u32)],
) -> anyhow::Result<BTreeMap<(String, u32), i64>> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let mut out = BTreeMap::new();
    for (topic, list) in by_topic {
        for (leader, group) in crate::consume::by_leader(client, topic, &list).await? {
            let queries = group
                .iter()
                .map(|p| (topic.to_string(), *p, OffsetSpec::Latest))
                .collect();
            for (partition, end) in group.iter().zip(leader.list_offsets(queries).await?) {
                if let Ok(end) = end {
                    out.insert((topic.to_string(), *partition), end);
                }
            }
        }
    }
    Ok(out)
}

async fn describe(client: &Client, group: &str, output: Output) -> anyhow::Result<ExitCode> {
    let d: GroupDescription = coordinator(client, group)
        .await?
        .describe_group(group)
        .await?;
    let mut owner: BTreeMap<(String, u32), String> = BTreeMap::new();
    for member in &d.members {
        for (topic, partitions) in member.assigned.iter().chain(&member.revoking) {
            for p in partitions {
                owner.insert((topic.clone(), *p), member.member_id.clone());
            }
        }
    }
    let committed: BTreeMap<(String, u32), i64> = d
        .offsets
        .iter()
        .map(|o: &CommittedOffset| ((o.topic.clone(), o.partition), o.offset))
        .collect();
    let mut keys: Vec<(String, u32)> = committed.keys().cloned().collect();
    keys.extend(owner.keys().cloned());
    keys.sort();
    keys.dedup();
    let ends = log_ends(client, &keys).await?;
    let rows: Vec<PartitionRow> = keys
        .iter()
        .map(|key| {
            let committed = committed.get(key).copied();
            let log_end = ends.get(key).copied();
            PartitionRow {
                topic: key.0.clone(),
                partition: key.1,
                committed,
                log_end,
                lag: log_end.map(|end| (end - committed.unwrap_or(0)).max(0)),
                member: owner.get(key).cloned(),
            }
        })
        .collect();
    if output == Output::Json {
        #[derive(Serialize)]
        struct Member<'a> {
            member_id: &'a str,
            instance_id: Option<&'a str>,
            client_id: &'a str,
            client_host: &'a str,
            rack: Option<&'a str>,
            member_epoch: i32,
            state: &'a str,
            assigned: &'a spool_client::PartitionSet,
            revoking: &'a spool_client::PartitionSet,
        }
        let members: Vec<Member<'_>> = d
            .members
            .iter()
            .map(|m| Member {
                member_id: &m.member_id,
                instance_id: m.instance_id.as_deref(),
                client_id: &m.client_id,
                client_host: &m.client_host,
                rack: m.rack.as_deref(),
                member_epoch: m.member_epoch,
                state: &m.state,
                assigned: &m.assigned,
                revoking: &m.revoking,
            })
            .collect();
        let json = serde_json::json!({
            "group": d.group,
            "state": d.state,
            "group_epoch": d.group_epoch,
            "assignment_epoch": d.assignment_epoch,
            "assignor": d.assignor,
            "coordinator": d.coordinator,
            "session_timeout_ms": d.session_timeout.as_millis() as u64,
            "heartbeat_interval_ms": d.heartbeat_interval.as_millis() as u64,
            "members": members,
            "partitions": rows,
        });
        say!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    say!(
        "group {}  state {}  epoch {}  assignor {}  coordinator {}  session {} ms  heartbeat {} ms",
        d.group,
        d.state,
        d.group_epoch,
        d.assignor,
        d.coordinator,
        d.session_timeout.as_millis(),
        d.heartbeat_interval.as_millis()
    );
    let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.topic.clone(),
                r.partition.to_string(),
                show(r.committed),
                show(r.log_end),
                show(r.lag),
                r.member.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    say!();
    say!(
        "{}",
        table(
            &[
                "TOPIC",
                "PARTITION",
                "COMMITTED",
                "LOG-END",
                "LAG",
                "MEMBER"
            ],
            &table_rows
        )
    );
    if !d.members.is_empty() {
        let member_rows: Vec<Vec<String>> = d
            .members
            .iter()
            .map(|m| {
                let count: usize = m.assigned.values().map(Vec::len).sum();
                vec![
                    m.member_id.clone(),
                    m.instance_id.clone().unwrap_or_else(|| "-".into()),
                    m.client_host.clone(),
                    m.member_epoch.to_string(),
                    m.state.clone(),
                    count.to_string(),
                ]
            })
            .collect();
        say!();
        say!(
            "{}",
            table(
                &["MEMBER", "INSTANCE", "HOST", "EPOCH", "STATE", "PARTITIONS"],
                &member_rows
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn reset(client: &Client, args: ResetArgs, output: Output) -> anyhow::Result<ExitCode> {
    let count = client.describe_topic(&args.topic).await?.partitions.len() as u32;
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p < count => vec![p],
        Some(p) => anyhow::bail!("topic {} has no partition {p} (it has {count})", args.topic),
        None => (0..count).collect(),
    };
    let coordinator = coordinator(client, &args.group).await?;
    let mut wanted = spool_client::PartitionSet::new();
    wanted.insert(args.topic.clone(), partitions.clone());
    let current: BTreeMap<u32, i64> = coordinator
        .fetch_committed(&args.group, &wanted)
        .await?
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    let mut plan = Vec::with_capacity(partitions.len());
    for (leader, group) in crate::consume::by_leader(client, &args.topic, &partitions).await? {
        let bounds = |spec| {
            group
                .iter()
                .map(|p| (args.topic.clone(), *p, spec))
                .collect::<Vec<_>>()
        };
        let earliest = leader.list_offsets(bounds(OffsetSpec::Earliest)).await?;
        let latest = leader.list_offsets(bounds(OffsetSpec::Latest)).await?;
        let at_time = match args.to.to_datetime {
            Some(ts) => Some(
                leader
                    .list_offsets(bounds(OffsetSpec::Timestamp(ts)))
                    .await?,
            ),
            None => None,
        };
        for (i, partition) in group.iter().enumerate() {
            let (low, high) = (earliest[i].clone()?, latest[i].clone()?);
            let target = if args.to.to_earliest {
                low
            } else if args.to.to_latest {
                high
            } else if let Some(offset) = args.to.to_offset {
                offset
            } else if let Some(shift) = args.to.shift_by {
                current
                    .get(partition)
                    .copied()
                    .filter(|o| *o >= 0)
                    .unwrap_or(low)
                    + shift
            } else {
                match at_time.as_ref().map(|found| found[i].clone()) {
                    Some(found) => found.ok().filter(|o| *o >= 0).unwrap_or(high),
                    None => high,
                }
            };
            // Offsets outside the retained log are clamped to it, as Kafka's tool does.
            plan.push((
                *partition,
                current.get(partition).copied(),
                target.clamp(low, high),
            ));
        }
    }
    plan.sort_unstable();
    if args.execute {
        let offsets = plan
            .iter()
            .map(|(partition, _, offset)| OffsetToCommit {
                topic: args.topic.clone(),
                partition: *partition,
                offset: *offset,
                leader_epoch: -1,
                metadata: String::new(),
            })
            .collect();
        coordinator.reset_offsets(&args.group, offsets).await?;
    }
    if output == Output::Json {
        let rows: Vec<serde_json::Value> = plan
            .iter()
            .map(|(p, old, new)| {
                serde_json::json!({
                    "topic": args.topic, "partition": p, "committed": old, "new": new,
                })
            })
            .collect();
        say!(
            "{}",
            serde_json::json!({ "group": args.group, "executed": args.execute, "offsets": rows })
        );
    } else {
        let rows: Vec<Vec<String>> = plan
            .iter()
            .map(|(p, old, new)| {
                vec![
                    args.topic.clone(),
                    p.to_string(),
                    old.map_or("-".into(), |o| o.to_string()),
                    new.to_string(),
                ]
            })
            .collect();
        say!(
            "{}",
            table(&["TOPIC", "PARTITION", "COMMITTED", "NEW"], &rows)
        );
        if !args.execute {
            say!("(a plan only: add --execute to apply it)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
