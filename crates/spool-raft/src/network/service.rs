//! The receiving side of the Raft transport: one tonic service on the node's gRPC port
//! that hands each message to the group it names.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use spool_proto::v1 as pb;
use spool_proto::v1::raft_transport_server::RaftTransport;
use tonic::{Request, Response, Status, Streaming};

use super::convert::*;
use crate::types::{GroupId, NodeId, Raft};

/// Finds the Raft group a message is for.
pub trait GroupDirectory: Send + Sync + 'static {
    fn local_node(&self) -> NodeId;
    fn raft(&self, group: GroupId) -> Option<Raft>;
    /// Changes with every start of the node.
    fn boot_id(&self) -> u64;
    /// This node's replica of `group` may not vote yet.
    fn withholds_votes(&self, group: GroupId) -> bool;
    /// The group's leader was heard from (after its message was handled).
    fn leader_contact(&self, group: GroupId);
    /// A leader of `term` sent its commit index (before its message was handled).
    fn leader_commit(&self, group: GroupId, term: u64, index: u64);
    /// This node's replica of `group` may not take leadership now.
    fn may_not_lead(&self, group: GroupId) -> bool;
    /// Entries of `group` from its leader are refused for now (the data volume is nearly
    /// full).
    fn refuses_entries(&self, group: GroupId) -> bool;
    /// `leader` asks these groups to stop their timers; returns those that did.
    fn quiesce(&self, leader: NodeId, groups: Vec<(GroupId, u64)>) -> Vec<GroupId>;
    /// Turns true when the node begins to stop: open replication streams end then, so
    /// that a graceful stop of the server does not wait on peers that never hang up.
    fn closing(&self) -> tokio::sync::watch::Receiver<bool>;
}

/// The largest message the transport takes: one entry (a frame's payload is at most
/// `MAX_FRAME_PAYLOAD`) or a replication read of several, with room for the envelope.
pub(crate) const MAX_MESSAGE_BYTES: usize =
    spool_log::frame::MAX_FRAME_PAYLOAD as usize + 1024 * 1024;

/// The RaftTransport gRPC service.
#[derive(Debug, Clone)]
pub struct RaftTransportService<D> {
    directory: Arc<D>,
}

impl<D: GroupDirectory> RaftTransportService<D> {
    pub fn new(directory: Arc<D>) -> Self {
        Self { directory }
    }

