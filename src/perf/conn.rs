//! A blocking Kafka client connection for the load generator: std sockets, one
//! thread per direction when pipelining, requests encoded with `kafka-protocol`.
//! Versions are negotiated with ApiVersions v0 (which every broker answers), so the
//! same workloads run against any Kafka-compatible endpoint.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    delete_topics_request::DeleteTopicState,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::protocol::error::ErrorCode;

pub const CLIENT_ID: &str = "ringlog-perf";
/// Largest response frame accepted (a fetch is bounded by its max_bytes, 55 MiB at most).
const RESPONSE_SIZE_MAX: usize = 256 << 20;

pub fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Kafka's name for an error code, for messages.
pub fn error_name(code: i16) -> String {
    use kafka_protocol::error::ParseResponseErrorCode;
    match code.err() {
        Some(e) => format!("{e:?}"),
        None => "NONE".into(),
    }
}

pub struct Conn {
    pub stream: TcpStream,
    versions: HashMap<i16, (i16, i16)>,
    next_correlation: i32,
    read_buf: BytesMut,
}

impl Conn {
    pub fn connect(bootstrap: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(bootstrap)?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            versions: HashMap::new(),
            next_correlation: 1,
            read_buf: BytesMut::new(),
        };
        let resp: ApiVersionsResponse =
            conn.call_at(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?;
        if resp.error_code != 0 {
            return Err(other(format!(
                "ApiVersions: {}",
                error_name(resp.error_code)
            )));
        }
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The highest version both sides speak, at most `ours_max` and at least
    /// `ours_min`.
    pub fn version(&self, key: ApiKey, ours_min: i16, ours_max: i16) -> io::Result<i16> {
        let (min, max) = self
            .versions
            .get(&(key as i16))
            .copied()
            .ok_or_else(|| other(format!("the broker does not offer {key:?}")))?;
        let v = max.min(ours_max);
        if v < min.max(ours_min) {
            return Err(other(format!(
                "no common version of {key:?} (broker {min}-{max}, ours {ours_min}-{ours_max})"
            )));
        }
        Ok(v)
    }

    pub fn next_correlation(&mut self) -> i32 {
        self.next_correlation = self.next_correlation.wrapping_add(1);
        self.next_correlation
    }

    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        ours: (i16, i16),
        request: &Req,
    ) -> io::Result<Resp> {
        let version = self.version(key, ours.0, ours.1)?;
        self.call_at(key, version, request)
    }

    fn call_at<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> io::Result<Resp> {
        let correlation = self.next_correlation();
        let frame = encode_request(key, version, correlation, request)?;
        self.stream.write_all(&frame)?;
        let mut body = read_frame(&mut self.stream, &mut self.read_buf)?;
        decode_response(key, version, correlation, &mut body)
    }
}

/// A whole request frame: size, header, body.
pub fn encode_request<Req: Encodable>(
    key: ApiKey,
    version: i16,
    correlation: i32,
    request: &Req,
) -> io::Result<Vec<u8>> {
    // Sized once: a produce request carries up to a megabyte of batches.
    let body_size = request.compute_size(version).unwrap_or(0);
    let mut buf = BytesMut::with_capacity(256 + body_size);
    buf.put_i32(0);
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    header
        .encode(&mut buf, key.request_header_version(version))
        .and_then(|_| request.encode(&mut buf, version))
        .map_err(|e| other(format!("encoding {key:?} v{version}: {e}")))?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(Vec::from(buf))
}

/// Puts a new correlation id into an encoded request frame.
pub fn set_correlation(frame: &mut [u8], correlation: i32) {
    frame[8..12].copy_from_slice(&correlation.to_be_bytes());
}

/// Reads one response frame (without its size) into `buf`'s storage, which is reused
/// once the previous frame's `Bytes` are dropped.
pub fn read_frame(stream: &mut impl Read, buf: &mut BytesMut) -> io::Result<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if size < 4 || size as usize > RESPONSE_SIZE_MAX {
        return Err(other(format!("bad response size {size}")));
    }
    let size = size as usize;
    buf.clear();
    // Zero-filled first: read_exact takes an initialized slice.
    buf.resize(size, 0);
    if let Err(e) = stream.read_exact(&mut buf[..]) {
        buf.clear();
        return Err(e);
    }
    Ok(buf.split().freeze())
}

/// Checks the response header and decodes the body.
pub fn decode_response<Resp: Decodable>(
    key: ApiKey,
    version: i16,
    correlation: i32,
    body: &mut Bytes,
) -> io::Result<Resp> {
    let header = ResponseHeader::decode(body, key.response_header_version(version))
        .map_err(|e| other(format!("{key:?} response header: {e}")))?;
    if header.correlation_id != correlation {
        return Err(other(format!(
            "{key:?}: correlation id {} where {correlation} was expected",
            header.correlation_id
        )));
    }
    Resp::decode(body, version).map_err(|e| other(format!("{key:?} v{version} response: {e}")))
}

/// Creates a topic (an existing one is fine) and waits until every partition has a
/// leader.
pub fn create_topic(
    conn: &mut Conn,
    topic: &str,
    partitions: i32,
    configs: &[(String, String)],
) -> io::Result<()> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            )]);
    let resp: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, (2, 7), &request)?;
    for t in &resp.topics {
        if t.error_code != 0 && t.error_code != ErrorCode::TopicAlreadyExists as i16 {
            return Err(other(format!(
                "CreateTopics {topic}: {} {}",
                error_name(t.error_code),
                t.error_message.as_deref().unwrap_or("")
            )));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leaders = partition_leaders(conn, topic)?;
        if leaders.len() == partitions as usize && leaders.iter().all(|&l| l >= 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(other(format!(
                "{topic}: partitions have no leader after 30 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each partition's leader id, in partition order.
pub fn partition_leaders(conn: &mut Conn, topic: &str) -> io::Result<Vec<i32>> {
    let request =
        MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    let resp: MetadataResponse = conn.call(ApiKey::Metadata, (1, 12), &request)?;
    let Some(t) = resp.topics.first() else {
        return Ok(Vec::new());
    };
    if t.error_code != 0 {
        return Ok(Vec::new());
    }
    let mut parts: Vec<(i32, i32)> = t
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                if p.error_code == 0 { p.leader_id.0 } else { -1 },
            )
        })
        .collect();
    parts.sort_unstable();
    Ok(parts.into_iter().map(|(_, l)| l).collect())
}

pub fn delete_topic(conn: &mut Conn, topic: &str) -> io::Result<()> {
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topic_names(vec![name.clone()])
        .with_topics(vec![DeleteTopicState::default().with_name(Some(name))]);
    let resp: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, (1, 6), &request)?;
    for r in &resp.responses {
        if r.error_code != 0 {
            return Err(other(format!(
                "DeleteTopics {topic}: {}",
                error_name(r.error_code)
            )));
        }
    }
    Ok(())
}

/// Each partition's offset for `timestamp` (-2 earliest, -1 latest).
pub fn list_offsets(
    conn: &mut Conn,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> io::Result<HashMap<i32, i64>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let resp: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, (1, 7), &request)?;
    let mut out = HashMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(other(format!(
                    "ListOffsets {topic}-{}: {}",
                    p.partition_index,
                    error_name(p.error_code)
                )));
            }
            out.insert(p.partition_index, p.offset);
        }
    }
    Ok(out)
}
