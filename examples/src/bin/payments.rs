//! Consume, transform, produce, exactly once: the payment service reads `OrderCreated`
//! events from `orders` as the group `payment-service`, writes a `PaymentCharged` event
//! per order to `payments`, and commits the orders it read in the same transaction as the
//! payments it wrote. A crash anywhere leaves either both (the next run goes on after
//! them) or neither (the next run reads those orders again and writes their payments
//! once); a new instance with the same transactional id fences a zombie of the old one.
//! Readers of `payments` at read_committed see each payment once.
//!
//! `cargo run -p spool-examples --bin payments [ORDERS]` (with `spool dev` running):
//! publishes ORDERS orders (default 100), then processes orders until that many payments
//! of this run are written, and prints them counted per order.
//!
//! `cargo run -p spool-examples --bin payments serve`: only processes, every order that
//! comes, until stopped. Kill it at any moment and start it again: no order is charged
//! twice or skipped.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::json;
use spool_client::{
    Client, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig, GroupConsumer, GroupEvent,
    IsolationLevel, OffsetReset, OffsetToCommit, Producer, ProducerConfig, ProducerRecord,
};

const ORDERS: &str = "orders";
const PAYMENTS: &str = "payments";
const GROUP: &str = "payment-service";
/// The transactional id: the same for every run of this one instance, so that a new run
/// fences what is left of the last one. (A run that crashed still holds its partitions in
/// the group until its session times out; the new run gets them then.)
const INSTANCE: &str = "payment-service-0";
/// Orders handled per transaction at most.
const BATCH: usize = 50;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = spool_examples::connect().await?;
    spool_examples::ensure_topic(&client, ORDERS, 3).await?;
    spool_examples::ensure_topic(&client, PAYMENTS, 3).await?;
    match std::env::args().nth(1).as_deref() {
        Some("serve") => serve(&client).await,
        count => demo(&client, count.map_or(Ok(100), str::parse)?).await,
    }
}

