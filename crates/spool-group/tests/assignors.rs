//! Properties of the server-side assignors: every subscribed partition to exactly one
//! subscribed member, balance, stickiness, and the same answer for the same input.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use spool_group::{Assignment, AssignorKind, MemberSpec, TopicInfo, TopicsSnapshot};

#[derive(Debug, Clone)]
struct Case {
    topics: Vec<(String, u32)>,
    /// Per member: subscribed topic indexes and rack.
    members: Vec<(BTreeSet<usize>, Option<String>)>,
    racks: bool,
}

fn case(homogeneous: bool) -> impl Strategy<Value = Case> {
    (1usize..4, 1usize..12, any::<bool>()).prop_flat_map(move |(topics, members, racks)| {
        (
            prop::collection::vec(1u32..40, topics),
            prop::collection::vec(
                (
                    prop::collection::btree_set(0..topics, 1..=topics),
                    prop::option::of(0u8..3),
                ),
                members,
            ),
        )
            .prop_map(move |(counts, subs)| Case {
                topics: counts
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| (format!("t{i}"), n))
                    .collect(),
                members: subs
                    .into_iter()
                    .map(|(s, rack)| {
                        let s = if homogeneous {
                            (0..topics).collect()
                        } else {
                            s
                        };
                        (s, rack.map(|r| format!("r{r}")))
                    })
                    .collect(),
                racks,
            })
    })
}

fn snapshot(case: &Case) -> TopicsSnapshot {
    let mut topics = TopicsSnapshot::new();
    for (name, partitions) in &case.topics {
        let racks = if case.racks {
            (0..*partitions)
                .map(|p| BTreeSet::from([format!("r{}", p % 3), format!("r{}", (p + 1) % 3)]))
                .collect()
        } else {
            Vec::new()
        };
        topics.insert(
            name.clone(),
            TopicInfo {
                partitions: *partitions,
                racks,
            },
        );
    }
    topics
}

struct Owned {
    ids: Vec<String>,
    subs: Vec<BTreeSet<String>>,
}

fn owned(case: &Case) -> Owned {
    Owned {
        ids: (0..case.members.len())
            .map(|i| format!("m{i:02}"))
            .collect(),
        subs: case
            .members
            .iter()
            .map(|(s, _)| s.iter().map(|t| format!("t{t}")).collect())
            .collect(),
    }
}

fn run(
    kind: AssignorKind,
    case: &Case,
    owned: &Owned,
    previous: &BTreeMap<String, Assignment>,
    present: &[usize],
) -> BTreeMap<String, Assignment> {
    let none = Assignment::new();
    let specs: Vec<MemberSpec<'_>> = present
        .iter()
        .map(|&i| MemberSpec {
            id: &owned.ids[i],
            rack: case.members[i].1.as_deref(),
            topics: &owned.subs[i],
            previous: previous.get(&owned.ids[i]).unwrap_or(&none),
        })
        .collect();
    kind.assignor().assign(&specs, &snapshot(case))
}

/// Every partition of a subscribed topic goes to exactly one member subscribed to it.
fn check_valid(case: &Case, owned: &Owned, present: &[usize], out: &BTreeMap<String, Assignment>) {
    let mut seen: BTreeMap<(String, u32), &str> = BTreeMap::new();
    for &i in present {
        let assignment = &out[&owned.ids[i]];
        for (topic, partition) in assignment.iter() {
            assert!(
                owned.subs[i].contains(topic),
                "{topic} not subscribed by m{i}"
            );
            let previous = seen.insert((topic.to_string(), partition), &owned.ids[i]);
            assert!(previous.is_none(), "{topic}/{partition} given twice");
        }
    }
    for (name, partitions) in &case.topics {
        let subscribed = present.iter().any(|&i| owned.subs[i].contains(name));
        for p in 0..*partitions {
            assert_eq!(
                seen.contains_key(&(name.clone(), p)),
                subscribed,
                "{name}/{p}"
            );
        }
    }
}

