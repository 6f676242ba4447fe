//! Transactions through the SDK on a three-node cluster: read_committed readers see each
//! committed transaction whole and never a record of an aborted one, an open transaction
//! holds them back, and a producer started again under the same transactional id fences
//! the old instance (whose open transaction is aborted).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use spool_client::{
    Consumer, ConsumerConfig, ErrorCode, IsolationLevel, OffsetReset, OffsetSpec, Producer,
    ProducerConfig, ProducerError, ProducerRecord,
};
use spool_testkit::{ClusterOptions, TestCluster, wait_for};

const WITHIN: Duration = Duration::from_secs(30);
const PARTITIONS: u32 = 3;

fn transactional(id: &str) -> ProducerConfig {
    ProducerConfig {
        transactional_id: Some(id.to_string()),
        ..ProducerConfig::default()
    }
}

async fn reader(cluster: &TestCluster, topic: &str, isolation: IsolationLevel) -> Consumer {
    reader_with(cluster, topic, PARTITIONS, isolation).await
}

/// A read_committed reader of every partition of `topic`.
async fn reader_of(cluster: &TestCluster, topic: &str, partitions: u32) -> Consumer {
    reader_with(cluster, topic, partitions, IsolationLevel::ReadCommitted).await
}

async fn reader_with(
    cluster: &TestCluster,
    topic: &str,
    partitions: u32,
    isolation: IsolationLevel,
) -> Consumer {
    let mut consumer = Consumer::new(
        cluster.client().await.expect("client"),
        ConsumerConfig {
            offset_reset: OffsetReset::Earliest,
            isolation,
            ..ConsumerConfig::default()
        },
    );
    let partitions: Vec<(&str, u32)> = (0..partitions).map(|p| (topic, p)).collect();
    consumer.assign(&partitions).await.expect("assign");
    consumer
}

/// Reads until `done` holds for what was read, or the deadline passes.
async fn read_until(
    consumer: &mut Consumer,
    seen: &mut Vec<String>,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(record))) => {
                let value = record.value.expect("a value");
                seen.push(String::from_utf8(value.to_vec()).expect("utf-8"));
            }
            Ok(Some(Err(error))) => panic!("read failed: {error}"),
            Ok(None) | Err(_) => panic!("read only {} records in time", seen.len()),
        }
    }
}

/// Every value a read_committed fetch of all partitions returns up to their ends.
async fn read_to_end(cluster: &TestCluster, topic: &str) -> Vec<String> {
    let mut values = Vec::new();
    for partition in 0..PARTITIONS {
        let read = cluster
            .read_to_end(topic, partition, IsolationLevel::ReadCommitted, WITHIN)
            .await
            .expect("read to the end");
        values.extend(
            read.records
                .into_iter()
                .map(|r| String::from_utf8(r.value.expect("value").to_vec()).expect("utf-8")),
        );
    }
    values
}

