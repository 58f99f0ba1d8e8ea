//! Keeps the ISR of this core's leaderships true (Kafka's ISR expiration and
//! expansion, KIP-497): a periodic task asks the controller to remove followers that
//! have lagged for `replica.lag.time.max.ms` and to add those caught up to the high
//! watermark. One change per partition is with the controller at a time; the new
//! ISR takes effect when the metadata that records it reaches this core.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::{controller_client, Core, CONTROLLER_SHARD};
use crate::cluster::controller::AlterIsr;

/// How often the ISRs are looked at (Kafka checks expiry every half lag time and
/// expansion on every fetch; this is both, often enough for either).
fn check_interval(lag_max: Duration) -> Duration {
    (lag_max / 4).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

/// Starts this core's task, once.
pub fn start(core: &Rc<Core>) {
    if !core.isr_manager_running.replace(true) {
        let core = core.clone();
        glommio::spawn_local(async move { run(core).await }).detach();
    }
}

async fn run(core: Rc<Core>) {
    let lag_max = Duration::from_millis(core.config.replica_lag_time_max_ms);
    loop {
        glommio::timer::sleep(check_interval(lag_max)).await;
        let now = Instant::now();
        let mut changes = Vec::new();
        for (key, state) in core.leaders.borrow_mut().iter_mut() {
            if state.alter_in_flight {
                continue;
            }
            let Some(log) = core.log(key) else { continue };
            let offsets = log.offsets();
            if let Some(isr) =
                state.wanted_isr(now, lag_max, offsets.log_end, offsets.high_watermark)
            {
                state.alter_in_flight = true;
                changes.push((
                    *key,
                    AlterIsr {
                        leader: core.node_id(),
                        topic_id: key.0,
                        partition: key.1,
                        leader_epoch: state.leader_epoch.0,
                        partition_epoch: state.partition_epoch,
                        isr,
                    },
                ));
            }
        }
        for (key, change) in changes {
            let core = core.clone();
            glommio::spawn_local(async move {
                let asked = change.isr.clone();
                let answer = core
                    .submit_to(CONTROLLER_SHARD, move |c| async move {
                        controller_client::alter_isr(&c, change).await
                    })
                    .await;
                match answer {
                    Ok(Ok(())) => info!(topic_id = %key.0, partition = key.1, isr = ?asked, "asked for a new ISR"),
                    Ok(Err(code)) => debug!(topic_id = %key.0, partition = key.1, ?code, "the controller refused an ISR change"),
                    Err(e) => debug!(error = %e, "the controller core is gone"),
                }
                if let Some(state) = core.leaders.borrow_mut().get_mut(&key) {
                    state.alter_in_flight = false;
                }
            })
            .detach();
        }
    }
}
