//! CPU and memory of every running process, sampled for all callers at once.
//!
//! Reading a process's usage costs a few file reads (its cgroup's memory and
//! CPU files, else `/proc/PID/stat`): tens of microseconds, so tens of
//! milliseconds at a thousand processes. A status listing that read them on
//! every call cost that much per call. Instead one sample of every process is
//! kept: a caller gets it as is while it is under [`FRESH`] old, gets it and
//! starts a new sample in the background while it is under [`STALE`] old
//! (stale-while-revalidate), and waits for a new one only when it is older
//! (the first listing after a quiet spell). Samples are taken one at a time,
//! off the runtime's threads, and only when someone asks: an idle supervisor
//! reads nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cgroup::{CgroupVersion, ProcessCgroup};

/// A sample younger than this is served as it is.
pub const FRESH: Duration = Duration::from_secs(1);
/// A sample older than this is not served: the caller waits for a new one.
pub const STALE: Duration = Duration::from_secs(10);

/// One running process's usage when the sample was taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// The main process it was read for; a figure of another pid (the process
    /// restarted since) is not this run's.
    pub pid: u32,
    /// CPU time so far: its cgroup's (every process in it), else the main
    /// process's user and system time.
    pub cpu: Option<Duration>,
    /// Memory now: its cgroup's current usage, else the main process's
    /// resident set, bytes.
    pub memory_bytes: Option<u64>,
}

/// Every running process's usage, by name, and when it was read.
#[derive(Debug, Clone)]
pub struct UsageSample {
    /// When the reads began.
    pub at: Instant,
    /// By process name.
    pub by_name: Arc<HashMap<Arc<str>, Usage>>,
}

impl UsageSample {
    /// A sample with no process in it, for callers that show no usage.
    pub fn empty() -> UsageSample {
        UsageSample {
            at: Instant::now(),
            by_name: Arc::default(),
        }
    }

    /// The usage of `name` while it runs as `pid`.
    pub fn of(&self, name: &str, pid: u32) -> Option<Usage> {
        self.by_name.get(name).copied().filter(|u| u.pid == pid)
    }
}

#[derive(Default)]
pub(crate) struct UsageCache {
    last: Mutex<Option<UsageSample>>,
    /// One sample at a time.
    taking: tokio::sync::Mutex<()>,
    /// A background sample is under way.
    refreshing: AtomicBool,
}

impl UsageCache {
    pub(crate) fn last(&self) -> Option<UsageSample> {
        self.last.lock().ok()?.clone()
    }

    /// A sample no older than `max_age`, taken now by this caller unless
    /// another caller's sample lands first. `read` gathers the processes to
    /// read (name, pid, cgroup) on the caller's thread.
    pub(crate) async fn take(
        &self,
        max_age: Duration,
        read: impl FnOnce() -> Vec<(Arc<str>, u32, Option<Arc<ProcessCgroup>>)>,
    ) -> UsageSample {
        let _one = self.taking.lock().await;
        if let Some(s) = self.last().filter(|s| s.at.elapsed() < max_age) {
            return s;
        }
        let at = Instant::now();
        let targets = read();
        let by_name = tokio::task::spawn_blocking(move || {
            targets
                .into_iter()
                .map(|(name, pid, cg)| {
                    let u = read_usage(pid, cg.as_deref());
                    (name, u)
                })
                .collect::<HashMap<_, _>>()
        })
        .await
        .unwrap_or_default();
        let sample = UsageSample {
            at,
            by_name: Arc::new(by_name),
        };
        if let Ok(mut last) = self.last.lock() {
            *last = Some(sample.clone());
        }
        sample
    }

    /// Claim the background refresh; `false` when one is already under way.
    pub(crate) fn claim_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn refresh_done(&self) {
        self.refreshing.store(false, Ordering::Release);
    }
}

/// Usage of the process `pid` and its cgroup, read now.
fn read_usage(pid: u32, cg: Option<&ProcessCgroup>) -> Usage {
    let (mut cpu, mut memory_bytes) = cg.map_or((None, None), cgroup_usage);
    if cpu.is_none() || memory_bytes.is_none() {
        if let Some((c, m)) = proc_stat_usage(pid) {
            cpu.get_or_insert(c);
            memory_bytes.get_or_insert(m);
        }
    }
    Usage {
        pid,
        cpu,
        memory_bytes,
    }
}

/// CPU and memory of a cgroup: two reads, not the four of a full
/// `ResourceUsage`.
fn cgroup_usage(cg: &ProcessCgroup) -> (Option<Duration>, Option<u64>) {
    fn num(path: &Path) -> Option<u64> {
        crate::reap::read_pseudo_string(path)
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    match cg.version() {
        CgroupVersion::V2 => {
            let Some(dir) = cg.dir_with("memory").or_else(|| cg.dir_with("cpu")) else {
                return (None, None);
            };
            let cpu = crate::reap::read_pseudo_string(dir.join("cpu.stat"))
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        let v = l.strip_prefix("usage_usec ")?;
                        v.trim().parse().ok()
                    })
                })
                .map(Duration::from_micros);
            (cpu, num(&dir.join("memory.current")))
        }
        CgroupVersion::V1 => (
            cg.dir_with("cpuacct")
                .and_then(|d| num(&d.join("cpuacct.usage")))
                .map(Duration::from_nanos),
            cg.dir_with("memory")
                .and_then(|d| num(&d.join("memory.usage_in_bytes"))),
        ),
    }
}

/// User + system time and resident set of `pid`, from `/proc/PID/stat`.
fn proc_stat_usage(pid: u32) -> Option<(Duration, u64)> {
    let stat = crate::reap::read_pseudo(format!("/proc/{pid}/stat")).ok()?;
    let rest = crate::reap::stat_fields(&stat)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15, rss 24.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss: u64 = f.get(21)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    let page = rustix::param::page_size() as u64;
    let cpu = Duration::from_secs_f64((utime + stime) as f64 / ticks as f64);
    Some((cpu, rss.saturating_mul(page)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_reads_this_process() {
        // Burn a little CPU so the figure is above zero.
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let (cpu, rss) = proc_stat_usage(std::process::id()).expect("own stat");
        assert!(cpu > Duration::ZERO, "{cpu:?}");
        assert!(rss > 1 << 20, "{rss}");
        assert!(proc_stat_usage(u32::MAX).is_none());
    }
}