fn by_transaction(values: &[String]) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for value in values {
        let txn: u32 = value
            .strip_prefix("t")
            .and_then(|v| v.split('-').next())
            .and_then(|n| n.parse().ok())
            .expect("a load value");
        *counts.entry(txn).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sees_committed_transactions_whole_and_aborted_ones_never() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    let topic = "orders";
    cluster
        .create_topic(topic, PARTITIONS, 3)
        .await
        .expect("topic");
    let producer = Producer::new(cluster.client().await.expect("client"), transactional("t1"));
    producer.init_transactions().await.expect("init");

    const TRANSACTIONS: u32 = 12;
    const RECORDS: u32 = 30;
    let aborted = |t: u32| t.is_multiple_of(3);
    for t in 0..TRANSACTIONS {
        let txn = producer.transaction().await.expect("begin");
        for r in 0..RECORDS {
            let record = ProducerRecord::new(topic, format!("t{t}-{r}")).partition(r % PARTITIONS);
            txn.send(record).await.expect("send");
        }
        if aborted(t) {
            txn.abort().await.expect("abort");
        } else {
            txn.commit().await.expect("commit");
        }
    }
    let committed: BTreeSet<u32> = (0..TRANSACTIONS).filter(|t| !aborted(*t)).collect();
    let expected = committed.len() * RECORDS as usize;

    // The aborted records are in the log: a read_uncommitted reader sees them all.
    let mut everything = Vec::new();
    let mut uncommitted = reader(&cluster, topic, IsolationLevel::ReadUncommitted).await;
    read_until(&mut uncommitted, &mut everything, |seen| {
        seen.len() >= (TRANSACTIONS * RECORDS) as usize
    })
    .await;
    assert_eq!(by_transaction(&everything).len(), TRANSACTIONS as usize);

    // A transaction left open holds read_committed readers back at its first offset.
    let open = producer.transaction().await.expect("begin the open one");
    for r in 0..RECORDS {
        let record =
            ProducerRecord::new(topic, format!("t{TRANSACTIONS}-{r}")).partition(r % PARTITIONS);
        open.send(record)
            .await
            .expect("send")
            .wait()
            .await
            .expect("acknowledged");
    }
    let leader = cluster.leader(topic, 0, WITHIN).await.expect("leader");
    let leader_client = cluster.node_client(leader).await.expect("leader client");
    let bounds = leader_client
        .list_offsets(vec![
            (topic.to_string(), 0, OffsetSpec::LastStable),
            (topic.to_string(), 0, OffsetSpec::Latest),
        ])
        .await
        .expect("offsets");
    let (stable, end) = (
        bounds[0].clone().expect("lso"),
        bounds[1].clone().expect("hw"),
    );
    assert!(
        stable < end,
        "the open transaction's records are below the stable offset: {stable} vs {end}"
    );

    // A read to the end stops before it: everything committed, nothing of it.
    let upto_stable = read_to_end(&cluster, topic).await;
    assert_eq!(
        upto_stable.len(),
        expected,
        "read_committed read to its end"
    );
    assert!(
        !by_transaction(&upto_stable).contains_key(&TRANSACTIONS),
        "a record of the open transaction was read"
    );
    let mut seen = Vec::new();
    let mut committed_reader = reader(&cluster, topic, IsolationLevel::ReadCommitted).await;
    read_until(&mut committed_reader, &mut seen, |seen| {
        seen.len() >= expected
    })
    .await;
    // Committing the open one releases it, whole.
    open.commit().await.expect("commit the open one");
    read_until(&mut committed_reader, &mut seen, |seen| {
        seen.len() >= expected + RECORDS as usize
    })
    .await;
    let counts = by_transaction(&seen);
    let mut want: BTreeSet<u32> = committed.clone();
    want.insert(TRANSACTIONS);
    assert_eq!(
        counts.keys().copied().collect::<BTreeSet<_>>(),
        want,
        "aborted records were read"
    );
    assert!(
        counts.values().all(|n| *n == RECORDS as usize),
        "a transaction was read in part or twice: {counts:?}"
    );
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "a record was read twice");

    // Every partition's transactions are closed: the stable offset is the end.
    wait_for(WITHIN, "the stable offset to reach the end", || async {
        let bounds = leader_client
            .list_offsets(vec![
                (topic.to_string(), 0, OffsetSpec::LastStable),
                (topic.to_string(), 0, OffsetSpec::Latest),
            ])
            .await
            .ok()?;
        let (stable, end) = (bounds[0].clone().ok()?, bounds[1].clone().ok()?);
        (stable == end).then_some(())
    })
    .await
    .expect("stable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_fences_the_old_one_and_its_open_transaction_is_aborted() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    let topic = "payments";
    cluster
        .create_topic(topic, PARTITIONS, 3)
        .await
        .expect("topic");
    let old = Producer::new(
        cluster.client().await.expect("client"),
        transactional("pay"),
    );
    old.init_transactions().await.expect("init the old one");
    let zombie = old.transaction().await.expect("begin");
    for r in 0..10 {
        let record = ProducerRecord::new(topic, format!("zombie-{r}")).partition(r % PARTITIONS);
        zombie
            .send(record)
            .await
            .expect("send")
            .wait()
            .await
            .expect("acknowledged");
    }

    // The new instance takes over: the old one's open transaction is aborted.
    let new = Producer::new(
        cluster.client().await.expect("client"),
        transactional("pay"),
    );
    new.init_transactions().await.expect("init the new one");
    let txn = new.transaction().await.expect("begin");
    for r in 0..10 {
        let record = ProducerRecord::new(topic, format!("fresh-{r}")).partition(r % PARTITIONS);
        txn.send(record).await.expect("send");
    }
    txn.commit().await.expect("commit");

    // The old instance can neither commit nor write on.
    match zombie.commit().await {
        Err(ProducerError::Api(api)) => assert_eq!(api.code, ErrorCode::ProducerFenced),
        other => panic!("the zombie's commit was not fenced: {other:?}"),
    }
    if let Ok(txn) = old.transaction().await {
        let late = txn
            .send(ProducerRecord::new(topic, "zombie-late").partition(0))
            .await;
        if let Ok(delivery) = late {
            assert!(
                delivery.wait().await.is_err(),
                "a fenced producer's record was stored"
            );
        }
    }

    let mut seen = Vec::new();
    let mut committed_reader = reader(&cluster, topic, IsolationLevel::ReadCommitted).await;
    read_until(&mut committed_reader, &mut seen, |seen| seen.len() >= 10).await;
    assert!(
        seen.iter().all(|v| v.starts_with("fresh-")),
        "a zombie record was read: {seen:?}"
    );
}

