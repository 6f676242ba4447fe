//! `spool serve` as a real process, driven by the `spool` client commands as a user or a
//! script would: topics, produce from stdin, consume as JSON, kill -9, restart.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;

mod common;

use common::{SPOOL, Server};

/// Values read back, per partition in offset order, from `consume --format json`.
fn consume_all(
    server: &Server,
    topic: &str,
    expected: usize,
) -> HashMap<u64, Vec<(i64, String, String)>> {
    let max = expected.to_string();
    let out = server.ok(
        &[
            "consume",
            topic,
            "--from-beginning",
            "--max-messages",
            &max,
            "--format",
            "json",
        ],
        None,
    );
    let mut by_partition: HashMap<u64, Vec<(i64, String, String)>> = HashMap::new();
    for line in out.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in [
            "topic",
            "partition",
            "offset",
            "timestamp",
            "key",
            "value",
            "headers",
        ] {
            assert!(record.get(field).is_some(), "{field} missing from {line}");
        }
        by_partition
            .entry(record["partition"].as_u64().unwrap())
            .or_default()
            .push((
                record["offset"].as_i64().unwrap(),
                record["key"].as_str().unwrap().to_string(),
                record["value"].as_str().unwrap().to_string(),
            ));
    }
    by_partition
}

fn check(read: &HashMap<u64, Vec<(i64, String, String)>>, lines: &[(String, String)]) {
    let total: usize = read.values().map(Vec::len).sum();
    assert_eq!(total, lines.len(), "every record read back once");
    for records in read.values() {
        for (i, (offset, _, _)) in records.iter().enumerate() {
            assert_eq!(*offset, i as i64, "offsets are dense from 0");
        }
        // Within a partition, records keep the order they were produced in.
        let positions: Vec<usize> = records
            .iter()
            .map(|(_, key, value)| {
                lines
                    .iter()
                    .position(|(k, v)| k == key && v == value)
                    .unwrap()
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn records_piped_through_produce_come_back_from_consume_and_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    assert!(
        server
            .ok(&["topic", "create", "lines", "--partitions", "3"], None)
            .contains("3 partition")
    );
    let lines: Vec<(String, String)> = (0..20_000)
        .map(|i| (format!("key-{}", i % 97), format!("line {i}")))
        .collect();
    let input: String = lines.iter().map(|(k, v)| format!("{k}|{v}\n")).collect();
    server.ok(
        &[
            "produce",
            "lines",
            "--key-separator",
            "|",
            "--header",
            "source=test",
        ],
        Some(input.as_bytes()),
    );
    let read = consume_all(&server, "lines", lines.len());
    check(&read, &lines);
    let offsets: serde_json::Value =
        serde_json::from_str(&server.ok(&["offsets", "lines", "--output", "json"], None)).unwrap();
    let latest: i64 = offsets
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["latest"].as_i64().unwrap())
        .sum();
    assert_eq!(latest, 20_000);

    server.kill_9();
    let server = Server::start(dir.path());
    check(&consume_all(&server, "lines", lines.len()), &lines);
    let describe: serde_json::Value =
        serde_json::from_str(&server.ok(&["topic", "describe", "lines", "--output", "json"], None))
            .unwrap();
    assert_eq!(describe["partitions"].as_array().unwrap().len(), 3);
    server.kill_9();
}

#[test]
fn sigterm_stops_the_node_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    server.ok(&["topic", "create", "t"], None);
    server.ok(&["produce", "t"], Some(b"one\ntwo\n"));
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    // A clean stop writes the active segment's index: the next start scans nothing.
    let server = Server::start(dir.path());
    assert_eq!(
        server.ok(&["consume", "t", "--from-beginning"], None),
        "one\ntwo\n"
    );
    server.kill_9();
}

#[test]
fn connect_to_reaches_a_node_whose_advertised_address_does_not_resolve() {
    let dir = tempfile::tempdir().unwrap();
    // As behind a port forward: the node advertises a name this host cannot resolve.
    let server = Server::start_with(
        dir.path(),
        &["--advertised-address", "spool-1.invalid:7070"],
    );
    server.ok(&["topic", "create", "t", "--partitions", "2"], None);
    let lost = server.spool(
        &["produce", "t", "--delivery-timeout-ms", "3000"],
        Some(b"nowhere\n"),
    );
    let said = String::from_utf8_lossy(&lost.stderr);
    assert!(
        !lost.status.success() && said.contains("delivery timeout"),
        "a record went to an address that does not resolve: {said}"
    );

    // Bootstrapped by name and told the node's address: the node is reached on a
    // connection of its own, made through the override.
    let port = server.grpc.rsplit(':').next().unwrap();
    let by_name = format!("localhost:{port}");
    let connect_to = format!("1=127.0.0.1:{port}");
    let lines: Vec<String> = (0..20).map(|i| format!("k{i}:v{i}")).collect();
    server.ok_at(
        &by_name,
        &[
            "--connect-to",
            &connect_to,
            "produce",
            "t",
            "--key-separator",
            ":",
        ],
        Some(format!("{}\n", lines.join("\n")).as_bytes()),
    );
    let read = server.ok_at(
        &by_name,
        &[
            "--connect-to",
            &connect_to,
            "consume",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--max-messages",
            "20",
            "--format",
            "json",
        ],
        None,
    );
    let mut values: Vec<String> = read
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            record["value"].as_str().unwrap().to_string()
        })
        .collect();
    values.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(
        values, expected,
        "every record read back through --connect-to"
    );
    let offsets = server.ok_at(
        &by_name,
        &[
            "--connect-to",
            &connect_to,
            "offsets",
            "t",
            "--output",
            "json",
        ],
        None,
    );
    assert!(offsets.contains("\"latest\""), "{offsets}");
    server.kill_9();
}

