//! cgroups: one per process that asks for [`Limits`], on cgroup v2 where the host
//! has the controllers there, on the v1 hierarchies otherwise.
//!
//! Layout: `<base>/hangar/<group>/<process>`, where `<group>` names one supervisor
//! (`ManagerOptions::cgroup_group`) and `<base>` is
//! - v2: hangar's own cgroup (from `/proc/self/cgroup`), so its processes stay
//!   inside the unit that runs hangar: under systemd they count towards its
//!   accounting and its `KillMode` reaches them (run it with `Delegate=yes`). A
//!   cgroup that holds processes cannot hand controllers to children ("no
//!   internal processes"; the root is exempt), so before enabling any, hangar
//!   moves itself into the leaf `<own>/supervisor` when it is the only member.
//!   Where its own cgroup is not writable (not root, nothing delegated), v2 is
//!   not used: the v1 hierarchies if they can be, else no cgroups (processes
//!   are still tracked by group, tree and markers). Controllers are enabled
//!   top-down in each level's `cgroup.subtree_control`.
//! - v1: hangar's own cgroup in each hierarchy (from `/proc/self/cgroup`), so the
//!   limits of whatever hangar runs under still apply to its children.
//!
//! How the child gets in: the spawner opens the new cgroup's `cgroup.procs` before
//! the clone, and the child's first act is to write `0` ("myself") into it, before
//! it changes anything else and long before exec. So nothing the child runs can
//! escape, and there is no window where it runs outside (placing the pid from the
//! parent after clone would let it exec first; `clone3(CLONE_INTO_CGROUP)` is
//! v2-only and needs a different clone path). The child still shares hangar's
//! memory until exec (CLONE_VM), so nothing is charged to the new cgroup before
//! exec gives it an address space of its own.
//!
//! Removal: when the process's group is gone, whatever is still listed in
//! `cgroup.procs` (daemons that left the process group) is killed (`cgroup.kill`
//! on v2 where the kernel has it), then the directory is removed, retrying while
//! the last members finish dying.
//!
//! Stable error codes (in the `code` context entry of the `PROCESS_START_FAILED`
//! error): `CGROUP_CREATE_FAILED`, `CGROUP_LIMIT_FAILED`, `CGROUP_JOIN_FAILED`.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::privs::SetupError;
use crate::spec::Limits;

/// A cgroup directory (or a level above it) could not be created, or its
/// controllers could not be enabled.
pub const CGROUP_CREATE_FAILED: &str = "CGROUP_CREATE_FAILED";
/// A limit could not be written (the kernel refused the value).
pub const CGROUP_LIMIT_FAILED: &str = "CGROUP_LIMIT_FAILED";
/// The child could not move itself into its cgroup.
pub const CGROUP_JOIN_FAILED: &str = "CGROUP_JOIN_FAILED";

/// The CFS period hangar uses for `cpu_max`, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// How long removal waits for the last members of a cgroup to die.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Controllers hangar uses; the ones a process may be limited by.
const USED: [&str; 3] = ["memory", "cpu", "pids"];

/// Which cgroup version a process's cgroup lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Per-controller hierarchies (`/sys/fs/cgroup/memory`, …).
    V1,
    /// The unified hierarchy.
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// One mounted hierarchy.
#[derive(Debug, Clone)]
struct Hierarchy {
    mount: PathBuf,
    /// Controllers attached (v1) or available at the top (v2); shared with
    /// every process cgroup made here.
    controllers: Arc<[String]>,
    /// Where `hangar/` goes.
    base: PathBuf,
    /// v2: controllers that sub-cgroups of `base` can be given.
    delegable: Vec<String>,
    /// Why it cannot be used at all.
    problem: Option<String>,
}

impl Hierarchy {
    fn has(&self, c: &str) -> bool {
        self.controllers.iter().any(|x| x == c)
    }
}

/// What the host offers: the cgroup2 mount and the v1 hierarchies, and whether
/// hangar can create cgroups in them. [`Cgroups::detect`] reads it from
/// `/proc/self/mountinfo` and `/proc/self/cgroup`.
#[derive(Debug, Clone)]
pub struct Cgroups {
    v2: Option<Hierarchy>,
    v1: Vec<Hierarchy>,
    /// Some cgroup mount has `favordynmods`, which makes joining a cgroup
    /// cheap for the whole host (see [`Cgroups::joins_wait_for_rcu`]).
    favordynmods: bool,
}

/// The cgroup a process with these limits would get.
#[derive(Debug, Clone)]
struct Plan {
    version: CgroupVersion,
    /// Hierarchies to join; v2: one.
    hierarchies: Vec<Hierarchy>,
}

static HOST: OnceLock<Cgroups> = OnceLock::new();
static WARNED: AtomicBool = AtomicBool::new(false);
static TOLD_RCU: AtomicBool = AtomicBool::new(false);

impl Cgroups {
    /// Look at the host's cgroup mounts now.
    pub fn detect() -> Cgroups {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Cgroups::from_tables(&mountinfo, &own)
    }

    /// Whether moving a process into a cgroup waits out an RCU grace period
    /// here. The kernel guards every migration with one host-wide per-CPU
    /// rwsem (`cgroup_threadgroup_rwsem`), whose writer waits for a grace
    /// period unless a cgroup hierarchy is mounted with `favordynmods` (Linux
    /// 6.0 and later; from 6.18 that switches to a lock per thread group, for
    /// good until reboot). Measured on a 2-vCPU Linux 6.18 guest: one write
    /// of a new child into `cgroup.procs` took 9.3 ms (median) without, 0.08
    /// ms with. On v2 hangar avoids the move where it can (children are cloned
    /// into their cgroup, see `clone3`); on v1 it cannot, and it does not
    /// change the host's mounts.
    pub fn joins_wait_for_rcu(&self) -> bool {
        !self.favordynmods
    }