/// The coordinator decides a commit and is killed before its markers are all written (one
/// partition's leader is cut off, so its marker cannot commit); the coordinator elected
/// after it finds the decided commit in its replay and finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_decided_by_a_coordinator_killed_before_its_markers_is_finished_by_the_next() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    let topic = "ledger";
    const SPREAD: u32 = 6;
    cluster.create_topic(topic, SPREAD, 3).await.expect("topic");
    let producer = Producer::new(
        cluster.client().await.expect("client"),
        transactional("mid"),
    );
    producer.init_transactions().await.expect("init");
    let client = cluster.client().await.expect("client");
    let (coordinator, _) = client
        .find_transaction_coordinator("mid")
        .await
        .expect("coordinator");
    // A partition led elsewhere: its leader is cut off once the records are in.
    let mut stalled = None;
    for partition in 0..SPREAD {
        let leader = cluster
            .leader(topic, partition, WITHIN)
            .await
            .expect("leader");
        if leader != coordinator {
            stalled = Some((partition, leader));
            break;
        }
    }
    let (stalled_partition, cut_off) = stalled.expect("a partition not led by the coordinator");

    let txn = producer.transaction().await.expect("begin");
    for r in 0..SPREAD * 5 {
        let record = ProducerRecord::new(topic, format!("t0-{r}")).partition(r % SPREAD);
        txn.send(record).await.expect("send");
    }
    producer.flush().await;
    cluster.isolate(cut_off).await.expect("isolate");
    // Decided: the coordinator answers once prepare_commit is committed (it and the third
    // node are a quorum of `__transaction_state`), while the cut-off leader's marker
    // cannot commit.
    txn.commit().await.expect("commit decided");
    let stuck = cluster
        .node_client(cut_off)
        .await
        .expect("client")
        .open_transactions(topic, stalled_partition)
        .await
        .expect("open transactions");
    assert_eq!(stuck.len(), 1, "the cut-off partition's marker was written");
    cluster
        .kill(coordinator)
        .await
        .expect("kill the coordinator");
    cluster.heal_all().await.expect("heal");

    // The next coordinator completes the commit: every record becomes readable, whole.
    let mut seen = Vec::new();
    let mut committed_reader = reader_of(&cluster, topic, SPREAD).await;
    read_until(&mut committed_reader, &mut seen, |seen| {
        seen.len() >= (SPREAD * 5) as usize
    })
    .await;
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), (SPREAD * 5) as usize);
    let client = cluster.client().await.expect("client");
    wait_for(WITHIN, "the transaction to complete", || async {
        let (node, address) = client.find_transaction_coordinator("mid").await.ok()?;
        let there = client.to_node(node, &address).await.ok()?;
        let t = there.describe_transaction("mid").await.ok()?;
        (t.state == "complete_commit" && node != coordinator).then_some(())
    })
    .await
    .expect("completed by the next coordinator");
}

