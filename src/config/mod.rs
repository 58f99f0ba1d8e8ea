//! Broker configuration: Kafka's own property names, read from a `server.properties`
//! file and `--override key=value` flags (later wins), validated up front.
//!
//! Every setting lives in `SETTINGS` with its default and documentation; the README's
//! settings table is generated from the same list (`ringlog serve --help-settings`).

pub mod cluster;
pub mod dynamic;
pub mod topic;
pub mod transactions;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use cluster::ClusterConfig;

pub use crate::storage::file::WriteMode;

/// The tail cache's size per partition with direct writes, unless set.
const DIRECT_TAIL_CACHE_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid value {value:?} for {key}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("malformed --override {0:?}: expected key=value")]
    MalformedOverride(String),
}

pub struct Setting {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub default: &'static str,
    pub doc: &'static str,
}

pub const SETTINGS: &[Setting] = &[
    Setting { name: "listeners", aliases: &[], default: "PLAINTEXT://:9092", doc: "Where to accept Kafka clients, `PLAINTEXT://host:port`, and, in a cluster, the controller quorum: `PLAINTEXT://:9092,CONTROLLER://:9093`. An empty host binds all interfaces." },
    Setting { name: "advertised.listeners", aliases: &[], default: "", doc: "Address given to clients in Metadata; defaults to `listeners` (with this host's name if the host is empty or 0.0.0.0)." },
    Setting { name: "node.id", aliases: &["broker.id"], default: "0", doc: "This node's id, unique in the cluster." },
    Setting { name: "process.roles", aliases: &[], default: "broker,controller", doc: "`broker,controller`: the node serves clients and is a member of the controller quorum (KRaft's combined mode; the only one built so far)." },
    Setting { name: "controller.quorum.voters", aliases: &[], default: "", doc: "The controller quorum, `id@host:port,...` (each one's CONTROLLER listener). Empty: this node is a one-node cluster." },
    Setting { name: "controller.quorum.bootstrap.servers", aliases: &[], default: "", doc: "Not built (dynamic quorums, KIP-853): a node that sets it refuses to start. Use `controller.quorum.voters`." },
    Setting { name: "controller.listener.names", aliases: &[], default: "CONTROLLER", doc: "The listener name(s) in `listeners` that serve the controller quorum." },
    Setting { name: "broker.rack", aliases: &[], default: "", doc: "This broker's rack, as clients are told in Metadata." },
    Setting { name: "broker.heartbeat.interval.ms", aliases: &[], default: "2000", doc: "How often a broker heartbeats to the active controller." },
    Setting { name: "broker.session.timeout.ms", aliases: &[], default: "9000", doc: "A broker that has not heartbeated for this long is fenced: it leads nothing and clients are not sent to it." },
    Setting { name: "replica.fetch.max.bytes", aliases: &[], default: "1048576", doc: "Per partition, the most bytes a follower asks its leader for in one fetch (at least one whole batch comes)." },
    Setting { name: "replica.fetch.response.max.bytes", aliases: &[], default: "10485760", doc: "The most bytes a follower asks its leader for in one fetch, over all its partitions there." },
    Setting { name: "replica.fetch.wait.max.ms", aliases: &[], default: "500", doc: "How long a follower's fetch waits at the leader for new data before it is answered." },
    Setting { name: "replica.fetch.min.bytes", aliases: &[], default: "1", doc: "Bytes a follower's fetch waits for at the leader (up to `replica.fetch.wait.max.ms`)." },
    Setting { name: "replica.fetch.backoff.ms", aliases: &[], default: "1000", doc: "How long a follower waits before it fetches again from a leader that refused it or could not be reached." },
    Setting { name: "replica.high.watermark.checkpoint.interval.ms", aliases: &[], default: "5000", doc: "How often the high watermarks of the replicated partitions a node holds are written to `replication-offset-checkpoint` in its log directory; after a crash a partition's high watermark starts there." },
    Setting { name: "replica.lag.time.max.ms", aliases: &[], default: "30000", doc: "A follower that has not caught up with its leader for this long leaves the partition's ISR (the leader asks the controller); one that catches up joins again." },
    Setting { name: "min.insync.replicas", aliases: &[], default: "1", doc: "With acks=all, the fewest in-sync replicas a partition must have: fewer → NOT_ENOUGH_REPLICAS before the append (NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrinks while the produce waits). Topic override: `min.insync.replicas`." },
    Setting { name: "unclean.leader.election.enable", aliases: &[], default: "false", doc: "Whether a partition whose in-sync replicas are all gone may be led by a replica that was not in sync, losing what only they held (as Kafka documents). Topic override: `unclean.leader.election.enable`." },
    Setting { name: "auto.leader.rebalance.enable", aliases: &[], default: "true", doc: "The active controller moves leaderships back to each partition's preferred replica (the first listed) once it is in sync and live again, every `leader.imbalance.check.interval.seconds`." },
    Setting { name: "leader.imbalance.check.interval.seconds", aliases: &[], default: "300", doc: "How often the active controller looks for leaderships to move back to preferred replicas." },
    Setting { name: "leader.imbalance.per.broker.percentage", aliases: &[], default: "10", doc: "Accepted (0-100) and not used, as in Kafka's KRaft controller: every partition not led by its preferred replica is balanced." },
    Setting { name: "log.dirs", aliases: &["log.dir"], default: "/tmp/ringlog-logs", doc: "Directory holding partition logs and metadata (one directory for now)." },
    Setting { name: "num.partitions", aliases: &[], default: "1", doc: "Partitions of an auto-created topic, and of CreateTopics with num_partitions -1." },
    Setting { name: "default.replication.factor", aliases: &[], default: "1", doc: "Replication factor of auto-created topics (a single broker serves only 1)." },
    Setting { name: "auto.create.topics.enable", aliases: &[], default: "true", doc: "Create a topic that a Metadata request names when the client allows it (every Metadata v0-v3 request does); Produce never creates topics, as in Kafka." },
    Setting { name: "message.max.bytes", aliases: &[], default: "1048588", doc: "Largest record batch accepted; larger → MESSAGE_TOO_LARGE." },
    Setting { name: "socket.request.max.bytes", aliases: &[], default: "104857600", doc: "Largest request frame; a larger size closes the connection." },
    Setting { name: "max.connections", aliases: &[], default: "2147483647", doc: "Most client connections open at once; a connection beyond it is closed as soon as it is accepted." },
    Setting { name: "max.connections.per.ip", aliases: &[], default: "2147483647", doc: "Most connections open at once from one address; a connection beyond it is closed as soon as it is accepted." },
    Setting { name: "connections.max.idle.ms", aliases: &[], default: "600000", doc: "Close a connection that has no request in flight and sends nothing for this long, or that takes no response bytes for this long." },
    Setting { name: "ringlog.request.read.timeout.ms", aliases: &[], default: "30000", doc: "Close a connection whose request has begun but not fully arrived after this long (a slowloris client). The default matches clients' own `request.timeout.ms`." },
    Setting { name: "ringlog.connection.requests.max", aliases: &[], default: "16", doc: "Requests one connection may have read and not yet answered; at the limit the broker stops reading that connection until a response is written (Kafka clients send at most 5)." },
    Setting { name: "max.incremental.fetch.session.cache.slots", aliases: &[], default: "1000", doc: "Incremental fetch sessions (KIP-227) the broker keeps, divided evenly among its shards; a full cache evicts a session idle for two minutes, or a smaller or less privileged one (followers' sessions are privileged), else answers without a session. 0: no sessions." },
    Setting { name: "queued.max.request.bytes", aliases: &[], default: "268435456", doc: "Per shard, bytes of requests read and not yet handled; at the limit connections wait before reading more (backpressure). A frame larger than this waits for all of it. -1: no limit." },
    Setting { name: "log.segment.bytes", aliases: &[], default: "1073741824", doc: "Roll to a new segment file past this size." },
    Setting { name: "log.index.interval.bytes", aliases: &[], default: "4096", doc: "Bytes of log between two entries of the sparse offset index." },
    Setting { name: "log.index.size.max.bytes", aliases: &[], default: "10485760", doc: "Largest offset or time index file of a segment; a full index rolls the segment. Topic override: `segment.index.bytes`." },
    Setting { name: "log.flush.interval.messages", aliases: &[], default: "9223372036854775807", doc: "Flush (fdatasync) a partition once this many records are unflushed; a produce with acks=1/all that reaches it is answered after the flush (1: every acknowledged batch is durable). Topic override: `flush.messages`." },
    Setting { name: "log.flush.interval.ms", aliases: &[], default: "", doc: "Flush a partition's data once it is this old (checked every 100 ms; acks do not wait). Empty: never by time. Topic override: `flush.ms`." },
    Setting { name: "log.roll.ms", aliases: &[], default: "", doc: "Roll to a new segment once the active one's batches span this long (by their timestamps). Unset: `log.roll.hours`. Topic override: `segment.ms`." },
    Setting { name: "log.roll.hours", aliases: &[], default: "168", doc: "As `log.roll.ms`, in hours (used when that is unset)." },
    Setting { name: "log.retention.ms", aliases: &[], default: "", doc: "Delete a partition's old segments once their newest record is older than this; -1: never. Unset: `log.retention.minutes`, then `log.retention.hours`. Topic override: `retention.ms`." },
    Setting { name: "log.retention.minutes", aliases: &[], default: "", doc: "As `log.retention.ms`, in minutes (used when that is unset)." },
    Setting { name: "log.retention.hours", aliases: &[], default: "168", doc: "As `log.retention.ms`, in hours (used when both above are unset)." },
    Setting { name: "log.retention.bytes", aliases: &[], default: "-1", doc: "Delete a partition's oldest segments while it is larger than this; -1: no limit. Topic override: `retention.bytes`." },
    Setting { name: "log.flush.offset.checkpoint.interval.ms", aliases: &[], default: "60000", doc: "How often each partition's recovery point is taken: its files are flushed and its state recorded, so that a start after a crash validates only what was written since (it is also taken when a segment rolls)." },
    Setting { name: "log.retention.check.interval.ms", aliases: &[], default: "300000", doc: "How often each shard applies retention." },
    Setting { name: "log.message.timestamp.before.max.ms", aliases: &[], default: "9223372036854775807", doc: "A batch whose first record's create time is more than this before the broker's clock → INVALID_TIMESTAMP. Topic override: `message.timestamp.before.max.ms`." },
    Setting { name: "log.message.timestamp.after.max.ms", aliases: &[], default: "3600000", doc: "A batch whose newest create time is more than this after the broker's clock → INVALID_TIMESTAMP (Kafka 4.0's default). Topic override: `message.timestamp.after.max.ms`." },
    Setting { name: "offsets.topic.num.partitions", aliases: &[], default: "50", doc: "Partitions of `__consumer_offsets`, created on first use; a group's coordinator is the leader of partition `abs(hash(group)) % this`, on the core holding it." },
    Setting { name: "offsets.topic.replication.factor", aliases: &[], default: "3", doc: "Replicas of each `__consumer_offsets` partition, or the number of live brokers when fewer at creation. A group's coordinator is its partition's leader and moves with it." },
    Setting { name: "offsets.commit.timeout.ms", aliases: &[], default: "5000", doc: "How long an offset commit (or a group's stored state) waits for every in-sync replica of its `__consumer_offsets` partition; past it → COORDINATOR_NOT_AVAILABLE." },
    Setting { name: "offsets.topic.segment.bytes", aliases: &[], default: "104857600", doc: "Segment size of `__consumer_offsets`." },
    Setting { name: "offsets.retention.minutes", aliases: &[], default: "10080", doc: "Committed offsets of a group that has been empty this long (of a standalone consumer: committed this long ago) are deleted." },
    Setting { name: "offsets.retention.check.interval.ms", aliases: &[], default: "600000", doc: "How often expired offsets are looked for." },
    Setting { name: "transaction.state.log.num.partitions", aliases: &[], default: "50", doc: "Partitions of `__transaction_state`, created on first use; a transactional id's coordinator is the leader of partition `abs(hash(id)) % this`." },
    Setting { name: "transaction.state.log.replication.factor", aliases: &[], default: "3", doc: "Replicas of each `__transaction_state` partition, or the number of live brokers when fewer at creation." },
    Setting { name: "transaction.state.log.min.isr", aliases: &[], default: "2", doc: "`min.insync.replicas` of `__transaction_state` (at most its replication factor)." },
    Setting { name: "transaction.state.log.segment.bytes", aliases: &[], default: "104857600", doc: "Segment size of `__transaction_state`." },
    Setting { name: "transaction.max.timeout.ms", aliases: &[], default: "900000", doc: "Largest `transaction.timeout.ms` a producer may ask for; larger → INVALID_TRANSACTION_TIMEOUT." },
    Setting { name: "transactional.id.expiration.ms", aliases: &[], default: "604800000", doc: "A transactional id with no transaction this long is forgotten (a tombstone in `__transaction_state`)." },
    Setting { name: "transaction.abort.timed.out.transaction.cleanup.interval.ms", aliases: &[], default: "10000", doc: "How often the coordinator aborts transactions past their timeout (fencing their producers)." },
    Setting { name: "transaction.remove.expired.transaction.cleanup.interval.ms", aliases: &[], default: "3600000", doc: "How often expired transactional ids are looked for." },
    Setting { name: "producer.id.expiration.ms", aliases: &[], default: "86400000", doc: "A partition forgets a producer (idempotence state) whose newest batch is this old and that has no open transaction." },
    Setting { name: "producer.id.expiration.check.interval.ms", aliases: &[], default: "600000", doc: "How often partitions look for expired producers." },
    Setting { name: "offset.metadata.max.bytes", aliases: &[], default: "4096", doc: "Largest metadata string of a committed offset; larger → OFFSET_METADATA_TOO_LARGE." },
    Setting { name: "group.initial.rebalance.delay.ms", aliases: &[], default: "3000", doc: "A new group's first rebalance waits this long for more members to join (extended as they come, within the rebalance timeout)." },
    Setting { name: "group.min.session.timeout.ms", aliases: &[], default: "6000", doc: "Smallest session timeout a member may ask for; below → INVALID_SESSION_TIMEOUT." },
    Setting { name: "group.max.session.timeout.ms", aliases: &[], default: "1800000", doc: "Largest session timeout a member may ask for; above → INVALID_SESSION_TIMEOUT." },
    Setting { name: "group.consumer.heartbeat.interval.ms", aliases: &[], default: "5000", doc: "Heartbeat interval given to consumer-protocol (KIP-848) members." },
    Setting { name: "group.consumer.session.timeout.ms", aliases: &[], default: "45000", doc: "A consumer-protocol (KIP-848) member that does not heartbeat for this long leaves its group." },
    Setting { name: "group.max.size", aliases: &[], default: "2147483647", doc: "Most members in one group; more → GROUP_MAX_SIZE_REACHED." },
    Setting { name: "ringlog.log.write.mode", aliases: &[], default: "buffered", doc: "How segment files are written: `buffered` (io_uring through the page cache, as Kafka) or `direct` (io_uring O_DIRECT: aligned DMA writes that bypass the page cache). See tuning/README.md for the measured trade-off." },
    Setting { name: "ringlog.fetch.zero.copy", aliases: &[], default: "true", doc: "Fetch responses send record data cached in the page cache straight from the segment file to the socket (sendfile), without copying it through the broker. `false`: always read it into memory first (the copying path, kept for comparison)." },
    Setting { name: "ringlog.produce.check.records", aliases: &[], default: "true", doc: "Before append, walk every record of a produced batch, inflating compressed ones, and refuse one whose records do not match its header (INVALID_RECORD) or do not decompress (CORRUPT_MESSAGE), as Kafka does. `false`: check the batch header and CRC only (cheaper; a producer's malformed records are then stored and served as sent)." },
    Setting { name: "ringlog.idle.spin.us", aliases: &[], default: "0", doc: "How long an idle shard polls for new work before it sleeps in the kernel. Waking a sleeping CPU costs tens of microseconds per hop (more on virtual machines); spinning trades CPU for latency." },
    Setting { name: "ringlog.tail.cache.bytes", aliases: &[], default: "", doc: "Per partition, the newest batches kept in memory and served to fetches from there. Empty: 8388608 with direct writes (the page cache then holds nothing fresh), 0 with buffered." },
    Setting { name: "ringlog.cpus", aliases: &[], default: "all", doc: "CPUs to run shards on, one shard pinned to each: `all`, or a list such as `0-3,6`." },
    Setting { name: "ringlog.shards", aliases: &[], default: "0", doc: "Number of shards; 0 = one per CPU in `ringlog.cpus`, else the first N of them." },
];

