//! A consumer in a group: the coordinator decides which partitions it reads; it resumes
//! each from the group's committed offset and commits what it has processed.
//!
//! At least once: a record's offset is committed only after `next_event` has returned it
//! and, with automatic commits, the application has asked for the next one (or with
//! `commit` when the application says so). Partitions being taken away are committed
//! first (with automatic commits) and given up before the member says so, so a partition
//! is never read by two members of a group at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use spool_types::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::membership::{self, Change, MemberSettings, Partition, Shared};
use super::{Consumer, ConsumerError, ConsumerRecord, Key};
use crate::client::Client;
use crate::error::ClientError;
use crate::groups::{OffsetToCommit, PartitionSet};
use crate::types::OffsetSpec;

/// How a consumer takes part in a group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    /// Topics by name; with `pattern`, topics whose whole name matches too.
    pub topics: Vec<String>,
    pub pattern: Option<String>,
    /// Static membership: the same instance id after a restart within the session keeps
    /// the partitions without a rebalance.
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    /// How long the group waits for this member to give partitions up (default 60 s):
    /// call `next_event` at least this often while the group rebalances.
    pub rebalance_timeout: Duration,
    /// "uniform" (default) or "range".
    pub assignor: Option<String>,
    /// Commit processed offsets this often (default 5 s); `None`: only `commit` does.
    pub auto_commit: Option<Duration>,
    pub client_id: String,
}

impl GroupConfig {
    pub fn new(group: impl Into<String>, topics: &[&str]) -> Self {
        Self {
            group: group.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            pattern: None,
            instance_id: None,
            rack: None,
            rebalance_timeout: Duration::from_secs(60),
            assignor: None,
            auto_commit: Some(Duration::from_secs(5)),
            client_id: "spool-rust".into(),
        }
    }
}

/// What `next_event` yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    Record(ConsumerRecord),
    /// These partitions are now this member's; reading resumes at their committed offsets.
    Assigned(Vec<(String, u32)>),
    /// These were taken away in a rebalance, after their offsets were committed (with
    /// automatic commits).
    Revoked(Vec<(String, u32)>),
    /// These were lost without a commit: the member was fenced or out of touch for a
    /// whole session. Their uncommitted records will be read again by their next owner.
    Lost(Vec<(String, u32)>),
}

/// A consumer in a group. Drop it or call `close` to leave.
#[derive(Debug)]
pub struct GroupConsumer {
    consumer: Consumer,
    config: GroupConfig,
    /// Where partitions without a committed offset start.
    reset: OffsetSpec,
    bootstrap: Client,
    shared: Arc<Shared>,
    changes: mpsc::Receiver<Change>,
    task: JoinHandle<()>,
    /// Events decided but not yet returned.
    pending: std::collections::VecDeque<GroupEvent>,
    /// A change taken from the membership and not yet fully applied.
    in_flight: Option<Change>,
    /// The membership generation the consumer's partitions belong to: once the member
    /// moves past it (it was fenced), no record is delivered until the loss is applied.
    generation: u64,
    last_commit: Instant,
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // Not closed: the member leaves in the background (or its session ends it).
        let leave = self.shared.leaving.lock().take();
        if let Some(leave) = leave {
            let _ = leave.send(());
        }
    }
}

