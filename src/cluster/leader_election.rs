//! Leader elections that are not forced by a broker's death: the ones an operator
//! asks for (ElectLeaders, KIP-460: preferred or unclean) and the active controller's
//! periodic return of leaderships to their preferred replicas
//! (`auto.leader.rebalance.enable`), decided as Kafka's ReplicationControlManager
//! decides them (`electLeaders`, `maybeBalancePartitionLeaders`).

use serde::{Deserialize, Serialize};

use super::metadata::{ClusterMetadata, PartitionAssignment, TopicMeta};
use super::records::{LeaderChange, MetadataRecord};
use super::rpc::AdminResult;
use crate::ids::BrokerId;
use crate::protocol::ErrorCode;

/// Kafka's ElectionType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// The first replica leads again, if it is in sync and live.
    Preferred,
    /// A partition without a leader gets one: an in-sync replica if one is live,
    /// else any live replica, with what it holds.
    Unclean,
}

impl ElectionType {
    /// From the wire (v1+; v0 asks for preferred elections only).
    pub fn from_wire(value: i8) -> Option<ElectionType> {
        match value {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }
}

/// Per topic named, the result of each partition's election.
pub type ElectionResults = Vec<(String, Vec<(i32, AdminResult)>)>;

/// How many leaderships one balancing pass moves at most (Kafka's
/// `maxElectionsPerImbalance`); the rest wait for the next pass.
pub const BALANCE_ELECTIONS_MAX: usize = 1000;

fn live(current: &ClusterMetadata, b: &BrokerId) -> bool {
    current.brokers.get(b).is_some_and(|i| !i.fenced)
}

fn has_preferred_leader(a: &PartitionAssignment) -> bool {
    a.leader.is_some() && a.leader == a.replicas.first().copied()
}

/// One partition's election, as a record, or why there is none.
fn elect(
    current: &ClusterMetadata,
    topic: &TopicMeta,
    partition: i32,
    election: ElectionType,
) -> Result<MetadataRecord, (ErrorCode, Option<String>)> {
    let a = topic.partition(partition).ok_or_else(|| {
        (
            ErrorCode::UnknownTopicOrPartition,
            Some(format!("No such partition as {}-{partition}", topic.name)),
        )
    })?;
    let change = |leader: BrokerId, isr: Option<Vec<BrokerId>>| MetadataRecord::PartitionChange {
        topic_id: topic.id,
        partition,
        leader: LeaderChange::To(leader),
        isr,
    };
    match election {
        ElectionType::Preferred => {
            if has_preferred_leader(a) {
                return Err((ErrorCode::ElectionNotNeeded, None));
            }
            match a.replicas.first() {
                Some(p) if a.isr.contains(p) && live(current, p) => Ok(change(*p, None)),
                _ => Err((ErrorCode::PreferredLeaderNotAvailable, None)),
            }
        }
        ElectionType::Unclean => {
            if a.leader.is_some() {
                return Err((ErrorCode::ElectionNotNeeded, None));
            }
            let in_sync = a
                .replicas
                .iter()
                .find(|b| a.isr.contains(b) && live(current, b));
            if let Some(b) = in_sync {
                return Ok(change(*b, None));
            }
            match a.replicas.iter().find(|b| live(current, b)) {
                // What only the ISR held is lost, as in Kafka.
                Some(b) => Ok(change(*b, Some(vec![*b]))),
                None => Err((ErrorCode::EligibleLeadersNotAvailable, None)),
            }
        }
    }
}

/// Plans an ElectLeaders request: `asked` names topics and partitions, or is `None`
/// for every partition of every topic (whose answer, as Kafka's, leaves out the
/// partitions that needed no election).
pub fn plan_elect_leaders(
    current: &ClusterMetadata,
    election: ElectionType,
    asked: Option<&[(String, Vec<i32>)]>,
) -> (Vec<MetadataRecord>, ElectionResults) {
    let mut records = Vec::new();
    let mut results = Vec::new();
    let decide = |topic: &TopicMeta, p: i32, records: &mut Vec<MetadataRecord>| {
        elect(current, topic, p, election).map(|r| records.push(r))
    };
    match asked {
        None => {
            for t in current.topics.values() {
                let answers = (0..t.partition_count())
                    .map(|p| (p, decide(t, p, &mut records)))
                    .filter(|(_, r)| !matches!(r, Err((ErrorCode::ElectionNotNeeded, _))))
                    .collect();
                results.push((t.name.clone(), answers));
            }
        }
        Some(asked) => {
            for (name, partitions) in asked {
                let answers = partitions
                    .iter()
                    .map(|p| {
                        let r = match current.topic(name) {
                            Some(t) => decide(t, *p, &mut records),
                            None => Err((
                                ErrorCode::UnknownTopicOrPartition,
                                Some(format!("No such topic as {name}")),
                            )),
                        };
                        (*p, r)
                    })
                    .collect();
                results.push((name.clone(), answers));
            }
        }
    }
    (records, results)
}

/// Moves leaderships back to preferred replicas that are in sync and live, at most
/// `BALANCE_ELECTIONS_MAX` of them.
pub fn plan_preferred_leaders(current: &ClusterMetadata) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for t in current.topics.values() {
        for (p, a) in t.partitions.iter().enumerate() {
            if records.len() >= BALANCE_ELECTIONS_MAX {
                return records;
            }
            // As Kafka's imbalanced partitions: led, but not by the preferred replica.
            if a.leader.is_none() || has_preferred_leader(a) {
                continue;
            }
            if let Ok(r) = elect(current, t, p as i32, ElectionType::Preferred) {
                records.push(r);
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::metadata::test_image;

    fn after(image: &ClusterMetadata, records: &[MetadataRecord]) -> ClusterMetadata {
        let mut next = image.clone();
        for r in records {
            next.apply(r).unwrap();
        }
        next
    }

    fn set(image: &mut ClusterMetadata, p: usize, leader: Option<i32>, isr: &[i32]) {
        let mut t = TopicMeta::clone(image.topic("t").unwrap());
        t.partitions[p].leader = leader.map(BrokerId);
        t.partitions[p].isr = isr.iter().map(|b| BrokerId(*b)).collect();
        image.insert(t);
    }

    fn code(r: &AdminResult) -> Option<ErrorCode> {
        r.as_ref().err().map(|(c, _)| *c)
    }

    #[test]
    fn preferred_election_answers_as_kafka() {
        let mut image = test_image(&[1, 2, 3], "t", &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]]);
        set(&mut image, 0, Some(2), &[1, 2, 3]); // moved; preferred back in sync
        set(&mut image, 2, Some(1), &[1, 2]); // moved; preferred out of sync
        let asked = vec![
            ("t".to_string(), vec![0, 1, 2, 7]),
            ("nope".to_string(), vec![0]),
        ];
        let (records, results) = plan_elect_leaders(&image, ElectionType::Preferred, Some(&asked));
        let codes: Vec<_> = results[0].1.iter().map(|(p, r)| (*p, code(r))).collect();
        assert_eq!(
            codes,
            vec![
                (0, None),
                (1, Some(ErrorCode::ElectionNotNeeded)),
                (2, Some(ErrorCode::PreferredLeaderNotAvailable)),
                (7, Some(ErrorCode::UnknownTopicOrPartition)),
            ]
        );
        assert_eq!(
            code(&results[1].1[0].1),
            Some(ErrorCode::UnknownTopicOrPartition)
        );
        let next = after(&image, &records);
        let p0 = &next.topic("t").unwrap().partitions[0];
        assert_eq!(
            (p0.leader, p0.isr.len(), p0.leader_epoch.0),
            (Some(BrokerId(1)), 3, 1)
        );

        // Every partition: only those that needed an election are answered.
        let (_, all) = plan_elect_leaders(&image, ElectionType::Preferred, None);
        let partitions: Vec<i32> = all[0].1.iter().map(|(p, _)| *p).collect();
        assert_eq!(partitions, vec![0, 2]);

        // A fenced preferred replica is not available, in sync or not.
        image.brokers.get_mut(&BrokerId(1)).unwrap().fenced = true;
        let (records, results) = plan_elect_leaders(&image, ElectionType::Preferred, Some(&asked));
        assert!(records.is_empty());
        assert_eq!(
            code(&results[0].1[0].1),
            Some(ErrorCode::PreferredLeaderNotAvailable)
        );
    }

    #[test]
    fn unclean_election_only_for_partitions_without_a_leader() {
        let mut image = test_image(&[1, 2, 3], "t", &[&[1, 2, 3], &[1, 2, 3], &[1, 2, 3]]);
        set(&mut image, 1, None, &[1]); // its last in-sync replica is gone
        set(&mut image, 2, None, &[2, 3]); // in-sync replicas are back
        image.brokers.get_mut(&BrokerId(1)).unwrap().fenced = true;
        let asked = vec![("t".to_string(), vec![0, 1, 2])];
        let (records, results) = plan_elect_leaders(&image, ElectionType::Unclean, Some(&asked));
        let codes: Vec<_> = results[0].1.iter().map(|(_, r)| code(r)).collect();
        assert_eq!(codes, vec![Some(ErrorCode::ElectionNotNeeded), None, None]);
        let next = after(&image, &records);
        let t = next.topic("t").unwrap();
        // Partition 1: an out-of-sync replica, alone in the ISR; partition 2: in sync.
        assert_eq!(
            (t.partitions[1].leader, t.partitions[1].isr.clone()),
            (Some(BrokerId(2)), vec![BrokerId(2)])
        );
        assert_eq!(
            (t.partitions[2].leader, t.partitions[2].isr.len()),
            (Some(BrokerId(2)), 2)
        );

        for b in [2, 3] {
            image.brokers.get_mut(&BrokerId(b)).unwrap().fenced = true;
        }
        let (records, results) = plan_elect_leaders(&image, ElectionType::Unclean, Some(&asked));
        assert!(records.is_empty());
        assert_eq!(
            code(&results[0].1[1].1),
            Some(ErrorCode::EligibleLeadersNotAvailable)
        );
    }

    #[test]
    fn balancing_moves_only_to_live_in_sync_preferred_replicas() {
        let mut image = test_image(&[1, 2, 3], "t", &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]]);
        set(&mut image, 0, Some(2), &[1, 2, 3]);
        set(&mut image, 1, Some(3), &[3, 1]); // preferred out of sync: stays
        set(&mut image, 2, None, &[3]); // offline: not balancing's business
        let next = after(&image, &plan_preferred_leaders(&image));
        let leaders: Vec<_> = next
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .map(|a| a.leader)
            .collect();
        assert_eq!(leaders, vec![Some(BrokerId(1)), Some(BrokerId(3)), None]);
        assert!(plan_preferred_leaders(&next).is_empty());
    }
}