#[derive(Debug, Clone)]
pub struct Listener {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The settings given (file and overrides), by canonical name: DescribeConfigs
    /// reports them as STATIC_BROKER_CONFIG.
    pub given: BTreeMap<&'static str, String>,
    pub listener: Listener,
    pub cluster: ClusterConfig,
    pub advertised: Listener,
    pub node_id: i32,
    pub log_dir: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub message_size_max_bytes: usize,
    pub request_size_max_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub connections_max_idle_ms: u64,
    pub request_read_timeout_ms: u64,
    pub connection_requests_max: usize,
    /// Per shard; `u64::MAX` when unlimited (-1).
    pub queued_max_request_bytes: u64,
    pub fetch_session_cache_slots: usize,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub segment_size_max_bytes: u64,
    pub index_interval_bytes: u64,
    pub index_size_max_bytes: u64,
    pub write_mode: WriteMode,
    pub tail_cache_bytes: usize,
    pub idle_spin_us: u64,
    pub fetch_zero_copy: bool,
    pub produce_check_records: bool,
    pub offsets_topic_partitions: i32,
    pub offsets_topic_segment_bytes: u64,
    pub offsets_topic_replication_factor: usize,
    pub offsets_commit_timeout_ms: u64,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub offset_metadata_max_bytes: usize,
    pub transactions: transactions::TxnSettings,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub group_max_size: usize,
    /// How followers fetch from leaders (`replica.fetch.*`).
    pub replica_fetch: crate::replication::follower::FetchSettings,
    pub replica_fetch_backoff_ms: u64,
    pub replica_lag_time_max_ms: u64,
    pub replica_high_watermark_checkpoint_interval_ms: u64,
    pub min_insync_replicas: usize,
    pub unclean_leader_election_enable: bool,
    pub group_consumer_heartbeat_interval_ms: u64,
    pub group_consumer_session_timeout_ms: u64,
    pub flush_interval_messages: u64,
    pub flush_interval_ms: Option<u64>,
    /// Time-based segment roll.
    pub roll_ms: Option<u64>,
    /// Time and size retention; `None`: unlimited.
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub retention_check_interval_ms: u64,
    /// How often each partition's recovery point is taken.
    pub recovery_point_interval_ms: u64,
    /// CPUs to pin shards to, one shard per entry.
    pub cpus: Vec<usize>,
}

