#!/usr/bin/env python3
"""Soak (bounded chaos): `hangar serve` with 200 processes under random
SIGKILLs, a log flood and reload storms, for a fixed time; then checks that
nothing leaked and that every kill is accounted for.

Reproduce (from the workspace root, as root or as any user; Python 3.11
stdlib only):

    cargo build --release -p hangar-cli
    python3 bench/soak.py                  # 10 minutes
    python3 bench/soak.py --duration 30    # a smoke check

The run:

1. writes a config into a fresh temp dir: `[daemon] http` on a free loopback
   port, and 200 processes, every one with `restart.policy = "always"`,
   `initial_interval = "100ms"`, `max_interval = "2s"`, `min_uptime = "1s"`
   and `max_retries = 0` (no circuit: a process killed again and again must
   keep coming back):
   - `sleeper`: `sleep 100000`, `instances = 150`;
   - `tree`: `sh -c 'sleep 100000 & sleep 100000 & wait'`, `instances = 40`
     (a main process with two children in its group: a SIGKILL of the main
     process leaves them for hangar to end and reap);
   - `flood-yes`: `yes LINE`, `instances = 2`, and `flood-sh`:
     `sh -c 'while :; do echo LINE; done'`, `instances = 2`: 64-byte lines to
     stdout as fast as they go (every process logs to files in the data dir,
     the default: 10 MiB files, 5 kept);
   - `churn`: `sleep 100000` with `env = { SOAK_GEN = "N" }`, `instances = 6`;
   then starts `hangar --data-dir D serve -c CONFIG` in a session of its own
   and waits until all 200 run;
2. for --duration seconds, at once:
   - kills at --kill-rate per second (10): picks a random pid from the last
     `hangar ps --json` (refreshed every second; pids it already killed left
     out), pins it with pidfd_open, checks it is still the process listed
     (start time, and this run's marker in its environment) and not already
     dead (state Z), and sends SIGKILL through the pidfd. A pid that is gone,
     dead or reused by then is a *raced* kill, counted by reason, never
     signalled;
   - reload storms: every 20-30 s, --storm-reloads (5) reloads 0.5 s apart,
     each after rewriting the config (atomically): add or remove one or two
     `extra-K` processes (0-5 of them, so 200-205 in all) and bump `churn`'s
     SOAK_GEN (which restarts the 6 churn processes);
   - samples every --sample-interval s (5): the daemon's VmRSS
     (/proc/PID/status), open fds (/proc/PID/fd), threads; zombies (state Z
     in /proc/*/stat whose parent is the daemon, or whose group is one of the
     groups `hangar ps` listed last, or whose parent carries the run's
     marker); `hangar status --json` (processes by state); /metrics (the
     starts, restarts and failures counters summed over processes); the
     bytes the daemon's `hangar-logs` thread read (/proc/PID/task/TID/io
     rchar), which over the line length is the flood's lines per second; and
     the state events since the last sample (`hangar events --json`);
3. stops killing and reloading, waits until every process runs and the event
   id is still for 2 s, reads /metrics and the events one last time; takes
   the processes of the run (this run's marker in the environment, or a
   child of the daemon, or in a group `ps` listed), SIGTERM to the daemon,
   times the stop, and right after the daemon's exit (and 0.5 s later) looks
   those processes up by pid and start time: alive, or zombies handed to
   init.

Checks (exit 1 if any fails):

- **zombies**: none seen in two consecutive samples (a zombie lives from a
  SIGKILL until hangar reaps it, so one seen once is counted but not failed),
  and none left at the daemon's exit;
- **flat**: the daemon's VmRSS and fd count, the median of the first minute
  against the median of the last minute (the first and last third of the run
  when it is shorter than 3 minutes): ratio <= 1.10 for RSS, <= 1.05 for
  fds; the least-squares slope is reported too;
- **kills accounted for**: every kill delivered finds, in the events, the
  `running` event of its pid and after it, for that process, the exit that
  ended it (an exit event carries no pid: the pid is the running event's):
  `signal 9` with `failure` marked, or an exit during a stop a reload began
  (counted apart); the increase of `hangar_process_failures_total`,
  `_restarts_total` and `_starts_total` over the run equals the failure,
  restart and `starting` events stored over the run; and the failures equal
  the kills accounted for plus any failure no kill explains (listed);
- **the daemon**: still running at the end of the chaos, exit code 0 on
  SIGTERM, and no process of the run alive at its exit.

Writes bench/results/soak-latest.json (every sample, every reload, each raced
or unaccounted kill) and prints a markdown table. MB here is 2^20 bytes, as
in the other bench scripts. The machine is shared: the load average at start
and end is recorded, and the figures are one run's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER_ENV = "HANGAR_SOAK_MARKER"
# 63 characters and a newline: the flood's line length in bytes.
LINE = "soak-flood " + "x" * 52
LINE_BYTES = len(LINE) + 1

RSS_FLAT = 1.10
FDS_FLAT = 1.05


def log(msg: str) -> None:
    print(f"[soak.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc helpers

def read(path: str, mode: str = "r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def proc_status(pid: int) -> dict:
    out = {}
    for line in (read(f"/proc/{pid}/status") or "").splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def stat(pid: int) -> dict | None:
    """State, ppid, pgrp and start time from /proc/PID/stat."""
    s = read(f"/proc/{pid}/stat")
    if not s:
        return None
    head, _, rest = s.rpartition(")")
    f = rest.split()
    try:
        return {"comm": head.partition("(")[2], "state": f[0], "ppid": int(f[1]),
                "pgrp": int(f[2]), "start": int(f[19])}
    except (IndexError, ValueError):
        return None


def environ_has(pid: int, needle: bytes) -> bool:
    env = read(f"/proc/{pid}/environ", "rb")
    return bool(env) and needle in env.split(b"\0")


def pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def daemon_figures(pid: int) -> dict:
    st = proc_status(pid)
    def mb(k: str) -> float:
        return round(int(st.get(k, "0 kB").split()[0]) / 1024.0, 2)
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = None
    return {"rss_mb": mb("VmRSS"), "rss_anon_mb": mb("RssAnon"), "rss_file_mb": mb("RssFile"),
            "rss_shmem_mb": mb("RssShmem"), "fds": fds, "threads": int(st.get("Threads", "0") or 0)}


def cpu_seconds(pid: int) -> float | None:
    s = read(f"/proc/{pid}/stat")
    if not s:
        return None
    f = s.rpartition(")")[2].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def thread_io(pid: int, name: str) -> dict | None:
    """rchar/wchar of the daemon's thread called `name`."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for t in tids:
        if (read(f"/proc/{pid}/task/{t}/comm") or "").strip() == name:
            io = {}
            for line in (read(f"/proc/{pid}/task/{t}/io") or "").splitlines():
                k, _, v = line.partition(":")
                io[k] = int(v)
            return {"tid": int(t), "rchar": io.get("rchar"), "wchar": io.get("wchar")}
    return None