#[test]
fn client_errors_are_one_sentence_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let cases: [(&[&str], &str); 4] = [
        (
            &["topic", "describe", "nope"],
            "error: topic \"nope\" does not exist (UNKNOWN_TOPIC_OR_PARTITION)",
        ),
        (
            &["topic", "create", "bad/name"],
            "error: invalid topic name: a topic name may only contain a-z, A-Z, 0-9, '.', '_' and '-'; found '/' (INVALID_TOPIC)",
        ),
        (
            &["consume", "nope"],
            "error: topic \"nope\" does not exist (UNKNOWN_TOPIC_OR_PARTITION)",
        ),
        (
            &["topic", "create", "r", "--replication-factor", "3"],
            "error: replication factor 3 is not possible with 1 live broker(s) (INVALID_REPLICATION_FACTOR)",
        ),
    ];
    for (args, expected) in cases {
        let out = server.spool(args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), expected);
    }
    let out = Command::new(SPOOL)
        .args(["topic", "list", "--bootstrap", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: could not reach Spool at 127.0.0.1:1"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1);
    server.kill_9();
}

#[test]
fn produce_and_consume_flags_do_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    server.ok(
        &[
            "topic",
            "create",
            "f",
            "--partitions",
            "2",
            "--config",
            "retention.ms=3600000",
        ],
        None,
    );
    server.ok(
        &[
            "produce",
            "f",
            "--partition",
            "1",
            "--acks",
            "leader",
            "--header",
            "h=1",
        ],
        Some(b"a\nb\nc\n"),
    );
    server.ok(
        &["produce", "f", "--partition", "1", "--acks", "0"],
        Some(b"d\n"),
    );
    // acks=0 does not wait: read until the fourth record is there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let all = loop {
        let out = server.ok(
            &["consume", "f", "--partition", "1", "--from-beginning"],
            None,
        );
        if out.lines().count() == 4 || std::time::Instant::now() > deadline {
            break out;
        }
    };
    assert_eq!(all, "a\nb\nc\nd\n");
    assert_eq!(
        server.ok(&["consume", "f", "--partition", "1", "--offset", "2"], None),
        "c\nd\n"
    );
    assert_eq!(
        server.ok(
            &["consume", "f", "--partition", "0", "--from-beginning"],
            None
        ),
        ""
    );
    let json = server.ok(
        &[
            "consume",
            "f",
            "--partition",
            "1",
            "--offset",
            "0",
            "--max-messages",
            "1",
            "--format",
            "json",
        ],
        None,
    );
    let record: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(
        record["headers"],
        serde_json::json!([{"key": "h", "value": "1"}])
    );
    assert_eq!(record["key"], serde_json::Value::Null);
    let far_future = (record["timestamp"].as_i64().unwrap() + 3_600_000).to_string();
    assert_eq!(
        server.ok(&["consume", "f", "--timestamp", &far_future], None),
        ""
    );
    let start = record["timestamp"].as_i64().unwrap().to_string();
    assert_eq!(
        server.ok(
            &["consume", "f", "--partition", "1", "--timestamp", &start],
            None
        ),
        "a\nb\nc\nd\n"
    );
    let out = server.spool(
        &["consume", "f", "--partition", "1", "--offset", "99"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OFFSET_OUT_OF_RANGE"));

    server.ok(
        &[
            "topic",
            "alter",
            "f",
            "--set",
            "retention.bytes=1048576",
            "--reset",
            "retention.ms",
        ],
        None,
    );
    let described: serde_json::Value =
        serde_json::from_str(&server.ok(&["topic", "describe", "f", "--output", "json"], None))
            .unwrap();
    assert_eq!(described["configs"]["retention.bytes"], "1048576");
    assert_eq!(described["configs"]["retention.ms"], "604800000");
    let listed: serde_json::Value =
        serde_json::from_str(&server.ok(&["topic", "list", "--output", "json"], None)).unwrap();
    assert_eq!(listed[0]["topic"], "f");
    server.ok(&["topic", "delete", "f"], None);
    assert_eq!(
        server.ok(&["topic", "list"], None).trim(),
        "TOPIC  PARTITIONS  REPLICATION"
    );
    server.kill_9();
}