/// Parses Java `.properties` text: `key=value`, `key: value` or `key value`, `#`/`!`
/// comments, and backslash line continuation.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        let split = entry.find(['=', ':', ' ', '\t']);
        let (key, value) = match split {
            Some(i) => (
                &entry[..i],
                entry[i + 1..].trim_start_matches(['=', ':', ' ', '\t']),
            ),
            None => (&entry[..], ""),
        };
        out.insert(key.trim().to_string(), value.trim().to_string());
    }
    out
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// The PLAINTEXT listener of `value` (the other one may be the controller's).
fn client_listener(
    key: &str,
    value: &str,
    controller_names: &str,
) -> Result<Listener, ConfigError> {
    cluster::parse_listeners(key, value, controller_names)?
        .0
        .ok_or_else(|| invalid(key, value, "expected PLAINTEXT://host:port for clients"))
}

fn parse_num<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    key: &str,
    value: &str,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let v: T = value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not a number"))?;
    if v < min || v > max {
        return Err(invalid(
            key,
            value,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(v)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "expected true or false")),
    }
}

/// Parses `all` or a CPU list such as `0-3,6`; every CPU must be in `available`
/// (the CPUs this process may run on).
pub fn parse_cpu_list(
    key: &str,
    value: &str,
    available: &[usize],
) -> Result<Vec<usize>, ConfigError> {
    if value.trim() == "all" {
        return Ok(available.to_vec());
    }
    let mut cpus = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let lo: usize = lo
            .trim()
            .parse()
            .map_err(|_| invalid(key, value, "expected `all` or a list like 0-3,6"))?;
        let hi: usize = hi
            .trim()
            .parse()
            .map_err(|_| invalid(key, value, "expected `all` or a list like 0-3,6"))?;
        if lo > hi || (lo..=hi).any(|c| !available.contains(&c)) {
            let reason = format!("CPUs must be among those this process may use: {available:?}");
            return Err(invalid(key, value, reason));
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err(invalid(key, value, "no CPUs listed"));
    }
    Ok(cpus)
}

