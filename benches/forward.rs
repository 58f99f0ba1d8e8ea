//! Cross-shard forwarding: round trips through `shard::submit_to` between two shards
//! (two glommio executors, pinned where there are two CPUs, and the channel mesh the
//! broker uses), one at a time and 64 in flight. A round trip is a job there and a
//! reply job back, both over the mesh.
//! `cargo bench --bench forward [-- ROUND_TRIPS [SPIN_US]]` (SPIN_US as
//! `ringlog.idle.spin.us`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use ringlog::config::Config;
use ringlog::node::view::{MetadataView, ViewHandle};
use ringlog::node::Core;
use ringlog::shard::{serve_jobs, Mesh, ShardId, MESH_CHANNEL_CAPACITY};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let round_trips: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    // As `ringlog.idle.spin.us`: how long an idle executor polls before it sleeps.
    let spin_us: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let cpus = ringlog::runtime::available_cpus();
    let dir = std::env::temp_dir().join(format!("ringlog-forward-bench-{}", std::process::id()));
    let (config, _) = Config::load(None, &[format!("log.dirs={}", dir.display())], &cpus)
        .expect("default config");
    let config = Arc::new(config);
    let metadata = Arc::new(ViewHandle::new(MetadataView::empty(config.clone())));
    let mesh = MeshBuilder::full(2, MESH_CHANNEL_CAPACITY);
    let done = Arc::new(AtomicBool::new(false));
    let executors: Vec<_> = (0..2usize)
        .map(|i| {
            let (config, metadata, mesh, done) =
                (config.clone(), metadata.clone(), mesh.clone(), done.clone());
            let placement = match cpus.get(i) {
                Some(&cpu) if cpus.len() >= 2 => Placement::Fixed(cpu),
                _ => Placement::Unbound,
            };
            LocalExecutorBuilder::new(placement)
                .name(&format!("bench-shard-{i}"))
                .spin_before_park(Duration::from_micros(spin_us))
                .spawn(move || async move {
                    let (senders, receivers) = mesh.join().await.expect("mesh");
                    let shard =
                        Core::new(Mesh::new(ShardId(i), 2, senders), config, metadata, None);
                    serve_jobs(&shard, receivers);
                    if i == 0 {
                        measure(&shard, round_trips).await;
                        done.store(true, Ordering::Relaxed);
                    } else {
                        while !done.load(Ordering::Relaxed) {
                            glommio::timer::sleep(Duration::from_millis(5)).await;
                        }
                    }
                })
                .expect("executor")
        })
        .collect();
    for e in executors {
        e.join().expect("executor ran");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn measure(shard: &std::rc::Rc<Core>, round_trips: u64) {
    let target = ShardId(1);
    // Warm up.
    for _ in 0..1000 {
        shard.submit_to(target, |_| async { 0u64 }).await.unwrap();
    }
    let started = Instant::now();
    for i in 0..round_trips {
        let got = shard
            .submit_to(target, move |_| async move { i })
            .await
            .unwrap();
        assert_eq!(got, i);
    }
    let serial = started.elapsed();
    println!(
        "forward, one at a time:  {:>9.0} round trips/s, {:>6.2} µs each",
        round_trips as f64 / serial.as_secs_f64(),
        serial.as_secs_f64() * 1e6 / round_trips as f64
    );
    let in_flight = 64u64;
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                for i in 0..round_trips / in_flight {
                    let got = shard
                        .submit_to(target, move |_| async move { i })
                        .await
                        .unwrap();
                    assert_eq!(got, i);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    let pipelined = started.elapsed();
    println!(
        "forward, {in_flight} in flight:   {:>9.0} round trips/s",
        (round_trips / in_flight * in_flight) as f64 / pipelined.as_secs_f64()
    );
}
