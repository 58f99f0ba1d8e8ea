//! The storage I/O seam for fault injection. Every segment write, read and fdatasync
//! asks this module first; tests make writes come back short or fail with EIO or
//! ENOSPC, and reads and syncs fail with EIO, deterministically from a seed, in a real
//! broker process.
//!
//! Enabled only by the environment variable `RINGLOG_FAULTS` (a testing knob, not an
//! operator setting), e.g. `seed=7,short_write=0.05,eio=0.02,enospc=0.01,
//! read_eio=0.1,fsync_eio=0.01`: each write attempt is cut short, or fails (after
//! writing a prefix, like a torn write), and each read or fdatasync fails, with the
//! given probabilities. The broker installs it once its shards have recovered, so
//! only serving is faulted. Each shard draws from its own stream (seed + shard id), so
//! a run is reproducible per shard; reads and syncs draw only when their rate is set,
//! so a seed's write faults stay what they were. With the variable unset, an I/O costs
//! one thread-local check.

use std::cell::{Cell, RefCell};
use std::io;

pub const ENV: &str = "RINGLOG_FAULTS";

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRates {
    pub seed: u64,
    pub short_write: f64,
    pub eio: f64,
    pub enospc: f64,
    /// Reads (`read_at`, `read_cached`) that fail with EIO.
    pub read_eio: f64,
    /// fdatasyncs that fail with EIO.
    pub fsync_eio: f64,
}

/// What the next write attempt of `len` bytes should do.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteFault {
    None,
    /// Write only this many bytes (a short write; the caller goes on with the rest).
    Short(usize),
    /// Write this many bytes, then fail with this errno.
    Fail {
        written: usize,
        errno: i32,
    },
}

struct Plan {
    rates: FaultRates,
    state: Cell<u64>,
    injected: Cell<u64>,
}

thread_local! {
    static PLAN: RefCell<Option<Plan>> = const { RefCell::new(None) };
}

pub fn parse(spec: &str) -> Result<FaultRates, String> {
    let mut rates = FaultRates {
        seed: 1,
        short_write: 0.0,
        eio: 0.0,
        enospc: 0.0,
        read_eio: 0.0,
        fsync_eio: 0.0,
    };
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{ENV}: expected key=value, got {part:?}"))?;
        let bad = || format!("{ENV}: bad value for {k}: {v:?}");
        let rate = || {
            v.parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(bad)
        };
        match k {
            "seed" => rates.seed = v.parse().map_err(|_| bad())?,
            "short_write" => rates.short_write = rate()?,
            "eio" => rates.eio = rate()?,
            "enospc" => rates.enospc = rate()?,
            "read_eio" => rates.read_eio = rate()?,
            "fsync_eio" => rates.fsync_eio = rate()?,
            _ => return Err(format!("{ENV}: unknown key {k:?}")),
        }
    }
    Ok(rates)
}

/// Installs the plan for the current shard's thread.
pub fn install(rates: FaultRates, shard: u64) {
    let seed = rates.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ shard.wrapping_add(1);
    PLAN.with(|p| {
        *p.borrow_mut() = Some(Plan {
            rates,
            state: Cell::new(seed | 1),
            injected: Cell::new(0),
        });
    });
}

/// Faults injected on this thread so far.
pub fn injected() -> u64 {
    PLAN.with(|p| p.borrow().as_ref().map_or(0, |plan| plan.injected.get()))
}

impl Plan {
    /// xorshift64*: small, fast, and the same sequence for the same seed.
    fn next_unit(&self) -> f64 {
        let mut x = self.state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn before_write(len: usize) -> WriteFault {
    PLAN.with(|p| {
        let plan = p.borrow();
        let Some(plan) = plan.as_ref() else {
            return WriteFault::None;
        };
        let r = plan.next_unit();
        let cut = (len as f64 * plan.next_unit()) as usize;
        let FaultRates {
            short_write,
            eio,
            enospc,
            ..
        } = plan.rates;
        let fault = if r < short_write && len > 1 {
            WriteFault::Short(cut.clamp(1, len - 1))
        } else if r < short_write + eio {
            WriteFault::Fail {
                written: cut,
                errno: libc::EIO,
            }
        } else if r < short_write + eio + enospc {
            WriteFault::Fail {
                written: cut,
                errno: libc::ENOSPC,
            }
        } else {
            WriteFault::None
        };
        if fault != WriteFault::None {
            plan.injected.set(plan.injected.get() + 1);
        }
        fault
    })
}

/// EIO for this read, or nothing.
pub fn before_read() -> Option<io::Error> {
    fail_with_rate(|r| r.read_eio)
}

/// EIO for this fdatasync, or nothing.
pub fn before_sync() -> Option<io::Error> {
    fail_with_rate(|r| r.fsync_eio)
}

fn fail_with_rate(rate: impl Fn(&FaultRates) -> f64) -> Option<io::Error> {
    PLAN.with(|p| {
        let plan = p.borrow();
        let plan = plan.as_ref()?;
        let rate = rate(&plan.rates);
        if rate <= 0.0 || plan.next_unit() >= rate {
            return None;
        }
        plan.injected.set(plan.injected.get() + 1);
        Some(error(libc::EIO))
    })
}

pub fn error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// The seam as a writer of `len` bytes uses it: how many to write now, and the error
/// to report once they are written (an injected failure).
pub fn plan_write(len: usize) -> (usize, Option<io::Error>) {
    match before_write(len) {
        WriteFault::None => (len, None),
        WriteFault::Short(n) => (n, None),
        WriteFault::Fail { written, errno } => (written, Some(error(errno))),
    }
}

/// After a write `plan_write` planned wrote `written` bytes: its injected error, or
/// an error if it wrote nothing.
pub fn after_write(written: usize, failure: Option<io::Error>) -> io::Result<()> {
    if let Some(e) = failure {
        return Err(e);
    }
    if written == 0 {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "write returned 0 bytes",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let rates = parse("seed=42,short_write=0.2,eio=0.1,enospc=0.1").unwrap();
        let run = || {
            install(rates, 3);
            (0..200).map(|_| before_write(4096)).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let faults = a.iter().filter(|f| **f != WriteFault::None).count();
        assert!(
            (40..=120).contains(&faults),
            "about 40% of 200 writes, got {faults}"
        );
        assert!(a
            .iter()
            .any(|f| matches!(f, WriteFault::Short(n) if *n > 0 && *n < 4096)));
        assert!(a
            .iter()
            .any(|f| matches!(f, WriteFault::Fail { errno, .. } if *errno == libc::EIO)));
        assert!(parse("bogus=1").is_err());
    }

    #[test]
    fn reads_and_syncs_fail_at_their_rates_and_draw_nothing_when_off() {
        let writes_only = parse("seed=5,eio=0.3").unwrap();
        install(writes_only, 0);
        let expected: Vec<_> = (0..50).map(|_| before_write(100)).collect();
        install(writes_only, 0);
        for want in &expected {
            assert!(
                before_read().is_none() && before_sync().is_none(),
                "rates 0"
            );
            assert_eq!(&before_write(100), want, "reads and syncs drew nothing");
        }
        install(parse("seed=5,read_eio=0.5,fsync_eio=1").unwrap(), 0);
        let failed_reads = (0..50).filter(|_| before_read().is_some()).count();
        assert!(
            (10..=40).contains(&failed_reads),
            "about half of 50: {failed_reads}"
        );
        let e = before_sync().expect("rate 1");
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }
}
