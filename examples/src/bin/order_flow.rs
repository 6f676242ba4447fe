//! The order flow: an order service publishes `OrderCreated` events keyed by order id to
//! `orders`; the payment, inventory and email services each read every event as a consumer
//! group of their own, with two workers in each group sharing the topic's partitions.
//! Publish once, fan out to many; scale a service by adding workers to its group.
//!
//! `cargo run -p spool-examples --bin order_flow [ORDERS]` (with `spool dev` running).
//! Run it again: each group resumes where it left off.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use spool_client::{
    Client, Consumer, ConsumerConfig, GroupConfig, GroupEvent, OffsetReset, Producer,
    ProducerConfig, ProducerRecord,
};

const TOPIC: &str = "orders";
const WORKERS: usize = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let orders: u64 = std::env::args().nth(1).map_or(Ok(100), |n| n.parse())?;
    let client = spool_examples::connect().await?;
    spool_examples::ensure_topic(&client, TOPIC, 3).await?;
    // Events of this run carry its id, so a service counts this run's orders only.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        .to_string();

    let mut services = Vec::new();
    for name in ["payment", "inventory", "email"] {
        let handled = Arc::new(Mutex::new(BTreeSet::new()));
        for worker in 0..WORKERS {
            let consumer = service_worker(&client, name);
            services.push(tokio::spawn(run_worker(
                name,
                worker,
                consumer,
                Arc::clone(&handled),
                run.clone(),
                orders,
            )));
        }
    }

    let producer = Producer::new(client, ProducerConfig::default());
    let mut deliveries = Vec::new();
    for id in 0..orders {
        let order_id = format!("order-{id:05}");
        let event = json!({
            "type": "OrderCreated", "run": run, "order_id": order_id, "amount_cents": 1000 + id * 7,
        });
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
        service.await??;
    }
    Ok(())
}

/// One worker of a service's group. A group without committed offsets starts at the
/// beginning, so no event published while the workers join is missed.
fn service_worker(client: &Client, service: &str) -> spool_client::GroupConsumer {
    let config = ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut group = GroupConfig::new(format!("{service}-service"), &[TOPIC]);
    group.auto_commit = Some(Duration::from_millis(500));
    Consumer::new(client.clone(), config).subscribe(group)
}

/// Reads `orders` events and does this service's part for each order of this run, until
/// the service (all its workers together) has handled every one.
async fn run_worker(
    service: &'static str,
    worker: usize,
    mut consumer: spool_client::GroupConsumer,
    handled: Arc<Mutex<BTreeSet<String>>>,
    run: String,
    orders: u64,
) -> anyhow::Result<()> {
    let done = |handled: &Mutex<BTreeSet<String>>| {
        handled.lock().map_or(true, |h| h.len() as u64 >= orders)
    };
    let mut mine = 0u64;
    while !done(&handled) {
        let event =
            match tokio::time::timeout(Duration::from_millis(200), consumer.next_event()).await {
                Ok(event) => event?,
                Err(_) => continue,
            };
        match event {
            GroupEvent::Record(record) => {
                let event: serde_json::Value =
                    serde_json::from_slice(record.value.as_deref().unwrap_or_default())?;
                if event["run"].as_str() == Some(run.as_str())
                    && let (Some(order), Ok(mut handled)) =
                        (event["order_id"].as_str(), handled.lock())
                {
                    handled.insert(order.to_string());
                    mine += 1;
                }
            }
            GroupEvent::Assigned(partitions) => {
                println!("{service} worker {worker}: assigned {partitions:?}");
            }
            GroupEvent::Revoked(partitions) | GroupEvent::Lost(partitions) => {
                println!("{service} worker {worker}: gave up {partitions:?}");
            }
        }
    }
    consumer.close().await?;
    let action = match service {
        "payment" => "charged",
        "inventory" => "reserved stock for",
        _ => "sent a confirmation for",
    };
    println!("{service} service, worker {worker}: {action} {mine} orders");
    Ok(())
}
