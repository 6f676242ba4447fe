//! Server-side assignors: from the members' subscriptions (and, for stickiness, the
//! previous target assignment) to a target assignment. Pure functions of their input, so
//! every replica of the coordinator computes the same answer.

mod range;
mod uniform;

use std::collections::{BTreeMap, BTreeSet};

use crate::assignment::Assignment;
use crate::topics::TopicsSnapshot;

pub use range::RangeAssignor;
pub use uniform::UniformAssignor;

/// One member as an assignor sees it.
#[derive(Debug, Clone)]
pub struct MemberSpec<'a> {
    pub id: &'a str,
    pub rack: Option<&'a str>,
    /// Subscribed topics that exist (resolved from names and the pattern).
    pub topics: &'a BTreeSet<String>,
    /// The member's partitions in the previous target assignment.
    pub previous: &'a Assignment,
}

pub trait Assignor: std::fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;

    /// The target assignment: every partition of every subscribed topic to exactly one
    /// member subscribed to it. Members are given in member id order.
    fn assign(
        &self,
        members: &[MemberSpec<'_>],
        topics: &TopicsSnapshot,
    ) -> BTreeMap<String, Assignment>;
}

/// The assignors a group may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AssignorKind {
    #[default]
    Uniform,
    Range,
}

impl AssignorKind {
    pub const ALL: [AssignorKind; 2] = [AssignorKind::Uniform, AssignorKind::Range];

    pub fn name(self) -> &'static str {
        self.assignor().name()
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    pub fn assignor(self) -> &'static dyn Assignor {
        match self {
            AssignorKind::Uniform => &UniformAssignor,
            AssignorKind::Range => &RangeAssignor,
        }
    }
}

/// Whether `member_rack` holds a replica of the partition (false when either is unknown).
fn rack_matches(
    topics: &TopicsSnapshot,
    topic: &str,
    partition: u32,
    member_rack: Option<&str>,
) -> bool {
    let Some(rack) = member_rack else {
        return false;
    };
    topics
        .get(topic)
        .and_then(|t| t.racks_of(partition))
        .is_some_and(|racks| racks.contains(rack))
}