def loadavg() -> list[float]:
    return [float(x) for x in (read("/proc/loadavg") or "0 0 0").split()[:3]]


def busy_compilers() -> list[str]:
    out = []
    for p in pids():
        c = (read(f"/proc/{p}/comm") or "").strip()
        if c in ("rustc", "cargo", "cc1", "cc1plus", "ld", "clippy-driver"):
            out.append(f"{p}:{c}")
    return out


def machine() -> dict:
    model = None
    for line in (read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = proc_status_file("/proc/meminfo").get("MemTotal", "0 kB").split()[0]
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "mem_total_gib": round(int(mem) / 1024 / 1024, 1),
            "python": platform.python_version(),
            "pid_max": int((read("/proc/sys/kernel/pid_max") or "0").strip() or 0)}


def proc_status_file(path: str) -> dict:
    out = {}
    for line in (read(path) or "").splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def slope_per_min(ts: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over ts (seconds), per minute."""
    if len(ts) < 2:
        return None
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    if den == 0:
        return None
    return 60.0 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git_state() -> dict:
    def g(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    dirty = [line for line in g("status", "--short", "--untracked-files=no").splitlines() if line]
    return {"head": g("rev-parse", "HEAD"), "dirty_tracked_files": dirty}


# ---------------------------------------------------------------- the config

RESTART = """
[process.restart]
policy = "always"
initial_interval = "100ms"
multiplier = 2.0
max_interval = "2s"
jitter = 0.1
min_uptime = "1s"
max_retries = 0
"""


def proc_toml(name: str, command: str, args: list[str], instances: int = 1,
              env: dict | None = None) -> str:
    out = ["[[process]]", f'name = "{name}"', f'command = "{command}"',
           "args = [" + ", ".join(json.dumps(a) for a in args) + "]",
           'stop_timeout = "2s"']
    if instances > 1:
        out.append(f"instances = {instances}")
    if env:
        out.append("env = { " + ", ".join(f'{k} = "{v}"' for k, v in env.items()) + " }")
    return "\n".join(out) + "\n" + RESTART + "\n"


def config_text(http: str, gen: int, extras: list[int]) -> str:
    parts = ["[daemon]\n", f'http = "{http}"\n\n']
    parts.append(proc_toml("sleeper", "sleep", ["100000"], 150))
    parts.append(proc_toml("tree", "sh", ["-c", "sleep 100000 & sleep 100000 & wait"], 40))
    parts.append(proc_toml("flood-yes", "yes", [LINE], 2))
    parts.append(proc_toml("flood-sh", "sh", ["-c", f"while :; do echo {LINE}; done"], 2))
    parts.append(proc_toml("churn", "sleep", ["100000"], 6, {"SOAK_GEN": str(gen)}))
    for k in extras:
        parts.append(proc_toml(f"extra-{k}", "sleep", ["100000"]))
    return "".join(parts)


BASE_PROCESSES = 150 + 40 + 2 + 2 + 6


# ---------------------------------------------------------------- the run

class Soak:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.rng = random.Random(a.seed)
        self.tmp = Path(tempfile.mkdtemp(prefix="hangar-soak-"))
        self.data = self.tmp / "data"
        self.config = self.tmp / "hangar.toml"
        self.daemon_log = self.tmp / "daemon.log"
        self.marker = self.tmp.name
        self.needle = f"{MARKER_ENV}={self.marker}".encode()
        self.http = f"127.0.0.1:{a.port or free_port()}"
        self.proc: subprocess.Popen | None = None
        self.supervisor_id: str | None = None
        self.lock = threading.Lock()
        self.stop_chaos = threading.Event()
        # pid -> (name, start ticks) of running processes, from the last `ps`.
        self.candidates: dict[int, tuple[str, int]] = {}
        self.current_groups: set[int] = set()
        self.all_groups: set[int] = set()
        self.killed: set[int] = set()
        self.kills: list[dict] = []          # delivered: pid, name, t (epoch ms)
        self.raced: dict[str, list[dict]] = {"gone": [], "dead": [], "reused": []}
        self.kill_attempts = 0
        self.kill_no_candidate: list[int] = []   # when (epoch ms)
        self.samples: list[dict] = []
        self.reloads: list[dict] = []
        self.events: list[dict] = []
        self.last_event_id = 0
        self.zombies_seen: dict[tuple[int, int], dict] = {}
        self.errors: list[str] = []
        self.gen = 0
        self.extras: list[int] = []
        self.next_extra = 1
        self.res: dict = {}

    # ---- the CLI

    def hangar(self, *args: str) -> list[str]:
        return [self.a.hangar, "--data-dir", str(self.data), *args]

    def cli(self, *args: str, timeout: float = 30) -> tuple[int, str, str]:
        try:
            r = subprocess.run(self.hangar(*args), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return -1, "", f"timed out after {timeout} s"
        return r.returncode, r.stdout, r.stderr

    def cli_json(self, *args: str, timeout: float = 30):
        rc, out, err = self.cli(*args, timeout=timeout)
        if rc != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    def metrics(self) -> dict | None:
        """The counter families summed over processes, and the daemon's own fds."""
        try:
            with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError as e:
            self.errors.append(f"/metrics: {e}")
            return None
        out = {"hangar_process_failures_total": 0.0, "hangar_process_restarts_total": 0.0,
               "hangar_process_starts_total": 0.0}
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r"([a-zA-Z_:]+)(\{[^}]*\})?\s+(\S+)", line)
            if not m:
                continue
            name, value = m.group(1), float(m.group(3))
            if name in out:
                out[name] += value
            elif name in ("hangar_events_total", "process_open_fds", "process_resident_memory_bytes"):
                out[name] = value
        return out

    def fetch_events(self) -> int:
        """State events after the last seen, in order; returns how many were new."""
        rc, out, err = self.cli("events", "--json", "--kind", "state", "-n", "100000",
                                "--after", str(self.last_event_id), timeout=60)
        if rc != 0:
            self.errors.append(f"events: exit {rc}: {err.strip()[:200]}")
            return 0
        new = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(new) >= 100000:
            self.errors.append("events: 100000 in one read; some may have been skipped")
        if new and self.last_event_id and new[0]["id"] != self.last_event_id + 1:
            self.errors.append(f"events: gap after id {self.last_event_id} (next {new[0]['id']})")
        with self.lock:
            self.events.extend(new)
            for e in new:
                self.last_event_id = max(self.last_event_id, e["id"])
                if e.get("pid"):
                    self.all_groups.add(e["pid"])
        return len(new)

    # ---- start

    def write_config(self) -> None:
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(config_text(self.http, self.gen, self.extras))
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.config)

    def start(self) -> None:
        self.write_config()
        env = dict(os.environ)
        env[MARKER_ENV] = self.marker
        env.setdefault("HANGAR_LOG", "info")
        for kv in self.a.daemon_env:
            k, _, v = kv.partition("=")
            env[k] = v
        log(f"starting the daemon with {BASE_PROCESSES} processes in {self.tmp}, metrics on {self.http}")
        self.logf = open(self.daemon_log, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.hangar("serve", "-c", str(self.config)),
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
        last = None
        while time.monotonic() - t0 < 120:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.proc.returncode}; see {self.daemon_log}")
            st = self.cli_json("status", "--json")
            if st is not None:
                self.supervisor_id = st.get("supervisor_id")
                last = st.get("processes", {})
                if last.get("running", 0) >= BASE_PROCESSES:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"not all running after 120 s: {last}")
        self.res["boot_s"] = round(time.monotonic() - t0, 3)
        log(f"all {BASE_PROCESSES} running after {self.res['boot_s']} s; supervisor id {self.supervisor_id}")

    # ---- the chaos

    def refresh_candidates(self) -> None:
        ps = self.cli_json("ps", "--json")
        if not isinstance(ps, list):
            self.errors.append("ps --json failed")
            return
        cand = {}
        for p in ps:
            pid = p.get("pid") or 0
            if p.get("state") != "running" or pid <= 0:
                continue
            s = stat(pid)
            if s is None or s["pgrp"] != pid:
                continue
            cand[pid] = (p["name"], s["start"])
        with self.lock:
            self.current_groups = set(cand)
            self.all_groups |= set(cand)
            self.candidates = {p: v for p, v in cand.items() if p not in self.killed}

    def ps_loop(self) -> None:
        while not self.stop_chaos.is_set():
            self.refresh_candidates()
            self.stop_chaos.wait(self.a.ps_interval)

    def kill_one(self) -> None:
        self.kill_attempts += 1
        with self.lock:
            if not self.candidates:
                self.kill_no_candidate.append(int(time.time() * 1000))
                return
            pid = self.rng.choice(list(self.candidates))
            name, start = self.candidates.pop(pid)
            self.killed.add(pid)
        t = int(time.time() * 1000)
        rec = {"pid": pid, "name": name, "t_ms": t}
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.raced["gone"].append(rec)
            return
        try:
            s = stat(pid)
            if s is None:
                self.raced["gone"].append(rec)
                return
            if s["start"] != start or not environ_has(pid, self.needle):
                # The state Z check comes after: a zombie's environ is empty.
                if s["start"] == start and s["state"] == "Z":
                    self.raced["dead"].append(rec)
                else:
                    self.raced["reused"].append(rec)
                return
            if s["state"] == "Z":
                self.raced["dead"].append(rec)
                return
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                self.raced["gone"].append(rec)
                return
            self.kills.append(rec)
        finally:
            os.close(fd)

    def kill_loop(self, until: float) -> None:
        period = 1.0 / self.a.kill_rate
        nxt = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= until or self.proc.poll() is not None:
                return
            if now < nxt:
                time.sleep(min(nxt - now, until - now))
                continue
            self.kill_one()
            nxt += period
            # Fallen far behind (a stalled machine): do not burst to catch up.
            if time.monotonic() - nxt > 1.0:
                nxt = time.monotonic()

    def reload_once(self) -> None:
        # Change the set of extras (never below 0, never above 5) and churn's env.
        if self.extras and (len(self.extras) >= 5 or self.rng.random() < 0.5):
            for _ in range(min(len(self.extras), self.rng.randint(1, 2))):
                self.extras.remove(self.rng.choice(self.extras))
        else:
            for _ in range(min(5 - len(self.extras), self.rng.randint(1, 2))):
                self.extras.append(self.next_extra)
                self.next_extra += 1
        self.gen += 1
        self.write_config()
        t0 = time.monotonic()
        rc, out, err = self.cli("reload", "--json", timeout=60)
        took = time.monotonic() - t0
        rec = {"t_ms": int(time.time() * 1000), "rc": rc, "took_s": round(took, 3),
               "extras": list(self.extras), "gen": self.gen}
        try:
            j = json.loads(out)
            rec.update({k: len(j.get(k, [])) for k in ("added", "removed", "changed", "unchanged")})
            rec["errors"] = j.get("errors", [])
        except ValueError:
            rec["stderr"] = err.strip()[:300]
        if rc != 0:
            self.errors.append(f"reload exit {rc}: {err.strip()[:200]}")
        self.reloads.append(rec)

    def reload_loop(self) -> None:
        while not self.stop_chaos.wait(self.rng.uniform(self.a.storm_min, self.a.storm_max)):
            log(f"reload storm: {self.a.storm_reloads} reloads")
            for i in range(self.a.storm_reloads):
                if self.stop_chaos.is_set():
                    return
                self.reload_once()
                time.sleep(self.a.storm_gap)

    # ---- samples

    def zombies(self) -> list[dict]:
        dpid = self.proc.pid
        with self.lock:
            groups = set(self.current_groups)
        out = []
        for p in pids():
            s = stat(p)
            if s is None or s["state"] != "Z":
                continue
            if s["ppid"] == dpid or s["pgrp"] in groups or environ_has(s["ppid"], self.needle):
                out.append({"pid": p, "comm": s["comm"], "ppid": s["ppid"], "pgrp": s["pgrp"],
                            "start": s["start"]})
        return out

    def sample(self, t0: float) -> dict:
        pid = self.proc.pid
        s = {"t_s": round(time.monotonic() - t0, 2), "loadavg": loadavg()}
        s.update(daemon_figures(pid))
        s["cpu_s"] = cpu_seconds(pid)
        z = self.zombies()
        s["zombies"] = len(z)
        now = time.monotonic()
        for zz in z:
            key = (zz["pid"], zz["start"])
            seen = self.zombies_seen.setdefault(key, {**zz, "first_s": s["t_s"], "samples": 0})
            seen["samples"] += 1
            seen["last_s"] = s["t_s"]
        s["zombie_pids"] = [zz["pid"] for zz in z]
        st = self.cli_json("status", "--json")
        if st:
            s["states"] = st.get("processes", {})
            s["running"] = s["states"].get("running", 0)
            s["total"] = sum(s["states"].values())
        io = thread_io(pid, "hangar-logs")
        if io:
            s["log_rchar"], s["log_wchar"] = io["rchar"], io["wchar"]
        m = self.metrics()
        if m:
            s["metrics"] = m
        s["new_events"] = self.fetch_events()
        s["kills_so_far"] = len(self.kills)
        s["took_s"] = round(time.monotonic() - now, 3)
        return s

    def sample_loop(self, t0: float) -> None:
        while not self.stop_chaos.is_set():
            if self.proc.poll() is not None:
                return
            s = self.sample(t0)
            self.samples.append(s)
            if len(self.samples) % 6 == 1:
                log(f"t={s['t_s']:.0f}s rss={s['rss_mb']} MB fds={s['fds']} threads={s['threads']} "
                    f"zombies={s['zombies']} running={s.get('running')}/{s.get('total')} "
                    f"kills={len(self.kills)} raced={sum(len(v) for v in self.raced.values())} "
                    f"reloads={len(self.reloads)} load={s['loadavg'][0]}")
            self.stop_chaos.wait(self.a.sample_interval)

    # ---- the end

    def quiesce(self) -> dict:
        """Wait until everything runs and the event id stands still for 2 s."""
        t0 = time.monotonic()
        want = BASE_PROCESSES + len(self.extras)
        still_since = None
        last = None
        st = None
        while time.monotonic() - t0 < self.a.quiesce_timeout:
            st = self.cli_json("status", "--json")
            if st:
                ev = st.get("last_event_id")
                running = st.get("processes", {}).get("running", 0)
                if running == want and ev == last:
                    if still_since is None:
                        still_since = time.monotonic()
                    elif time.monotonic() - still_since >= 2.0:
                        break
                else:
                    still_since = None
                last = ev
            time.sleep(0.2)
        else:
            self.errors.append(f"not quiet after {self.a.quiesce_timeout} s: {st}")
        return {"took_s": round(time.monotonic() - t0, 2), "status": st}

    def run_processes(self) -> dict[int, dict]:
        """Every process of the run now: this run's marker in its environment,
        or (a zombie has no environment) a child of the daemon or a member of a
        group the last `ps` listed."""
        dpid = self.proc.pid
        with self.lock:
            groups = set(self.current_groups)
        out = {}
        for p in pids():
            s = stat(p)
            if s is None or p == dpid:
                continue
            if environ_has(p, self.needle) or s["ppid"] == dpid or s["pgrp"] in groups:
                out[p] = s
        return out

    def leftovers(self, before: dict[int, dict]) -> dict:
        """Which of `before` (same pid, same start time) still exist, and any
        process carrying the run's marker."""
        zombies, alive = [], []
        for p, b in before.items():
            s = stat(p)
            if s is None or s["start"] != b["start"]:
                continue
            rec = f"{p}:{s['comm']}:{s['state']}:ppid={s['ppid']}:pgrp={s['pgrp']}"
            (zombies if s["state"] == "Z" else alive).append(rec)
        for p in pids():
            if p not in before and p != os.getpid() and environ_has(p, self.needle):
                s = stat(p) or {}
                alive.append(f"{p}:{s.get('comm')}:{s.get('state')}:ppid={s.get('ppid')}:new")
        return {"zombies": zombies, "alive": alive}

    def stop(self) -> dict:
        pid = self.proc.pid
        before = self.run_processes()
        log(f"SIGTERM to the daemon ({len(before)} processes of the run)")
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.a.stop_timeout)
        except subprocess.TimeoutExpired:
            self.errors.append(f"the daemon did not exit within {self.a.stop_timeout} s of SIGTERM")
        took = time.monotonic() - t0
        # Right after the daemon's exit its children have been handed to the
        # next reaper up (init here): what is there now, hangar left behind.
        at_exit = self.leftovers(before)
        time.sleep(0.5)
        later = self.leftovers(before)
        return {"exit_code": self.proc.returncode, "took_s": round(took, 3),
                "processes_before": len(before),
                "zombies_at_exit": at_exit["zombies"], "alive_at_exit": at_exit["alive"],
                "zombies_after": later["zombies"], "alive_after": later["alive"],
                "note": "processes of the run taken just before SIGTERM (marker in the "
                        "environment, or a child of the daemon, or in one of its groups) and "
                        "looked up by pid and start time right after the daemon exited and "
                        "0.5 s later; a zombie there was left unreaped by hangar and "
                        "handed to init"}

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            log("daemon still running at cleanup: SIGKILL to its process group")
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        time.sleep(0.3)
        left = [p for p in pids() if p != os.getpid() and environ_has(p, self.needle)]
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if left:
            log(f"killed {len(left)} leftovers at cleanup")
        try:
            self.logf.close()
        except AttributeError:
            pass
        if self.a.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- accounting

    def account(self, base_id: int, m0: dict, m1: dict) -> dict:
        by_name: dict[str, list[dict]] = {}
        for e in self.events:
            by_name.setdefault(e["name"], []).append(e)
        running_by_pid: dict[int, list[tuple[dict, int]]] = {}
        for name, evs in by_name.items():
            for i, e in enumerate(evs):
                if e["to"] == "running" and e.get("pid"):
                    running_by_pid.setdefault(e["pid"], []).append((e, i))
        window = [e for e in self.events if e["id"] > base_id]
        flag = lambda e, k: bool((e.get("detail") or {}).get(k))
        failure_ids = {e["id"] for e in window if flag(e, "failure")}
        restart_events = sum(1 for e in window if flag(e, "restart"))
        starting_events = sum(1 for e in window if e["to"] == "starting")
        classes = {"failure_sigkill": [], "during_stop": [], "other_exit": [], "no_exit_event": [],
                   "no_running_event": []}
        explained: set[int] = set()
        for k in self.kills:
            cands = [(e, i) for e, i in running_by_pid.get(k["pid"], [])
                     if e["name"] == k["name"] and e["at_ms"] <= k["t_ms"] + 1000]
            if not cands:
                classes["no_running_event"].append(k)
                continue
            run, i = max(cands, key=lambda c: c[0]["id"])
            evs = by_name[k["name"]]
            exit_ev = next((e for e in evs[i + 1:] if "exit" in (e.get("detail") or {})), None)
            rec = {**k, "running_event": run["id"]}
            if exit_ev is None:
                classes["no_exit_event"].append(rec)
                continue
            d = exit_ev["detail"]
            rec.update({"exit_event": exit_ev["id"], "from": exit_ev["from"], "to": exit_ev["to"],
                        "exit": d.get("exit"), "failure": bool(d.get("failure"))})
            if exit_ev["from"] == "stopping":
                classes["during_stop"].append(rec)
            elif d.get("signal") == 9 and d.get("failure"):
                classes["failure_sigkill"].append(rec)
                explained.add(exit_ev["id"])
            else:
                classes["other_exit"].append(rec)
        unexplained = [e for e in window if e["id"] in failure_ids and e["id"] not in explained]
        d = {k: (m1[k] - m0[k]) if (m0 and m1) else None
             for k in ("hangar_process_failures_total", "hangar_process_restarts_total",
                       "hangar_process_starts_total")}
        return {
            "kills_delivered": len(self.kills),
            "accounted_as_failure": len(classes["failure_sigkill"]),
            "landed_during_stop": len(classes["during_stop"]),
            "landed_during_stop_by_signal": _count(r.get("exit") for r in classes["during_stop"]),
            "other_exit": classes["other_exit"],
            "no_exit_event": classes["no_exit_event"],
            "no_running_event": classes["no_running_event"],
            "events_in_window": len(window),
            "failure_events": len(failure_ids),
            "restart_events": restart_events,
            "starting_events": starting_events,
            "failures_no_kill_explains": [
                {k: e.get(k) for k in ("id", "name", "from", "to", "detail")} for e in unexplained][:50],
            "failures_no_kill_explains_count": len(unexplained),
            "metrics_delta": d,
            "during_stop_sample": classes["during_stop"][:10],
        }


