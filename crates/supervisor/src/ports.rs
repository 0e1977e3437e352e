//! The port registry: hands out TCP ports from named ranges to owners, checks
//! that a port is really bindable on the host before handing it out, and never
//! gives one port to two owners. `release_all(owner)` frees everything an owner
//! held, so cleanup after a failure is one call. The [`Manager`](crate::Manager)
//! gives processes their named ports from one ([`Manager::ports`](crate::Manager::ports)).
//!
//! ```
//! use hangar_supervisor::{PortRange, PortRegistry};
//!
//! let reg = PortRegistry::new([PortRange::new("web", 41000, 41099)]).unwrap();
//! let port = reg.allocate("web", "my-process").unwrap();
//! assert_eq!(reg.owner(port).as_deref(), Some("my-process"));
//! assert_eq!(reg.release_all("my-process"), vec![port]);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

/// A named range of ports, e.g. `processes` = 20000..=29999.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange {
    /// What the range is for; `allocate` names it.
    pub purpose: String,
    /// First port, inclusive.
    pub start: u16,
    /// Last port, inclusive.
    pub end: u16,
}

impl PortRange {
    /// A range `start..=end` for `purpose`.
    pub fn new(purpose: impl Into<String>, start: u16, end: u16) -> Self {
        PortRange {
            purpose: purpose.into(),
            start,
            end,
        }
    }
}

/// What went wrong, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortErrorKind {
    /// A range is empty, overlaps another, includes port 0, or is named twice.
    InvalidRange,
    /// No range has that purpose.
    UnknownRange,
    /// Every port of the range is taken (or not bindable on this host).
    Exhausted,
    /// The port is already allocated to another owner.
    InUse,
    /// The port is held by something else on this host.
    NotBindable,
}

impl PortErrorKind {
    /// Stable code, e.g. `PORT_RANGE_EXHAUSTED`.
    pub const fn code(self) -> &'static str {
        match self {
            PortErrorKind::InvalidRange => "PORT_RANGE_INVALID",
            PortErrorKind::UnknownRange => "PORT_RANGE_UNKNOWN",
            PortErrorKind::Exhausted => "PORT_RANGE_EXHAUSTED",
            PortErrorKind::InUse => "PORT_IN_USE",
            PortErrorKind::NotBindable => "PORT_NOT_BINDABLE",
        }
    }
}

/// An error from the registry: kind, message and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortError {
    /// The kind (stable code).
    pub kind: PortErrorKind,
    /// What happened, with the port/range/owner involved.
    pub message: String,
    /// How to fix it.
    pub hint: &'static str,
}

impl PortError {
    fn new(kind: PortErrorKind, message: String, hint: &'static str) -> Self {
        PortError {
            kind,
            message,
            hint,
        }
    }

    /// Stable code.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} (hint: {})",
            self.code(),
            self.message,
            self.hint
        )
    }
}

impl std::error::Error for PortError {}

/// Hands out ports from named ranges; safe to share between threads.
///
/// A port is handed out only if no owner holds it *and* it can be bound on the
/// host right now (on the IPv4 and IPv6 wildcard addresses), so a port some other
/// program listens on is skipped. Within a range, allocation continues after the
/// last port handed out rather than from the start, so a just-released port (whose
/// old socket may linger in TIME_WAIT) is not handed out again at once.
pub struct PortRegistry {
    ranges: Vec<PortRange>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    owner_of: HashMap<u16, String>,
    by_owner: HashMap<String, Vec<u16>>,
    /// Next port to try, per range index.
    cursor: Vec<u16>,
}

impl Inner {
    fn give(&mut self, port: u16, owner: &str) {
        self.owner_of.insert(port, owner.to_string());
        self.by_owner
            .entry(owner.to_string())
            .or_default()
            .push(port);
    }
}

impl PortRegistry {
    /// A registry over these ranges. Refuses empty, overlapping or duplicate ranges.
    pub fn new(ranges: impl IntoIterator<Item = PortRange>) -> Result<Self, PortError> {
        let ranges: Vec<PortRange> = ranges.into_iter().collect();
        for (i, r) in ranges.iter().enumerate() {
            if r.start == 0 || r.start > r.end {
                return Err(PortError::new(
                    PortErrorKind::InvalidRange,
                    format!("range {:?} is {}..={}", r.purpose, r.start, r.end),
                    "give a range with 1 <= start <= end <= 65535",
                ));
            }
            for o in &ranges[..i] {
                if o.purpose == r.purpose {
                    return Err(PortError::new(
                        PortErrorKind::InvalidRange,
                        format!("range {:?} is defined twice", r.purpose),
                        "give each range a distinct purpose",
                    ));
                }
                if r.start <= o.end && o.start <= r.end {
                    return Err(PortError::new(
                        PortErrorKind::InvalidRange,
                        format!("ranges {:?} and {:?} overlap", o.purpose, r.purpose),
                        "ranges must not share ports",
                    ));
                }
            }
        }
        let cursor = ranges.iter().map(|r| r.start).collect();
        Ok(PortRegistry {
            ranges,
            inner: Mutex::new(Inner {
                cursor,
                ..Inner::default()
            }),
        })
    }

