//! Kafka requests the byte-level test suites share: batches, topics, produce and
//! fetch, hand-built frames, and the check that a broker still serves.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::create_topics_response::CreateTopicsResponse;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse,
};
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::produce_response::ProduceResponse;
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;
use ringlog::protocol::batch::build::{encode, Record};

use super::{Broker, Client};

pub const PRODUCE_V: i16 = 9;
pub const FETCH_V: i16 = 12;

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn batch(n: usize, producer: Option<(i64, i16, i32)>) -> Vec<u8> {
    let recs: Vec<Record> = (0..n)
        .map(|_| Record {
            key: Some(b"k"),
            value: Some(b"value"),
            headers: &[],
            timestamp: 1_000,
        })
        .collect();
    encode(&recs, producer)
}

/// Deletes `topic` (DeleteTopics v6) and returns the topic's error code.
pub fn delete_topic(c: &mut Client, topic: &str) -> i16 {
    use kafka_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
    use kafka_protocol::messages::delete_topics_response::DeleteTopicsResponse;
    let mut req = DeleteTopicsRequest::default();
    let mut t = DeleteTopicState::default();
    t.name = Some(name(topic));
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let resp: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 6, &req);
    resp.responses[0].error_code
}

pub fn create_topic(c: &mut Client, topic: &str, partitions: i32) {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0);
}

pub fn produce_request(topic: &str, partition: i32, records: Vec<u8>, acks: i16) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(Bytes::from(records));
    let mut t = TopicProduceData::default();
    t.name = name(topic);
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 10_000;
    req.topic_data = vec![t];
    req
}

/// Produces and returns (error code, base offset).
pub fn produce(c: &mut Client, topic: &str, partition: i32, records: Vec<u8>) -> (i16, i64) {
    let resp: ProduceResponse = c.call(
        ApiKey::Produce,
        PRODUCE_V,
        &produce_request(topic, partition, records, -1),
    );
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

pub fn fetch_request(topic: &str, partitions: &[(i32, i64)], max_wait_ms: i32) -> FetchRequest {
    let mut t = FetchTopic::default();
    t.topic = name(topic);
    t.partitions = partitions
        .iter()
        .map(|&(p, offset)| {
            let mut fp = FetchPartition::default();
            fp.partition = p;
            fp.fetch_offset = offset;
            fp.partition_max_bytes = 1 << 20;
            fp
        })
        .collect();
    let mut req = FetchRequest::default();
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = 50 << 20;
    req.session_epoch = -1;
    req.topics = vec![t];
    req
}

/// A request frame built by hand (v1 header, null client id), for requests the schema
/// crate cannot or should not encode: unknown versions, APIs we do not serve.
pub fn raw_request(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> BytesMut {
    let mut req = BytesMut::new();
    req.put_i32((10 + body.len()) as i32);
    req.put_i16(api_key);
    req.put_i16(version);
    req.put_i32(correlation_id);
    req.put_i16(-1);
    req.put_slice(body);
    req
}

/// Metadata for `topic` by name (v`version`), with `allow_auto_topic_creation`.
pub fn metadata_for(c: &mut Client, topic: &str, version: i16, allow: bool) -> MetadataResponse {
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![{
        let mut t = MetadataRequestTopic::default();
        t.name = Some(name(topic));
        t
    }]);
    req.allow_auto_topic_creation = allow;
    c.call(ApiKey::Metadata, version, &req)
}

pub fn assert_serving(b: &Broker) {
    let mut c = b.connect();
    let resp: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(resp.error_code, 0);
    // As a producer does: Metadata that allows auto-creation, then Produce.
    metadata_for(&mut c, "still-serving", 12, true);
    let (code, _) = produce(&mut c, "still-serving", 0, batch(2, None));
    assert_eq!(code, 0);
    let resp: FetchResponse = c.call(
        ApiKey::Fetch,
        FETCH_V,
        &fetch_request("still-serving", &[(0, 0)], 0),
    );
    assert!(resp.responses[0].partitions[0]
        .records
        .as_ref()
        .is_some_and(|r| !r.is_empty()));
}

pub fn create_topic_with(c: &mut Client, topic: &str, configs: &[(&'static str, &'static str)]) {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = 1;
    t.replication_factor = 1;
    t.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut cfg =
                kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default();
            cfg.name = StrBytes::from_static_str(k);
            cfg.value = Some(StrBytes::from_static_str(v));
            cfg
        })
        .collect();
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0);
}

/// ListOffsets v7 for one partition at `timestamp` (-1 latest, -2 earliest, else by
/// time); the partition's answer, whatever its error code.
pub fn list_offsets(
    c: &mut Client,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> ListOffsetsPartitionResponse {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = timestamp;
    let mut t = ListOffsetsTopic::default();
    t.name = name(topic);
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.topics = vec![t];
    let mut resp: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
    resp.topics.remove(0).partitions.remove(0)
}

/// The partition's latest offset (ListOffsets v7, -1), which must have no error.
pub fn latest_offset(c: &mut Client, topic: &str, partition: i32) -> i64 {
    let p = list_offsets(c, topic, partition, -1);
    assert_eq!(p.error_code, 0);
    p.offset
}
