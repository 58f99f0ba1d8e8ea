//! The Fetch response writer (v4–v17). Record data is never copied into the response:
//! the writer emits a list of chunks in which encoded header fields alternate with the
//! records' own chunks (bytes in memory or file ranges, see `chunk`), which the
//! connection writes out as they are.

use bytes::{BufMut, BytesMut};

use super::chunk::Chunk;

use super::error::ErrorCode;
use super::wire::put_unsigned_varint;

pub const FETCH_FLEXIBLE_FROM: i16 = 12;
pub const FETCH_TOPIC_IDS_FROM: i16 = 13;
/// KIP-951: a partition's current leader and the leaders' endpoints, on
/// NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH (as Kafka sends them).
pub const FETCH_LEADER_HINTS_FROM: i16 = 16;

/// Who leads a partition now (KIP-951's CurrentLeader; -1 when unknown).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaderHint {
    pub leader_id: i32,
    pub leader_epoch: i32,
}

/// Where to reach a leader named in a hint (KIP-951's NodeEndpoints).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FetchPartitionData {
    pub partition: i32,
    pub error: ErrorCode,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// For read_committed: the aborted transactions overlapping the records, as
    /// (producer id, first offset); `None` (sent as null) for read_uncommitted.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    /// Whole batches, as stored, in one or more contiguous pieces. Empty when there is
    /// nothing to return (sent as an empty record set).
    pub records: Vec<Chunk>,
    /// Sent from v12 (a tagged field) when set; callers set it from v16, as Kafka.
    pub current_leader: Option<LeaderHint>,
    /// For a follower whose log diverges (KIP-320): the epoch and where it ends
    /// here. Sent from v12 (a tagged field) when set.
    pub diverging_epoch: Option<(i32, i64)>,
}

#[derive(Debug, Clone)]
pub struct FetchTopicData {
    pub name: String,
    pub topic_id: uuid::Uuid,
    pub partitions: Vec<FetchPartitionData>,
}

/// A response frame as a list of chunks; the first holds the 4-byte size.
pub struct Chunks {
    parts: Vec<Chunk>,
    current: BytesMut,
}

impl Chunks {
    fn new() -> Self {
        let mut current = BytesMut::with_capacity(256);
        current.put_i32(0); // patched in finish()
        Chunks {
            parts: Vec::new(),
            current,
        }
    }
    fn push_chunk(&mut self, chunk: Chunk) {
        if let Chunk::Bytes(bytes) = &chunk {
            if bytes.len() < 512 {
                self.current.put_slice(bytes);
                return;
            }
        }
        let done = std::mem::replace(&mut self.current, BytesMut::with_capacity(128));
        self.parts.push(Chunk::Bytes(done.freeze()));
        self.parts.push(chunk);
    }
    fn finish(mut self) -> Vec<Chunk> {
        if !self.current.is_empty() {
            self.parts.push(Chunk::Bytes(self.current.freeze()));
        }
        let total: usize = self.parts.iter().map(Chunk::len).sum();
        if let Some(Chunk::Bytes(head)) = self.parts.first() {
            let mut first = BytesMut::from(&head[..]);
            first[0..4].copy_from_slice(&((total - 4) as i32).to_be_bytes());
            self.parts[0] = Chunk::Bytes(first.freeze());
        }
        self.parts
    }
}

fn put_array_len(b: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_unsigned_varint(b, len as u32 + 1);
    } else {
        b.put_i32(len as i32);
    }
}

fn put_compact_str(b: &mut BytesMut, s: &str) {
    put_unsigned_varint(b, s.len() as u32 + 1);
    b.put_slice(s.as_bytes());
}