/// The committed offset of `topic`-0 in `group`, as its coordinator answers (-1: none).
async fn committed(cluster: &TestCluster, group: &str, topic: &str) -> Option<i64> {
    committed_answer(cluster, group, topic).await.ok()
}

/// The group's committed offset of `topic`-0 as its coordinator answers, asked again
/// while the coordinator moves (a busy machine's elections), until `WITHIN`.
async fn committed_answer(
    cluster: &TestCluster,
    group: &str,
    topic: &str,
) -> Result<i64, spool_client::ClientError> {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let answer = committed_once(cluster, group, topic).await;
        let moving = answer.as_ref().is_err_and(|error| {
            matches!(
                error.code(),
                None | Some(
                    ErrorCode::NotCoordinator
                        | ErrorCode::CoordinatorLoadInProgress
                        | ErrorCode::CoordinatorNotAvailable
                )
            )
        });
        if !moving || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn committed_once(
    cluster: &TestCluster,
    group: &str,
    topic: &str,
) -> Result<i64, spool_client::ClientError> {
    let client = cluster.client().await.expect("client");
    let (node, address) = client.find_coordinator(group).await?;
    let coordinator = client.to_node(node, &address).await?;
    let partitions = spool_client::PartitionSet::from([(topic.to_string(), vec![0])]);
    let found = coordinator.fetch_committed(group, &partitions).await?;
    Ok(found.first().map_or(-1, |c| c.offset))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_in_a_transaction_take_effect_only_when_it_commits() {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    cluster.create_topic("input", 1, 3).await.expect("input");
    cluster.create_topic("output", 1, 3).await.expect("output");
    let producer = Producer::new(
        cluster.client().await.expect("client"),
        transactional("ctp"),
    );
    producer.init_transactions().await.expect("init");
    let group = spool_client::GroupMetadata::outside("workers");
    let offset = |n: i64| {
        vec![spool_client::OffsetToCommit {
            topic: "input".into(),
            partition: 0,
            offset: n,
            leader_epoch: -1,
            metadata: String::new(),
        }]
    };

    // Aborted: neither the output nor the offset.
    let txn = producer.transaction().await.expect("begin");
    txn.send(ProducerRecord::new("output", "t0-0").partition(0))
        .await
        .expect("send");
    txn.send_offsets(&group, offset(5)).await.expect("offsets");
    txn.abort().await.expect("abort");
    assert_eq!(committed(&cluster, "workers", "input").await, Some(-1));

    // Committed: the offset is not visible before the commit, and is after it.
    let txn = producer.transaction().await.expect("begin");
    txn.send(ProducerRecord::new("output", "t1-0").partition(0))
        .await
        .expect("send");
    txn.send_offsets(&group, offset(7)).await.expect("offsets");
    // While the transaction is open its offset is neither shown nor hidden: the fetch is
    // answered "unstable" (a new owner of the partition waits rather than start from an
    // offset the transaction may still move).
    match committed_answer(&cluster, "workers", "input").await {
        Err(error) => assert_eq!(error.code(), Some(ErrorCode::UnstableOffsetCommit)),
        Ok(offset) => panic!("a fetch answered {offset} while a transaction held the offset"),
    }
    txn.commit().await.expect("commit");
    // Asked at once: the commit is decided, so the answer is the new offset (a fetch
    // waits for the marker rather than answer with the offset before it).
    assert_eq!(
        committed(&cluster, "workers", "input").await,
        Some(7),
        "a decided commit's offset was not what a fetch answered"
    );

    // The group's coordinator fails over: it replays the same offset.
    let client = cluster.client().await.expect("client");
    let (node, _) = client
        .find_coordinator("workers")
        .await
        .expect("coordinator");
    cluster.kill(node).await.expect("kill");
    wait_for(WITHIN, "the offset after a failover", || async {
        (committed(&cluster, "workers", "input").await == Some(7)).then_some(())
    })
    .await
    .expect("committed offset after failover");
}

/// One transactional batch of `values` from `producer` at `sequence`.
fn transactional_batch(producer: (i64, i16), sequence: i32, values: &[&str]) -> bytes::Bytes {
    let mut builder =
        spool_log::batch::BatchBuilder::new(spool_log::batch::BatchOptions::default());
    builder.set_producer(producer.0, producer.1, sequence);
    builder.set_transactional(true);
    for value in values {
        builder.append(1_700_000_000_000, None, Some(value.as_bytes()), &[]);
    }
    builder.finish()
}

/// Produces one batch to partition 0 of `topic` through its leader.
async fn produce_raw(
    cluster: &TestCluster,
    topic: &str,
    batch: bytes::Bytes,
) -> Result<(), spool_client::ApiError> {
    let leader = cluster.leader(topic, 0, WITHIN).await.expect("leader");
    let client = cluster.node_client(leader).await.expect("client");
    let outcome = client
        .produce(
            spool_client::Acks::All,
            WITHIN,
            vec![spool_client::PartitionBatches {
                topic: topic.to_string(),
                partition: 0,
                batches: vec![batch],
                leader_epoch: None,
            }],
        )
        .await
        .expect("produce call");
    outcome
        .partitions
        .into_iter()
        .next()
        .expect("an answer")
        .map(drop)
}

/// Whether partition 0 of `topic` has no transaction open: its last stable offset is its
/// end.
async fn stable(client: &spool_client::Client, topic: &str) -> bool {
    let answers = client
        .list_offsets(vec![
            (topic.to_string(), 0, OffsetSpec::LastStable),
            (topic.to_string(), 0, OffsetSpec::Latest),
        ])
        .await
        .expect("offsets");
    matches!(answers.as_slice(), [Ok(stable), Ok(end)] if stable == end)
}

/// A three-node cluster with `topic` (one partition), a client, the coordinator of the
/// transactional id `id`, and the producer id and epoch `id` was started at.
async fn raw_transactional(
    topic: &str,
    id: &str,
) -> (
    TestCluster,
    spool_client::Client,
    spool_client::Client,
    (i64, i16),
) {
    let mut cluster = TestCluster::start(ClusterOptions::in_process(3))
        .await
        .expect("cluster");
    cluster.create_topic(topic, 1, 3).await.expect("topic");
    let client = cluster.client().await.expect("client");
    let coordinator = wait_for(WITHIN, "the transaction coordinator", || async {
        let (node, address) = client.find_transaction_coordinator(id).await.ok()?;
        client.to_node(node, &address).await.ok()
    })
    .await
    .expect("coordinator");
    let producer = coordinator
        .init_transactional_producer(id, 60_000)
        .await
        .expect("init");
    (cluster, client, coordinator, producer)
}

/// Values of partition 0 of `topic` as read_committed readers see them.
async fn committed_values(cluster: &TestCluster, topic: &str) -> Option<Vec<String>> {
    let read = cluster
        .read_to_end(topic, 0, IsolationLevel::ReadCommitted, WITHIN)
        .await
        .ok()?;
    Some(
        read.records
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
            .collect(),
    )
}

/// A write of a transaction that reaches its partition only after the transaction ended
/// (a produce request held up past the producer's abort) is refused as fenced: every end
/// moves the producer to a new epoch, which the markers carry. It opens no transaction
/// that nobody would end, so read_committed readers are not held back for ever; the
/// producer goes on at the new epoch, numbering from 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_arriving_after_its_transaction_ended_is_fenced_and_holds_nothing_back() {
    let (cluster, client, coordinator, producer) =
        raw_transactional("late-writes", "late-writer").await;
    let (topic, id) = ("late-writes", "late-writer");
    let partitions = vec![(topic.to_string(), 0)];
    coordinator
        .add_partitions_to_txn(id, producer, &partitions)
        .await
        .expect("add");
    produce_raw(&cluster, topic, transactional_batch(producer, 0, &["a1"]))
        .await
        .expect("first write");
    // The next write of the transaction is held up; meanwhile the producer aborts.
    let late = transactional_batch(producer, 1, &["a2"]);
    let next = coordinator
        .end_txn(id, producer, false)
        .await
        .expect("abort");
    assert_eq!(next, (producer.0, producer.1 + 1), "the next epoch");
    wait_for(WITHIN, "the abort marker", || async {
        stable(&client, topic).await.then_some(())
    })
    .await
    .expect("marker written");

    let refused = produce_raw(&cluster, topic, late)
        .await
        .expect_err("a write of the ended transaction is refused");
    assert_eq!(refused.code, ErrorCode::InvalidProducerEpoch, "{refused:?}");
    assert!(stable(&client, topic).await, "nothing is left open");

    // The producer goes on at the new epoch, numbering from 0; the ended epoch is
    // refused at the coordinator too.
    assert!(
        coordinator
            .add_partitions_to_txn(id, producer, &partitions)
            .await
            .is_err()
    );
    coordinator
        .add_partitions_to_txn(id, next, &partitions)
        .await
        .expect("add at the new epoch");
    produce_raw(&cluster, topic, transactional_batch(next, 0, &["b1", "b2"]))
        .await
        .expect("write at the new epoch");
    let after = coordinator.end_txn(id, next, true).await.expect("commit");
    assert_eq!(after, (next.0, next.1 + 1));
    // Asked again (its answer lost), the commit is answered alike.
    assert_eq!(
        coordinator.end_txn(id, next, true).await.expect("again"),
        after
    );
    let seen = wait_for(WITHIN, "the committed records", || async {
        committed_values(&cluster, topic)
            .await
            .filter(|values| values.len() == 2)
    })
    .await
    .expect("read");
    assert_eq!(seen, ["b1", "b2"]);
}

/// A late copy of a transaction's marker (a coordinator's write held up in flight while
/// its retry succeeded and the producer went on) reaches the partition while the
/// producer's next transaction is open there: it writes nothing, and cannot end that
/// transaction with the earlier one's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_copy_of_a_marker_cannot_end_the_next_transaction() {
    let (cluster, client, coordinator, first) =
        raw_transactional("late-markers", "late-marker").await;
    let (topic, id) = ("late-markers", "late-marker");
    let partitions = vec![(topic.to_string(), 0)];
    coordinator
        .add_partitions_to_txn(id, first, &partitions)
        .await
        .expect("add");
    produce_raw(&cluster, topic, transactional_batch(first, 0, &["t1"]))
        .await
        .expect("first transaction's write");
    let second = coordinator.end_txn(id, first, true).await.expect("commit");
    wait_for(WITHIN, "the commit marker", || async {
        stable(&client, topic).await.then_some(())
    })
    .await
    .expect("marker written");
    // The next transaction writes; then a copy of the first one's commit marker comes.
    coordinator
        .add_partitions_to_txn(id, second, &partitions)
        .await
        .expect("add");
    produce_raw(&cluster, topic, transactional_batch(second, 0, &["t2"]))
        .await
        .expect("second transaction's write");
    let leader = cluster.leader(topic, 0, WITHIN).await.expect("leader");
    let answer = cluster
        .admin(leader)
        .await
        .expect("cluster listener")
        .write_txn_markers(spool_proto::v1::WriteTxnMarkersRequest {
            producer_id: second.0,
            producer_epoch: i32::from(second.1),
            commit: true,
            coordinator_epoch: -1,
            partitions: vec![spool_proto::v1::TopicPartition {
                topic: topic.to_string(),
                partition: 0,
            }],
            bumped: true,
        })
        .await
        .expect("answered")
        .into_inner();
    assert!(
        answer.results.iter().all(|r| r.error.is_none()),
        "a copy is answered as done: {answer:?}"
    );
    assert!(
        !stable(&client, topic).await,
        "the second transaction is still open"
    );
    // It aborts: read_committed readers never see its write.
    coordinator.end_txn(id, second, false).await.expect("abort");
    wait_for(WITHIN, "the abort marker", || async {
        stable(&client, topic).await.then_some(())
    })
    .await
    .expect("marker written");
    let values = committed_values(&cluster, topic).await.expect("read");
    assert_eq!(values, ["t1"]);
}
