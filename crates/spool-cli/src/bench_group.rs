//! `spool bench group`: how fast a consumer group settles. Starts `--members` members at
//! once and times how long until every partition is owned, evenly; then, `--joins` times,
//! adds one member to the settled group and times how long until it owns its share, and
//! removes it again.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use spool_client::{Client, Consumer, ConsumerConfig, GroupConfig, GroupEvent};
use tokio::sync::{mpsc, oneshot};

use crate::{Context, Output, say};

#[derive(Debug, Args)]
pub struct GroupBenchArgs {
    /// The topic the group reads (created with --partitions if it does not exist).
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 100)]
    partitions: u32,
    /// Members started at once.
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Times one more member joins the settled group.
    #[arg(long, default_value_t = 20)]
    joins: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What members report: who, and their change of partition count.
struct Change {
    member: usize,
    delta: i64,
}

struct Member {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start_member(
    client: &Client,
    group: &str,
    topic: &str,
    index: usize,
    changes: mpsc::UnboundedSender<Change>,
) -> Member {
    let mut settings = GroupConfig::new(group, &[topic]);
    settings.client_id = format!("bench-{index}");
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default()).subscribe(settings);
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = consumer.next_event() => event,
                _ = &mut stopped => break,
            };
            let delta = match event {
                Ok(GroupEvent::Assigned(p)) => p.len() as i64,
                Ok(GroupEvent::Revoked(p) | GroupEvent::Lost(p)) => -(p.len() as i64),
                Ok(GroupEvent::Record(_)) => 0,
                Err(error) => {
                    eprintln!("member {index}: {error}");
                    break;
                }
            };
            if delta != 0
                && changes
                    .send(Change {
                        member: index,
                        delta,
                    })
                    .is_err()
            {
                break;
            }
        }
        let _ = consumer.close().await;
    });
    Member { stop, task }
}

/// Applies reported changes until `done` holds for the members' partition counts.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Change>,
    counts: &mut BTreeMap<usize, i64>,
    deadline: Duration,
    done: impl Fn(&BTreeMap<usize, i64>) -> bool,
) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + deadline;
    while !done(counts) {
        let change = tokio::time::timeout_at(until, rx.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!("the group did not settle within {deadline:?}: {counts:?}")
            })?
            .ok_or_else(|| anyhow::anyhow!("the members stopped"))?;
        *counts.entry(change.member).or_default() += change.delta;
    }
    Ok(())
}

/// Every partition owned once, and counts differing by at most one among `members`.
fn settled(counts: &BTreeMap<usize, i64>, members: &[usize], partitions: i64) -> bool {
    let owned: Vec<i64> = members
        .iter()
        .map(|m| counts.get(m).copied().unwrap_or(0))
        .collect();
    let total: i64 = counts.values().sum();
    let (min, max) = (
        owned.iter().min().copied().unwrap_or(0),
        owned.iter().max().copied().unwrap_or(0),
    );
    total == partitions && owned.iter().sum::<i64>() == partitions && max - min <= 1
}