/// Processes orders until stopped. A failed transaction (its coordinator or a leader
/// lost for longer than the SDK retries, say) starts the service again: the new start
/// aborts whatever the failed one left open, and reading resumes at the committed offsets.
async fn serve(client: &Client) -> anyhow::Result<()> {
    loop {
        let mut service = match PaymentService::start(client).await {
            Ok(service) => service,
            Err(error) => {
                eprintln!("payment service: could not start ({error:#}); trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let error = loop {
            if let Err(error) = service.process_batch(None).await {
                break error;
            }
        };
        eprintln!("payment service: {error:#}; starting again");
        if let Err(error) = service.close().await {
            eprintln!("payment service: leaving the group: {error:#}");
        }
    }
}

/// Publishes `orders` orders tagged with this run, charges them, and checks that a
/// read_committed reader sees each payment once.
async fn demo(client: &Client, orders: u64) -> anyhow::Result<()> {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        .to_string();
    let orders_out = Producer::new(client.clone(), ProducerConfig::default());
    for id in 0..orders {
        let order_id = format!("order-{id:05}");
        let event = json!({"type": "OrderCreated", "run": run, "order_id": order_id, "amount_cents": 1000 + id * 7});
        orders_out
            .send(ProducerRecord::new(ORDERS, event.to_string()).key(order_id))
            .await?;
    }
    orders_out.close().await;
    println!("published {orders} orders");

    let mut service = PaymentService::start(client).await?;
    let mut charged = 0u64;
    while charged < orders {
        charged += service.process_batch(Some(&run)).await?;
    }
    service.close().await?;

    // What a read_committed reader of `payments` sees of this run.
    let mut reader = Consumer::new(
        client.clone(),
        ConsumerConfig {
            offset_reset: OffsetReset::Earliest,
            isolation: IsolationLevel::ReadCommitted,
            ..ConsumerConfig::default()
        },
    );
    let partitions = client.describe_topic(PAYMENTS).await?.partitions.len() as u32;
    let assignment: Vec<(&str, u32)> = (0..partitions).map(|p| (PAYMENTS, p)).collect();
    reader.assign(&assignment).await?;
    let mut seen: HashMap<String, u32> = HashMap::new();
    while (seen.len() as u64) < orders {
        let Ok(Some(record)) = tokio::time::timeout(Duration::from_secs(10), reader.next()).await
        else {
            break;
        };
        let payment: serde_json::Value =
            serde_json::from_slice(record?.value.as_deref().unwrap_or_default())?;
        if payment["run"].as_str() == Some(run.as_str()) {
            let order = payment["order_id"].as_str().unwrap_or_default().to_string();
            *seen.entry(order).or_default() += 1;
        }
    }
    let twice = seen.values().filter(|n| **n > 1).count();
    println!(
        "payment service: charged {} of {orders} orders, {twice} twice",
        seen.len()
    );
    anyhow::ensure!(
        seen.len() as u64 == orders && twice == 0,
        "not exactly once"
    );
    Ok(())
}

/// The group member reading orders and the transactional producer writing payments.
struct PaymentService {
    consumer: GroupConsumer,
    payments: Producer,
}

impl PaymentService {
    async fn start(client: &Client) -> anyhow::Result<Self> {
        // The group's committed offsets move only with the transactions: no automatic
        // commits.
        let config = ConsumerConfig {
            offset_reset: OffsetReset::Earliest,
            isolation: IsolationLevel::ReadCommitted,
            ..ConsumerConfig::default()
        };
        let mut group = GroupConfig::new(GROUP, &[ORDERS]);
        group.auto_commit = None;
        let consumer = Consumer::new(client.clone(), config).subscribe(group);
        let payments = Producer::new(
            client.clone(),
            ProducerConfig {
                transactional_id: Some(INSTANCE.into()),
                ..ProducerConfig::default()
            },
        );
        // Fences an earlier run and ends its open transaction (aborted): its orders'
        // offsets are then the committed ones again, and this run reads from them.
        payments.init_transactions().await?;
        eprintln!("payment service: started as {INSTANCE}");
        Ok(Self { consumer, payments })
    }

    /// Charges the orders that arrive within a short wait (up to BATCH) in one
    /// transaction with their offsets; with `run`, only that run's orders are charged
    /// (the others are passed over). Returns how many were charged.
    async fn process_batch(&mut self, run: Option<&str>) -> anyhow::Result<u64> {
        let mut batch: Vec<ConsumerRecord> = Vec::new();
        while batch.len() < BATCH {
            match tokio::time::timeout(Duration::from_millis(100), self.consumer.next_event()).await
            {
                Ok(Ok(GroupEvent::Record(record))) => batch.push(record),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let txn = self.payments.transaction().await?;
        let mut next: BTreeMap<(String, u32), i64> = BTreeMap::new();
        let mut charged = 0;
        for record in &batch {
            let order: serde_json::Value =
                serde_json::from_slice(record.value.as_deref().unwrap_or_default())?;
            if run.is_none_or(|run| order["run"].as_str() == Some(run)) {
                let payment = json!({
                    "type": "PaymentCharged", "run": order["run"],
                    "order_id": order["order_id"], "amount_cents": order["amount_cents"],
                });
                let key = order["order_id"].as_str().unwrap_or_default().to_string();
                txn.send(ProducerRecord::new(PAYMENTS, payment.to_string()).key(key))
                    .await?;
                charged += 1;
            }
            next.insert(
                (record.topic.to_string(), record.partition),
                record.offset + 1,
            );
        }
        let offsets = next
            .into_iter()
            .map(|((topic, partition), offset)| OffsetToCommit {
                topic,
                partition,
                offset,
                leader_epoch: -1,
                metadata: String::new(),
            })
            .collect();
        txn.send_offsets(&self.consumer.group_metadata(), offsets)
            .await?;
        txn.commit().await?;
        Ok(charged)
    }

    async fn close(self) -> anyhow::Result<()> {
        self.payments.close().await;
        self.consumer.close().await?;
        Ok(())
    }
}
