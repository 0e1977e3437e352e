#!/usr/bin/env python3
"""Compare process supervisors on one scenario: N copies of `sleep 3600`.

Stdlib only, Python 3.11+, Linux, run as root (the proc connector needs
CAP_NET_ADMIN).  See bench/README.md for what is measured and how.

Supervisors: floor (bench/floor.c, compiled at run time), s6, runit,
supervisord, pm2, horust, hangar.  Any whose binary is missing is skipped
with a printed reason.

Example:
    python3 bench/supervisors.py --n 50 --idle 3 --only floor,s6
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"
SLEEP_SECONDS = "3600"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------

def read_comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().decode(errors="replace").rstrip("\n")
    except OSError:
        return None


def read_stat(pid: int) -> dict | None:
    """Fields of /proc/PID/stat we need (comm may contain spaces/parens)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    rp = data.rfind(")")
    comm = data[data.find("(") + 1:rp]
    rest = data[rp + 2:].split()
    # rest[0] is field 3 (state); field k is rest[k-3]
    return {
        "comm": comm,
        "state": rest[0],
        "ppid": int(rest[1]),
        "utime": int(rest[11]),
        "stime": int(rest[12]),
        "cutime": int(rest[13]),
        "cstime": int(rest[14]),
    }


def read_schedstat_ns(pid: int) -> int:
    """Sum of on-CPU time (ns) over all threads of pid."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def read_smaps_rollup_kb(pid: int) -> tuple[int, int] | None:
    """(Rss kB, Pss kB) from /proc/PID/smaps_rollup."""
    rss = pss = None
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        return None
    if rss is None or pss is None:
        return None
    return rss, pss


def is_alive(pid: int) -> bool:
    st = read_stat(pid)
    return st is not None and st["state"] not in ("Z", "X")


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


# --------------------------------------------------------------------------
# Process watchers: proc connector (preferred) and /proc polling (fallback)
# --------------------------------------------------------------------------
#
# Both answer, for a "root" pid that the harness itself started:
#   - which live processes belong to that root's tree
#   - which of them are `sleep` processes, and when each one exec'd
#
# The proc-connector watcher assigns every new process a "top": the direct
# child of the harness it descends from, computed at fork time from the fork
# event's parent.  Because it is decided at fork time, it survives
# re-parenting (daemons like the PM2 God daemon double-fork and end up under
# pid 1) and is not confused by later pid reuse.

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3
NLMSG_ERROR = 2
NLMSG_NOOP = 1
PROC_EVENT_NONE = 0
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000

NLMSGHDR = struct.Struct("=IHHII")      # len, type, flags, seq, pid
CNMSG = struct.Struct("=IIIIHH")        # idx, val, seq, ack, len, flags
PROC_EV_HDR = struct.Struct("=IIQ")      # what, cpu, timestamp_ns
FOUR_U32 = struct.Struct("=IIII")
TWO_U32 = struct.Struct("=II")


class ConnectorWatcher:
    method = "proc_connector"

    def __init__(self) -> None:
        self.harness_pid = os.getpid()
        self.lock = threading.Condition()
        self.top: dict[int, int] = {}          # live pid -> top pid
        self.sleep_exec: dict[int, int] = {}   # live sleep pid -> exec ts (ns, CLOCK_MONOTONIC)
        self.exit_ts: dict[int, int] = {}      # pid -> exit ts, for sleeps that exited
        self.overflows = 0
        self.events = 0
        self.last_event_ts = 0
        self._stop = False
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        for opt in (33, socket.SO_RCVBUF):  # 33 = SO_RCVBUFFORCE (root)
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, 64 * 1024 * 1024)
                break
            except OSError:
                continue
        self.sock.bind((0, CN_IDX_PROC))
        self._send_op(PROC_CN_MCAST_LISTEN)
        self.thread = threading.Thread(target=self._run, name="proc-connector", daemon=True)
        self.thread.start()
        # Prove the subscription works: a short-lived child must produce events.
        probe = subprocess.Popen(["true"])
        probe.wait()
        deadline = time.monotonic() + 2.0
        with self.lock:
            while self.events == 0 and time.monotonic() < deadline:
                self.lock.wait(0.05)
            ok = self.events > 0
        if not ok:
            self.close()
            raise OSError("proc connector subscribed but delivered no events")

    def _send_op(self, op: int) -> None:
        payload = struct.pack("=I", op)
        cn = CNMSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        nl = NLMSGHDR.pack(NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, 0) + cn
        self.sock.send(nl)

    def close(self) -> None:
        self._stop = True
        try:
            self._send_op(PROC_CN_MCAST_IGNORE)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def _run(self) -> None:
        recv = self.sock.recv
        while not self._stop:
            try:
                data = recv(1 << 20)
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    with self.lock:
                        self.overflows += 1
                    continue
                if self._stop:
                    return
                if e.errno == errno.EINTR:
                    continue
                log(f"proc connector recv failed: {e}")
                return
            off = 0
            with self.lock:
                while off + NLMSGHDR.size <= len(data):
                    nl_len, nl_type, _, _, _ = NLMSGHDR.unpack_from(data, off)
                    if nl_len < NLMSGHDR.size:
                        break
                    if nl_type not in (NLMSG_ERROR, NLMSG_NOOP):
                        self._handle(data, off + NLMSGHDR.size)
                    off += (nl_len + 3) & ~3
                self.lock.notify_all()

    def _handle(self, data: bytes, off: int) -> None:
        off += CNMSG.size
        what, _cpu, ts = PROC_EV_HDR.unpack_from(data, off)
        off += PROC_EV_HDR.size
        self.events += 1
        self.last_event_ts = ts
        if what == PROC_EVENT_FORK:
            _ppid, ptgid, cpid, ctgid = FOUR_U32.unpack_from(data, off)
            if cpid != ctgid:
                return  # new thread, not a new process
            if ptgid == self.harness_pid:
                self.top[ctgid] = ctgid
            elif ptgid in self.top:
                self.top[ctgid] = self.top[ptgid]
            else:
                self.top.pop(ctgid, None)
            self.sleep_exec.pop(ctgid, None)
        elif what == PROC_EVENT_EXEC:
            _pid, tgid = TWO_U32.unpack_from(data, off)
            if tgid in self.top:
                # comm is updated by exec; if a later exec already happened
                # we may see "sleep" early, but the later exec event then
                # overwrites the timestamp (sleep itself never execs again).
                if read_comm(tgid) == "sleep":
                    self.sleep_exec[tgid] = ts
                else:
                    self.sleep_exec.pop(tgid, None)
        elif what == PROC_EVENT_EXIT:
            pid, tgid = TWO_U32.unpack_from(data, off)
            if pid != tgid:
                return
            if tgid in self.top:
                del self.top[tgid]
                if self.sleep_exec.pop(tgid, None) is not None:
                    self.exit_ts[tgid] = ts

    # -- queries -----------------------------------------------------------
    def drain(self, seconds: float = 0.1) -> None:
        """Give the reader thread time to process events already queued."""
        time.sleep(seconds)

    def tree(self, root: int) -> set[int]:
        with self.lock:
            return {p for p, t in self.top.items() if t == root}

    def sleeps(self, root: int) -> dict[int, int]:
        with self.lock:
            return {p: ts for p, ts in self.sleep_exec.items() if self.top.get(p) == root}

    def wait_for(self, pred: Callable[[], object], timeout: float):
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                r = pred()
                if r:
                    return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(min(left, 0.05))

    def wait_sleeps(self, root: int, n: int, timeout: float) -> dict[int, int] | None:
        def pred():
            s = {p: ts for p, ts in self.sleep_exec.items() if self.top.get(p) == root}
            return s if len(s) >= n else None
        return self.wait_for(pred, timeout)

    def wait_new_sleep(self, root: int, after_ns: int, exclude: int, timeout: float):
        def pred():
            for p, ts in self.sleep_exec.items():
                if p != exclude and ts > after_ns and self.top.get(p) == root:
                    return (p, ts)
            return None
        return self.wait_for(pred, timeout)

    def exit_time(self, pid: int) -> int | None:
        with self.lock:
            return self.exit_ts.get(pid)

    def forget(self, root: int) -> None:
        with self.lock:
            for p in [p for p, t in self.top.items() if t == root]:
                self.top.pop(p, None)
                self.sleep_exec.pop(p, None)


class PollingWatcher:
    """Fallback: scan /proc every `interval` seconds.

    Timestamps are the scan time, so start-up and respawn figures carry up to
    one interval of error (plus scan cost).  Tree membership follows the
    current ppid links, so re-parented daemons are only found through
    `extra_roots` (e.g. the PM2 God daemon's pid file).
    """

    method = "proc_polling"

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.lock = threading.Condition()
        self.overflows = 0
        self.extra_roots: dict[int, Callable[[], list[int]]] = {}
        self.roots: set[int] = set()
        self._trees: dict[int, set[int]] = {}
        self._sleeps: dict[int, dict[int, int]] = {}
        self._first_seen: dict[int, int] = {}
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="proc-poll", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self._stop = True

    def register(self, root: int, extra: Callable[[], list[int]] | None = None) -> None:
        with self.lock:
            self.roots.add(root)
            if extra:
                self.extra_roots[root] = extra

    def _scan(self) -> None:
        now = time.monotonic_ns()
        children: dict[int, list[int]] = {}
        comms: dict[int, str] = {}
        for pid in all_pids():
            st = read_stat(pid)
            if st is None or st["state"] in ("Z", "X"):
                continue
            children.setdefault(st["ppid"], []).append(pid)
            comms[pid] = st["comm"]
        with self.lock:
            roots = list(self.roots)
            extras = dict(self.extra_roots)
        trees: dict[int, set[int]] = {}
        sleeps: dict[int, dict[int, int]] = {}
        for root in roots:
            starts = [root] if root in comms else []
            if root in extras:
                try:
                    starts += [p for p in extras[root]() if p in comms]
                except Exception:
                    pass
            seen: set[int] = set()
            stack = list(starts)
            while stack:
                p = stack.pop()
                if p in seen:
                    continue
                seen.add(p)
                stack.extend(children.get(p, []))
            trees[root] = seen
            s = {}
            for p in seen:
                if comms.get(p) == "sleep":
                    s[p] = self._first_seen.setdefault(p, now)
            sleeps[root] = s
        live = set(comms)
        for p in [p for p in self._first_seen if p not in live]:
            del self._first_seen[p]
        with self.lock:
            self._trees = trees
            self._sleeps = sleeps
            self.lock.notify_all()

    def _run(self) -> None:
        while not self._stop:
            self._scan()
            time.sleep(self.interval)

    def drain(self, seconds: float = 0.1) -> None:
        time.sleep(max(seconds, 3 * self.interval))

    def tree(self, root: int) -> set[int]:
        with self.lock:
            return set(self._trees.get(root, set()))

    def sleeps(self, root: int) -> dict[int, int]:
        with self.lock:
            return dict(self._sleeps.get(root, {}))

    def wait_for(self, pred, timeout):
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                r = pred()
                if r:
                    return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(min(left, 0.05))

    def wait_sleeps(self, root, n, timeout):
        def pred():
            s = self._sleeps.get(root, {})
            return dict(s) if len(s) >= n else None
        return self.wait_for(pred, timeout)

    def wait_new_sleep(self, root, after_ns, exclude, timeout):
        def pred():
            for p, ts in self._sleeps.get(root, {}).items():
                if p != exclude and ts > after_ns:
                    return (p, ts)
            return None
        return self.wait_for(pred, timeout)

    def exit_time(self, pid):
        return None

    def forget(self, root):
        with self.lock:
            self.roots.discard(root)
            self.extra_roots.pop(root, None)
            self._trees.pop(root, None)
            self._sleeps.pop(root, None)


# --------------------------------------------------------------------------
# Supervisors
# --------------------------------------------------------------------------

def write_exec(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def run_quiet(argv, env=None, timeout=60.0) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout)


class Supervisor:
    name = "?"
    # Where the peer cannot be configured for zero restart delay, or adds a
    # delay of its own, say so here (goes into the JSON).
    restart_delay_note = ""
    # True if the process we launch is a client that exits after handing off
    # to a daemon (pm2), so its exit during start-up is not a failure.
    root_may_exit = False

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp: Path | None = None
        self.n = 0
        self.env = dict(os.environ)

    def check(self) -> str | None:
        """Return None if runnable, else the reason to skip."""
        return None

    def version(self) -> str:
        return ""

    def prepare(self, n: int, tmp: Path) -> None:
        self.n = n
        self.tmp = tmp

    def start(self) -> subprocess.Popen:
        raise NotImplementedError

    def extra_roots(self) -> list[int]:
        """Pids of the supervisor that may not descend from start()'s pid by
        ppid (only used by the polling fallback)."""
        return []

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def status_cmd(self) -> list[str] | None:
        return None

    def status_check(self, output: str) -> tuple[int, str]:
        """Count of processes the status output reports as running."""
        return -1, "not checked"

    def popen(self, argv, **kw) -> subprocess.Popen:
        out = open(self.tmp / "supervisor.log", "ab")
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=self.env, cwd=self.tmp, start_new_session=True, **kw)
        finally:
            out.close()


def dpkg_version(pkg: str) -> str:
    try:
        r = run_quiet(["dpkg-query", "-W", "-f=${Version}", pkg], timeout=10)
        return r.stdout.decode().strip() if r.returncode == 0 else ""
    except Exception:
        return ""


class Floor(Supervisor):
    name = "floor"
    restart_delay_note = "none: waitpid() loop re-spawns immediately"

    def check(self):
        if not shutil.which("gcc"):
            return "gcc not found (needed to compile bench/floor.c)"
        if not (BENCH_DIR / "floor.c").exists():
            return "bench/floor.c missing"
        return None

    def version(self):
        return "bench/floor.c (gcc -O2)"

    def prepare(self, n, tmp):
        super().prepare(n, tmp)
        self.bin = tmp / "floor"
        r = run_quiet(["gcc", "-O2", "-Wall", "-o", str(self.bin), str(BENCH_DIR / "floor.c")])
        if r.returncode != 0:
            raise RuntimeError("gcc failed: " + r.stdout.decode())
        self.sleep_path = shutil.which("sleep") or "/bin/sleep"

    def start(self):
        return self.popen([str(self.bin), str(self.n), self.sleep_path, SLEEP_SECONDS])


class S6(Supervisor):
    name = "s6"
    restart_delay_note = ("s6-supervise pauses 1 s before respawning ./run unless the service had "
                          "been *ready* for more than 1 s; readiness needs a notification-fd, so each "
                          "run script writes a newline to fd 3 (notification-fd=3) before exec'ing "
                          "sleep. With --s6-plain (run = 'exec sleep 3600' only) every respawn takes ~1 s.")

    def version(self):
        return "s6 " + dpkg_version("s6") + (" (plain run script, no readiness fd)" if self.args.s6_plain else
                                             " (notification-fd readiness)")

    def check(self):
        for b in ("s6-svscan", "s6-supervise", "s6-svstat"):
            if not shutil.which(b):
                return f"{b} not found (apt-get install s6)"
        return None


    def prepare(self, n, tmp):
        super().prepare(n, tmp)
        self.scan = tmp / "scan"
        self.scan.mkdir()
        for i in range(1, n + 1):
            d = self.scan / f"sleeper-{i}"
            d.mkdir()
            if self.args.s6_plain:
                write_exec(d / "run", f"#!/bin/sh\nexec sleep {SLEEP_SECONDS}\n")
            else:
                # Readiness notification on fd 3: the service is "ready" as
                # soon as it starts, so s6-supervise restarts it immediately
                # instead of pausing 1 s (see restart_delay_note).
                (d / "notification-fd").write_text("3\n")
                write_exec(d / "run", f"#!/bin/sh\necho >&3\nexec sleep {SLEEP_SECONDS} 3>&-\n")

    def start(self):
        return self.popen(["s6-svscan", "-c", str(max(500, self.n + 16)), str(self.scan)])

    def stop(self, proc):
        # SIGTERM == s6-svscanctl -t: all s6-supervise stop their service and exit.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def status_cmd(self):
        # No "status all" in s6 itself: one s6-svstat per service dir, as a user would script it.
        return ["sh", "-c", 'for d in "$1"/*; do s6-svstat "$d"; done', "sh", str(self.scan)]

    def status_check(self, out):
        return sum(1 for l in out.splitlines() if l.startswith("up ")), "lines starting 'up '"


class Runit(Supervisor):
    name = "runit"
    restart_delay_note = ("runsv has no restart-delay setting; it sleeps 1 s before re-running ./run "
                          "only if ./run exited less than 1 s after it was started")

    def check(self):
        for b in ("runsvdir", "runsv", "sv"):
            if not shutil.which(b):
                return f"{b} not found (apt-get install --no-install-recommends runit)"
        return None

    def version(self):
        return "runit " + dpkg_version("runit")

    def prepare(self, n, tmp):
        super().prepare(n, tmp)
        self.svdir = tmp / "service"
        self.svdir.mkdir()
        for i in range(1, n + 1):
            d = self.svdir / f"sleeper-{i}"
            d.mkdir()
            write_exec(d / "run", f"#!/bin/sh\nexec sleep {SLEEP_SECONDS}\n")
        # runsvdir sleeps 1 s before its first scan when the service
        # directory's mtime is the current second ("can't detect more changes
        # within this second").  A real service dir is older than the boot
        # that starts runsvdir, so backdate ours to avoid charging runit for
        # a directory we created a millisecond ago.
        old = time.time() - 10
        os.utime(self.svdir, (old, old))

    def start(self):
        return self.popen(["runsvdir", str(self.svdir)])

    def stop(self, proc):
        # runsvdir exits on TERM *without* stopping its runsv children; on HUP
        # it sends TERM to every runsv (which stops its service) and exits.
        if proc.poll() is None:
            proc.send_signal(signal.SIGHUP)

    def status_cmd(self):
        return ["sv", "status"] + [str(self.svdir / f"sleeper-{i}") for i in range(1, self.n + 1)]

    def status_check(self, out):
        return sum(1 for l in out.splitlines() if l.startswith("run: ")), "lines starting 'run: '"


class Supervisord(Supervisor):
    name = "supervisord"
    restart_delay_note = ("autorestart=true, startsecs=0: no configured delay. supervisord's main "
                          "loop is poll(timeout=1 s) -> transition() -> reap(); the child's pipe EOF "
                          "wakes the poll and reap() marks it EXITED, but the replacement is only "
                          "spawned by transition() on the next iteration, after the next 1 s poll")

    def check(self):
        for b in ("supervisord", "supervisorctl"):
            if not shutil.which(b):
                return f"{b} not found (apt-get install supervisor)"
        return None

    def version(self):
        return "supervisor " + dpkg_version("supervisor")

    def prepare(self, n, tmp):
        super().prepare(n, tmp)
        self.conf = tmp / "supervisord.conf"
        sock = tmp / "supervisor.sock"
        self.conf.write_text(f"""\
[supervisord]
nodaemon=true
user=root
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}
loglevel=warn
minfds={max(1024, 4 * n + 256)}
minprocs={max(200, n + 64)}

