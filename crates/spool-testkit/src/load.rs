//! Continuous load and its checker: a producer sends numbered values and records every
//! acknowledgement; afterwards each acknowledged value must be found at exactly the
//! offset it was acknowledged with, on every replica.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use spool_client::{
    Acks, Client, ConsumerRecord, Producer, ProducerConfig, ProducerRecord, decode_batch,
};
use tokio::task::JoinSet;

use crate::{Replicas, TestkitError, replicas_agree};

/// Acknowledged (partition, offset, value), shared by the sending tasks.
#[derive(Debug, Default)]
struct Acked(std::sync::Mutex<Vec<(u32, i64, String)>>);

/// Failed deliveries counted by reason, and the values that failed.
#[derive(Debug, Default)]
struct Failures(std::sync::Mutex<(BTreeMap<String, u64>, BTreeSet<String>)>);

impl Failures {
    fn add(&self, value: String, reason: impl std::fmt::Display) {
        // Node addresses and ids vary; the first words say what went wrong.
        let reason: String = reason.to_string().chars().take(60).collect();
        if let Ok(mut failures) = self.0.lock() {
            *failures.0.entry(reason).or_default() += 1;
            failures.1.insert(value);
        }
    }
}

/// A producer sending `prefix-N` values round-robin over partitions until stopped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Acked>,
    failed: Arc<Failures>,
    tasks: JoinSet<()>,
}

/// What the load did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// (partition, offset) -> value of every acknowledged record.
    pub acked: BTreeMap<(u32, i64), String>,
    /// Records whose delivery failed (never acknowledged; they may or may not be stored).
    pub failed: u64,
    /// The same, by the start of the error's message.
    pub failures: BTreeMap<String, u64>,
    /// The values whose delivery failed.
    pub failed_values: BTreeSet<String>,
    /// Offsets acknowledged for two records: a write that was lost (the checker fails).
    pub acked_twice: Vec<((u32, i64), String, String)>,
}

impl Load {
    /// Starts `senders` tasks, each keeping at most `in_flight` records unacknowledged.
    pub fn start(
        client: Client,
        topic: &str,
        partitions: u32,
        acks: Acks,
        senders: usize,
        in_flight: usize,
    ) -> Self {
        let producer = Arc::new(Producer::new(
            client,
            ProducerConfig {
                acks,
                request_timeout: Duration::from_secs(5),
                delivery_timeout: Duration::from_secs(60),
                ..ProducerConfig::default()
            },
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Acked::default());
        let failed = Arc::new(Failures::default());
        let mut tasks = JoinSet::new();
        for sender in 0..senders {
            let (producer, stop, acked, failed) = (
                Arc::clone(&producer),
                Arc::clone(&stop),
                Arc::clone(&acked),
                Arc::clone(&failed),
            );
            let topic = topic.to_string();
            tasks.spawn(async move {
                let mut pending = JoinSet::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    while pending.len() >= in_flight {
                        let _ = pending.join_next().await;
                    }
                    let value = format!("s{sender}-{n}");
                    let partition = (n % u64::from(partitions.max(1))) as u32;
                    n += 1;
                    let record = ProducerRecord::new(topic.clone(), Bytes::from(value.clone()))
                        .partition(partition);
                    let delivery = match producer.send(record).await {
                        Ok(delivery) => delivery,
                        Err(error) => {
                            failed.add(value, error);
                            continue;
                        }
                    };
                    let (acked, failed) = (Arc::clone(&acked), Arc::clone(&failed));
                    pending.spawn(async move {
                        match delivery.wait().await {
                            Ok(meta) => {
                                if let Ok(mut acked) = acked.0.lock() {
                                    acked.push((meta.partition, meta.offset, value));
                                }
                            }
                            Err(error) => failed.add(value, error),
                        }
                    });
                }
                while pending.join_next().await.is_some() {}
            });
        }
        Self {
            stop,
            acked,
            failed,
            tasks,
        }
    }

    /// Records acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked.0.lock().map_or(0, |a| a.len())
    }

    /// Records of `partition` acknowledged so far.
    pub fn acked_on(&self, partition: u32) -> usize {
        self.acked
            .0
            .lock()
            .map_or(0, |a| a.iter().filter(|(p, _, _)| *p == partition).count())
    }

    /// Why records failed so far, with how many failed for each reason.
    pub fn failures_so_far(&self) -> BTreeMap<String, u64> {
        self.failed
            .0
            .lock()
            .map(|f| f.0.clone())
            .unwrap_or_default()
    }

    /// Stops sending, waits for every outstanding record to settle, and reports.
    pub async fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Release);
        while self.tasks.join_next().await.is_some() {}
        let mut acked = BTreeMap::new();
        let mut acked_twice = Vec::new();
        if let Ok(all) = self.acked.0.lock() {
            for (p, o, v) in all.iter() {
                if let Some(earlier) = acked.insert((*p, *o), v.clone()) {
                    acked_twice.push(((*p, *o), earlier, v.clone()));
                }
            }
        }
        let failures = self.failures_so_far();
        let failed_values = self
            .failed
            .0
            .lock()
            .map(|f| f.1.clone())
            .unwrap_or_default();
        LoadReport {
            acked,
            failed: failures.values().sum(),
            failures,
            failed_values,
            acked_twice,
        }
    }
}

