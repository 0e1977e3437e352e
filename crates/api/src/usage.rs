//! Resource usage as metrics: the daemon's own `process_*` families (the names
//! every Prometheus client library exports) and each supervised process's CPU
//! and memory, from its cgroup where it has one, else from `/proc`.
//!
//! Both are prometheus-client collectors. The daemon's own figures are read
//! when a scrape encodes; the supervised processes' come from the
//! supervisor's shared usage sample (at most a second old, or ten while a new
//! one is taken), the one `hangar ps` and the listings show.

use std::fmt;
use std::sync::{Arc, Mutex};

use hangar_core::Daemon;
use hangar_supervisor::usage::UsageSample;
use procfs::process::{LimitValue, Process};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// The daemon's own `process_*` families, read from `/proc/self`.
#[derive(Debug, Default)]
pub struct SelfCollector;

/// What `/proc/self` says, each figure `None` where it could not be read.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SelfFigures {
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors (`None` when unlimited).
    pub max_fds: Option<u64>,
}

impl SelfFigures {
    /// Read them now.
    pub fn read() -> SelfFigures {
        let Ok(me) = Process::myself() else {
            return SelfFigures::default();
        };
        let ticks = procfs::ticks_per_second() as f64;
        let mut f = SelfFigures::default();
        if let Ok(stat) = me.stat() {
            f.cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks);
            f.resident_bytes = Some(stat.rss.saturating_mul(procfs::page_size()));
            f.virtual_bytes = Some(stat.vsize);
            f.start_time_seconds = procfs::boot_time_secs()
                .ok()
                .map(|boot| boot as f64 + stat.starttime as f64 / ticks);
        }
        f.open_fds = me.fd_count().ok().map(|n| n as u64);
        f.max_fds = me
            .limits()
            .ok()
            .and_then(|l| match l.max_open_files.soft_limit {
                LimitValue::Value(v) => Some(v),
                LimitValue::Unlimited => None,
            });
        f
    }
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for SelfCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let f = SelfFigures::read();
        if let Some(v) = f.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                f.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                f.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                f.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                f.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                f.max_fds.map(|v| v as f64),
            ),
        ];
        for (name, help, v) in gauges {
            if let Some(v) = v {
                gauge(&mut enc, name, help, v)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcLabel {
    process: String,
}

/// One supervised process's usage.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcUsage {
    /// Its name.
    pub process: String,
    /// CPU time so far (its cgroup's, or its pid's user + system), seconds.
    pub cpu_seconds: Option<f64>,
    /// Memory now (its cgroup's current usage, or its pid's resident set), bytes.
    pub memory_bytes: Option<u64>,
}

/// The usage of every supervised process with a pid, from the manager's
/// shared sample (see `hangar_supervisor::usage`): its cgroup (every process
/// in it, descendants included) where it has one, else `/proc/PID/stat` of
/// its main process.
pub async fn read_all(d: &Daemon) -> Vec<ProcUsage> {
    let m = d.manager();
    let sample = m.usage_sample().await;
    let mut out: Vec<ProcUsage> = m
        .status_all("*")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|st| read_one(&sample, &st.name, st.pid?))
        .collect();
    out.sort_by(|a, b| a.process.cmp(&b.process));
    out
}

/// One running process's usage in `sample` (see [`read_all`]); `None` when
/// the sample has none for this run of it.
pub fn read_one(sample: &UsageSample, name: &str, pid: u32) -> Option<ProcUsage> {
    let u = sample.of(name, pid)?;
    let u = ProcUsage {
        process: name.to_string(),
        cpu_seconds: u.cpu.map(|d| d.as_secs_f64()),
        memory_bytes: u.memory_bytes,
    };
    (u.cpu_seconds.is_some() || u.memory_bytes.is_some()).then_some(u)
}

/// The supervised processes' CPU and memory families (registered under the
/// `hangar` prefix), from the snapshot the last refresh took (see [`read_all`]).
#[derive(Debug, Default, Clone)]
pub struct ProcessesCollector {
    /// The last snapshot, replaced whole by each refresh.
    pub snapshot: Arc<Mutex<Vec<ProcUsage>>>,
}

impl Collector for ProcessesCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let snap = self.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
        {
            let mut fam = enc.encode_descriptor(
                "process_cpu_seconds",
                "CPU time of a supervised process: its cgroup's, else its main pid's user and system time.",
                None,
                MetricType::Counter,
            )?;
            for u in &snap {
                if let Some(v) = u.cpu_seconds {
                    let l = ProcLabel {
                        process: u.process.clone(),
                    };
                    ConstCounter::new(v).encode(fam.encode_family(&l)?)?;
                }
            }
        }
        let mut fam = enc.encode_descriptor(
            "process_memory_bytes",
            "Memory of a supervised process: its cgroup's current usage, else its main pid's resident set.",
            None,
            MetricType::Gauge,
        )?;
        for u in &snap {
            if let Some(v) = u.memory_bytes {
                let l = ProcLabel {
                    process: u.process.clone(),
                };
                ConstGauge::new(v as f64).encode(fam.encode_family(&l)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_figures_are_plausible() {
        let f = SelfFigures::read();
        assert!(f.cpu_seconds.is_some_and(|v| v >= 0.0), "{f:?}");
        assert!(f.resident_bytes.is_some_and(|v| v > 0), "{f:?}");
        assert!(f.open_fds.is_some_and(|v| v >= 3), "{f:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        assert!(
            f.start_time_seconds
                .is_some_and(|t| t <= now + 1.0 && t > now - 86400.0 * 365.0),
            "{f:?}"
        );
    }
}