    pub fn into_server(self) -> pb::raft_transport_server::RaftTransportServer<Self> {
        pb::raft_transport_server::RaftTransportServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn lookup(&self, group: GroupId, target: NodeId) -> Result<Raft, Status> {
        let local = self.directory.local_node();
        if target != local {
            // The address now belongs to another node; acting on it could split a group.
            return Err(Status::failed_precondition(format!(
                "this is node {local}, not node {target}"
            )));
        }
        self.directory
            .raft(group)
            .ok_or_else(|| Status::not_found(format!("group {group} is not hosted here")))
    }
}

impl<D: GroupDirectory> RaftTransportService<D> {
    /// A vote, or with `pre`, a pre-vote.
    async fn ballot(
        &self,
        request: pb::RaftVoteRequest,
        pre: bool,
    ) -> Result<Response<pb::RaftVoteResponse>, Status> {
        let raft = self.lookup(request.group, request.target)?;
        if self.directory.withholds_votes(request.group) {
            return Err(Status::unavailable(format!(
                "group {}: this replica is rebuilding its log and does not vote yet",
                request.group
            )));
        }
        let rpc = vote_request_from_pb(request)?;
        let response = if pre {
            raft.pre_vote(rpc).await
        } else {
            raft.vote(rpc).await
        };
        Ok(Response::new(vote_response_to_pb(
            &response.map_err(fatal)?,
        )))
    }
}

/// Tells the directory the commit index an append request carries.
fn note_commit<D: GroupDirectory>(directory: &D, request: &pb::RaftAppendRequest) {
    if let (Some(vote), Some(commit)) = (&request.vote, &request.leader_commit) {
        directory.leader_commit(request.group, vote.term, commit.index);
    }
}

/// Leaders back off on it and try again (see `DiskSpace`).
fn disk_full() -> Status {
    Status::unavailable("this node's data volume is nearly full: it takes no entries for now")
}

fn fatal(error: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft stopped: {error}"))
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<pb::RaftStreamAppendResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<D: GroupDirectory> RaftTransport for RaftTransportService<D> {
    async fn append_entries(
        &self,
        request: Request<pb::RaftAppendRequest>,
    ) -> Result<Response<pb::RaftAppendResponse>, Status> {
        let request = request.into_inner();
        let group = request.group;
        let raft = self.lookup(group, request.target)?;
        if !request.entries.is_empty() && self.directory.refuses_entries(group) {
            return Err(disk_full());
        }
        note_commit(&*self.directory, &request);
        let rpc = append_request_from_pb(request)?;
        let response = raft.append_entries(rpc).await.map_err(fatal)?;
        self.directory.leader_contact(group);
        Ok(Response::new(append_response_to_pb(&response)))
    }

    type StreamAppendStream = ResponseStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<pb::RaftAppendRequest>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let mut input = request.into_inner();
        let Some(first) = input.message().await? else {
            return Err(Status::invalid_argument("an empty append stream"));
        };
        let raft = self.lookup(first.group, first.target)?;
        if !first.entries.is_empty() && self.directory.refuses_entries(first.group) {
            return Err(disk_full());
        }
        let group = first.group;
        let noted = Arc::clone(&self.directory);
        // Requests after the first must stay in the same group; a bad one ends the input,
        // and so does one with entries the disk has no room for (the leader then hears
        // the refusal and backs off).
        let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (judge, found_full) = (Arc::clone(&self.directory), Arc::clone(&full));
        let requests = futures_util::stream::once(async move { Ok(first) })
            .chain(input)
            .take_while(move |item| {
                let ok = match item {
                    Ok(r) if r.group == group => {
                        let refused = !r.entries.is_empty() && judge.refuses_entries(group);
                        found_full.fetch_or(refused, std::sync::atomic::Ordering::Relaxed);
                        !refused
                    }
                    _ => false,
                };
                async move { ok }
            })
            .inspect(move |item| {
                if let Ok(request) = item {
                    note_commit(&*noted, request);
                }
            })
            .filter_map(
                |item| async move { item.ok().and_then(|r| append_request_from_pb(r).ok()) },
            );
        let directory = Arc::clone(&self.directory);
        // Both halves end as the node begins to stop: the output for the peer, and the
        // input openraft goes on reading, which would otherwise hold the HTTP/2 stream (and
        // with it the server's graceful stop) open for as long as the peer keeps sending.
        let closed = || {
            let mut closing = self.directory.closing();
            async move {
                let _ = closing.wait_for(|closing| *closing).await;
            }
        };
        let requests = requests.take_until(closed());
        let output = raft
            .stream_append(requests)
            .take_until(closed())
            .map(move |item| match item {
                Ok(result) => {
                    directory.leader_contact(group);
                    Ok(stream_result_to_pb(&result))
                }
                Err(error) => Err(fatal(error)),
            })
            .chain(futures_util::stream::iter(std::iter::from_fn(move || {
                full.swap(false, std::sync::atomic::Ordering::Relaxed)
                    .then(disk_full)
                    .map(Err)
            })));
        Ok(Response::new(Box::pin(output)))
    }

    async fn vote(
        &self,
        request: Request<pb::RaftVoteRequest>,
    ) -> Result<Response<pb::RaftVoteResponse>, Status> {
        self.ballot(request.into_inner(), false).await
    }

    async fn pre_vote(
        &self,
        request: Request<pb::RaftVoteRequest>,
    ) -> Result<Response<pb::RaftVoteResponse>, Status> {
        self.ballot(request.into_inner(), true).await
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftSnapshotRequest>,
    ) -> Result<Response<pb::RaftSnapshotResponse>, Status> {
        let request = request.into_inner();
        let raft = self.lookup(request.group, request.target)?;
        let (vote, snapshot) = snapshot_from_pb(request)?;
        let response = raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(fatal)?;
        Ok(Response::new(pb::RaftSnapshotResponse {
            vote: Some(vote_to_pb(&response.vote)),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::RaftTransferLeaderRequest>,
    ) -> Result<Response<pb::RaftTransferLeaderResponse>, Status> {
        let request = request.into_inner();
        let raft = self.lookup(request.group, request.target)?;
        if self.directory.may_not_lead(request.group) {
            // openraft would campaign even with elections switched off.
            return Err(Status::failed_precondition(format!(
                "group {}: this replica may not lead now (rebuilding, or stopped applying)",
                request.group
            )));
        }
        let response = raft
            .handle_transfer_leader(transfer_from_pb(request)?)
            .await
            .map_err(fatal)?;
        Ok(Response::new(transfer_response_to_pb(&response)))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::RaftHeartbeatBatch>,
    ) -> Result<Response<pb::RaftHeartbeatBatchResponse>, Status> {
        use pb::raft_heartbeat_result::Result as R;
        let answers = request
            .into_inner()
            .requests
            .into_iter()
            .map(|request| async move {
                let raft = match self.lookup(request.group, request.target) {
                    Ok(raft) => raft,
                    Err(_) => return R::UnknownGroup(pb::RaftEmpty {}),
                };
                note_commit(&*self.directory, &request);
                let Ok(rpc) = append_request_from_pb(request) else {
                    return R::UnknownGroup(pb::RaftEmpty {});
                };
                match raft.append_entries(rpc).await {
                    Ok(response) => R::Response(append_response_to_pb(&response)),
                    Err(_) => R::UnknownGroup(pb::RaftEmpty {}),
                }
            });
        let results = futures_util::future::join_all(answers)
            .await
            .into_iter()
            .map(|result| pb::RaftHeartbeatResult {
                result: Some(result),
            })
            .collect();
        Ok(Response::new(pb::RaftHeartbeatBatchResponse { results }))
    }

    async fn ping(
        &self,
        request: Request<pb::RaftPingRequest>,
    ) -> Result<Response<pb::RaftPingResponse>, Status> {
        let local = self.directory.local_node();
        if request.into_inner().target != local {
            return Err(Status::failed_precondition(format!("this is node {local}")));
        }
        Ok(Response::new(pb::RaftPingResponse {
            node_id: local,
            boot_id: self.directory.boot_id(),
        }))
    }

    async fn quiesce(
        &self,
        request: Request<pb::RaftQuiesceRequest>,
    ) -> Result<Response<pb::RaftQuiesceResponse>, Status> {
        let request = request.into_inner();
        let local = self.directory.local_node();
        if request.target != local {
            return Err(Status::failed_precondition(format!("this is node {local}")));
        }
        let groups = request.groups.iter().map(|g| (g.group, g.term)).collect();
        let quiesced = self.directory.quiesce(request.leader, groups);
        Ok(Response::new(pb::RaftQuiesceResponse { quiesced }))
    }
}
