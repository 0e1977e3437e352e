//! Named network namespaces, made the way `ip netns add` makes them: a file
//! under `/run/netns` with the namespace bind-mounted on it, so `ip netns`,
//! `nsenter --net=PATH` and hangar's supervisor (`setns` before exec) can use it.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

/// Where named namespaces live (the `ip netns` directory).
pub const NETNS_DIR: &str = "/run/netns";

/// The path of the named network namespace `name`: `/run/netns/NAME`.
///
/// The supervisor opens it and calls `setns(fd, CLONE_NEWNET)` in the child
/// before exec, so the instance's process runs inside its namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

static RUN_DIR_READY: Mutex<bool> = Mutex::new(false);

/// Makes `/run/netns` exist and be a shared mount point, as iproute2 does, so
/// namespace mounts propagate to other mount namespaces. Done once per process.
fn prepare_run_dir() -> io::Result<()> {
    let mut ready = RUN_DIR_READY.lock().unwrap_or_else(|p| p.into_inner());
    if *ready {
        return Ok(());
    }
    match fs::create_dir(NETNS_DIR) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let shared = MountPropagationFlags::SHARED | MountPropagationFlags::REC;
    match rustix::mount::mount_change(NETNS_DIR, shared) {
        Ok(()) => {}
        Err(rustix::io::Errno::INVAL) => {
            // Not a mount point yet: make it one by binding it on itself, then retry.
            rustix::mount::mount_bind_recursive(NETNS_DIR, NETNS_DIR)?;
            rustix::mount::mount_change(NETNS_DIR, shared)?;
        }
        Err(e) => return Err(e.into()),
    }
    *ready = true;
    Ok(())
}

/// Creates the named namespace `name` and runs `inside` on the thread that
/// made it, while that thread is in the new namespace (e.g. to open a netlink
/// socket there). All of it runs on one short-lived thread (namespaces belong
/// to threads; the rest of the process is unaffected); the result comes back
/// through a channel, so an async caller does not block. On any failure
/// nothing is left.
pub(crate) async fn create_netns<R: Send + 'static>(
    name: &str,
    inside: impl FnOnce() -> io::Result<R> + Send + 'static,
) -> io::Result<R> {
    let path = netns_path(name);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hangar-netns".into())
        .spawn(move || {
            let _ = tx.send(create_netns_here(&path, inside));
        })?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
}

/// The body of [`create_netns`]; leaves the calling thread in the new namespace.
fn create_netns_here<R>(path: &Path, inside: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
    prepare_run_dir()?;
    // The mount point: an empty file, made exclusively so two creators cannot
    // share one name.
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    drop(fd);
    let made = (|| -> io::Result<R> {
        // SAFETY: only CLONE_NEWNET is unshared, never CLONE_FILES, so no
        // thread can lose access to file descriptors (the hazard that makes
        // `unshare` unsafe); exercised by every namespace the tests create.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET)? };
        rustix::mount::mount(
            "/proc/thread-self/ns/net",
            path,
            "none",
            MountFlags::BIND,
            None,
        )?;
        inside().inspect_err(|_| {
            let _ = rustix::mount::unmount(path, UnmountFlags::DETACH);
        })
    })();
    if made.is_err() {
        let _ = fs::remove_file(path);
    }
    made
}

/// Removes the named namespace `name` (the kernel frees it once no process or
/// socket uses it). Returns whether it existed. Fine if it is already gone.
pub(crate) fn delete_netns(name: &str) -> io::Result<bool> {
    let path = netns_path(name);
    let existed = path.exists();
    match rustix::mount::unmount(&path, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(existed),
        Err(e) => Err(e),
    }
}

/// [`delete_netns`] on a short-lived thread (unmounting waits for an RCU
/// grace period), so an async caller does not block.
pub(crate) async fn delete_netns_async(name: &str) -> io::Result<bool> {
    let name = name.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hangar-netns-del".into())
        .spawn(move || {
            let _ = tx.send(delete_netns(&name));
        })?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
}

/// The names under `/run/netns`.
pub(crate) fn list_netns() -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(NETNS_DIR) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for ent in rd {
        if let Some(name) = ent?.file_name().to_str() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Opens a namespace file (for `setns` or `IFLA_NET_NS_FD`). The descriptor
/// is close-on-exec.
///
/// For running a process inside an instance's namespace: open it in the
/// parent, then call [`enter_netns`] with it in the child before exec (e.g.
/// in `CommandExt::pre_exec`).
pub fn open_netns(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Moves the calling thread into the network namespace `fd` refers to (one
/// `setns(fd, CLONE_NEWNET)` syscall). It allocates nothing and takes no lock,
/// so it is safe to call between `fork` and `exec` (in `pre_exec`).
pub fn enter_netns(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::thread::move_into_link_name_space(
        fd,
        Some(LinkNameSpaceType::Network),
    )?)
}

/// Moves the calling thread into the process's own network namespace (the
/// main thread's, `/proc/self/ns/net`), so a helper thread spawned from a
/// thread that had joined an instance's namespace still works on the host.
/// Best effort: without `/proc` the thread stays where it is.
pub(crate) fn enter_process_netns() {
    if let Ok(fd) = open_netns(Path::new("/proc/self/ns/net")) {
        let _ = enter_netns(fd.as_fd());
    }
}

/// Starts a thread that joins the network namespace at `path` and runs `f`
/// there; sockets `f` makes live in that namespace. For tests and tools (e.g.
/// a TCP listener on the instance address); the supervisor uses
/// [`netns_path`] and `setns` in the child instead.
pub fn spawn_in_netns<R, F>(path: &Path, f: F) -> io::Result<std::thread::JoinHandle<io::Result<R>>>
where
    R: Send + 'static,
    F: FnOnce() -> io::Result<R> + Send + 'static,
{
    let fd = open_netns(path)?;
    std::thread::Builder::new()
        .name("hangar-in-netns".into())
        .spawn(move || {
            enter_netns(fd.as_fd())?;
            drop(fd);
            f()
        })
}

/// Runs `f` in the network namespace at `path` on a helper thread and waits
/// for it.
pub fn in_netns<R, F>(path: &Path, f: F) -> io::Result<R>
where
    R: Send + 'static,
    F: FnOnce() -> io::Result<R> + Send + 'static,
{
    spawn_in_netns(path, f)?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
}
