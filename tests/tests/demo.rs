//! The demo of deploy/docker-compose.yml across containers: the `producer` service writes
//! OrderCreated events to `orders` (12 partitions) and the `consumer` service, scaled,
//! shares them in the group `order-workers`. Both reach the nodes by service name from
//! inside the compose network; scaling up and down moves partitions live, and the group
//! keeps committing.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::WITHIN;
use spool_client::{Client, GroupDescription};
use spool_system_tests::{ComposeCluster, docker_or_skip};
use spool_testkit::wait_for;

const GROUP: &str = "order-workers";
const PARTITIONS: u32 = 12;

async fn describe(client: &Client) -> Option<GroupDescription> {
    let (_, address) = client.find_coordinator(GROUP).await.ok()?;
    let coordinator = Client::connect(&[address], Duration::from_secs(5))
        .await
        .ok()?;
    coordinator.describe_group(GROUP).await.ok()
}

/// Each of `members` members holds a share of the 12 partitions, none held twice, none
/// on its way out.
fn settled(group: &GroupDescription, members: usize) -> bool {
    if group.members.len() != members {
        return false;
    }
    let mut held = BTreeSet::new();
    for member in &group.members {
        if member.revoking.values().any(|p| !p.is_empty()) {
            return false;
        }
        let mine: Vec<u32> = member.assigned.values().flatten().copied().collect();
        if mine.is_empty() {
            return false;
        }
        for partition in mine {
            if !held.insert(partition) {
                return false;
            }
        }
    }
    held == (0..PARTITIONS).collect()
}

/// The sum of the group's committed offsets.
fn committed(group: &GroupDescription) -> i64 {
    group.offsets.iter().map(|o| o.offset.max(0)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_consumers_share_the_demo_topic_and_follow_scaling() {
    let Some(docker) = docker_or_skip("scaled_consumers").await else {
        return;
    };
    let cluster = ComposeCluster::up(&docker).await.expect("cluster");
    let client = cluster.client().await.expect("client");
    cluster
        .compose(&["up", "-d", "producer"])
        .await
        .expect("the producer starts");
    for members in [2usize, 4, 1] {
        let scale = format!("consumer={members}");
        cluster
            .compose(&["up", "-d", "--scale", &scale, "consumer"])
            .await
            .expect("the consumers scale");
        // Members that leave say so; one that did not would hold its partitions for its
        // whole session (45 s).
        let settling = wait_for(2 * WITHIN, "the group to settle", || async {
            describe(&client)
                .await
                .filter(|group| settled(group, members))
        })
        .await;
        let group = match settling {
            Ok(group) => group,
            Err(e) => panic!(
                "{members} members: {e}; the group: {:?}",
                describe(&client).await
            ),
        };
        let before = committed(&group);
        wait_for(WITHIN, "commits by the settled group", || async {
            let now = committed(&describe(&client).await?);
            (now > before).then_some(())
        })
        .await
        .expect("the group goes on committing");
        eprintln!(
            "{members} consumers: each holds a share of the {PARTITIONS} partitions (group epoch {}), committed offsets advancing from {before}",
            group.group_epoch
        );
    }
}
