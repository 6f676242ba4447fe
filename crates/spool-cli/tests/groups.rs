//! `spool consume --group` and `spool group` as a user runs them: a group member resumes
//! where the group left off, describe shows committed offsets and lag, reset-offsets
//! plans then applies, delete removes the group, and bad input is a clear error.
#![allow(clippy::unwrap_used)]

mod common;

use common::Server;

fn lines(server: &Server, args: &[&str]) -> Vec<String> {
    server.ok(args, None).lines().map(str::to_string).collect()
}

#[test]
fn a_group_resumes_where_it_left_off_and_can_be_described_reset_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    server.ok(&["topic", "create", "orders", "--partitions", "2"], None);
    let input: String = (0..10).map(|i| format!("k{i}\tv{i}\n")).collect();
    server.ok(
        &["produce", "orders", "--key-separator", "\t"],
        Some(input.as_bytes()),
    );
    // The first member reads 6 and commits them as it leaves.
    let first = lines(
        &server,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--max-messages",
            "6",
        ],
    );
    assert_eq!(first.len(), 6);
    // The next reads the other 4: nothing twice, nothing missed.
    let second = lines(
        &server,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--max-messages",
            "4",
        ],
    );
    let mut all: Vec<String> = first.iter().chain(&second).cloned().collect();
    all.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(all, expected);

    let described: serde_json::Value = serde_json::from_str(
        &server.ok(&["group", "describe", "billing", "--output", "json"], None),
    )
    .unwrap();
    assert_eq!(described["state"], "empty");
    let partitions = described["partitions"].as_array().unwrap();
    let committed: i64 = partitions
        .iter()
        .map(|p| p["committed"].as_i64().unwrap())
        .sum();
    let lag: i64 = partitions.iter().map(|p| p["lag"].as_i64().unwrap()).sum();
    assert_eq!((committed, lag), (10, 0));
    let listed = server.ok(&["group", "list"], None);
    assert!(listed.contains("billing"), "{listed}");

    // A dry run changes nothing; --execute moves the group back to the start.
    let plan = server.ok(
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-earliest",
        ],
        None,
    );
    assert!(plan.contains("--execute"), "{plan}");
    let again: serde_json::Value = serde_json::from_str(
        &server.ok(&["group", "describe", "billing", "--output", "json"], None),
    )
    .unwrap();
    assert_eq!(again["partitions"], described["partitions"]);
    server.ok(
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-earliest",
            "--execute",
        ],
        None,
    );
    let replay = lines(
        &server,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--max-messages",
            "10",
        ],
    );
    assert_eq!(replay.len(), 10, "the reset group reads everything again");

    server.ok(&["group", "delete", "billing"], None);
    let gone = server.spool(&["group", "describe", "billing"], None);
    assert!(!gone.status.success());
    let error = String::from_utf8_lossy(&gone.stderr);
    assert!(error.contains("GROUP_ID_NOT_FOUND"), "{error}");

    // Bad input: a clear error and a non-zero exit.
    let long = "g".repeat(300);
    let refused = server.spool(&["group", "describe", &long], None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("INVALID_GROUP_ID"));
    server.kill_9();
}
