//! The one table of supported APIs and versions. ApiVersions answers from it, dispatch
//! checks requests against it, and the tests read it.
//!
//! Version floors follow Kafka 4.0 (KIP-896); maxima are what Kafka 3.9 serves. Produce
//! is advertised from v0 because librdkafka relies on that, but v0–2 are answered with
//! UNSUPPORTED_VERSION, as Kafka 4.0 does.

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
    pub const INIT_PRODUCER_ID: i16 = 22;
    pub const DELETE_GROUPS: i16 = 42;
    pub const OFFSET_DELETE: i16 = 47;
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
    spec(key::LIST_OFFSETS, "ListOffsets", 1, 9, 6),
    spec(key::METADATA, "Metadata", 0, 12, 9),
    spec(key::OFFSET_COMMIT, "OffsetCommit", 2, 9, 8),
    spec(key::OFFSET_FETCH, "OffsetFetch", 1, 9, 6),
    spec(key::FIND_COORDINATOR, "FindCoordinator", 0, 6, 3),
    spec(key::JOIN_GROUP, "JoinGroup", 2, 9, 6),
    spec(key::HEARTBEAT, "Heartbeat", 0, 4, 4),
    spec(key::LEAVE_GROUP, "LeaveGroup", 0, 5, 4),
    spec(key::SYNC_GROUP, "SyncGroup", 0, 5, 4),
    spec(key::DESCRIBE_GROUPS, "DescribeGroups", 0, 5, 5),
    spec(key::LIST_GROUPS, "ListGroups", 0, 5, 3),
    spec(key::API_VERSIONS, "ApiVersions", 0, 4, 3),
    spec(key::CREATE_TOPICS, "CreateTopics", 2, 7, 5),
    spec(key::DELETE_TOPICS, "DeleteTopics", 1, 6, 4),
    spec(key::DELETE_RECORDS, "DeleteRecords", 0, 2, 2),
    spec(key::INIT_PRODUCER_ID, "InitProducerId", 0, 5, 2),
    spec(key::DELETE_GROUPS, "DeleteGroups", 0, 2, 2),
    spec(key::OFFSET_DELETE, "OffsetDelete", 0, 0, 99),
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
                spec.version_served_min >= schema.min,
                "{} floor below schema",
                spec.name
            );
            assert!(
                spec.version_max <= schema.max,
                "{} max above schema",
                spec.name
            );
            assert!(spec.version_min <= spec.version_served_min);
            // The schema crate agrees on which versions use the flexible header.
            for v in spec.version_served_min..=spec.version_max {
                assert_eq!(
                    api.request_header_version(v) == 2,
                    spec.is_flexible(v),
                    "{} v{v} flexibility",
                    spec.name
                );
            }
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
