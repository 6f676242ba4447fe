//! Runs a local cluster of `spool serve` processes for benchmarks and experiments.
//!
//! - `up`: start N nodes, place topics, print the bootstrap list, run until stdin closes.
//! - `failover`: kill the leader of a replicated partition over and over and measure the
//!   time from the kill to the first acks=all produce the new leader acknowledges.
//! - `idle`: place many replicated partitions, let them idle, and measure the nodes' CPU
//!   and memory from /proc.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use spool_client::{Acks, PartitionBatches};
use spool_testkit::load::{Load, check_acknowledged};
use spool_testkit::{ClusterOptions, TestCluster, wait_for};

#[derive(Parser)]
struct Args {
    /// The spool binary to run nodes with.
    #[arg(long, default_value = "target/release/spool")]
    spool: PathBuf,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Partition groups' heartbeat interval (ms).
    #[arg(long, default_value_t = 150)]
    heartbeat_ms: u64,
    #[arg(long, default_value_t = 500)]
    election_min_ms: u64,
    #[arg(long, default_value_t = 800)]
    election_max_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the cluster, place topics (NAME:PARTITIONS:REPLICAS), print the bootstrap list.
    Up {
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
    /// Kill partition leaders and time the failover.
    Failover {
        #[arg(long, default_value_t = 10)]
        kills: usize,
    },
    /// Kill nodes with SIGKILL under acks=all load, the controller leader and partition
    /// leaders in turn, restart them, then check that every acknowledged record is at its
    /// offset on every replica. Exits non-zero if one is not.
    Chaos {
        #[arg(long, default_value_t = 6)]
        kills: usize,
        #[arg(long, default_value_t = 6)]
        partitions: u32,
        /// Records acknowledged between one kill and the next.
        #[arg(long, default_value_t = 2000)]
        acked_between: usize,
    },
    /// Measure the idle cost of many replicated partitions.
    Idle {
        #[arg(long, default_value_t = 1000)]
        partitions: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut options = ClusterOptions::processes(args.nodes, &args.spool);
    options.heartbeat_ms = args.heartbeat_ms;
    options.election_min_ms = args.election_min_ms;
    options.election_max_ms = args.election_max_ms;
    let mut cluster = TestCluster::start(options).await?;
    match args.command {
        Command::Up { topics } => {
            for spec in topics {
                let parts: Vec<&str> = spec.split(':').collect();
                let [name, partitions, replicas] = parts[..] else {
                    return Err(format!("--topic {spec}: expected NAME:PARTITIONS:REPLICAS").into());
                };
                cluster
                    .create_topic(name, partitions.parse()?, replicas.parse()?)
                    .await?;
                for p in 0..partitions.parse::<u32>()? {
                    cluster.leader(name, p, Duration::from_secs(30)).await?;
                }
            }
            println!("bootstrap={}", cluster.addresses().join(","));
            // Run until stdin closes (Ctrl-D, or the parent goes away), Ctrl-C or SIGTERM;
            // the nodes and their data directories go with the cluster.
            // A plain thread, not `spawn_blocking`: the runtime would wait for it at exit,
            // and stdin may never close.
            let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut sink);
                let _ = closed.send(());
            });
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = stdin_closed => {}
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Command::Failover { kills } => failover(&mut cluster, kills).await?,
        Command::Chaos {
            kills,
            partitions,
            acked_between,
        } => chaos(&mut cluster, kills, partitions, acked_between).await?,
        Command::Idle {
            partitions,
            seconds,
        } => idle(&mut cluster, partitions, seconds).await?,
    }
    Ok(())
}

fn batch() -> bytes::Bytes {
    let mut builder =
        spool_log::batch::BatchBuilder::new(spool_log::batch::BatchOptions::default());
    builder.append(0, None, Some(b"failover probe"), &[]);
    builder.finish()
}