    /// Whether children start inside their v2 cgroup here, with no move into
    /// it (`clone3` with `CLONE_INTO_CGROUP`: x86-64, Linux 5.7+, a usable
    /// cgroup2 mount), and the kernel kills a v2 cgroup at once
    /// (`cgroup.kill`, Linux 5.14+; without it nothing stops a member from
    /// forking between the listing and the kill). Then a process without
    /// limits gets a v2 cgroup even where the controllers are on v1.
    pub fn clones_into_v2(&self) -> bool {
        self.v2.as_ref().is_some_and(|h| h.problem.is_none())
            && kernel_at_least(&read_osrelease(), (5, 14))
            && crate::clone3::supported()
    }

    /// The host's cgroups, detected once per process (mounts do not come and go
    /// under a running supervisor).
    pub fn host() -> &'static Cgroups {
        HOST.get_or_init(Cgroups::detect)
    }

    fn from_tables(mountinfo: &str, own: &str) -> Cgroups {
        let own: Vec<(Vec<&str>, &str)> = own
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ':');
                let _id = it.next()?;
                let ctrls = it.next()?;
                let path = it.next()?;
                Some((ctrls.split(',').filter(|c| !c.is_empty()).collect(), path))
            })
            .collect();
        let mut v2 = None;
        let mut v1: Vec<Hierarchy> = Vec::new();
        let mut favordynmods = false;
        for m in parse_mountinfo(mountinfo) {
            if matches!(m.fstype.as_str(), "cgroup" | "cgroup2") {
                favordynmods |= m.super_opts.split(',').any(|o| o == "favordynmods");
            }
            if m.fstype == "cgroup2" && v2.is_none() {
                // hangar's own cgroup on v2 (the `0::PATH` line), seen
                // through the mount.
                let mine = own
                    .iter()
                    .find(|(c, _)| c.is_empty())
                    .and_then(|(_, p)| rel_under(p, &m.root));
                let base = match mine {
                    Some(rel) => m.point.join(rel),
                    None => m.point.clone(),
                };
                v2 = Some(v2_hierarchy(&m.point, &base));
            } else if m.fstype == "cgroup" {
                let ctrls: Vec<String> = m
                    .super_opts
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .map(str::to_string)
                    .collect();
                if ctrls.is_empty() || v1.iter().any(|h| *h.controllers == *ctrls) {
                    continue;
                }
                // hangar's own cgroup in this hierarchy, seen through the mount.
                let mine = own
                    .iter()
                    .find(|(c, _)| {
                        c.len() == ctrls.len() && c.iter().all(|x| ctrls.iter().any(|y| y == x))
                    })
                    .map(|(_, p)| *p);
                let base = match mine.and_then(|p| rel_under(p, &m.root)) {
                    Some(rel) => m.point.join(rel),
                    None => m.point.clone(),
                };
                let problem = (!writable(&base))
                    .then(|| format!("{} is not writable by hangar", base.display()));
                v1.push(Hierarchy {
                    mount: m.point.clone(),
                    controllers: ctrls.into(),
                    base,
                    delegable: Vec::new(),
                    problem,
                });
            }
        }
        Cgroups {
            v2,
            v1,
            favordynmods,
        }
    }

    /// The version a process with every limit set (memory, cpu, pids) would get,
    /// or `None` when hangar cannot apply them here.
    pub fn version(&self) -> Option<CgroupVersion> {
        self.plan(&USED).ok().map(|p| p.version)
    }

    /// The version a process with these limits would get, or `None` when they
    /// cannot be applied here (such a process runs unlimited, with a warning).
    pub fn version_for(&self, limits: &Limits) -> Option<CgroupVersion> {
        self.plan_for(limits).ok().map(|p| p.version)
    }

    /// Why limits cannot be applied, or `None` when they can.
    pub fn unusable_reason(&self, limits: &Limits) -> Option<String> {
        self.plan_for(limits).err()
    }

    /// The cgroup2 mount point, if there is one.
    pub fn v2_mount(&self) -> Option<&Path> {
        self.v2.as_ref().map(|h| h.mount.as_path())
    }

    /// Where the cgroup of process `name` of supervisor group `group` lives while
    /// it runs (one directory per joined hierarchy on v1). Empty when limits
    /// cannot be applied.
    pub fn process_dirs(&self, group: &str, name: &str, limits: &Limits) -> Vec<PathBuf> {
        match self.plan_for(limits) {
            Ok(plan) => plan
                .hierarchies
                .iter()
                .map(|h| h.base.join("hangar").join(group).join(name))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Kill everything in, and remove, every process cgroup of supervisor group
    /// `group` (what a supervisor that died left behind), and the group's own
    /// directories. Returns how many process cgroups were removed.
    pub fn remove_group(&self, group: &str) -> io::Result<usize> {
        // Counted by name: on v1 one process has a directory per hierarchy.
        let mut removed = std::collections::BTreeSet::new();
        for h in self.v2.iter().chain(self.v1.iter()) {
            let gdir = h.base.join("hangar").join(group);
            let entries = match fs::read_dir(&gdir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let cg = ProcessCgroup {
                        version: if self.v2.as_ref().is_some_and(|v| v.mount == h.mount) {
                            CgroupVersion::V2
                        } else {
                            CgroupVersion::V1
                        },
                        dirs: vec![(e.path(), h.controllers.clone())],
                        join: Vec::new(),
                        into: None,
                    };
                    cg.remove_blocking()?;
                    removed.insert(e.file_name());
                }
            }
            let _ = fs::remove_dir(&gdir);
        }
        Ok(removed.len())
    }

    fn plan_for(&self, limits: &Limits) -> Result<Plan, String> {
        let need = limits.controllers();
        if need.is_empty() {
            // Accounting only: the full set where it is possible, so usage can be
            // read; otherwise any hierarchy that takes sub-cgroups.
            let full = self.plan(&USED);
            if let Ok(p) = &full {
                if p.version == CgroupVersion::V2 {
                    return full;
                }
            }
            // Where the controllers are on v1 only (a hybrid host), v2 still
            // groups the tree, kills it (`cgroup.kill`) and counts its CPU, and
            // its children are cloned straight into it: a v1 join is a
            // migration, which waits out an RCU grace period per spawn (about
            // 10 ms) unless a mount has `favordynmods`. The main process's
            // resident set stands in for the cgroup's memory.
            if let (Some(h), true) = (&self.v2, self.clones_into_v2()) {
                return Ok(Plan {
                    version: CgroupVersion::V2,
                    hierarchies: vec![h.clone()],
                });
            }
            if full.is_ok() {
                return full;
            }
        }
        self.plan(&need)
    }

    fn plan(&self, need: &[&str]) -> Result<Plan, String> {
        let mut why = Vec::new();
        match &self.v2 {
            Some(h) => match &h.problem {
                Some(p) => why.push(format!("cgroup v2: {p}")),
                None => {
                    let missing: Vec<&str> = need
                        .iter()
                        .copied()
                        .filter(|c| !h.delegable.iter().any(|d| d == c))
                        .collect();
                    if missing.is_empty() {
                        return Ok(Plan {
                            version: CgroupVersion::V2,
                            hierarchies: vec![h.clone()],
                        });
                    }
                    why.push(format!(
                        "cgroup v2 at {} lacks the {} controller(s)",
                        h.mount.display(),
                        missing.join(", ")
                    ));
                }
            },
            None => why.push("no cgroup2 mount".into()),
        }
        let usable: Vec<&Hierarchy> = self.v1.iter().filter(|h| h.problem.is_none()).collect();
        let missing: Vec<&str> = need
            .iter()
            .copied()
            .filter(|c| !usable.iter().any(|h| h.has(c)))
            .collect();
        if missing.is_empty() && !usable.is_empty() {
            // The needed hierarchies, plus the accounting ones where mounted.
            let mut hs: Vec<Hierarchy> = Vec::new();
            // The freezer too where mounted: it makes killing a cgroup atomic.
            for c in ["memory", "cpu", "cpuacct", "pids", "freezer"] {
                if let Some(h) = usable.iter().find(|h| h.has(c)) {
                    if !hs.iter().any(|x| x.mount == h.mount) {
                        hs.push((*h).clone());
                    }
                }
            }
            if !hs.is_empty() {
                return Ok(Plan {
                    version: CgroupVersion::V1,
                    hierarchies: hs,
                });
            }
        }
        if self.v1.is_empty() {
            why.push("no cgroup v1 hierarchy".into());
        } else {
            for h in self.v1.iter().filter_map(|h| h.problem.as_ref()) {
                why.push(format!("cgroup v1: {h}"));
            }
            if !missing.is_empty() {
                why.push(format!(
                    "cgroup v1 lacks the {} controller(s)",
                    missing.join(", ")
                ));
            }
        }
        Err(why.join("; "))
    }

    /// Create the cgroup of process `name` with `limits`, ready for the child to
    /// join. `Ok(None)` when neither v2 nor v1 can be used here: then the process
    /// runs without limits, and a warning is logged (once per supervisor process).
    /// On error nothing is left behind.
    pub(crate) fn create(
        &self,
        group: &str,
        name: &str,
        limits: &Limits,
    ) -> Result<Option<ProcessCgroup>, SetupError> {
        self.create_for(group, name, limits, true)
    }

    /// A cgroup for a process that asked for no limits: it only groups the
    /// process's tree (so that stopping it kills all of it, whatever left its
    /// process group) and counts its usage. `None`, quietly, where this host
    /// gives hangar no cgroups, or they cannot be made.
    pub(crate) fn create_grouping(&self, group: &str, name: &str) -> Option<ProcessCgroup> {
        match self.create_for(group, name, &Limits::default(), false) {
            Ok(cg) => cg,
            Err(e) => {
                tracing::debug!(process = name, error = %e.message, "no cgroup for this process");
                None
            }
        }
    }

    fn create_for(
        &self,
        group: &str,
        name: &str,
        limits: &Limits,
        asked: bool,
    ) -> Result<Option<ProcessCgroup>, SetupError> {
        let plan = match self.plan_for(limits) {
            Ok(p) => p,
            Err(_) if !asked => return Ok(None),
            Err(why) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        process = name,
                        reason = %why,
                        "resource limits were asked for, but neither cgroup v2 nor cgroup v1 \
                         can be used on this host: processes run WITHOUT memory, cpu and pids \
                         limits (this warning is shown once)"
                    );
                }
                return Ok(None);
            }
        };
        let mut cg = ProcessCgroup {
            version: plan.version,
            dirs: Vec::with_capacity(plan.hierarchies.len()),
            join: Vec::with_capacity(plan.hierarchies.len()),
            into: None,
        };
        let res = (|| {
            for h in &plan.hierarchies {
                let leaf = make_tree(h, plan.version, group, name)?;
                cg.dirs.push((leaf.clone(), h.controllers.clone()));
                write_limits(&leaf, plan.version, &h.controllers, limits)?;
                let procs = rustix::fs::open(
                    leaf.join("cgroup.procs"),
                    rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(|e| create_error(&leaf, "open cgroup.procs of", e.into()))?;
                cg.join.push(procs);
                if plan.version == CgroupVersion::V2 && crate::clone3::supported() {
                    let dir = rustix::fs::open(
                        &leaf,
                        rustix::fs::OFlags::PATH
                            | rustix::fs::OFlags::DIRECTORY
                            | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )
                    .map_err(|e| create_error(&leaf, "open", e.into()))?;
                    cg.into = Some(dir);
                }
            }
            Ok(())
        })();
        match res {
            Ok(()) => {
                // A child cloned into its cgroup does not move: no wait to tell of.
                if cg.into.is_none()
                    && self.joins_wait_for_rcu()
                    && !TOLD_RCU.swap(true, Ordering::Relaxed)
                {
                    let mount = self.v2.as_ref().map_or_else(
                        || "/sys/fs/cgroup/<hierarchy>".to_string(),
                        |h| h.mount.display().to_string(),
                    );
                    tracing::info!(
                        "no cgroup mount on this host has `favordynmods`, so each process start \
                         waits for the kernel to move it into its cgroup (an RCU grace period, \
                         about 10 ms measured on Linux 6.18); as root, `mount -o \
                         remount,favordynmods {mount}` (Linux 6.0+, host-wide) removes the wait \
                         (shown once)"
                    );
                }
                Ok(Some(cg))
            }
            Err(e) => {
                let _ = cg.remove_blocking();
                Err(e)
            }
        }
    }
}