impl Consumer {
    /// Joins `group.group` and reads what the group assigns this member.
    pub fn subscribe(self, group: GroupConfig) -> GroupConsumer {
        let bootstrap = self.cluster.bootstrap().clone();
        let shared = Arc::new(Shared {
            member_id: membership::new_member_id(),
            epoch: AtomicI32::new(0),
            coordinator: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            leaving: Mutex::new(None),
            held: Mutex::new(Default::default()),
        });
        let (leave_tx, leave_rx) = oneshot::channel();
        *shared.leaving.lock() = Some(leave_tx);
        let (tx, rx) = mpsc::channel(16);
        let settings = MemberSettings {
            group: group.group.clone(),
            topics: group.topics.clone(),
            pattern: group.pattern.clone(),
            instance_id: group.instance_id.clone(),
            rack: group.rack.clone(),
            rebalance_timeout: group.rebalance_timeout,
            assignor: group.assignor.clone(),
            client_id: group.client_id.clone(),
        };
        let task = tokio::spawn(membership::run(
            bootstrap.clone(),
            settings,
            Arc::clone(&shared),
            tx,
            leave_rx,
        ));
        GroupConsumer {
            reset: self.config.reset_spec(),
            consumer: self,
            config: group,
            bootstrap,
            shared,
            changes: rx,
            task,
            pending: std::collections::VecDeque::new(),
            in_flight: None,
            generation: 0,
            last_commit: Instant::now(),
        }
    }
}

impl GroupConsumer {
    pub fn member_id(&self) -> &str {
        &self.shared.member_id
    }

    pub fn member_epoch(&self) -> i32 {
        self.shared.epoch.load(Ordering::Acquire)
    }

    /// The group and this member as a transaction that commits its offsets names them
    /// (`Transaction::send_offsets`).
    pub fn group_metadata(&self) -> crate::GroupMetadata {
        crate::GroupMetadata {
            group: self.config.group.clone(),
            member_id: self.shared.member_id.clone(),
            member_epoch: self.member_epoch(),
        }
    }

