//! Starting a child inside its cgroup: `clone3` with `CLONE_INTO_CGROUP`.
//!
//! A child that writes itself into `cgroup.procs` migrates, and a migration
//! takes the kernel's `cgroup_threadgroup_rwsem` for writing: unless a cgroup
//! mount has `favordynmods`, the writer waits out an RCU grace period (9 to
//! 12 ms per spawn measured on a 2-vCPU Linux 6.18 guest). `clone3` with
//! `CLONE_INTO_CGROUP` (Linux 5.7, cgroup v2) creates the child in the target
//! cgroup instead: the fork path takes that lock only for reading (and the
//! cgroup mutex, as a `mkdir` of a cgroup does), and nothing migrates (0.2 ms,
//! fork included, against 11.9 ms for a move on the same host).
//!
//! libc has no `clone3` wrapper that runs a function on a new stack, as its
//! `clone` does for `CLONE_VM` children, and a raw syscall cannot return into
//! Rust on a stack that has no frames. So the syscall is made here in a few
//! instructions of assembly that, in the child, call the child function and
//! exit. x86-64 only; elsewhere [`supported`] is false and children join their
//! cgroup by writing `cgroup.procs`, as before.

use std::io;
#[cfg(target_arch = "x86_64")]
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

/// Put the child in the cgroup of `clone_args::cgroup` (include/uapi/linux/sched.h).
pub(crate) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args`, version 2 (with `cgroup`): 88 bytes.
#[repr(C, align(8))]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The child function: what `libc::clone` takes.
pub(crate) type ChildFn = extern "C" fn(*mut libc::c_void) -> libc::c_int;

/// Whether children can be created inside a cgroup v2 directory here:
/// x86-64, a kernel with `CLONE_INTO_CGROUP`, and no seccomp filter that
/// refuses `clone3` (container runtimes often answer ENOSYS or EPERM to make
/// libc fall back to `clone`). Probed until the kernel gives a definite
/// answer: a probe refused for want of memory or processes says nothing.
pub(crate) fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    if let Some(s) = SUPPORTED.get() {
        return *s;
    }
    match probe() {
        Some(s) => *SUPPORTED.get_or_init(|| s),
        None => false,
    }
}

#[cfg(target_arch = "x86_64")]
fn probe() -> Option<bool> {
    // A descriptor that cannot be open (above the largest the kernel allows):
    // a kernel that knows CLONE_INTO_CGROUP looks it up and fails with EBADF
    // before a child exists; 5.3 to 5.6 reject the larger struct or the flag
    // (E2BIG, EINVAL), older kernels and seccomp filters say ENOSYS or EPERM.
    // CLONE_VM: nothing of ours is copied for a child that never comes.
    let mut stack = [0u8; 4096];
    let base = stack.as_mut_ptr();
    let top = (base as usize + stack.len()) & !15;
    let args = CloneArgs {
        flags: libc::CLONE_VM as u64 | libc::CLONE_VFORK as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: base as u64,
        stack_size: (top - base as usize) as u64,
        cgroup: i32::MAX as u64,
        ..CloneArgs::default()
    };
    // SAFETY: a child, if one were created after all, shares our memory and
    // runs `probe_child` (one raw exit syscall) on `stack`, which lives until
    // the call returns, while this thread waits (CLONE_VFORK).
    match unsafe { raw_clone3(&args, probe_child, std::ptr::null_mut()) } {
        Err(e) => match e.raw_os_error() {
            Some(libc::EBADF) => Some(true),
            Some(libc::EAGAIN | libc::ENOMEM) => None,
            _ => Some(false),
        },
        Ok(pid) => {
            // Not expected; reap it and do not rely on the flag.
            let _ = rustix::process::waitpid(
                rustix::process::Pid::from_raw(pid),
                rustix::process::WaitOptions::empty(),
            );
            Some(false)
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn probe() -> Option<bool> {
    Some(false)
}

/// Whether a failed clone into a cgroup should be tried again the classic
/// way (clone, then the child joins): the kernel would not clone into that
/// cgroup. Not for a lack of processes or memory (the cgroup's own limits
/// refusing the fork among them), which the spawn reports as such.
pub(crate) fn fall_back_after(e: &io::Error) -> bool {
    !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOMEM))
}

#[cfg(target_arch = "x86_64")]
extern "C" fn probe_child(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: the raw exit syscall ends this child (which shares our memory)
    // without touching anything of the parent's; it does not return.
    unsafe {
        libc::syscall(libc::SYS_exit, 0);
    }
    0
}

/// Create a child as `libc::clone(f, top, CLONE_VM | CLONE_VFORK | extra |
/// SIGCHLD, arg)` would, but inside the cgroup v2 directory `cgroup`. `stack`
/// is the child's stack (its top must be 16-byte aligned). Returns the pid.
///
/// # Safety
///
/// As for `libc::clone` with `CLONE_VM | CLONE_VFORK`: `f` may only make
/// async-signal-safe calls and must exec or `_exit`; `stack` must be unused by
/// anyone else until this returns; `arg` and all it points to must stay valid
/// until then (CLONE_VFORK holds the caller until the child has exec'd or
/// exited); signals should be blocked so that no handler runs in the child.
pub(crate) unsafe fn clone_vfork_into(
    extra_flags: u64,
    cgroup: BorrowedFd<'_>,
    stack: &mut [u8],
    f: ChildFn,
    arg: *mut libc::c_void,
) -> io::Result<libc::pid_t> {
    #[cfg(target_arch = "x86_64")]
    {
        let base = stack.as_mut_ptr();
        let top = (base as usize + stack.len()) & !15;
        let args = CloneArgs {
            flags: libc::CLONE_VM as u64
                | libc::CLONE_VFORK as u64
                | extra_flags
                | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            stack: base as u64,
            stack_size: (top - base as usize) as u64,
            cgroup: cgroup.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: the caller's contract above.
        unsafe { raw_clone3(&args, f, arg) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (extra_flags, cgroup, stack, f, arg);
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

/// `clone3(args)`; the child (which starts on `args.stack`, with no frames)
/// calls `f(arg)` and exits with what it returns.
///
/// # Safety
///
/// See [`clone_vfork_into`]; without CLONE_VM the child runs `f` in a copy
/// of our memory.
#[cfg(target_arch = "x86_64")]
unsafe fn raw_clone3(
    args: &CloneArgs,
    f: ChildFn,
    arg: *mut libc::c_void,
) -> io::Result<libc::pid_t> {
    let ret: isize;
    // SAFETY: the syscall clobbers rax (the result), rcx and r11; the parent
    // takes the branch to 2 and touches nothing else. The child starts with our
    // registers but rax = 0 and rsp = stack + stack_size (16-byte aligned, so
    // `call` leaves it as the ABI expects at function entry); r12 and r13
    // survive the syscall and carry `arg` and `f`. It clears the frame pointer
    // (the end of its stack trace), calls `f`, and exits with its result
    // (SYS_exit); it never comes back to Rust. The kernel reads `args` during
    // the call only, and it outlives the call.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") f,
            exit = const libc::SYS_exit,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    Ok(ret as libc::pid_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};

    #[test]
    fn the_struct_is_the_kernels_version_2() {
        assert_eq!(std::mem::size_of::<CloneArgs>(), 88);
    }

    /// The child of the test below: writes its own /proc/self/cgroup line
    /// for the unified hierarchy into the pipe, then exits.
    extern "C" fn report_cgroup(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the pipe's write end, as a raw descriptor; only
        // raw syscalls on our own stack buffer follow.
        unsafe {
            let out = arg as usize as libc::c_int;
            let fd = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
            let mut buf = [0u8; 1024];
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n > 0 {
                libc::write(out, buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0)
        }
    }

    #[test]
    fn a_child_starts_inside_the_cgroup_it_is_cloned_into() {
        if !supported() {
            eprintln!(
                "skipped: clone3 with CLONE_INTO_CGROUP is not available here (x86-64, Linux 5.7+)"
            );
            return;
        }
        let Some(v2) = crate::cgroup::Cgroups::host()
            .v2_mount()
            .map(|p| p.to_path_buf())
        else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        let dir = v2.join(format!("hangar-clone3-test-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("skipped: cannot create {} ({e}); needs root", dir.display());
            return;
        }
        let cg: OwnedFd = rustix::fs::open(
            &dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut stack = vec![0u8; 64 * 1024];
        // SAFETY: `report_cgroup` makes raw syscalls only and exits; the
        // stack and the pipe outlive the call (CLONE_VFORK); signals are
        // blocked around it, as the contract asks.
        let res = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let res = clone_vfork_into(
                0,
                cg.as_fd(),
                &mut stack,
                report_cgroup,
                w.as_raw_fd() as usize as *mut libc::c_void,
            );
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            res
        };
        let pid = match res {
            Ok(pid) => pid,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                panic!("clone3 into {}: {e}", dir.display());
            }
        };
        drop(w);
        let mut text = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match rustix::io::read(&r, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
        let status = rustix::process::waitpid(
            rustix::process::Pid::from_raw(pid),
            rustix::process::WaitOptions::empty(),
        )
        .unwrap()
        .unwrap();
        let _ = std::fs::remove_dir(&dir);
        let text = String::from_utf8_lossy(&text);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let unified = text.lines().find(|l| l.starts_with("0::")).unwrap_or("");
        assert!(unified.ends_with(&format!("/{name}")), "{text}");
        assert_eq!(status.1.exit_status(), Some(0));
    }
}