[unix_http_server]
file={sock}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{sock}

[program:sleeper]
command=sleep {SLEEP_SECONDS}
process_name=%(program_name)s-%(process_num)d
numprocs={n}
numprocs_start=1
autostart=true
autorestart=true
startsecs=0
startretries=1000000
stopwaitsecs=5
stdout_logfile=NONE
stderr_logfile=NONE
""")

    def start(self):
        return self.popen(["supervisord", "-n", "-c", str(self.conf)])

    def status_cmd(self):
        return ["supervisorctl", "-c", str(self.conf), "status"]

    def status_check(self, out):
        return sum(1 for l in out.splitlines() if " RUNNING " in l), "lines containing RUNNING"


class PM2(Supervisor):
    name = "pm2"
    root_may_exit = True
    restart_delay_note = ("autorestart=true, restart_delay=0 (PM2's default is already 0; "
                          "exp_backoff_restart_delay not set)")

    def _bin(self) -> str | None:
        if self.args.pm2:
            return self.args.pm2 if os.access(self.args.pm2, os.X_OK) else None
        local = CACHE_DIR / "pm2" / "bin" / "pm2"
        if os.access(local, os.X_OK):
            return str(local)
        return shutil.which("pm2")

    def check(self):
        if not shutil.which("node"):
            return "node not found"
        if not self._bin():
            return "pm2 not found (bench/install-peers.sh installs it into bench/.cache/pm2)"
        return None

    def version(self):
        # `pm2 --version` would start a daemon; read the package instead.
        b = Path(os.path.realpath(self._bin()))
        for d in [b.parent, *b.parents]:
            pj = d / "package.json"
            if pj.exists():
                try:
                    meta = json.loads(pj.read_text())
                    if meta.get("name") == "pm2":
                        return f"pm2 {meta.get('version')} (node {platform_node_version()})"
                except Exception:
                    pass
        return "pm2 ?"

    def prepare(self, n, tmp):
        super().prepare(n, tmp)
        self.pm2 = self._bin()
        self.home = tmp / "pm2home"
        self.home.mkdir()
        self.env["PM2_HOME"] = str(self.home)
        self.env.pop("PM2_PUBLIC_KEY", None)
        self.env.pop("PM2_SECRET_KEY", None)
        apps = []
        for i in range(1, n + 1):
            apps.append({
                "name": f"sleeper-{i}",
                "script": "sleep",
                "args": SLEEP_SECONDS,
                "interpreter": "none",
                "exec_mode": "fork",
                "autorestart": True,
                "restart_delay": 0,
                "max_restarts": 1000000,
                "watch": False,
                "vizion": False,
                "automation": False,
                "pmx": False,
                "out_file": "/dev/null",
                "error_file": "/dev/null",
                "cwd": str(tmp),
            })
        self.eco = tmp / "ecosystem.config.js"
        self.eco.write_text("module.exports = " + json.dumps({"apps": apps}, indent=1) + ";\n")

    def start(self):
        # The `pm2 start` CLI spawns the God daemon (which forks every app) and exits.
        return self.popen([self.pm2, "start", str(self.eco)])

    def extra_roots(self):
        try:
            return [int((self.home / "pm2.pid").read_text().strip())]
        except Exception:
            return []

    def stop(self, proc):
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        r = subprocess.run([self.pm2, "kill"], env=self.env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def status_cmd(self):
        return [self.pm2, "jlist"]

    def status_check(self, out):
        i = out.find("[")
        try:
            data = json.loads(out[i:])
        except Exception:
            return -1, "unparseable jlist"
        return sum(1 for a in data if a.get("pm2_env", {}).get("status") == "online"), "jlist status online"


def platform_node_version() -> str:
    try:
        return run_quiet(["node", "--version"], timeout=10).stdout.decode().strip()
    except Exception:
        return "?"


class Horust(Supervisor):
    name = "horust"
    restart_delay_note = ("restart strategy=always, backoff=0s (attempts is ignored for 'always'). "
                          "horust's supervisor loop sleeps a hard-coded 300 ms per iteration and a "
                          "restart walks several states (reaped -> Failed -> Initial -> Run), one "
                          "iteration each, so a respawn takes ~3 iterations")

    def _bin(self):
        if self.args.horust:
            return self.args.horust if os.access(self.args.horust, os.X_OK) else None
        local = CACHE_DIR / "horust" / "bin" / "horust"
        if os.access(local, os.X_OK):
            return str(local)
        return shutil.which("horust")

    def check(self):
        if not self._bin():
            return "horust not found (bench/install-peers.sh builds it into bench/.cache/horust)"
        return None

    def version(self):
        # horust has no --version; cargo install records it next to bin/.
        b = Path(self._bin()).resolve()
        crates = b.parent.parent / ".crates.toml"
        try:
            for line in crates.read_text().splitlines():
                if line.startswith('"horust '):
                    return "horust " + line.split()[1]
        except OSError:
            pass
        return "horust ?"

    def prepare(self, n, tmp):
        super().prepare(n, tmp)
        self.svc = tmp / "services"
        self.svc.mkdir()
        self.uds = tmp / "uds"
        self.uds.mkdir()
        for i in range(1, n + 1):
            (self.svc / f"sleeper-{i}.toml").write_text(f"""\
