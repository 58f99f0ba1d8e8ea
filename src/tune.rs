//! `ringlog tune --check`: reports what on this host differs from tuning/README.md
//! (as `rpk redpanda tune` does for Redpanda). It reads /proc and /sys only and
//! changes nothing; tuning/99-ringlog.conf and tuning/ringlog.service apply the
//! recommendations.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Differs from the recommendation.
    Off,
    /// Cannot be read here (e.g. not exposed inside a virtual machine).
    Unknown,
}

pub struct Check {
    pub name: String,
    pub current: String,
    pub recommended: String,
    pub status: Status,
    pub why: &'static str,
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn sysctl(name: &str) -> Option<String> {
    read(Path::new("/proc/sys").join(name.replace('.', "/")))
}

/// A value read from /proc or /sys that should be exactly `want`.
fn equals(
    name: String,
    value: Option<String>,
    want: &str,
    recommended: &str,
    why: &'static str,
) -> Check {
    Check {
        name,
        status: match value.as_deref() {
            Some(v) if v == want => Status::Ok,
            Some(_) => Status::Off,
            None => Status::Unknown,
        },
        current: value.unwrap_or_else(|| "unreadable".into()),
        recommended: recommended.into(),
        why,
    }
}

/// A sysctl that must be at least (or at most) `bound`.
fn numeric(name: &str, at_least: bool, bound: u64, why: &'static str) -> Check {
    let current = sysctl(name).map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "));
    // Some sysctls hold several numbers (tcp_rmem: min default max): the last counts.
    let value = current
        .as_deref()
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse::<u64>().ok());
    let status = match value {
        None => Status::Unknown,
        Some(v) if (at_least && v >= bound) || (!at_least && v <= bound) => Status::Ok,
        Some(_) => Status::Off,
    };
    Check {
        name: name.to_string(),
        current: current.unwrap_or_else(|| "unreadable".into()),
        recommended: format!("{} {bound}", if at_least { ">=" } else { "<=" }),
        status,
        why,
    }
}

fn rlimit(resource: libc::__rlimit_resource_t, name: &str, bound: u64, why: &'static str) -> Check {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    let ok = unsafe { libc::getrlimit(resource, &mut lim) } == 0;
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    Check {
        name: name.to_string(),
        current: if ok {
            format!("soft {} hard {}", show(lim.rlim_cur), show(lim.rlim_max))
        } else {
            "unreadable".into()
        },
        recommended: format!(">= {bound}"),
        status: if !ok {
            Status::Unknown
        } else if lim.rlim_max >= bound {
            // ringlog raises its soft limits to the hard ones at start.
            Status::Ok
        } else {
            Status::Off
        },
        why,
    }
}

/// `/sys/dev/block/MAJOR:MINOR` of the device holding `dir`.
fn sys_dev_block(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    Some(PathBuf::from(format!("/sys/dev/block/{major}:{minor}")))
}

/// The block device holding `dir`, as its /sys/block entry (a partition's disk).
fn block_device_of(dir: &Path) -> Option<PathBuf> {
    let sys = std::fs::canonicalize(sys_dev_block(dir)?).ok()?;
    if sys.join("queue").exists() {
        Some(sys)
    } else {
        sys.parent().map(Path::to_path_buf)
    }
}

/// The mount holding `path` in a /proc/self/mountinfo text: (mount point, file
/// system type, mount and superblock options joined), the longest mount point that
/// is a prefix of `path`.
fn mount_of(mountinfo: &str, path: &Path) -> Option<(String, String, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let mount: Vec<&str> = mount.split_whitespace().collect();
            let fs: Vec<&str> = fs.split_whitespace().collect();
            let (point, options) = (*mount.get(4)?, *mount.get(5)?);
            let (fstype, super_options) = (*fs.first()?, fs.get(2).copied().unwrap_or(""));
            // Octal escapes (\040 for a space) are rare in mount points; such a
            // mount simply does not match.
            path.starts_with(point).then(|| {
                (
                    point.to_string(),
                    fstype.to_string(),
                    format!("{options},{super_options}"),
                )
            })
        })
        .max_by_key(|(point, _, _)| point.len())
}

