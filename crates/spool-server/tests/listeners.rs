//! The external client listener: a second door to the same node, whose answers name the
//! addresses its own clients reach (the advertised-listener problem of clients outside a
//! container network), while the ordinary listener keeps naming the ordinary ones.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use spool_proto::v1;
use spool_proto::v1::admin_client::AdminClient;
use spool_proto::v1::broker_client::BrokerClient;
use spool_proto::v1::groups_client::GroupsClient;
use spool_server::{Node, NodeHandle, ServerConfig};
use tonic::transport::Channel;

const EXTERNAL: &str = "edge.example:17073";

/// A node on free ports, with an external listener advertised as `external` if given.
async fn start(dir: &std::path::Path, external: Option<&str>) -> NodeHandle {
    let node = Node::start(ServerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        cluster_listen: "127.0.0.1:0".into(),
        external_listen: external.map(|_| "127.0.0.1:0".to_string()),
        external_advertised_address: external.map(str::to_string),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    // Answers name this node once the controller has registered it.
    node.broker()
        .wait_registered(Duration::from_secs(20))
        .await
        .unwrap();
    node
}

async fn channel(address: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The brokers a listener's metadata names (call once the node has registered itself).
async fn brokers(channel: &Channel) -> Vec<v1::BrokerInfo> {
    BrokerClient::new(channel.clone())
        .metadata(v1::MetadataRequest { topics: Vec::new() })
        .await
        .unwrap()
        .into_inner()
        .brokers
}

#[tokio::test]
async fn each_client_listener_names_the_addresses_its_clients_reach() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), Some(EXTERNAL)).await;
    let internal = channel(node.grpc_addr()).await;
    let external = channel(node.external_addr().expect("an external listener")).await;
    let ordinary = node.grpc_addr().to_string();

    let seen = |brokers: Vec<v1::BrokerInfo>| -> Vec<String> {
        brokers.into_iter().map(|b| b.address).collect()
    };
    assert_eq!(seen(brokers(&internal).await), vec![ordinary.clone()]);
    assert_eq!(seen(brokers(&external).await), vec![EXTERNAL.to_string()]);

    for (channel, expected) in [(&internal, &ordinary), (&external, &EXTERNAL.to_string())] {
        let cluster = AdminClient::new(channel.clone())
            .describe_cluster(v1::DescribeClusterRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&cluster.brokers[0].address, expected);
        let coordinator = GroupsClient::new(channel.clone())
            .find_coordinator(v1::FindCoordinatorRequest {
                group: "listeners".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&coordinator.address, expected);
    }

    // One node behind both doors: what one creates, the other serves.
    AdminClient::new(external.clone())
        .create_topics(v1::CreateTopicsRequest {
            topics: vec![v1::NewTopic {
                name: "both-doors".into(),
                partitions: 2,
                replication_factor: 1,
                ..v1::NewTopic::default()
            }],
            validate_only: false,
        })
        .await
        .unwrap();
    let metadata = BrokerClient::new(internal.clone())
        .metadata(v1::MetadataRequest {
            topics: vec!["both-doors".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.topics[0].partitions.len(), 2);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_an_external_listener_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), None).await;
    assert!(node.external_addr().is_none());
    let internal = channel(node.grpc_addr()).await;
    let addresses: Vec<String> = brokers(&internal)
        .await
        .into_iter()
        .map(|b| b.address)
        .collect();
    assert_eq!(addresses, vec![node.grpc_addr().to_string()]);
    node.shutdown().await.unwrap();
}