/// Checks the idempotent producer's promise on top of everything `check_acknowledged`
/// checks: each of the load's values is stored at most once, in the partition it was sent
/// to, and is either acknowledged (then in send order among its sender's acknowledged
/// values) or one whose delivery failed (which may or may not be stored, once at most).
/// Other writers' values in the topic are left out; a value that looks like the load's
/// but is not one it sent fails the check. Returns how many of the load's records the
/// partitions hold.
pub async fn check_exactly_once(
    cluster: &impl Replicas,
    topic: &str,
    replicas: &[Vec<u64>],
    report: &LoadReport,
    within: Duration,
) -> Result<usize, TestkitError> {
    let broken = |reason: String| TestkitError::Call { node: 0, reason };
    check_acknowledged(cluster, topic, replicas, report, within).await?;
    let acknowledged: std::collections::HashSet<&str> =
        report.acked.values().map(String::as_str).collect();
    let partitions = replicas.len() as u64;
    let mut total = 0;
    for (partition, nodes) in replicas.iter().enumerate() {
        let partition = partition as u32;
        let batches = replicas_agree(cluster, nodes, topic, partition, within).await?;
        let mut seen = std::collections::HashSet::new();
        // sender -> last acknowledged number seen in this partition
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for record in records_of(topic, partition, &batches) {
            let value = record.value.unwrap_or_default();
            let text = String::from_utf8_lossy(&value);
            let looks_like_load =
                text.starts_with('s') && text[1..].starts_with(|c: char| c.is_ascii_digit());
            if !looks_like_load {
                continue;
            }
            let at = record.offset;
            let Some((sender, n)) = load_value(&text) else {
                return Err(broken(format!(
                    "partition {partition} offset {at}: {text:?} is no value the load wrote"
                )));
            };
            total += 1;
            if n % partitions != u64::from(partition) {
                return Err(broken(format!(
                    "partition {partition} offset {at}: {text} was sent to another partition"
                )));
            }
            if !seen.insert((sender, n)) {
                return Err(broken(format!(
                    "partition {partition} offset {at}: {text} is stored twice"
                )));
            }
            if acknowledged.contains(text.as_ref()) {
                if let Some(before) = last.insert(sender, n)
                    && before >= n
                {
                    return Err(broken(format!(
                        "partition {partition} offset {at}: {text} is stored after \
                         s{sender}-{before}, sent later"
                    )));
                }
            } else if !report.failed_values.contains(text.as_ref()) {
                return Err(broken(format!(
                    "partition {partition} offset {at}: {text} is stored, but was neither \
                     acknowledged nor failed"
                )));
            }
        }
    }
    if report.failed == 0 && total != report.acked.len() {
        return Err(broken(format!(
            "{total} of the load's records stored for {} acknowledged and none failed",
            report.acked.len()
        )));
    }
    Ok(total)
}

/// The sender and number of a value the load wrote (exactly `s{sender}-{n}`).
fn load_value(text: &str) -> Option<(u64, u64)> {
    let (sender, n) = text.strip_prefix('s')?.split_once('-')?;
    let (sender, n): (u64, u64) = (sender.parse().ok()?, n.parse().ok()?);
    (format!("s{sender}-{n}") == text).then_some((sender, n))
}

/// Decodes stored batches into records.
pub fn records_of(topic: &str, partition: u32, batches: &[Bytes]) -> Vec<ConsumerRecord> {
    let topic: Arc<str> = Arc::from(topic);
    let mut out = Vec::new();
    for batch in batches {
        let _ = decode_batch(&topic, partition, batch, 0, &mut out);
    }
    out
}

/// Checks every acknowledged record against what each replica holds: no offset
/// acknowledged for two records, the same batches on every replica (each decoding, no
/// offset twice), and each acknowledged value at its acknowledged offset. Returns how many
/// records the partitions hold in all (more than were acknowledged when failed deliveries
/// or retries of writes whose answer was lost were stored: at-least-once).
pub async fn check_acknowledged(
    cluster: &impl Replicas,
    topic: &str,
    replicas: &[Vec<u64>],
    report: &LoadReport,
    within: Duration,
) -> Result<usize, TestkitError> {
    let broken = |reason: String| TestkitError::Call { node: 0, reason };
    if let Some(((partition, offset), first, second)) = report.acked_twice.first() {
        return Err(broken(format!(
            "partition {partition} offset {offset} was acknowledged for {first:?} and for \
             {second:?}: one of them is lost ({} offsets acknowledged twice)",
            report.acked_twice.len()
        )));
    }
    let mut total = 0;
    for (partition, nodes) in replicas.iter().enumerate() {
        let partition = partition as u32;
        let batches = replicas_agree(cluster, nodes, topic, partition, within).await?;
        let mut records = Vec::new();
        let shared_topic: Arc<str> = Arc::from(topic);
        for batch in &batches {
            decode_batch(&shared_topic, partition, batch, 0, &mut records).map_err(|e| {
                broken(format!(
                    "partition {partition}: a stored batch does not decode: {e}"
                ))
            })?;
        }
        let mut stored: BTreeMap<i64, Option<Bytes>> = BTreeMap::new();
        for record in records {
            if stored.insert(record.offset, record.value).is_some() {
                return Err(broken(format!(
                    "partition {partition}: offset {} is stored twice",
                    record.offset
                )));
            }
        }
        total += stored.len();
        for ((p, offset), value) in report
            .acked
            .range((partition, i64::MIN)..=(partition, i64::MAX))
        {
            debug_assert_eq!(*p, partition);
            let found = stored.get(offset).cloned().flatten();
            if found.as_deref() != Some(value.as_bytes()) {
                return Err(TestkitError::Call {
                    node: 0,
                    reason: format!(
                        "acknowledged record lost: partition {partition} offset {offset} \
                         should hold {value:?}, holds {:?}",
                        found.map(|b| String::from_utf8_lossy(&b).into_owned())
                    ),
                });
            }
        }
    }
    Ok(total)
}
