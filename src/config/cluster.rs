//! The settings that make a node part of a cluster, under Kafka's KRaft names:
//! `process.roles`, `controller.quorum.voters`, `controller.listener.names`, the
//! listeners (a client one, and a CONTROLLER one for the quorum), `broker.rack`.
//!
//! With no `controller.quorum.voters`, a node is a one-node cluster: its own
//! controller quorum, needing no controller listener (today's single broker).

use super::{invalid, ConfigError, Listener};

/// `process.roles`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// A member of the controller quorum (`id@host:port` in `controller.quorum.voters`).
#[derive(Debug, Clone, PartialEq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub roles: Roles,
    /// Empty: a one-node cluster.
    pub voters: Vec<Voter>,
    /// Where this node serves the quorum; `None` in a one-node cluster.
    pub controller_listener: Option<Listener>,
    pub rack: Option<String>,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: u64,
    /// `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms.
    pub leader_imbalance_check_interval_ms: u64,
}

pub fn parse_roles(value: &str) -> Result<Roles, ConfigError> {
    let key = "process.roles";
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for role in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        match role {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            _ => return Err(invalid(key, value, format!("unknown role {role:?}"))),
        }
    }
    match (roles.broker, roles.controller) {
        (true, true) => Ok(roles),
        (false, false) => Err(invalid(key, value, "name broker, controller or both")),
        // Broker-only nodes follow the quorum as observers, controller-only nodes
        // serve no clients: neither is built yet.
        _ => Err(invalid(
            key,
            value,
            "only combined mode (broker,controller) is built for now",
        )),
    }
}

fn host_port(key: &str, value: &str, hp: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = hp
        .rsplit_once(':')
        .ok_or_else(|| invalid(key, value, "missing :port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(key, value, "port must be 0-65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port))
}

/// `controller.quorum.voters`: `id@host:port`, comma-separated.
pub fn parse_voters(value: &str) -> Result<Vec<Voter>, ConfigError> {
    let key = "controller.quorum.voters";
    let mut voters: Vec<Voter> = Vec::new();
    for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let (id, hp) = v
            .split_once('@')
            .ok_or_else(|| invalid(key, value, format!("{v:?} is not id@host:port")))?;
        let id: i32 = id
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| invalid(key, value, format!("{id:?} is not a node id")))?;
        let (host, port) = host_port(key, value, hp)?;
        if voters.iter().any(|o| o.id == id) {
            return Err(invalid(key, value, format!("node {id} is listed twice")));
        }
        voters.push(Voter { id, host, port });
    }
    Ok(voters)
}

/// `listeners`: `NAME://host:port`, comma-separated. Returns the client listener
/// (the one not named in `controller.listener.names`, PLAINTEXT) and the controller
/// listener, if any.
pub fn parse_listeners(
    key: &str,
    value: &str,
    controller_names: &str,
) -> Result<(Option<Listener>, Option<Listener>), ConfigError> {
    let controller_names: Vec<&str> = controller_names.split(',').map(str::trim).collect();
    let (mut client, mut controller) = (None, None);
    for l in value.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        let (name, hp) = l
            .split_once("://")
            .ok_or_else(|| invalid(key, value, format!("{l:?} is not NAME://host:port")))?;
        let (host, port) = host_port(key, value, hp)?;
        let listener = Listener { host, port };
        let slot = if controller_names.contains(&name) {
            &mut controller
        } else if name == "PLAINTEXT" {
            &mut client
        } else {
            return Err(invalid(
                key,
                value,
                format!("listener {name}: only PLAINTEXT and the controller listener ({}) are supported", controller_names.join(",")),
            ));
        };
        if slot.replace(listener).is_some() {
            return Err(invalid(
                key,
                value,
                format!("listener {name} is given twice"),
            ));
        }
    }
    Ok((client, controller))
}

/// Checks the settings against each other, as Kafka's KafkaConfig does.
pub fn check(config: &ClusterConfig, node_id: i32) -> Result<(), ConfigError> {
    let voters = config
        .voters
        .iter()
        .map(|v| format!("{}@{}:{}", v.id, v.host, v.port))
        .collect::<Vec<_>>()
        .join(",");
    if config.voters.is_empty() {
        return Ok(());
    }
    if config.roles.controller && !config.voters.iter().any(|v| v.id == node_id) {
        return Err(invalid(
            "controller.quorum.voters",
            &voters,
            format!("node.id {node_id} has the controller role but is not a voter"),
        ));
    }
    if config.roles.controller && config.controller_listener.is_none() {
        return Err(invalid(
            "listeners",
            "",
            "a controller needs a listener named in controller.listener.names (CONTROLLER://host:port)",
        ));
    }
    if config.session_timeout_ms <= config.heartbeat_interval_ms {
        return Err(invalid(
            "broker.session.timeout.ms",
            &config.session_timeout_ms.to_string(),
            "must be larger than broker.heartbeat.interval.ms",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_listeners_and_roles_parse_as_kafka_writes_them() {
        let v = parse_voters("1@localhost:9093, 2@[::1]:9094").unwrap();
        assert_eq!(
            v,
            vec![
                Voter {
                    id: 1,
                    host: "localhost".into(),
                    port: 9093
                },
                Voter {
                    id: 2,
                    host: "::1".into(),
                    port: 9094
                },
            ]
        );
        for bad in ["1@h", "x@h:1", "1:h:1", "1@h:1,1@h:2", "-1@h:1"] {
            assert!(parse_voters(bad).is_err(), "{bad}");
        }
        let (client, controller) = parse_listeners(
            "listeners",
            "PLAINTEXT://:9092,CONTROLLER://127.0.0.1:9093",
            "CONTROLLER",
        )
        .unwrap();
        assert_eq!(client.unwrap().port, 9092);
        assert_eq!(controller.unwrap().host, "127.0.0.1");
        assert!(parse_listeners("listeners", "SSL://:9093", "CONTROLLER").is_err());
        assert!(
            parse_listeners("listeners", "PLAINTEXT://:1,PLAINTEXT://:2", "CONTROLLER").is_err()
        );
        assert_eq!(
            parse_roles("broker,controller").unwrap(),
            Roles {
                broker: true,
                controller: true
            }
        );
        assert!(parse_roles("broker").is_err());
        assert!(parse_roles("worker").is_err());
    }

    #[test]
    fn a_controller_must_be_a_voter_with_a_controller_listener() {
        let mut c = ClusterConfig {
            roles: Roles {
                broker: true,
                controller: true,
            },
            voters: parse_voters("1@h:1,2@h:2").unwrap(),
            controller_listener: None,
            rack: None,
            heartbeat_interval_ms: 2000,
            session_timeout_ms: 9000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
        };
        assert!(check(&c, 1).is_err(), "no controller listener");
        c.controller_listener = Some(Listener {
            host: "h".into(),
            port: 1,
        });
        assert!(check(&c, 1).is_ok());
        assert!(check(&c, 3).is_err(), "not a voter");
        c.voters.clear();
        assert!(check(&c, 3).is_ok(), "a one-node cluster needs neither");
    }
}
