//! The transaction coordinator's and producer state's settings (Kafka's names and
//! defaults), parsed apart from the rest of `Config`.

use super::{parse_num, ConfigError};

#[derive(Debug, Clone, Copy)]
pub struct TxnSettings {
    pub state_log_partitions: i32,
    pub state_log_replication_factor: usize,
    pub state_log_min_isr: usize,
    pub state_log_segment_bytes: u64,
    pub max_timeout_ms: i32,
    pub id_expiration_ms: i64,
    pub abort_timed_out_interval_ms: u64,
    pub remove_expired_interval_ms: u64,
    pub producer_id_expiration_ms: i64,
    pub producer_id_expiration_check_interval_ms: u64,
}

impl TxnSettings {
    pub fn parse(get: impl Fn(&'static str) -> String) -> Result<TxnSettings, ConfigError> {
        let num = |name: &'static str, min: i64, max: i64| -> Result<i64, ConfigError> {
            parse_num(name, &get(name), min, max)
        };
        let int_max = i32::MAX as i64;
        Ok(TxnSettings {
            state_log_partitions: num("transaction.state.log.num.partitions", 1, 100_000)? as i32,
            state_log_replication_factor: num(
                "transaction.state.log.replication.factor",
                1,
                i16::MAX as i64,
            )? as usize,
            state_log_min_isr: num("transaction.state.log.min.isr", 1, int_max)? as usize,
            state_log_segment_bytes: num("transaction.state.log.segment.bytes", 1024, int_max)?
                as u64,
            max_timeout_ms: num("transaction.max.timeout.ms", 1, int_max)? as i32,
            id_expiration_ms: num("transactional.id.expiration.ms", 1, int_max)?,
            abort_timed_out_interval_ms: num(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                1,
                int_max,
            )? as u64,
            remove_expired_interval_ms: num(
                "transaction.remove.expired.transaction.cleanup.interval.ms",
                1,
                int_max,
            )? as u64,
            producer_id_expiration_ms: num("producer.id.expiration.ms", 1, int_max)?,
            producer_id_expiration_check_interval_ms: num(
                "producer.id.expiration.check.interval.ms",
                1,
                int_max,
            )? as u64,
        })
    }
}
