#!/usr/bin/env python3
"""The GraphQL API against gRPC with N supervised `sleep 100000`: list latency,
event latency to a subscription frame, and 100 subscribers losing nothing.

Reproduce (from the workspace root; Python 3.11 stdlib only, the clients are
a Rust example so that client overhead does not dominate):

    cargo build --release -p hangar-cli
    cargo build --release -p hangar-api --example graphql_bench
    python3 bench/graphql.py
    # N=1000, 3 runs (a fresh daemon each); see --help for the knobs

What it does, in each run (one daemon):

1. writes a config (`[daemon] http = "127.0.0.1:PORT"` on a free port, one
   `[[process]]` `sleep 100000` named `s` with `instances = N`, everything
   else default) into a fresh temp dir and starts
   `hangar --data-dir D serve -c CONFIG` in its own session; waits for the
   control socket and `D/api.token`;
2. **query**: `graphql_bench query` (crates/api/examples/graphql_bench.rs):
   one HTTP/1.1 keep-alive connection to `POST /graphql` with
   `{ processes { name state pid restarts health ports { name port } } }`
   (the fields gRPC `Processes.List` returns) and one gRPC connection for
   `Processes.List` (all N), --warmup untimed then --iterations timed calls of
   each, strictly alternating, so both see the same machine load. Target:
   GraphQL p99 <= 2 x gRPC p99.
3. **latency**: `graphql_bench events --subscribers 1`: one
   `graphql-transport-ws` subscription to
   `events(kinds: ["state"]) { id atMs name kind to }`, then gRPC
   `Processes.Restart` of one process (`s-1`) --latency-restarts times,
   --latency-pause-ms apart (each restart is 3 state transitions); per frame,
   receive time minus the event's `atMs` (the supervisor's stamp, same clock;
   truncated to ms, so up to 1 ms is added). Target: p99 <= 5 ms.
4. **fan-out**: `graphql_bench events --subscribers 100`: 100 such
   subscriptions, then one `Processes.Restart` of 's-[12]??' (200 processes,
   a burst of 600 state events); every subscriber must receive every
   stored `state` event after the burst started (ids compared with
   `Events.History`, the store `hangar events --json` reads). Target: 0 lost.
   Reports the latency over all frames and its spread.
5. SIGTERM, wait; cleanup as bench/daemon.py (anything carrying this run's
   HANGAR_SUPERVISOR_ID or the harness marker is killed and counted).

The daemon's CPU time (schedstat, all threads) is read around each step.
Writes bench/results/graphql.json (every run, medians over runs, the
machine's load before and after each run) and prints a table with the
targets and ratios measured/target.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import shutil
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon import (  # noqa: E402  (bench/daemon.py: the shared /proc helpers)
    MARKER_ENV, busy_compilers, busy_processes, comm, cpu_ticks, git_state, loadavg,
    machine, marked_pids, median, memory, schedstat_ns,
)

ROOT = Path(__file__).resolve().parent.parent

TARGETS = {
    "graphql_list_p99_over_grpc_p99": 2.0,
    "event_latency_p99_ms": 5.0,
    "lost_events_100_subscribers": 0,
}


def log(msg: str) -> None:
    print(f"[graphql.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.tmp = Path(tempfile.mkdtemp(prefix="hangar-graphql-bench-"))
        self.data = self.tmp / "data"
        self.config = self.tmp / "hangar.toml"
        self.daemon_log = self.tmp / "daemon.log"
        self.marker = self.tmp.name
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.supervisor_id: str | None = None
        self.res: dict = {}

    def hangar(self, *args: str) -> list[str]:
        return [self.a.hangar, "--data-dir", str(self.data), *args]

    def start(self) -> None:
        self.config.write_text(
            "[daemon]\n"
            f'http = "127.0.0.1:{self.port}"\n\n'
            "[[process]]\n"
            'name = "s"\n'
            'command = "sleep"\n'
            'args = ["100000"]\n'
            f"instances = {self.a.n}\n"
        )
        env = dict(os.environ)
        env[MARKER_ENV] = self.marker
        env.setdefault("HANGAR_LOG", "info")
        log(f"starting the daemon with {self.a.n} processes in {self.tmp}, HTTP on {self.port}")
        self.logf = open(self.daemon_log, "wb")
        self.proc = subprocess.Popen(
            self.hangar("serve", "-c", str(self.config)),
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.a.boot_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.proc.returncode}; see {self.daemon_log}")
            if (self.data / "api.token").exists() and (self.data / "hangar.sock").exists():
                r = subprocess.run(self.hangar("status", "--json"), capture_output=True, timeout=30)
                if r.returncode == 0:
                    self.supervisor_id = json.loads(r.stdout).get("supervisor_id")
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("the daemon's socket and token did not appear")

    def bench(self, step: str, *args: str) -> dict:
        cmd = [self.a.bench, *args, "--socket", str(self.data / "hangar.sock"),
               "--http", f"127.0.0.1:{self.port}", "--token-file", str(self.data / "api.token"),
               "--expect", str(self.a.n)]
        log(f"{step}: " + " ".join(cmd))
        c0, j0, t0 = schedstat_ns(self.proc.pid), cpu_ticks(), time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        c1, j1, wall = schedstat_ns(self.proc.pid), cpu_ticks(), time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"{step}: graphql_bench failed ({r.returncode}): {r.stderr.strip()}")
        out = json.loads(r.stdout)
        out["command"] = " ".join(cmd)
        out["wall_s"] = round(wall, 2)
        out["daemon_cpu_ms"] = round((c1 - c0) / 1e6, 1)
        out["steal_pct"] = round(100.0 * (j1[1] - j0[1]) / max(1, j1[0] - j0[0]), 2)
        out["loadavg_after"] = loadavg()
        return out

    def stop(self) -> None:
        t0 = time.monotonic()
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.a.stop_timeout)
        except subprocess.TimeoutExpired:
            pass
        self.res["stop"] = {"daemon_exit_code": self.proc.returncode,
                            "daemon_exited_s": round(time.monotonic() - t0, 3)}

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            log("daemon still running at cleanup: SIGKILL to its process group")
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        time.sleep(0.3)
        left = marked_pids(self.supervisor_id, self.marker)
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if left:
            log(f"LEFTOVERS killed: {len(left)} processes of this run were still alive")
        self.res["leftovers"] = {"count": len(left), "processes": [f"{p}:{comm(p)}" for p in left]}
        try:
            self.logf.close()
        except AttributeError:
            pass
        if self.a.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self) -> dict:
        a = self.a
        self.res = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "loadavg_before": loadavg(),
            "compilers_running_before": busy_compilers(),
            "busy_before": busy_processes(),
        }
        try:
            self.start()
            self.res["query"] = self.bench(
                "query", "query", "--iterations", str(a.iterations), "--warmup", str(a.warmup))
            q = self.res["query"]
            log(f"query: GraphQL p50 {q['graphql']['latency']['p50_ms']} p99 {q['graphql']['latency']['p99_ms']} ms, "
                f"gRPC p50 {q['grpc']['latency']['p50_ms']} p99 {q['grpc']['latency']['p99_ms']} ms, "
                f"ratio p99 {q['ratio_graphql_over_grpc']['p99']}")
            self.res["latency"] = self.bench(
                "latency", "events", "--subscribers", "1", "--restart", a.latency_restart,
                "--bursts", str(a.latency_restarts), "--pause-ms", str(a.latency_pause_ms))
            lt = self.res["latency"]
            log(f"latency: {lt['latency'].get('n')} frames, p50 {lt['latency'].get('p50_ms')} "
                f"p99 {lt['latency'].get('p99_ms')} ms, lost {lt['lost_events']}")
            self.res["fanout"] = self.bench(
                "fan-out", "events", "--subscribers", str(a.subscribers), "--restart", a.burst_pattern,
                "--bursts", "1")
            f = self.res["fanout"]
            log(f"fan-out: {f['stored_events']} events x {f['subscribers']} subscribers, lost {f['lost_events']}, "
                f"p50 {f['latency'].get('p50_ms')} p99 {f['latency'].get('p99_ms')} ms, "
                f"spread p99 {f['per_event_spread'].get('p99_ms')} ms")
            self.res["memory_after"] = memory(self.proc.pid)
            self.stop()
        finally:
            self.cleanup()
        self.res["loadavg_after"] = loadavg()
        self.res["busy_after"] = busy_processes()
        return self.res


FIGURES = [
    ("GraphQL processes p50 (ms)", "query/graphql/latency/p50_ms"),
    ("GraphQL processes p99 (ms)", "query/graphql/latency/p99_ms"),
    ("gRPC List p50 (ms)", "query/grpc/latency/p50_ms"),
    ("gRPC List p99 (ms)", "query/grpc/latency/p99_ms"),
    ("GraphQL / gRPC p50", "query/ratio_graphql_over_grpc/p50"),
    ("GraphQL / gRPC p99", "query/ratio_graphql_over_grpc/p99"),
    ("GraphQL reply bytes", "query/graphql/response_bytes"),
    ("gRPC reply bytes", "query/grpc/response_bytes"),
    ("daemon CPU, query step (ms)", "query/daemon_cpu_ms"),
    ("1 subscriber: frames", "latency/latency/n"),
    ("1 subscriber: event latency p50 (ms)", "latency/latency/p50_ms"),
    ("1 subscriber: event latency p99 (ms)", "latency/latency/p99_ms"),
    ("1 subscriber: event latency max (ms)", "latency/latency/max_ms"),
    ("1 subscriber: lost", "latency/lost_events"),
    ("100 subscribers: events in the burst", "fanout/stored_events"),
    ("100 subscribers: lost (summed)", "fanout/lost_events"),
    ("100 subscribers: duplicate frames", "fanout/duplicate_frames"),
    ("100 subscribers: latency p50 (ms)", "fanout/latency/p50_ms"),
    ("100 subscribers: latency p99 (ms)", "fanout/latency/p99_ms"),
    ("100 subscribers: latency max (ms)", "fanout/latency/max_ms"),
    ("100 subscribers: per-subscriber p99, min (ms)", "fanout/per_subscriber_p99/min_ms"),
    ("100 subscribers: per-subscriber p99, max (ms)", "fanout/per_subscriber_p99/max_ms"),
    ("100 subscribers: per-event spread p50 (ms)", "fanout/per_event_spread/p50_ms"),
    ("100 subscribers: per-event spread p99 (ms)", "fanout/per_event_spread/p99_ms"),
    ("daemon CPU, fan-out step (ms)", "fanout/daemon_cpu_ms"),
]


def dig(d, path: str):
    for k in path.split("/"):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def aggregate(runs: list[dict]) -> dict:
    out = {}
    for label, path in FIGURES:
        vals = [v for v in (dig(r, path) for r in runs) if isinstance(v, (int, float))]
        if vals:
            out[label] = {"median": round(median(vals), 3), "min": min(vals), "max": max(vals), "runs": vals}
    return out


def verdicts(agg: dict) -> dict:
    v = {}
    for key, label in (("graphql_list_p99_over_grpc_p99", "GraphQL / gRPC p99"),
                       ("event_latency_p99_ms", "1 subscriber: event latency p99 (ms)"),
                       ("lost_events_100_subscribers", "100 subscribers: lost (summed)")):
        a = agg.get(label)
        if not a:
            continue
        t = TARGETS[key]
        v[key] = {"target": t, "median": a["median"], "worst": a["max"],
                  "ratio_median": round(a["median"] / t, 3) if t else None,
                  "ratio_worst": round(a["max"] / t, 3) if t else None,
                  "met_median": a["median"] <= t, "met_every_run": a["max"] <= t}
    return v


def table(res: dict) -> str:
    nr = len(res["runs"])
    out = [f"| figure | median of {nr} runs | min | max |", "|---|---:|---:|---:|"]
    for label, a in res["aggregate"].items():
        out.append(f"| {label} | {a['median']:g} | {a['min']:g} | {a['max']:g} |")
    out += ["", "| target | limit | median | worst run | median / limit | verdict |",
            "|---|---:|---:|---:|---:|---|"]
    for k, v in res["verdicts"].items():
        verdict = "met" if v["met_every_run"] else (
            "met at the median, missed in a run" if v["met_median"] else "MISSED")
        ratio = f"{v['ratio_median']:.2f}" if v["ratio_median"] is not None else "-"
        out.append(f"| {k} | {v['target']:g} | {v['median']:g} | {v['worst']:g} | {ratio} | {verdict} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="supervised processes (1000)")
    ap.add_argument("--repeat", type=int, default=3, help="whole runs, a fresh daemon each (3)")
    ap.add_argument("--pause", type=float, default=5.0, help="seconds between runs (5)")
    ap.add_argument("--iterations", type=int, default=2000, help="timed list calls of each API (2000)")
    ap.add_argument("--warmup", type=int, default=100, help="untimed list calls of each API first (100)")
    ap.add_argument("--latency-restart", default="s-1", help="process restarted for the latency step (s-1)")
    ap.add_argument("--latency-restarts", type=int, default=200, help="restarts in the latency step (200)")
    ap.add_argument("--latency-pause-ms", type=int, default=25, help="pause between those restarts (25)")
    ap.add_argument("--subscribers", type=int, default=100, help="subscribers in the fan-out step (100)")
    ap.add_argument("--burst-pattern", default="s-[12]??",
                    help="processes restarted at once in the fan-out step (s-[12]??: 200 of 1000)")
    ap.add_argument("--boot-timeout", type=float, default=120.0)
    ap.add_argument("--stop-timeout", type=float, default=60.0)
    ap.add_argument("--hangar", default=str(ROOT / "target/release/hangar"))
    ap.add_argument("--bench", default=str(ROOT / "target/release/examples/graphql_bench"))
    ap.add_argument("--json", default=str(ROOT / "bench/results/graphql.json"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dirs (config, daemon.log)")
    a = ap.parse_args()

    for p, build in ((a.hangar, "cargo build --release -p hangar-cli"),
                     (a.bench, "cargo build --release -p hangar-api --example graphql_bench")):
        if not os.access(p, os.X_OK):
            print(f"error: {p} is missing; build it with `{build}`", file=sys.stderr)
            return 2

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    res = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "git": git_state(),
        "binaries": {p: time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(os.stat(p).st_mtime))
                     for p in (a.hangar, a.bench)},
        "params": dict(vars(a)),
        "targets": TARGETS,
        "runs": [],
    }
    for i in range(a.repeat):
        if i:
            time.sleep(a.pause)
        log(f"run {i + 1} of {a.repeat}")
        res["runs"].append(Run(a).run())
    res["aggregate"] = aggregate(res["runs"])
    res["verdicts"] = verdicts(res["aggregate"])
    res["leftovers_total"] = sum(r["leftovers"]["count"] for r in res["runs"])
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    m = res["machine"]
    print(f"hangar GraphQL against gRPC, N={a.n}, {a.repeat} runs: {m['nproc']} CPU ({m['cpu_model']}), "
          f"Linux {m['kernel']}; git {res['git']['head'][:10]}"
          + (f" + {len(res['git']['dirty_tracked_files'])} modified files" if res["git"]["dirty_tracked_files"] else ""))
    for i, r in enumerate(res["runs"], 1):
        print(f"run {i} ({r['started_at']}): loadavg {r['loadavg_before']} -> {r['loadavg_after']}, "
              f"compilers running before: {len(r['compilers_running_before'])}, "
              f"busy before {r['busy_before']}, leftovers {r['leftovers']['count']}")
    print()
    print(table(res))
    print(f"\nJSON: {a.json}")
    return 0 if res["leftovers_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
