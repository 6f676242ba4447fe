//! The sending side of the Raft transport for one group: openraft's network traits on
//! the node's shared peer channels. Replication is a native gRPC stream; a stream of one
//! request carrying no entries (a heartbeat) goes through the per-peer batcher instead.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use openraft::BasicNode;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use tonic::{Code, Status};

use super::convert::*;
use super::faults::Verdict;
use super::peers::{Peer, PeerPool};
use crate::state_machine::PartitionSnapshot;
use crate::types::{GroupId, NodeId, PartitionRaft, Vote};

type RpcError = RPCError<PartitionRaft>;

/// Makes a group's connections to its peers.
#[derive(Debug, Clone)]
pub struct GroupNetworkFactory {
    group: GroupId,
    pool: Arc<PeerPool>,
}

impl GroupNetworkFactory {
    pub fn new(group: GroupId, pool: Arc<PeerPool>) -> Self {
        Self { group, pool }
    }
}

impl RaftNetworkFactory<PartitionRaft> for GroupNetworkFactory {
    type Network = GroupClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GroupClient {
        GroupClient {
            group: self.group,
            target,
            addr: node.addr.clone(),
            pool: Arc::clone(&self.pool),
        }
    }
}

/// One group's view of one peer.
#[derive(Debug)]
pub struct GroupClient {
    group: GroupId,
    target: NodeId,
    addr: String,
    pool: Arc<PeerPool>,
}

fn to_rpc_error(status: &Status) -> RpcError {
    match status.code() {
        // The peer is down, not hosting the group yet, or is another node now: back off.
        Code::Unavailable
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Cancelled => RPCError::Unreachable(Unreachable::from_string(status.message())),
        _ => RPCError::Network(NetworkError::from_string(status.message())),
    }
}

fn cut_error() -> RpcError {
    RPCError::Unreachable(Unreachable::from_string("link cut by the fault layer"))
}

impl GroupClient {
    fn peer(&self) -> Result<Arc<Peer>, RpcError> {
        self.pool
            .peer(self.target, &self.addr)
            .map_err(|s| to_rpc_error(&s))
    }

    /// Applies the fault layer to one message.
    async fn admit(&self) -> Result<(), RpcError> {
        match self.pool.faults().verdict(self.target) {
            Verdict::Drop => Err(cut_error()),
            Verdict::Send { delay } if delay > Duration::ZERO => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            Verdict::Send { .. } => Ok(()),
        }
    }

    async fn heartbeat(
        &self,
        rpc: AppendEntriesRequest<PartitionRaft>,
    ) -> Result<AppendEntriesResponse<PartitionRaft>, RpcError> {
        use spool_proto::v1::raft_heartbeat_result::Result as R;
        self.admit().await?;
        let peer = self.peer()?;
        let request = append_request_to_pb(self.group, self.target, &rpc);
        let answer = peer
            .heartbeat(request)
            .await
            .map_err(|_| RPCError::Unreachable(Unreachable::from_string("heartbeat dropped")))?
            .map_err(|s| to_rpc_error(&s))?;
        match answer.result {
            Some(R::Response(response)) => {
                append_response_from_pb(response).map_err(|s| to_rpc_error(&s))
            }
            _ => Err(RPCError::Unreachable(Unreachable::from_string(format!(
                "group {} is not hosted on node {}",
                self.group, self.target
            )))),
        }
    }

    /// A vote request, or with `pre`, a pre-vote request.
    async fn ballot(
        &self,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
        pre: bool,
    ) -> Result<VoteResponse<PartitionRaft>, RpcError> {
        self.admit().await?;
        let mut client = self.peer()?.client.clone();
        let request = self.request(vote_request_to_pb(self.group, self.target, &rpc), &option);
        let response = if pre {
            client.pre_vote(request).await
        } else {
            client.vote(request).await
        };
        let response = response.map_err(|s| to_rpc_error(&s))?;
        vote_response_from_pb(response.into_inner()).map_err(|s| to_rpc_error(&s))
    }

    fn request<T>(&self, message: T, option: &RPCOption) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(option.hard_ttl());
        request
    }
}

