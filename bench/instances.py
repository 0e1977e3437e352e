#!/usr/bin/env python3
"""1,000 instances of the bundled demo feature through one daemon: create
until all run, `instance ls` at that size, delete, and nothing left behind.

Reproduce (from the workspace root, as root; Python 3 stdlib only; the demo
needs python3, which this script runs under):

    cargo build --release -p hangar-cli
    python3 bench/instances.py                 # N=1000, 8 CLI creates at a time
    python3 bench/instances.py --n 100 --ls-runs 10   # a quick look

What it does:

1. starts `hangar serve` (release build, `--hangar` to pick another) on a
   temporary data dir, HTTP listener off, port range 20000-29999;
2. baselines in the same run: wall time of `hangar --version` (process start,
   no daemon) and `hangar ps --json` (a round trip to the daemon, nothing to
   list), `--ls-runs` times each; `instance ls` with no instance;
3. `hangar install demo` (untimed in the create figure, reported apart);
4. creates N demo instances with `hangar instance create demo dNNNN`, at most
   `--jobs` at a time (each CLI waits until its instance runs and its probe
   passes); create-to-all-running is from the first create to
   `instance ls --json` showing all N `running`;
5. at N: daemon VmRSS and RssAnon, the store's size (`hangar.db` + `-wal` +
   `-shm`), the demo processes' count and their memory (RSS and PSS from
   `smaps_rollup`, so the shared python3 pages count once), the free memory;
6. `hangar instance ls` and `hangar instance ls --json`, `--ls-runs` runs each
   (wall time of the CLI, p50 / p99), interleaved with the two baselines
   again at N so that each ratio compares like with like;
7. deletes all N (`--jobs` at a time), timed, then checks that nothing is
   left: no process carrying the data dir, no cgroup under
   /sys/fs/cgroup/*/hangar* but the (empty) group itself (the count
   at N is reported too, to show the check sees them), no network
   namespace more than before, no listener in the port range, no instance
   directory in the data dir, no instance row in the store;
8. stops the daemon (SIGTERM), and SIGKILLs anything still carrying this
   run's marker.

Writes bench/results/instances-scale.json and prints a summary.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import glob
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import shutil
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "HANGAR_INSTANCES_BENCH"
PORTS = (20000, 29999)


def pct(v: list[float], p: float) -> float:
    s = sorted(v)
    i = max(1, min(len(s), int(-(-p / 100 * len(s) // 1))))
    return s[i - 1]


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("MemTotal", "MemFree", "MemAvailable"):
                out[k] = int(v.split()[0])
    return out


def marked_pids(tmp: str, exclude: set[int]) -> list[int]:
    """Processes carrying this run's marker in their environment (the daemon
    and everything it started), or running from under the data dir."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) in exclude:
            continue
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        try:
            cwd = os.readlink(f"/proc/{p}/cwd")
        except OSError:
            cwd = ""
        if f"{MARK}={tmp}".encode() in env or cwd.startswith(tmp + "/"):
            out.append(int(p))
    return out


