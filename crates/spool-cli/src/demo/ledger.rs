//! The checker of `spool demo rebalance`: what was produced, what each member reported
//! (assignments, records processed) and samples of the committed offsets go in; out come
//! the verdicts the demo prints. It is pure bookkeeping, so the same rules can be fed
//! crafted histories in tests.
//!
//! A member's *stint* on a partition runs from the moment it reported the partition
//! assigned to the last record of it that it processed before reporting it revoked or
//! lost, or before it died. The rules:
//! - every acknowledged record is processed at least once;
//! - stints of different members on one partition never overlap in time (no partition is
//!   owned by two members at once);
//! - a member processes only records of partitions it is in a stint on;
//! - a stint starts at or after every offset committed for its partition before it began:
//!   records are processed again only when nobody had committed them (duplicates come
//!   only from uncommitted work).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// Microseconds since the Unix epoch: every process of the demo runs on one host clock.
pub type Micros = u64;

/// What a member reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Assigned(Vec<u32>),
    Revoked(Vec<u32>),
    Lost(Vec<u32>),
    Processed { partition: u32, offset: i64 },
}

#[derive(Debug, Clone)]
struct Stint {
    member: String,
    start: Micros,
    /// The last record processed in the stint, and when.
    last: Option<Micros>,
    first_offset: Option<i64>,
}

impl Stint {
    fn end(&self) -> Micros {
        self.last.unwrap_or(self.start)
    }
}

/// A broken rule, said in a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
}

/// The demo's final verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub acknowledged: usize,
    pub processed: usize,
    /// Records processed more than once (each extra time counts).
    pub duplicates: usize,
    /// Acknowledged records nobody processed.
    pub missing: usize,
    /// Times the coordinator's view of who holds what was checked.
    pub coordinator_samples: usize,
    pub violations: Vec<Violation>,
    pub passed: bool,
}

#[derive(Debug, Default)]
pub struct Ledger {
    partitions: u32,
    /// Acknowledged offsets per partition.
    acked: Vec<BTreeSet<i64>>,
    /// Times each offset was processed, per partition.
    processed: Vec<BTreeMap<i64, u32>>,
    open: BTreeMap<(String, u32), Stint>,
    closed: Vec<(u32, Stint)>,
    /// Committed offsets sampled from the coordinator: (when seen, offset), per partition.
    committed: Vec<Vec<(Micros, i64)>>,
    /// Samples of the coordinator's own view taken.
    holder_samples: usize,
    violations: Vec<Violation>,
}

impl Ledger {
    pub fn new(partitions: u32) -> Self {
        let n = partitions as usize;
        Self {
            partitions,
            acked: vec![BTreeSet::new(); n],
            processed: vec![BTreeMap::new(); n],
            committed: vec![Vec::new(); n],
            ..Self::default()
        }
    }

    pub fn acknowledged(&mut self, partition: u32, offset: i64) {
        if let Some(set) = self.acked.get_mut(partition as usize) {
            set.insert(offset);
        }
    }

    /// The group's committed offset of `partition`, as read at `at` (after the answer
    /// came, so it was committed before then).
    pub fn committed_sample(&mut self, at: Micros, partition: u32, offset: i64) {
        if let Some(samples) = self.committed.get_mut(partition as usize)
            && samples.last().is_none_or(|(_, last)| *last != offset)
        {
            samples.push((at, offset));
        }
    }

    /// The members the coordinator shows holding `partition` at `at`: never two.
    pub fn holders_sample(&mut self, at: Micros, partition: u32, members: &[String]) {
        self.holder_samples += 1;
        if members.len() > 1 {
            self.violations.push(Violation {
                rule: "two owners at once",
                detail: format!(
                    "partition {partition}: the coordinator showed it held by {} at {at} µs",
                    members.join(" and ")
                ),
            });
        }
    }