name = "sleeper-{i}"
command = "sleep {SLEEP_SECONDS}"

[restart]
strategy = "always"
backoff = "0s"
attempts = 0

[termination]
signal = "TERM"
wait = "5s"
""")

    def start(self):
        return self.popen([self._bin(), "--services-path", str(self.svc),
                           "--uds-folder-path", str(self.uds)])


class Hangar(Supervisor):
    name = "hangar"
    restart_delay_note = "restart policy=always, initial_interval=0s"

    def check(self):
        p = self.args.hangar
        if not (os.path.isfile(p) and os.access(p, os.X_OK)):
            return f"hangar binary not found at {p} (build it, or pass --hangar PATH)"
        return None

    def version(self):
        try:
            r = run_quiet([self.args.hangar, "--version"], timeout=10)
            return r.stdout.decode().strip().splitlines()[0] if r.returncode == 0 else "hangar ?"
        except Exception:
            return "hangar ?"

    def prepare(self, n, tmp):
        super().prepare(n, tmp)
        self.conf = tmp / "hangar.toml"
        self.conf.write_text(f"""\
[[process]]
name = "sleeper"
command = "sleep"
args = ["{SLEEP_SECONDS}"]
instances = {n}

[process.restart]
policy = "always"
initial_interval = "0s"
""")

    def start(self):
        return self.popen([self.args.hangar, "run", str(self.conf)])


class HangarNoCgroups(Hangar):
    """hangar run as an unprivileged user (nobody), so it makes no cgroups:
    set beside `hangar`, it tells the kernel's cost of a cgroup per process
    (create, move into, remove) from hangar's own."""
    name = "hangar-nocg"

    def check(self):
        if os.geteuid() != 0:
            return "needs root to drop to nobody (and without root hangar makes no cgroups anyway)"
        if shutil.which("setpriv") is None:
            return "setpriv (util-linux) not found"
        return super().check()

    def prepare(self, n, tmp):
        super().prepare(n, tmp)
        # nobody reads the config and writes the logs here.
        os.chmod(tmp, 0o777)
        self.env = dict(self.env, HOME=str(tmp), XDG_STATE_HOME=str(tmp / "state"))

    def start(self):
        return self.popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           self.args.hangar, "run", str(self.conf)])