fn counts(out: &BTreeMap<String, Assignment>) -> Vec<usize> {
    out.values().map(Assignment::len).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn uniform_with_one_subscription_balances_to_one_and_moves_only_what_must_move(
        case in case(true),
        joined in 0usize..4,
        left in 0usize..3,
    ) {
        let owned = owned(&case);
        let n = case.members.len();
        // A first assignment for the first members, then some leave and others join.
        let before: Vec<usize> = (0..n.saturating_sub(joined).max(1)).collect();
        let first = run(AssignorKind::Uniform, &case, &owned, &BTreeMap::new(), &before);
        check_valid(&case, &owned, &before, &first);
        let c = counts(&first);
        prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);

        let after: Vec<usize> = (left.min(before.len() - 1)..n).collect();
        let second = run(AssignorKind::Uniform, &case, &owned, &first, &after);
        check_valid(&case, &owned, &after, &second);
        let c = counts(&second);
        prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);
        // Least movement: a survivor gives up only what its new share forces it to.
        let total: usize = c.iter().sum();
        let (q, r) = (total / after.len(), total % after.len());
        let survivors: Vec<&String> = after
            .iter()
            .map(|&i| &owned.ids[i])
            .filter(|id| first.contains_key(*id))
            .collect();
        let prev: Vec<usize> = survivors.iter().map(|id| first[*id].len()).collect();
        let over = prev.iter().filter(|p| **p > q).count();
        let must_move: usize =
            prev.iter().map(|p| p.saturating_sub(q)).sum::<usize>() - r.min(over);
        let moved: usize = survivors
            .iter()
            .map(|id| first[*id].difference(&second[*id]).len())
            .sum();
        prop_assert_eq!(moved, must_move);
        // The same input, the same answer.
        prop_assert_eq!(run(AssignorKind::Uniform, &case, &owned, &first, &after), second);
    }

    #[test]
    fn uniform_with_mixed_subscriptions_leaves_no_partition_that_should_move(case in case(false)) {
        let owned = owned(&case);
        let all: Vec<usize> = (0..case.members.len()).collect();
        let out = run(AssignorKind::Uniform, &case, &owned, &BTreeMap::new(), &all);
        check_valid(&case, &owned, &all, &out);
        for &a in &all {
            let from = &out[&owned.ids[a]];
            for (topic, _) in from.iter() {
                for &b in &all {
                    if owned.subs[b].contains(topic) {
                        prop_assert!(from.len() <= out[&owned.ids[b]].len() + 1);
                    }
                }
            }
        }
    }

    #[test]
    fn range_gives_each_topic_in_shares_differing_by_at_most_one(case in case(false)) {
        let owned = owned(&case);
        let all: Vec<usize> = (0..case.members.len()).collect();
        let out = run(AssignorKind::Range, &case, &owned, &BTreeMap::new(), &all);
        check_valid(&case, &owned, &all, &out);
        for (name, partitions) in &case.topics {
            let shares: Vec<usize> = all
                .iter()
                .filter(|&&i| owned.subs[i].contains(name))
                .map(|&i| out[&owned.ids[i]].iter().filter(|(t, _)| t == name).count())
                .collect();
            if let (Some(max), Some(min)) = (shares.iter().max(), shares.iter().min()) {
                prop_assert!(max - min <= 1);
                prop_assert_eq!(shares.iter().sum::<usize>(), *partitions as usize);
            }
            if !case.racks {
                // Without racks: consecutive ranges, in member order.
                let mut next = 0u32;
                for &i in &all {
                    let mine: Vec<u32> = out[&owned.ids[i]]
                        .iter()
                        .filter(|(t, _)| t == name)
                        .map(|(_, p)| p)
                        .collect();
                    for p in mine {
                        prop_assert_eq!(p, next);
                        next += 1;
                    }
                }
            }
        }
    }
}

#[test]
fn a_member_in_a_partitions_rack_is_preferred_when_balance_allows() {
    let mut topics = TopicsSnapshot::new();
    topics.insert(
        "t",
        TopicInfo {
            partitions: 4,
            racks: (0..4)
                .map(|p| BTreeSet::from([format!("r{}", p % 2)]))
                .collect(),
        },
    );
    let subs = BTreeSet::from(["t".to_string()]);
    let none = Assignment::new();
    let specs = vec![
        MemberSpec {
            id: "a",
            rack: Some("r0"),
            topics: &subs,
            previous: &none,
        },
        MemberSpec {
            id: "b",
            rack: Some("r1"),
            topics: &subs,
            previous: &none,
        },
    ];
    for kind in AssignorKind::ALL {
        let out = kind.assignor().assign(&specs, &topics);
        assert_eq!(
            out["a"],
            [("t", 0), ("t", 2)].into_iter().collect(),
            "{}",
            kind.name()
        );
        assert_eq!(out["b"], [("t", 1), ("t", 3)].into_iter().collect());
    }
}
