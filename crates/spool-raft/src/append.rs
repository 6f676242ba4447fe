//! The write path of a partition replica: batches in, each batch's offset out.
//!
//! Every batch travels with a notice that the leader's log store fires as it appends it,
//! saying what became of it: stored, a retry of a batch the log holds already (an
//! idempotent producer's; answered with the offset it was stored at), or refused (a
//! sequence gap or an old producer epoch). Retries and refusals are stored as blank
//! entries, so that the log, not this process's memory, says what happened.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardReason};

use crate::error::ReplicaError;
use crate::producers::Verdict;
use crate::replica::{AckLevel, PartitionReplica};
use crate::types::{AppendNotice, Appended, ProduceBatch};

/// How long a write waits for a newly elected leader's lease.
const LEASE_WAIT: Duration = Duration::from_secs(3);

enum Attempt {
    LeaseNotYetValid,
    Failed(ReplicaError),
}

impl PartitionReplica {
    /// Appends batches (Kafka record batches whose CRC the caller has checked) as
    /// consecutive entries and answers with the offset of each batch's first record, once
    /// every one of them is committed (acks=all) or appended (acks=leader). They are
    /// submitted together, so validation refuses all or none; a leader failing midway may
    /// still leave a committed prefix behind an error answer (an idempotent producer's
    /// retry is then answered from the log; a plain producer's is written again).
    pub async fn append(
        &self,
        batches: Vec<Bytes>,
        acks: AckLevel,
    ) -> Result<Vec<i64>, ReplicaError> {
        self.append_checked(batches, acks, None).await
    }

    /// As `append`, but only while this replica leads in `term`: a writer whose records
    /// were computed from its state under one leadership must not have them land in a
    /// later one, after another leader's writes it never saw.
    pub async fn append_in_term(
        &self,
        batches: Vec<Bytes>,
        acks: AckLevel,
        term: u64,
    ) -> Result<Vec<i64>, ReplicaError> {
        self.append_checked(batches, acks, Some(term)).await
    }

    async fn append_checked(
        &self,
        batches: Vec<Bytes>,
        acks: AckLevel,
        term: Option<u64>,
    ) -> Result<Vec<i64>, ReplicaError> {
        if batches.is_empty() {
            return Err(ReplicaError::Raft("nothing to append".into()));
        }
        self.touch();
        // A leader just elected takes writes once a quorum has answered it (its lease).
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(term) = term
                && (self.term() != term || !self.is_leader())
            {
                return Err(self.not_leader_now());
            }
            match self.try_append(batches.clone(), acks).await {
                Err(Attempt::LeaseNotYetValid) if tokio::time::Instant::now() < deadline => {
                    let _ = tokio::time::timeout_at(deadline, metrics.changed()).await;
                }
                Err(Attempt::LeaseNotYetValid) => return Err(self.not_leader_now()),
                Err(Attempt::Failed(error)) => return Err(error),
                Ok(offsets) => return Ok(offsets),
            }
        }
    }

    fn not_leader_now(&self) -> ReplicaError {
        let hint = self.leader();
        ReplicaError::NotLeader {
            group: self.group,
            leader: hint.node,
            leader_address: hint.address,
        }
    }

    /// Submits the batches as consecutive entries of one write. acks=leader answers once
    /// the log store has appended every one (each notice fired); acks=all once every one
    /// is committed and applied, not only the first: a leader can fail between the
    /// commits of two entries of one request.
    async fn try_append(&self, batches: Vec<Bytes>, acks: AckLevel) -> Result<Vec<i64>, Attempt> {
        let count = batches.len();
        let mut notices = Vec::with_capacity(count);
        let payloads: Vec<ProduceBatch> = batches
            .into_iter()
            .map(|batch| {
                let mut payload = ProduceBatch::new(batch);
                payload.verified = true;
                let (notice, appended) = AppendNotice::new();
                payload.notice = Some(notice);
                notices.push(appended);
                payload
            })
            .collect();
        let mut results = self
            .raft
            .client_write_many(payloads)
            .await
            .map_err(|e| Attempt::Failed(ReplicaError::Raft(e.to_string())))?;
        let mut appended = Vec::with_capacity(count);
        if acks == AckLevel::Leader {
            for notice in notices.drain(..) {
                match notice.await {
                    Ok(a) => appended.push(a),
                    // Not appended here: the answers below say why.
                    Err(_) => break,
                }
            }
            if appended.len() == count {
                return offsets_of(&appended);
            }
        }
        // acks=all, or the leader did not append: every answer counts, and the first
        // failure is the request's.
        for i in 0..count {
            match results.next().await {
                Some(Ok(Ok(_))) => {}
                Some(Ok(Err(ClientWriteError::ForwardToLeader(f))))
                    if i == 0 && f.reason == ForwardReason::LeaseExpired && self.is_leader() =>
                {
                    return Err(Attempt::LeaseNotYetValid);
                }
                Some(Ok(Err(error))) => return Err(Attempt::Failed(self.write_error(error))),
                Some(Err(fatal)) => {
                    return Err(Attempt::Failed(ReplicaError::Raft(fatal.to_string())));
                }
                None => return Err(Attempt::Failed(ReplicaError::ShuttingDown)),
            }
        }
        // Applied, so appended: every notice has fired.
        for notice in notices {
            match notice.await {
                Ok(a) => appended.push(a),
                Err(_) => return Err(Attempt::Failed(ReplicaError::ShuttingDown)),
            }
        }
        offsets_of(&appended)
    }
}

/// Each batch's offset, or the refusal of the first batch refused.
fn offsets_of(appended: &[Appended]) -> Result<Vec<i64>, Attempt> {
    appended
        .iter()
        .map(|a| match a.verdict {
            Verdict::Append | Verdict::Duplicate { .. } => Ok(a.base_offset),
            Verdict::Refused(error) => Err(Attempt::Failed(ReplicaError::Sequence(error))),
        })
        .collect()
}
