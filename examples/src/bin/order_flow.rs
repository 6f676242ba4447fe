//! The order flow: an order service publishes `OrderCreated` events keyed by order id to
//! `orders`; the payment, inventory and email services each read every event, on their
//! own, at their own pace: publish once, fan out to many.
//!
//! `cargo run -p spool-examples --bin order_flow [ORDERS]` (with `spool dev` running).

use std::collections::BTreeSet;

use serde_json::json;
use spool_client::{
    Client, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord, SeekTo,
};

const TOPIC: &str = "orders";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let orders: u64 = std::env::args().nth(1).map_or(Ok(100), |n| n.parse())?;
    let client = spool_examples::connect().await?;
    let partitions = spool_examples::ensure_topic(&client, TOPIC, 3).await?;

    // Each service starts at the end of the topic: it sees the events published from now.
    let mut services = Vec::new();
    for name in ["payment", "inventory", "email"] {
        let consumer = service_consumer(&client, partitions).await?;
        services.push(tokio::spawn(run_service(name, consumer, orders)));
    }

    let producer = Producer::new(client, ProducerConfig::default());
    let mut deliveries = Vec::new();
    for id in 0..orders {
        let order_id = format!("order-{id:05}");
        let event =
            json!({"type": "OrderCreated", "order_id": order_id, "amount_cents": 1000 + id * 7});
        let record = ProducerRecord::new(TOPIC, event.to_string())
            .key(order_id)
            .header("event-type", "OrderCreated");
        deliveries.push(producer.send(record).await?);
    }
    for delivery in deliveries {
        delivery.await?;
    }
    producer.close().await;
    println!("order service: published {orders} OrderCreated events");

    for service in services {
        let (name, seen) = service.await??;
        anyhow::ensure!(seen == orders, "{name} saw {seen} of {orders} orders");
    }
    Ok(())
}

async fn service_consumer(client: &Client, partitions: u32) -> anyhow::Result<Consumer> {
    let config = ConsumerConfig {
        offset_reset: OffsetReset::Latest,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config);
    let assignment: Vec<(&str, u32)> = (0..partitions).map(|p| (TOPIC, p)).collect();
    consumer.assign(&assignment).await?;
    for p in 0..partitions {
        consumer.seek(TOPIC, p, SeekTo::End).await?;
    }
    Ok(consumer)
}

/// Reads `orders` events and does this service's part for each distinct order.
async fn run_service(
    name: &'static str,
    mut consumer: Consumer,
    orders: u64,
) -> anyhow::Result<(&'static str, u64)> {
    let mut handled = BTreeSet::new();
    while (handled.len() as u64) < orders {
        let Some(record) = consumer.next().await else {
            break;
        };
        let record = record?;
        let event: serde_json::Value =
            serde_json::from_slice(record.value.as_deref().unwrap_or_default())?;
        let order_id = event["order_id"].as_str().unwrap_or_default().to_string();
        handled.insert(order_id);
    }
    let action = match name {
        "payment" => "charged",
        "inventory" => "reserved stock for",
        _ => "sent a confirmation for",
    };
    println!("{name} service: {action} {} orders", handled.len());
    Ok((name, handled.len() as u64))
}
