//! Three ringlog nodes as one cluster, byte for byte on the wire: every broker tells
//! the same metadata, and only a partition's leader takes its produce, fetch and list
//! offsets; the others answer NOT_LEADER_OR_FOLLOWER (6), as Kafka's brokers do, with
//! the current leader and its endpoint where the version has them (KIP-951).
//! (The client tests in tests/test_cluster.py cover the clients and failures.)

mod common;

use std::time::{Duration, Instant};

use common::kafka::*;
use common::{free_port, Broker};
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::produce_response::ProduceResponse;
use kafka_protocol::messages::ApiKey;

const NOT_LEADER_OR_FOLLOWER: i16 = 6;

fn start_cluster(name: &str, n: usize) -> Vec<Broker> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let controller_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let voters = controller_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{i}@127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    (0..n)
        .map(|i| {
            let overrides = [
                format!("node.id={i}"),
                format!(
                    "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                    ports[i], controller_ports[i]
                ),
                format!("controller.quorum.voters={voters}"),
                format!("ringlog.cpus={}", i % 2),
            ];
            let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
            Broker::start_on(&format!("{name}-{i}"), ports[i], &overrides)
        })
        .collect()
}

fn metadata(b: &Broker) -> MetadataResponse {
    let mut req = MetadataRequest::default();
    req.topics = None;
    b.connect().call(ApiKey::Metadata, 12, &req)
}

#[test]
fn only_the_leader_serves_a_partition_and_every_broker_says_which() {
    let nodes = start_cluster("cluster-wire", 3);
    let deadline = Instant::now() + Duration::from_secs(60);
    while nodes.iter().any(|b| metadata(b).brokers.len() != 3) {
        assert!(
            Instant::now() < deadline,
            "the brokers did not all register"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    create_topic(&mut nodes[0].connect(), "led", 3);
    // Every node applies the topic on its own, soon after the controller answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().all(|n| {
        metadata(n)
            .topics
            .iter()
            .any(|t| t.name.as_ref().map(|n| n.as_str()) == Some("led"))
    }) {
        assert!(Instant::now() < deadline, "a node did not learn the topic");
        std::thread::sleep(Duration::from_millis(50));
    }
    let md = metadata(&nodes[1]);
    let topic = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("led"))
        .expect("the topic");
    let mut leaders: Vec<(i32, i32)> = topic
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    leaders.sort();
    // Striped: partition p led by broker p (of 0, 1, 2).
    assert_eq!(leaders, vec![(0, 0), (1, 1), (2, 2)]);
    for (i, b) in nodes.iter().enumerate() {
        let other = metadata(b);
        // Each broker names itself (it forwards controller requests), as Kafka's do.
        assert_eq!(other.controller_id.0, i as i32);
        assert_eq!(other.cluster_id, md.cluster_id);
    }

    let mut c = nodes[0].connect();
    // Partition 0 is led here; 1 and 2 are not.
    assert_eq!(produce(&mut c, "led", 0, batch(3, None)), (0, 0));
    assert_eq!(
        produce(&mut c, "led", 1, batch(3, None)).0,
        NOT_LEADER_OR_FOLLOWER
    );
    let fetched: FetchResponse = c.call(
        ApiKey::Fetch,
        FETCH_V,
        &fetch_request("led", &[(0, 0), (2, 0)], 0),
    );
    let errors: Vec<(i32, i16)> = fetched.responses[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code))
        .collect();
    assert_eq!(errors, vec![(0, 0), (2, NOT_LEADER_OR_FOLLOWER)]);
    assert_eq!(
        list_offsets(&mut c, "led", 2, -1).error_code,
        NOT_LEADER_OR_FOLLOWER
    );
    // KIP-951: from v10 the answer says who leads now, and where to reach it.
    let answer: ProduceResponse = c.call(
        ApiKey::Produce,
        11,
        &produce_request("led", 1, batch(1, None), -1),
    );
    let p = &answer.responses[0].partition_responses[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(
        (p.current_leader.leader_id.0, p.current_leader.leader_epoch),
        (1, 0)
    );
    let endpoints: Vec<(i32, i32)> = answer
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, e.port))
        .collect();
    assert_eq!(endpoints, vec![(1, nodes[1].port as i32)]);
    // And Fetch from v16 (by topic id), with the leader's endpoint.
    let mut by_id = fetch_request("led", &[(0, 0), (2, 0)], 0);
    by_id.topics[0].topic_id = topic.topic_id;
    let fetched: FetchResponse = c.call(ApiKey::Fetch, 16, &by_id);
    let hints: Vec<(i32, i16, i32, i32)> = fetched.responses[0]
        .partitions
        .iter()
        .map(|p| {
            let l = &p.current_leader;
            (
                p.partition_index,
                p.error_code,
                l.leader_id.0,
                l.leader_epoch,
            )
        })
        .collect();
    assert_eq!(
        hints,
        vec![(0, 0, -1, -1), (2, NOT_LEADER_OR_FOLLOWER, 2, 0)]
    );
    let endpoints: Vec<(i32, i32)> = fetched
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, e.port))
        .collect();
    assert_eq!(endpoints, vec![(2, nodes[2].port as i32)]);
    // The leader of partition 1 takes it.
    assert_eq!(
        produce(&mut nodes[1].connect(), "led", 1, batch(3, None)),
        (0, 0)
    );
    // A partition that does not exist is unknown everywhere.
    assert_eq!(produce(&mut c, "led", 3, batch(1, None)).0, 3);
}
