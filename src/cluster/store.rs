//! This node's identity on disk, and the cluster metadata file of brokers from before
//! the metadata quorum.
//!
//! - `meta.properties` holds the cluster id and node id, as Kafka writes it.
//! - `ringlog-metadata.json` is read once, to upgrade a log directory into the
//!   quorum's log (`records`). It held topics with ids, configs and partition
//!   assignments, and the producer-id block.
//!
//! Writes are atomic: temp file, fsync, rename, fsync of the directory. These are
//! blocking std I/O, for startup.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metadata::{PartitionAssignment, TopicMeta};
use super::records::{topic_records, MetadataRecord};
use crate::ids::BrokerId;

pub const METADATA_FILE: &str = "ringlog-metadata.json";
pub const META_PROPERTIES: &str = "meta.properties";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredMetadata {
    pub topics: Vec<TopicMeta>,
    /// First producer id not yet handed out by any run of the broker.
    pub producer_id_next_block: i64,
}

/// The file as brokers before partition assignments wrote it: a topic had a shard
/// per partition (`placement`) and no replicas.
#[derive(Deserialize)]
struct OldStoredMetadata {
    topics: Vec<OldTopic>,
    producer_id_next_block: i64,
}

#[derive(Deserialize)]
struct OldTopic {
    name: String,
    id: uuid::Uuid,
    placement: Vec<serde_json::Value>,
    configs: std::collections::BTreeMap<String, String>,
}

impl OldStoredMetadata {
    /// Every partition of an old single-broker file lived on this broker.
    fn upgrade(self, node_id: BrokerId) -> StoredMetadata {
        StoredMetadata {
            topics: self
                .topics
                .into_iter()
                .map(|t| TopicMeta {
                    partitions: vec![PartitionAssignment::new(vec![node_id]); t.placement.len()],
                    name: t.name,
                    id: t.id,
                    configs: t.configs,
                })
                .collect(),
            producer_id_next_block: self.producer_id_next_block,
        }
    }
}

pub use crate::storage::atomic_file::write_atomic;

/// Reads the stored metadata; a file in the older single-broker layout is read as
/// that broker's (`node_id`).
pub fn load(dir: &Path, node_id: BrokerId) -> io::Result<Option<StoredMetadata>> {
    match std::fs::read(dir.join(METADATA_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .or_else(|e| {
                serde_json::from_slice::<OldStoredMetadata>(&bytes)
                    .map(|old| old.upgrade(node_id))
                    .map_err(|_| e)
            })
            .map(Some)
            .map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{METADATA_FILE}: {e}"))
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl StoredMetadata {
    /// The records of the metadata quorum that hold the same: its topics, and the
    /// producer ids handed out (every id below the reserved block's end).
    pub fn records(&self) -> Vec<MetadataRecord> {
        let mut records: Vec<MetadataRecord> = self
            .topics
            .iter()
            .flat_map(|t| topic_records(&std::sync::Arc::new(t.clone())))
            .collect();
        records.push(MetadataRecord::ProducerIds {
            broker: BrokerId(-1),
            next: self.producer_id_next_block,
        });
        records
    }
}

#[cfg(test)]
pub fn save(dir: &Path, m: &StoredMetadata) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(m).map_err(io::Error::other)?;
    write_atomic(dir, METADATA_FILE, &bytes)
}

/// Reads or creates `meta.properties`; returns the cluster id. A node id that differs
/// from the one on disk is refused, as Kafka does.
pub fn ensure_meta_properties(dir: &Path, node_id: i32) -> io::Result<String> {
    let path = dir.join(META_PROPERTIES);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let props = crate::config::parse_properties(&text);
            if let Some(stored) = props.get("node.id") {
                if stored != &node_id.to_string() {
                    return Err(io::Error::other(format!(
                        "{} belongs to node.id {stored}, but this broker is node.id {node_id}",
                        path.display()
                    )));
                }
            }
            props.get("cluster.id").cloned().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} has no cluster.id", path.display()),
                )
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let cluster_id = base64_url(uuid::Uuid::new_v4().as_bytes());
            write_meta_properties(dir, &cluster_id, node_id)?;
            Ok(cluster_id)
        }
        Err(e) => Err(e),
    }
}

pub fn write_meta_properties(dir: &Path, cluster_id: &str, node_id: i32) -> io::Result<()> {
    let text = format!("#ringlog\nversion=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
    write_atomic(dir, META_PROPERTIES, text.as_bytes())
}

/// Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding.
fn base64_url(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// The directory of one partition replica: `<log.dirs>/<topic>-<partition>`.
pub fn partition_dir(log_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    log_dir.join(format!("{topic}-{partition}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_node_id_is_checked() {
        let dir = std::env::temp_dir().join(format!("ringlog-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir, BrokerId(1)).unwrap().is_none());
        let m = StoredMetadata {
            topics: vec![],
            producer_id_next_block: 5000,
        };
        save(&dir, &m).unwrap();
        assert_eq!(
            load(&dir, BrokerId(1))
                .unwrap()
                .unwrap()
                .producer_id_next_block,
            5000
        );
        let id = ensure_meta_properties(&dir, 1).unwrap();
        assert_eq!(id.len(), 22);
        assert_eq!(ensure_meta_properties(&dir, 1).unwrap(), id);
        assert!(ensure_meta_properties(&dir, 2).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_from_before_assignments_is_read_as_this_brokers() {
        let dir = std::env::temp_dir().join(format!("ringlog-store-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = r#"{"topics":[{"name":"t","id":"00000000-0000-0000-0000-000000000009",
            "placement":[1,0,1],"configs":{"retention.ms":"5"}}],"producer_id_next_block":7}"#;
        std::fs::write(dir.join(METADATA_FILE), old).unwrap();
        let m = load(&dir, BrokerId(4)).unwrap().unwrap();
        assert_eq!(m.producer_id_next_block, 7);
        let t = &m.topics[0];
        assert_eq!((t.name.as_str(), t.id.as_u128()), ("t", 9));
        assert_eq!(t.configs["retention.ms"], "5");
        assert_eq!(t.partitions.len(), 3);
        assert!(t
            .partitions
            .iter()
            .all(|p| p.replicas == vec![BrokerId(4)] && p.leader == Some(BrokerId(4))));
        // Its records build the same topics in the quorum's image.
        let mut image = crate::cluster::metadata::ClusterMetadata::default();
        for r in m.records() {
            image.apply(&r).unwrap();
        }
        assert_eq!(**image.topic("t").unwrap(), m.topics[0]);
        assert_eq!(image.next_producer_id, 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
