//! What the client knows of the cluster: partition counts and leaders per topic, broker
//! addresses, and one connection (one HTTP/2 channel) per broker, opened when first used.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::client::Client;
use crate::error::{ApiError, ClientError};
use crate::types::ClusterMetadata;

#[derive(Debug, Default)]
struct State {
    brokers: HashMap<u64, String>,
    /// Leader node id of each partition, by topic.
    leaders: HashMap<String, Vec<u64>>,
    /// Leader epoch of each partition, by topic (0: unknown, as after a NOT_LEADER hint).
    epochs: HashMap<String, Vec<u64>>,
    /// Partitions whose leader a NOT_LEADER answer just named (used once).
    hinted: std::collections::HashSet<(String, u32)>,
    /// When each topic's metadata was last taken.
    refreshed: HashMap<String, Instant>,
    /// When each topic's metadata was last asked for by a background check.
    polled: HashMap<String, Instant>,
    /// Partitions following a NOT_LEADER hint, with the leader epoch they had before it:
    /// only metadata from a newer term replaces the hint (a node that lags would name the
    /// leader the hint was about to replace).
    hint_floors: HashMap<(String, u32), u64>,
    /// The metadata epoch of the newest answer taken: an older answer (from a node still
    /// catching up) never replaces a newer one.
    epoch: u64,
}

impl State {
    /// Keeps the NOT_LEADER hints of `topic` that fresh metadata does not overrule: a
    /// partition's hint stands until the metadata names a leader in a newer term than
    /// the partition had before the hint.
    fn keep_hints(&mut self, topic: &str, leaders: &mut [u64], epochs: &mut [u64]) {
        if !self.hint_floors.keys().any(|(t, _)| t == topic) {
            return;
        }
        let (Some(cached_leaders), Some(cached_epochs)) =
            (self.leaders.get(topic), self.epochs.get(topic))
        else {
            return;
        };
        if cached_leaders.len() != leaders.len() {
            // The topic changed shape (recreated, or partitions added): start afresh.
            self.hint_floors.retain(|(t, _), _| t != topic);
            return;
        }
        let (cached_leaders, cached_epochs) = (cached_leaders.clone(), cached_epochs.clone());
        self.hint_floors.retain(|(t, partition), floor| {
            if t != topic {
                return true;
            }
            let p = *partition as usize;
            let (Some(leader), Some(epoch)) = (leaders.get_mut(p), epochs.get_mut(p)) else {
                return false;
            };
            if *epoch > *floor {
                return false;
            }
            *leader = cached_leaders.get(p).copied().unwrap_or(*leader);
            *epoch = cached_epochs.get(p).copied().unwrap_or(0);
            true
        });
    }
}

/// A metadata cache and a connection per broker.
#[derive(Debug)]
pub(crate) struct Cluster {
    bootstrap: Client,
    state: RwLock<State>,
    connections: tokio::sync::Mutex<HashMap<u64, Client>>,
}

impl Cluster {
    pub fn new(bootstrap: Client) -> Self {
        Self {
            bootstrap,
            state: RwLock::new(State::default()),
            connections: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The connection the client was made with.
    pub fn bootstrap(&self) -> &Client {
        &self.bootstrap
    }

    /// The number of partitions of `topic`, from the cache or the cluster.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(leaders) = self.state.read().leaders.get(topic) {
            return Ok(leaders.len() as u32);
        }
        self.refresh(topic).await?;
        Ok(self
            .state
            .read()
            .leaders
            .get(topic)
            .map_or(0, |l| l.len() as u32))
    }

    /// Fetches `topic`'s metadata again (after NOT_LEADER or an unknown topic).
    /// Asks the bootstrap node, and if it cannot answer, every other node known.
    pub async fn refresh(&self, topic: &str) -> Result<(), ClientError> {
        self.refresh_avoiding(topic, None).await
    }