    pub fn report(&mut self, member: &str, at: Micros, report: Report) {
        match report {
            Report::Assigned(partitions) => {
                for p in partitions {
                    let key = (member.to_string(), p);
                    if let Some(old) = self.open.remove(&key) {
                        self.closed.push((p, old));
                    }
                    self.open.insert(
                        key,
                        Stint {
                            member: member.to_string(),
                            start: at,
                            last: None,
                            first_offset: None,
                        },
                    );
                }
            }
            Report::Revoked(partitions) | Report::Lost(partitions) => {
                for p in partitions {
                    if let Some(stint) = self.open.remove(&(member.to_string(), p)) {
                        self.closed.push((p, stint));
                    }
                }
            }
            Report::Processed { partition, offset } => {
                match self.open.get_mut(&(member.to_string(), partition)) {
                    Some(stint) => {
                        stint.last = Some(at);
                        stint.first_offset.get_or_insert(offset);
                    }
                    None => self.violations.push(Violation {
                        rule: "processed without owning",
                        detail: format!(
                            "{member} processed partition {partition} offset {offset} \
                             without having it assigned"
                        ),
                    }),
                }
                if let Some(counts) = self.processed.get_mut(partition as usize) {
                    *counts.entry(offset).or_default() += 1;
                }
            }
        }
    }

    /// The member is gone (it left, exited or was killed): its stints end.
    pub fn member_gone(&mut self, member: &str) {
        let keys: Vec<(String, u32)> = self
            .open
            .keys()
            .filter(|(m, _)| m == member)
            .cloned()
            .collect();
        for key in keys {
            if let Some(stint) = self.open.remove(&key) {
                self.closed.push((key.1, stint));
            }
        }
    }

    /// Which members hold each partition now, as they reported.
    pub fn owners(&self) -> Vec<Vec<&str>> {
        let mut out = vec![Vec::new(); self.partitions as usize];
        for (member, p) in self.open.keys() {
            if let Some(owners) = out.get_mut(*p as usize) {
                owners.push(member.as_str());
            }
        }
        out
    }

    /// Per partition: acknowledged records not yet processed by anyone.
    pub fn backlog(&self) -> Vec<usize> {
        self.acked
            .iter()
            .zip(&self.processed)
            .map(|(acked, done)| acked.iter().filter(|o| !done.contains_key(o)).count())
            .collect()
    }

    pub fn processed_count(&self) -> usize {
        self.processed.iter().map(BTreeMap::len).sum()
    }

    pub fn acknowledged_count(&self) -> usize {
        self.acked.iter().map(BTreeSet::len).sum()
    }

    /// Per partition: the offset after the last acknowledged record (0 for none).
    pub fn acknowledged_ends(&self) -> Vec<i64> {
        self.acked
            .iter()
            .map(|a| a.last().map_or(0, |o| o + 1))
            .collect()
    }

    /// Every acknowledged record processed.
    pub fn caught_up(&self) -> bool {
        self.backlog().iter().all(|b| *b == 0)
    }

