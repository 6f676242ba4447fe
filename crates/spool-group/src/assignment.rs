//! A set of topic partitions: what a member owns, is given, or gives up.

use std::collections::{BTreeMap, BTreeSet};

/// Partitions by topic, both in order (so equal sets compare, encode and print alike).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Assignment(BTreeMap<String, BTreeSet<u32>>);

impl Assignment {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, topic: &str, partition: u32) -> bool {
        match self.0.get_mut(topic) {
            Some(partitions) => partitions.insert(partition),
            None => {
                self.0
                    .insert(topic.to_string(), BTreeSet::from([partition]));
                true
            }
        }
    }

    pub fn remove(&mut self, topic: &str, partition: u32) -> bool {
        let Some(partitions) = self.0.get_mut(topic) else {
            return false;
        };
        let removed = partitions.remove(&partition);
        if partitions.is_empty() {
            self.0.remove(topic);
        }
        removed
    }

    pub fn contains(&self, topic: &str, partition: u32) -> bool {
        self.0.get(topic).is_some_and(|p| p.contains(&partition))
    }

    /// Number of partitions.
    pub fn len(&self) -> usize {
        self.0.values().map(BTreeSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every (topic, partition), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.0
            .iter()
            .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (topic.as_str(), *p)))
    }

    /// Topics and their partitions, in order.
    pub fn topics(&self) -> impl Iterator<Item = (&str, &BTreeSet<u32>)> + '_ {
        self.0
            .iter()
            .map(|(topic, partitions)| (topic.as_str(), partitions))
    }

    /// The partitions of `self` that `other` also holds.
    pub fn intersection(&self, other: &Assignment) -> Assignment {
        self.filtered(|topic, partition| other.contains(topic, partition))
    }

    /// The partitions of `self` that `other` does not hold.
    pub fn difference(&self, other: &Assignment) -> Assignment {
        self.filtered(|topic, partition| !other.contains(topic, partition))
    }

    /// Whether any partition is in both.
    pub fn overlaps(&self, other: &Assignment) -> bool {
        self.iter()
            .any(|(topic, partition)| other.contains(topic, partition))
    }

    /// The partitions for which `keep` says yes.
    pub fn filtered(&self, mut keep: impl FnMut(&str, u32) -> bool) -> Assignment {
        let mut out = Assignment::new();
        for (topic, partition) in self.iter() {
            if keep(topic, partition) {
                out.insert(topic, partition);
            }
        }
        out
    }

    pub fn extend(&mut self, other: &Assignment) {
        for (topic, partition) in other.iter() {
            self.insert(topic, partition);
        }
    }
}

impl<'a> FromIterator<(&'a str, u32)> for Assignment {
    fn from_iter<I: IntoIterator<Item = (&'a str, u32)>>(iter: I) -> Self {
        let mut out = Assignment::new();
        for (topic, partition) in iter {
            out.insert(topic, partition);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_keep_topics_without_partitions_out() {
        let a: Assignment = [("t", 0), ("t", 1), ("u", 0)].into_iter().collect();
        let b: Assignment = [("t", 1), ("u", 0)].into_iter().collect();
        assert_eq!(a.len(), 3);
        assert_eq!(a.difference(&b), [("t", 0)].into_iter().collect());
        assert_eq!(a.intersection(&b), b);
        assert!(a.overlaps(&b));
        let mut c = b.clone();
        assert!(c.remove("u", 0));
        assert_eq!(c.topics().count(), 1);
        assert!(!c.remove("u", 0));
    }
}
