//! Prints every record of `greetings` from the beginning, then waits for more (Ctrl-C
//! stops it).
//!
//! `cargo run -p spool-examples --bin consumer` (with `spool dev` running).

use spool_client::{Consumer, ConsumerConfig, OffsetReset};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = spool_examples::connect().await?;
    let partitions = spool_examples::ensure_topic(&client, "greetings", 3).await?;
    let config = ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, config);
    let assignment: Vec<(&str, u32)> = (0..partitions).map(|p| ("greetings", p)).collect();
    consumer.assign(&assignment).await?;
    loop {
        tokio::select! {
            record = consumer.next() => {
                let Some(record) = record else { return Ok(()) };
                let record = record?;
                let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned();
                println!("{}/{} @{}: {value}", record.topic, record.partition, record.offset);
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
