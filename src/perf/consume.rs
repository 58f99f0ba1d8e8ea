//! The consuming side of the load generator: one connection per consumer, one fetch
//! in flight (as a Kafka consumer has per broker), records counted by walking batch
//! headers, never copied out of the response buffer.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::{
    fetch_request::{FetchPartition, FetchTopic},
    ApiKey, FetchRequest, FetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::conn::{self, error_name, Conn};
use crate::protocol::batch::{BatchHeader, HEADER_SIZE};
use crate::protocol::error::ErrorCode;

#[derive(Clone)]
pub struct FetchSpec {
    pub partition_max_bytes: i32,
    pub max_bytes: i32,
    pub max_wait: Duration,
    pub min_bytes: i32,
    /// 0: READ_UNCOMMITTED, 1: READ_COMMITTED.
    pub isolation_level: i8,
}

pub struct Consumer {
    conn: Conn,
    version: i16,
    topic: String,
    /// Next offset to fetch, per partition.
    pub offsets: HashMap<i32, i64>,
    spec: FetchSpec,
    buf: BytesMut,
}

/// What one fetch brought.
#[derive(Default, Clone, Copy)]
pub struct Fetched {
    pub records: u64,
    pub bytes: u64,
}

impl Consumer {
    /// A consumer of `partitions`, starting at `start` (-2 earliest, -1 latest).
    pub fn new(
        bootstrap: &str,
        topic: &str,
        partitions: &[i32],
        start: i64,
        spec: FetchSpec,
    ) -> io::Result<Consumer> {
        let mut conn = Conn::connect(bootstrap)?;
        // v11, as librdkafka: the last version before tagged fields, which some brokers
        // send where the schema has none (Tansu 0.6 puts tag 0 into v12 responses).
        let version = conn.version(ApiKey::Fetch, 4, 11)?;
        let offsets = conn::list_offsets(&mut conn, topic, partitions, start)?;
        Ok(Consumer {
            conn,
            version,
            topic: topic.to_string(),
            offsets,
            spec,
            buf: BytesMut::new(),
        })
    }

    /// One fetch; `on_batch` sees every whole batch returned.
    pub fn fetch(&mut self, mut on_batch: impl FnMut(&[u8])) -> io::Result<Fetched> {
        let mut partitions: Vec<(i32, i64)> = self.offsets.iter().map(|(&p, &o)| (p, o)).collect();
        partitions.sort_unstable();
        let request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(self.spec.max_wait.as_millis() as i32)
            .with_min_bytes(self.spec.min_bytes)
            .with_max_bytes(self.spec.max_bytes)
            .with_isolation_level(self.spec.isolation_level)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(self.topic.clone())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&(p, offset)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(self.spec.partition_max_bytes)
                        })
                        .collect(),
                )]);
        let correlation = self.conn.next_correlation();
        let frame = conn::encode_request(ApiKey::Fetch, self.version, correlation, &request)?;
        self.conn.stream.write_all(&frame)?;
        let mut body = conn::read_frame(&mut self.conn.stream, &mut self.buf)?;
        let resp: FetchResponse =
            conn::decode_response(ApiKey::Fetch, self.version, correlation, &mut body)?;
        drop(body);
        if resp.error_code != 0 {
            return Err(conn::other(format!(
                "Fetch: {}",
                error_name(resp.error_code)
            )));
        }
        let mut fetched = Fetched::default();
        for t in &resp.responses {
            for p in &t.partitions {
                if p.error_code == ErrorCode::OffsetOutOfRange as i16 {
                    let earliest =
                        conn::list_offsets(&mut self.conn, &self.topic, &[p.partition_index], -2)?;
                    self.offsets.extend(earliest);
                    continue;
                }
                if p.error_code != 0 {
                    return Err(conn::other(format!(
                        "Fetch {}-{}: {}",
                        self.topic,
                        p.partition_index,
                        error_name(p.error_code)
                    )));
                }
                let Some(records) = &p.records else { continue };
                let mut at = 0;
                let mut next = None;
                while let Some(h) = BatchHeader::new(&records[at..]) {
                    let total = h.total_size() as usize;
                    if total < HEADER_SIZE || at + total > records.len() {
                        break; // a partial batch at the end (older fetch versions)
                    }
                    on_batch(&records[at..at + total]);
                    fetched.records += h.record_count().max(0) as u64;
                    fetched.bytes += total as u64;
                    next = Some(h.last_offset() + 1);
                    at += total;
                }
                if let Some(next) = next {
                    self.offsets.insert(p.partition_index, next);
                }
            }
        }
        Ok(fetched)
    }
}
