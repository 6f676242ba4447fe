//! openraft messages to and from the spool.v1 Raft transport types. Prost types stop
//! here: the rest of the crate sees openraft's.

use openraft::EntryPayload;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
    TransferLeaderError, TransferLeaderRequest, VoteRequest, VoteResponse,
};
use spool_proto::v1 as pb;
use tonic::Status;

use crate::codec::{decode_membership, encode_membership, make_vote};
use crate::state_machine::{PartitionSnapshot, TinySnapshot};
use crate::types::{
    Entry, GroupId, LogId, NodeId, PartitionRaft, ProduceBatch, SnapshotMeta, StoredMembership,
    Vote, log_id, term_of,
};

pub(crate) fn log_id_to_pb(id: &LogId) -> pb::RaftLogId {
    pb::RaftLogId {
        term: term_of(id),
        index: id.index,
    }
}

pub(crate) fn log_id_from_pb(id: Option<pb::RaftLogId>) -> Option<LogId> {
    id.map(|id| log_id(id.term, id.index))
}

pub(crate) fn vote_to_pb(vote: &Vote) -> pb::RaftVote {
    pb::RaftVote {
        term: vote.leader_id.term,
        node_id: vote.leader_id.voted_for,
        committed: vote.committed,
    }
}

pub(crate) fn vote_from_pb(vote: Option<pb::RaftVote>) -> Result<Vote, Status> {
    let vote = vote.ok_or_else(|| Status::invalid_argument("a Raft message carries no vote"))?;
    Ok(make_vote(vote.term, vote.node_id, vote.committed))
}

fn entry_to_pb(entry: &Entry) -> pb::RaftEntry {
    let (kind, payload) = match &entry.payload {
        EntryPayload::Blank => (pb::RaftEntryKind::Blank, bytes::Bytes::new()),
        EntryPayload::Normal(data) => (pb::RaftEntryKind::Data, data.batch.clone()),
        EntryPayload::Membership(m) => (
            pb::RaftEntryKind::Membership,
            bytes::Bytes::from(encode_membership(m)),
        ),
    };
    pb::RaftEntry {
        term: term_of(&entry.log_id),
        index: entry.log_id.index,
        kind: kind as i32,
        payload,
    }
}

fn entry_from_pb(entry: pb::RaftEntry) -> Result<Entry, Status> {
    let payload = match pb::RaftEntryKind::try_from(entry.kind) {
        Ok(pb::RaftEntryKind::Blank) => EntryPayload::Blank,
        Ok(pb::RaftEntryKind::Data) => EntryPayload::Normal(ProduceBatch::new(entry.payload)),
        Ok(pb::RaftEntryKind::Membership) => EntryPayload::Membership(
            decode_membership(&entry.payload)
                .map_err(|e| Status::invalid_argument(format!("membership entry: {e}")))?,
        ),
        _ => return Err(Status::invalid_argument("unknown Raft entry kind")),
    };
    Ok(openraft::Entry {
        log_id: log_id(entry.term, entry.index),
        payload,
    })
}

pub(crate) fn append_request_to_pb(
    group: GroupId,
    target: NodeId,
    req: &AppendEntriesRequest<PartitionRaft>,
) -> pb::RaftAppendRequest {
    pb::RaftAppendRequest {
        group,
        target,
        vote: Some(vote_to_pb(&req.vote)),
        prev_log_id: req.prev_log_id.as_ref().map(log_id_to_pb),
        entries: req.entries.iter().map(entry_to_pb).collect(),
        leader_commit: req.leader_commit.as_ref().map(log_id_to_pb),
    }
}

pub(crate) fn append_request_from_pb(
    req: pb::RaftAppendRequest,
) -> Result<AppendEntriesRequest<PartitionRaft>, Status> {
    let entries = req
        .entries
        .into_iter()
        .map(entry_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(req.vote)?,
        prev_log_id: log_id_from_pb(req.prev_log_id),
        entries,
        leader_commit: log_id_from_pb(req.leader_commit),
    })
}