SUPERVISORS = [Floor, S6, Runit, Supervisord, PM2, Horust, Hangar, HangarNoCgroups]


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------

@dataclass
class Result:
    supervisor: str
    n: int
    ok: bool = True
    error: str | None = None
    startup_s: float | None = None
    first_sleep_s: float | None = None
    sleeps_started: int = 0
    rss_mb: float | None = None
    pss_mb: float | None = None
    supervisor_procs: int = 0
    supervisor_proc_comms: dict = field(default_factory=dict)
    idle_window_s: float | None = None
    idle_cpu_pct: float | None = None
    idle_cpu_pct_schedstat: float | None = None
    respawn_ms: list = field(default_factory=list)
    respawn_failures: int = 0
    respawn_median_ms: float | None = None
    respawn_p90_ms: float | None = None
    status_all_ms: float | None = None
    status_all_runs_ms: list = field(default_factory=list)
    status_source: str | None = None
    status_reported_running: int | None = None
    status_note: str | None = None
    leftover_sleeps: int = 0
    leftover_supervisor_procs: int = 0
    stop_s: float | None = None
    restart_delay_note: str = ""
    version: str = ""
    loadavg_before: str = ""
    watcher_overflows: int = 0
    log_tail: str = ""


def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolation percentile (q in 0..100)."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def cpu_sample(pids: set[int]) -> dict[int, tuple[int, int]]:
    out = {}
    for p in pids:
        st = read_stat(p)
        if st is None:
            continue
        out[p] = (st["utime"] + st["stime"], read_schedstat_ns(p))
    return out


