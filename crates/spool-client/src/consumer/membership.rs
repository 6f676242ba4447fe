//! A group member's heartbeat loop, on a task of its own.
//!
//! It joins, then heartbeats as long polls (the coordinator answers at once when the
//! assignment changes), and hands each change to the consumer as a `Change`: partitions
//! to give up (the loop waits until the consumer has stopped reading them before saying
//! so), partitions to start, or everything lost (fenced, or no answer within the
//! session). It never reports giving up a partition the consumer still reads, and the
//! consumer stops reading everything once a session has passed without an answer,
//! before the coordinator can give its partitions to anyone else.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use spool_types::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::ClientError;
use crate::groups::{Heartbeat, HeartbeatAnswer, MemberState, PartitionSet};

pub(crate) type Partition = (String, u32);

/// What the consumer must do.
#[derive(Debug)]
pub(crate) enum Change {
    /// Stop reading these (committing first, if it commits automatically), then answer.
    Revoke(Vec<Partition>, oneshot::Sender<()>),
    /// Start reading these.
    Assign(Vec<Partition>),
    /// Stop reading everything without committing (the member is out), then answer.
    Lost(oneshot::Sender<()>),
    /// The group refused the member for good (a bad subscription, say).
    Failed(ClientError),
}

/// How the member joins.
#[derive(Debug, Clone)]
pub(crate) struct MemberSettings {
    pub group: String,
    pub topics: Vec<String>,
    pub pattern: Option<String>,
    pub instance_id: Option<String>,
    pub rack: Option<String>,
    pub rebalance_timeout: Duration,
    pub assignor: Option<String>,
    pub client_id: String,
}

/// What the consumer shares with the loop: who the member is now, and where its
/// coordinator is.
#[derive(Debug)]
pub(crate) struct Shared {
    pub member_id: String,
    pub epoch: AtomicI32,
    pub coordinator: Mutex<Option<Client>>,
    /// Moves each time the member loses its partitions; commits taken before are void.
    pub generation: std::sync::atomic::AtomicU64,
    /// Set when the consumer closes: the loop leaves the group and ends.
    pub leaving: Mutex<Option<oneshot::Sender<()>>>,
    /// The partitions the member holds now: a commit is sent only for these (one taken
    /// before a partition was handed over is not the member's to send any more).
    pub held: Mutex<BTreeSet<Partition>>,
}

pub(crate) fn new_member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut parts = [0u64; 2];
    for (i, part) in parts.iter_mut().enumerate() {
        let mut hasher = state.build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        hasher.write_usize(i);
        *part = hasher.finish();
    }
    format!("{:016x}{:016x}", parts[0], parts[1])
}

