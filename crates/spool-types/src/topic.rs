use std::fmt;

/// The longest topic name Kafka accepts; the same limit keeps directory names portable.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A topic name that has been checked: 1 to 249 characters from `[a-zA-Z0-9._-]`, and not
/// `.` or `..` (they would name directories that are not the topic's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName(String);

/// Why a string is not a valid topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTopicName {
    #[error("a topic name must not be empty")]
    Empty,
    #[error("a topic name may have at most {MAX_TOPIC_NAME_LEN} characters, this one has {len}")]
    TooLong { len: usize },
    #[error("a topic name may only contain a-z, A-Z, 0-9, '.', '_' and '-'; found {found:?}")]
    IllegalCharacter { found: char },
    #[error("'.' and '..' are not valid topic names")]
    DotName,
}

impl TopicName {
    /// Checks `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidTopicName> {
        let name = name.into();
        if name.is_empty() {
            return Err(InvalidTopicName::Empty);
        }
        if name.len() > MAX_TOPIC_NAME_LEN {
            return Err(InvalidTopicName::TooLong { len: name.len() });
        }
        if let Some(found) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(InvalidTopicName::IllegalCharacter { found });
        }
        if name == "." || name == ".." {
            return Err(InvalidTopicName::DotName);
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kafka_style_names() {
        for name in ["orders", "orders.v1", "__consumer_offsets", "a-b_c.D9"] {
            assert_eq!(TopicName::new(name).unwrap().as_str(), name);
        }
        assert!(TopicName::new("x".repeat(MAX_TOPIC_NAME_LEN)).is_ok());
    }

    #[test]
    fn refuses_bad_names_with_a_reason() {
        assert_eq!(TopicName::new(""), Err(InvalidTopicName::Empty));
        assert_eq!(
            TopicName::new("x".repeat(250)),
            Err(InvalidTopicName::TooLong { len: 250 })
        );
        assert_eq!(
            TopicName::new("a/b"),
            Err(InvalidTopicName::IllegalCharacter { found: '/' })
        );
        assert_eq!(
            TopicName::new("caf\u{e9}"),
            Err(InvalidTopicName::IllegalCharacter { found: '\u{e9}' })
        );
        assert_eq!(TopicName::new(".."), Err(InvalidTopicName::DotName));
    }
}