def kill_quietly(pid: int, sig=signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def run_status(sup: Supervisor, res: Result, args) -> None:
    if isinstance(sup, Hangar):
        tmpl = args.hangar_status_cmd
        argv = [a.format(n=sup.n, config=sup.conf) for a in shlex.split(tmpl)]
        exe = argv[0]
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            res.status_note = f"skipped: {exe} not found"
            return
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=600)
        except subprocess.TimeoutExpired:
            res.status_note = "status bench timed out"
            return
        line = None
        for l in r.stdout.decode(errors="replace").splitlines():
            l = l.strip()
            if l.startswith("{"):
                line = l
        try:
            data = json.loads(line)
            res.status_all_ms = float(data["status_all_median_us"]) / 1000.0
            res.status_source = "hangar status bench: " + " ".join(argv)
            res.status_note = line
        except Exception:
            res.status_note = (f"could not parse status bench output (rc={r.returncode}): "
                               f"{r.stdout.decode(errors='replace')[-300:]} {r.stderr.decode(errors='replace')[-300:]}")
        return
    argv = sup.status_cmd()
    if argv is None:
        res.status_note = "n/a: no status command"
        return
    # One untimed run to check what the command reports (and warm caches
    # equally for everyone), then the timed runs with output to /dev/null.
    try:
        r = subprocess.run(argv, env=sup.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=300)
        cnt, how = sup.status_check(r.stdout.decode(errors="replace"))
        res.status_reported_running = cnt
        res.status_note = f"rc={r.returncode}; {how}"
        times = []
        for _ in range(args.status_runs):
            t0 = time.perf_counter()
            subprocess.run(argv, env=sup.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=300)
            times.append((time.perf_counter() - t0) * 1000.0)
    except subprocess.TimeoutExpired:
        res.status_note = "status command timed out"
        return
    res.status_all_runs_ms = [round(t, 3) for t in times]
    res.status_all_ms = statistics.median(times)
    res.status_source = " ".join(shlex.quote(a) for a in argv[:6]) + (" ..." if len(argv) > 6 else "")