def smaps(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss", "Pss_Anon"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def listeners_in_range() -> int:
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    port = int(cols[1].rsplit(":", 1)[1], 16)
                    if cols[3] == "0A" and PORTS[0] <= port <= PORTS[1]:
                        n += 1
        except OSError:
            pass
    return n


def netns_count() -> int:
    try:
        return len(os.listdir("/run/netns"))
    except OSError:
        return 0


def cgroup_leftovers() -> list[str]:
    """Directories below any hangar-* group (the group itself may stay while
    its daemon runs)."""
    out = []
    for g in glob.glob("/sys/fs/cgroup/hangar*") + glob.glob("/sys/fs/cgroup/*/hangar*"):
        for dirpath, dirnames, _ in os.walk(g):
            out.extend(os.path.join(dirpath, d) for d in dirnames)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=8, help="creates (and deletes) in flight at once")
    ap.add_argument("--ls-runs", type=int, default=30)
    ap.add_argument("--hangar", default=os.path.join(ROOT, "target", "release", "hangar"))
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "instances-scale.json"))
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (daemon log) and print it")
    ap.add_argument("--hold", type=float, default=0, help="at N, before the ls timings, wait this many seconds (print the data dir and daemon pid, to profile)")
    args = ap.parse_args()
    # SIGTERM (and SIGINT, also when started in the background) unwind
    # through the cleanup below instead of leaving the daemon running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    hangar = args.hangar
    if not os.path.exists(hangar):
        print(f"missing {hangar}: build it first (see the docstring)", file=sys.stderr)
        return 2
    mem0 = meminfo()
    # ~13 MB of memory per demo (python3 -m http.server) measured; ask for 16.
    need_kb = args.n * 16 * 1024
    if mem0["MemAvailable"] < need_kb:
        print(f"only {mem0['MemAvailable'] // 1024} MB available; {args.n} demos want ~{need_kb // 1024} MB", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="hangar-instances-bench-")
    data = os.path.join(tmp, "data")
    cfg = os.path.join(tmp, "hangar.toml")
    with open(cfg, "w") as f:
        f.write(f'[daemon]\nhttp = ""\nport_range = "{PORTS[0]}-{PORTS[1]}"\n')
    env = dict(os.environ, **{MARK: tmp})
    for k in ("HANGAR_DATA_DIR", "HANGAR_ADDR", "HANGAR_TOKEN", "HANGAR_CATALOG"):
        env.pop(k, None)

    def cli(*a: str, check: bool = True) -> subprocess.CompletedProcess:
        o = subprocess.run([hangar, "--data-dir", data, *a], capture_output=True, text=True, env=env)
        if check and o.returncode != 0:
            raise RuntimeError(f"hangar {' '.join(a)}: exit {o.returncode}: {o.stderr.strip()[:500]}")
        return o

    def timed(*a: str) -> float:
        t = time.perf_counter()
        cli(*a)
        return (time.perf_counter() - t) * 1e3

    def ls() -> list[dict]:
        return json.loads(cli("instance", "ls", "--json").stdout)

    def series(runs: int, cmds: dict[str, tuple[str, ...]]) -> dict[str, dict]:
        """Each command `runs` times, interleaved, after one untimed run each."""
        ts: dict[str, list[float]] = {k: [] for k in cmds}
        for a in cmds.values():
            timed(*a)
        for _ in range(runs):
            for k, a in cmds.items():
                ts[k].append(timed(*a))
        return {k: {"p50_ms": statistics.median(v), "p99_ms": pct(v, 99), "min_ms": min(v), "max_ms": max(v), "runs": len(v)} for k, v in ts.items()}

    result: dict = {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "load_before": os.getloadavg(),
                    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "n": args.n,
        "jobs": args.jobs,
        "mem_before_kb": mem0,
        "netns_before": netns_count(),
        "listeners_before": listeners_in_range(),
    }
    log = open(os.path.join(tmp, "daemon.log"), "w")
    daemon = subprocess.Popen([hangar, "--data-dir", data, "serve", "-c", cfg], stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        deadline = time.time() + 60
        while cli("ps", "--json", check=False).returncode != 0:
            if time.time() > deadline or daemon.poll() is not None:
                raise RuntimeError("the daemon did not answer in 60 s")
            time.sleep(0.1)
        result["daemon_idle"] = status_kb(daemon.pid)
        exe = ("--version",)
        result["baseline_empty"] = series(args.ls_runs, {"version": exe, "ps_json": ("ps", "--json"), "instance_ls": ("instance", "ls"), "instance_ls_json": ("instance", "ls", "--json")})

        t = time.perf_counter()
        cli("install", "demo")
        result["install_s"] = time.perf_counter() - t

        print(f"creating {args.n} demo instances, {args.jobs} at a time…", file=sys.stderr)
        create_ms: list[float] = []
        failed: list[str] = []

        def create(i: int) -> tuple[str, float, str]:
            name = f"d{i:04}"
            t = time.perf_counter()
            o = cli("instance", "create", "demo", name, check=False)
            return name, (time.perf_counter() - t) * 1e3, "" if o.returncode == 0 else o.stderr.strip()[:300]

        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(args.jobs) as ex:
            for name, ms, err in ex.map(create, range(args.n)):
                create_ms.append(ms)
                if err:
                    failed.append(f"{name}: {err}")
        t_returned = time.perf_counter() - t0
        while True:
            cur = ls()
            running = sum(1 for i in cur if i.get("state") == "running")
            if running == args.n:
                break
            if time.perf_counter() - t0 > 1800:
                raise RuntimeError(f"only {running} of {args.n} running after 1800 s; failed: {failed[:5]}")
            time.sleep(0.5)
        t_all = time.perf_counter() - t0
        result["create"] = {
            "all_returned_s": t_returned,
            "all_running_s": t_all,
            "per_s": args.n / t_all,
            "cli_create_ms": {"p50": statistics.median(create_ms), "p99": pct(create_ms, 99), "max": max(create_ms)},
            "failed": failed[:20],
            "failed_count": len(failed),
        }
        print(f"all {args.n} running after {t_all:.1f} s", file=sys.stderr)
        time.sleep(2)
        result["daemon_at_n"] = status_kb(daemon.pid)
        store = {s: os.path.getsize(os.path.join(data, "hangar.db" + s)) for s in ("", "-wal", "-shm") if os.path.exists(os.path.join(data, "hangar.db" + s))}
        result["store_bytes_at_n"] = store
        demos = [p for p in marked_pids(tmp, {daemon.pid, os.getpid()})]
        mem = [smaps(p) for p in demos]
        result["demo_processes"] = {
            "count": len(demos),
            "rss_kb_each_median": statistics.median([m.get("Rss", 0) for m in mem]) if mem else 0,
            "pss_kb_total": sum(m.get("Pss", 0) for m in mem),
            "pss_kb_each": sum(m.get("Pss", 0) for m in mem) / max(1, args.n),
        }
        result["cgroup_dirs_at_n"] = len(cgroup_leftovers())
        result["mem_at_n_kb"] = meminfo()
        result["mem_used_per_instance_kb"] = (mem0["MemAvailable"] - result["mem_at_n_kb"]["MemAvailable"]) / args.n

        if args.hold:
            print(f"holding {args.hold} s: --data-dir {data}, daemon pid {daemon.pid}", file=sys.stderr, flush=True)
            time.sleep(args.hold)
        print(f"timing instance ls ×{args.ls_runs}…", file=sys.stderr)
        result["at_n"] = series(args.ls_runs, {"version": exe, "ps_json": ("ps", "--json"), "instance_ls": ("instance", "ls"), "instance_ls_json": ("instance", "ls", "--json")})
        a = result["at_n"]
        result["ratios_at_n"] = {
            "instance_ls_p50_over_version": a["instance_ls"]["p50_ms"] / a["version"]["p50_ms"],
            "instance_ls_p50_over_ps_json": a["instance_ls"]["p50_ms"] / a["ps_json"]["p50_ms"],
            "instance_ls_json_p50_over_ps_json": a["instance_ls_json"]["p50_ms"] / a["ps_json"]["p50_ms"],
        }
        result["instance_ls_target_ms"] = 50
        result["instance_ls_met"] = max(a["instance_ls"]["p99_ms"], a["instance_ls_json"]["p99_ms"]) <= 50

        print(f"deleting {args.n}…", file=sys.stderr)
        names = [i["name"] for i in ls()]
        del_failed: list[str] = []

        def delete(name: str) -> str:
            o = cli("instance", "delete", name, check=False)
            return "" if o.returncode == 0 else f"{name}: {o.stderr.strip()[:300]}"

        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(args.jobs) as ex:
            del_failed = [e for e in ex.map(delete, names) if e]
        t_del = time.perf_counter() - t0
        left = ls()
        # Processes end asynchronously only if delete returned early: wait a bit, and say how long.
        t1 = time.perf_counter()
        while marked_pids(tmp, {daemon.pid, os.getpid()}) and time.perf_counter() - t1 < 30:
            time.sleep(0.1)
        inst_dirs = [p for p in glob.glob(os.path.join(data, "instances", "*"))]
        rows = None
        try:
            c = sqlite3.connect(f"file:{os.path.join(data, 'hangar.db')}?mode=ro", uri=True)
            rows = c.execute("SELECT count(*) FROM instances").fetchone()[0]
            result["event_rows_at_end"] = c.execute("SELECT count(*) FROM events").fetchone()[0]
            c.close()
        except sqlite3.Error as e:
            rows = f"unreadable: {e}"
        result["delete"] = {
            "all_s": t_del,
            "per_s": len(names) / t_del if t_del else None,
            "failed": del_failed[:20],
            "failed_count": len(del_failed),
            "waited_for_processes_s": time.perf_counter() - t1,
        }
        result["left_behind"] = {
            "instances_listed": len(left),
            "processes": len(marked_pids(tmp, {daemon.pid, os.getpid()})),
            "cgroup_dirs": cgroup_leftovers()[:20],
            "netns_more_than_before": netns_count() - result["netns_before"],
            "listeners_in_port_range_more_than_before": listeners_in_range() - result["listeners_before"],
            "instance_dirs": inst_dirs[:20],
            "instance_rows": rows,
        }
        result["daemon_after_delete"] = status_kb(daemon.pid)
        result["store_bytes_after_delete"] = {s: os.path.getsize(os.path.join(data, "hangar.db" + s)) for s in ("", "-wal", "-shm") if os.path.exists(os.path.join(data, "hangar.db" + s))}
        result["data_dir_entries_after_delete"] = sorted(os.listdir(data))
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=120)
            except subprocess.TimeoutExpired:
                daemon.kill()
        for p in marked_pids(tmp, {os.getpid()}):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_after"] = os.getloadavg()
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    a, b = result["at_n"], result["baseline_empty"]
    lb = result["left_behind"]
    print(f"N={args.n} demo instances, {args.jobs} creates at a time")
    print(f"install demo                 {result['install_s']:.2f} s")
    print(f"create to all running        {result['create']['all_running_s']:.1f} s ({result['create']['per_s']:.1f}/s; CLI create p50 {result['create']['cli_create_ms']['p50']:.0f} ms; failed {result['create']['failed_count']})")
    print(f"daemon RSS idle / at N / after delete   {result['daemon_idle'].get('VmRSS')} / {result['daemon_at_n'].get('VmRSS')} / {result['daemon_after_delete'].get('VmRSS')} kB (RssAnon {result['daemon_idle'].get('RssAnon')} / {result['daemon_at_n'].get('RssAnon')} / {result['daemon_after_delete'].get('RssAnon')})")
    print(f"store at N                   {result['store_bytes_at_n']}")
    print(f"demo processes               {result['demo_processes']['count']}, RSS {result['demo_processes']['rss_kb_each_median']} kB each, PSS {result['demo_processes']['pss_kb_each']:.0f} kB each; MemAvailable down {result['mem_used_per_instance_kb']:.0f} kB per instance")
    for k in ("version", "ps_json", "instance_ls", "instance_ls_json"):
        print(f"{k:<18} empty p50/p99 {b[k]['p50_ms']:6.1f} / {b[k]['p99_ms']:6.1f} ms   at N {a[k]['p50_ms']:6.1f} / {a[k]['p99_ms']:6.1f} ms")
    print(f"ratios at N                  {json.dumps({k: round(v, 2) for k, v in result['ratios_at_n'].items()})}")
    print(f"instance ls <= 50 ms at N    {'met' if result['instance_ls_met'] else 'MISSED'}")
    print(f"delete all                   {result['delete']['all_s']:.1f} s ({result['delete']['per_s']:.1f}/s; failed {result['delete']['failed_count']})")
    print(f"left behind                  {json.dumps(lb)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
