//! The `uniform` assignor: sticky and balanced, like Kafka's uniform assignor.
//!
//! 1. Every member keeps what it had in the previous target that it may still have (its
//!    topic still subscribed and the partition still there, and nobody kept it first).
//! 2. Partitions nobody has go, the most constrained first (fewest eligible members), to the
//!    eligible member with the fewest partitions, one in the partition's racks first.
//! 3. While some member has at least two more partitions than a member that could take one
//!    of them, one moves (from a rack it does not match, to one it does, when it can).
//!
//! With identical subscriptions this ends with counts differing by at most one, and moves
//! only partitions that must move; with different subscriptions no partition could move to
//! make any two members that share a topic closer than that.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Assignor, MemberSpec, rack_matches};
use crate::assignment::Assignment;
use crate::topics::TopicsSnapshot;

#[derive(Debug, Clone, Copy, Default)]
pub struct UniformAssignor;

type Slot = (usize, u32);

struct State<'a, 'm> {
    members: &'a [MemberSpec<'m>],
    topics: &'a TopicsSnapshot,
    names: Vec<&'a str>,
    /// Members subscribed to each topic, by index into `names`.
    eligible: Vec<Vec<usize>>,
    owner: HashMap<Slot, usize>,
    owned: Vec<BTreeSet<Slot>>,
}

impl State<'_, '_> {
    fn rack_match(&self, member: usize, (topic, partition): Slot) -> bool {
        rack_matches(
            self.topics,
            self.names[topic],
            partition,
            self.members[member].rack,
        )
    }

    fn give(&mut self, slot: Slot, member: usize) {
        if let Some(old) = self.owner.insert(slot, member) {
            self.owned[old].remove(&slot);
        }
        self.owned[member].insert(slot);
    }

    /// The eligible member (other than `except`) that should take `slot` next: fewest
    /// partitions, then one in the partition's racks, then the first by id.
    fn best_taker(&self, slot: Slot, except: Option<usize>, below: usize) -> Option<usize> {
        self.eligible[slot.0]
            .iter()
            .copied()
            .filter(|m| Some(*m) != except && self.owned[*m].len() < below)
            .min_by_key(|m| (self.owned[*m].len(), !self.rack_match(*m, slot), *m))
    }

    /// One move from the most loaded member that has a partition some eligible member
    /// with at least two fewer could take; false when there is none.
    fn move_one(&mut self) -> bool {
        let mut order: Vec<usize> = (0..self.members.len()).collect();
        order.sort_by_key(|m| (std::cmp::Reverse(self.owned[*m].len()), *m));
        for giver in order {
            let count = self.owned[giver].len();
            if count < 2 {
                return false;
            }
            // Partitions outside the giver's racks go first.
            let mut slots: Vec<Slot> = self.owned[giver].iter().copied().collect();
            slots.sort_by_key(|slot| self.rack_match(giver, *slot));
            for slot in slots {
                if let Some(taker) = self.best_taker(slot, Some(giver), count - 1) {
                    self.give(slot, taker);
                    return true;
                }
            }
        }
        false
    }
}

impl Assignor for UniformAssignor {
    fn name(&self) -> &'static str {
        "uniform"
    }

    fn assign(
        &self,
        members: &[MemberSpec<'_>],
        topics: &TopicsSnapshot,
    ) -> BTreeMap<String, Assignment> {
        let names: Vec<&str> = members
            .iter()
            .flat_map(|m| m.topics.iter().map(String::as_str))
            .filter(|name| topics.get(name).is_some())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let index_of: HashMap<&str, usize> =
            names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let eligible = names
            .iter()
            .map(|name| {
                (0..members.len())
                    .filter(|m| members[*m].topics.contains(*name))
                    .collect()
            })
            .collect();
        let mut state = State {
            members,
            topics,
            names,
            eligible,
            owner: HashMap::new(),
            owned: vec![BTreeSet::new(); members.len()],
        };
        // 1. Keep what may be kept.
        for (m, member) in members.iter().enumerate() {
            for (topic, partition) in member.previous.iter() {
                let Some(&t) = index_of.get(topic) else {
                    continue;
                };
                let exists = topics.partition_exists(topic, partition);
                if exists
                    && member.topics.contains(topic)
                    && !state.owner.contains_key(&(t, partition))
                {
                    state.give((t, partition), m);
                }
            }
        }
        // 2. Place the rest, most constrained first.
        let mut unowned: Vec<Slot> = Vec::new();
        for (t, name) in state.names.iter().enumerate() {
            let partitions = topics.get(name).map_or(0, |info| info.partitions);
            unowned.extend(
                (0..partitions)
                    .map(|p| (t, p))
                    .filter(|s| !state.owner.contains_key(s)),
            );
        }
        unowned.sort_by_key(|(t, p)| (state.eligible[*t].len(), *t, *p));
        for slot in unowned {
            if let Some(taker) = state.best_taker(slot, None, usize::MAX) {
                state.give(slot, taker);
            }
        }
        // 3. Even out.
        while state.move_one() {}
        let mut out = BTreeMap::new();
        for (m, member) in members.iter().enumerate() {
            let assignment = state.owned[m]
                .iter()
                .map(|(t, p)| (state.names[*t], *p))
                .collect();
            out.insert(member.id.to_string(), assignment);
        }
        out
    }
}