/// The log directory's mount: online `discard` makes every freeing of blocks wait for
/// the device (seen here: an extent conversion after writeback waited 129 ms in
/// `blkdev_issue_discard`, holding the inode's block map).
fn discard_check(mount: &Option<(String, String, String)>) -> Check {
    let name = format!(
        "discard on {}",
        mount.as_ref().map_or("?", |m| m.0.as_str())
    );
    let (current, status) = match mount {
        Some((_, fstype, options)) => {
            let discard = options.split(',').any(|o| o == "discard");
            (
                format!(
                    "{fstype}, {}",
                    if discard { "discard" } else { "nodiscard" }
                ),
                if discard { Status::Off } else { Status::Ok },
            )
        }
        None => ("unreadable".into(), Status::Unknown),
    };
    Check {
        name,
        current,
        recommended: "nodiscard, fstrim.timer".into(),
        status,
        why: "online discard makes retention and writeback wait for the device",
    }
}

/// ext2/3/4 superblock: where it starts on the device, and where its magic number and
/// its compatible-feature flags lie within it.
const EXT_SUPERBLOCK_AT: usize = 1024;
const EXT_MAGIC_AT: usize = 0x38;
const EXT_MAGIC: u16 = 0xEF53;
const EXT_FEATURE_COMPAT_AT: usize = 0x5C;
const EXT_FEATURE_COMPAT_HAS_JOURNAL: u32 = 0x4;

/// Whether the ext2/3/4 file system whose first bytes are `device_start` has a
/// journal; `None` if they hold no ext superblock.
fn ext_has_journal(device_start: &[u8]) -> Option<bool> {
    let sb = device_start.get(EXT_SUPERBLOCK_AT..)?;
    let magic = u16::from_le_bytes(sb.get(EXT_MAGIC_AT..EXT_MAGIC_AT + 2)?.try_into().ok()?);
    if magic != EXT_MAGIC {
        return None;
    }
    let at = EXT_FEATURE_COMPAT_AT;
    let compat = u32::from_le_bytes(sb.get(at..at + 4)?.try_into().ok()?);
    Some(compat & EXT_FEATURE_COMPAT_HAS_JOURNAL != 0)
}

/// The kernel's name of the device (partition) holding `dir` (`vda`, `nvme0n1p1`).
fn device_name_of(dir: &Path) -> Option<String> {
    let uevent = read(sys_dev_block(dir)?.join("uevent"))?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    Some(name.to_string())
}

/// Whether the ext file system on device `name` has a journal: from its superblock
/// (needs read access to the device), else from the kernel's `journal_task`, which
/// names the journal thread or reads `<none>`.
fn ext_journal_of(name: &str) -> Option<bool> {
    use std::io::Read;
    let mut start = vec![0u8; 2048];
    let from_superblock = std::fs::File::open(format!("/dev/{name}"))
        .and_then(|mut f| f.read_exact(&mut start))
        .ok()
        .and_then(|()| ext_has_journal(&start));
    from_superblock.or_else(|| {
        read(format!("/sys/fs/ext4/{name}/journal_task"))
            .filter(|t| !t.is_empty())
            .map(|t| t != "<none>")
    })
}

/// The log directory's file system keeps a journal. ext4 can be made without one
/// (the development VM's root is): a power cut can then leave it needing `fsck` and
/// lose segment files created shortly before, and every fdatasync after new blocks
/// are written writes their metadata synchronously instead of through a journal commit.
fn journal_check(path: &Path, mount: &Option<(String, String, String)>) -> Check {
    let fstype = mount.as_ref().map_or("?", |m| m.1.as_str()).to_string();
    let (current, status) = match fstype.as_str() {
        "ext2" | "ext3" | "ext4" => match device_name_of(path).and_then(|n| ext_journal_of(&n)) {
            Some(true) => (format!("{fstype}, journal"), Status::Ok),
            Some(false) => (format!("{fstype}, no journal"), Status::Off),
            None => (format!("{fstype}, unreadable"), Status::Unknown),
        },
        "xfs" | "btrfs" | "zfs" => (fstype.clone(), Status::Ok),
        _ => (fstype.clone(), Status::Unknown),
    };
    Check {
        name: "file system journal".into(),
        current,
        recommended: "a journal (ext4 has_journal, or xfs)".into(),
        status,
        why: "without one a power cut can need fsck and lose new segment files",
    }
}