/// Runs the member until the consumer goes away or leaves.
pub(crate) async fn run(
    bootstrap: Client,
    settings: MemberSettings,
    shared: Arc<Shared>,
    changes: mpsc::Sender<Change>,
    mut leave: oneshot::Receiver<()>,
) {
    let mut member = Member {
        bootstrap,
        settings,
        shared,
        changes,
        owned: BTreeSet::new(),
        reported: None,
        interval: Duration::from_secs(3),
        session: Duration::from_secs(45),
        last_ok_sent: None,
        fenced: false,
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        let joining = member.epoch() == 0;
        let quick = joining || member.reported.as_ref() != Some(&member.owned);
        let wait = if quick {
            Duration::ZERO
        } else {
            member.interval
        };
        let sent = Instant::now();
        // An answer that comes after the session has ended is worth nothing: by then the
        // coordinator may have given the partitions to someone else.
        let session_end = member
            .last_ok_sent
            .map_or(sent + member.session, |last| last + member.session);
        let beat = tokio::time::timeout_at(session_end, member.beat(wait));
        let answer = tokio::select! {
            answer = beat => answer,
            _ = &mut leave => {
                member.leave().await;
                return;
            }
        };
        let Ok(answer) = answer else {
            tracing::warn!(group = %member.settings.group, "no heartbeat answered within the session: giving up every partition");
            if !member.lose().await {
                return;
            }
            continue;
        };
        match answer {
            Ok(answer) => {
                backoff = Duration::from_millis(50);
                member.last_ok_sent = Some(sent);
                if !member.take(answer).await {
                    // The consumer is gone: leave rather than make the group wait.
                    member.leave().await;
                    return;
                }
                if std::mem::take(&mut member.fenced) && !member.lose().await {
                    return;
                }
            }
            Err(error) => {
                let code = error.code();
                if matches!(
                    code,
                    Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch)
                ) {
                    tracing::info!(group = %member.settings.group, %error, "fenced: rejoining");
                    if !member.lose().await {
                        return;
                    }
                    continue;
                }
                let retriable = code.is_none_or(ErrorCode::is_retriable);
                if !retriable {
                    let _ = member.changes.send(Change::Failed(error)).await;
                    return;
                }
                // The coordinator moved or is loading: find it again.
                *member.shared.coordinator.lock() = None;
                if member.session_over() && !member.lose().await {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = &mut leave => {
                        member.leave().await;
                        return;
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

struct Member {
    bootstrap: Client,
    settings: MemberSettings,
    shared: Arc<Shared>,
    changes: mpsc::Sender<Change>,
    owned: BTreeSet<Partition>,
    /// What the coordinator was last told the member owns.
    reported: Option<BTreeSet<Partition>>,
    interval: Duration,
    session: Duration,
    /// When the last heartbeat that was answered was sent.
    last_ok_sent: Option<Instant>,
    /// Found out of the group while waiting for a revocation: everything is lost.
    fenced: bool,
}

fn to_set(partitions: &BTreeSet<Partition>) -> PartitionSet {
    let mut out = PartitionSet::new();
    for (topic, partition) in partitions {
        out.entry(topic.clone()).or_default().push(*partition);
    }
    out
}

impl Member {
    fn epoch(&self) -> i32 {
        self.shared.epoch.load(Ordering::Acquire)
    }

    /// No answer for a whole session: the coordinator may have given the partitions away.
    fn session_over(&self) -> bool {
        self.last_ok_sent
            .is_some_and(|sent| sent.elapsed() >= self.session)
    }

    async fn coordinator(&self) -> Result<Client, ClientError> {
        if let Some(client) = self.shared.coordinator.lock().clone() {
            return Ok(client);
        }
        let (node, address) = self
            .bootstrap
            .find_coordinator(&self.settings.group)
            .await?;
        let client = self.bootstrap.to_node(node, &address).await?;
        *self.shared.coordinator.lock() = Some(client.clone());
        Ok(client)
    }

    async fn beat(&mut self, wait: Duration) -> Result<HeartbeatAnswer, ClientError> {
        let client = self.coordinator().await?;
        let epoch = self.epoch();
        let joining = epoch == 0;
        let report = joining || self.reported.as_ref() != Some(&self.owned);
        let heartbeat = Heartbeat {
            group: self.settings.group.clone(),
            member_id: self.shared.member_id.clone(),
            member_epoch: epoch,
            instance_id: self.settings.instance_id.clone(),
            rack: self.settings.rack.clone(),
            rebalance_timeout_ms: joining.then(|| {
                i32::try_from(self.settings.rebalance_timeout.as_millis()).unwrap_or(i32::MAX)
            }),
            topics: joining.then(|| self.settings.topics.clone()),
            pattern: if joining {
                self.settings.pattern.clone()
            } else {
                None
            },
            server_assignor: if joining {
                self.settings.assignor.clone()
            } else {
                None
            },
            owned: report.then(|| to_set(&self.owned)),
            client_id: self.settings.client_id.clone(),
            wait,
        };
        let answer = client.group_heartbeat(heartbeat).await?;
        if report {
            self.reported = Some(self.owned.clone());
        }
        Ok(answer)
    }

    /// Applies an answer: revocations first (waiting for the consumer), then additions.
    /// False once the consumer is gone.
    async fn take(&mut self, answer: HeartbeatAnswer) -> bool {
        self.interval = answer.heartbeat_interval.max(Duration::from_millis(50));
        self.session = answer.session_timeout.max(self.interval);
        self.shared
            .epoch
            .store(answer.member_epoch, Ordering::Release);
        let assigned: BTreeSet<Partition> = answer
            .assignment
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect();
        let revoked: Vec<Partition> = self.owned.difference(&assigned).cloned().collect();
        if !revoked.is_empty() {
            let (done, stopped) = oneshot::channel();
            if self
                .changes
                .send(Change::Revoke(revoked.clone(), done))
                .await
                .is_err()
            {
                return false;
            }
            if !self.wait_keeping_session(stopped).await {
                return false;
            }
            if self.fenced {
                return true;
            }
            for partition in &revoked {
                self.owned.remove(partition);
            }
            *self.shared.held.lock() = self.owned.clone();
        }
        let added: Vec<Partition> = assigned.difference(&self.owned).cloned().collect();
        if !added.is_empty() && answer.state != MemberState::UnrevokedPartitions {
            self.owned.extend(added.iter().cloned());
            *self.shared.held.lock() = self.owned.clone();
            if self.changes.send(Change::Assign(added)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Waits for the consumer to confirm a revocation, heartbeating meanwhile (reporting
    /// nothing new: it still owns what it gives up) so that a slow application does not
    /// lose its session and with it every partition. False once the consumer is gone.
    ///
    /// Told meanwhile that it is out of the group (the application took longer than the
    /// rebalance timeout), or without an answer for a session, the member stops the
    /// consumer's reading at once (a new generation) and sets `fenced`: the partitions it
    /// keeps may already be someone else's.
    async fn wait_keeping_session(&mut self, mut stopped: oneshot::Receiver<()>) -> bool {
        // The coordinator gives the partitions away a rebalance timeout after it asked for
        // them, counted from no earlier than when the asking heartbeat was sent.
        let asked = self.last_ok_sent.unwrap_or_else(Instant::now);
        let revoke_by = asked + self.settings.rebalance_timeout;
        loop {
            let session_end = self.last_ok_sent.map_or(revoke_by, |s| s + self.session);
            let give_up_at = revoke_by.min(session_end);
            tokio::select! {
                answer = &mut stopped => return answer.is_ok(),
                () = tokio::time::sleep_until(give_up_at) => {
                    tracing::warn!(group = %self.settings.group, "partitions not given up in time: the group may have moved them; giving up everything");
                    self.fence();
                    return true;
                }
                () = tokio::time::sleep(self.interval) => {
                    let sent = Instant::now();
                    match tokio::time::timeout_at(give_up_at, self.beat(Duration::ZERO)).await {
                        Ok(Ok(_)) => self.last_ok_sent = Some(sent),
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "a heartbeat while giving partitions up failed");
                            if matches!(
                                error.code(),
                                Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch)
                            ) {
                                self.fence();
                                return true;
                            }
                            // The coordinator may have moved: find it again.
                            *self.shared.coordinator.lock() = None;
                        }
                        Err(_) => {
                            self.fence();
                            return true;
                        }
                    }
                }
            }
        }
    }

    /// Stops the consumer's reading at once (a new generation); the caller then loses
    /// everything.
    fn fence(&mut self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        self.fenced = true;
    }

    /// Out of the group: the consumer drops everything, then the member joins afresh.
    async fn lose(&mut self) -> bool {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        let (done, stopped) = oneshot::channel();
        if self.changes.send(Change::Lost(done)).await.is_err() || stopped.await.is_err() {
            return false;
        }
        self.owned.clear();
        self.shared.held.lock().clear();
        self.reported = None;
        self.last_ok_sent = None;
        self.shared.epoch.store(0, Ordering::Release);
        true
    }

    /// Leaves the group (a static member says it will be back).
    async fn leave(&mut self) {
        let Ok(client) = self.coordinator().await else {
            return;
        };
        let epoch = if self.settings.instance_id.is_some() {
            -2
        } else {
            -1
        };
        let heartbeat = Heartbeat {
            group: self.settings.group.clone(),
            member_id: self.shared.member_id.clone(),
            member_epoch: epoch,
            instance_id: self.settings.instance_id.clone(),
            ..Heartbeat::default()
        };
        if let Err(error) = client.group_heartbeat(heartbeat).await {
            tracing::debug!(%error, "leaving the group failed; the session will end it");
        }
    }
}
