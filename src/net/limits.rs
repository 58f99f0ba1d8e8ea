//! Connection counts across all shards: `max.connections` and
//! `max.connections.per.ip`.
//!
//! Every shard accepts on its own SO_REUSEPORT listener, so one client's connections
//! land on several shards and the counts must be shared. They change only on accept
//! and close, never per request, so a mutex is cheap enough here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct ConnectionCounts {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
    refused: AtomicU64,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a new connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Total(usize),
    PerIp(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Total(max) => write!(f, "the broker has max.connections={max} open"),
            Refused::PerIp(max) => {
                write!(f, "this address has max.connections.per.ip={max} open")
            }
        }
    }
}

/// One counted connection; dropping it gives its place back.
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    ip: IpAddr,
}

impl ConnectionCounts {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionCounts> {
        Arc::new(ConnectionCounts {
            max_total,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
            refused: AtomicU64::new(0),
        })
    }

    /// Counts a new connection from `ip`, or says why it may not be opened.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let refusal = if c.total >= self.max_total {
            Some(Refused::Total(self.max_total))
        } else if c.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            Some(Refused::PerIp(self.max_per_ip))
        } else {
            None
        };
        if let Some(r) = refusal {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(r);
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_insert(0) += 1;
        Ok(ConnectionSlot {
            counts: self.clone(),
            ip,
        })
    }

    /// Connections refused so far (for rate-limiting the log).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self.counts.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_address_and_gives_places_back() {
        let counts = ConnectionCounts::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = counts.admit(a).unwrap();
        let _a2 = counts.admit(a).unwrap();
        assert_eq!(counts.admit(a).err(), Some(Refused::PerIp(2)));
        let _b1 = counts.admit(b).unwrap();
        assert_eq!(counts.admit(b).err(), Some(Refused::Total(3)));
        assert_eq!(counts.refused(), 2);
        drop(a1);
        assert_eq!(counts.open(), 2);
        let _b2 = counts.admit(b).unwrap();
        assert_eq!(counts.admit(a).err(), Some(Refused::Total(3)));
    }
}
