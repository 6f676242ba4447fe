//! Lists of partitions on the wire: `TopicPartitions` (a topic and its partition numbers)
//! to and from (topic, partition) pairs.

use crate::v1;

/// Pairs as `TopicPartitions`, one per run of pairs with the same topic.
pub fn topic_partitions<'a>(
    pairs: impl IntoIterator<Item = (&'a str, u32)>,
) -> Vec<v1::TopicPartitions> {
    let mut out: Vec<v1::TopicPartitions> = Vec::new();
    for (topic, partition) in pairs {
        match out.last_mut() {
            Some(last) if last.topic == topic => last.partitions.push(partition),
            _ => out.push(v1::TopicPartitions {
                topic: topic.to_string(),
                partitions: vec![partition],
            }),
        }
    }
    out
}

/// Owned pairs as `TopicPartitions`.
pub fn topic_partitions_of(pairs: &[(String, u32)]) -> Vec<v1::TopicPartitions> {
    topic_partitions(pairs.iter().map(|(t, p)| (t.as_str(), *p)))
}

/// `TopicPartitions` as pairs.
pub fn partition_pairs(topics: Vec<v1::TopicPartitions>) -> Vec<(String, u32)> {
    topics
        .into_iter()
        .flat_map(|t| {
            let topic = t.topic;
            t.partitions.into_iter().map(move |p| (topic.clone(), p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_grouped_by_topic() {
        let pairs = vec![
            ("a".to_string(), 0),
            ("a".to_string(), 2),
            ("b".to_string(), 1),
        ];
        let wire = topic_partitions_of(&pairs);
        assert_eq!(wire.len(), 2);
        assert_eq!(partition_pairs(wire), pairs);
    }
}
