//! One cached channel per peer node, shared by every group, and the per-peer batcher
//! that coalesces heartbeats: every group's heartbeat to a node that arrives within a
//! short window travels in one `Heartbeat` call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use spool_proto::v1 as pb;
use spool_proto::v1::raft_transport_client::RaftTransportClient;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use super::faults::Faults;
use crate::types::NodeId;

/// How long a heartbeat may wait for others to the same node.
const COALESCE_WINDOW: Duration = Duration::from_millis(10);
/// Most heartbeats in one call.
const MAX_BATCH: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const HEARTBEAT_CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct HeartbeatCall {
    pub request: pb::RaftAppendRequest,
    pub reply: oneshot::Sender<Result<pb::RaftHeartbeatResult, Status>>,
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub addr: String,
    pub client: RaftTransportClient<Channel>,
    heartbeats: mpsc::UnboundedSender<HeartbeatCall>,
}

impl Peer {
    /// Queues a heartbeat for the next batch to this peer.
    pub fn heartbeat(
        &self,
        request: pb::RaftAppendRequest,
    ) -> oneshot::Receiver<Result<pb::RaftHeartbeatResult, Status>> {
        let (reply, answer) = oneshot::channel();
        if let Err(rejected) = self.heartbeats.send(HeartbeatCall { request, reply }) {
            let _ = rejected
                .0
                .reply
                .send(Err(Status::unavailable("peer connection closed")));
        }
        answer
    }
}

/// The node's connections to its peers.
#[derive(Debug)]
pub struct PeerPool {
    local: NodeId,
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    /// Where each node is now, from the cluster's metadata: it overrides the address a
    /// group's membership recorded, which may be older (a node that moved, or one whose
    /// Raft port changed).
    book: Mutex<HashMap<NodeId, String>>,
    faults: Arc<Faults>,
}

impl PeerPool {
    pub fn new(local: NodeId) -> Arc<Self> {
        Arc::new(Self {
            local,
            peers: Mutex::new(HashMap::new()),
            book: Mutex::new(HashMap::new()),
            faults: Arc::new(Faults::default()),
        })
    }

    pub fn local(&self) -> NodeId {
        self.local
    }

    /// The fault layer for tests: cut, delay or drop messages to chosen nodes.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Records where nodes are now (see `book`).
    pub fn set_addresses(&self, addresses: impl IntoIterator<Item = (NodeId, String)>) {
        let mut book = self.book.lock();
        for (node, address) in addresses {
            book.insert(node, address);
        }
    }

    /// The peer `node`, at the address the book has for it or else `addr`, connecting
    /// lazily; a node that moved gets a new channel.
    pub(crate) fn peer(&self, node: NodeId, addr: &str) -> Result<Arc<Peer>, Status> {
        // Both locks, book first (the only order taken): no copy of the address per call.
        let book = self.book.lock();
        let addr = book.get(&node).map_or(addr, String::as_str);
        let mut peers = self.peers.lock();
        if let Some(peer) = peers.get(&node)
            && peer.addr == addr
        {
            return Ok(Arc::clone(peer));
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("peer address {addr}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let client = RaftTransportClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(super::service::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(super::service::MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_heartbeats(client.clone(), rx));
        let peer = Arc::new(Peer {
            addr: addr.to_string(),
            client,
            heartbeats: tx,
        });
        peers.insert(node, Arc::clone(&peer));
        Ok(peer)
    }
}

async fn batch_heartbeats(
    mut client: RaftTransportClient<Channel>,
    mut rx: mpsc::UnboundedReceiver<HeartbeatCall>,
) {
    let mut calls = Vec::new();
    while let Some(first) = rx.recv().await {
        calls.push(first);
        let window = tokio::time::Instant::now() + COALESCE_WINDOW;
        while calls.len() < MAX_BATCH {
            match tokio::time::timeout_at(window, rx.recv()).await {
                Ok(Some(call)) => calls.push(call),
                Ok(None) | Err(_) => break,
            }
        }
        let (requests, replies): (Vec<_>, Vec<_>) =
            calls.drain(..).map(|c| (c.request, c.reply)).unzip();
        let mut request = tonic::Request::new(pb::RaftHeartbeatBatch { requests });
        request.set_timeout(HEARTBEAT_CALL_TIMEOUT);
        match client.heartbeat(request).await {
            Ok(response) => {
                let mut results = response.into_inner().results.into_iter();
                for reply in replies {
                    let result = results
                        .next()
                        .ok_or_else(|| Status::internal("a heartbeat batch answered too few"));
                    let _ = reply.send(result);
                }
            }
            Err(status) => {
                for reply in replies {
                    let _ = reply.send(Err(status.clone()));
                }
            }
        }
    }
}