impl RaftNetworkV2<PartitionRaft> for GroupClient {
    type SnapshotData = crate::state_machine::TinySnapshot;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<PartitionRaft>, RpcError> {
        if rpc.entries.is_empty() {
            return self.heartbeat(rpc).await;
        }
        self.admit().await?;
        let mut client = self.peer()?.client.clone();
        let request = self.request(append_request_to_pb(self.group, self.target, &rpc), &option);
        let response = client
            .append_entries(request)
            .await
            .map_err(|s| to_rpc_error(&s))?;
        append_response_from_pb(response.into_inner()).map_err(|s| to_rpc_error(&s))
    }

    fn stream_append<'s, S>(
        &'s mut self,
        mut input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<PartitionRaft>, RpcError>>, RpcError>,
    >
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<PartitionRaft>>
            + Send
            + Unpin
            + 'static,
    {
        Box::pin(async move {
            let Some(first) = input.next().await else {
                return Ok(Box::pin(futures_util::stream::empty()) as BoxStream<'s, _>);
            };
            // A lone request without entries is a heartbeat: batch it with other groups'.
            let second = if first.entries.is_empty() {
                input.next().now_or_never()
            } else {
                None
            };
            if let Some(None) = second {
                let range = (first.prev_log_id, first.prev_log_id);
                let response = self.heartbeat(first).await?;
                let result = response.into_stream_result(range.0, range.1);
                return Ok(
                    Box::pin(futures_util::stream::once(async move { Ok(result) }))
                        as BoxStream<'s, _>,
                );
            }
            self.admit().await?;
            let mut client = self.peer()?.client.clone();
            let (group, target) = (self.group, self.target);
            let faults = Arc::clone(self.pool.faults());
            let head: Vec<_> = std::iter::once(first).chain(second.flatten()).collect();
            let requests = futures_util::stream::iter(head)
                .chain(input)
                .take_while(move |_| {
                    let open = !faults.is_cut(target);
                    async move { open }
                })
                .map(move |rpc| append_request_to_pb(group, target, &rpc));
            let mut request = tonic::Request::new(requests);
            request.set_timeout(option.hard_ttl().max(Duration::from_secs(3600)));
            let response = client
                .stream_append(request)
                .await
                .map_err(|s| to_rpc_error(&s))?;
            let faults = Arc::clone(self.pool.faults());
            let output = response.into_inner().map(move |item| {
                if faults.is_cut(target) {
                    return Err(cut_error());
                }
                match item {
                    Ok(response) => stream_result_from_pb(response).map_err(|s| to_rpc_error(&s)),
                    Err(status) => Err(to_rpc_error(&status)),
                }
            });
            Ok(Box::pin(output) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RpcError> {
        self.ballot(rpc, option, false).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RpcError> {
        self.ballot(rpc, option, true).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: PartitionSnapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<PartitionRaft>, StreamingError<PartitionRaft>> {
        let to_streaming = |e: RpcError| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            other => StreamingError::Network(NetworkError::from_string(other.to_string())),
        };
        self.admit().await.map_err(to_streaming)?;
        let mut client = self.peer().map_err(to_streaming)?.client.clone();
        let request = self.request(
            snapshot_to_pb(self.group, self.target, &vote, &snapshot),
            &option,
        );
        let response = client
            .install_snapshot(request)
            .await
            .map_err(|s| to_streaming(to_rpc_error(&s)))?;
        let vote =
            vote_from_pb(response.into_inner().vote).map_err(|s| to_streaming(to_rpc_error(&s)))?;
        Ok(SnapshotResponse::new(vote))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<PartitionRaft>, RpcError> {
        self.admit().await?;
        let mut client = self.peer()?.client.clone();
        let request = self.request(transfer_to_pb(self.group, self.target, &req), &option);
        let response = client
            .transfer_leader(request)
            .await
            .map_err(|s| to_rpc_error(&s))?;
        transfer_response_from_pb(response.into_inner()).map_err(|s| to_rpc_error(&s))
    }

    fn backoff(&self) -> Option<Backoff> {
        // 50 ms doubling to 1 s: a peer that is down costs little, one that returns is
        // found within a second.
        let steps = (0..)
            .map(|i: u32| Duration::from_millis(50u64 << i.min(4)).min(Duration::from_secs(1)));
        Some(Backoff::new(steps))
    }
}
