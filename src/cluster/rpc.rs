//! What brokers ask the active controller over the controller listener (KRaft's
//! BrokerRegistration, BrokerHeartbeat and AllocateProducerIds, and the CreateTopics
//! and DeleteTopics that a broker forwards, as Kafka's brokers do). ringlog's own
//! messages, as JSON: Kafka's controller RPCs are not meant for other vendors' nodes,
//! and these are rare and small.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::controller::NewTopic;
use super::leader_election::{ElectionResults, ElectionType};
use super::metadata::{BrokerInfo, TopicMeta};
use crate::ids::BrokerId;
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// A broker starts: a new incarnation (the controller picks its epoch).
    Register {
        broker: BrokerInfo,
    },
    Heartbeat {
        id: BrokerId,
        epoch: i64,
    },
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        topics: Vec<(Option<String>, Uuid)>,
    },
    CreatePartitions {
        topics: Vec<NewPartitions>,
        validate_only: bool,
    },
    AlterConfigs {
        entries: Vec<AlterConfigs>,
        incremental: bool,
        validate_only: bool,
    },
    AllocateProducerIds {
        broker: BrokerId,
    },
    /// A leader asks for a new ISR of one partition (KIP-497's AlterPartition).
    AlterPartition(AlterIsr),
    /// A broker stopping cleanly asks to be fenced first, so that its leaderships move
    /// to other in-sync replicas while it still serves (Kafka's controlled shutdown).
    ControlledShutdown {
        id: BrokerId,
        epoch: i64,
    },
    /// A follower's connection to its leader was refused or reset: the controller
    /// checks for itself, and fences that incarnation at once if its listener refuses
    /// connections (the process is gone), rather than after the heartbeat session.
    ReportUnreachable {
        reporter: BrokerId,
        broker: BrokerId,
        epoch: i64,
    },
    /// ElectLeaders, forwarded: topics and partitions, or `None` for all of them.
    ElectLeaders {
        election: ElectionType,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
}

/// A leader's ISR change: valid only for the leadership and partition state it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlterIsr {
    pub leader: BrokerId,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<BrokerId>,
}

/// One topic of a CreatePartitions request: grow `name` to `count` partitions, on
/// `assignments` if given (one replica list per new partition).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewPartitions {
    pub name: String,
    pub count: i32,
    pub assignments: Option<Vec<Vec<BrokerId>>>,
}

/// Kafka leaves some of these messages null.
pub type AdminResult = Result<(), (ErrorCode, Option<String>)>;
pub type PartitionsResult = AdminResult;

/// What an (Incremental)AlterConfigs entry does (Kafka's AlterConfigOp.OpType).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum AlterOp {
    Set,
    Delete,
    Append,
    Subtract,
}

/// What an AlterConfigs entry changes (Kafka's ConfigResource).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
    /// A broker's id, or "" for the cluster-wide defaults.
    Broker(String),
}

/// One resource's config changes. AlterConfigs (not incremental) sets exactly these.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlterConfigs {
    pub resource: ConfigResource,
    pub ops: Vec<(String, AlterOp, Option<String>)>,
}

pub type TopicResult = Result<Arc<TopicMeta>, (ErrorCode, String)>;
pub type DeleteResult = Result<(String, Uuid), (ErrorCode, String)>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerResponse {
    /// Ask the leader instead (if this node knows one).
    NotController,
    Registered {
        epoch: i64,
    },
    /// `stale`: the broker's epoch is not the registered one; it must register again.
    Heartbeat {
        stale: bool,
    },
    Created(Vec<TopicResult>),
    Deleted(Vec<DeleteResult>),
    Partitioned(Vec<PartitionsResult>),
    Altered(Vec<AdminResult>),
    /// This broker's block of producer ids is `[next - block, next)`.
    ProducerIds {
        next: i64,
    },
    /// An AlterPartition's answer: done, or Kafka's error.
    PartitionAltered(Result<(), ErrorCode>),
    /// The broker is fenced: it leads nothing and is in no ISR.
    ShutDown,
    /// A reported broker was checked; `fenced`: it was found gone and fenced.
    Checked {
        fenced: bool,
    },
    Elected(ElectionResults),
    Failed(String),
}
