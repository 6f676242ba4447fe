//! `spool demo rebalance` against three `spool serve` processes, with the node
//! coordinating the demo's group killed (SIGKILL) and restarted twice while members are
//! being killed and replaced: the demo's own checker must still find every acknowledged
//! record processed, no partition with two owners at once, duplicates only from
//! uncommitted work and no lag after the clean stop.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use spool_testkit::{ClusterOptions, TestCluster};

const SPOOL: &str = env!("CARGO_BIN_EXE_spool");
const GROUP: &str = "demo-under-fire";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebalance_demo_passes_its_checks_through_coordinator_kills() {
    let mut cluster = TestCluster::start(ClusterOptions::processes(3, SPOOL))
        .await
        .expect("cluster");
    let bootstraps = cluster.addresses().join(",");
    let mut demo = Command::new(SPOOL)
        .args(["--bootstrap", &bootstraps, "demo", "rebalance"])
        .args(["--group", GROUP, "--partitions", "6", "--rate", "300"])
        .args(["--step-ms", "300", "--session-timeout-ms", "3000"])
        .env("SPOOL_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The demo narrates each step on a line; the test strikes at two of them.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = lines_tx.send(line);
        }
    });
    let client = cluster.client().await.expect("client");
    let mut transcript = Vec::new();
    let mut strikes = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.recv()).await {
        // A member dies and so does the coordinator's node: two failures at once. Then
        // the coordinator dies again while a static member restarts.
        let step = line.trim_end();
        let strike =
            step.ends_with("w2 killed (SIGKILL)") || step.ends_with("(static: same partitions)");
        transcript.push(line);
        if strike {
            let (coordinator, _) = client.find_coordinator(GROUP).await.expect("coordinator");
            cluster.kill(coordinator).await.expect("kill");
            cluster.restart(coordinator).await.expect("restart");
            strikes += 1;
        }
    }
    let status = tokio::task::spawn_blocking(move || demo.wait())
        .await
        .unwrap()
        .unwrap();
    let transcript = transcript.join("\n");
    assert_eq!(strikes, 2, "{transcript}");
    assert!(status.success(), "the demo failed:\n{transcript}");
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