    /// As `refresh`, asking `suspect` (a node that just failed to answer, or whose
    /// leadership is in doubt) only when no other node answers: a dead node's connection
    /// would hold the answer up until it is found dead.
    pub async fn refresh_avoiding(
        &self,
        topic: &str,
        suspect: Option<u64>,
    ) -> Result<(), ClientError> {
        let topics = [topic.to_string()];
        let metadata = self.ask_for_metadata(&topics, suspect).await?;
        let mut state = self.state.write();
        if metadata.epoch < state.epoch {
            return Ok(());
        }
        state.epoch = metadata.epoch;
        for broker in metadata.brokers {
            state.brokers.insert(broker.node_id, broker.address);
        }
        for t in metadata.topics {
            if let Some(error) = t.error {
                return Err(ClientError::Api(ApiError { ..error }));
            }
            let mut leaders = vec![0; t.partitions.len()];
            let mut epochs = vec![0; t.partitions.len()];
            for p in t.partitions {
                if let Some(slot) = leaders.get_mut(p.partition as usize) {
                    *slot = p.leader;
                }
                if let Some(slot) = epochs.get_mut(p.partition as usize) {
                    *slot = p.leader_epoch;
                }
            }
            state.keep_hints(&t.name, &mut leaders, &mut epochs);
            state.epochs.insert(t.name.clone(), epochs);
            state.refreshed.insert(t.name.clone(), Instant::now());
            state.leaders.insert(t.name, leaders);
        }
        Ok(())
    }

    /// A new producer identity from the bootstrap node, or from any other known node when
    /// it cannot answer (any broker hands ids out).
    pub async fn init_producer_id(&self) -> Result<(i64, i16), ClientError> {
        let mut answer = self.bootstrap.init_producer_id().await;
        if answer.is_ok() {
            return answer;
        }
        let known: Vec<u64> = self.state.read().brokers.keys().copied().collect();
        for node in known {
            let Ok(client) = self.connection(Some(node)).await else {
                continue;
            };
            if client.address() == self.bootstrap.address() {
                continue;
            }
            answer = client.init_producer_id().await;
            if answer.is_ok() {
                return answer;
            }
        }
        answer
    }

    /// Metadata from the bootstrap node, or from any other known node when it cannot
    /// answer; `suspect` is asked last.
    async fn ask_for_metadata(
        &self,
        topics: &[String],
        suspect: Option<u64>,
    ) -> Result<ClusterMetadata, ClientError> {
        let suspect_address = suspect.and_then(|node| self.address_of(node));
        let bootstrap_suspected = suspect_address.as_deref() == Some(self.bootstrap.address());
        let mut answer = if bootstrap_suspected {
            Err(ClientError::Transport(
                "the bootstrap node is in doubt".into(),
            ))
        } else {
            self.bootstrap.metadata(topics).await
        };
        if answer.is_ok() {
            return answer;
        }
        let known: Vec<u64> = self.state.read().brokers.keys().copied().collect();
        for node in known.into_iter().filter(|node| Some(*node) != suspect) {
            let Ok(client) = self.connection(Some(node)).await else {
                continue;
            };
            if client.address() == self.bootstrap.address() {
                continue;
            }
            answer = client.metadata(topics).await;
            if answer.is_ok() {
                return answer;
            }
        }
        if bootstrap_suspected {
            answer = self.bootstrap.metadata(topics).await;
        }
        answer
    }

