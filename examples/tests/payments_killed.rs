//! The payment service (consume `orders`, produce `payments`, commit the orders read, in
//! one transaction) killed with SIGKILL again and again while orders keep coming, each
//! time while a transaction of it is open: every other time once that transaction has
//! written payments, and the other times right after the node coordinating its
//! transactions was killed. Then it is left to catch up: every order is charged exactly
//! once as a read_committed reader sees `payments`, though the killed runs left aborted
//! payments behind (read_uncommitted sees them).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use spool_client::{Client, IsolationLevel, OffsetSpec, Producer, ProducerConfig, ProducerRecord};
use spool_testkit::{ClusterOptions, TestCluster, rng::Rng, wait_for};

/// Deadlines: generous, as the first run also creates the internal topics of a young
/// cluster, on a machine that may be running other tests.
const WITHIN: Duration = Duration::from_secs(120);
const PARTITIONS: u32 = 3;
const INSTANCE: &str = "payment-service-0";

/// What one partition of `payments` holds, read to its end: the order ids of the records
/// and how many aborted transactions reach into them.
struct Payments {
    order_ids: Vec<String>,
    aborted: usize,
}

async fn read_payments(cluster: &TestCluster, isolation: IsolationLevel) -> Payments {
    let mut payments = Payments {
        order_ids: Vec::new(),
        aborted: 0,
    };
    for partition in 0..PARTITIONS {
        let read = cluster
            .read_to_end("payments", partition, isolation, WITHIN)
            .await
            .expect("payments read");
        payments.aborted += read.aborted.len();
        for record in read.records {
            let value: serde_json::Value =
                serde_json::from_slice(&record.value.expect("a value")).expect("json");
            let id = value["order_id"].as_str().expect("an order id");
            payments.order_ids.push(id.to_string());
        }
    }
    payments
}

