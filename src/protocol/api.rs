//! The one table of supported APIs and versions. ApiVersions answers from it, dispatch
//! checks requests against it, and the tests read it.
//!
//! Version floors are Kafka 3.9's, so that clients years old work unchanged, except
//! where an old version needs the message formats 0/1 (Fetch v0–3; Produce v0–2,
//! advertised because librdkafka relies on that and answered UNSUPPORTED_VERSION, as
//! Kafka 4.0 and Redpanda do). OffsetCommit v0 and OffsetFetch v0 stored offsets in
//! ZooKeeper: Kafka 3.9 in KRaft mode advertises them and answers UNSUPPORTED_VERSION
//! per partition, and so does ringlog. Maxima are Kafka 4.x's where it is built. The
//! versions Kafka 4.0 dropped (KIP-896) are read by `old_versions`.

/// One supported API.
#[derive(Debug, Clone, Copy)]
pub struct ApiSpec {
    pub key: i16,
    pub name: &'static str,
    /// Lowest version advertised in ApiVersions.
    pub version_min: i16,
    /// Lowest version actually served; advertised versions below it get
    /// UNSUPPORTED_VERSION in a well-formed response.
    pub version_served_min: i16,
    pub version_max: i16,
    /// First version using flexible encoding (request header v2, tagged fields).
    pub flexible_from: i16,
}

pub mod key {
    pub const PRODUCE: i16 = 0;
    pub const FETCH: i16 = 1;
    pub const LIST_OFFSETS: i16 = 2;
    pub const METADATA: i16 = 3;
    pub const OFFSET_COMMIT: i16 = 8;
    pub const OFFSET_FETCH: i16 = 9;
    pub const FIND_COORDINATOR: i16 = 10;
    pub const JOIN_GROUP: i16 = 11;
    pub const HEARTBEAT: i16 = 12;
    pub const LEAVE_GROUP: i16 = 13;
    pub const SYNC_GROUP: i16 = 14;
    pub const DESCRIBE_GROUPS: i16 = 15;
    pub const LIST_GROUPS: i16 = 16;
    pub const API_VERSIONS: i16 = 18;
    pub const CREATE_TOPICS: i16 = 19;
    pub const DELETE_TOPICS: i16 = 20;
    pub const DELETE_RECORDS: i16 = 21;
    pub const DESCRIBE_CONFIGS: i16 = 32;
    pub const ALTER_CONFIGS: i16 = 33;
    pub const INIT_PRODUCER_ID: i16 = 22;
    pub const ADD_PARTITIONS_TO_TXN: i16 = 24;
    pub const ADD_OFFSETS_TO_TXN: i16 = 25;
    pub const END_TXN: i16 = 26;
    pub const WRITE_TXN_MARKERS: i16 = 27;
    pub const TXN_OFFSET_COMMIT: i16 = 28;
    pub const DESCRIBE_PRODUCERS: i16 = 61;
    pub const DESCRIBE_TRANSACTIONS: i16 = 65;
    pub const LIST_TRANSACTIONS: i16 = 66;
    pub const CREATE_PARTITIONS: i16 = 37;
    pub const DELETE_GROUPS: i16 = 42;
    pub const ELECT_LEADERS: i16 = 43;
    pub const INCREMENTAL_ALTER_CONFIGS: i16 = 44;
    pub const OFFSET_DELETE: i16 = 47;
    pub const DESCRIBE_CLUSTER: i16 = 60;
    pub const CONSUMER_GROUP_HEARTBEAT: i16 = 68;
    pub const CONSUMER_GROUP_DESCRIBE: i16 = 69;
}

const fn spec(key: i16, name: &'static str, min: i16, max: i16, flexible_from: i16) -> ApiSpec {
    ApiSpec {
        key,
        name,
        version_min: min,
        version_served_min: min,
        version_max: max,
        flexible_from,
    }
}

