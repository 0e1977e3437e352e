//! Privileges of a child: the user it runs as, `no_new_privs`, the network
//! namespace it joins. Everything is resolved and opened here, in the parent,
//! before the clone; the child then makes only raw syscalls on the prepared values
//! (see `spawn::child_main`).
//!
//! Stable error codes (in the `code` context entry of a `PROCESS_START_FAILED`
//! error, or of the `INVALID_SPEC` error of [`RunAs::from_name`]):
//! `PRIVS_UNKNOWN_USER`, `PRIVS_NOT_ROOT`, `PRIVS_SETID_FAILED`,
//! `PRIVS_NO_NEW_PRIVS_FAILED`, `NETNS_OPEN_FAILED`, `NETNS_JOIN_FAILED`.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, ErrorKind};
use crate::spec::{ProcessSpec, RunAs};

/// The user name was not found (passwd database).
pub const PRIVS_UNKNOWN_USER: &str = "PRIVS_UNKNOWN_USER";
/// A [`RunAs`] was given but hangar does not run as root.
pub const PRIVS_NOT_ROOT: &str = "PRIVS_NOT_ROOT";
/// setgroups, setgid or setuid failed in the child.
pub const PRIVS_SETID_FAILED: &str = "PRIVS_SETID_FAILED";
/// `PR_SET_NO_NEW_PRIVS` failed in the child.
pub const PRIVS_NO_NEW_PRIVS_FAILED: &str = "PRIVS_NO_NEW_PRIVS_FAILED";
/// The network namespace could not be opened, or is not a network namespace.
pub const NETNS_OPEN_FAILED: &str = "NETNS_OPEN_FAILED";
/// setns into the network namespace failed in the child.
pub const NETNS_JOIN_FAILED: &str = "NETNS_JOIN_FAILED";

/// A failure to set up a child (cgroup, user, namespace) before it could run.
/// Travels inside the spawner's `io::Error` and becomes a `PROCESS_START_FAILED`
/// [`Error`] with `code` in its context.
#[derive(Debug)]
pub(crate) struct SetupError {
    pub code: &'static str,
    pub message: String,
    pub hint: String,
    pub source: Option<io::Error>,
    /// Retrying cannot help (a missing user or namespace, a refused value).
    pub permanent: bool,
}

impl SetupError {
    pub(crate) fn new(
        code: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        SetupError {
            code,
            message: message.into(),
            hint: hint.into(),
            source: None,
            permanent: true,
        }
    }

    pub(crate) fn source(mut self, e: io::Error) -> Self {
        self.source = Some(e);
        self
    }

    pub(crate) fn transient(mut self) -> Self {
        self.permanent = false;
        self
    }

    pub(crate) fn into_io(self) -> io::Error {
        io::Error::other(self)
    }

    /// The setup error inside `e`, if it carries one.
    pub(crate) fn find(e: &io::Error) -> Option<&SetupError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<SetupError>())
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SetupError {}

impl RunAs {
    /// Resolve a user by name (through the system's passwd database, so NSS
    /// sources count too): its uid, primary gid and every group it is a member
    /// of. A numeric string is taken as a uid. Fails with `INVALID_SPEC` and
    /// `code=PRIVS_UNKNOWN_USER` when there is no such user.
    pub fn from_name(name: &str) -> Result<RunAs, Error> {
        let unknown = |why: String| {
            Error::of(ErrorKind::InvalidSpec, why)
                .ctx("user", name)
                .ctx("code", PRIVS_UNKNOWN_USER)
                .hint("create the user (useradd --system NAME) or name an existing one")
                .build()
        };
        let lookup = match name.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
            Err(_) => nix::unistd::User::from_name(name),
        };
        let user = match lookup {
            Ok(Some(u)) => u,
            Ok(None) => return Err(unknown(format!("no user named {name:?}"))),
            Err(e) => return Err(unknown(format!("could not look up user {name:?}: {e}"))),
        };
        let cname = std::ffi::CString::new(user.name.as_bytes())
            .map_err(|_| unknown(format!("user name {name:?} contains a NUL byte")))?;
        let mut groups: Vec<u32> = nix::unistd::getgrouplist(&cname, user.gid)
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        groups.sort_unstable();
        groups.dedup();
        Ok(RunAs {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        })
    }
}

/// What the child needs for its privileges, prepared before the clone.
pub(crate) struct Prepared {
    /// The network namespace to join, opened.
    pub netns: Option<OwnedFd>,
    /// Ids to switch to.
    pub ids: Option<Ids>,
    pub no_new_privs: bool,
}

pub(crate) struct Ids {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
}

impl Prepared {
    pub(crate) fn netns_fd(&self) -> libc::c_int {
        self.netns.as_ref().map_or(-1, |f| f.as_raw_fd())
    }
}

/// `ioctl(NS_GET_NSTYPE)`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Open the namespace, check the ids can be switched to: everything that can fail
/// before the child exists fails here, with a clear error.
pub(crate) fn prepare(spec: &ProcessSpec) -> Result<Prepared, SetupError> {
    let ids = match &spec.user {
        None => None,
        Some(u) => {
            if !rustix::process::geteuid().is_root() {
                return Err(SetupError::new(
                    PRIVS_NOT_ROOT,
                    format!(
                        "process {:?} asks to run as uid {} but hangar does not run as root",
                        spec.name, u.uid
                    ),
                    "run hangar as root to switch users, or remove `user` from the spec",
                ));
            }
            Some(Ids {
                uid: u.uid,
                gid: u.gid,
                groups: u.groups.clone(),
            })
        }
    };
    let netns = match &spec.netns {
        None => None,
        Some(path) => Some(open_netns(path)?),
    };
    Ok(Prepared {
        netns,
        ids,
        no_new_privs: spec.no_new_privs,
    })
}

fn open_netns(path: &Path) -> Result<OwnedFd, SetupError> {
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        SetupError::new(
            NETNS_OPEN_FAILED,
            format!("could not open network namespace {}", path.display()),
            "create the namespace first (ip netns add NAME makes /run/netns/NAME)",
        )
        .source(e.into())
    })?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor's
    // namespace type; `fd` is a valid open descriptor.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind != libc::CLONE_NEWNET {
        let why = if kind < 0 {
            format!("{}", io::Error::last_os_error())
        } else {
            "another kind of namespace".to_string()
        };
        return Err(SetupError::new(
            NETNS_OPEN_FAILED,
            format!("{} is not a network namespace ({why})", path.display()),
            "give the path of a network namespace, e.g. /run/netns/NAME",
        ));
    }
    Ok(fd)
}