    /// Whether a background check may ask for `topic`'s metadata now: at most one per
    /// `gap` for all the requests and partitions waiting on the same election.
    pub fn claim_poll(&self, topic: &str, gap: Duration) -> bool {
        let mut state = self.state.write();
        let now = Instant::now();
        match state.polled.get_mut(topic) {
            Some(at) if now.duration_since(*at) < gap => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                state.polled.insert(topic.to_string(), now);
                true
            }
        }
    }

    /// The leader epoch a request for the partition is judged against: the cached one,
    /// or the one it had before a NOT_LEADER hint (0: unknown).
    pub fn known_epoch(&self, topic: &str, partition: u32) -> u64 {
        let state = self.state.read();
        let cached = state
            .epochs
            .get(topic)
            .and_then(|e| e.get(partition as usize).copied())
            .unwrap_or(0);
        if cached > 0 {
            return cached;
        }
        state
            .hint_floors
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// Whether `topic`'s metadata was taken at or after `when`.
    pub fn refreshed_since(&self, topic: &str, when: Instant) -> bool {
        self.state
            .read()
            .refreshed
            .get(topic)
            .is_some_and(|at| *at >= when)
    }

    /// The partition's leader as the metadata gives it, if it names one in a newer term
    /// (leader epoch) than `than`: a leader elected since a request was sent in that term.
    pub fn newer_leader(&self, topic: &str, partition: u32, than: u64) -> Option<u64> {
        let state = self.state.read();
        let leader = *state.leaders.get(topic)?.get(partition as usize)?;
        let epoch = *state.epochs.get(topic)?.get(partition as usize)?;
        (leader != 0 && epoch > than).then_some(leader)
    }

    /// Whether a node answered with metadata newer than the cache's.
    pub fn is_newer_epoch(&self, epoch: u64) -> bool {
        epoch > self.state.read().epoch
    }

    /// Records the leader a NOT_LEADER answer named.
    pub fn follow_leader(&self, topic: &str, partition: u32, node: u64, address: &str) {
        let mut state = self.state.write();
        if node == 0 || address.is_empty() {
            return;
        }
        state.brokers.insert(node, address.to_string());
        if let Some(slot) = state
            .leaders
            .get_mut(topic)
            .and_then(|l| l.get_mut(partition as usize))
            && *slot != node
        {
            *slot = node;
            state.hinted.insert((topic.to_string(), partition));
            if let Some(epoch) = state
                .epochs
                .get_mut(topic)
                .and_then(|e| e.get_mut(partition as usize))
            {
                let before = std::mem::take(epoch);
                let floor = state
                    .hint_floors
                    .entry((topic.to_string(), partition))
                    .or_insert(0);
                *floor = (*floor).max(before);
            }
        }
    }

    /// Whether a hint just moved this partition's leader (and forgets that it did): the
    /// next attempt goes there without a metadata refresh.
    pub fn leader_just_learned(&self, topic: &str, partition: u32) -> bool {
        self.state
            .write()
            .hinted
            .remove(&(topic.to_string(), partition))
    }

    pub fn leader(&self, topic: &str, partition: u32) -> Option<u64> {
        self.state
            .read()
            .leaders
            .get(topic)
            .and_then(|l| l.get(partition as usize).copied())
    }

    /// The leader epoch the metadata gives a partition, if known.
    pub fn leader_epoch(&self, topic: &str, partition: u32) -> Option<u64> {
        self.state
            .read()
            .epochs
            .get(topic)
            .and_then(|e| e.get(partition as usize).copied())
            .filter(|epoch| *epoch > 0)
    }

    /// Where `node` is reached: the address the client was told to use for it, or the
    /// one the cluster advertises.
    fn address_of(&self, node: u64) -> Option<String> {
        match self.bootstrap.connect_to(node) {
            Some(address) => Some(address.to_string()),
            None => self.state.read().brokers.get(&node).cloned(),
        }
    }

    /// The connection to `node`, opened on first use; the bootstrap connection for a node
    /// whose address is not known.
    pub async fn connection(&self, node: Option<u64>) -> Result<Client, ClientError> {
        let Some(node) = node else {
            return Ok(self.bootstrap.clone());
        };
        let mut connections = self.connections.lock().await;
        if let Some(client) = connections.get(&node) {
            return Ok(client.clone());
        }
        let advertised = self.state.read().brokers.get(&node).cloned();
        let client = match advertised {
            Some(advertised) => self.bootstrap.to_node(node, &advertised).await?,
            // Not known yet: the bootstrap node answers (or names the leader) this time,
            // and is not remembered as that node.
            None => return Ok(self.bootstrap.clone()),
        };
        connections.insert(node, client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partition 0 of "t" led by node 1 in term 4, then hinted to node 2.
    fn hinted() -> State {
        let mut state = State::default();
        state.leaders.insert("t".into(), vec![1, 3]);
        state.epochs.insert("t".into(), vec![0, 7]);
        state.hint_floors.insert(("t".into(), 0), 4);
        state.leaders.get_mut("t").expect("t")[0] = 2;
        state
    }

    #[test]
    fn a_hint_stands_against_metadata_of_the_term_it_replaced() {
        let mut state = hinted();
        // A node that lags still names node 1 in term 4.
        let (mut leaders, mut epochs) = (vec![1, 3], vec![4, 7]);
        state.keep_hints("t", &mut leaders, &mut epochs);
        assert_eq!(leaders, vec![2, 3]);
        assert_eq!(epochs, vec![0, 7]);
        assert!(state.hint_floors.contains_key(&("t".to_string(), 0)));
    }

    #[test]
    fn metadata_of_a_newer_term_replaces_a_hint() {
        let mut state = hinted();
        let (mut leaders, mut epochs) = (vec![3, 3], vec![5, 7]);
        state.keep_hints("t", &mut leaders, &mut epochs);
        assert_eq!(leaders, vec![3, 3]);
        assert_eq!(epochs, vec![5, 7]);
        assert!(state.hint_floors.is_empty());
    }

    #[test]
    fn a_topic_that_changed_shape_drops_its_hints() {
        let mut state = hinted();
        let (mut leaders, mut epochs) = (vec![1, 3, 2], vec![1, 1, 1]);
        state.keep_hints("t", &mut leaders, &mut epochs);
        assert_eq!(leaders, vec![1, 3, 2]);
        assert!(state.hint_floors.is_empty());
    }
}
