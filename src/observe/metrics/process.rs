//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`,
//! `process_threads`), read from `/proc/self` at scrape time.
//!
//! The prometheus crate's own collector (feature `process`) would pull in `procfs`
//! and a second `rustix`; these few files are all it reads. Where `/proc` is missing
//! (not Linux) the series stay at zero rather than failing the scrape.

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge};

/// Linux reports CPU times in USER_HZ ticks, fixed at 100 by the kernel ABI.
const TICKS_PER_SECOND: f64 = 100.0;

pub struct ProcessCollector {
    cpu_seconds: Counter,
    resident_memory: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    threads: IntGauge,
    /// Serialises scrapes so the CPU counter only ever moves forward once per reading.
    scrape: Mutex<()>,
}

impl ProcessCollector {
    pub fn new() -> Result<ProcessCollector, prometheus::Error> {
        Ok(ProcessCollector {
            cpu_seconds: Counter::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            )?,
            resident_memory: IntGauge::new(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            )?,
            virtual_memory: IntGauge::new(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            )?,
            open_fds: IntGauge::new("process_open_fds", "Number of open file descriptors.")?,
            max_fds: IntGauge::new(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            )?,
            start_time: Gauge::new(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            )?,
            threads: IntGauge::new("process_threads", "Number of OS threads in the process.")?,
            scrape: Mutex::new(()),
        })
    }

    fn update(&self) {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stat) = read("/proc/self/stat").as_deref().and_then(Stat::parse) {
            let cpu = stat.cpu_ticks as f64 / TICKS_PER_SECOND;
            let delta = cpu - self.cpu_seconds.get();
            if delta > 0.0 {
                self.cpu_seconds.inc_by(delta);
            }
            let boot = read("/proc/stat").as_deref().and_then(boot_time);
            if let Some(boot) = boot {
                self.start_time
                    .set(boot as f64 + stat.start_ticks as f64 / TICKS_PER_SECOND);
            }
        }
        if let Some(status) = read("/proc/self/status") {
            if let Some(kb) = status_field(&status, "VmRSS:") {
                self.resident_memory.set(kb.saturating_mul(1024));
            }
            if let Some(kb) = status_field(&status, "VmSize:") {
                self.virtual_memory.set(kb.saturating_mul(1024));
            }
            if let Some(threads) = status_field(&status, "Threads:") {
                self.threads.set(threads);
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(entries.count()).unwrap_or(i64::MAX));
        }
        if let Some(max) = read("/proc/self/limits")
            .as_deref()
            .and_then(max_open_files)
        {
            self.max_fds.set(max);
        }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = Vec::new();
        descs.extend(self.cpu_seconds.desc());
        descs.extend(self.resident_memory.desc());
        descs.extend(self.virtual_memory.desc());
        descs.extend(self.open_fds.desc());
        descs.extend(self.max_fds.desc());
        descs.extend(self.start_time.desc());
        descs.extend(self.threads.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.update();
        let mut families = Vec::new();
        families.extend(self.cpu_seconds.collect());
        families.extend(self.resident_memory.collect());
        families.extend(self.virtual_memory.collect());
        families.extend(self.open_fds.collect());
        families.extend(self.max_fds.collect());
        families.extend(self.start_time.collect());
        families.extend(self.threads.collect());
        families
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The fields of `/proc/self/stat` we use.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    /// utime + stime.
    cpu_ticks: u64,
    /// Start time after boot.
    start_ticks: u64,
}

impl Stat {
    /// Fields after the `)` closing the command name (which may itself hold spaces or
    /// parentheses): state is field 3, utime 14, stime 15, starttime 22.
    fn parse(text: &str) -> Option<Stat> {
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            cpu_ticks: field(14)?.saturating_add(field(15)?),
            start_ticks: field(22)?,
        })
    }
}

/// `btime` of `/proc/stat`: boot time in Unix seconds.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A numeric field of `/proc/self/status` (`VmRSS:   1234 kB` → 1234).
fn status_field(text: &str, key: &str) -> Option<i64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (icp gate) (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 12345 1000 200";
        assert_eq!(
            Stat::parse(stat),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 12345
            })
        );
        assert_eq!(Stat::parse("garbage"), None);
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let status = "Name:\ticpgate\nVmSize:\t  20480 kB\nVmRSS:\t    512 kB\nThreads:\t7\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(512));
        assert_eq!(status_field(status, "Threads:"), Some(7));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files("Max open files unlimited unlimited files"),
            None
        );
    }

    #[test]
    fn reads_this_process() {
        let collector = ProcessCollector::new().map(|c| {
            c.update();
            (
                c.resident_memory.get(),
                c.open_fds.get(),
                c.start_time.get(),
            )
        });
        if std::path::Path::new("/proc/self/stat").exists() {
            let Ok((rss, fds, start)) = collector else {
                panic!("collector builds");
            };
            assert!(rss > 0 && fds > 0 && start > 1.0e9, "{rss} {fds} {start}");
        }
    }
}