/// virtio-balloon's feature bit for free page reporting (VIRTIO_BALLOON_F_REPORTING).
const BALLOON_F_REPORTING: usize = 5;

/// Whether a virtio device's `features` file (one '0'/'1' per feature bit, bit 0
/// first) has free page reporting.
fn reports_free_pages(features: &str) -> bool {
    features.as_bytes().get(BALLOON_F_REPORTING) == Some(&b'1')
}

/// Free page reporting hands memory the guest frees back to the host, which then
/// faults it in again on the next use. The page cache takes new pages for every
/// buffered write, so each costs such a fault (measured on the development VM: `dd`
/// into a new file at 0.9-1.4 GB/s from long-freed memory, 6.1 GB/s from pages freed
/// just before).
fn free_page_reporting_check() -> Check {
    let balloons: Vec<String> = std::fs::read_dir("/sys/bus/virtio/devices")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path().join("driver"))
                        .is_ok_and(|l| l.ends_with("virtio_balloon"))
                })
                .filter_map(|e| read(e.path().join("features")))
                .collect()
        })
        .unwrap_or_default();
    let on = balloons.iter().any(|f| reports_free_pages(f));
    Check {
        name: "virtio-balloon page reporting".into(),
        current: match (balloons.is_empty(), on) {
            (true, _) => "no balloon device".into(),
            (false, true) => "on".into(),
            (false, false) => "off".into(),
        },
        recommended: "off, or write mode direct".into(),
        status: if on { Status::Off } else { Status::Ok },
        why: "freed memory goes back to the host: every new page-cache page costs a host fault",
    }
}

/// TCP congestion control: BBR paces each socket's sending, and without the `fq`
/// qdisc (which paces for it) TCP paces itself with a high-resolution timer per burst.
/// Measured on the development VM, a fetch from the page cache by sendfile cost 0.26-0.29
/// broker CPU-s per GB with bbr against 0.124 with cubic (copying: 0.24-0.25 and 0.23).
fn congestion_control_check() -> Check {
    let cc = sysctl("net.ipv4.tcp_congestion_control");
    let qdisc = sysctl("net.core.default_qdisc");
    let status = congestion_status(cc.as_deref(), qdisc.as_deref());
    Check {
        name: "TCP congestion control".into(),
        current: format!(
            "{}, qdisc {}",
            cc.as_deref().unwrap_or("unreadable"),
            qdisc.as_deref().unwrap_or("unreadable")
        ),
        recommended: "cubic (or bbr with fq)".into(),
        status,
        why: "bbr without fq paces every socket with a kernel timer: fetches cost twice the CPU",
    }
}

fn congestion_status(cc: Option<&str>, default_qdisc: Option<&str>) -> Status {
    match (cc, default_qdisc) {
        (None, _) => Status::Unknown,
        (Some("bbr"), q) if q != Some("fq") => Status::Off,
        _ => Status::Ok,
    }
}