async fn failover(
    cluster: &mut TestCluster,
    kills: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    cluster.create_topic("failover", 1, 3).await?;
    let mut times = Vec::new();
    for round in 0..kills {
        let leader = cluster
            .leader("failover", 0, Duration::from_secs(30))
            .await?;
        cluster.kill(leader).await?;
        let killed = Instant::now();
        // Probe the survivors until one acknowledges an acks=all write.
        let survivors: Vec<u64> = cluster.running();
        'probe: loop {
            for node in &survivors {
                let Ok(client) = cluster.node_client(*node).await else {
                    continue;
                };
                let answer = client
                    .produce(
                        Acks::All,
                        Duration::from_millis(500),
                        vec![PartitionBatches {
                            topic: "failover".into(),
                            partition: 0,
                            batches: vec![batch()],
                            leader_epoch: None,
                        }],
                    )
                    .await;
                if let Ok(results) = answer
                    && results.partitions.first().is_some_and(Result::is_ok)
                {
                    break 'probe;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = killed.elapsed();
        println!(
            "kill {}: node {leader}, first acks=all write after {took:?}",
            round + 1
        );
        times.push(took);
        cluster.restart(leader).await?;
        cluster
            .replicas_agree(&cluster.node_ids(), "failover", 0, Duration::from_secs(30))
            .await?;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "failover over {} kills: p50 {:.0} ms, max {:.0} ms",
        times.len(),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    Ok(())
}

async fn chaos(
    cluster: &mut TestCluster,
    kills: usize,
    partitions: u32,
    acked_between: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    const TOPIC: &str = "chaos";
    cluster.create_topic(TOPIC, partitions, 3).await?;
    for p in 0..partitions {
        cluster.leader(TOPIC, p, Duration::from_secs(30)).await?;
    }
    let load = Load::start(cluster.client().await?, TOPIC, partitions, Acks::All, 2, 64);
    let progress = |load: &Load, from: usize| {
        let target = from + acked_between;
        let load_count = load.acked_count();
        (load_count >= target).then_some(load_count)
    };
    wait_for(Duration::from_secs(60), "load to start", || async {
        progress(&load, 0)
    })
    .await?;
    for round in 0..kills {
        let client = cluster.client().await?;
        let victim = if round % 2 == 0 {
            client.describe_cluster().await?.controller_leader
        } else {
            let partition = (round / 2) as u32 % partitions;
            Some(
                cluster
                    .leader(TOPIC, partition, Duration::from_secs(30))
                    .await?,
            )
        };
        let Some(victim) = victim else {
            return Err("no controller leader is known".into());
        };
        let role = if round % 2 == 0 {
            "controller leader"
        } else {
            "partition leader"
        };
        cluster.kill(victim).await?;
        let killed = Instant::now();
        let at_kill = load.acked_count();
        wait_for(Duration::from_secs(60), "writes after the kill", || async {
            progress(&load, at_kill)
        })
        .await?;
        println!(
            "kill {}: node {victim} ({role}); {acked_between} more records acknowledged after {:?}",
            round + 1,
            killed.elapsed()
        );
        cluster.restart(victim).await?;
        cluster.wait_registered(Duration::from_secs(60)).await?;
    }
    let report = load.finish().await;
    let described = cluster.client().await?.describe_topic(TOPIC).await?;
    let replicas: Vec<Vec<u64>> = described
        .partitions
        .iter()
        .map(|p| p.replicas.clone())
        .collect();
    let stored =
        check_acknowledged(cluster, TOPIC, &replicas, &report, Duration::from_secs(120)).await?;
    println!(
        "{} records acknowledged, every one at its offset on all {} replicas of its \
         partition; {} deliveries failed (never acknowledged); {stored} records stored",
        report.acked.len(),
        replicas.first().map_or(0, Vec::len),
        report.failed
    );
    for (reason, count) in &report.failures {
        println!("  {count} failed: {reason}");
    }
    Ok(())
}

/// (utime + stime in clock ticks, resident bytes) of a process.
fn usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    Some((ticks, rss_kb * 1024))
}

async fn idle(
    cluster: &mut TestCluster,
    partitions: u32,
    seconds: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let pids: Vec<u32> = cluster
        .node_ids()
        .iter()
        .filter_map(|n| cluster.pid(*n))
        .collect();
    let before: u64 = pids.iter().filter_map(|p| usage(*p)).map(|u| u.1).sum();
    let placed = Instant::now();
    cluster.create_topic("idle", partitions, 3).await?;
    for p in 0..partitions {
        cluster.leader("idle", p, Duration::from_secs(120)).await?;
    }
    println!(
        "{partitions} partitions x 3 replicas placed and led after {:?}",
        placed.elapsed()
    );
    // Let elections and first heartbeats settle before measuring.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start: Vec<(u64, u64)> = pids.iter().filter_map(|p| usage(*p)).collect();
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let end: Vec<(u64, u64)> = pids.iter().filter_map(|p| usage(*p)).collect();
    let wall = began.elapsed().as_secs_f64();
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu: f64 = start
        .iter()
        .zip(&end)
        .map(|(s, e)| (e.0 - s.0) as f64 / ticks_per_sec)
        .sum::<f64>()
        / wall;
    let rss: u64 = end.iter().map(|u| u.1).sum();
    let replicas = u64::from(partitions) * 3;
    println!(
        "idle for {wall:.0} s: {:.1}% of one core in total; resident {} MiB in total, {} KiB per replica ({} KiB before placing)",
        cpu * 100.0,
        rss / (1024 * 1024),
        rss.saturating_sub(before) / 1024 / replicas,
        before / 1024,
    );
    Ok(())
}
