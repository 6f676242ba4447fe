//! Topic configs under Kafka's names, validated, with broker-wide defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use spool_log::{FlushPolicy, LogConfig, MAX_SEGMENT_BYTES, RetentionPolicy};

use crate::error::BrokerError;

/// A topic's effective settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig {
    /// retention.ms: delete segments older than this; -1 keeps them forever.
    pub retention_ms: i64,
    /// retention.bytes: keep a partition at most about this large; -1 for no limit.
    pub retention_bytes: i64,
    /// segment.bytes
    pub segment_bytes: u64,
    /// segment.ms
    pub segment_ms: i64,
    /// max.message.bytes: the largest batch a producer may send.
    pub max_message_bytes: u32,
    /// message.timestamp.type: whose clock a record's timestamp is.
    pub timestamp_type: TimestampType,
    /// message.timestamp.before.max.ms: how far in the past a CreateTime timestamp may be.
    pub timestamp_before_max_ms: i64,
    /// message.timestamp.after.max.ms: how far in the future a CreateTime timestamp may
    /// be. A far-future timestamp would keep its segment from ever expiring.
    pub timestamp_after_max_ms: i64,
}

/// Whose clock stamps records (Kafka's message.timestamp.type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's: checked against the two bounds.
    CreateTime,
    /// The leader's, when it appends.
    LogAppendTime,
}

impl TimestampType {
    fn name(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

/// The broker's defaults for topics that do not set a config.
pub type TopicConfigDefaults = TopicConfig;

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            max_message_bytes: 1024 * 1024 + 12,
            timestamp_type: TimestampType::CreateTime,
            // Kafka's defaults (as of 4.0): any past time; at most an hour ahead.
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3600 * 1000,
        }
    }
}

/// Every config a topic accepts.
pub const CONFIG_NAMES: [&str; 8] = [
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
];

