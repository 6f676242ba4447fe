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
        }
    }
}

/// Every config a topic accepts.
pub const CONFIG_NAMES: [&str; 5] = [
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
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
        ];
        CONFIG_NAMES
            .iter()
            .zip(values)
            .map(|(name, value)| (name.to_string(), value, !overrides.contains_key(*name)))
            .collect()
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