/// Kafka's precedence among a time setting's units (e.g. `log.retention.ms`, else
/// `.minutes`, else `.hours`): the first that is set wins; a negative value (-1) means
/// unlimited.
fn time_ms(
    get: &dyn Fn(&'static str) -> String,
    keys: &[(&'static str, u64)],
) -> Result<Option<u64>, ConfigError> {
    for &(key, unit_ms) in keys {
        let raw = get(key);
        if raw.trim().is_empty() {
            continue;
        }
        let v: i64 = parse_num(key, &raw, i64::MIN, i64::MAX)?;
        return Ok((v >= 0).then(|| (v as u64).saturating_mul(unit_ms)));
    }
    Ok(None)
}

fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Config {
    /// Builds the config from properties. Unknown keys are returned as warnings.
    pub fn from_properties(
        props: &BTreeMap<String, String>,
        cpus_available: &[usize],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut warnings = Vec::new();
        for (key, value) in props {
            match SETTINGS
                .iter()
                .find(|s| s.name == key || s.aliases.contains(&key.as_str()))
            {
                Some(s) => {
                    values.insert(s.name, value.clone());
                }
                None => warnings.push(format!("unknown setting {key:?} is ignored")),
            }
        }
        let get = |name: &'static str| -> String {
            values.get(name).cloned().unwrap_or_else(|| {
                SETTINGS
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| s.default.to_string())
                    .unwrap_or_default()
            })
        };
        let controller_names = get("controller.listener.names");
        let listener = client_listener("listeners", &get("listeners"), &controller_names)?;
        let (_, controller_listener) =
            cluster::parse_listeners("listeners", &get("listeners"), &controller_names)?;
        let advertised_raw = get("advertised.listeners");
        let mut advertised = if advertised_raw.is_empty() {
            listener.clone()
        } else {
            client_listener("advertised.listeners", &advertised_raw, &controller_names)?
        };
        if get("controller.quorum.bootstrap.servers").trim() != "" {
            return Err(invalid(
                "controller.quorum.bootstrap.servers",
                &get("controller.quorum.bootstrap.servers"),
                "dynamic quorums (KIP-853) are not built; list the voters in controller.quorum.voters",
            ));
        }
        let rack = get("broker.rack");
        let cluster = ClusterConfig {
            roles: cluster::parse_roles(&get("process.roles"))?,
            voters: cluster::parse_voters(&get("controller.quorum.voters"))?,
            controller_listener,
            rack: (!rack.trim().is_empty()).then(|| rack.trim().to_string()),
            heartbeat_interval_ms: parse_num(
                "broker.heartbeat.interval.ms",
                &get("broker.heartbeat.interval.ms"),
                1,
                i64::MAX as u64 / 4,
            )?,
            session_timeout_ms: parse_num(
                "broker.session.timeout.ms",
                &get("broker.session.timeout.ms"),
                1,
                i64::MAX as u64 / 4,
            )?,
            auto_leader_rebalance_enable: parse_bool(
                "auto.leader.rebalance.enable",
                &get("auto.leader.rebalance.enable"),
            )?,
            leader_imbalance_check_interval_ms: parse_num::<u64>(
                "leader.imbalance.check.interval.seconds",
                &get("leader.imbalance.check.interval.seconds"),
                1,
                i64::MAX as u64 / 4000,
            )? * 1000,
        };
        parse_num::<u8>(
            "leader.imbalance.per.broker.percentage",
            &get("leader.imbalance.per.broker.percentage"),
            0,
            100,
        )?;
        if advertised.host.is_empty() || advertised.host == "0.0.0.0" || advertised.host == "::" {
            advertised.host = local_hostname();
        }
        let log_dir = get("log.dirs");
        let mut dirs = log_dir.split(',').map(str::trim).filter(|d| !d.is_empty());
        let first = dirs
            .next()
            .ok_or_else(|| invalid("log.dirs", &log_dir, "no directory given"))?;
        if dirs.next().is_some() {
            warnings
                .push("log.dirs lists several directories; only the first is used for now".into());
        }
        let mut cpus = parse_cpu_list("ringlog.cpus", &get("ringlog.cpus"), cpus_available)?;
        let shards: usize = parse_num("ringlog.shards", &get("ringlog.shards"), 0, 4096)?;
        if shards > cpus.len() {
            return Err(invalid(
                "ringlog.shards",
                &shards.to_string(),
                format!("only {} CPUs are selected by ringlog.cpus", cpus.len()),
            ));
        }
        if shards > 0 {
            cpus.truncate(shards);
        }
        let write_mode: WriteMode =
            get("ringlog.log.write.mode")
                .trim()
                .parse()
                .map_err(|e: String| {
                    invalid("ringlog.log.write.mode", &get("ringlog.log.write.mode"), e)
                })?;
        let node_id = parse_num("node.id", &get("node.id"), 0, i32::MAX)?;
        cluster::check(&cluster, node_id)?;
        let config = Config {
            given: values.clone(),
            listener,
            cluster,
            advertised,
            node_id,
            log_dir: PathBuf::from(first),
            num_partitions: parse_num("num.partitions", &get("num.partitions"), 1, 100_000)?,
            default_replication_factor: parse_num(
                "default.replication.factor",
                &get("default.replication.factor"),
                1,
                i16::MAX,
            )?,
            auto_create_topics: parse_bool(
                "auto.create.topics.enable",
                &get("auto.create.topics.enable"),
            )?,
            message_size_max_bytes: parse_num(
                "message.max.bytes",
                &get("message.max.bytes"),
                0,
                i32::MAX as usize,
            )?,
            request_size_max_bytes: parse_num(
                "socket.request.max.bytes",
                &get("socket.request.max.bytes"),
                1,
                i32::MAX as usize,
            )?,
            max_connections: parse_num(
                "max.connections",
                &get("max.connections"),
                0,
                i32::MAX as usize,
            )?,
            max_connections_per_ip: parse_num(
                "max.connections.per.ip",
                &get("max.connections.per.ip"),
                0,
                i32::MAX as usize,
            )?,
            connections_max_idle_ms: parse_num(
                "connections.max.idle.ms",
                &get("connections.max.idle.ms"),
                1,
                i64::MAX as u64 / 4,
            )?,
            request_read_timeout_ms: parse_num(
                "ringlog.request.read.timeout.ms",
                &get("ringlog.request.read.timeout.ms"),
                1,
                i64::MAX as u64 / 4,
            )?,
            connection_requests_max: parse_num(
                "ringlog.connection.requests.max",
                &get("ringlog.connection.requests.max"),
                1,
                4096,
            )?,
            fetch_session_cache_slots: parse_num(
                "max.incremental.fetch.session.cache.slots",
                &get("max.incremental.fetch.session.cache.slots"),
                0,
                i32::MAX as usize,
            )?,
            queued_max_request_bytes: match parse_num::<i64>(
                "queued.max.request.bytes",
                &get("queued.max.request.bytes"),
                -1,
                i64::MAX,
            )? {
                -1 => u64::MAX >> 4,
                0 => {
                    return Err(invalid(
                        "queued.max.request.bytes",
                        "0",
                        "must be positive, or -1 for no limit",
                    ))
                }
                bytes => bytes as u64,
            },
            timestamp_before_max_ms: parse_num(
                "log.message.timestamp.before.max.ms",
                &get("log.message.timestamp.before.max.ms"),
                0,
                i64::MAX,
            )?,
            timestamp_after_max_ms: parse_num(
                "log.message.timestamp.after.max.ms",
                &get("log.message.timestamp.after.max.ms"),
                0,
                i64::MAX,
            )?,
            segment_size_max_bytes: parse_num(
                "log.segment.bytes",
                &get("log.segment.bytes"),
                14,
                i32::MAX as u64,
            )?,
            index_interval_bytes: parse_num(
                "log.index.interval.bytes",
                &get("log.index.interval.bytes"),
                0,
                i32::MAX as u64,
            )?,
            index_size_max_bytes: parse_num(
                "log.index.size.max.bytes",
                &get("log.index.size.max.bytes"),
                12,
                i32::MAX as u64,
            )?,
            write_mode,
            tail_cache_bytes: match get("ringlog.tail.cache.bytes").trim() {
                "" if write_mode == WriteMode::Direct => DIRECT_TAIL_CACHE_BYTES,
                "" => 0,
                bytes => parse_num("ringlog.tail.cache.bytes", bytes, 0, 1 << 40)?,
            },
            offsets_topic_partitions: parse_num(
                "offsets.topic.num.partitions",
                &get("offsets.topic.num.partitions"),
                1,
                100_000,
            )?,
            offsets_topic_segment_bytes: parse_num(
                "offsets.topic.segment.bytes",
                &get("offsets.topic.segment.bytes"),
                14,
                i32::MAX as u64,
            )?,
            offsets_topic_replication_factor: parse_num(
                "offsets.topic.replication.factor",
                &get("offsets.topic.replication.factor"),
                1,
                i16::MAX as usize,
            )?,
            offsets_commit_timeout_ms: parse_num(
                "offsets.commit.timeout.ms",
                &get("offsets.commit.timeout.ms"),
                1,
                i32::MAX as u64,
            )?,
            offsets_retention_ms: parse_num::<i64>(
                "offsets.retention.minutes",
                &get("offsets.retention.minutes"),
                1,
                i32::MAX as i64,
            )? * 60_000,
            offsets_retention_check_interval_ms: parse_num(
                "offsets.retention.check.interval.ms",
                &get("offsets.retention.check.interval.ms"),
                1,
                i64::MAX as u64,
            )?,
            offset_metadata_max_bytes: parse_num(
                "offset.metadata.max.bytes",
                &get("offset.metadata.max.bytes"),
                0,
                i32::MAX as usize,
            )?,
            group_initial_rebalance_delay_ms: parse_num(
                "group.initial.rebalance.delay.ms",
                &get("group.initial.rebalance.delay.ms"),
                0,
                i32::MAX as u64,
            )?,
            group_min_session_timeout_ms: parse_num(
                "group.min.session.timeout.ms",
                &get("group.min.session.timeout.ms"),
                0,
                i32::MAX,
            )?,
            group_max_session_timeout_ms: parse_num(
                "group.max.session.timeout.ms",
                &get("group.max.session.timeout.ms"),
                0,
                i32::MAX,
            )?,
            group_consumer_heartbeat_interval_ms: parse_num(
                "group.consumer.heartbeat.interval.ms",
                &get("group.consumer.heartbeat.interval.ms"),
                1,
                i32::MAX as u64,
            )?,
            group_consumer_session_timeout_ms: parse_num(
                "group.consumer.session.timeout.ms",
                &get("group.consumer.session.timeout.ms"),
                1,
                i32::MAX as u64,
            )?,
            fetch_zero_copy: parse_bool(
                "ringlog.fetch.zero.copy",
                &get("ringlog.fetch.zero.copy"),
            )?,
            produce_check_records: parse_bool(
                "ringlog.produce.check.records",
                &get("ringlog.produce.check.records"),
            )?,
            idle_spin_us: parse_num(
                "ringlog.idle.spin.us",
                &get("ringlog.idle.spin.us"),
                0,
                1_000_000,
            )?,
            group_max_size: parse_num(
                "group.max.size",
                &get("group.max.size"),
                1,
                i32::MAX as usize,
            )?,
            transactions: transactions::TxnSettings::parse(get)?,
            replica_fetch: crate::replication::follower::FetchSettings {
                partition_max_bytes: parse_num(
                    "replica.fetch.max.bytes",
                    &get("replica.fetch.max.bytes"),
                    1,
                    i32::MAX,
                )?,
                response_max_bytes: parse_num(
                    "replica.fetch.response.max.bytes",
                    &get("replica.fetch.response.max.bytes"),
                    1,
                    i32::MAX,
                )?,
                max_wait_ms: parse_num(
                    "replica.fetch.wait.max.ms",
                    &get("replica.fetch.wait.max.ms"),
                    0,
                    60_000,
                )?,
                min_bytes: parse_num(
                    "replica.fetch.min.bytes",
                    &get("replica.fetch.min.bytes"),
                    1,
                    i32::MAX,
                )?,
            },
            replica_lag_time_max_ms: parse_num(
                "replica.lag.time.max.ms",
                &get("replica.lag.time.max.ms"),
                1,
                i32::MAX as u64,
            )?,
            replica_high_watermark_checkpoint_interval_ms: parse_num(
                "replica.high.watermark.checkpoint.interval.ms",
                &get("replica.high.watermark.checkpoint.interval.ms"),
                1,
                i32::MAX as u64,
            )?,
            unclean_leader_election_enable: parse_bool(
                "unclean.leader.election.enable",
                &get("unclean.leader.election.enable"),
            )?,
            min_insync_replicas: parse_num(
                "min.insync.replicas",
                &get("min.insync.replicas"),
                1,
                i16::MAX as usize,
            )?,
            replica_fetch_backoff_ms: parse_num(
                "replica.fetch.backoff.ms",
                &get("replica.fetch.backoff.ms"),
                0,
                i32::MAX as u64,
            )?,
            flush_interval_messages: parse_num(
                "log.flush.interval.messages",
                &get("log.flush.interval.messages"),
                1,
                i64::MAX as u64,
            )?,
            flush_interval_ms: match get("log.flush.interval.ms").trim() {
                "" => None,
                ms => Some(parse_num("log.flush.interval.ms", ms, 0, i64::MAX as u64)?),
            },
            roll_ms: time_ms(&get, &[("log.roll.ms", 1), ("log.roll.hours", 3_600_000)])?,
            retention_ms: time_ms(
                &get,
                &[
                    ("log.retention.ms", 1),
                    ("log.retention.minutes", 60_000),
                    ("log.retention.hours", 3_600_000),
                ],
            )?,
            retention_bytes: match parse_num::<i64>(
                "log.retention.bytes",
                &get("log.retention.bytes"),
                -1,
                i64::MAX,
            )? {
                -1 => None,
                bytes => Some(bytes as u64),
            },
            retention_check_interval_ms: parse_num(
                "log.retention.check.interval.ms",
                &get("log.retention.check.interval.ms"),
                1,
                i64::MAX as u64,
            )?,
            recovery_point_interval_ms: parse_num(
                "log.flush.offset.checkpoint.interval.ms",
                &get("log.flush.offset.checkpoint.interval.ms"),
                1,
                i64::MAX as u64,
            )?,
            cpus,
        };
        Ok((config, warnings))
    }

    /// Reads the optional properties file, applies overrides, validates.
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: &[String],
        cpus_available: &[usize],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut props = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                parse_properties(&text)
            }
            None => BTreeMap::new(),
        };
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::MalformedOverride(o.clone()))?;
            props.insert(k.trim().to_string(), v.trim().to_string());
        }
        Config::from_properties(&props, cpus_available)
    }

    pub fn bind_addr(&self) -> std::io::Result<SocketAddr> {
        let host = if self.listener.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.listener.host
        };
        (host, self.listener.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("cannot resolve listener host {host}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[&str]) -> Result<(Config, Vec<String>), ConfigError> {
        let overrides: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
        Config::load(None, &overrides, &[0, 1, 2, 3])
    }

    #[test]
    fn every_setting_is_documented_in_the_readme() {
        let readme = include_str!("../../README.md");
        for s in SETTINGS {
            assert!(
                readme.contains(&format!("| `{}`", s.name)),
                "README lacks {} (regenerate with `ringlog serve --help-settings`)",
                s.name
            );
        }
    }

    #[test]
    fn properties_format() {
        let p = parse_properties("# c\n! c\na=1\nb : 2\nc 3\nd=x\\\n  y\n\nbroker.id=5\n");
        assert_eq!(p["a"], "1");
        assert_eq!(p["b"], "2");
        assert_eq!(p["c"], "3");
        assert_eq!(p["d"], "xy");
        assert_eq!(p["broker.id"], "5");
    }

    #[test]
    fn defaults_aliases_and_unknown_keys() {
        let (c, warnings) = load(&["broker.id=7", "no.such.key=1"]).unwrap();
        assert_eq!(c.node_id, 7);
        assert_eq!(c.listener.port, 9092);
        assert_eq!(c.cpus, vec![0, 1, 2, 3]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("no.such.key"));
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (kv, key) in [
            ("num.partitions=0", "num.partitions"),
            ("listeners=SSL://:9093", "listeners"),
            ("auto.create.topics.enable=yes", "auto.create.topics.enable"),
            ("ringlog.cpus=9", "ringlog.cpus"),
            ("ringlog.shards=5", "ringlog.shards"),
            ("message.max.bytes=-1", "message.max.bytes"),
        ] {
            match load(&[kv]) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{kv}: {other:?}"),
            }
        }
    }

    #[test]
    fn cpu_lists_and_shard_counts() {
        assert_eq!(
            parse_cpu_list("k", "0-1,3", &[0, 1, 2, 3]).unwrap(),
            vec![0, 1, 3]
        );
        let (c, _) = load(&["ringlog.cpus=1-3", "ringlog.shards=2"]).unwrap();
        assert_eq!(c.cpus, vec![1, 2]);
    }

    #[test]
    fn listener_parsing() {
        let (c, _) = load(&["listeners=PLAINTEXT://127.0.0.1:19092"]).unwrap();
        assert_eq!(
            (c.listener.host.as_str(), c.listener.port),
            ("127.0.0.1", 19092)
        );
        assert_eq!(c.advertised.host, "127.0.0.1");
        assert_eq!(
            load(&["oops"]).unwrap_err(),
            ConfigError::MalformedOverride("oops".into())
        );
    }
}