pub const SUPPORTED_APIS: &[ApiSpec] = &[
    ApiSpec {
        key: key::PRODUCE,
        name: "Produce",
        version_min: 0,
        version_served_min: 3,
        version_max: 11,
        flexible_from: 9,
    },
    spec(key::FETCH, "Fetch", 4, 17, 12),
    spec(key::LIST_OFFSETS, "ListOffsets", 0, 9, 6),
    spec(key::METADATA, "Metadata", 0, 12, 9),
    ApiSpec {
        key: key::OFFSET_COMMIT,
        name: "OffsetCommit",
        version_min: 0,
        version_served_min: 1,
        version_max: 9,
        flexible_from: 8,
    },
    ApiSpec {
        key: key::OFFSET_FETCH,
        name: "OffsetFetch",
        version_min: 0,
        version_served_min: 1,
        version_max: 9,
        flexible_from: 6,
    },
    spec(key::FIND_COORDINATOR, "FindCoordinator", 0, 6, 3),
    spec(key::JOIN_GROUP, "JoinGroup", 0, 9, 6),
    spec(key::HEARTBEAT, "Heartbeat", 0, 4, 4),
    spec(key::LEAVE_GROUP, "LeaveGroup", 0, 5, 4),
    spec(key::SYNC_GROUP, "SyncGroup", 0, 5, 4),
    spec(key::DESCRIBE_GROUPS, "DescribeGroups", 0, 5, 5),
    spec(key::LIST_GROUPS, "ListGroups", 0, 5, 3),
    spec(key::API_VERSIONS, "ApiVersions", 0, 4, 3),
    spec(key::CREATE_TOPICS, "CreateTopics", 0, 7, 5),
    spec(key::DELETE_TOPICS, "DeleteTopics", 0, 6, 4),
    spec(key::DELETE_RECORDS, "DeleteRecords", 0, 2, 2),
    spec(key::INIT_PRODUCER_ID, "InitProducerId", 0, 5, 2),
    spec(key::ADD_PARTITIONS_TO_TXN, "AddPartitionsToTxn", 0, 5, 3),
    spec(key::ADD_OFFSETS_TO_TXN, "AddOffsetsToTxn", 0, 4, 3),
    // Transactions V1: EndTxn v5 and TxnOffsetCommit v5 (and Produce v12) are V2's
    // (KIP-890 part 2), which no finalized `transaction.version` feature advertises,
    // so 4.x clients keep to V1 (`README`, "Transactions").
    spec(key::END_TXN, "EndTxn", 0, 4, 3),
    ApiSpec {
        key: key::WRITE_TXN_MARKERS,
        name: "WriteTxnMarkers",
        version_min: 1,
        version_served_min: 1,
        version_max: 1,
        flexible_from: 1,
    },
    spec(key::TXN_OFFSET_COMMIT, "TxnOffsetCommit", 0, 4, 3),
    spec(key::DESCRIBE_PRODUCERS, "DescribeProducers", 0, 0, 0),
    spec(key::DESCRIBE_TRANSACTIONS, "DescribeTransactions", 0, 0, 0),
    spec(key::LIST_TRANSACTIONS, "ListTransactions", 0, 1, 0),
    spec(key::DESCRIBE_CONFIGS, "DescribeConfigs", 1, 4, 4),
    spec(key::ALTER_CONFIGS, "AlterConfigs", 0, 2, 2),
    spec(
        key::INCREMENTAL_ALTER_CONFIGS,
        "IncrementalAlterConfigs",
        0,
        1,
        1,
    ),
    spec(key::CREATE_PARTITIONS, "CreatePartitions", 0, 3, 2),
    spec(key::DELETE_GROUPS, "DeleteGroups", 0, 2, 2),
    spec(key::ELECT_LEADERS, "ElectLeaders", 0, 2, 2),
    spec(key::OFFSET_DELETE, "OffsetDelete", 0, 0, 99),
    spec(key::DESCRIBE_CLUSTER, "DescribeCluster", 0, 2, 0),
    spec(
        key::CONSUMER_GROUP_HEARTBEAT,
        "ConsumerGroupHeartbeat",
        0,
        1,
        0,
    ),
    spec(
        key::CONSUMER_GROUP_DESCRIBE,
        "ConsumerGroupDescribe",
        0,
        1,
        0,
    ),
];

pub fn find(api_key: i16) -> Option<&'static ApiSpec> {
    SUPPORTED_APIS.iter().find(|s| s.key == api_key)
}

