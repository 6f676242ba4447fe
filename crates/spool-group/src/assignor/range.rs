//! The `range` assignor, like Kafka's: for each topic, its members (by id) take consecutive
//! ranges of its partitions, the first `partitions % members` one more than the rest. When
//! racks are known, each member first takes, up to its share, partitions with a replica in
//! its rack; the rest are then handed out in range order.

use std::collections::{BTreeMap, BTreeSet};

use super::{Assignor, MemberSpec, rack_matches};
use crate::assignment::Assignment;
use crate::topics::TopicsSnapshot;

#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn assign(
        &self,
        members: &[MemberSpec<'_>],
        topics: &TopicsSnapshot,
    ) -> BTreeMap<String, Assignment> {
        let mut out: BTreeMap<String, Assignment> = members
            .iter()
            .map(|m| (m.id.to_string(), Assignment::new()))
            .collect();
        let names: BTreeSet<&str> = members
            .iter()
            .flat_map(|m| m.topics.iter().map(String::as_str))
            .collect();
        for name in names {
            let Some(info) = topics.get(name) else {
                continue;
            };
            let subscribers: Vec<&MemberSpec<'_>> =
                members.iter().filter(|m| m.topics.contains(name)).collect();
            let n = subscribers.len() as u32;
            if n == 0 {
                continue;
            }
            let share =
                |i: usize| info.partitions / n + u32::from((i as u32) < info.partitions % n);
            let mut taken = vec![false; info.partitions as usize];
            let mut counts = vec![0u32; subscribers.len()];
            let racks_known = subscribers.iter().any(|m| m.rack.is_some())
                && (0..info.partitions).any(|p| info.racks_of(p).is_some());
            if racks_known {
                for (i, member) in subscribers.iter().enumerate() {
                    for p in 0..info.partitions {
                        if counts[i] == share(i) {
                            break;
                        }
                        if !taken[p as usize] && rack_matches(topics, name, p, member.rack) {
                            taken[p as usize] = true;
                            counts[i] += 1;
                            assign_to(&mut out, member.id, name, p);
                        }
                    }
                }
            }
            let mut next = 0u32;
            for (i, member) in subscribers.iter().enumerate() {
                while counts[i] < share(i) && next < info.partitions {
                    if !taken[next as usize] {
                        taken[next as usize] = true;
                        counts[i] += 1;
                        assign_to(&mut out, member.id, name, next);
                    }
                    next += 1;
                }
            }
        }
        out
    }
}

fn assign_to(out: &mut BTreeMap<String, Assignment>, member: &str, topic: &str, partition: u32) {
    if let Some(assignment) = out.get_mut(member) {
        assignment.insert(topic, partition);
    }
}