impl TopicConfig {
    /// The defaults with `overrides` applied; unknown names and bad values are refused.
    pub fn resolve(
        defaults: &TopicConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, BrokerError> {
        let mut config = *defaults;
        for (name, value) in overrides {
            config.set(name, value)?;
        }
        Ok(config)
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), BrokerError> {
        let invalid = |reason: &str| BrokerError::InvalidConfig {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let number = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| invalid("not a whole number"))
        };
        match name {
            "retention.ms" | "retention.bytes" => {
                let v = number()?;
                if v < -1 {
                    return Err(invalid("must be -1 (unlimited) or at least 0"));
                }
                if name == "retention.ms" {
                    self.retention_ms = v;
                } else {
                    self.retention_bytes = v;
                }
            }
            "segment.bytes" => {
                let v = number()?;
                if v < 1024 * 1024 || v as u64 > MAX_SEGMENT_BYTES {
                    return Err(invalid("must lie between 1 MiB and 1.5 GiB"));
                }
                self.segment_bytes = v as u64;
            }
            "segment.ms" => {
                let v = number()?;
                if v < 1000 {
                    return Err(invalid("must be at least 1000"));
                }
                self.segment_ms = v;
            }
            "max.message.bytes" => {
                let v = number()?;
                if !(1024..=256 * 1024 * 1024).contains(&v) {
                    return Err(invalid("must lie between 1 KiB and 256 MiB"));
                }
                self.max_message_bytes = v as u32;
            }
            "message.timestamp.type" => {
                self.timestamp_type = match value.trim() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(invalid("must be CreateTime or LogAppendTime")),
                };
            }
            "message.timestamp.before.max.ms" | "message.timestamp.after.max.ms" => {
                let v = number()?;
                if v < 0 {
                    return Err(invalid("must be at least 0"));
                }
                if name == "message.timestamp.before.max.ms" {
                    self.timestamp_before_max_ms = v;
                } else {
                    self.timestamp_after_max_ms = v;
                }
            }
            _ => return Err(invalid("unknown config")),
        }
        Ok(())
    }

    /// Every config with its value and whether it is the default.
    pub fn entries(&self, overrides: &BTreeMap<String, String>) -> Vec<(String, String, bool)> {
        let values = [
            self.retention_ms.to_string(),
            self.retention_bytes.to_string(),
            self.segment_bytes.to_string(),
            self.segment_ms.to_string(),
            self.max_message_bytes.to_string(),
            self.timestamp_type.name().to_string(),
            self.timestamp_before_max_ms.to_string(),
            self.timestamp_after_max_ms.to_string(),
        ];
        CONFIG_NAMES
            .iter()
            .zip(values)
            .map(|(name, value)| (name.to_string(), value, !overrides.contains_key(*name)))
            .collect()
    }

    /// Checks a CreateTime batch's first and largest timestamps against the bounds, at
    /// the broker's time `now_ms`.
    pub fn check_timestamps(&self, first: i64, max: i64, now_ms: i64) -> Result<(), BrokerError> {
        if self.timestamp_type == TimestampType::LogAppendTime {
            return Ok(());
        }
        for timestamp in [first, max] {
            let behind = now_ms.saturating_sub(timestamp);
            let ahead = timestamp.saturating_sub(now_ms);
            if behind > self.timestamp_before_max_ms {
                return Err(BrokerError::InvalidTimestamp {
                    reason: format!(
                        "timestamp {timestamp} is {behind} ms before the broker's clock; \
                         message.timestamp.before.max.ms is {}",
                        self.timestamp_before_max_ms
                    ),
                });
            }
            if ahead > self.timestamp_after_max_ms {
                return Err(BrokerError::InvalidTimestamp {
                    reason: format!(
                        "timestamp {timestamp} is {ahead} ms after the broker's clock; \
                         message.timestamp.after.max.ms is {}",
                        self.timestamp_after_max_ms
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn log_config(&self, flush: FlushPolicy) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_age: Duration::from_millis(self.segment_ms as u64),
            index_interval_bytes: 4096,
            flush,
            ..LogConfig::default()
        }
    }

    pub fn retention(&self) -> RetentionPolicy {
        RetentionPolicy {
            max_age: (self.retention_ms >= 0)
                .then(|| Duration::from_millis(self.retention_ms as u64)),
            max_bytes: (self.retention_bytes >= 0).then_some(self.retention_bytes as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_apply_and_bad_ones_are_refused_with_the_name() {
        let defaults = TopicConfig::default();
        let config = TopicConfig::resolve(&defaults, &map(&[("retention.ms", "60000")])).unwrap();
        assert_eq!(config.retention_ms, 60_000);
        assert_eq!(config.retention().max_age, Some(Duration::from_secs(60)));
        let entries = config.entries(&map(&[("retention.ms", "60000")]));
        assert!(entries.contains(&("retention.ms".into(), "60000".into(), false)));
        assert!(entries.contains(&("retention.bytes".into(), "-1".into(), true)));
        for (name, value) in [
            ("message.timestamp.type", "Whenever"),
            ("message.timestamp.after.max.ms", "-1"),
            ("retention.ms", "soon"),
            ("segment.bytes", "10"),
            ("max.message.bytes", "-5"),
            ("cleanup.policy", "compact"),
        ] {
            let err = TopicConfig::resolve(&defaults, &map(&[(name, value)])).unwrap_err();
            assert!(matches!(err, BrokerError::InvalidConfig { name: n, .. } if n == name));
        }
    }
}

#[cfg(test)]
mod timestamp_tests {
    use super::*;

    #[test]
    fn create_time_timestamps_must_lie_within_the_bounds() {
        let config = TopicConfig {
            timestamp_before_max_ms: 1000,
            timestamp_after_max_ms: 500,
            ..TopicConfig::default()
        };
        let now = 1_000_000;
        assert!(config.check_timestamps(now - 1000, now + 500, now).is_ok());
        assert!(config.check_timestamps(now - 1001, now, now).is_err());
        assert!(config.check_timestamps(now, now + 501, now).is_err());
        // Far-off values do not overflow.
        assert!(config.check_timestamps(i64::MIN, i64::MAX, now).is_err());
        let defaults = TopicConfig::default();
        assert!(defaults.check_timestamps(0, now, now).is_ok());
        assert!(
            defaults
                .check_timestamps(now, now + 3_600_001, now)
                .is_err()
        );
        let stamped = TopicConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..config
        };
        assert!(stamped.check_timestamps(i64::MIN, i64::MAX, now).is_ok());
    }
}