impl ApiSpec {
    pub fn is_advertised(&self, version: i16) -> bool {
        (self.version_min..=self.version_max).contains(&version)
    }
    pub fn is_served(&self, version: i16) -> bool {
        (self.version_served_min..=self.version_max).contains(&version)
    }
    pub fn is_flexible(&self, version: i16) -> bool {
        version >= self.flexible_from
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn table_agrees_with_the_schema_crate() {
        for spec in SUPPORTED_APIS {
            let api = ApiKey::try_from(spec.key).expect("known api key");
            let schema = api.valid_versions();
            assert!(
                spec.version_max <= schema.max,
                "{} max above schema",
                spec.name
            );
            assert!(spec.version_min <= spec.version_served_min);
            for v in spec.version_min..=spec.version_max {
                // Versions the crate lacks are read by `old_versions`, but for
                // Produce v0-2, which broker::produce reads far enough to refuse.
                let produce_v0_2 = spec.key == key::PRODUCE && v < 3;
                assert!(
                    v >= schema.min
                        || produce_v0_2
                        || super::super::old_versions::reads(spec.key, v),
                    "{} v{v}: neither the schema crate nor old_versions reads it",
                    spec.name
                );
            }
            // The schema crate agrees on which versions use the flexible header.
            for v in schema.min.max(spec.version_served_min)..=spec.version_max {
                assert_eq!(
                    api.request_header_version(v) == 2,
                    spec.is_flexible(v),
                    "{} v{v} flexibility",
                    spec.name
                );
            }
        }
    }

    /// Kafka 3.9's request versions (validVersions of its message schemas, which a 3.9
    /// broker advertises in full), against which the table is held.
    const KAFKA_3_9: &[(i16, i16, i16)] = &[
        (key::PRODUCE, 0, 11),
        (key::FETCH, 0, 17),
        (key::LIST_OFFSETS, 0, 9),
        (key::METADATA, 0, 12),
        (key::OFFSET_COMMIT, 0, 9),
        (key::OFFSET_FETCH, 0, 9),
        (key::FIND_COORDINATOR, 0, 6),
        (key::JOIN_GROUP, 0, 9),
        (key::HEARTBEAT, 0, 4),
        (key::LEAVE_GROUP, 0, 5),
        (key::SYNC_GROUP, 0, 5),
        (key::DESCRIBE_GROUPS, 0, 5),
        (key::LIST_GROUPS, 0, 5),
        (key::API_VERSIONS, 0, 4),
        (key::CREATE_TOPICS, 0, 7),
        (key::DELETE_TOPICS, 0, 6),
        (key::DELETE_RECORDS, 0, 2),
        (key::INIT_PRODUCER_ID, 0, 5),
        (key::ADD_PARTITIONS_TO_TXN, 0, 5),
        (key::ADD_OFFSETS_TO_TXN, 0, 4),
        (key::END_TXN, 0, 4),
        (key::WRITE_TXN_MARKERS, 0, 1),
        (key::TXN_OFFSET_COMMIT, 0, 4),
        (key::DESCRIBE_PRODUCERS, 0, 0),
        (key::DESCRIBE_TRANSACTIONS, 0, 0),
        (key::LIST_TRANSACTIONS, 0, 1),
        (key::DESCRIBE_CONFIGS, 0, 4),
        (key::ALTER_CONFIGS, 0, 2),
        (key::INCREMENTAL_ALTER_CONFIGS, 0, 1),
        (key::CREATE_PARTITIONS, 0, 3),
        (key::DELETE_GROUPS, 0, 2),
        (key::ELECT_LEADERS, 0, 2),
        (key::OFFSET_DELETE, 0, 0),
        // Kafka 4.x adds v2 (KIP-1073, fenced brokers).
        (key::DESCRIBE_CLUSTER, 0, 1),
        (key::CONSUMER_GROUP_HEARTBEAT, 0, 0),
        (key::CONSUMER_GROUP_DESCRIBE, 0, 0),
    ];

    /// The documented exceptions: versions Kafka 3.9 advertised that need the message
    /// formats 0/1, as (api, lowest version advertised, lowest served).
    const MESSAGE_FORMAT_0_1: &[(i16, i16, i16)] = &[
        // Produce v0-2 carry message sets v0/v1: advertised (librdkafka reads the
        // floor), answered UNSUPPORTED_VERSION.
        (key::PRODUCE, 0, 3),
        // Fetch v0-3 answers must be down-converted to v0/v1: not advertised.
        (key::FETCH, 4, 4),
    ];

    /// Versions Kafka 3.9 in KRaft mode advertised but answered UNSUPPORTED_VERSION:
    /// ZooKeeper-stored offsets (KafkaApis: commitOffsetsToZookeeper,
    /// handleOffsetFetchRequestFromZookeeper), as (api, lowest served).
    const ZOOKEEPER_ONLY: &[(i16, i16)] = &[(key::OFFSET_COMMIT, 1), (key::OFFSET_FETCH, 1)];

    /// Versions Kafka 3.9 served that ringlog does not yet, as (api, lowest served):
    /// DescribeConfigs v0 (answers `is_default`, not a source; Kafka 4.0 dropped it).
    /// WriteTxnMarkers v0 (broker to broker; Kafka 4.0 dropped it).
    const NOT_BUILT: &[(i16, i16)] = &[(key::DESCRIBE_CONFIGS, 1), (key::WRITE_TXN_MARKERS, 1)];

    #[test]
    fn floors_are_kafka_3_9s_but_for_the_documented_exceptions() {
        assert_eq!(KAFKA_3_9.len(), SUPPORTED_APIS.len());
        for &(api, min, max) in KAFKA_3_9 {
            let spec = find(api).expect("every 3.9 api of the table is supported");
            let not_built = NOT_BUILT.iter().find(|e| e.0 == api);
            let (advertised, served) = match MESSAGE_FORMAT_0_1.iter().find(|e| e.0 == api) {
                Some(&(_, advertised, served)) => (advertised, served),
                None if not_built.is_some() => (not_built.unwrap().1, not_built.unwrap().1),
                None => (
                    min,
                    ZOOKEEPER_ONLY
                        .iter()
                        .find(|e| e.0 == api)
                        .map_or(min, |e| e.1),
                ),
            };
            assert_eq!(
                spec.version_min, advertised,
                "{} advertised floor",
                spec.name
            );
            assert_eq!(
                spec.version_served_min, served,
                "{} served floor",
                spec.name
            );
            assert!(
                spec.version_max >= max,
                "{} below Kafka 3.9's max",
                spec.name
            );
        }
    }

    #[test]
    fn keys_are_unique() {
        let mut keys: Vec<i16> = SUPPORTED_APIS.iter().map(|s| s.key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), SUPPORTED_APIS.len());
    }
}