pub fn checks(log_dir: &Path) -> Vec<Check> {
    let mut out = Vec::new();

    out.push(match sysctl("kernel.io_uring_disabled") {
        Some(v) => equals(
            "kernel.io_uring_disabled".into(),
            Some(v),
            "0",
            "0",
            "every shard does its I/O through io_uring",
        ),
        None => Check {
            name: "kernel.io_uring_disabled".into(),
            current: "absent (kernel older than 6.6: io_uring is on)".into(),
            recommended: "0".into(),
            status: Status::Ok,
            why: "every shard does its I/O through io_uring",
        },
    });

    let governors: Vec<String> = (0..num_cpus())
        .filter_map(|c| {
            read(format!(
                "/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"
            ))
        })
        .collect();
    out.push(Check {
        name: "CPU frequency governor".into(),
        current: if governors.is_empty() {
            "not exposed".into()
        } else {
            let mut g = governors.clone();
            g.dedup();
            g.join(",")
        },
        recommended: "performance".into(),
        status: if governors.is_empty() {
            Status::Unknown
        } else if governors.iter().all(|g| g == "performance") {
            Status::Ok
        } else {
            Status::Off
        },
        why: "a shard that idles briefly must not come back at a low clock",
    });

    out.push(numeric(
        "vm.swappiness",
        false,
        1,
        "the page cache should give way before the broker's memory is swapped",
    ));
    out.push(numeric(
        "vm.dirty_background_ratio",
        false,
        10,
        "start writeback early so buffered appends rarely meet dirty-page throttling",
    ));
    out.push(numeric(
        "vm.max_map_count",
        true,
        262_144,
        "glommio maps its I/O buffers; many partitions need many mappings",
    ));
    out.push(numeric(
        "net.core.somaxconn",
        true,
        4096,
        "connection bursts (load tests, restarts) overflow a short accept queue",
    ));
    out.push(numeric(
        "net.ipv4.tcp_max_syn_backlog",
        true,
        4096,
        "as somaxconn, for half-open connections",
    ));
    out.push(numeric(
        "net.core.rmem_max",
        true,
        16 << 20,
        "room for large produce requests on fast links",
    ));
    out.push(numeric(
        "net.core.wmem_max",
        true,
        16 << 20,
        "room for large fetch responses on fast links",
    ));
    out.push(numeric(
        "net.ipv4.tcp_wmem",
        true,
        16 << 20,
        "autotuning's ceiling for a socket's send buffer (fetch responses)",
    ));
    out.push(numeric(
        "net.ipv4.tcp_rmem",
        true,
        16 << 20,
        "autotuning's ceiling for a socket's receive buffer (produce requests)",
    ));
    out.push(rlimit(
        libc::RLIMIT_NOFILE,
        "RLIMIT_NOFILE",
        1 << 20,
        "a descriptor per connection and three per segment",
    ));
    out.push(rlimit(
        libc::RLIMIT_MEMLOCK,
        "RLIMIT_MEMLOCK",
        512 << 20,
        "io_uring registers buffers against it",
    ));

    match block_device_of(log_dir) {
        Some(dev) => {
            let name = dev
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let sched = read(dev.join("queue/scheduler")).unwrap_or_else(|| "unreadable".into());
            let active = sched
                .split_whitespace()
                .find(|s| s.starts_with('['))
                .map(|s| s.trim_matches(|c| c == '[' || c == ']').to_string())
                .unwrap_or(sched.clone());
            out.push(Check {
                name: format!("I/O scheduler of {name}"),
                status: if active == "none" {
                    Status::Ok
                } else {
                    Status::Off
                },
                current: active,
                recommended: "none".into(),
                why: "NVMe devices order requests themselves; a scheduler only adds latency",
            });
            out.push(equals(
                format!("{name} rotational"),
                read(dev.join("queue/rotational")),
                "0",
                "0 (SSD/NVMe)",
                "the log is designed for flash: direct mode and fsync rounds assume it",
            ));
        }
        None => out.push(Check {
            name: format!("block device of {}", log_dir.display()),
            current: "not found".into(),
            recommended: "a local NVMe device".into(),
            status: Status::Unknown,
            why: "the scheduler and device checks need it",
        }),
    }

    // The log directory (or its nearest existing parent) and the mount holding it.
    let existing = log_dir.ancestors().find(|p| p.exists()).unwrap_or(log_dir);
    let path = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    let mount = read("/proc/self/mountinfo").and_then(|m| mount_of(&m, &path));
    out.push(discard_check(&mount));
    out.push(journal_check(&path, &mount));

    out.push(free_page_reporting_check());

    out.push(congestion_control_check());

    out.push(equals(
        "clock source".into(),
        read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "tsc",
        "tsc",
        "timestamps and timers are read on every request; other sources are slower",
    ));

    let irqbalance = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| read(e.path().join("comm")).is_some_and(|c| c == "irqbalance"))
        })
        .unwrap_or(false);
    out.push(Check {
        name: "irqbalance".into(),
        current: if irqbalance { "running" } else { "not running" }.into(),
        recommended: "not running, NIC queues pinned (tuning/README.md)".into(),
        status: if irqbalance { Status::Off } else { Status::Ok },
        why: "it moves NIC interrupts onto the shards' CPUs at will",
    });
    out
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Prints the checks; true if none is off.
pub fn print(checks: &[Check]) -> bool {
    println!(
        "{:<34} {:<26} {:<24} status",
        "check", "current", "recommended"
    );
    for c in checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Off => "OFF",
            Status::Unknown => "unknown",
        };
        println!(
            "{:<34} {:<26} {:<24} {status}",
            c.name, c.current, c.recommended
        );
        if c.status == Status::Off {
            println!("{:<34} ^ {}", "", c.why);
        }
    }
    checks.iter().all(|c| c.status != Status::Off)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard,resv_strict
