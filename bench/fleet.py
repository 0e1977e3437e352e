#!/usr/bin/env python3
"""The fleet: scheduling throughput and failover time with 3 nodes and 300
instances of the demo feature, on a real 3-member etcd cluster (loopback).

Reproduce (from the workspace root; Python 3.11 stdlib only; Debian's etcd):

    cargo build --release -p hangar-cli
    cargo build --release -p hangar-fleet --example assign_floor
    python3 bench/fleet.py            # N=300, lease_ttl 5s, grace 5s

What it does:

1. starts a 3-member etcd cluster on loopback ports it picks, and three
   `hangar serve` nodes (release build), each with its own data dir, port
   range (400 ports) and `[daemon.fleet]` (all three endpoints);
2. the floor for scheduling: `assign_floor` (crates/fleet/examples) writes N
   assignments with the scheduler's own guarded transaction
   (`write_guarded`), in batches of MAX_BATCH as the scheduler does, and
   nothing else (no reads, no planning, no instances starting); also one
   move per transaction, for reference;
3. scheduling throughput: writes N wants into etcd at once (the JSON
   `hangar fleet create` stores, in transactions of 100 keys through etcd's
   JSON gateway), then polls the count of assignment keys every 5 ms: N /
   (time until all N are assigned) is the scheduler's throughput, planning
   and reading included; the ratio is against the floor;
4. placement to running: time until `hangar fleet ls --json` shows all N
   running (each node installs the demo once, then creates its instances);
   the spread per node;
5. failover: `kill -9` of one node; time until every instance it ran is
   running on the other two (`fleet ls`), and until each runs there in
   /proc; the floor is lease_ttl + grace (etcd expires the lease, the
   scheduler waits out the grace), the rest is the creates;
6. the daemons' RSS before and after, etcd's database size;
7. cleanup: SIGTERM then SIGKILL every node and etcd member, every process
   carrying this run's marker.

Writes bench/results/fleet.json and prints a table.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANGAR = os.path.join(ROOT, "target", "release", "hangar")
FLOOR = os.path.join(ROOT, "target", "release", "examples", "assign_floor")
MARK = "HANGAR_FLEET_BENCH"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def prefix_end(p: str) -> str:
    return p[:-1] + chr(ord(p[-1]) + 1)


def count(port: int, prefix: str) -> int:
    r = post(port, "/v3/kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix)), "count_only": True})
    return int(r.get("count", 0))


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fleet_ls(data: str) -> list[dict]:
    o = subprocess.run([HANGAR, "--data-dir", data, "fleet", "ls", "--json"], capture_output=True, text=True)
    if o.returncode != 0:
        return []
    return json.loads(o.stdout)


def running_in_proc(datas: dict[str, str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        name = next((e[len(b"HANGAR_INSTANCE_NAME="):].decode() for e in env if e.startswith(b"HANGAR_INSTANCE_NAME=")), None)
        if name is None:
            continue
        for node, d in datas.items():
            if cwd.startswith(d + "/"):
                out.setdefault(name, set()).add(node)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--ttl", type=int, default=5)
    ap.add_argument("--grace", type=int, default=5)
    ap.add_argument("--floor-runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) and print it")
    ap.add_argument("--no-failover", action="store_true", help="stop after placement")
    args = ap.parse_args()
    etcd = shutil.which("etcd")
    for p in (HANGAR, FLOOR):
        if not os.path.exists(p):
            print(f"missing {p}: build it first (see the docstring)", file=sys.stderr)
            return 2
    if not etcd:
        print("no etcd on PATH (Debian: apt install etcd-server)", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="hangar-fleet-bench-")
    procs: list[subprocess.Popen] = []
    env = dict(os.environ, **{MARK: tmp})
    for k in ("HANGAR_DATA_DIR", "HANGAR_ADDR", "HANGAR_TOKEN", "HANGAR_CATALOG"):
        env.pop(k, None)
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "load_before": os.getloadavg()},
        "n": args.n,
        "lease_ttl_s": args.ttl,
        "grace_s": args.grace,
    }
    try:
        clients = [free_port() for _ in range(3)]
        peers = [free_port() for _ in range(3)]
        cluster = ",".join(f"m{i}=http://127.0.0.1:{peers[i]}" for i in range(3))
        for i in range(3):
            log = open(os.path.join(tmp, f"etcd-m{i}.log"), "w")
            procs.append(subprocess.Popen([
                etcd, "--name", f"m{i}", "--data-dir", os.path.join(tmp, f"m{i}"),
                "--listen-client-urls", f"http://127.0.0.1:{clients[i]}",
                "--advertise-client-urls", f"http://127.0.0.1:{clients[i]}",
                "--listen-peer-urls", f"http://127.0.0.1:{peers[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peers[i]}",
                "--initial-cluster", cluster, "--initial-cluster-token", tmp,
                "--initial-cluster-state", "new",
            ], stdout=subprocess.DEVNULL, stderr=log, env=env))
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if all(post(p, "/v3/maintenance/status", {}).get("leader", "0") != "0" for p in clients):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        eps = ", ".join(f'"http://127.0.0.1:{p}"' for p in clients)

        # The floor: the scheduler's write, N in a row, nothing else.
        floors, singles = [], []
        for _ in range(args.floor_runs):
            o = subprocess.run([FLOOR, f"http://127.0.0.1:{clients[0]}", str(args.n)], capture_output=True, text=True, check=True)
            f = json.loads(o.stdout)
            floors.append(f["per_second"])
            singles.append(f["per_second_one_by_one"])
        result["floor_assignments_per_s"] = floors
        result["floor_one_by_one_per_s"] = singles

        nodes = {}
        for i, name in enumerate("abc"):
            data = os.path.join(tmp, f"node-{name}")
            lo = 30000 + i * 400
            cfg = os.path.join(tmp, f"{name}.toml")
            with open(cfg, "w") as f:
                f.write(f'[daemon]\nhttp = ""\nport_range = "{lo}-{lo + 399}"\n\n'
                        f'[daemon.fleet]\nendpoints = [{eps}]\nnode = "{name}"\n'
                        f'lease_ttl = "{args.ttl}s"\ngrace = "{args.grace}s"\n')
            log = open(os.path.join(tmp, f"node-{name}.log"), "w")
            p = subprocess.Popen([HANGAR, "--data-dir", data, "serve", "-c", cfg], stdout=subprocess.DEVNULL, stderr=log, env=env, start_new_session=True)
            procs.append(p)
            nodes[name] = (data, p)
        deadline = time.time() + 60
        while time.time() < deadline:
            o = subprocess.run([HANGAR, "--data-dir", nodes["a"][0], "fleet", "nodes", "--json"], capture_output=True, text=True)
            if o.returncode == 0 and sum(1 for n in json.loads(o.stdout) if n["alive"]) == 3:
                break
            time.sleep(0.1)
        result["rss_kb_idle"] = {n: rss_kb(p.pid) for n, (_, p) in nodes.items()}

        # Scheduling: N wants at once, then count assignments.
        prefix = "/hangar/fleet/"
        now_ms = int(time.time() * 1000)
        wants = [{"name": f"d{i:04}", "feature": "demo", "mode": None, "options": {}, "on": {}, "created_ms": now_ms} for i in range(args.n)]
        t0 = time.monotonic()
        for k in range(0, args.n, 100):
            post(clients[0], "/v3/kv/txn", {"success": [
                {"requestPut": {"key": b64(f"{prefix}desired/{w['name']}"), "value": b64(json.dumps(w))}} for w in wants[k:k + 100]
            ]})
        t_written = time.monotonic() - t0
        while count(clients[0], prefix + "assign/") < args.n:
            time.sleep(0.005)
        t_assigned = time.monotonic() - t0
        result["wants_written_s"] = t_written
        result["all_assigned_s"] = t_assigned
        result["scheduler_assignments_per_s"] = args.n / t_assigned
        result["ratio_to_floor"] = result["scheduler_assignments_per_s"] / statistics.median(floors)

        while True:
            ls = fleet_ls(nodes["a"][0])
            if len(ls) == args.n and all(i["state"] == "running" for i in ls):
                break
            if time.monotonic() - t0 > 900:
                raise RuntimeError("not all running after 900 s")
            time.sleep(0.2)
        result["all_running_s"] = time.monotonic() - t0
        spread: dict[str, int] = {}
        for i in ls:
            spread[i["node"]] = spread.get(i["node"], 0) + 1
        result["spread"] = spread
        result["rss_kb_running"] = {n: rss_kb(p.pid) for n, (_, p) in nodes.items()}

        if args.no_failover:
            return 0
        # Failover: kill -9 node c.
        on_c = {i["name"] for i in ls if i["node"] == "c"}
        t0 = time.monotonic()
        os.kill(nodes["c"][1].pid, signal.SIGKILL)
        nodes["c"][1].wait()
        t_ls = t_proc = None
        datas = {n: d for n, (d, _) in nodes.items() if n != "c"}
        while t_ls is None or t_proc is None:
            if t_proc is None:
                procs_now = running_in_proc(datas)
                if all(n in procs_now for n in on_c):
                    t_proc = time.monotonic() - t0
            if t_ls is None:
                ls = fleet_ls(nodes["a"][0])
                moved = {i["name"]: i for i in ls if i["name"] in on_c}
                if len(moved) == len(on_c) and all(i["state"] == "running" and i["node"] != "c" for i in moved.values()):
                    t_ls = time.monotonic() - t0
            if time.monotonic() - t0 > 600:
                raise RuntimeError("failover did not finish in 600 s")
            time.sleep(0.05)
        result["failover_instances"] = len(on_c)
        result["failover_in_proc_s"] = t_proc
        result["failover_all_running_s"] = t_ls
        result["failover_floor_s"] = args.ttl + args.grace
        result["failover_ratio"] = t_ls / (args.ttl + args.grace)
        result["rss_kb_after_failover"] = {n: rss_kb(p.pid) for n, (_, p) in nodes.items() if n != "c"}
        db = os.path.join(tmp, "m0", "member", "snap", "db")
        result["etcd_db_bytes"] = os.path.getsize(db) if os.path.exists(db) else None
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        if f"{MARK}={tmp}".encode() in f.read():
                            os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_after"] = os.getloadavg()
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "fleet.json"), "w") as f:
        json.dump(result, f, indent=2)
    fl = statistics.median(result["floor_assignments_per_s"])
    print(f"N={args.n} instances of demo, 3 nodes, 3 etcd members, lease_ttl {args.ttl}s, grace {args.grace}s")
    print(f"floor (write_guarded, batches)     {fl:10.0f} assignments/s  (runs: {', '.join(f'{x:.0f}' for x in result['floor_assignments_per_s'])}; one per transaction: {statistics.median(result['floor_one_by_one_per_s']):.0f}/s)")
    print(f"scheduler, all {args.n} assigned        {result['scheduler_assignments_per_s']:10.0f} assignments/s  ({result['all_assigned_s']:.3f} s; ratio to floor {result['ratio_to_floor']:.2f})")
    print(f"all {args.n} running                  {result['all_running_s']:10.1f} s  spread {result['spread']}")
    print(f"failover of {result['failover_instances']} (kill -9 c)        {result['failover_all_running_s']:10.2f} s running in fleet ls ({result['failover_in_proc_s']:.2f} s in /proc); floor ttl+grace {result['failover_floor_s']} s, ratio {result['failover_ratio']:.2f}")
    print(f"daemon RSS idle / {args.n // 3} each / after   {result['rss_kb_idle']} / {result['rss_kb_running']} / {result['rss_kb_after_failover']} kB")
    print(f"etcd db                             {result['etcd_db_bytes']} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