    /// Checks every rule over the whole history.
    pub fn verdict(&self) -> Verdict {
        let mut violations = self.violations.clone();
        let mut by_partition: BTreeMap<u32, Vec<&Stint>> = BTreeMap::new();
        for (p, stint) in &self.closed {
            by_partition.entry(*p).or_default().push(stint);
        }
        for ((_, p), stint) in &self.open {
            by_partition.entry(*p).or_default().push(stint);
        }
        for (p, mut stints) in by_partition {
            stints.sort_by_key(|s| (s.start, s.end()));
            // Stints of different members must not overlap.
            let mut latest: Option<&Stint> = None;
            for stint in &stints {
                if let Some(prev) = latest
                    && prev.member != stint.member
                    && stint.start <= prev.end()
                {
                    violations.push(Violation {
                        rule: "two owners at once",
                        detail: format!(
                            "partition {p}: {} had it from {} to {} µs, {} from {} µs",
                            prev.member,
                            prev.start,
                            prev.end(),
                            stint.member,
                            stint.start
                        ),
                    });
                }
                if latest.is_none_or(|prev| stint.end() > prev.end()) {
                    latest = Some(stint);
                }
                // The stint starts at or after what was committed before it began.
                let committed_before = self.committed[p as usize]
                    .iter()
                    .filter(|(at, _)| *at < stint.start)
                    .max_by_key(|(_, offset)| *offset);
                if let (Some(first), Some((seen, committed))) =
                    (stint.first_offset, committed_before)
                    && first < *committed
                {
                    violations.push(Violation {
                        rule: "committed work processed again",
                        detail: format!(
                            "partition {p}: {} started at offset {first} although {committed} \
                             was committed before it was assigned (seen {} ms before)",
                            stint.member,
                            stint.start.saturating_sub(*seen) / 1000
                        ),
                    });
                }
            }
        }
        // Nothing in the demo resets offsets: a committed offset never goes back.
        for (p, samples) in self.committed.iter().enumerate() {
            for pair in samples.windows(2) {
                let ((_, before), (at, after)) = (pair[0], pair[1]);
                if after < before {
                    violations.push(Violation {
                        rule: "committed offset went back",
                        detail: format!("partition {p}: from {before} to {after} at {at} µs"),
                    });
                }
            }
        }
        let mut missing = 0;
        for (p, (acked, done)) in self.acked.iter().zip(&self.processed).enumerate() {
            let lost: Vec<i64> = acked
                .iter()
                .filter(|o| !done.contains_key(o))
                .copied()
                .collect();
            missing += lost.len();
            if let Some(first) = lost.first() {
                violations.push(Violation {
                    rule: "acknowledged record never processed",
                    detail: format!(
                        "partition {p}: {} records, the first at offset {first}",
                        lost.len()
                    ),
                });
            }
        }
        let duplicates = self
            .processed
            .iter()
            .flat_map(|counts| counts.values())
            .map(|n| (*n as usize).saturating_sub(1))
            .sum();
        Verdict {
            acknowledged: self.acknowledged_count(),
            processed: self.processed_count(),
            duplicates,
            missing,
            coordinator_samples: self.holder_samples,
            passed: violations.is_empty(),
            violations,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn processed(p: u32, o: i64) -> Report {
        Report::Processed {
            partition: p,
            offset: o,
        }
    }

    fn handed_over() -> Ledger {
        let mut l = Ledger::new(1);
        for o in 0..4 {
            l.acknowledged(0, o);
        }
        l.report("a", 10, Report::Assigned(vec![0]));
        l.report("a", 11, processed(0, 0));
        l.report("a", 12, processed(0, 1));
        l.committed_sample(13, 0, 2);
        l.report("a", 14, Report::Revoked(vec![0]));
        l
    }

    #[test]
    fn a_clean_handover_passes() {
        let mut l = handed_over();
        l.report("b", 20, Report::Assigned(vec![0]));
        l.report("b", 21, processed(0, 2));
        l.report("b", 22, processed(0, 3));
        let v = l.verdict();
        assert!(v.passed, "{v:?}");
        assert_eq!((v.acknowledged, v.processed, v.duplicates), (4, 4, 0));
    }

    #[test]
    fn the_coordinator_showing_two_holders_is_caught() {
        let mut l = Ledger::new(2);
        l.holders_sample(5, 0, &["a".to_string()]);
        l.holders_sample(5, 1, &[]);
        assert!(l.verdict().passed);
        l.holders_sample(6, 1, &["a".to_string(), "b".to_string()]);
        let v = l.verdict();
        assert_eq!(v.coordinator_samples, 3);
        assert!(v.violations.iter().any(|x| x.rule == "two owners at once"));
    }

    #[test]
    fn overlapping_owners_are_caught() {
        let mut l = Ledger::new(1);
        l.report("a", 10, Report::Assigned(vec![0]));
        l.report("b", 15, Report::Assigned(vec![0]));
        l.report("a", 16, processed(0, 0));
        let v = l.verdict();
        assert!(v.violations.iter().any(|x| x.rule == "two owners at once"));
    }

    #[test]
    fn a_killed_members_uncommitted_work_may_come_again_but_not_committed_work() {
        let mut l = handed_over();
        // b restarts from the committed offset 2: fine.
        l.report("b", 20, Report::Assigned(vec![0]));
        l.report("b", 21, processed(0, 2));
        l.member_gone("b");
        // c re-reads 2 (b never committed it): a duplicate, allowed.
        l.report("c", 30, Report::Assigned(vec![0]));
        l.report("c", 31, processed(0, 2));
        l.report("c", 32, processed(0, 3));
        let v = l.verdict();
        assert!(v.passed, "{v:?}");
        assert_eq!(v.duplicates, 1);
        // d starting below what was committed before it came is a lost commit.
        l.member_gone("c");
        l.report("d", 40, Report::Assigned(vec![0]));
        l.report("d", 41, processed(0, 1));
        let v = l.verdict();
        assert!(
            v.violations
                .iter()
                .any(|x| x.rule == "committed work processed again")
        );
    }

    #[test]
    fn a_record_nobody_processed_or_one_processed_without_owning_fails() {
        let mut l = handed_over();
        let v = l.verdict();
        assert_eq!(v.missing, 2);
        assert!(!v.passed);
        l.report("x", 50, processed(0, 2));
        l.report("x", 50, processed(0, 3));
        let v = l.verdict();
        assert_eq!(v.missing, 0);
        assert!(
            v.violations
                .iter()
                .any(|x| x.rule == "processed without owning")
        );
    }
}
