//! The steps `spool demo rebalance` takes, in order: each waits for the group to settle
//! before the next.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// New members start.
    Join(Vec<String>),
    /// A static member (with an instance id) starts.
    JoinStatic(String, String),
    /// Members die without a word (SIGKILL): their partitions move once their sessions
    /// run out.
    Kill(Vec<String>),
    /// A member leaves cleanly (SIGTERM): it commits, leaves, and its partitions move at
    /// once.
    Leave(String),
    /// A static member stops and a new process takes its instance id within the session:
    /// it gets the same partitions back, and nobody else is disturbed.
    Restart {
        old: String,
        new: String,
        instance: String,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Join(names) => write!(f, "{} join", names.join(", ")),
            Action::JoinStatic(name, instance) => {
                write!(f, "{name} joins as static member {instance}")
            }
            Action::Kill(names) => write!(f, "{} killed (SIGKILL)", names.join(", ")),
            Action::Leave(name) => write!(f, "{name} leaves"),
            Action::Restart { old, new, .. } => {
                write!(f, "{old} restarts as {new} (static: same partitions)")
            }
        }
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Start three, grow, crash one, lose one cleanly, restart a static member, grow again,
/// crash two at once.
pub fn default_schedule() -> Vec<Action> {
    vec![
        Action::Join(names(&["w1", "w2", "w3"])),
        Action::Join(names(&["w4"])),
        Action::JoinStatic("s1".into(), "demo-static-1".into()),
        Action::Kill(names(&["w2"])),
        Action::Leave("w3".into()),
        Action::Restart {
            old: "s1".into(),
            new: "s1b".into(),
            instance: "demo-static-1".into(),
        },
        Action::Join(names(&["w5", "w6"])),
        Action::Kill(names(&["w1", "w4"])),
    ]
}