    /// The partitions this member reads now.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.consumer.assignment()
    }

    /// The next record or assignment change. Call it regularly: rebalances wait for it.
    ///
    /// Cancel safe: a change being applied when the call is dropped (its commit or offset
    /// lookup cut short) is applied again by the next call, from the start.
    pub async fn next_event(&mut self) -> Result<GroupEvent, ConsumerError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            if self.in_flight.is_some() {
                self.apply_in_flight().await?;
                continue;
            }
            if let Some(every) = self.config.auto_commit
                && self.last_commit.elapsed() >= every
            {
                self.last_commit = Instant::now();
                if let Err(error) = self.commit().await {
                    tracing::warn!(%error, "automatic commit failed; the next one retries");
                }
            }
            // A fetch that failed (its error was returned) is started again.
            if self.consumer.fetcher.is_none() && !self.consumer.positions.is_empty() {
                self.consumer.restart();
            }
            let wake = self
                .config
                .auto_commit
                .map(|every| self.last_commit + every);
            let reading = self.consumer.fetcher.is_some()
                && self.shared.generation.load(Ordering::Acquire) == self.generation;
            tokio::select! {
                // Changes first: records of partitions just lost must not slip through.
                biased;
                change = self.changes.recv() => match change {
                    Some(change) => self.in_flight = Some(change),
                    None => {
                        let all = self.consumer.assignment();
                        self.consumer.drop_partitions(&all);
                        return Err(ConsumerError::Client(ClientError::Transport(
                            "the group membership ended".into(),
                        )));
                    }
                },
                record = self.consumer.next(), if reading => match record {
                    Some(Ok(record)) => return Ok(GroupEvent::Record(record)),
                    Some(Err(error)) => return Err(error),
                    None => {}
                },
                () = sleep_until(wake) => {}
            }
        }
    }

    /// The next record, handling assignment changes silently.
    pub async fn next(&mut self) -> Result<ConsumerRecord, ConsumerError> {
        loop {
            if let GroupEvent::Record(record) = self.next_event().await? {
                return Ok(record);
            }
        }
    }

    /// Applies the change taken from the membership. Every await comes before the change
    /// is taken out of `in_flight`, so a call cut short leaves it to be applied again.
    async fn apply_in_flight(&mut self) -> Result<(), ConsumerError> {
        let Some(change) = self.in_flight.as_ref() else {
            return Ok(());
        };
        match change {
            Change::Revoke(partitions, _) => {
                let partitions = partitions.clone();
                if self.config.auto_commit.is_some() {
                    let keys: Vec<Key> = partitions
                        .iter()
                        .map(|(t, p)| (Arc::from(t.as_str()), *p))
                        .collect();
                    if let Err(error) = self.commit_partitions(&keys).await {
                        tracing::warn!(%error, "commit before giving partitions up failed");
                    }
                }
                self.consumer.drop_partitions(&partitions);
                if let Some(Change::Revoke(_, done)) = self.in_flight.take() {
                    let _ = done.send(());
                }
                self.pending.push_back(GroupEvent::Revoked(partitions));
            }
            Change::Assign(partitions) => {
                let partitions = partitions.clone();
                let starts = self.starting_offsets(&partitions).await?;
                self.consumer.add_partitions(starts);
                self.in_flight = None;
                self.pending.push_back(GroupEvent::Assigned(partitions));
            }
            Change::Lost(_) => {
                self.generation = self.shared.generation.load(Ordering::Acquire);
                let lost = self.consumer.assignment();
                self.consumer.drop_partitions(&lost);
                if let Some(Change::Lost(done)) = self.in_flight.take() {
                    let _ = done.send(());
                }
                if !lost.is_empty() {
                    self.pending.push_back(GroupEvent::Lost(lost));
                }
            }
            Change::Failed(_) => {
                let all = self.consumer.assignment();
                self.consumer.drop_partitions(&all);
                if let Some(Change::Failed(error)) = self.in_flight.take() {
                    return Err(error.into());
                }
            }
        }
        Ok(())
    }

    /// Where each newly assigned partition starts: its committed offset, else per
    /// `offset_reset`.
    async fn starting_offsets(
        &self,
        partitions: &[Partition],
    ) -> Result<Vec<(Key, i64)>, ConsumerError> {
        let mut wanted = PartitionSet::new();
        for (topic, partition) in partitions {
            wanted.entry(topic.clone()).or_default().push(*partition);
        }
        let group = self.config.group.clone();
        let coordinated = self.coordinated();
        let committed = coordinated.with_coordinator(|c| {
            let (group, wanted) = (group.clone(), wanted.clone());
            async move { c.fetch_committed(&group, &wanted).await }
        });
        let committed: BTreeMap<Partition, i64> = committed
            .await?
            .into_iter()
            .filter(|o| o.offset >= 0)
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect();
        let missing: Vec<Key> = partitions
            .iter()
            .filter(|p| !committed.contains_key(*p))
            .map(|(t, p)| (Arc::from(t.as_str()), *p))
            .collect();
        let reset = self.consumer.lookup(&missing, self.reset).await?;
        let mut out: Vec<(Key, i64)> = committed
            .into_iter()
            .map(|((t, p), o)| ((Arc::from(t.as_str()), p), o))
            .collect();
        out.extend(missing.into_iter().zip(reset));
        Ok(out)
    }

    /// Commits the position (next offset to deliver) of every partition this member reads.
    pub async fn commit(&mut self) -> Result<(), ConsumerError> {
        let keys: Vec<Key> = self.consumer.positions.keys().cloned().collect();
        self.commit_partitions(&keys).await
    }

    /// Commits the positions in the background (the handle tells how it went), so the
    /// application can go on reading meanwhile.
    pub fn commit_async(&self) -> tokio::task::JoinHandle<Result<(), ConsumerError>> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let offsets: Vec<OffsetToCommit> = self
            .consumer
            .positions
            .iter()
            .map(|(k, offset)| OffsetToCommit {
                topic: k.0.to_string(),
                partition: k.1,
                offset: *offset,
                leader_epoch: -1,
                metadata: String::new(),
            })
            .collect();
        let coordinated = self.coordinated();
        tokio::spawn(async move {
            if offsets.is_empty() {
                return Ok(());
            }
            coordinated.send_commit(offsets, generation).await
        })
    }

    fn coordinated(&self) -> Coordinated {
        Coordinated {
            bootstrap: self.bootstrap.clone(),
            shared: Arc::clone(&self.shared),
            group: self.config.group.clone(),
        }
    }

    /// Commits these offsets (the next record to process of each partition).
    pub async fn commit_offsets(&self, offsets: &[(&str, u32, i64)]) -> Result<(), ConsumerError> {
        let offsets: Vec<OffsetToCommit> = offsets
            .iter()
            .map(|(t, p, o)| OffsetToCommit {
                topic: t.to_string(),
                partition: *p,
                offset: *o,
                leader_epoch: -1,
                metadata: String::new(),
            })
            .collect();
        let generation = self.shared.generation.load(Ordering::Acquire);
        self.coordinated().send_commit(offsets, generation).await
    }

    async fn commit_partitions(&mut self, keys: &[Key]) -> Result<(), ConsumerError> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let offsets: Vec<OffsetToCommit> = keys
            .iter()
            .filter_map(|k| {
                Some(OffsetToCommit {
                    topic: k.0.to_string(),
                    partition: k.1,
                    offset: *self.consumer.positions.get(k)?,
                    leader_epoch: -1,
                    metadata: String::new(),
                })
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        self.coordinated().send_commit(offsets, generation).await
    }

    /// The group's committed offsets of this member's partitions.
    pub async fn committed(&self) -> Result<Vec<(String, u32, i64)>, ConsumerError> {
        let mut wanted = PartitionSet::new();
        for (topic, partition) in self.consumer.assignment() {
            wanted.entry(topic).or_default().push(partition);
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let group = self.config.group.clone();
        let found = self
            .coordinated()
            .with_coordinator(|c| {
                let (group, wanted) = (group.clone(), wanted.clone());
                async move { c.fetch_committed(&group, &wanted).await }
            })
            .await?;
        Ok(found
            .into_iter()
            .map(|o| (o.topic, o.partition, o.offset))
            .collect())
    }

    /// Records behind the end of each of this member's partitions (log end - position).
    pub async fn lag(&self) -> Result<Vec<(String, u32, i64)>, ConsumerError> {
        let keys: Vec<Key> = self.consumer.positions.keys().cloned().collect();
        let ends = self.consumer.lookup(&keys, OffsetSpec::Latest).await?;
        Ok(keys
            .into_iter()
            .zip(ends)
            .map(|(k, end)| {
                let position = self.consumer.positions.get(&k).copied().unwrap_or(end);
                (k.0.to_string(), k.1, (end - position).max(0))
            })
            .collect())
    }

    /// Commits (with automatic commits), then leaves the group.
    pub async fn close(mut self) -> Result<(), ConsumerError> {
        let committed = if self.config.auto_commit.is_some() {
            self.commit().await
        } else {
            Ok(())
        };
        let leave = self.shared.leaving.lock().take();
        if let Some(leave) = leave {
            let _ = leave.send(());
        }
        // The loop may be waiting for an answer about a change: give up everything.
        match self.in_flight.take() {
            Some(Change::Revoke(_, done) | Change::Lost(done)) => {
                let _ = done.send(());
            }
            Some(Change::Assign(_) | Change::Failed(_)) | None => {}
        }
        self.changes.close();
        while let Some(change) = self.changes.recv().await {
            match change {
                Change::Revoke(_, done) | Change::Lost(done) => {
                    let _ = done.send(());
                }
                Change::Assign(_) | Change::Failed(_) => {}
            }
        }
        let _ = (&mut self.task).await;
        committed
    }
}

/// What a call to the group's coordinator needs; cheap to clone into a task.
#[derive(Debug, Clone)]
struct Coordinated {
    bootstrap: Client,
    shared: Arc<Shared>,
    group: String,
}

impl Coordinated {
    /// Sends a commit to the coordinator; a commit that races an epoch change is sent
    /// again with the new epoch (the partitions are still this member's until it says
    /// otherwise).
    async fn send_commit(
        &self,
        offsets: Vec<OffsetToCommit>,
        generation: u64,
    ) -> Result<(), ConsumerError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut retried = false;
        loop {
            // Offsets taken before the member lost its partitions are not its to commit
            // any more: their next owner's progress must not be set back.
            if self.shared.generation.load(Ordering::Acquire) != generation {
                return Err(ConsumerError::Client(ClientError::Api(crate::ApiError {
                    code: ErrorCode::FencedMemberEpoch,
                    message: "the member lost its partitions before the commit was sent".into(),
                    leader: None,
                })));
            }
            let epoch = self.shared.epoch.load(Ordering::Acquire);
            let member = self.shared.member_id.clone();
            let group = self.group.clone();
            // Sent again after a stale-epoch answer, a commit keeps only the partitions the
            // member still holds: the others may have a new owner by now.
            let batch: Vec<OffsetToCommit> = if retried {
                let held = self.shared.held.lock();
                offsets
                    .iter()
                    .filter(|o| held.contains(&(o.topic.clone(), o.partition)))
                    .cloned()
                    .collect()
            } else {
                offsets.clone()
            };
            if batch.is_empty() {
                return Ok(());
            }
            let result = self
                .with_coordinator(|c| {
                    let (group, member, batch) = (group.clone(), member.clone(), batch.clone());
                    async move { c.commit_offsets(&group, &member, epoch, batch).await }
                })
                .await;
            match result {
                Err(ConsumerError::Client(error))
                    if error.code() == Some(ErrorCode::StaleMemberEpoch)
                        && Instant::now() < deadline =>
                {
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    /// Runs a call on the coordinator, finding it again when it moved.
    async fn with_coordinator<T, F, Fut>(&self, call: F) -> Result<T, ConsumerError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut backoff = Duration::from_millis(20);
        loop {
            let known = self.shared.coordinator.lock().clone();
            let client = match known {
                Some(client) => client,
                None => match self.bootstrap.find_coordinator(&self.group).await {
                    Ok((node, address)) => self
                        .bootstrap
                        .to_node(node, &address)
                        .await
                        .map_err(ConsumerError::Client)?,
                    Err(error) if Instant::now() < deadline && retriable(&error) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                },
            };
            match call(client.clone()).await {
                Ok(value) => {
                    *self.shared.coordinator.lock() = Some(client);
                    return Ok(value);
                }
                Err(error) if Instant::now() < deadline && moved(&error) => {
                    *self.shared.coordinator.lock() = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                // A transaction's offsets are about to take effect: ask again shortly.
                Err(error)
                    if Instant::now() < deadline
                        && error.code() == Some(ErrorCode::UnstableOffsetCommit) =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

fn moved(error: &ClientError) -> bool {
    matches!(
        error.code(),
        None | Some(
            ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::StorageError
                | ErrorCode::RequestTimedOut
        )
    )
}

fn retriable(error: &ClientError) -> bool {
    error.code().is_none_or(ErrorCode::is_retriable)
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Consumer {
    /// Starts reading these partitions at these offsets, keeping the others.
    pub(crate) fn add_partitions(&mut self, starts: Vec<(Key, i64)>) {
        for (key, offset) in starts {
            self.positions.insert(key, offset);
        }
        self.restart();
    }

    /// Stops reading these partitions.
    pub(crate) fn drop_partitions(&mut self, partitions: &[(String, u32)]) {
        for (topic, partition) in partitions {
            let key: Key = (Arc::from(topic.as_str()), *partition);
            self.positions.remove(&key);
            self.paused.remove(&key);
            if self
                .reset_pending
                .as_ref()
                .is_some_and(|(t, p)| t == topic && p == partition)
            {
                self.reset_pending = None;
            }
        }
        self.restart();
    }
}