def _count(xs) -> dict:
    out: dict = {}
    for x in xs:
        out[str(x)] = out.get(str(x), 0) + 1
    return out


def window_stats(samples: list[dict], key: str, lo: float, hi: float) -> float | None:
    xs = [s[key] for s in samples if lo <= s["t_s"] < hi and s.get(key) is not None]
    return round(statistics.median(xs), 3) if xs else None


def flatness(samples: list[dict], key: str, duration: float) -> dict:
    w = min(60.0, duration / 3.0)
    first = window_stats(samples, key, 0, w)
    last = window_stats(samples, key, duration - w, duration + 1e9)
    pts = [(s["t_s"], s[key]) for s in samples if s.get(key) is not None]
    return {
        "window_s": w,
        "first_median": first,
        "last_median": last,
        "ratio": round(last / first, 4) if first and last else None,
        "slope_per_min": round(slope_per_min([p[0] for p in pts], [p[1] for p in pts]) or 0.0, 4),
        # Warm-up (caches filling, threads starting) slows down; a leak does not.
        "slope_second_half_per_min": round(slope_per_min(
            [p[0] for p in pts if p[0] >= duration / 2],
            [p[1] for p in pts if p[0] >= duration / 2]) or 0.0, 4),
        "min": min((p[1] for p in pts), default=None),
        "max": max((p[1] for p in pts), default=None),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of chaos (600)")
    ap.add_argument("--kill-rate", type=float, default=10.0, help="SIGKILLs per second (10)")
    ap.add_argument("--sample-interval", type=float, default=5.0, help="seconds between samples (5)")
    ap.add_argument("--ps-interval", type=float, default=1.0,
                    help="seconds between `hangar ps --json` refreshes of the kill candidates (1)")
    ap.add_argument("--storm-min", type=float, default=20.0, help="least seconds between reload storms (20)")
    ap.add_argument("--storm-max", type=float, default=30.0, help="most seconds between reload storms (30)")
    ap.add_argument("--storm-reloads", type=int, default=5, help="reloads per storm (5)")
    ap.add_argument("--storm-gap", type=float, default=0.5, help="seconds between the reloads of a storm (0.5)")
    ap.add_argument("--quiesce-timeout", type=float, default=60.0)
    ap.add_argument("--stop-timeout", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--port", type=int, default=0, help="metrics port on 127.0.0.1 (0: a free one)")
    ap.add_argument("--hangar", default=str(ROOT / "target/release/hangar"))
    ap.add_argument("--json", default=str(ROOT / "bench/results/soak-latest.json"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (config, daemon.log, logs)")
    ap.add_argument("--daemon-env", action="append", default=[], metavar="K=V",
                    help="an environment variable for the daemon (and so its children), for "
                         "diagnosis, e.g. MALLOC_ARENA_MAX=1; repeatable")
    a = ap.parse_args()
    if not os.access(a.hangar, os.X_OK):
        print(f"error: {a.hangar} is missing; build it with `cargo build --release -p hangar-cli`",
              file=sys.stderr)
        return 2

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)

    s = Soak(a)
    res = s.res
    res.update({
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "git": git_state(),
        "binary": {"path": a.hangar, "mtime": time.strftime(
            "%Y-%m-%dT%H:%M:%S%z", time.localtime(os.stat(a.hangar).st_mtime))},
        "params": dict(vars(a)),
        "loadavg_start": loadavg(),
        "compilers_running_start": busy_compilers(),
        "line_bytes": LINE_BYTES,
        "base_processes": BASE_PROCESSES,
    })
    ok = True
    try:
        s.start()
        s.fetch_events()
        base_id = s.last_event_id
        m0 = s.metrics()
        cpu0 = cpu_seconds(s.proc.pid)
        s.refresh_candidates()
        log(f"chaos for {a.duration:.0f} s: {a.kill_rate}/s kills, reload storms every "
            f"{a.storm_min:.0f}-{a.storm_max:.0f} s, samples every {a.sample_interval:.0f} s")
        t0 = time.monotonic()
        threads = [threading.Thread(target=s.ps_loop, daemon=True),
                   threading.Thread(target=s.reload_loop, daemon=True),
                   threading.Thread(target=s.sample_loop, args=(t0,), daemon=True)]
        for t in threads:
            t.start()
        s.kill_loop(t0 + a.duration)
        chaos_s = time.monotonic() - t0
        s.stop_chaos.set()
        for t in threads:
            t.join(timeout=120)
        alive = s.proc.poll() is None
        res["daemon_alive_after_chaos"] = alive
        if not alive:
            s.errors.append(f"the daemon exited during the chaos with {s.proc.returncode}")
            raise RuntimeError("the daemon fell over")
        res["chaos_s"] = round(chaos_s, 2)
        log(f"chaos over after {chaos_s:.1f} s; waiting for quiet")
        res["quiesce"] = s.quiesce()
        last = s.sample(t0)
        last["after_quiesce"] = True
        s.samples.append(last)
        m1 = last.get("metrics")
        res["daemon_cpu_s"] = round((cpu_seconds(s.proc.pid) or 0) - (cpu0 or 0), 2)
        res["metrics_start"], res["metrics_end"] = m0, m1
        res["accounting"] = s.account(base_id, m0, m1)
        res["stop"] = s.stop()
    except KeyboardInterrupt as e:
        s.errors.append(f"interrupted: {e}")
        ok = False
    except RuntimeError as e:
        s.errors.append(str(e))
        ok = False
    finally:
        s.cleanup()
    res["loadavg_end"] = loadavg()
    res["compilers_running_end"] = busy_compilers()

    chaos = [x for x in s.samples if not x.get("after_quiesce")]
    dur = res.get("chaos_s", a.duration)
    res["flat"] = {k: flatness(chaos, k, dur) for k in ("rss_mb", "rss_anon_mb", "fds", "threads")}
    io = [x for x in chaos if x.get("log_rchar") is not None]
    if len(io) >= 2:
        span = io[-1]["t_s"] - io[0]["t_s"]
        b = io[-1]["log_rchar"] - io[0]["log_rchar"]
        res["flood"] = {"bytes_per_s": round(b / span), "lines_per_s": round(b / span / LINE_BYTES),
                        "mb_per_s": round(b / span / 2**20, 1),
                        "note": "bytes the daemon's log thread read from the children's pipes "
                                "(rchar of the hangar-logs thread) over the line length; "
                                "the floods write nearly all of it"}
    persistent = [z for z in s.zombies_seen.values() if z["samples"] >= 2]
    res["zombies"] = {
        "seen_once": sum(1 for z in s.zombies_seen.values() if z["samples"] == 1),
        "persistent": persistent,
        "max_in_one_sample": max((x["zombies"] for x in chaos), default=0),
        "note": "a zombie between a SIGKILL and hangar's reaping is normal; one seen in two "
                "consecutive samples (>= the sample interval) is a leak",
    }
    res["kills"] = {
        "attempts": s.kill_attempts,
        "delivered": len(s.kills),
        "raced_gone": len(s.raced["gone"]),
        "raced_dead": len(s.raced["dead"]),
        "raced_reused": len(s.raced["reused"]),
        "no_candidate": len(s.kill_no_candidate),
        "no_candidate_at_ms": s.kill_no_candidate[:100],
        "rate_per_s": round(s.kill_attempts / dur, 2) if dur else None,
        "by_kind": _count(k["name"].rsplit("-", 1)[0] for k in s.kills),
        "raced": {k: v[:50] for k, v in s.raced.items()},
    }
    res["reloads"] = {"count": len(s.reloads), "failed": sum(1 for r in s.reloads if r["rc"] != 0),
                      "took_s_median": statistics.median([r["took_s"] for r in s.reloads]) if s.reloads else None,
                      "took_s_max": max((r["took_s"] for r in s.reloads), default=None),
                      "all": s.reloads}
    res["samples"] = s.samples
    res["errors"] = s.errors

    checks = {}
    acc = res.get("accounting")
    if acc:
        md = acc["metrics_delta"]
        checks["every kill accounted for in events"] = (
            not acc["no_exit_event"] and not acc["no_running_event"] and not acc["other_exit"])
        checks["metrics failures == failure events"] = md["hangar_process_failures_total"] == acc["failure_events"]
        checks["metrics restarts == restart events"] = md["hangar_process_restarts_total"] == acc["restart_events"]
        checks["metrics starts == starting events"] = md["hangar_process_starts_total"] == acc["starting_events"]
        checks["failure events == kills accounted + unexplained"] = (
            acc["failure_events"] == acc["accounted_as_failure"] + acc["failures_no_kill_explains_count"])
        checks["no failure without a kill"] = acc["failures_no_kill_explains_count"] == 0
    checks["no persistent zombie"] = not persistent
    st = res.get("stop")
    if st:
        checks["daemon exit 0 on SIGTERM"] = st["exit_code"] == 0
        checks["nothing of the run alive at the daemon's exit"] = not st["alive_at_exit"]
        checks["no zombie left at the daemon's exit"] = not st["zombies_at_exit"]
    fr = res["flat"]
    checks[f"RSS flat (last/first <= {RSS_FLAT})"] = bool(fr["rss_mb"]["ratio"]) and fr["rss_mb"]["ratio"] <= RSS_FLAT
    checks[f"fds flat (last/first <= {FDS_FLAT})"] = bool(fr["fds"]["ratio"]) and fr["fds"]["ratio"] <= FDS_FLAT
    checks["daemon alive through the chaos"] = bool(res.get("daemon_alive_after_chaos"))
    checks["no harness errors"] = not s.errors
    res["checks"] = checks
    ok = ok and all(checks.values())
    res["ok"] = ok

    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    print(report(res))
    print(f"\nJSON: {a.json}")
    return 0 if ok else 1


def report(res: dict) -> str:
    m = res["machine"]
    k = res["kills"]
    acc = res.get("accounting") or {}
    md = acc.get("metrics_delta") or {}
    fl = res["flat"]
    out = [f"hangar soak: {res['base_processes']} processes, {res.get('chaos_s')} s of chaos; "
           f"{m['nproc']} CPU ({m['cpu_model']}), Linux {m['kernel']}, {m['mem_total_gib']} GiB; "
           f"git {res['git']['head'][:10]}"
           + (f" + {len(res['git']['dirty_tracked_files'])} modified files" if res["git"]["dirty_tracked_files"] else "")
           + f"; load {res['loadavg_start']} -> {res['loadavg_end']}", "",
           "| figure | value |", "|---|---:|"]

    def row(label, value):
        out.append(f"| {label} | {value} |")

    row("kill attempts (rate/s)", f"{k['attempts']} ({k['rate_per_s']})")
    row("kills delivered", k["delivered"])
    row("raced: pid gone / already dead / reused (not signalled)",
        f"{k['raced_gone']} / {k['raced_dead']} / {k['raced_reused']}")
    if acc:
        row("delivered kills ending in a `signal 9` failure event", acc["accounted_as_failure"])
        row("delivered kills landing in a reload's stop (by exit)",
            f"{acc['landed_during_stop']} {acc['landed_during_stop_by_signal'] or ''}")
        row("delivered kills with no exit event / no running event / another exit",
            f"{len(acc['no_exit_event'])} / {len(acc['no_running_event'])} / {len(acc['other_exit'])}")
        row("failure events (stored) / Δ hangar_process_failures_total",
            f"{acc['failure_events']} / {md.get('hangar_process_failures_total')}")
        row("restart events / Δ hangar_process_restarts_total",
            f"{acc['restart_events']} / {md.get('hangar_process_restarts_total')}")
        row("starting events / Δ hangar_process_starts_total",
            f"{acc['starting_events']} / {md.get('hangar_process_starts_total')}")
        row("failures no kill explains", acc["failures_no_kill_explains_count"])
    z = res["zombies"]
    row("zombies: persistent / seen once / most in one sample",
        f"{len(z['persistent'])} / {z['seen_once']} / {z['max_in_one_sample']}")
    for key, label, unit in (("rss_mb", "daemon VmRSS", "MB"), ("rss_anon_mb", "daemon RssAnon", "MB"),
                             ("fds", "daemon open fds", ""),
                             ("threads", "daemon threads", "")):
        f = fl[key]
        row(f"{label}: first / last {f['window_s']:.0f} s median (ratio; slope/min, whole run / "
            f"second half; min–max)",
            f"{f['first_median']} / {f['last_median']} {unit} ({f['ratio']}; {f['slope_per_min']} / "
            f"{f['slope_second_half_per_min']}; {f['min']}–{f['max']})")
    r = res["reloads"]
    row("reloads (failed; median / max s)", f"{r['count']} ({r['failed']}; {r['took_s_median']} / {r['took_s_max']})")
    if res.get("flood"):
        row("log flood read by the daemon (lines/s; MB/s)",
            f"{res['flood']['lines_per_s']:,} ({res['flood']['mb_per_s']})")
    if res.get("daemon_cpu_s") is not None:
        row("daemon CPU over the run (s)", res["daemon_cpu_s"])
    chaos = [x for x in res["samples"] if not x.get("after_quiesce") and x.get("running") is not None]
    if chaos:
        row("processes running per sample (min / median)",
            f"{min(x['running'] for x in chaos)} / {statistics.median([x['running'] for x in chaos])}")
    st = res.get("stop")
    if st:
        row("stop: exit code, took s", f"{st['exit_code']}, {st['took_s']}")
        row("processes of the run before the stop / alive at exit / zombies at exit (0.5 s later)",
            f"{st['processes_before']} / {len(st['alive_at_exit'])} / {len(st['zombies_at_exit'])} "
            f"({len(st['zombies_after'])})")
    out.append("")
    out.append("| check | |")
    out.append("|---|---|")
    for c, v in res["checks"].items():
        out.append(f"| {c} | {'ok' if v else '**FAILED**'} |")
    if res["errors"]:
        out.append("")
        out.append("errors: " + "; ".join(res["errors"][:10]))
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