/// `node_endpoints` are sent from v16 (a tagged field), when there are any.
pub fn write_fetch_response(
    correlation_id: i32,
    version: i16,
    error: ErrorCode,
    session_id: i32,
    topics: Vec<FetchTopicData>,
    node_endpoints: &[NodeEndpoint],
) -> Vec<Chunk> {
    let flexible = version >= FETCH_FLEXIBLE_FROM;
    let mut out = Chunks::new();
    let b = &mut out.current;
    b.put_i32(correlation_id);
    if flexible {
        b.put_u8(0); // response header tagged fields
    }
    b.put_i32(0); // throttle_time_ms
    if version >= 7 {
        b.put_i16(error.code());
        b.put_i32(session_id);
    }
    put_array_len(b, flexible, topics.len());
    for topic in topics {
        let b = &mut out.current;
        if version >= FETCH_TOPIC_IDS_FROM {
            b.put_slice(topic.topic_id.as_bytes());
        } else if flexible {
            put_unsigned_varint(b, topic.name.len() as u32 + 1);
            b.put_slice(topic.name.as_bytes());
        } else {
            b.put_i16(topic.name.len() as i16);
            b.put_slice(topic.name.as_bytes());
        }
        put_array_len(b, flexible, topic.partitions.len());
        for p in topic.partitions {
            let b = &mut out.current;
            b.put_i32(p.partition);
            b.put_i16(p.error.code());
            b.put_i64(p.high_watermark);
            b.put_i64(p.last_stable_offset);
            if version >= 5 {
                b.put_i64(p.log_start_offset);
            }
            match &p.aborted_transactions {
                None if flexible => b.put_u8(0),
                None => b.put_i32(-1),
                Some(aborted) => {
                    if flexible {
                        put_unsigned_varint(b, aborted.len() as u32 + 1);
                    } else {
                        b.put_i32(aborted.len() as i32);
                    }
                    for &(producer_id, first_offset) in aborted {
                        b.put_i64(producer_id);
                        b.put_i64(first_offset);
                        if flexible {
                            b.put_u8(0); // tagged fields
                        }
                    }
                }
            }
            if version >= 11 {
                b.put_i32(-1); // preferred_read_replica
            }
            // No data is an empty record set, never null: Kafka sends it that way and
            // librdkafka rejects a null one.
            let len: usize = p.records.iter().map(Chunk::len).sum();
            if flexible {
                put_unsigned_varint(b, len as u32 + 1);
            } else {
                b.put_i32(len as i32);
            }
            for piece in p.records {
                out.push_chunk(piece);
            }
            if flexible {
                let b = &mut out.current;
                let tags = p.diverging_epoch.is_some() as u8 + p.current_leader.is_some() as u8;
                b.put_u8(tags);
                // Tagged fields in tag order: DivergingEpoch (0), CurrentLeader (1).
                if let Some((epoch, end_offset)) = p.diverging_epoch {
                    b.put_u8(0);
                    b.put_u8(13); // its size: int32, int64 and its own empty tags
                    b.put_i32(epoch);
                    b.put_i64(end_offset);
                    b.put_u8(0);
                }
                if let Some(hint) = p.current_leader {
                    b.put_u8(1);
                    b.put_u8(9); // its size: two int32s and its own empty tags
                    b.put_i32(hint.leader_id);
                    b.put_i32(hint.leader_epoch);
                    b.put_u8(0);
                }
            }
        }
        if flexible {
            out.current.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        let b = &mut out.current;
        if version >= FETCH_LEADER_HINTS_FROM && !node_endpoints.is_empty() {
            let mut field = BytesMut::new();
            put_array_len(&mut field, true, node_endpoints.len());
            for e in node_endpoints {
                field.put_i32(e.node_id);
                put_compact_str(&mut field, &e.host);
                field.put_i32(e.port);
                match &e.rack {
                    Some(rack) => put_compact_str(&mut field, rack),
                    None => field.put_u8(0),
                }
                field.put_u8(0);
            }
            b.put_u8(1); // one tagged field: NodeEndpoints, tag 0
            b.put_u8(0);
            put_unsigned_varint(b, field.len() as u32);
            b.put_slice(&field);
        } else {
            b.put_u8(0); // top-level tagged fields
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    use crate::protocol::chunk::FileRange;
    use bytes::Bytes;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    /// The frame as the connection would send it (file ranges read back).
    fn concat(parts: &[Chunk]) -> Bytes {
        let mut b = BytesMut::new();
        for p in parts {
            match p {
                Chunk::Bytes(bytes) => b.put_slice(bytes),
                Chunk::File(r) => {
                    let mut buf = vec![0u8; r.len];
                    r.file.read_exact_at(&mut buf, r.offset).unwrap();
                    b.put_slice(&buf);
                }
            }
        }
        b.freeze()
    }

    /// A file holding `content` at offset 100, as a range.
    fn file_range(content: &[u8]) -> FileRange {
        let path = std::env::temp_dir().join(format!("fetch-writer-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all_at(content, 100).unwrap();
        std::fs::remove_file(&path).unwrap();
        FileRange {
            file: Arc::new(file),
            offset: 100,
            len: content.len(),
        }
    }

    /// The schema crate (generated from Kafka's JSON) decodes what we write, at every
    /// version we serve, and the record bytes arrive untouched.
    #[test]
    fn every_version_decodes_with_the_reference_schema() {
        let records = Bytes::from(vec![0xabu8; 2000]);
        let small = Bytes::from_static(b"tiny-records");
        let in_file = Bytes::from(vec![0x5au8; 3000]);
        let range = file_range(&in_file);
        let id = uuid::Uuid::from_u128(0x1234);
        for version in 4..=17i16 {
            let topics = vec![FetchTopicData {
                name: "orders".into(),
                topic_id: id,
                partitions: vec![
                    FetchPartitionData {
                        partition: 0,
                        error: ErrorCode::None,
                        high_watermark: 10,
                        last_stable_offset: 10,
                        log_start_offset: 0,
                        aborted_transactions: Some(vec![(7, 3), (9, 5)]),
                        records: vec![records.clone().into()],
                        current_leader: None,
                        diverging_epoch: None,
                    },
                    FetchPartitionData {
                        partition: 1,
                        error: ErrorCode::NotLeaderOrFollower,
                        high_watermark: 5,
                        last_stable_offset: 5,
                        log_start_offset: 0,
                        aborted_transactions: None,
                        records: Vec::new(),
                        current_leader: Some(LeaderHint {
                            leader_id: 2,
                            leader_epoch: 7,
                        }),
                        diverging_epoch: Some((4, 1234)),
                    },
                    FetchPartitionData {
                        partition: 2,
                        error: ErrorCode::None,
                        high_watermark: 1,
                        last_stable_offset: 1,
                        log_start_offset: 0,
                        aborted_transactions: None,
                        records: vec![small.slice(..4).into(), small.slice(4..).into()],
                        current_leader: None,
                        diverging_epoch: None,
                    },
                    FetchPartitionData {
                        partition: 3,
                        error: ErrorCode::None,
                        high_watermark: 1,
                        last_stable_offset: 1,
                        log_start_offset: 0,
                        aborted_transactions: None,
                        records: vec![Chunk::File(range.clone())],
                        current_leader: None,
                        diverging_epoch: None,
                    },
                ],
            }];
            let endpoints = [
                NodeEndpoint {
                    node_id: 2,
                    host: "broker-2".into(),
                    port: 9094,
                    rack: Some("east".into()),
                },
                NodeEndpoint {
                    node_id: 3,
                    host: "b3".into(),
                    port: 9095,
                    rack: None,
                },
            ];
            let parts = write_fetch_response(77, version, ErrorCode::None, 0, topics, &endpoints);
            let mut frame = concat(&parts);
            let size = i32::from_be_bytes(frame[..4].try_into().unwrap());
            assert_eq!(size as usize, frame.len() - 4);
            let _ = frame.split_to(4);
            let header_version = if version >= 12 { 1 } else { 0 };
            let header = ResponseHeader::decode(&mut frame, header_version).unwrap();
            assert_eq!(header.correlation_id, 77);
            let resp = FetchResponse::decode(&mut frame, version).unwrap();
            assert!(frame.is_empty(), "v{version}: trailing bytes");
            let t = &resp.responses[0];
            if version >= 13 {
                assert_eq!(t.topic_id, id);
            } else {
                assert_eq!(t.topic.0.as_str(), "orders");
            }
            assert_eq!(t.partitions[0].records.as_ref(), Some(&records));
            let aborted: Vec<(i64, i64)> = t.partitions[0]
                .aborted_transactions
                .as_ref()
                .expect("a list")
                .iter()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect();
            assert_eq!(aborted, vec![(7, 3), (9, 5)]);
            assert!(t.partitions[1].aborted_transactions.is_none());
            assert_eq!(t.partitions[1].error_code, 6);
            if version >= 12 {
                let hint = &t.partitions[1].current_leader;
                assert_eq!((hint.leader_id.0, hint.leader_epoch), (2, 7));
                let diverging = &t.partitions[1].diverging_epoch;
                assert_eq!((diverging.epoch, diverging.end_offset), (4, 1234));
                assert_eq!(t.partitions[0].current_leader, Default::default());
            }
            let sent: Vec<_> = resp
                .node_endpoints
                .iter()
                .map(|e| {
                    let rack = e.rack.as_ref().map(|r| r.to_string());
                    (e.node_id.0, e.host.to_string(), e.port, rack)
                })
                .collect();
            if version >= 16 {
                assert_eq!(
                    sent,
                    vec![
                        (2, "broker-2".into(), 9094, Some("east".into())),
                        (3, "b3".into(), 9095, None)
                    ]
                );
            } else {
                assert!(sent.is_empty());
            }
            assert_eq!(t.partitions[1].records, Some(Bytes::new()));
            assert_eq!(t.partitions[2].records.as_ref(), Some(&small));
            assert_eq!(t.partitions[3].records.as_ref(), Some(&in_file));
            assert_eq!(t.partitions[0].high_watermark, 10);
        }
    }

    #[test]
    fn large_record_chunks_are_not_copied() {
        let records = Bytes::from(vec![1u8; 4096]);
        let topics = vec![FetchTopicData {
            name: "t".into(),
            topic_id: uuid::Uuid::nil(),
            partitions: vec![FetchPartitionData {
                partition: 0,
                error: ErrorCode::None,
                high_watermark: 1,
                last_stable_offset: 1,
                log_start_offset: 0,
                aborted_transactions: None,
                records: vec![records.clone().into()],
                current_leader: None,
                diverging_epoch: None,
            }],
        }];
        let parts = write_fetch_response(1, 11, ErrorCode::None, 0, topics, &[]);
        assert!(
            parts
                .iter()
                .any(|p| matches!(p, Chunk::Bytes(b) if b.as_ptr() == records.as_ptr())),
            "record bytes were copied"
        );
    }
}
