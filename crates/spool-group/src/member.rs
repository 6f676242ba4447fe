//! A member's way from the assignment it has to its target, one safe step at a time.
//!
//! A partition is given to a member only once no other member holds it (in its assigned
//! or its revoking set): a member that must give partitions up first keeps its epoch and
//! is told to revoke them; only when a heartbeat shows it no longer owns them does it move
//! to the target epoch and take what is free of its new partitions. So no partition ever
//! has two owners in a group.

use crate::assignment::Assignment;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum MemberState {
    /// At its target: owns exactly its target partitions.
    #[default]
    Stable = 0,
    /// Must give up `revoking` before it moves on.
    UnrevokedPartitions = 1,
    /// At the target epoch, waiting for some target partitions other members still hold.
    UnreleasedPartitions = 2,
}

impl MemberState {
    pub fn from_u8(n: u8) -> Option<Self> {
        match n {
            0 => Some(MemberState::Stable),
            1 => Some(MemberState::UnrevokedPartitions),
            2 => Some(MemberState::UnreleasedPartitions),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MemberState::Stable => "stable",
            MemberState::UnrevokedPartitions => "unrevoked-partitions",
            MemberState::UnreleasedPartitions => "unreleased-partitions",
        }
    }
}

/// What a member has: the persisted part of its assignment state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentAssignment {
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub revoking: Assignment,
}

impl CurrentAssignment {
    /// Partitions the member holds: the ones it may use and the ones it must give up.
    pub fn holds(&self, topic: &str, partition: u32) -> bool {
        self.assigned.contains(topic, partition) || self.revoking.contains(topic, partition)
    }
}

/// The member's next state.
///
/// `owned` is what the member's heartbeat says it owns (`None`: not reported, taken as
/// unchanged); `held_by_other` says whether another member holds a partition.
pub fn next_state(
    current: &CurrentAssignment,
    target_epoch: i32,
    target: &Assignment,
    owned: Option<&Assignment>,
    held_by_other: impl Fn(&str, u32) -> bool,
) -> CurrentAssignment {
    match current.state {
        MemberState::UnrevokedPartitions => {
            let revoked = owned.is_some_and(|owned| !owned.overlaps(&current.revoking));
            if revoked {
                toward_target(current, target_epoch, target, &held_by_other)
            } else {
                current.clone()
            }
        }
        MemberState::Stable | MemberState::UnreleasedPartitions => {
            if current.epoch != target_epoch || current.state == MemberState::UnreleasedPartitions {
                toward_target(current, target_epoch, target, &held_by_other)
            } else {
                current.clone()
            }
        }
    }
}

/// One step toward the target: revoke what the target drops first; with nothing left to
/// revoke, take the target epoch and every target partition that is free.
fn toward_target(
    current: &CurrentAssignment,
    target_epoch: i32,
    target: &Assignment,
    held_by_other: &impl Fn(&str, u32) -> bool,
) -> CurrentAssignment {
    let kept = current.assigned.intersection(target);
    let to_revoke = current.assigned.difference(target);
    if !to_revoke.is_empty() {
        return CurrentAssignment {
            epoch: current.epoch,
            previous_epoch: current.previous_epoch,
            state: MemberState::UnrevokedPartitions,
            assigned: kept,
            revoking: to_revoke,
        };
    }
    let mut assigned = kept;
    let mut unreleased = false;
    for (topic, partition) in target.iter() {
        if assigned.contains(topic, partition) {
            continue;
        }
        if held_by_other(topic, partition) {
            unreleased = true;
        } else {
            assigned.insert(topic, partition);
        }
    }
    let previous_epoch = if current.epoch == target_epoch {
        current.previous_epoch
    } else {
        current.epoch
    };
    CurrentAssignment {
        epoch: target_epoch,
        previous_epoch,
        state: if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        },
        assigned,
        revoking: Assignment::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(parts: &[u32]) -> Assignment {
        parts.iter().map(|p| ("t", *p)).collect()
    }

    #[test]
    fn revokes_first_then_takes_what_is_free() {
        let start = CurrentAssignment {
            epoch: 1,
            previous_epoch: 0,
            state: MemberState::Stable,
            assigned: set(&[0, 1, 2]),
            revoking: Assignment::new(),
        };
        // Target 2: keep 0, give up 1 and 2, gain 3 (held by someone else).
        let target = set(&[0, 3]);
        let held = |_: &str, p: u32| p == 3;
        let step = next_state(&start, 2, &target, None, held);
        assert_eq!(step.state, MemberState::UnrevokedPartitions);
        assert_eq!(step.epoch, 1, "the epoch waits for the revocation");
        assert_eq!(step.assigned, set(&[0]));
        assert_eq!(step.revoking, set(&[1, 2]));
        // Still owning 1: nothing moves.
        let same = next_state(&step, 2, &target, Some(&set(&[0, 1])), held);
        assert_eq!(same, step);
        // Revoked; 3 still held elsewhere.
        let step = next_state(&step, 2, &target, Some(&set(&[0])), held);
        assert_eq!(step.state, MemberState::UnreleasedPartitions);
        assert_eq!((step.epoch, step.previous_epoch), (2, 1));
        assert_eq!(step.assigned, set(&[0]));
        // 3 released.
        let step = next_state(&step, 2, &target, Some(&set(&[0])), |_, _| false);
        assert_eq!(step.state, MemberState::Stable);
        assert_eq!(step.assigned, set(&[0, 3]));
        assert_eq!((step.epoch, step.previous_epoch), (2, 1));
    }
}