def measure(sup: Supervisor, n: int, watcher, args, rng: random.Random) -> Result:
    res = Result(supervisor=sup.name, n=n, restart_delay_note=sup.restart_delay_note)
    res.version = sup.version()
    with open("/proc/loadavg") as f:
        res.loadavg_before = f.read().strip()
    ov0 = watcher.overflows
    tmp = Path(tempfile.mkdtemp(prefix=f"hangar-bench-{sup.name}-{n}-"))
    proc = None
    root = None
    try:
        sup.prepare(n, tmp)
        log(f"{sup.name} n={n}: starting")
        t0 = time.monotonic_ns()
        proc = sup.start()
        root = proc.pid
        if isinstance(watcher, PollingWatcher):
            watcher.register(root, sup.extra_roots)
        timeout = args.startup_timeout or max(60.0, n * 0.2)
        deadline = time.monotonic() + timeout
        got = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = watcher.wait_sleeps(root, n, min(left, 0.5))
            if got is not None:
                break
            if not sup.root_may_exit and proc.poll() is not None:
                res.ok = False
                res.error = f"supervisor exited (rc={proc.returncode}) during start-up"
                res.log_tail = log_tail(tmp)
                log(f"{sup.name} n={n}: {res.error}; log tail:\n{res.log_tail}")
                return res
        watcher.drain(0.2)
        sl = watcher.sleeps(root)
        res.sleeps_started = len(sl)
        if sl:
            res.first_sleep_s = (min(sl.values()) - t0) / 1e9
        if got is None:
            res.ok = False
            res.error = f"only {len(sl)}/{n} sleep children exec'd within {timeout:.0f}s"
            res.log_tail = log_tail(tmp)
            log(f"{sup.name} n={n}: {res.error}")
            if len(sl) == 0:
                return res
        else:
            # Startup = exec time of the N-th sleep.  If there are more than N
            # (a respawn during start-up), take the N earliest.
            res.startup_s = (sorted(sl.values())[n - 1] - t0) / 1e9
            log(f"{sup.name} n={n}: all {n} sleeps exec'd after {res.startup_s:.3f}s")

        time.sleep(args.settle)

        # ---- memory ------------------------------------------------------
        sleeps = set(watcher.sleeps(root))
        own = watcher.tree(root) - sleeps
        own = {p for p in own if is_alive(p)}
        rss = pss = 0
        comms: dict[str, int] = {}
        for p in own:
            m = read_smaps_rollup_kb(p)
            if m is None:
                continue
            rss += m[0]
            pss += m[1]
            c = read_comm(p) or "?"
            comms[c] = comms.get(c, 0) + 1
        res.rss_mb = rss / 1024.0
        res.pss_mb = pss / 1024.0
        res.supervisor_procs = len(own)
        res.supervisor_proc_comms = comms
        log(f"{sup.name} n={n}: RSS {res.rss_mb:.1f} MB, PSS {res.pss_mb:.1f} MB over {len(own)} procs {comms}")

        # ---- idle CPU ----------------------------------------------------
        a = cpu_sample(own)
        w0 = time.monotonic()
        time.sleep(args.idle)
        own2 = (watcher.tree(root) - set(watcher.sleeps(root))) | own
        b = cpu_sample(own2)
        wall = time.monotonic() - w0
        ticks = sum(b[p][0] - a.get(p, (0, 0))[0] for p in b)
        ns = sum(b[p][1] - a.get(p, (0, 0))[1] for p in b)
        res.idle_window_s = wall
        res.idle_cpu_pct = 100.0 * (ticks / CLK_TCK) / wall
        res.idle_cpu_pct_schedstat = 100.0 * (ns / 1e9) / wall
        log(f"{sup.name} n={n}: idle CPU {res.idle_cpu_pct:.3f}% (stat) "
            f"{res.idle_cpu_pct_schedstat:.4f}% (schedstat) over {wall:.1f}s")

        # ---- respawn latency ---------------------------------------------
        for i in range(args.respawns):
            # Only kill a sleep that has been running for --min-victim-age:
            # s6 and runit deliberately delay restarting a service that was
            # started less than 1 s ago, and hitting a just-respawned victim
            # would measure that throttle rather than respawn latency.
            deadline = time.monotonic() + args.respawn_timeout
            eligible = []
            while True:
                now_ns = time.monotonic_ns()
                cur = watcher.sleeps(root)
                eligible = [p for p, ts in cur.items() if now_ns - ts >= args.min_victim_age * 1e9]
                if eligible or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if not eligible:
                res.respawn_failures += args.respawns - i
                log(f"{sup.name} n={n}: no sleep child old enough to kill; stopping respawn test")
                break
            victim = rng.choice(sorted(eligible))
            t_kill = time.monotonic_ns()
            kill_quietly(victim)
            got = watcher.wait_new_sleep(root, t_kill, victim, args.respawn_timeout)
            if got is None:
                res.respawn_failures += 1
                log(f"{sup.name} n={n}: no respawn within {args.respawn_timeout}s after killing {victim}")
            else:
                watcher.drain(0.05)  # let a trailing exec event settle the timestamp
                newpid = got[0]
                ts = watcher.sleeps(root).get(newpid, got[1])
                res.respawn_ms.append((ts - t_kill) / 1e6)
            time.sleep(args.respawn_pause)
        if res.respawn_ms:
            res.respawn_median_ms = statistics.median(res.respawn_ms)
            res.respawn_p90_ms = percentile(res.respawn_ms, 90)
            log(f"{sup.name} n={n}: respawn median {res.respawn_median_ms:.2f} ms, "
                f"p90 {res.respawn_p90_ms:.2f} ms ({len(res.respawn_ms)} ok, {res.respawn_failures} failed)")
        res.respawn_ms = [round(x, 3) for x in res.respawn_ms]

        # ---- status all --------------------------------------------------
        run_status(sup, res, args)
        if res.status_all_ms is not None:
            log(f"{sup.name} n={n}: status-all {res.status_all_ms:.1f} ms ({res.status_note})")
        else:
            log(f"{sup.name} n={n}: status-all {res.status_note}")
    except Exception as e:
        res.ok = False
        res.error = f"{type(e).__name__}: {e}"
        res.log_tail = log_tail(tmp)
        log(f"{sup.name} n={n}: ERROR {res.error}")
    finally:
        if proc is not None:
            cleanup(sup, proc, root, watcher, res)
        res.watcher_overflows = watcher.overflows - ov0
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return res