impl fmt::Display for Cgroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.v2 {
            Some(h) => write!(
                f,
                "v2 at {} (controllers: {}; for hangar: {}){}",
                h.mount.display(),
                h.controllers.join(" "),
                h.delegable.join(" "),
                h.problem
                    .as_ref()
                    .map(|p| format!(" unusable: {p}"))
                    .unwrap_or_default()
            )?,
            None => f.write_str("no v2")?,
        }
        if self.favordynmods {
            f.write_str("; favordynmods")?;
        }
        for h in &self.v1 {
            write!(
                f,
                "; v1 {} at {}{}",
                h.controllers.join(","),
                h.base.display(),
                h.problem
                    .as_ref()
                    .map(|p| format!(" unusable: {p}"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

fn read_osrelease() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default()
}

/// Whether a kernel release string (`6.18.44-foo`) is at least `major.minor`;
/// `false` when it cannot be read.
fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// v1 controllers hangar recognises in mount options.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

fn v2_hierarchy(mount: &Path, base: &Path) -> Hierarchy {
    let read_list = |f: &str| -> Vec<String> {
        fs::read_to_string(base.join(f))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let controllers = read_list("cgroup.controllers");
    // The true root has no cgroup.type and may hold processes while handing
    // controllers down. Any other cgroup can hand its children controllers
    // only while it holds no process ("no internal processes"): hangar's own
    // cgroup qualifies when hangar is its only member (hangar moves itself
    // into a `supervisor` leaf first, see `vacate`); otherwise only what is
    // already enabled there.
    let is_root = !base.join("cgroup.type").exists();
    let me = std::process::id().to_string();
    let only_us = fs::read_to_string(base.join("cgroup.procs"))
        .is_ok_and(|s| s.split_whitespace().all(|p| p == me));
    let delegable = if is_root || only_us {
        controllers.to_vec()
    } else {
        read_list("cgroup.subtree_control")
    };
    let problem = if !writable(base) {
        Some(format!(
            "{} (hangar's own cgroup) is not writable by hangar: run as root, or with a delegated subtree (systemd: Delegate=yes)",
            base.display()
        ))
    } else {
        None
    };
    Hierarchy {
        mount: mount.to_path_buf(),
        controllers: controllers.into(),
        base: base.to_path_buf(),
        delegable,
        problem,
    }
}

/// Before controllers are enabled in `base` (not the root), move hangar out
/// of it into the leaf `base/supervisor`, as systemd asks of a delegated
/// service: a cgroup with members cannot hand controllers to children. Only
/// when hangar is its sole member; otherwise enabling fails with EBUSY, and
/// the error says to delegate.
fn vacate(base: &Path) -> Result<(), SetupError> {
    if !base.join("cgroup.type").exists() {
        return Ok(());
    }
    let me = std::process::id().to_string();
    let procs = fs::read_to_string(base.join("cgroup.procs")).unwrap_or_default();
    if procs.split_whitespace().next().is_none() || procs.split_whitespace().any(|p| p != me) {
        return Ok(());
    }
    let leaf = base.join("supervisor");
    mkdir_ok_if_exists(&leaf).map_err(|e| create_error(&leaf, "create", e))?;
    fs::write(leaf.join("cgroup.procs"), "0")
        .map_err(|e| create_error(&leaf, "move hangar itself into", e))?;
    tracing::info!(cgroup = %leaf.display(), "hangar moved itself into a leaf cgroup, so its processes' cgroups can have controllers");
    Ok(())
}

fn writable(p: &Path) -> bool {
    rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok()
}

/// `path` relative to `root` (both absolute cgroup paths), if it lies under it.
fn rel_under<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(root.trim_end_matches('/'))?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    Some(rest.trim_start_matches('/'))
}

struct Mount {
    fstype: String,
    root: String,
    point: PathBuf,
    super_opts: String,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let super_opts = right.next().unwrap_or("");
            Some(Mount {
                fstype: fstype.to_string(),
                root: unescape(left.get(3)?),
                point: PathBuf::from(unescape(left.get(4)?)),
                super_opts: super_opts.to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn create_error(dir: &Path, what: &str, e: io::Error) -> SetupError {
    let hint = match e.raw_os_error() {
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
            "hangar needs write access to the cgroup filesystem (run as root, or delegate a cgroup subtree to it)"
        }
        Some(libc::EBUSY) => {
            "a cgroup that holds processes cannot hand controllers to sub-cgroups; run hangar where its cgroup tree is delegated (systemd Delegate=yes)"
        }
        _ => "check the cgroup filesystem (mount, permissions) and the kernel log",
    };
    // Permissions and refused values stay; anything else (busy, out of memory, a
    // leftover still dying) may pass, so the restart policy retries.
    let permanent = matches!(
        e.raw_os_error(),
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EINVAL)
    );
    let err = SetupError::new(
        CGROUP_CREATE_FAILED,
        format!("could not {what} cgroup {}", dir.display()),
        hint,
    )
    .source(e);
    if permanent {
        err
    } else {
        err.transient()
    }
}

fn mkdir_ok_if_exists(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Turn on `ctrls` for the children of `dir` (v2), writing only what is missing.
fn enable(dir: &Path, ctrls: &[&str]) -> Result<(), SetupError> {
    let file = dir.join("cgroup.subtree_control");
    let on = fs::read_to_string(&file).unwrap_or_default();
    let missing: Vec<String> = ctrls
        .iter()
        .filter(|c| !on.split_whitespace().any(|x| x == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::write(&file, missing.join(" "))
        .map_err(|e| create_error(dir, &format!("enable {} in", missing.join(" ")), e))
}

/// Make `<base>/hangar/<group>/<name>` and return it. Levels above are shared
/// with other processes and may be removed by a sibling's clean-up between our
/// steps: then start over.
fn make_tree(
    h: &Hierarchy,
    version: CgroupVersion,
    group: &str,
    name: &str,
) -> Result<PathBuf, SetupError> {
    let hangar = h.base.join("hangar");
    let gdir = hangar.join(group);
    let leaf = gdir.join(name);
    let ctrls: Vec<&str> = USED
        .iter()
        .copied()
        .filter(|c| h.delegable.iter().any(|d| d == c))
        .collect();
    // v1: the levels above need only exist, and while siblings run they do:
    // the leaf alone is one mkdir instead of three and a stat. (Not on v2,
    // where a level's controllers must be enabled before a leaf is made.)
    if version == CgroupVersion::V1 {
        match make_leaf(&leaf) {
            Ok(()) => return Ok(leaf),
            Err(e)
                if e.source
                    .as_ref()
                    .is_some_and(|s| s.kind() == io::ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let res = (|| {
            if version == CgroupVersion::V2 && !ctrls.is_empty() {
                vacate(&h.base)?;
            }
            for (dir, parent) in [(&hangar, &h.base), (&gdir, &hangar)] {
                if version == CgroupVersion::V2 {
                    enable(parent, &ctrls)?;
                }
                mkdir_ok_if_exists(dir).map_err(|e| create_error(dir, "create", e))?;
            }
            if version == CgroupVersion::V2 {
                enable(&gdir, &ctrls)?;
            }
            make_leaf(&leaf)
        })();
        match res {
            Err(e)
                if attempt < 5
                    && e.source
                        .as_ref()
                        .is_some_and(|s| s.kind() == io::ErrorKind::NotFound) =>
            {
                continue
            }
            other => return other.map(|()| leaf),
        }
    }
}

fn make_leaf(leaf: &Path) -> Result<(), SetupError> {
    match fs::create_dir(leaf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !leaf.is_dir() {
                return Err(SetupError::new(
                    CGROUP_CREATE_FAILED,
                    format!(
                        "cannot create cgroup {}: a cgroup control file has that name",
                        leaf.display()
                    ),
                    "rename the process: its name collides with a cgroup file name",
                ));
            }
            // Left by a supervisor of the same group that died: clear it out.
            tracing::warn!(cgroup = %leaf.display(), "removing a leftover cgroup (killing what it holds)");
            let old = ProcessCgroup {
                version: CgroupVersion::V1,
                dirs: vec![(leaf.to_path_buf(), Arc::from([]))],
                join: Vec::new(),
                into: None,
            };
            old.remove_dirs_blocking()
                .map_err(|e| create_error(leaf, "clear leftover", e))?;
            fs::create_dir(leaf).map_err(|e| create_error(leaf, "create", e))
        }
        Err(e) => Err(create_error(leaf, "create", e)),
    }
}

fn write_limits(
    leaf: &Path,
    version: CgroupVersion,
    ctrls: &[String],
    limits: &Limits,
) -> Result<(), SetupError> {
    let has = |c: &str| version == CgroupVersion::V2 || ctrls.iter().any(|x| x == c);
    let put = |file: &str, value: String| -> Result<(), SetupError> {
        fs::write(leaf.join(file), &value).map_err(|e| {
            SetupError::new(
                CGROUP_LIMIT_FAILED,
                format!("could not write {value:?} to {}", leaf.join(file).display()),
                "the kernel refused the limit; check the value (and the kernel log)",
            )
            .source(e)
        })
    };
    // Files that only some kernels have (swap accounting): absent is fine.
    let put_opt = |file: &str, value: String| -> Result<(), SetupError> {
        if leaf.join(file).exists() {
            put(file, value)
        } else {
            Ok(())
        }
    };
    let quota = |cores: f64| ((cores * CPU_PERIOD_US as f64).round() as u64).max(1000);
    match version {
        CgroupVersion::V2 => {
            if let Some(m) = limits.memory_max {
                put("memory.max", m.to_string())?;
                put_opt("memory.swap.max", "0".into())?;
            }
            if let Some(c) = limits.cpu_max {
                put("cpu.max", format!("{} {CPU_PERIOD_US}", quota(c)))?;
            }
            if let Some(p) = limits.pids_max {
                put("pids.max", p.to_string())?;
            }
        }
        CgroupVersion::V1 => {
            if let (true, Some(m)) = (has("memory"), limits.memory_max) {
                put("memory.limit_in_bytes", m.to_string())?;
                // Memory plus swap, no more than memory: no swapping past the limit.
                put_opt("memory.memsw.limit_in_bytes", m.to_string())?;
            }
            if let (true, Some(c)) = (has("cpu"), limits.cpu_max) {
                put("cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                put("cpu.cfs_quota_us", quota(c).to_string())?;
            }
            if let (true, Some(p)) = (has("pids"), limits.pids_max) {
                put("pids.max", p.to_string())?;
            }
        }
    }
    Ok(())
}

/// What a process's cgroup reports. Fields are `None` where the host's cgroup
/// does not count that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceUsage {
    /// Memory in use now, bytes.
    pub memory_current: Option<u64>,
    /// CPU time used so far by every process of the cgroup.
    pub cpu_usage: Option<Duration>,
    /// Tasks (processes and threads) now.
    pub pids_current: Option<u64>,
    /// Processes the OOM killer killed in this cgroup.
    pub oom_kills: Option<u64>,
}

/// The cgroup of one running process: one directory on v2, one per joined
/// hierarchy on v1.
#[derive(Debug)]
pub(crate) struct ProcessCgroup {
    version: CgroupVersion,
    /// Each directory with the controllers of its hierarchy (v1).
    dirs: Vec<(PathBuf, Arc<[String]>)>,
    /// `cgroup.procs` of each directory, open for the child to write itself into;
    /// closed once the child is spawned.
    join: Vec<OwnedFd>,
    /// v2, where children can be cloned into a cgroup: the directory, for
    /// `clone3` (no migration, see `clone3`); closed once the child is spawned.
    into: Option<OwnedFd>,
}

impl ProcessCgroup {
    /// Descriptors the child writes `0` into.
    pub(crate) fn join_fds(&self) -> impl Iterator<Item = libc::c_int> + '_ {
        self.join.iter().map(|f| f.as_raw_fd())
    }

    /// The directory to clone the child into, where that is possible.
    pub(crate) fn clone_into_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.into.as_ref().map(|f| f.as_fd())
    }

    pub(crate) fn close_join_fds(&mut self) {
        self.join.clear();
        self.into = None;
    }

    pub(crate) fn version(&self) -> CgroupVersion {
        self.version
    }

    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(d, _)| d.clone()).collect()
    }

    pub(crate) fn dir_with(&self, c: &str) -> Option<&Path> {
        match self.version {
            CgroupVersion::V2 => self.dirs.first().map(|(d, _)| d.as_path()),
            CgroupVersion::V1 => self
                .dirs
                .iter()
                .find(|(_, cs)| cs.iter().any(|x| x == c))
                .map(|(d, _)| d.as_path()),
        }
    }

    fn read_num(&self, c: &str, file: &str) -> Option<u64> {
        let d = self.dir_with(c)?;
        crate::reap::read_pseudo_string(d.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn read_keyed(&self, c: &str, file: &str, key: &str) -> Option<u64> {
        let d = self.dir_with(c)?;
        let text = crate::reap::read_pseudo_string(d.join(file)).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// Processes the OOM killer killed in this cgroup (one small file).
    fn oom_kills(&self) -> Option<u64> {
        match self.version {
            // A grouping-only cgroup (a hybrid host's controller-less v2
            // mount) has no memory.events: no lookup that fails at every exit.
            CgroupVersion::V2
                if !self
                    .dirs
                    .iter()
                    .any(|(_, cs)| cs.iter().any(|c| c == "memory")) =>
            {
                None
            }
            CgroupVersion::V2 => self.read_keyed("memory", "memory.events", "oom_kill"),
            CgroupVersion::V1 => self.read_keyed("memory", "memory.oom_control", "oom_kill"),
        }
    }

    /// Read the counters (a few small files).
    pub(crate) fn usage(&self) -> ResourceUsage {
        let num = |c: &str, file: &str| self.read_num(c, file);
        let keyed = |c: &str, file: &str, key: &str| self.read_keyed(c, file, key);
        match self.version {
            CgroupVersion::V2 => ResourceUsage {
                memory_current: num("memory", "memory.current"),
                cpu_usage: keyed("cpu", "cpu.stat", "usage_usec").map(Duration::from_micros),
                pids_current: num("pids", "pids.current"),
                oom_kills: self.oom_kills(),
            },
            CgroupVersion::V1 => ResourceUsage {
                memory_current: num("memory", "memory.usage_in_bytes"),
                cpu_usage: num("cpuacct", "cpuacct.usage").map(Duration::from_nanos),
                pids_current: num("pids", "pids.current"),
                oom_kills: self.oom_kills(),
            },
        }
    }

    /// Pids listed in the cgroup now.
    fn members(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for (d, _) in &self.dirs {
            if let Ok(text) = crate::reap::read_pseudo_string(d.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// SIGKILL everything in the cgroup. Returns how many were signalled (v2
    /// with `cgroup.kill`: how many were listed).
    ///
    /// Without `cgroup.kill` a member could fork between the listing and the
    /// kill; on v1 the freezer closes that race: freeze, list, kill, thaw (a
    /// frozen task dies only once thawed).
    pub(crate) fn kill_members(&self) -> usize {
        let members = self.members();
        if members.is_empty() {
            return 0;
        }
        if self.version == CgroupVersion::V2 {
            if let Some((d, _)) = self.dirs.first() {
                if fs::write(d.join("cgroup.kill"), "1").is_ok() {
                    return members.len();
                }
            }
        }
        let freezer = match self.version {
            CgroupVersion::V1 => self.dir_with("freezer").map(|d| d.join("freezer.state")),
            CgroupVersion::V2 => None,
        };
        let frozen = freezer.as_ref().is_some_and(|f| freeze(f));
        let members = if frozen { self.members() } else { members };
        for pid in &members {
            if let Some(p) = rustix::process::Pid::from_raw(*pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        if let (true, Some(f)) = (frozen, &freezer) {
            // A frozen task dies only once thawed: retry, then say so.
            if (0..3).all(|_| fs::write(f, "THAWED").is_err()) {
                tracing::warn!(cgroup = %f.display(), "could not thaw a cgroup after killing its members");
            }
        }
        members.len()
    }

    /// One removal pass: `Ok(true)` once every directory is gone.
    fn try_remove(&self) -> io::Result<bool> {
        let mut done = true;
        for (d, _) in &self.dirs {
            match fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => done = false,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// After removal: the group directory too, if no sibling is left (best effort;
    /// a sibling being created at the same time starts over, see `make_tree`).
    ///
    /// A cgroup directory's link count is 2 plus its subdirectories, so a
    /// sibling shows without an `rmdir` that fails: that failure takes the
    /// kernel's global cgroup mutex, which every `mkdir`, `rmdir` and clone
    /// into a cgroup waits for (a stop of 1,000 made 999 of them). Each
    /// caller looks after removing its own leaf, so the last of siblings
    /// leaving together sees the count at 2.
    fn remove_group_dirs(&self) {
        use std::os::unix::fs::MetadataExt;
        for (d, _) in &self.dirs {
            if let Some(g) = d.parent() {
                if fs::metadata(g).is_ok_and(|m| m.nlink() <= 2) {
                    let _ = fs::remove_dir(g);
                }
            }
        }
    }

    fn remove_dirs_blocking(&self) -> io::Result<()> {
        let start = Instant::now();
        loop {
            // An empty cgroup (the usual case: the group was killed and reaped)
            // goes at the first pass, without listing its members.
            if self.try_remove()? {
                return Ok(());
            }
            self.kill_members();
            if self.try_remove()? {
                return Ok(());
            }
            if start.elapsed() > REMOVE_TIMEOUT {
                return Err(self.stuck());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stuck(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "cgroup {} still busy after {:?} (members: {:?})",
                self.dirs
                    .first()
                    .map(|(d, _)| d.display().to_string())
                    .unwrap_or_default(),
                REMOVE_TIMEOUT,
                self.members()
            ),
        )
    }

    /// Kill what is left and remove the cgroup, blocking (spawner threads, failure
    /// paths). Returns the OOM kill count read just before removal.
    pub(crate) fn remove_blocking(&self) -> io::Result<Option<u64>> {
        let oom = self.oom_kills();
        self.remove_dirs_blocking()?;
        self.remove_group_dirs();
        Ok(oom)
    }

    /// As [`ProcessCgroup::remove_blocking`], sleeping on the runtime between
    /// passes instead of blocking a thread.
    pub(crate) async fn remove(&self) -> io::Result<Option<u64>> {
        let oom = self.oom_kills();
        let start = Instant::now();
        loop {
            if self.try_remove()? {
                break;
            }
            self.kill_members();
            if self.try_remove()? {
                break;
            }
            if start.elapsed() > REMOVE_TIMEOUT {
                return Err(self.stuck());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.remove_group_dirs();
        Ok(oom)
    }
}

/// Freeze a v1 freezer cgroup and wait (briefly) until the kernel says it is
/// frozen. `false` when it could not be frozen: the caller kills unfrozen.
fn freeze(state: &Path) -> bool {
    if fs::write(state, "FROZEN").is_err() {
        return false;
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        match fs::read_to_string(state) {
            Ok(s) if s.trim() == "FROZEN" => return true,
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => break,
        }
    }
    // Not frozen in time (a task stuck in the kernel): kill what can be killed.
    let _ = fs::write(state, "THAWED");
    false
}

/// Where a supervisor's processes' cgroups go.
pub(crate) struct Placement {
    pub host: &'static Cgroups,
    pub group: String,
    /// The supervisor's id, in every child's environment.
    pub supervisor_id: Arc<str>,
    /// Every process gets a cgroup where the host allows, not only those with
    /// limits.
    pub every_process: bool,
    /// Spawns so far: the `n` of each child's `HANGAR_SPAWN_ID`.
    pub spawns: std::sync::atomic::AtomicU64,
}

/// A supervisor group name must be one directory name.
pub(crate) fn validate_group(group: &str) -> Result<(), String> {
    if group.is_empty() || group.len() > 128 || group.starts_with('.') {
        return Err(format!(
            "cgroup group {group:?} must be 1 to 128 bytes and not start with '.'"
        ));
    }
    if let Some(c) = group
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "cgroup group {group:?} contains {c:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_mountinfo_and_own_cgroups() {
        let own = "9:name=systemd:/\n8:pids:/\n4:memory:/outer/inner\n1:cpu:/\n0::/\n";
        let c = Cgroups::from_tables(HYBRID, own);
        assert_eq!(c.v2_mount(), Some(Path::new("/sys/fs/cgroup/unified")));
        let mem = c.v1.iter().find(|h| h.has("memory")).unwrap();
        assert_eq!(mem.base, Path::new("/sys/fs/cgroup/memory/outer/inner"));
        assert_eq!(c.v1.len(), 3, "name=systemd is no controller: {c:?}");
    }

    /// `favordynmods` on any cgroup mount (v1 or v2) makes every migration
    /// on the host cheap; its absence is what hangar reports once.
    #[test]
    fn favordynmods_is_read_from_any_cgroup_mount() {
        let own = "0::/\n";
        assert!(Cgroups::from_tables(HYBRID, own).joins_wait_for_rcu());
        let v2 =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,favordynmods\n";
        let c = Cgroups::from_tables(v2, own);
        assert!(!c.joins_wait_for_rcu(), "{c}");
        assert!(c.to_string().contains("favordynmods"), "{c}");
        let v1 = "33 25 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory,favordynmods\n";
        assert!(!Cgroups::from_tables(v1, "4:memory:/\n").joins_wait_for_rcu());
        // Another filesystem's option of the same name counts for nothing.
        let other = "40 23 0:40 / /mnt rw - tmpfs tmpfs rw,favordynmods\n";
        assert!(Cgroups::from_tables(other, own).joins_wait_for_rcu());
    }

    /// On v2, process cgroups go under hangar's own cgroup (a systemd unit's,
    /// say), not at the top of the hierarchy where they would escape it.
    #[test]
    fn v2_cgroups_go_under_hangars_own() {
        let pure = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        let mut c = Cgroups::from_tables(pure, "0::/system.slice/hangar.service\n");
        let v2 = c.v2.as_mut().unwrap();
        assert_eq!(
            v2.base,
            Path::new("/sys/fs/cgroup/system.slice/hangar.service")
        );
        // Writability and controllers depend on the host; decide them here.
        v2.problem = None;
        v2.delegable = vec!["memory".into(), "cpu".into(), "pids".into()];
        let limits = Limits {
            memory_max: Some(64 << 20),
            ..Limits::default()
        };
        assert_eq!(
            c.process_dirs("g", "p", &limits),
            vec![PathBuf::from(
                "/sys/fs/cgroup/system.slice/hangar.service/hangar/g/p"
            )]
        );
        // In a container whose cgroup namespace puts hangar at the top.
        let c = Cgroups::from_tables(pure, "0::/\n");
        assert_eq!(c.v2.unwrap().base, Path::new("/sys/fs/cgroup"));
        // Not writable: v2 is not used, and the reason says what to do.
        let c = Cgroups::from_tables(pure, "0::/no/such/cgroup/here\n");
        let why = c.v2.unwrap().problem.unwrap_or_default();
        assert!(why.contains("Delegate=yes"), "{why}");
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.18.44\n", (5, 14)));
        assert!(kernel_at_least("5.14.0-362.el9.x86_64", (5, 14)));
        assert!(!kernel_at_least("5.10.209-1", (5, 14)));
        assert!(!kernel_at_least("4.19.0", (5, 14)));
        assert!(!kernel_at_least("", (5, 14)));
        assert!(!kernel_at_least("garbage", (5, 14)));
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\"), "/end\\");
    }

    #[test]
    fn own_path_outside_the_mount_root_uses_the_mount() {
        assert_eq!(rel_under("/a/b", "/a"), Some("b"));
        assert_eq!(rel_under("/a/b", "/"), Some("a/b"));
        assert_eq!(rel_under("/ab", "/a"), None);
        assert_eq!(rel_under("/", "/"), Some(""));
    }

    #[test]
    fn without_cgroups_limits_are_skipped_not_failed() {
        let c = Cgroups::from_tables("", "");
        let limits = Limits {
            memory_max: Some(64 << 20),
            ..Limits::default()
        };
        assert_eq!(c.version(), None);
        assert_eq!(c.version_for(&limits), None);
        let why = c.unusable_reason(&limits).unwrap_or_default();
        assert!(
            why.contains("no cgroup2 mount") && why.contains("no cgroup v1"),
            "{why}"
        );
        assert!(c.create("g", "p", &limits).unwrap().is_none());
        assert!(c.process_dirs("g", "p", &limits).is_empty());
    }

    #[test]
    fn v1_is_chosen_when_v2_lacks_the_controllers() {
        let mut c = Cgroups::from_tables(HYBRID, "8:pids:/\n4:memory:/\n1:cpu:/\n0::/\n");
        // Writability depends on who runs the test; decide it here.
        for h in c.v1.iter_mut() {
            h.problem = None;
        }
        if let Some(v2) = c.v2.as_mut() {
            v2.problem = None;
            v2.delegable = vec!["hugetlb".into()];
        }
        let limits = Limits {
            memory_max: Some(64 << 20),
            pids_max: Some(10),
            ..Limits::default()
        };
        assert_eq!(c.version_for(&limits), Some(CgroupVersion::V1));
        let dirs = c.process_dirs("g", "p", &limits);
        assert!(
            dirs.contains(&PathBuf::from("/sys/fs/cgroup/memory/hangar/g/p")),
            "{dirs:?}"
        );
        assert!(
            dirs.contains(&PathBuf::from("/sys/fs/cgroup/pids/hangar/g/p")),
            "{dirs:?}"
        );
        if let Some(v2) = c.v2.as_mut() {
            v2.delegable = vec!["memory".into(), "pids".into(), "cpu".into()];
        }
        assert_eq!(c.version_for(&limits), Some(CgroupVersion::V2));
        assert_eq!(
            c.process_dirs("g", "p", &limits),
            vec![PathBuf::from("/sys/fs/cgroup/unified/hangar/g/p")]
        );
    }

    /// The v2 path on whatever cgroup2 mount this host has (on a hybrid host, the
    /// controller-less unified one: grouping, accounting and removal still work).
    #[test]
    fn v2_cgroup_is_created_holds_a_process_and_is_removed() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP v2_cgroup_is_created: needs root");
            return;
        }
        let mut c = Cgroups::detect();
        c.v1.clear();
        match &c.v2 {
            Some(h) if h.problem.is_none() => {}
            other => {
                eprintln!("SKIP v2_cgroup_is_created: no usable cgroup2 mount ({other:?})");
                return;
            }
        }
        let group = format!("hgunit-{}", std::process::id());
        let limits = Limits::default();
        let cg = c.create(&group, "p", &limits).unwrap().unwrap();
        assert_eq!(cg.version(), CgroupVersion::V2);
        assert_eq!(cg.join_fds().count(), 1);
        let dir = cg.dirs()[0].clone();
        assert_eq!(vec![dir.clone()], c.process_dirs(&group, "p", &limits));
        assert!(dir.is_dir());
        let mut child = std::process::Command::new("sleep")
            .arg("3600")
            .spawn()
            .unwrap();
        fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        assert_eq!(cg.members(), vec![child.id() as i32]);
        assert!(cg.usage().cpu_usage.is_some(), "{:?}", cg.usage());
        // Removal kills what is inside, even though it is nobody's group leader here.
        let reaper = std::thread::spawn(move || child.wait());
        cg.remove_blocking().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(reaper.join().unwrap().unwrap().signal(), Some(9));
        assert!(!dir.exists());
        assert!(
            !dir.parent().unwrap().exists(),
            "the group directory goes too"
        );
    }

    /// The group directory stays while a sibling is left, and goes with the
    /// last of siblings removed together, whichever finishes last.
    #[test]
    fn the_group_directory_goes_with_its_last_process_cgroup() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP the_group_directory_goes: needs root");
            return;
        }
        let c = Cgroups::detect();
        let limits = Limits::default();
        let group = format!("hgunit-sib-{}", std::process::id());
        let Some(first) = c.create(&group, "first", &limits).ok().flatten() else {
            eprintln!("SKIP the_group_directory_goes: no usable cgroup hierarchy here");
            return;
        };
        let second = c.create(&group, "second", &limits).unwrap().unwrap();
        let gdirs: Vec<PathBuf> = first
            .dirs()
            .iter()
            .map(|d| d.parent().unwrap().to_path_buf())
            .collect();
        first.remove_blocking().unwrap();
        assert!(gdirs.iter().all(|g| g.is_dir()), "a sibling is left");
        second.remove_blocking().unwrap();
        assert!(gdirs.iter().all(|g| !g.exists()), "{gdirs:?} left behind");

        for round in 0..5 {
            let cgs: Vec<ProcessCgroup> = (0..8)
                .map(|i| {
                    c.create(&group, &format!("p{i}"), &limits)
                        .unwrap()
                        .unwrap()
                })
                .collect();
            std::thread::scope(|s| {
                for cg in &cgs {
                    s.spawn(|| cg.remove_blocking().unwrap());
                }
            });
            assert!(
                gdirs.iter().all(|g| !g.exists()),
                "round {round}: {gdirs:?} left behind by eight siblings removed at once"
            );
        }
    }

    #[test]
    fn group_names_are_single_directory_names() {
        assert!(validate_group("daemon-1").is_ok());
        assert!(validate_group("../x").is_err());
        assert!(validate_group("a/b").is_err());
        assert!(validate_group("").is_err());
    }
}
