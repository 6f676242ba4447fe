//! `spool demo producer`: writes `OrderCreated` records at a steady rate until stopped,
//! keyed by order so that one order's events stay in one partition. The compose cluster's
//! `producer` service runs it; `spool consume --group` members share what it writes.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use spool_client::{NewTopic, Producer, ProducerConfig, ProducerRecord};

use crate::Context;

#[derive(Debug, Args)]
pub struct ProducerArgs {
    #[arg(long, env = "SPOOL_DEMO_TOPIC", default_value = "orders")]
    topic: String,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 12)]
    partitions: u32,
    /// Records per second.
    #[arg(long, env = "SPOOL_DEMO_RATE", default_value_t = 100)]
    rate: u32,
}

pub async fn run(args: ProducerArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let client = context.connect().await?;
    if client.describe_topic(&args.topic).await.is_err() {
        let created = client
            .create_topic(NewTopic {
                name: args.topic.clone(),
                partitions: args.partitions,
                ..NewTopic::default()
            })
            .await;
        // Another producer may have created it meanwhile.
        if let Err(error) = created
            && client.describe_topic(&args.topic).await.is_err()
        {
            return Err(error.into());
        }
    }
    let producer = Producer::new(client, ProducerConfig::default());
    const TICK: Duration = Duration::from_millis(20);
    let per_tick = f64::from(args.rate.max(1)) * TICK.as_secs_f64();
    let mut pace = tokio::time::interval(TICK);
    let mut stop = std::pin::pin!(crate::node::wait_for_signal());
    let (mut due, mut next, mut last_report) = (0.0, 0u64, Instant::now());
    loop {
        tokio::select! {
            _ = pace.tick() => {}
            _ = &mut stop => break,
        }
        due += per_tick;
        while due >= 1.0 {
            due -= 1.0;
            let record = ProducerRecord::new(args.topic.as_str(), format!("OrderCreated {next}"))
                .key(format!("order-{next}").into_bytes());
            // Delivery is awaited by the producer's flush; failures are retried inside.
            drop(producer.send(record).await?);
            next += 1;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!("produced {next} orders to {}", args.topic);
        }
    }
    producer.flush().await;
    eprintln!("produced {next} orders to {}", args.topic);
    Ok(ExitCode::SUCCESS)
}
