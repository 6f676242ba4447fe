//! Prometheus metrics: request counts, errors and latencies per RPC, bytes in and out,
//! and per-partition gauges read at scrape time.

use std::fmt::Write;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use spool_broker::{Broker, PartitionStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabel {
    rpc: String,
}

/// Handles for one RPC, created once so recording allocates nothing.
#[derive(Debug, Clone)]
pub(crate) struct RpcMetrics {
    requests: Counter,
    errors: Counter,
    latency: Histogram,
}

impl RpcMetrics {
    /// Records one call that started at `start`.
    pub fn record(&self, start: Instant, failed: bool) {
        self.requests.inc();
        if failed {
            self.errors.inc();
        }
        self.latency.observe(start.elapsed().as_secs_f64());
    }
}

type HistogramFamily = Family<RpcLabel, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub produce: RpcMetrics,
    pub fetch: RpcMetrics,
    pub list_offsets: RpcMetrics,
    pub metadata: RpcMetrics,
    pub admin: RpcMetrics,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
}

fn latency_histogram() -> Histogram {
    // 50 us to ~1.6 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("spool");
        let requests = Family::<RpcLabel, Counter>::default();
        let errors = Family::<RpcLabel, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register("requests", "gRPC requests served, by RPC", requests.clone());
        registry.register(
            "request_errors",
            "gRPC requests that failed in whole or in part, by RPC",
            errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "gRPC request latency, by RPC",
            latency.clone(),
        );
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        registry.register(
            "produce_bytes",
            "record batch bytes received by produce requests",
            bytes_in.clone(),
        );
        registry.register(
            "fetch_bytes",
            "record batch bytes sent to consumers",
            bytes_out.clone(),
        );
        let rpc = |name: &str| {
            let label = RpcLabel {
                rpc: name.to_string(),
            };
            RpcMetrics {
                requests: requests.get_or_create(&label).clone(),
                errors: errors.get_or_create(&label).clone(),
                latency: latency.get_or_create(&label).clone(),
            }
        };
        Self {
            produce: rpc("produce"),
            fetch: rpc("fetch"),
            list_offsets: rpc("list_offsets"),
            metadata: rpc("metadata"),
            admin: rpc("admin"),
            bytes_in,
            bytes_out,
            registry,
        }
    }

    /// The OpenMetrics text of every metric, partition gauges included.
    pub fn render(&self, broker: &Broker) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        let body = text
            .trim_end()
            .strip_suffix("# EOF")
            .unwrap_or(&text)
            .to_string();
        let mut out = body;
        let stats = broker.partition_stats();
        type Value = fn(&PartitionStats) -> String;
        let gauges: [(&str, &str, Value); 3] = [
            (
                "spool_partition_high_watermark",
                "offset after the last committed record",
                |s| s.high_watermark.to_string(),
            ),
            (
                "spool_partition_log_start_offset",
                "first offset still retained",
                |s| s.log_start_offset.to_string(),
            ),
            (
                "spool_partition_size_bytes",
                "bytes of the partition's segments on disk",
                |s| s.size_bytes.to_string(),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} gauge");
            for stat in &stats {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\",partition=\"{}\"}} {}",
                    stat.topic,
                    stat.partition,
                    value(stat)
                );
            }
        }
        render_groups(&mut out, broker, &stats);
        out.push_str("# EOF\n");
        out
    }
}

/// Group gauges (of the groups coordinated here), lag where this node knows the
/// partition's high watermark, and the rebalance histogram.
fn render_groups(out: &mut String, broker: &Broker, partitions: &[PartitionStats]) {
    let groups = broker.group_stats();
    let high_watermarks: std::collections::HashMap<(&str, u32), i64> = partitions
        .iter()
        .map(|p| ((p.topic.as_str(), p.partition), p.high_watermark))
        .collect();
    let _ = writeln!(
        out,
        "# HELP spool_groups consumer groups this node coordinates.\n# TYPE spool_groups gauge\nspool_groups {}",
        groups.len()
    );
    let _ = writeln!(
        out,
        "# HELP spool_group_members members of each group coordinated here.\n# TYPE spool_group_members gauge"
    );
    for g in &groups {
        let _ = writeln!(
            out,
            "spool_group_members{{group=\"{}\",state=\"{}\"}} {}",
            escape(&g.group),
            g.state,
            g.members
        );
    }
    let _ = writeln!(
        out,
        "# HELP spool_group_epoch the group epoch: it moves with every membership or subscription change.\n# TYPE spool_group_epoch gauge"
    );
    for g in &groups {
        let _ = writeln!(
            out,
            "spool_group_epoch{{group=\"{}\"}} {}",
            escape(&g.group),
            g.epoch
        );
    }
    let _ = writeln!(
        out,
        "# HELP spool_group_lag records between a group's committed offset and the high watermark (partitions with a replica on this node).\n# TYPE spool_group_lag gauge"
    );
    for g in &groups {
        for (topic, partition, committed) in &g.committed {
            if let Some(hw) = high_watermarks.get(&(topic.as_str(), *partition)) {
                let _ = writeln!(
                    out,
                    "spool_group_lag{{group=\"{}\",topic=\"{topic}\",partition=\"{partition}\"}} {}",
                    escape(&g.group),
                    (hw - committed).max(0)
                );
            }
        }
    }
    let rebalances = broker.rebalance_stats();
    let _ = writeln!(
        out,
        "# HELP spool_group_rebalance_duration_seconds time from a group leaving stable to reaching it again.\n# TYPE spool_group_rebalance_duration_seconds histogram"
    );
    for (bound, count) in &rebalances.cumulative {
        let _ = writeln!(
            out,
            "spool_group_rebalance_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "spool_group_rebalance_duration_seconds_bucket{{le=\"+Inf\"}} {}\nspool_group_rebalance_duration_seconds_count {}\nspool_group_rebalance_duration_seconds_sum {}",
        rebalances.count, rebalances.count, rebalances.sum_seconds
    );
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