    /// The configured ranges.
    pub fn ranges(&self) -> &[PortRange] {
        &self.ranges
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked: every mutation is a
        // single insert or remove.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give `owner` the next free, bindable port of the range named `range`.
    pub fn allocate(&self, range: &str, owner: &str) -> Result<u16, PortError> {
        let idx = self
            .ranges
            .iter()
            .position(|r| r.purpose == range)
            .ok_or_else(|| {
                PortError::new(
                    PortErrorKind::UnknownRange,
                    format!("no port range named {range:?}"),
                    "use one of the configured range names",
                )
            })?;
        let r = &self.ranges[idx];
        let mut inner = self.lock();
        let len = u32::from(r.end - r.start) + 1;
        let mut port = inner.cursor[idx];
        for _ in 0..len {
            let next = if port == r.end { r.start } else { port + 1 };
            if !inner.owner_of.contains_key(&port) && bindable(port) {
                inner.give(port, owner);
                inner.cursor[idx] = next;
                return Ok(port);
            }
            port = next;
        }
        Err(PortError::new(
            PortErrorKind::Exhausted,
            format!(
                "no free port in range {range:?} ({}..={}) for {owner:?}",
                r.start, r.end
            ),
            "release ports (remove stopped processes) or widen the range",
        ))
    }

    /// Give `owner` this exact port. Refused if another owner holds it or the host
    /// cannot bind it; idempotent for the same owner.
    pub fn reserve(&self, port: u16, owner: &str) -> Result<(), PortError> {
        let mut inner = self.lock();
        match inner.owner_of.get(&port) {
            Some(o) if o == owner => return Ok(()),
            Some(o) => {
                return Err(PortError::new(
                    PortErrorKind::InUse,
                    format!("port {port} is allocated to {o:?}"),
                    "pick another port or release it first",
                ))
            }
            None => {}
        }
        if !bindable(port) {
            return Err(PortError::new(
                PortErrorKind::NotBindable,
                format!("port {port} is in use on this host"),
                "another program listens on it; pick another port",
            ));
        }
        inner.give(port, owner);
        Ok(())
    }

    /// Free one port. Returns whether it was allocated.
    pub fn release(&self, port: u16) -> bool {
        let mut inner = self.lock();
        let Some(owner) = inner.owner_of.remove(&port) else {
            return false;
        };
        if let Some(list) = inner.by_owner.get_mut(&owner) {
            list.retain(|p| *p != port);
            if list.is_empty() {
                inner.by_owner.remove(&owner);
            }
        }
        true
    }

    /// Free every port `owner` holds; returns them. Idempotent.
    pub fn release_all(&self, owner: &str) -> Vec<u16> {
        let mut inner = self.lock();
        let ports = inner.by_owner.remove(owner).unwrap_or_default();
        for p in &ports {
            inner.owner_of.remove(p);
        }
        ports
    }

    /// Not allocated here and bindable on the host right now.
    pub fn is_available(&self, port: u16) -> bool {
        !self.lock().owner_of.contains_key(&port) && bindable(port)
    }

    /// Who holds `port`.
    pub fn owner(&self, port: u16) -> Option<String> {
        self.lock().owner_of.get(&port).cloned()
    }

    /// Ports held by `owner`, in allocation order.
    pub fn ports_of(&self, owner: &str) -> Vec<u16> {
        self.lock().by_owner.get(owner).cloned().unwrap_or_default()
    }

    /// Every allocation, by port.
    pub fn allocations(&self) -> BTreeMap<u16, String> {
        self.lock()
            .owner_of
            .iter()
            .map(|(p, o)| (*p, o.clone()))
            .collect()
    }
}

/// Whether a TCP socket could bind `port` on the wildcard addresses right now.
/// (std sets SO_REUSEADDR, so a port lingering in TIME_WAIT counts as bindable, as
/// it will for the service that binds it.)
fn bindable(port: u16) -> bool {
    let v4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).is_ok();
    if !v4 {
        return false;
    }
    // Hosts without IPv6 cannot bind [::]; that does not make the port busy.
    match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
    }
}

impl hangar_base::Coded for PortErrorKind {
    fn code(self) -> &'static str {
        PortErrorKind::code(self)
    }
    fn category(self) -> hangar_base::Category {
        use hangar_base::Category as C;
        match self {
            PortErrorKind::InvalidRange | PortErrorKind::UnknownRange => C::Invalid,
            PortErrorKind::Exhausted => C::Exhausted,
            PortErrorKind::InUse | PortErrorKind::NotBindable => C::Conflict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_validated() {
        assert_eq!(
            PortRegistry::new([PortRange::new("a", 10, 5)])
                .err()
                .map(|e| e.kind),
            Some(PortErrorKind::InvalidRange)
        );
        assert_eq!(
            PortRegistry::new([PortRange::new("a", 100, 200), PortRange::new("b", 150, 300)])
                .err()
                .map(|e| e.kind),
            Some(PortErrorKind::InvalidRange)
        );
        let r = PortRegistry::new([PortRange::new("a", 100, 200)]).unwrap();
        assert_eq!(
            r.allocate("zzz", "o").unwrap_err().code(),
            "PORT_RANGE_UNKNOWN"
        );
    }
}