pub(crate) fn append_response_to_pb(
    resp: &AppendEntriesResponse<PartitionRaft>,
) -> pb::RaftAppendResponse {
    use pb::raft_append_response::Result as R;
    let result = match resp {
        AppendEntriesResponse::Success => R::Success(pb::RaftEmpty {}),
        AppendEntriesResponse::PartialSuccess(last) => R::PartialSuccess(pb::RaftPartial {
            last: last.as_ref().map(log_id_to_pb),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(pb::RaftEmpty {}),
        AppendEntriesResponse::HigherVote(vote) => R::HigherVote(vote_to_pb(vote)),
    };
    pb::RaftAppendResponse {
        result: Some(result),
    }
}

pub(crate) fn append_response_from_pb(
    resp: pb::RaftAppendResponse,
) -> Result<AppendEntriesResponse<PartitionRaft>, Status> {
    use pb::raft_append_response::Result as R;
    Ok(match resp.result {
        Some(R::Success(_)) => AppendEntriesResponse::Success,
        Some(R::PartialSuccess(p)) => AppendEntriesResponse::PartialSuccess(log_id_from_pb(p.last)),
        Some(R::Conflict(_)) => AppendEntriesResponse::Conflict,
        Some(R::HigherVote(v)) => AppendEntriesResponse::HigherVote(vote_from_pb(Some(v))?),
        None => return Err(Status::internal("an append response carries no result")),
    })
}

pub(crate) fn stream_result_to_pb(
    result: &StreamAppendResult<PartitionRaft>,
) -> pb::RaftStreamAppendResponse {
    use pb::raft_stream_append_response::Result as R;
    let result = match result {
        Ok(last) => R::Flushed(pb::RaftPartial {
            last: last.as_ref().map(log_id_to_pb),
        }),
        Err(StreamAppendError::Conflict(id)) => R::Conflict(log_id_to_pb(id)),
        Err(StreamAppendError::HigherVote(vote)) => R::HigherVote(vote_to_pb(vote)),
    };
    pb::RaftStreamAppendResponse {
        result: Some(result),
    }
}

pub(crate) fn stream_result_from_pb(
    resp: pb::RaftStreamAppendResponse,
) -> Result<StreamAppendResult<PartitionRaft>, Status> {
    use pb::raft_stream_append_response::Result as R;
    Ok(match resp.result {
        Some(R::Flushed(p)) => Ok(log_id_from_pb(p.last)),
        Some(R::Conflict(id)) => Err(StreamAppendError::Conflict(log_id(id.term, id.index))),
        Some(R::HigherVote(v)) => Err(StreamAppendError::HigherVote(vote_from_pb(Some(v))?)),
        None => return Err(Status::internal("a stream response carries no result")),
    })
}

pub(crate) fn vote_request_to_pb(
    group: GroupId,
    target: NodeId,
    req: &VoteRequest<PartitionRaft>,
) -> pb::RaftVoteRequest {
    pb::RaftVoteRequest {
        group,
        target,
        vote: Some(vote_to_pb(&req.vote)),
        last_log_id: req.last_log_id.as_ref().map(log_id_to_pb),
        leadership_transfer: req.leadership_transfer,
    }
}

pub(crate) fn vote_request_from_pb(
    req: pb::RaftVoteRequest,
) -> Result<VoteRequest<PartitionRaft>, Status> {
    let mut out = VoteRequest::new(vote_from_pb(req.vote)?, log_id_from_pb(req.last_log_id));
    out.leadership_transfer = req.leadership_transfer;
    Ok(out)
}

pub(crate) fn vote_response_to_pb(resp: &VoteResponse<PartitionRaft>) -> pb::RaftVoteResponse {
    pb::RaftVoteResponse {
        vote: Some(vote_to_pb(&resp.vote)),
        vote_granted: resp.vote_granted,
        last_log_id: resp.last_log_id.as_ref().map(log_id_to_pb),
    }
}

pub(crate) fn vote_response_from_pb(
    resp: pb::RaftVoteResponse,
) -> Result<VoteResponse<PartitionRaft>, Status> {
    Ok(VoteResponse::new(
        vote_from_pb(resp.vote)?,
        log_id_from_pb(resp.last_log_id),
        resp.vote_granted,
    ))
}

pub(crate) fn snapshot_to_pb(
    group: GroupId,
    target: NodeId,
    vote: &Vote,
    snapshot: &PartitionSnapshot,
) -> pb::RaftSnapshotRequest {
    let membership = &snapshot.meta.last_membership;
    pb::RaftSnapshotRequest {
        group,
        target,
        vote: Some(vote_to_pb(vote)),
        last_log_id: snapshot.meta.last_log_id.as_ref().map(log_id_to_pb),
        membership_log_id: membership.log_id().as_ref().map(log_id_to_pb),
        membership: encode_membership(membership.membership()).into(),
        next_offset: snapshot.snapshot.next_offset,
    }
}

pub(crate) fn snapshot_from_pb(
    req: pb::RaftSnapshotRequest,
) -> Result<(Vote, PartitionSnapshot), Status> {
    let membership = decode_membership(&req.membership)
        .map_err(|e| Status::invalid_argument(format!("snapshot membership: {e}")))?;
    let snapshot = openraft::Snapshot {
        meta: SnapshotMeta {
            last_log_id: log_id_from_pb(req.last_log_id),
            last_membership: StoredMembership::new(
                log_id_from_pb(req.membership_log_id),
                membership,
            ),
        },
        snapshot: TinySnapshot {
            next_offset: req.next_offset,
        },
    };
    Ok((vote_from_pb(req.vote)?, snapshot))
}

pub(crate) fn transfer_to_pb(
    group: GroupId,
    target: NodeId,
    req: &TransferLeaderRequest<PartitionRaft>,
) -> pb::RaftTransferLeaderRequest {
    pb::RaftTransferLeaderRequest {
        group,
        target,
        from_leader: Some(vote_to_pb(req.from_leader())),
        to_node_id: *req.to_node_id(),
        last_log_id: req.last_log_id().map(log_id_to_pb),
    }
}

pub(crate) fn transfer_from_pb(
    req: pb::RaftTransferLeaderRequest,
) -> Result<TransferLeaderRequest<PartitionRaft>, Status> {
    Ok(TransferLeaderRequest::new(
        vote_from_pb(req.from_leader)?,
        req.to_node_id,
        log_id_from_pb(req.last_log_id),
    ))
}

pub(crate) fn transfer_response_to_pb(
    resp: &Result<(), TransferLeaderError<PartitionRaft>>,
) -> pb::RaftTransferLeaderResponse {
    use pb::raft_transfer_leader_response::Result as R;
    let result = match resp {
        Ok(()) => R::Ok(pb::RaftEmpty {}),
        Err(TransferLeaderError::VoteChanged { expected, actual }) => {
            R::VoteChanged(pb::RaftVoteChanged {
                expected: Some(vote_to_pb(expected)),
                actual: Some(vote_to_pb(actual)),
            })
        }
        Err(TransferLeaderError::LogNotFlushed { expected, actual }) => {
            R::LogNotFlushed(pb::RaftLogNotFlushed {
                expected: expected.as_ref().map(log_id_to_pb),
                actual: actual.as_ref().map(log_id_to_pb),
            })
        }
    };
    pb::RaftTransferLeaderResponse {
        result: Some(result),
    }
}

pub(crate) fn transfer_response_from_pb(
    resp: pb::RaftTransferLeaderResponse,
) -> Result<Result<(), TransferLeaderError<PartitionRaft>>, Status> {
    use pb::raft_transfer_leader_response::Result as R;
    Ok(match resp.result {
        Some(R::Ok(_)) => Ok(()),
        Some(R::VoteChanged(v)) => Err(TransferLeaderError::VoteChanged {
            expected: vote_from_pb(v.expected)?,
            actual: vote_from_pb(v.actual)?,
        }),
        Some(R::LogNotFlushed(l)) => Err(TransferLeaderError::LogNotFlushed {
            expected: log_id_from_pb(l.expected),
            actual: log_id_from_pb(l.actual),
        }),
        None => return Err(Status::internal("a transfer response carries no result")),
    })
}