def log_tail(tmp: Path, nbytes: int = 2000) -> str:
    try:
        data = (tmp / "supervisor.log").read_bytes()
    except OSError:
        return ""
    return data[-nbytes:].decode(errors="replace")


def cleanup(sup: Supervisor, proc: subprocess.Popen, root: int, watcher, res: Result) -> None:
    t0 = time.monotonic()
    try:
        sup.stop(proc)
    except Exception as e:
        log(f"{sup.name}: stop failed: {e}")
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        log(f"{sup.name}: did not exit within 30 s of stop; killing")
        proc.kill()
        proc.wait()
    # Wait (bounded) for the whole tree to go away.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        left = {p for p in watcher.tree(root) if is_alive(p)}
        if isinstance(watcher, PollingWatcher):
            left |= {p for p in sup.extra_roots() if is_alive(p)}
        if not left:
            break
        time.sleep(0.05)
    res.stop_s = time.monotonic() - t0
    time.sleep(0.3)
    sleeps = {p for p in watcher.sleeps(root) if is_alive(p)}
    rest = {p for p in watcher.tree(root) if is_alive(p)} - sleeps
    if isinstance(watcher, PollingWatcher):
        rest |= {p for p in sup.extra_roots() if is_alive(p)}
    # Belt and braces: any `sleep 3600` whose cwd/env we cannot attribute is
    # not ours to kill; only the tracked tree is cleaned.
    res.leftover_sleeps = len(sleeps)
    res.leftover_supervisor_procs = len(rest)
    if sleeps or rest:
        log(f"{sup.name}: LEFTOVERS after stop: {len(sleeps)} sleep, {len(rest)} other "
            f"({sorted(read_comm(p) or '?' for p in rest)[:10]}); killing them")
    for p in sleeps | rest:
        kill_quietly(p)
    watcher.drain(0.2)
    watcher.forget(root)
    log(f"{sup.name} n={res.n}: stopped in {res.stop_s:.2f}s")


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def fmt(x, digits=2):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if x != 0 and abs(x) < 10 ** -digits:
            return f"{x:.{digits}g}" if digits > 0 else f"{x:.1g}"
        return f"{x:.{digits}f}"
    return str(x)


COLS = [
    ("startup s", "startup_s", 3),
    ("RSS MB", "rss_mb", 1),
    ("PSS MB", "pss_mb", 1),
    ("respawn median ms", "respawn_median_ms", 2),
    ("respawn p90 ms", "respawn_p90_ms", 2),
    ("idle CPU %", "idle_cpu_pct", 3),
    ("idle CPU % (schedstat)", "idle_cpu_pct_schedstat", 4),
    ("status-all ms", "status_all_ms", 1),
]


