//! Request versions Kafka 3.9 served that the schema crate no longer carries: it is
//! generated from Kafka 4.x's schemas, from which KIP-896 removed them (ListOffsets
//! v0, OffsetCommit v0–1, OffsetFetch v0, CreateTopics v0–1, DeleteTopics v0). Old
//! clients still send them (Sarama, kafka-python with an old `api_version`).
//!
//! Most have the layout of a version the crate still has, request or response, but
//! for a leading `throttle_time_ms` that the later version added; those are decoded
//! and encoded by the crate at that version (`same_request_layout`,
//! `same_response_layout`). The rest are read and written here, from Kafka 3.9's
//! message schemas, into and out of the crate's types wherever one fits.
//!
//! Invariants: nothing here allocates from a count read off the wire before checking
//! that the remaining bytes could hold that many items.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_response::CreateTopicsResponse;
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{BrokerId, GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::api::key;
use super::wire::WireError;

/// For an old request version whose body is laid out as a version the crate has:
/// that version, and bytes to append first (fields the old version lacks at its end,
/// with their schema defaults).
pub fn same_request_layout(api_key: i16, version: i16) -> Option<(i16, &'static [u8])> {
    match (api_key, version) {
        // v0 is v1 without the trailing validate_only (default false); v1 is v2.
        (key::CREATE_TOPICS, 0) => Some((2, &[0])),
        (key::CREATE_TOPICS, 1) => Some((2, &[])),
        (key::DELETE_TOPICS, 0) => Some((1, &[])),
        (key::OFFSET_FETCH, 0) => Some((1, &[])),
        _ => None,
    }
}

/// For an old response version laid out as a version the crate has: that version,
/// and whether the old one lacks the leading `throttle_time_ms` the newer one added.
pub fn same_response_layout(api_key: i16, version: i16) -> Option<(i16, bool)> {
    match (api_key, version) {
        (key::CREATE_TOPICS, 1) => Some((2, true)),
        (key::DELETE_TOPICS, 0) => Some((1, true)),
        (key::OFFSET_FETCH, 0) => Some((1, false)),
        // v0–v2 answer alike; throttle_time_ms came with v3.
        (key::OFFSET_COMMIT, 0..=1) => Some((2, false)),
        _ => None,
    }
}

/// Whether a version the schema crate lacks is read here (by layout or by hand).
pub fn reads(api_key: i16, version: i16) -> bool {
    same_request_layout(api_key, version).is_some()
        || matches!(
            (api_key, version),
            (key::LIST_OFFSETS, 0) | (key::OFFSET_COMMIT, 0..=1)
        )
}

/// Reads the non-flexible primitives of Kafka's schemas off a body.
struct Reader(Bytes);

impl Reader {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        if self.0.remaining() < N {
            return Err(WireError::Truncated);
        }
        let mut out = [0u8; N];
        self.0.copy_to_slice(&mut out);
        Ok(out)
    }
    fn i32(&mut self) -> Result<i32, WireError> {
        self.take::<4>().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Result<i64, WireError> {
        self.take::<8>().map(i64::from_be_bytes)
    }
    fn nullable_string(&mut self) -> Result<Option<StrBytes>, WireError> {
        let len = i16::from_be_bytes(self.take::<2>()?);
        if len < 0 {
            return Ok(None);
        }
        if self.0.remaining() < len as usize {
            return Err(WireError::Truncated);
        }
        let bytes = self.0.split_to(len as usize);
        StrBytes::from_utf8(bytes)
            .map(Some)
            .map_err(|_| WireError::InvalidLength(len as i64))
    }
    fn string(&mut self) -> Result<StrBytes, WireError> {
        self.nullable_string()?.ok_or(WireError::InvalidLength(-1))
    }
    /// An array's count, checked against what the rest of the body could hold.
    fn count(&mut self, item_size_min: usize) -> Result<usize, WireError> {
        let n = self.i32()?;
        if n < 0 || (n as usize).saturating_mul(item_size_min) > self.0.remaining() {
            return Err(WireError::InvalidLength(n as i64));
        }
        Ok(n as usize)
    }
}

fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

/// ListOffsets v0: v1's request plus, per partition, how many offsets to return.
#[derive(Debug, Default, PartialEq)]
pub struct ListOffsetsV0Request {
    pub request: ListOffsetsRequest,
    /// `max_num_offsets` of each partition, in request order.
    pub max_num_offsets: Vec<i32>,
}

/// Reads a ListOffsets v0 body: replica_id, then per topic its name and per
/// partition (index, timestamp, max_num_offsets).
pub fn decode_list_offsets_v0(body: Bytes) -> Result<ListOffsetsV0Request, WireError> {
    let mut r = Reader(body);
    let mut out = ListOffsetsV0Request::default();
    out.request.replica_id = BrokerId(r.i32()?);
    for _ in 0..r.count(6)? {
        let mut topic = ListOffsetsTopic::default();
        topic.name = TopicName(r.string()?);
        for _ in 0..r.count(16)? {
            let mut p = ListOffsetsPartition::default();
            p.partition_index = r.i32()?;
            p.timestamp = r.i64()?;
            out.max_num_offsets.push(r.i32()?);
            topic.partitions.push(p);
        }
        out.request.topics.push(topic);
    }
    Ok(out)
}

/// One partition of a ListOffsets v0 answer.
#[derive(Debug, Clone, PartialEq)]
pub struct OldStyleOffsets {
    pub partition_index: i32,
    pub error_code: i16,
    /// Offsets, newest first.
    pub offsets: Vec<i64>,
}

/// Writes a ListOffsets v0 response body: per topic its name and per partition
/// (index, error code, offsets).
pub fn encode_list_offsets_v0_response(
    topics: &[(TopicName, Vec<OldStyleOffsets>)],
    buf: &mut BytesMut,
) {
    buf.put_i32(topics.len() as i32);
    for (name, partitions) in topics {
        put_string(buf, name);
        buf.put_i32(partitions.len() as i32);
        for p in partitions {
            buf.put_i32(p.partition_index);
            buf.put_i16(p.error_code);
            buf.put_i32(p.offsets.len() as i32);
            p.offsets.iter().for_each(|o| buf.put_i64(*o));
        }
    }
}

/// OffsetCommit v0–v1, as the crate's request (v0: generation -1, no member) plus v1's
/// per-partition `commit_timestamp` (-1: the broker's time), in request order.
#[derive(Debug, Default, PartialEq)]
pub struct OffsetCommitOldRequest {
    pub request: OffsetCommitRequest,
    pub commit_timestamps: Vec<i64>,
}

/// Reads an OffsetCommit v0 or v1 body.
pub fn decode_offset_commit_old(
    body: Bytes,
    version: i16,
) -> Result<OffsetCommitOldRequest, WireError> {
    let mut r = Reader(body);
    let mut out = OffsetCommitOldRequest::default();
    out.request.group_id = GroupId(r.string()?);
    out.request.generation_id_or_member_epoch = -1;
    out.request.retention_time_ms = -1;
    if version >= 1 {
        out.request.generation_id_or_member_epoch = r.i32()?;
        out.request.member_id = r.string()?;
    }
    for _ in 0..r.count(6)? {
        let mut topic = OffsetCommitRequestTopic::default();
        topic.name = TopicName(r.string()?);
        for _ in 0..r.count(14)? {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = r.i32()?;
            p.committed_offset = r.i64()?;
            out.commit_timestamps
                .push(if version >= 1 { r.i64()? } else { -1 });
            p.committed_metadata = r.nullable_string()?;
            topic.partitions.push(p);
        }
        out.request.topics.push(topic);
    }
    Ok(out)
}

/// Writes a CreateTopics v0 response body: per topic its name and error code (v1 added
/// the message, v2 the throttle time).
pub fn encode_create_topics_v0_response(resp: &CreateTopicsResponse, buf: &mut BytesMut) {
    buf.put_i32(resp.topics.len() as i32);
    for t in &resp.topics {
        put_string(buf, &t.name);
        buf.put_i16(t.error_code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::create_topics_request::CreateTopicsRequest;
    use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
    use kafka_protocol::protocol::{Decodable, Encodable};

    // Old bodies written field by field from Kafka 3.9's schemas, as old clients do.

    fn list_offsets_v0_body() -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(-1);
        b.put_i32(2);
        put_string(&mut b, "alpha");
        b.put_i32(2);
        for (p, ts, max) in [(0, -1i64, 1), (3, -2, 5)] {
            b.put_i32(p);
            b.put_i64(ts);
            b.put_i32(max);
        }
        put_string(&mut b, "beta");
        b.put_i32(1);
        b.put_i32(1);
        b.put_i64(1_700_000_000_000);
        b.put_i32(10);
        b
    }

    #[test]
    fn list_offsets_v0_round_trips() {
        let body = list_offsets_v0_body();
        let req = decode_list_offsets_v0(body.clone().freeze()).unwrap();
        assert_eq!(req.request.replica_id, BrokerId(-1));
        assert_eq!(req.max_num_offsets, [1, 5, 10]);
        let parts: Vec<(&str, i32, i64)> = req
            .request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (&t.name.0[..], p.partition_index, p.timestamp))
            })
            .collect();
        assert_eq!(
            parts,
            [
                ("alpha", 0, -1),
                ("alpha", 3, -2),
                ("beta", 1, 1_700_000_000_000)
            ]
        );
        // Written back as v0 from what was read, the body is the same bytes.
        let mut again = BytesMut::new();
        again.put_i32(req.request.replica_id.0);
        again.put_i32(req.request.topics.len() as i32);
        let mut max = req.max_num_offsets.iter();
        for t in &req.request.topics {
            put_string(&mut again, &t.name);
            again.put_i32(t.partitions.len() as i32);
            for p in &t.partitions {
                again.put_i32(p.partition_index);
                again.put_i64(p.timestamp);
                again.put_i32(*max.next().unwrap());
            }
        }
        assert_eq!(again, body);
    }

    #[test]
    fn list_offsets_v0_response_is_laid_out_as_the_schema() {
        let mut buf = BytesMut::new();
        let partitions = vec![
            OldStyleOffsets {
                partition_index: 2,
                error_code: 0,
                offsets: vec![40, 7],
            },
            OldStyleOffsets {
                partition_index: 9,
                error_code: 3,
                offsets: vec![],
            },
        ];
        encode_list_offsets_v0_response(
            &[(TopicName(StrBytes::from_static_str("t")), partitions)],
            &mut buf,
        );
        let mut want = BytesMut::new();
        want.put_i32(1);
        put_string(&mut want, "t");
        want.put_i32(2);
        want.put_i32(2);
        want.put_i16(0);
        want.put_i32(2);
        want.put_i64(40);
        want.put_i64(7);
        want.put_i32(9);
        want.put_i16(3);
        want.put_i32(0);
        assert_eq!(buf, want);
    }

    fn offset_commit_body(version: i16) -> BytesMut {
        let mut b = BytesMut::new();
        put_string(&mut b, "group-1");
        if version >= 1 {
            b.put_i32(4);
            put_string(&mut b, "member-a");
        }
        b.put_i32(1);
        put_string(&mut b, "t");
        b.put_i32(2);
        for (p, offset, ts, meta) in [(0, 10i64, 1234i64, Some("m")), (1, 20, -1, None)] {
            b.put_i32(p);
            b.put_i64(offset);
            if version >= 1 {
                b.put_i64(ts);
            }
            match meta {
                Some(m) => put_string(&mut b, m),
                None => b.put_i16(-1),
            }
        }
        b
    }

    #[test]
    fn offset_commit_v0_and_v1_decode_into_the_crate_request() {
        for version in [0, 1] {
            let req =
                decode_offset_commit_old(offset_commit_body(version).freeze(), version).unwrap();
            let r = &req.request;
            assert_eq!(&r.group_id.0[..], "group-1");
            let (generation, member) = if version == 0 {
                (-1, "")
            } else {
                (4, "member-a")
            };
            assert_eq!(r.generation_id_or_member_epoch, generation);
            assert_eq!(&r.member_id[..], member);
            let p = &r.topics[0].partitions;
            assert_eq!((p[0].partition_index, p[0].committed_offset), (0, 10));
            assert_eq!(p[0].committed_metadata.as_deref(), Some("m"));
            assert_eq!((p[1].partition_index, p[1].committed_offset), (1, 20));
            assert_eq!(p[1].committed_metadata, None);
            let ts = if version == 0 { [-1, -1] } else { [1234, -1] };
            assert_eq!(req.commit_timestamps, ts);
            // The crate's v2 encoding carries the same commit, less v1's timestamps.
            let mut v2 = BytesMut::new();
            r.encode(&mut v2, 2).unwrap();
            let back = OffsetCommitRequest::decode(&mut v2.freeze(), 2).unwrap();
            assert_eq!(back.topics, r.topics);
        }
    }

    #[test]
    fn truncated_or_lying_bodies_are_errors_not_allocations() {
        let list = list_offsets_v0_body().freeze();
        let commit = offset_commit_body(1).freeze();
        for cut in 0..list.len() {
            assert!(
                decode_list_offsets_v0(list.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        for cut in 0..commit.len() {
            assert!(
                decode_offset_commit_old(commit.slice(..cut), 1).is_err(),
                "cut at {cut}"
            );
        }
        let mut lying = BytesMut::new();
        lying.put_i32(-1);
        lying.put_i32(i32::MAX);
        assert_eq!(
            decode_list_offsets_v0(lying.freeze()),
            Err(WireError::InvalidLength(i32::MAX as i64))
        );
    }

    #[test]
    fn create_topics_v0_and_v1_read_as_v2() {
        let mut v1 = BytesMut::new();
        v1.put_i32(1);
        put_string(&mut v1, "new");
        v1.put_i32(3);
        v1.put_i16(1);
        v1.put_i32(0); // no assignments
        v1.put_i32(1);
        put_string(&mut v1, "retention.ms");
        put_string(&mut v1, "1000");
        v1.put_i32(30_000);
        let v0 = v1.clone();
        v1.put_u8(1); // validate_only
        for (version, body, validate_only) in [(0, v0, false), (1, v1, true)] {
            let (as_version, tail) = same_request_layout(key::CREATE_TOPICS, version).unwrap();
            let mut b = body;
            b.extend_from_slice(tail);
            let req = CreateTopicsRequest::decode(&mut b.freeze(), as_version).unwrap();
            assert_eq!(&req.topics[0].name.0[..], "new");
            assert_eq!(req.topics[0].num_partitions, 3);
            assert_eq!(&req.topics[0].configs[0].name[..], "retention.ms");
            assert_eq!(req.timeout_ms, 30_000);
            assert_eq!(req.validate_only, validate_only, "v{version}");
        }
    }

    #[test]
    fn create_topics_v0_response_has_names_and_codes_only() {
        let mut resp = CreateTopicsResponse::default();
        for (name, code) in [("a", 0i16), ("b", 36)] {
            let mut t = CreatableTopicResult::default();
            t.name = TopicName(StrBytes::from_static_str(name));
            t.error_code = code;
            t.error_message = Some(StrBytes::from_static_str("why"));
            resp.topics.push(t);
        }
        let mut v0 = BytesMut::new();
        encode_create_topics_v0_response(&resp, &mut v0);
        let mut want = BytesMut::new();
        want.put_i32(2);
        put_string(&mut want, "a");
        want.put_i16(0);
        put_string(&mut want, "b");
        want.put_i16(36);
        assert_eq!(v0, want);
        // v1 is v2 without the leading throttle time.
        let (v, drop_throttle) = same_response_layout(key::CREATE_TOPICS, 1).unwrap();
        assert!(drop_throttle);
        let mut v2 = BytesMut::new();
        resp.encode(&mut v2, v).unwrap();
        let mut v1 = BytesMut::new();
        v1.put_i32(2);
        for name in ["a", "b"] {
            put_string(&mut v1, name);
            v1.put_i16(if name == "a" { 0 } else { 36 });
            put_string(&mut v1, "why");
        }
        assert_eq!(&v2[4..], &v1[..]);
    }

    #[test]
    fn delete_topics_v0_reads_as_v1() {
        let mut b = BytesMut::new();
        b.put_i32(2);
        put_string(&mut b, "x");
        put_string(&mut b, "y");
        b.put_i32(5000);
        let (v, tail) = same_request_layout(key::DELETE_TOPICS, 0).unwrap();
        assert!(tail.is_empty());
        let req = DeleteTopicsRequest::decode(&mut b.freeze(), v).unwrap();
        let names: Vec<&str> = req.topic_names.iter().map(|n| &n.0[..]).collect();
        assert_eq!(names, ["x", "y"]);
        assert_eq!(req.timeout_ms, 5000);
    }
}
