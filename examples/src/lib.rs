//! Shared setup for the examples: where the cluster is, and creating a topic if needed.

use std::time::Duration;

use spool_client::{Client, NewTopic};

/// Connects to `SPOOL_BOOTSTRAP`, or to `spool dev`'s default address.
pub async fn connect() -> anyhow::Result<Client> {
    let bootstrap = std::env::var("SPOOL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:7070".into());
    let addresses: Vec<String> = bootstrap.split(',').map(String::from).collect();
    Ok(Client::connect(&addresses, Duration::from_secs(5)).await?)
}

/// Creates `topic` with `partitions` unless it exists; returns its partition count.
pub async fn ensure_topic(client: &Client, topic: &str, partitions: u32) -> anyhow::Result<u32> {
    if let Ok(described) = client.describe_topic(topic).await {
        return Ok(described.partitions.len() as u32);
    }
    client
        .create_topic(NewTopic {
            name: topic.into(),
            partitions,
            ..NewTopic::default()
        })
        .await?;
    Ok(partitions)
}
