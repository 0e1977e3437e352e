#!/usr/bin/env python3
"""The hangar daemon with N supervised `sleep 100000`: status latency through
gRPC and through the CLI, daemon memory, boot and graceful stop.

Reproduce (from the workspace root; Python 3.11 stdlib only):

    cargo build --release -p hangar-cli
    cargo build --release -p hangar-api --example grpc_status_bench
    python3 bench/daemon.py --quiet-wait 300
    # N=1000, 3 runs (a fresh daemon each), K=2000 gRPC calls, R=50 CLI runs

What it does, in each run (one daemon):

1. writes a config (`[daemon] http = ""`, one `[[process]]` `sleep 100000`
   with `instances = N`, everything else default) into a fresh temp dir and
   starts `hangar --data-dir D serve -c CONFIG` in its own session;
2. boot: polls `hangar status --json` every 50 ms until it counts N running
   (then checks once with `hangar ps --json`); also, from /proc, the start time
   of the last `sleep` child relative to the daemon's own start (clock ticks,
   10 ms resolution, no polling involved);
3. waits --settle seconds and reads the daemon's VmRSS / VmHWM / RssAnon /
   RssFile (/proc/PID/status), Pss (/proc/PID/smaps_rollup), threads, fds;
4. runs `target/release/examples/grpc_status_bench` (crates/api/examples): K
   sequential `Processes.List` (all N), `Processes.Get` (one), `Daemon.Status`
   on one connection, plus fresh-connection + `Daemon.Status`;
5. times whole CLI invocations (wall clock around fork+exec+wait, output to
   /dev/null, R runs after 3 untimed): `hangar ps --json`, `hangar ps`,
   `hangar status --json`, and as baselines `/bin/true` and `hangar --version`;
   the daemon's CPU (schedstat, all threads) per call is read for each block;
6. reads the daemon's memory again (growth after all those calls);
7. SIGTERM, and times the graceful stop until the daemon has exited, and
   until no `sleep` of this run is left;
8. cleanup no matter what: SIGKILL the daemon's process group if it is still
   there, then every process whose environment carries this run's
   HANGAR_SUPERVISOR_ID or the harness's marker variable; leftovers are counted.

Writes bench/results/daemon.json (every run, the median/min/max over runs
of each figure, and the machine's noise: load, steal, other busy processes
before and after each run) and prints a table with the targets (gRPC List
p99 <= 5 ms, daemon RSS <= 40 MB) and ratios measured/target, for the median
run and the worst. MB here is 2^20 bytes, as in bench/supervisors.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
MARKER_ENV = "HANGAR_DAEMON_BENCH_MARKER"

TARGETS = {
    "grpc_list_p99_ms": 5.0,
    "daemon_rss_mb": 40.0,
}


def log(msg: str) -> None:
    print(f"[daemon.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100), as status_bench computes it."""
    s = sorted(xs)
    k = max(1, min(len(s), -(-len(s) * q // 100)))
    return s[int(k) - 1]


def summary(ms: list[float]) -> dict:
    return {
        "n": len(ms),
        "min_ms": round(min(ms), 3),
        "p50_ms": round(pct(ms, 50), 3),
        "p90_ms": round(pct(ms, 90), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(sum(ms) / len(ms), 3),
    }


# ---------------------------------------------------------------- /proc helpers

def proc_status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def kb(v: str | None) -> int | None:
    if not v:
        return None
    try:
        return int(v.split()[0])
    except (ValueError, IndexError):
        return None


def memory(pid: int) -> dict:
    st = proc_status(pid)
    m = {
        "vm_rss_mb": kb(st.get("VmRSS")),
        "vm_hwm_mb": kb(st.get("VmHWM")),
        "rss_anon_mb": kb(st.get("RssAnon")),
        "rss_file_mb": kb(st.get("RssFile")),
        "vm_size_mb": kb(st.get("VmSize")),
        "pss_mb": None,
    }
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    m["pss_mb"] = kb(line.split(":", 1)[1])
    except OSError:
        pass
    m = {k: (round(v / 1024.0, 2) if v is not None else None) for k, v in m.items()}
    m["threads"] = int(st.get("Threads", "0") or 0)
    try:
        m["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        m["fds"] = None
    return m


def schedstat_ns(pid: int) -> int:
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


def start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    # Field 22 (starttime); comm (field 2) may hold spaces, so split after ')'.
    rest = s.rsplit(")", 1)[1].split()
    return int(rest[19])


def children(pid: int) -> list[int]:
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def marked_pids(supervisor_id: str | None, marker: str) -> list[int]:
    """Processes of this run: by HANGAR_SUPERVISOR_ID or by the harness marker."""
    needles = [f"{MARKER_ENV}={marker}".encode()]
    if supervisor_id:
        needles.append(f"HANGAR_SUPERVISOR_ID={supervisor_id}".encode())
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if any(n in env for n in needles):
            out.append(int(d))
    return out


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def machine() -> dict:
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = kb(proc_status_file("/proc/meminfo").get("MemTotal"))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "mem_total_gib": round(mem / 1024 / 1024, 1) if mem else None,
        "python": platform.python_version(),
        "loadavg_at_start": [float(x) for x in load],
    }


def busy_compilers() -> list[str]:
    """Compilers/builders running right now: noise on a 2-core machine."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and comm(int(d)) in ("rustc", "cargo", "cc1", "cc1plus", "ld", "clippy-driver"):
            out.append(f"{d}:{comm(int(d))}")
    return out


def busy_processes(window: float = 1.0, min_pct: float = 5.0) -> list[str]:
    """Other processes using more than min_pct % of a core over `window` s."""
    def sample() -> dict[int, int]:
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                out[int(d)] = int(rest[11]) + int(rest[12])
            except (OSError, IndexError, ValueError):
                pass
        return out
    a = sample()
    time.sleep(window)
    b = sample()
    me = os.getpid()
    busy = []
    for pid, t in b.items():
        pct_ = 100.0 * (t - a.get(pid, t)) / CLK_TCK / window
        if pid != me and pct_ >= min_pct:
            busy.append(f"{pid}:{comm(pid)}:{pct_:.0f}%")
    return busy


def proc_status_file(path: str) -> dict:
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


# ---------------------------------------------------------------- the run

class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.tmp = Path(tempfile.mkdtemp(prefix="hangar-daemon-bench-"))
        self.data = self.tmp / "data"
        self.config = self.tmp / "hangar.toml"
        self.daemon_log = self.tmp / "daemon.log"
        self.marker = self.tmp.name
        self.proc: subprocess.Popen | None = None
        self.supervisor_id: str | None = None
        self.res: dict = {}

    def hangar(self, *args: str) -> list[str]:
        return [self.a.hangar, "--data-dir", str(self.data), *args]

    def cli_json(self, *args: str, timeout: float = 30) -> dict | list | None:
        r = subprocess.run(self.hangar(*args), capture_output=True, timeout=timeout)
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def start(self) -> None:
        n = self.a.n
        self.config.write_text(
            "[daemon]\n"
            'http = ""\n\n'
            "[[process]]\n"
            'name = "s"\n'
            'command = "sleep"\n'
            'args = ["100000"]\n'
            f"instances = {n}\n"
        )
        env = dict(os.environ)
        env[MARKER_ENV] = self.marker
        env.setdefault("HANGAR_LOG", "info")
        log(f"starting the daemon with {n} processes in {self.tmp}")
        self.logf = open(self.daemon_log, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.hangar("serve", "-c", str(self.config)),
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
        pid = self.proc.pid
        socket_s = None
        all_s = None
        polls = 0
        last = None
        while time.monotonic() - t0 < self.a.boot_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.proc.returncode}; see {self.daemon_log}")
            st = self.cli_json("status", "--json")
            polls += 1
            if st is not None:
                if socket_s is None:
                    socket_s = time.monotonic() - t0
                    self.supervisor_id = st.get("supervisor_id")
                last = st.get("processes", {})
                if last.get("running", 0) >= n:
                    all_s = time.monotonic() - t0
                    break
            time.sleep(0.05)
        if all_s is None:
            raise RuntimeError(f"not all running after {self.a.boot_timeout} s: {last}")
        ps = self.cli_json("ps", "--json")
        ps_running = sum(1 for p in ps if p.get("state") == "running") if isinstance(ps, list) else None
        if ps_running != n:
            raise RuntimeError(f"`hangar ps --json` shows {ps_running} running, expected {n}")
        kids = [c for c in children(pid) if comm(c) == "sleep"]
        d0 = start_ticks(pid)
        starts = [s for s in (start_ticks(c) for c in kids) if s is not None]
        last_child_s = (max(starts) - d0) / CLK_TCK if starts and d0 is not None else None
        first_child_s = (min(starts) - d0) / CLK_TCK if starts and d0 is not None else None
        self.res["boot"] = {
            "socket_answers_s": round(socket_s, 3) if socket_s else None,
            "all_running_s": round(all_s, 3),
            "all_running_note": "from Popen to the first `hangar status --json` (polled every 50 ms) "
                                "counting N running; includes up to one poll interval + one CLI call",
            "first_child_forked_s": first_child_s,
            "last_child_forked_s": last_child_s,
            "child_fork_note": f"/proc starttime of the daemon's sleep children minus the daemon's, "
                               f"1/{CLK_TCK} s resolution",
            "status_polls": polls,
            "children_seen": len(kids),
            "ps_json_running": ps_running,
        }
        log(f"all {n} running after {all_s:.3f} s (last child forked at {last_child_s} s); "
            f"supervisor id {self.supervisor_id}")

    def grpc(self) -> None:
        sb = self.a.status_bench
        cmd = [sb, "--socket", str(self.data / "hangar.sock"), "--expect", str(self.a.n),
               "--iterations", str(self.a.iterations), "--warmup", str(self.a.warmup),
               "--connect-iterations", str(self.a.connect_iterations), "--raw"]
        log("gRPC: " + " ".join(cmd))
        c0 = schedstat_ns(self.proc.pid)
        j0 = cpu_ticks()
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        wall = time.monotonic() - t0
        c1 = schedstat_ns(self.proc.pid)
        j1 = cpu_ticks()
        if r.returncode != 0:
            raise RuntimeError(f"status_bench failed ({r.returncode}): {r.stderr.strip()}")
        out = json.loads(r.stdout)
        # Keep a histogram (1 ms buckets) and the mean per tenth of the run
        # instead of every sample.
        for key in ("list", "get", "daemon_status"):
            lat = out[key]["latency"]
            xs = lat.pop("samples_ms", [])
            if xs:
                hist: dict[str, int] = {}
                for x in xs:
                    b = str(int(x))
                    hist[b] = hist.get(b, 0) + 1
                lat["histogram_1ms"] = dict(sorted(hist.items(), key=lambda kv: int(kv[0])))
                tenth = max(1, len(xs) // 10)
                lat["mean_by_tenth_ms"] = [round(sum(xs[i:i + tenth]) / len(xs[i:i + tenth]), 3)
                                           for i in range(0, len(xs), tenth)]
        if isinstance(out.get("connect_and_status"), dict):
            out["connect_and_status"].pop("samples_ms", None)
        out["steal_pct"] = round(100.0 * (j1[1] - j0[1]) / max(1, j1[0] - j0[0]), 2)
        # The List calls are by far the heaviest: an upper-bound estimate of the
        # daemon's CPU per List is all its CPU during the run over the List calls.
        out["daemon_cpu_ms_per_list_estimate"] = round((c1 - c0) / 1e6 / (self.a.iterations + self.a.warmup), 3)
        calls = 3 * (self.a.iterations + self.a.warmup) + self.a.connect_iterations + min(self.a.warmup, 10)
        out["wall_s"] = round(wall, 2)
        out["daemon_cpu_ms_total"] = round((c1 - c0) / 1e6, 1)
        out["daemon_cpu_note"] = f"daemon on-CPU time (all threads) over the whole status_bench run, {calls} calls of all kinds"
        out["command"] = " ".join(cmd)
        self.res["grpc"] = out
        l, g, s = out["list"]["latency"], out["get"]["latency"], out["daemon_status"]["latency"]
        log(f"gRPC List p50 {l['p50_ms']} p99 {l['p99_ms']} ms; Get p99 {g['p99_ms']}; Status p99 {s['p99_ms']}")

    def cli(self) -> None:
        runs = self.a.cli_runs
        cases = [
            ("/bin/true", ["/bin/true"], None),
            ("hangar --version", [self.a.hangar, "--version"], None),
            ("hangar ps --json", self.hangar("ps", "--json"), "ps_json"),
            ("hangar ps", self.hangar("ps"), "ps_table"),
            ("hangar status --json", self.hangar("status", "--json"), "status_json"),
        ]
        out = {}
        j0 = cpu_ticks()
        for label, cmd, check in cases:
            # One untimed run whose output is checked, then warm-up, then R timed.
            r = subprocess.run(cmd, capture_output=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError(f"{label}: exit {r.returncode}: {r.stderr.decode(errors='replace')[:500]}")
            verified = None
            if check == "ps_json":
                verified = sum(1 for p in json.loads(r.stdout) if p["state"] == "running")
            elif check == "ps_table":
                verified = sum(1 for line in r.stdout.decode().splitlines()[1:] if " running " in line)
            elif check == "status_json":
                verified = json.loads(r.stdout)["processes"].get("running")
            out_bytes = len(r.stdout)
            for _ in range(3):
                subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
            ms = []
            c0 = schedstat_ns(self.proc.pid)
            for _ in range(runs):
                t = time.perf_counter()
                rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    timeout=30).returncode
                ms.append((time.perf_counter() - t) * 1e3)
                if rc != 0:
                    raise RuntimeError(f"{label}: exit {rc} during timing")
            c1 = schedstat_ns(self.proc.pid)
            out[label] = {
                "command": " ".join(cmd),
                **summary(ms),
                "samples_ms": [round(x, 3) for x in ms],
                "stdout_bytes": out_bytes,
                "running_in_output": verified,
                "daemon_cpu_ms_per_call": round((c1 - c0) / 1e6 / runs, 3),
            }
            log(f"CLI {label}: p50 {out[label]['p50_ms']} p99 {out[label]['p99_ms']} ms"
                + (f", {verified} running in output" if verified is not None else ""))
        base = out["/bin/true"]["p50_ms"]
        for v in out.values():
            v["p50_minus_true_ms"] = round(v["p50_ms"] - base, 3)
        self.res["cli"] = out
        j1 = cpu_ticks()
        self.res["cli_steal_pct"] = round(100.0 * (j1[1] - j0[1]) / max(1, j1[0] - j0[0]), 2)

    def stop(self) -> None:
        pid = self.proc.pid
        kids = set(c for c in children(pid) if comm(c) == "sleep")
        log(f"SIGTERM to the daemon ({len(kids)} sleep children)")
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        gone_s = None
        exit_s = None
        while time.monotonic() - t0 < self.a.stop_timeout:
            if gone_s is None:
                kids = {c for c in kids if comm(c) == "sleep"}
                if not kids:
                    gone_s = time.monotonic() - t0
            if exit_s is None and self.proc.poll() is not None:
                exit_s = time.monotonic() - t0
            if gone_s is not None and exit_s is not None:
                break
            time.sleep(0.002)
        took_ms = None
        try:
            for line in self.daemon_log.read_text(errors="replace").splitlines():
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)
                m = re.search(r"daemon stopped.*took_ms=(\d+)", line)
                if m:
                    took_ms = int(m.group(1))
        except OSError:
            pass
        self.res["stop"] = {
            "daemon_exited_s": round(exit_s, 3) if exit_s is not None else None,
            "all_children_gone_s": round(gone_s, 3) if gone_s is not None else None,
            "daemon_exit_code": self.proc.returncode,
            "daemon_logged_took_ms": took_ms,
            "note": "from SIGTERM; children polled every 2 ms via /proc (zombies count as gone only once reaped)",
        }
        log(f"stopped: daemon exited after {exit_s} s, children gone after {gone_s} s, "
            f"exit code {self.proc.returncode}, daemon says took_ms={took_ms}")

    def cleanup(self) -> None:
        leftovers = {"daemon_killed": False, "processes": []}
        if self.proc is not None and self.proc.poll() is None:
            log("daemon still running at cleanup: SIGTERM, then SIGKILL to its process group")
            leftovers["daemon_killed"] = True
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        time.sleep(0.3)
        left = marked_pids(self.supervisor_id, self.marker)
        for p in left:
            leftovers["processes"].append(f"{p}:{comm(p)}")
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if left:
            log(f"LEFTOVERS killed: {len(left)} processes of this run were still alive")
        again = marked_pids(self.supervisor_id, self.marker)
        leftovers["still_alive_after_sigkill"] = len(again)
        leftovers["count"] = len(left)
        self.res["leftovers"] = leftovers
        try:
            self.logf.close()
        except AttributeError:
            pass
        if self.a.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self) -> dict:
        self.res = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "loadavg_before": loadavg(),
            "compilers_running_before": busy_compilers(),
            "busy_before": busy_processes(),
        }
        try:
            self.start()
            time.sleep(self.a.settle)
            self.res["memory_steady"] = memory(self.proc.pid)
            log(f"steady memory: {self.res['memory_steady']}")
            self.grpc()
            self.res["memory_after_grpc"] = memory(self.proc.pid)
            self.cli()
            self.res["memory_after_cli"] = memory(self.proc.pid)
            log(f"memory after all calls: {self.res['memory_after_cli']}")
            self.stop()
        finally:
            self.cleanup()
        self.res["loadavg_after"] = loadavg()
        self.res["compilers_running_after"] = busy_compilers()
        self.res["busy_after"] = busy_processes()
        return self.res


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def cpu_ticks() -> tuple[int, int]:
    """(all, steal) jiffies from /proc/stat: the hypervisor's steal is noise."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), (v[7] if len(v) > 7 else 0)


def git_state() -> dict:
    def g(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    dirty = [line for line in g("status", "--short", "--untracked-files=no").splitlines() if line]
    return {"head": g("rev-parse", "HEAD"), "dirty_tracked_files": dirty}


def dig(d: dict, path: str):
    for k in path.split("/"):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# Figures aggregated over runs: (label, path in a run, unit).
FIGURES = [
    ("boot: all running (polled, s)", "boot/all_running_s", "s"),
    ("boot: last child forked (/proc, s)", "boot/last_child_forked_s", "s"),
    ("daemon VmRSS steady (MB)", "memory_steady/vm_rss_mb", "MB"),
    ("daemon Pss steady (MB)", "memory_steady/pss_mb", "MB"),
    ("daemon RssAnon steady (MB)", "memory_steady/rss_anon_mb", "MB"),
    ("daemon VmRSS after all calls (MB)", "memory_after_cli/vm_rss_mb", "MB"),
    ("daemon VmHWM after all calls (MB)", "memory_after_cli/vm_hwm_mb", "MB"),
    ("gRPC List p50 (ms)", "grpc/list/latency/p50_ms", "ms"),
    ("gRPC List p99 (ms)", "grpc/list/latency/p99_ms", "ms"),
    ("gRPC List min (ms)", "grpc/list/latency/min_ms", "ms"),
    ("gRPC Get p50 (ms)", "grpc/get/latency/p50_ms", "ms"),
    ("gRPC Get p99 (ms)", "grpc/get/latency/p99_ms", "ms"),
    ("gRPC Daemon.Status p50 (ms)", "grpc/daemon_status/latency/p50_ms", "ms"),
    ("gRPC Daemon.Status p99 (ms)", "grpc/daemon_status/latency/p99_ms", "ms"),
    ("gRPC connect+Status p50 (ms)", "grpc/connect_and_status/p50_ms", "ms"),
    ("gRPC connect+Status p99 (ms)", "grpc/connect_and_status/p99_ms", "ms"),
    ("daemon CPU per List (ms)", "grpc/daemon_cpu_ms_per_list_estimate", "ms"),
    ("stop: daemon exited (s)", "stop/daemon_exited_s", "s"),
    ("stop: all children gone (s)", "stop/all_children_gone_s", "s"),
]


def aggregate(runs: list[dict]) -> dict:
    out = {}
    figures = list(FIGURES)
    for label in runs[0].get("cli", {}):
        for q in ("p50_ms", "p99_ms"):
            figures.append((f"CLI `{label}` {q[:3]} (ms)", f"cli/{label}/{q}", "ms"))
        figures.append((f"CLI `{label}` daemon CPU per call (ms)", f"cli/{label}/daemon_cpu_ms_per_call", "ms"))
    for label, path, unit in figures:
        # `cli/<label>/...`: the label may contain '/', so look it up directly.
        vals = []
        for r in runs:
            if path.startswith("cli/"):
                lab, _, q = path[4:].rpartition("/")
                v = r.get("cli", {}).get(lab, {}).get(q)
            else:
                v = dig(r, path)
            if isinstance(v, (int, float)):
                vals.append(v)
        if vals:
            out[label] = {"median": round(median(vals), 3), "min": min(vals), "max": max(vals),
                          "runs": vals, "unit": unit}
    return out


def verdicts(agg: dict) -> dict:
    v = {}
    for key, label, target in (
        ("grpc_list_p99_ms", "gRPC List p99 (ms)", TARGETS["grpc_list_p99_ms"]),
        ("daemon_rss_mb", "daemon VmRSS steady (MB)", TARGETS["daemon_rss_mb"]),
        ("daemon_rss_mb_after_calls", "daemon VmRSS after all calls (MB)", TARGETS["daemon_rss_mb"]),
        ("daemon_hwm_mb_after_calls", "daemon VmHWM after all calls (MB)", TARGETS["daemon_rss_mb"]),
    ):
        a = agg.get(label)
        if not a:
            continue
        v[key] = {
            "target": target,
            "median": a["median"], "worst": a["max"], "best": a["min"],
            "ratio_median": round(a["median"] / target, 3),
            "ratio_worst": round(a["max"] / target, 3),
            "met_median": a["median"] <= target,
            "met_every_run": a["max"] <= target,
        }
    return v


def table(res: dict) -> str:
    agg = res["aggregate"]
    nr = len(res["runs"])
    out = [f"| figure | median of {nr} runs | min | max |", "|---|---:|---:|---:|"]
    for label, a in agg.items():
        out.append(f"| {label} | {a['median']:g} | {a['min']:g} | {a['max']:g} |")
    out.append("")
    out.append("| target | limit | median | worst run | median / limit | worst / limit | verdict |")
    out.append("|---|---:|---:|---:|---:|---:|---|")
    for k, v in res["verdicts"].items():
        verdict = "met" if v["met_every_run"] else ("met at the median, missed in a run" if v["met_median"] else "MISSED")
        out.append(f"| {k} | {v['target']:g} | {v['median']:g} | {v['worst']:g} | "
                   f"{v['ratio_median']:.2f} | {v['ratio_worst']:.2f} | {verdict} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="supervised processes (default 1000)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="whole runs, each with a fresh daemon; medians are reported (3)")
    ap.add_argument("--pause", type=float, default=5.0, help="seconds between runs (5)")
    ap.add_argument("--quiet-wait", type=float, default=0.0,
                    help="before each run, wait up to this many seconds until no other process "
                         "uses more than 5 %% of a core (0: don't wait)")
    ap.add_argument("--iterations", type=int, default=2000, help="timed gRPC calls of each kind (2000)")
    ap.add_argument("--warmup", type=int, default=100, help="untimed gRPC calls first (100)")
    ap.add_argument("--connect-iterations", type=int, default=200,
                    help="fresh connection + Daemon.Status samples (200)")
    ap.add_argument("--cli-runs", type=int, default=50, help="timed runs of each CLI command (50)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after all running before reading memory")
    ap.add_argument("--boot-timeout", type=float, default=120.0)
    ap.add_argument("--stop-timeout", type=float, default=60.0)
    ap.add_argument("--hangar", default=str(ROOT / "target/release/hangar"))
    ap.add_argument("--status-bench", default=str(ROOT / "target/release/examples/grpc_status_bench"))
    ap.add_argument("--json", default=str(ROOT / "bench/results/daemon.json"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dirs (config, daemon.log)")
    a = ap.parse_args()

    for p, build in ((a.hangar, "cargo build --release -p hangar-cli"),
                     (a.status_bench, "cargo build --release -p hangar-api --example grpc_status_bench")):
        if not os.access(p, os.X_OK):
            print(f"error: {p} is missing; build it with `{build}`", file=sys.stderr)
            return 2
    # hangar-supervisor has an example of the same name that builds to the same
    # path and, given unknown flags, would start 1000 sleeps of its own: check
    # the binary's contents instead of running it.
    with open(a.status_bench, "rb") as f:
        if b"--connect-iterations" not in f.read():
            print(f"error: {a.status_bench} is not the hangar-api status_bench (the hangar-supervisor "
                  "example of the same name was built last); rebuild it with "
                  "`cargo build --release -p hangar-api --example grpc_status_bench`", file=sys.stderr)
            return 2

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    res = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "git": git_state(),
        "binaries": {p: time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(os.stat(p).st_mtime))
                     for p in (a.hangar, a.status_bench)},
        "params": dict(vars(a)),
        "targets": TARGETS,
        "runs": [],
    }
    for i in range(a.repeat):
        if i:
            time.sleep(a.pause)
        if a.quiet_wait > 0:
            t_q = time.monotonic()
            while True:
                busy = busy_processes()
                if not busy:
                    break
                if time.monotonic() - t_q > a.quiet_wait:
                    log(f"machine still busy after {a.quiet_wait} s, measuring anyway: {busy}")
                    break
                log(f"waiting for a quiet machine: {busy}")
                time.sleep(4)
        log(f"run {i + 1} of {a.repeat}")
        res["runs"].append(Bench(a).run())
    res["aggregate"] = aggregate(res["runs"])
    res["verdicts"] = verdicts(res["aggregate"])
    res["leftovers_total"] = sum(r["leftovers"]["count"] for r in res["runs"])
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    m = res["machine"]
    print(f"hangar daemon, N={a.n}, {a.repeat} runs: {m['nproc']} CPU ({m['cpu_model']}), "
          f"Linux {m['kernel']}; git {res['git']['head'][:10]}"
          + (f" + {len(res['git']['dirty_tracked_files'])} modified files" if res["git"]["dirty_tracked_files"] else ""))
    for i, r in enumerate(res["runs"], 1):
        s = r["stop"]
        print(f"run {i}: loadavg {r['loadavg_before']} -> {r['loadavg_after']}, "
              f"steal {r['grpc'].get('steal_pct')} % during gRPC, "
              f"compilers running: {len(r['compilers_running_before'])} before, "
              f"{len(r['compilers_running_after'])} after; other busy processes "
              f"{r['busy_before']} before, {r['busy_after']} after; stop exit code {s['daemon_exit_code']}, "
              f"leftovers {r['leftovers']['count']}")
    print()
    print(table(res))
    print(f"\nJSON: {a.json}")
    return 0 if res["leftovers_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
