//! Produces ten greetings to `greetings` and prints where each landed.
//!
//! `cargo run -p spool-examples --bin producer` (with `spool dev` running).

use spool_client::{Producer, ProducerConfig, ProducerRecord};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = spool_examples::connect().await?;
    spool_examples::ensure_topic(&client, "greetings", 3).await?;
    let producer = Producer::new(client, ProducerConfig::default());
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let record = ProducerRecord::new("greetings", format!("hello #{i}"))
            .key(format!("user-{}", i % 4))
            .header("source", "example");
        // `send` returns once the record is batched; awaiting the delivery waits for the ack.
        deliveries.push(producer.send(record).await?);
    }
    for delivery in deliveries {
        let meta = delivery.await?;
        println!("{}/{} offset {}", meta.topic, meta.partition, meta.offset);
    }
    producer.close().await;
    Ok(())
}