pub async fn run(args: GroupBenchArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let client = context.connect().await?;
    crate::bench::ensure_topic(&client, &args.topic, args.partitions).await?;
    let partitions = client.describe_topic(&args.topic).await?.partitions.len() as i64;
    let group = format!(
        "bench-group-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut counts = BTreeMap::new();
    let started = Instant::now();
    let mut members: Vec<Member> = (0..args.members)
        .map(|i| start_member(&client, &group, &args.topic, i, tx.clone()))
        .collect();
    let base: Vec<usize> = (0..args.members).collect();
    wait_for(&mut rx, &mut counts, Duration::from_secs(60), |c| {
        settled(c, &base, partitions)
    })
    .await?;
    let cold = started.elapsed();

    let mut joins = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for round in 0..args.joins {
        let index = args.members + round;
        let share = partitions / (args.members as i64 + 1);
        let with_new: Vec<usize> = base.iter().copied().chain([index]).collect();
        let joined = Instant::now();
        let member = start_member(&client, &group, &args.topic, index, tx.clone());
        wait_for(&mut rx, &mut counts, Duration::from_secs(60), |c| {
            c.get(&index).copied().unwrap_or(0) >= share && settled(c, &with_new, partitions)
        })
        .await?;
        joins.record(joined.elapsed().as_micros() as u64)?;
        // It leaves; the others take its partitions back before the next round.
        let _ = member.stop.send(());
        let _ = member.task.await;
        counts.remove(&index);
        wait_for(&mut rx, &mut counts, Duration::from_secs(60), |c| {
            settled(c, &base, partitions)
        })
        .await?;
    }
    for member in members.drain(..) {
        let _ = member.stop.send(());
        let _ = member.task.await;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    if args.json || context.output == Output::Json {
        say!(
            "{}",
            json!({
                "partitions": partitions,
                "members": args.members,
                "cold_start_ms": cold.as_secs_f64() * 1000.0,
                "joins": joins.len(),
                "join_p50_ms": ms(joins.value_at_quantile(0.5)),
                "join_p99_ms": ms(joins.value_at_quantile(0.99)),
                "join_max_ms": ms(joins.max()),
            })
        );
    } else {
        say!(
            "{} members over {partitions} partitions settled in {:.0} ms from a cold start",
            args.members,
            cold.as_secs_f64() * 1000.0
        );
        if !joins.is_empty() {
            say!(
                "a new member owned its share in p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} joins)",
                ms(joins.value_at_quantile(0.5)),
                ms(joins.value_at_quantile(0.99)),
                ms(joins.max()),
                joins.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct CommitBenchArgs {
    /// The topic whose offsets are committed (created with --partitions if missing).
    #[arg(long)]
    topic: String,
    /// Partitions whose offsets each commit carries.
    #[arg(long, default_value_t = 100)]
    partitions: u32,
    /// Commits in flight at once, each from a group of its own (all coordinated by the
    /// same node).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long)]
    json: bool,
}

/// `spool bench commits`: offset commits to one coordinator, as many as it takes.
pub async fn commits(args: CommitBenchArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let client = context.connect().await?;
    crate::bench::ensure_topic(&client, &args.topic, args.partitions).await?;
    let partitions = client.describe_topic(&args.topic).await?.partitions.len() as u32;
    // Groups that all belong to the first one's coordinator partition.
    let first = format!("bench-commits-{}", std::process::id());
    let coordinator = crate::group::coordinator(&client, &first).await?;
    let shards = client
        .describe_topic("__consumer_offsets")
        .await?
        .partitions
        .len() as u32;
    let target = spool_client::partition_for_key(first.as_bytes(), shards);
    let mut groups = vec![first];
    let mut n = 0u64;
    while groups.len() < args.concurrency {
        n += 1;
        let name = format!("bench-commits-{}-{n}", std::process::id());
        if spool_client::partition_for_key(name.as_bytes(), shards) == target {
            groups.push(name);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for group in groups {
        let mut coordinator = coordinator.clone();
        let client = client.clone();
        let topic = args.topic.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut round = 0i64;
            while Instant::now() < deadline {
                round += 1;
                let offsets = (0..partitions)
                    .map(|p| spool_client::OffsetToCommit {
                        topic: topic.clone(),
                        partition: p,
                        offset: round,
                        leader_epoch: -1,
                        metadata: String::new(),
                    })
                    .collect();
                let sent = Instant::now();
                match coordinator.commit_offsets(&group, "", -1, offsets).await {
                    Ok(()) => latencies.record(sent.elapsed().as_micros() as u64)?,
                    // The coordinator moved (leaders settle after a topic is created).
                    Err(error)
                        if error
                            .code()
                            .is_some_and(spool_client::ErrorCode::is_retriable) =>
                    {
                        coordinator = crate::group::coordinator(&client, &group).await?;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let started = Instant::now();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        all.add(task.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let offsets_per_sec = all.len() as f64 * f64::from(partitions) / elapsed;
    let ms = |us: u64| us as f64 / 1000.0;
    if args.json || context.output == Output::Json {
        say!(
            "{}",
            json!({
                "commits": all.len(),
                "offsets_per_commit": partitions,
                "offsets_per_sec": offsets_per_sec,
                "p50_ms": ms(all.value_at_quantile(0.5)),
                "p99_ms": ms(all.value_at_quantile(0.99)),
            })
        );
    } else {
        say!(
            "{} commits of {partitions} offsets: {offsets_per_sec:.0} offsets/s, latency p50 {:.2} ms, p99 {:.2} ms",
            all.len(),
            ms(all.value_at_quantile(0.5)),
            ms(all.value_at_quantile(0.99)),
        );
    }
    Ok(ExitCode::SUCCESS)
}
