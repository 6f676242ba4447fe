//! `spool demo rebalance` against three `spool serve` processes: members join, are killed
//! with SIGKILL, leave and restart as static members while orders flow, and the demo's own
//! checker must find every acknowledged record processed, no partition with two owners at
//! once, duplicates only from uncommitted work and no lag after the clean stop.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

use spool_testkit::{ClusterOptions, TestCluster};

const SPOOL: &str = env!("CARGO_BIN_EXE_spool");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebalance_demo_passes_its_checks() {
    let cluster = TestCluster::start(ClusterOptions::processes(3, SPOOL))
        .await
        .expect("cluster");
    let bootstraps = cluster.addresses().join(",");
    let run = tokio::task::spawn_blocking(move || {
        Command::new(SPOOL)
            .args(["--bootstrap", &bootstraps, "demo", "rebalance"])
            .args([
                "--group",
                "demo-checked",
                "--partitions",
                "6",
                "--rate",
                "300",
            ])
            .args(["--step-ms", "300", "--session-timeout-ms", "3000"])
            .env("SPOOL_LOG", "error")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let transcript = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(run.status.success(), "the demo failed:\n{transcript}");
    for check in [
        "ok   every acknowledged record processed",
        "ok   no partition owned by two members at once",
        "ok   duplicates only from uncommitted work",
        "ok   stopped cleanly, the group has no lag",
        "PASSED",
    ] {
        assert!(transcript.contains(check), "{check}:\n{transcript}");
    }
    // Records were really written and read: the count is in the first check's line.
    let processed = transcript
        .lines()
        .find(|l| l.contains("every acknowledged record processed"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(processed > 1_000, "{transcript}");
}