30 22 0:26 / /tmp rw,nosuid - tmpfs tmpfs rw,size=100k
31 22 259:1 / /var/lib/ringlog rw,noatime shared:5 - xfs /dev/nvme0n1 rw,attr2
";

    #[test]
    fn bbr_is_off_unless_fq_paces_for_it() {
        assert_eq!(
            congestion_status(Some("bbr"), Some("pfifo_fast")),
            Status::Off
        );
        assert_eq!(congestion_status(Some("bbr"), None), Status::Off);
        assert_eq!(congestion_status(Some("bbr"), Some("fq")), Status::Ok);
        assert_eq!(
            congestion_status(Some("cubic"), Some("pfifo_fast")),
            Status::Ok
        );
        assert_eq!(congestion_status(None, Some("fq")), Status::Unknown);
    }

    #[test]
    fn free_page_reporting_is_feature_bit_5() {
        // This development VM's balloon: stats queue, deflate on OOM, reporting.
        assert!(reports_free_pages("0110010100000000"));
        assert!(!reports_free_pages("0110000100000000"));
        assert!(!reports_free_pages("01100"));
        assert!(!reports_free_pages(""));
    }

    #[test]
    fn the_journal_flag_is_read_from_an_ext_superblock() {
        let mut start = vec![0u8; 2048];
        assert_eq!(ext_has_journal(&start), None, "no magic");
        start[EXT_SUPERBLOCK_AT + EXT_MAGIC_AT..][..2].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        assert_eq!(ext_has_journal(&start), Some(false));
        // has_journal among other compatible features (dir_index 0x20, ext_attr 0x8).
        let compat: u32 = 0x20 | 0x8 | EXT_FEATURE_COMPAT_HAS_JOURNAL;
        start[EXT_SUPERBLOCK_AT + EXT_FEATURE_COMPAT_AT..][..4]
            .copy_from_slice(&compat.to_le_bytes());
        assert_eq!(ext_has_journal(&start), Some(true));
        assert_eq!(ext_has_journal(&start[..1100]), None, "cut short");
    }

    #[test]
    fn the_longest_mount_point_holding_the_path_wins() {
        let (point, fstype, options) =
            mount_of(MOUNTINFO, Path::new("/var/lib/ringlog/t-0")).unwrap();
        assert_eq!(
            (point.as_str(), fstype.as_str()),
            ("/var/lib/ringlog", "xfs")
        );
        assert!(!options.split(',').any(|o| o == "discard"));
        let (point, fstype, options) = mount_of(MOUNTINFO, Path::new("/srv/data")).unwrap();
        assert_eq!((point.as_str(), fstype.as_str()), ("/", "ext4"));
        assert!(options.split(',').any(|o| o == "discard"));
        // A prefix of the name is not a parent directory.
        let (point, _, _) = mount_of(MOUNTINFO, Path::new("/tmpx")).unwrap();
        assert_eq!(point, "/");
    }
}
