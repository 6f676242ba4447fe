//! A fault layer on a node's outgoing Raft traffic, for tests: cut the link to chosen
//! nodes, delay messages to them, or drop one message in N. Cutting both directions
//! between two nodes (each node's layer cuts the other) partitions them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::types::NodeId;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LinkFault {
    cut: bool,
    delay: Duration,
    /// Drop one message in this many (0: none).
    drop_one_in: u64,
}

/// What happens to a message about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send { delay: Duration },
    Drop,
}

#[derive(Debug, Default)]
pub struct Faults {
    links: RwLock<HashMap<NodeId, LinkFault>>,
    sent: AtomicU64,
}

impl Faults {
    pub fn cut(&self, to: NodeId) {
        self.links.write().entry(to).or_default().cut = true;
    }

    pub fn heal(&self, to: NodeId) {
        self.links.write().remove(&to);
    }

    pub fn heal_all(&self) {
        self.links.write().clear();
    }

    pub fn delay(&self, to: NodeId, delay: Duration) {
        self.links.write().entry(to).or_default().delay = delay;
    }

    pub fn drop_one_in(&self, to: NodeId, n: u64) {
        self.links.write().entry(to).or_default().drop_one_in = n;
    }

    pub fn is_cut(&self, to: NodeId) -> bool {
        self.links.read().get(&to).is_some_and(|l| l.cut)
    }

    pub fn verdict(&self, to: NodeId) -> Verdict {
        let Some(link) = self.links.read().get(&to).copied() else {
            return Verdict::Send {
                delay: Duration::ZERO,
            };
        };
        if link.cut {
            return Verdict::Drop;
        }
        if link.drop_one_in > 0 {
            let n = self.sent.fetch_add(1, Ordering::Relaxed);
            if n % link.drop_one_in == link.drop_one_in - 1 {
                return Verdict::Drop;
            }
        }
        Verdict::Send { delay: link.delay }
    }
}