/// Publishes orders in small bursts until told to stop; returns how many.
fn publish_orders(client: Client, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let producer = Producer::new(client, ProducerConfig::default());
        let mut published = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut deliveries = Vec::new();
            for _ in 0..20 {
                let order_id = format!("order-{published:06}");
                let event = serde_json::json!({"type": "OrderCreated", "order_id": order_id, "amount_cents": 1000 + published});
                let record = ProducerRecord::new("orders", event.to_string()).key(order_id);
                deliveries.push(producer.send(record).await.expect("order queued"));
                published += 1;
            }
            for delivery in deliveries {
                delivery.await.expect("order acknowledged");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        producer.close().await;
        published
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn start_service(bootstrap: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_payments"))
        .arg("serve")
        .env("SPOOL_BOOTSTRAP", bootstrap)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the payment service starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payment_service_killed_mid_transaction_charges_every_order_once() {
    killed_repeatedly().await;
}

async fn transaction_coordinator(client: &Client) -> Option<(u64, Client)> {
    let (node, address) = client.find_transaction_coordinator(INSTANCE).await.ok()?;
    Some((node, client.to_node(node, &address).await.ok()?))
}

/// Whether an open transaction holds records in some partition of `payments`.
async fn payments_unstable(client: &Client) -> bool {
    let mut queries = Vec::new();
    for partition in 0..PARTITIONS {
        queries.push(("payments".to_string(), partition, OffsetSpec::LastStable));
        queries.push(("payments".to_string(), partition, OffsetSpec::Latest));
    }
    let Ok(answers) = client.list_offsets(queries).await else {
        return false;
    };
    answers
        .chunks(2)
        .any(|pair| matches!(pair, [Ok(stable), Ok(end)] if stable < end))
}

fn signal(service: &tokio::process::Child, signal: rustix::process::Signal) {
    let pid = service
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        .expect("the service runs");
    rustix::process::kill_process(pid, signal).expect("signalled");
}

/// Waits until the service's open transaction has written payments and freezes the
/// service (SIGSTOP) there; a freeze that came after the transaction ended (its commit
/// was already asked for) is let go (SIGCONT) and tried again.
async fn frozen_with_payments_open(client: &Client, service: &tokio::process::Child) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service's transaction never held payments"
        );
        if !payments_unstable(client).await {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        signal(service, rustix::process::Signal::STOP);
        let still_open = match transaction_coordinator(client).await {
            Some((_, coordinator)) => coordinator
                .describe_transaction(INSTANCE)
                .await
                .is_ok_and(|txn| txn.state == "ongoing"),
            None => false,
        };
        if still_open && payments_unstable(client).await {
            return;
        }
        signal(service, rustix::process::Signal::CONT);
    }
}

async fn killed_repeatedly() {
    let kills = spool_testkit::rng::env_u64("SPOOL_PIPELINE_KILLS", 6);
    let seed = spool_testkit::rng::seed_from_env("SPOOL_PIPELINE_SEED");
    eprintln!("seed {seed}, {kills} kills");
    let mut rng = Rng::new(seed);

    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    cluster
        .create_topic("orders", PARTITIONS, 3)
        .await
        .expect("orders");
    cluster
        .create_topic("payments", PARTITIONS, 3)
        .await
        .expect("payments");
    let bootstrap = cluster.addresses().join(",");
    let client = cluster.client().await.expect("client");

    // A killed run's partitions go to the next once its session times out: soon, here.
    let (node, address) = client
        .find_coordinator("payment-service")
        .await
        .expect("group coordinator");
    client
        .to_node(node, &address)
        .await
        .expect("coordinator")
        .alter_group(
            "payment-service",
            Some(Duration::from_secs(2)),
            Some(Duration::from_millis(500)),
        )
        .await
        .expect("group session timeout set");

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_orders(client.clone(), Arc::clone(&stop));

    // Each run is killed while a transaction it began is open (not one a killed run left),
    // frozen first or after its transaction coordinator was killed.
    let seen = Arc::new(parking_lot::Mutex::new(String::new()));
    for kill in 0..kills {
        let started_ms = now_ms();
        let mut service = start_service(&bootstrap);
        let open = wait_for(WITHIN, "a transaction of this run open", || {
            let client = client.clone();
            let seen = Arc::clone(&seen);
            async move {
                let Some((node, coordinator)) = transaction_coordinator(&client).await else {
                    *seen.lock() = "no transaction coordinator found".into();
                    return None;
                };
                let txn = match coordinator.describe_transaction(INSTANCE).await {
                    Ok(txn) => txn,
                    Err(error) => {
                        *seen.lock() = format!("node {node}: {error}");
                        return None;
                    }
                };
                *seen.lock() = format!("node {node}: {txn:?}");
                // Begun after this run started: not one a killed run left open.
                let ours = txn.started_ms >= started_ms;
                if !ours || txn.state != "ongoing" || txn.partitions.is_empty() {
                    return None;
                }
                Some((txn.producer_epoch, node))
            }
        })
        .await
        .unwrap_or_else(|error| panic!("run {kill}: {error}; last seen: {}", seen.lock()));
        let (open, coordinator) = open;
        if kill % 2 == 0 {
            // Every other run is killed only once its open transaction has written
            // payments: frozen when they show, and killed if its transaction is still open.
            frozen_with_payments_open(&client, &service).await;
        }
        let node_killed = (kill % 2 == 1).then_some(coordinator);
        if let Some(node) = node_killed {
            cluster.kill(node).await.expect("coordinator killed");
            // The service goes on with a new coordinator for a while, or not.
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        } else if kill % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(rng.below(5))).await;
        }
        service.kill().await.expect("killed");
        eprintln!(
            "kill {kill}: the run at epoch {open} killed with its transaction open{}",
            node_killed.map_or(String::new(), |n| format!(
                ", and before it node {n}, its transaction coordinator"
            ))
        );
        if let Some(node) = node_killed {
            cluster.restart(node).await.expect("node restarted");
        }
    }

    stop.store(true, Ordering::Relaxed);
    let published = publisher.await.expect("publisher");
    let mut service = start_service(&bootstrap);
    let deadline = tokio::time::Instant::now() + WITHIN;
    let committed = loop {
        let committed = read_payments(&cluster, IsolationLevel::ReadCommitted).await;
        let mut distinct = committed.order_ids.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() as u64 >= published {
            break committed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {published} orders charged in time",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    service.kill().await.expect("killed");

    let mut charges: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &committed.order_ids {
        *charges.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = charges.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "orders charged more than once: {twice:?}");
    let expected: Vec<String> = (0..published).map(|n| format!("order-{n:06}")).collect();
    assert_eq!(
        charges.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
        expected,
        "every order published is charged"
    );

    let everything = read_payments(&cluster, IsolationLevel::ReadUncommitted).await;
    eprintln!(
        "{published} orders; {} payments written, {} committed, {} aborted transactions",
        everything.order_ids.len(),
        committed.order_ids.len(),
        committed.aborted
    );
    assert!(
        committed.aborted >= (kills as usize).div_ceil(2)
            && everything.order_ids.len() > committed.order_ids.len(),
        "the kills cut transactions that had written payments"
    );
}
