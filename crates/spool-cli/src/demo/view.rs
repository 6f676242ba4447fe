//! The live terminal view of `spool demo rebalance`: members, who owns each partition,
//! the backlog, and each step with the time the group took to settle.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use super::rebalance::Step;

pub struct Snapshot<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub elapsed: Duration,
    /// Members holding each partition, as they reported.
    pub owners: Vec<Vec<&'a str>>,
    /// Acknowledged records not yet processed, per partition.
    pub backlog: Vec<usize>,
    pub acknowledged: usize,
    pub processed: usize,
    /// Running members, and whether they are meant to stay.
    pub members: Vec<(&'a str, bool)>,
    pub steps: &'a [Step],
}

/// Clears the terminal and draws `s`.
pub fn draw(s: &Snapshot<'_>) {
    let mut out = String::new();
    // Home and clear: the view replaces itself.
    out.push_str("\x1b[H\x1b[2J");
    let _ = writeln!(
        out,
        "spool demo rebalance   topic {}   group {}   {:.1} s",
        s.topic,
        s.group,
        s.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "acknowledged {}   processed {}   backlog {}\n",
        s.acknowledged,
        s.processed,
        s.backlog.iter().sum::<usize>()
    );
    let mut held: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (p, owners) in s.owners.iter().enumerate() {
        for owner in owners {
            held.entry(owner).or_default().push(p.to_string());
        }
    }
    let _ = writeln!(out, "members");
    for (name, live) in &s.members {
        let partitions = held.get(name).map(|v| v.join(" ")).unwrap_or_default();
        let state = if *live { "" } else { "  (stopping)" };
        let _ = writeln!(out, "  {name:<5} {partitions}{state}");
    }
    let _ = writeln!(out, "\npartition  owner   backlog");
    for (p, owners) in s.owners.iter().enumerate() {
        let owner = match owners.as_slice() {
            [] => "-".to_string(),
            many => many.join("+"),
        };
        let backlog = s.backlog.get(p).copied().unwrap_or(0);
        let _ = writeln!(out, "  {p:>7}  {owner:<6} {backlog:>7}");
    }
    let _ = writeln!(out, "\nsteps");
    for step in s.steps {
        let settled = step.settled_ms.map_or("did not settle".to_string(), |ms| {
            format!("settled in {ms} ms")
        });
        let _ = writeln!(
            out,
            "  {:>7.1} s  {:<48} {settled}",
            step.at_ms as f64 / 1000.0,
            step.action
        );
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