def markdown(results: list[Result]) -> str:
    lines = []
    hdr = ["supervisor", "N"] + [c[0] for c in COLS] + ["notes"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * len(COLS) + ["---"]) + "|")
    for r in results:
        notes = []
        if r.error:
            notes.append(r.error)
        if r.respawn_failures:
            notes.append(f"{r.respawn_failures} respawns not seen")
        if r.leftover_sleeps or r.leftover_supervisor_procs:
            notes.append(f"leftovers: {r.leftover_sleeps} sleep, {r.leftover_supervisor_procs} other")
        if r.status_all_ms is None and r.status_note:
            notes.append("status " + r.status_note)
        elif r.status_reported_running is not None and r.status_reported_running != r.n:
            notes.append(f"status saw {r.status_reported_running}/{r.n} running")
        if r.watcher_overflows:
            notes.append(f"{r.watcher_overflows} connector overflows")
        row = [r.supervisor, str(r.n)] + [fmt(getattr(r, k), d) for _, k, d in COLS] + ["; ".join(notes)]
        lines.append("| " + " | ".join(row) + " |")
    hangar = {r.n: r for r in results if r.supervisor == "hangar" and r.startup_s is not None}
    if hangar:
        lines.append("")
        lines.append("Ratio peer / hangar at the same N (>1: hangar is lower/better):")
        lines.append("")
        lines.append("| supervisor | N | " + " | ".join(c[0] for c in COLS) + " |")
        lines.append("|---|---|" + "|".join(["---:"] * len(COLS)) + "|")
        for r in results:
            h = hangar.get(r.n)
            if h is None or r.supervisor == "hangar":
                continue
            cells = []
            for _, k, _d in COLS:
                a, b = getattr(r, k), getattr(h, k)
                cells.append(f"{a / b:.2f}x" if a is not None and b not in (None, 0) else "n/a")
            lines.append(f"| {r.supervisor} | {r.n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="100", help="comma-separated process counts, e.g. 100,500,1000")
    ap.add_argument("--only", default="", help="comma-separated subset of: " +
                    ",".join(s.name for s in SUPERVISORS))
    ap.add_argument("--idle", type=float, default=30.0, help="idle CPU window, seconds (default 30)")
    ap.add_argument("--settle", type=float, default=2.0, help="wait after start-up before measuring memory (s)")
    ap.add_argument("--respawns", type=int, default=20, help="number of kill/respawn samples")
    ap.add_argument("--respawn-pause", type=float, default=0.2, help="pause between respawn samples (s)")
    ap.add_argument("--min-victim-age", type=float, default=1.5,
                    help="only SIGKILL sleep children that have run at least this long (s)")
    ap.add_argument("--respawn-timeout", type=float, default=10.0, help="give up on one respawn after (s)")
    ap.add_argument("--startup-timeout", type=float, default=0.0,
                    help="give up waiting for N sleeps after (s); default max(60, 0.2*N)")
    ap.add_argument("--status-runs", type=int, default=5, help="timed runs of the status command")
    ap.add_argument("--hangar", default="/work/main/target/release/hangar", help="hangar binary")
    ap.add_argument("--hangar-status-cmd", default="/work/main/target/release/examples/status_bench --n {n}",
                    help="command printing {\"status_all_median_us\": ...}; {n} and {config} are substituted")
    ap.add_argument("--pm2", default="", help="pm2 binary (default bench/.cache/pm2/bin/pm2, then PATH)")
    ap.add_argument("--horust", default="", help="horust binary (default bench/.cache/horust/bin/horust, then PATH)")
    ap.add_argument("--json", default=str(BENCH_DIR / "results" / "latest.json"), help="JSON output path")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed for choosing which child to kill")
    ap.add_argument("--no-connector", action="store_true", help="force the /proc polling fallback")
    ap.add_argument("--s6-plain", action="store_true",
                    help="s6 run scripts without readiness notification (respawns then wait 1 s)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the per-run temp dirs")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    ns = [int(x) for x in args.n.split(",") if x.strip()]
    names = [s.name for s in SUPERVISORS]
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    for x in only:
        if x not in names:
            print(f"unknown supervisor {x!r}; known: {', '.join(names)}", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        log("warning: not root; the proc connector will likely be unavailable and some peers need root")

    watcher = None
    fallback_reason = None
    if not args.no_connector:
        try:
            watcher = ConnectorWatcher()
        except OSError as e:
            fallback_reason = f"proc connector unavailable ({e}); using /proc polling"
    else:
        fallback_reason = "--no-connector given; using /proc polling"
    if watcher is None:
        watcher = PollingWatcher()
    log(f"process events via: {watcher.method}" + (f" ({fallback_reason})" if fallback_reason else ""))

    rng = random.Random(args.seed)
    results: list[Result] = []
    skipped: dict[str, str] = {}
    for cls in SUPERVISORS:
        if only and cls.name not in only:
            continue
        sup = cls(args)
        reason = sup.check()
        if reason:
            skipped[cls.name] = reason
            print(f"SKIP {cls.name}: {reason}", flush=True)
            continue
        for n in ns:
            results.append(measure(sup, n, watcher, args, rng))

    md = markdown(results)
    print()
    print(f"Process events via {watcher.method}; idle window {args.idle:g}s; "
          f"{args.respawns} respawn samples; status median of {args.status_runs}.")
    print()
    print(md)
    if skipped:
        print()
        for k, v in skipped.items():
            print(f"- skipped {k}: {v}")

    out = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "method": watcher.method,
        "method_note": fallback_reason,
        "params": {k: v for k, v in vars(args).items()},
        "skipped": skipped,
        "results": [r.__dict__ for r in results],
        "markdown": md,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nJSON written to {path}")
    watcher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
