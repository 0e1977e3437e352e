#!/usr/bin/env python3
"""Installs: hangar-fetch's download → verify → extract against curl,
sha256sum and tar, and SHA-256 speed against sha256sum, in the same run.

Reproduce (from the workspace root, as root; Python 3.11 stdlib only):

    apt-get install --no-install-recommends curl nginx   # nginx optional, see below
    cargo build --release -p hangar-fetch --examples
    python3 bench/fetch.py --quiet-wait 1500  # R=5, ~200 MB archive
    python3 bench/fetch.py --runs 3 --binary-mib 64   # quick smoke run

What it does:

1. Builds a release archive reproducibly (seeded PRNG, fixed mtimes and
   owners, gzip level 6 with mtime 0): `app-1.0.0/bin/app`, a pseudo-binary
   of 64 KiB blocks that are either PRNG bytes (incompressible, like packed
   sections) or text drawn from a small vocabulary (compresses ~4:1), mixed
   so the whole compresses to ~0.6; a few MB of "libraries" made the same
   way; and 400 small text files (1–32 KiB) under `share/`. Prints and
   records the exact compressed and extracted sizes and the SHA-256.
2. Serves it from 127.0.0.1 with nginx (Debian package; one worker,
   `sendfile on`, access log off), or, when nginx is missing, a threaded
   Python server that sends the body with `socket.sendfile`. The JSON says
   which. Every contender fetches from the same server.
3. Runs each contender once untimed (page cache warm, server warm), then R
   rounds; in each round every contender runs once, in an order rotated each
   round. Before each run the outputs of the last one are removed and `sync`
   is run (untimed), so no run pays for an earlier one's writeback.
   Contenders (wall clock from fork to exit of the whole command, CPU from
   wait4, i.e. user+sys of the command and all its children):
   - `peer`: `curl -s URL | tee FILE | sha256sum`, compare the digest, then
     `tar xzf FILE -C DIR`: download and verify, then extract (bash script);
   - `hangar`: `install_bench --runs 1` (crates/fetch/examples): one
     `Installer::install` with `Checksum::Sha256`: download (hashing on a
     blocking thread as bytes arrive), verify, extract to staging, install
     record, directory fsyncs, rename into place, `current` symlink;
   - `peer-stream` (context): `curl -s URL | tee >(sha256sum) | tar xzf -`:
     extracts while downloading, i.e. BEFORE the digest is known (hangar
     refuses to do that by design); its digest is checked afterwards;
   - `peer-seq` (context): `curl -o FILE`, then `sha256sum FILE`, then
     `tar xzf FILE`: the same steps one after another.
4. Hashing: R rounds of `sha256sum FILE` against `hash_bench --runs 1`
   (1 MiB reads + `Sha256::update`, as the downloader) on the cached archive,
   alternating. For context, in the same rounds: `hash_bench --chunk 16384`
   (the downloader over HTTP hashes chunks of the size hyper hands it),
   `hash_bench --buf 65536` (not the product's buffer size) and
   `openssl dgst -sha256` (OpenSSL's SHA-NI code; coreutils' sha256sum on
   Debian 12 is not linked to OpenSSL and hashes in plain C).
5. Each step alone (skip with --no-diagnose), R rounds: `curl -o FILE`,
   `install_bench --only download` (Downloader::fetch_to), `gzip -dc FILE
   >/dev/null`, `tar xzf FILE`, `install_bench --only extract`
   (extract::extract), to say what dominates which total.
6. Medians; throughput = archive bytes / median wall time (MB = 10^6 bytes);
   ratio = peer median time / hangar median time (= hangar throughput / peer
   throughput; > 1: hangar faster). Targets: install >= 0.90 of `peer`,
   hashing >= 0.95 of sha256sum.

With --quiet-wait S, every timed run first waits while any other process
uses more than 5 % of a core (up to S seconds in all, then measures anyway);
each run records the load average and the busy processes seen just before it.

Writes bench/results/fetch.json and prints a markdown table. Removes the
archive, the downloads and the extracted trees at the end (--keep to keep).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.server
import io
import json
import os
import platform
import random
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
BLOCK = 64 * 1024

TARGETS = {"install": 0.90, "hash": 0.95}


def log(msg: str) -> None:
    print(f"[fetch.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# ---------------------------------------------------------------- archive


def make_tree(tree: Path, seed: int, binary_mib: int, random_share: float) -> None:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(3, 12)))
             for _ in range(300)]

    def text(r: random.Random, n: int) -> bytes:
        out, size = [], 0
        while size < n:
            w = r.choice(words)
            out.append(w)
            size += len(w) + 1
            if r.random() < 0.08:
                out.append("\n")
                size += 1
        return " ".join(out).encode()[:n]

    pool = [text(rng, BLOCK) for _ in range(64)]

    def pseudo_binary(path: Path, mib: int, r: random.Random) -> None:
        with open(path, "wb") as f:
            for _ in range(mib * 1024 * 1024 // BLOCK):
                if r.random() < random_share:
                    f.write(r.randbytes(BLOCK))
                else:
                    f.write(pool[r.randrange(len(pool))])

    app = tree / "app-1.0.0"
    (app / "bin").mkdir(parents=True)
    (app / "lib").mkdir()
    pseudo_binary(app / "bin" / "app", binary_mib, random.Random(seed + 1))
    os.chmod(app / "bin" / "app", 0o755)
    lr = random.Random(seed + 2)
    for i in range(8):
        pseudo_binary(app / "lib" / f"libapp{i}.so", 2 + i % 3, lr)
    sr = random.Random(seed + 3)
    for i in range(400):
        d = app / "share" / f"d{i % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03d}.txt").write_bytes(text(sr, sr.randint(1024, 32 * 1024)))
    (app / "README.md").write_bytes(text(sr, 4096))
    (app / "LICENSE").write_bytes(text(sr, 11000))


def make_archive(tree: Path, out: Path) -> None:
    """tar (GNU format, sorted, mtime 0, root:root) | gzip -6 (mtime 0, no name)."""
    def norm(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.mtime = 0
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        ti.mode = 0o755 if (ti.isdir() or ti.mode & 0o100) else 0o644
        return ti

    paths = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    with open(out, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w|", format=tarfile.GNU_FORMAT) as tf:
                for rel in paths:
                    tf.add(tree / rel, arcname=str(rel), recursive=False, filter=norm)


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def tree_size(p: Path) -> tuple[int, int]:
    files = size = 0
    for q in p.rglob("*"):
        if q.is_file() and not q.is_symlink():
            files += 1
            size += q.stat().st_size
    return files, size


# ---------------------------------------------------------------- servers


class Nginx:
    kind = "nginx"

    def __init__(self, docroot: Path, work: Path, port: int):
        self.prefix = work / "nginx"
        self.prefix.mkdir()
        conf = self.prefix / "nginx.conf"
        p = self.prefix
        conf.write_text(f"""
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {docroot};
        location / {{ }}
    }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-p", str(p), "-c", str(conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.detail = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip() + \
            "; 1 worker, sendfile on, tcp_nopush on, access_log off"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    docroot: Path

    def log_message(self, *a) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        p = (self.docroot / self.path.lstrip("/").split("?")[0]).resolve()
        if self.docroot not in p.parents or not p.is_file():
            self.send_error(404)
            return
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.flush()
            self.connection.sendfile(f)


class PyServer:
    kind = "python-sendfile"

    def __init__(self, docroot: Path, work: Path, port: int):
        handler = type("H", (_Handler,), {"docroot": docroot.resolve()})
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", port), handler)
        self.srv.daemon_threads = True
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()
        self.detail = "python3 socketserver.ThreadingTCPServer (in the harness process), body via socket.sendfile"

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, size: int) -> None:
    for _ in range(100):
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
                           capture_output=True, text=True)
        if r.stdout.strip() == f"200 {size}":
            return
        time.sleep(0.1)
    raise SystemExit(f"server not answering {url}: {r.stdout} {r.stderr}")


# ---------------------------------------------------------------- running


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def busy_processes(window: float = 0.5, min_pct: float = 5.0, exclude: set[int] | None = None) -> list[str]:
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
    skip = {os.getpid()} | (exclude or set())
    busy = []
    for pid, t in b.items():
        p = 100.0 * (t - a.get(pid, t)) / CLK_TCK / window
        if pid not in skip and p >= min_pct:
            busy.append(f"{pid}:{comm(pid)}:{p:.0f}%")
    return busy


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run cmd; wall time fork→exit, CPU (user+sys, children included) via wait4."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = b"", b""
    # Read the pipes on threads so a chatty child cannot block; reap with wait4.
    bufs: dict[str, bytes] = {}

    def drain(name: str, f) -> None:
        bufs[name] = f.read()

    ts = [threading.Thread(target=drain, args=("out", p.stdout)), threading.Thread(target=drain, args=("err", p.stderr))]
    for t in ts:
        t.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    for t in ts:
        t.join()
    out, err = bufs.get("out", b""), bufs.get("err", b"")
    return {
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "rc": p.returncode,
        "stdout": out.decode(errors="replace"),
        "stderr": err.decode(errors="replace")[-2000:],
    }


class Bench:
    def __init__(self, a: argparse.Namespace, work: Path, archive: Path, digest: str, url: str):
        self.a = a
        self.work = work
        self.archive = archive
        self.digest = digest
        self.url = url
        self.out = work / "out"
        self.out.mkdir()
        self.install_bench = a.install_bench
        self.hash_bench = a.hash_bench
        self.binary = "app-1.0.0/bin/app"

    def clean(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir()
        subprocess.run(["sync"])
        time.sleep(self.a.pause)

    def cmd(self, name: str) -> tuple[list[str], dict]:
        o, url, hx = self.out, self.url, self.digest
        f, d, s = o / "app.tar.gz", o / "x", o / "sum"
        if name == "peer":
            script = (f't0=$EPOCHREALTIME; set -o pipefail; d=$(curl -sS --fail "{url}" | tee "{f}" | sha256sum) || exit 1; '
                      f'[ "${{d%% *}}" = "{hx}" ] || {{ echo "digest mismatch: $d" >&2; exit 3; }}; t1=$EPOCHREALTIME; '
                      f'mkdir "{d}" && tar xzf "{f}" -C "{d}" && echo "split $t0 $t1 $EPOCHREALTIME"')
            return ["bash", "-c", script], {"extracted": d}
        if name == "peer-stream":
            # `wait $!` waits for the process substitution (bash >= 5.1).
            script = (f'set -o pipefail; mkdir "{d}" && curl -sS --fail "{url}" | tee >(sha256sum > "{s}") '
                      f'| tar xzf - -C "{d}"; rc=$?; wait $!; exit $rc')
            return ["bash", "-c", script], {"extracted": d, "sumfile": s}
        if name == "peer-seq":
            script = (f't0=$EPOCHREALTIME; curl -sS --fail -o "{f}" "{url}" && t1=$EPOCHREALTIME && d=$(sha256sum "{f}") && '
                      f'{{ [ "${{d%% *}}" = "{hx}" ] || {{ echo "digest mismatch: $d" >&2; exit 3; }}; }} && '
                      f't2=$EPOCHREALTIME && mkdir "{d}" && tar xzf "{f}" -C "{d}" && echo "split $t0 $t1 $t2 $EPOCHREALTIME"')
            return ["bash", "-c", script], {"extracted": d}
        if name == "hangar":
            return [str(self.install_bench), "--url", url, "--sha256", hx, "--asset", self.archive.name,
                    "--binary", self.binary, "--root", str(o / "root"), "--runs", "1"], \
                {"extracted": o / "root" / "run-0-0" / "bench" / "1.0.0"}
        raise ValueError(name)

    def check(self, name: str, r: dict, extra: dict) -> None:
        if r["rc"] != 0:
            raise SystemExit(f"{name} failed (rc {r['rc']}): {r['stderr']}")
        x = Path(extra["extracted"])
        binp = x / self.binary
        if not binp.is_file() or binp.stat().st_size != self.a._binary_bytes:
            raise SystemExit(f"{name}: {binp} missing or wrong size")
        if "sumfile" in extra:
            got = Path(extra["sumfile"]).read_text().split()[0]
            if got != self.digest:
                raise SystemExit(f"{name}: digest {got} != {self.digest}")
        if name == "hangar":
            j = json.loads(r["stdout"])
            run = j["runs"][0]
            if run["sha256"] != self.digest or not run["verified"]:
                raise SystemExit(f"hangar: digest {run['sha256']} != {self.digest}")
            r["inner"] = run
        for line in r["stdout"].splitlines():
            if line.startswith("split "):
                t = [float(x) for x in line.split()[1:]]
                ms = [round((b - a) * 1e3, 1) for a, b in zip(t, t[1:])]
                if name == "peer":
                    r["inner"] = {"download_verify_ms": ms[0], "extract_ms": ms[1]}
                else:
                    r["inner"] = {"download_ms": ms[0], "verify_ms": ms[1], "extract_ms": ms[2]}
        r.pop("stdout", None)

    def one(self, name: str) -> dict:
        self.clean()
        cmd, extra = self.cmd(name)
        self.quiet()
        before = {"loadavg": loadavg(), "busy": busy_processes(self.a.busy_window, exclude=self.server_pids)}
        r = timed(cmd)
        self.check(name, r, extra)
        r.update(before)
        r["mb_per_s"] = self.a._archive_bytes / 1e6 / r["wall_s"]
        return r

    def quiet(self) -> None:
        """Wait (up to --quiet-wait s in all) until no other process is busy."""
        while self.a.quiet_wait > 0:
            busy = busy_processes(1.0, exclude=self.server_pids)
            if not busy:
                return
            if time.monotonic() - self.t_start > self.a.quiet_wait:
                log(f"machine still busy after --quiet-wait {self.a.quiet_wait:.0f} s, measuring anyway: {busy}")
                self.a.quiet_wait = 0
                return
            log(f"waiting for a quiet machine: {busy}")
            time.sleep(5)

    def install_rounds(self, names: list[str]) -> dict[str, list[dict]]:
        res: dict[str, list[dict]] = {n: [] for n in names}
        log("warm-up: " + ", ".join(names))
        for n in names:
            self.one(n)
        for i in range(self.a.runs):
            order = names[i % len(names):] + names[:i % len(names)]
            for n in order:
                r = self.one(n)
                res[n].append(r)
                extra = ""
                if "inner" in r:
                    extra = " (" + ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in r["inner"].items()
                                             if isinstance(v, (int, float)) and k.endswith("_ms")) + " ms)"
                log(f"round {i + 1}/{self.a.runs} {n:12s} {r['wall_s'] * 1e3:7.0f} ms  "
                    f"{r['mb_per_s']:6.0f} MB/s  cpu {r['cpu_s']:.2f} s  load {r['loadavg'][0]:.2f}"
                    f"{extra}{'  busy: ' + ' '.join(r['busy']) if r['busy'] else ''}")
        return res

    def hash_rounds(self) -> dict[str, list[dict]]:
        f = str(self.archive)
        cmds = {
            "sha256sum": ["sha256sum", f],
            "hangar": [str(self.hash_bench), "--file", f, "--runs", "1"],
            "hangar-chunk16k": [str(self.hash_bench), "--file", f, "--runs", "1", "--chunk", "16384"],
            "hangar-buf64k": [str(self.hash_bench), "--file", f, "--runs", "1", "--buf", "65536"],
        }
        if shutil.which("openssl"):
            cmds["openssl-dgst"] = ["openssl", "dgst", "-sha256", "-r", f]
        res: dict[str, list[dict]] = {n: [] for n in cmds}
        names = list(cmds)
        for n in names:  # warm-up
            timed(cmds[n])
        for i in range(self.a.runs):
            order = names[i % len(names):] + names[:i % len(names)]
            for n in order:
                self.quiet()
                before = {"loadavg": loadavg(), "busy": busy_processes(self.a.busy_window, exclude=self.server_pids)}
                r = timed(cmds[n])
                if r["rc"] != 0:
                    raise SystemExit(f"{n} failed: {r['stderr']}")
                plain = n in ("sha256sum", "openssl-dgst")
                got = r["stdout"].split()[0] if plain else json.loads(r["stdout"])["sha256"]
                if got != self.digest:
                    raise SystemExit(f"{n}: digest {got} != {self.digest}")
                if not plain:
                    r["inner_mb_per_s"] = json.loads(r["stdout"])["runs"][0]["mb_per_s"]
                r.pop("stdout", None)
                r.update(before)
                r["mb_per_s"] = self.a._archive_bytes / 1e6 / r["wall_s"]
                res[n].append(r)
                log(f"hash round {i + 1}/{self.a.runs} {n:16s} {r['wall_s'] * 1e3:6.0f} ms  {r['mb_per_s']:6.0f} MB/s")
        return res


    def diag_rounds(self) -> dict[str, list[dict]]:
        """Each step alone, for the split: what dominates whom."""
        f, o, url = str(self.archive), self.out, self.url
        ib = str(self.install_bench)
        cmds = {
            "curl -o FILE": ["curl", "-sS", "--fail", "-o", str(o / "dl"), url],
            "hangar download+hash": [ib, "--only", "download", "--url", url, "--sha256", self.digest,
                                     "--asset", self.archive.name, "--root", str(o / "root")],
            "gzip -dc FILE >/dev/null": ["bash", "-c", f'gzip -dc "{f}" > /dev/null'],
            "tar xzf FILE": ["bash", "-c", f'mkdir "{o}/x" && tar xzf "{f}" -C "{o}/x"'],
            "hangar extract": [ib, "--only", "extract", "--file", f, "--asset", self.archive.name,
                               "--root", str(o / "root")],
        }
        res: dict[str, list[dict]] = {n: [] for n in cmds}
        names = list(cmds)
        for n in names:  # warm-up
            self.clean()
            timed(cmds[n])
        for i in range(self.a.runs):
            order = names[i % len(names):] + names[:i % len(names)]
            for n in order:
                self.clean()
                self.quiet()
                before = {"loadavg": loadavg(), "busy": busy_processes(self.a.busy_window, exclude=self.server_pids)}
                r = timed(cmds[n])
                if r["rc"] != 0:
                    raise SystemExit(f"{n} failed: {r['stderr']}")
                r.pop("stdout", None)
                r.update(before)
                r["mb_per_s"] = self.a._archive_bytes / 1e6 / r["wall_s"]
                res[n].append(r)
                log(f"diag round {i + 1}/{self.a.runs} {n:26s} {r['wall_s'] * 1e3:6.0f} ms  cpu {r['cpu_s']:.2f} s")
        return res


def summarize(runs: list[dict], archive_bytes: int) -> dict:
    w = median([r["wall_s"] for r in runs])
    out = {
        "median_wall_ms": round(w * 1e3, 1),
        "min_wall_ms": round(min(r["wall_s"] for r in runs) * 1e3, 1),
        "max_wall_ms": round(max(r["wall_s"] for r in runs) * 1e3, 1),
        "median_mb_per_s": round(archive_bytes / 1e6 / w, 1),
        "median_cpu_s": round(median([r["cpu_s"] for r in runs]), 3),
    }
    inner = [r["inner"] for r in runs if "inner" in r]
    if inner:
        for k in ("wall_ms", "download_ms", "download_verify_ms", "verify_ms", "extract_ms", "extract_move_ms"):
            if all(k in x for x in inner):
                out[f"median_inner_{k}"] = round(median([x[k] for x in inner]), 1)
    if any("inner_mb_per_s" in r for r in runs):
        out["median_inner_mb_per_s"] = round(median([r["inner_mb_per_s"] for r in runs]), 1)
    return out


def machine() -> dict:
    model = None
    flags = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    fs = subprocess.run(["findmnt", "-no", "FSTYPE,SOURCE", "-T", tempfile.gettempdir()],
                        capture_output=True, text=True).stdout.strip()

    def ver(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout or r.stderr).splitlines()[0].strip()
        except (OSError, IndexError):
            return "?"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "sha_ni": " sha_ni" in flags,
        "avx2": " avx2" in flags,
        "kernel": platform.release(),
        "tmp_fs": fs,
        "loadavg_at_start": loadavg(),
        "versions": {
            "curl": ver(["curl", "--version"]),
            "sha256sum": ver(["sha256sum", "--version"]),
            "tar": ver(["tar", "--version"]),
            "gzip": ver(["gzip", "--version"]),
            "bash": ver(["bash", "--version"]),
            "openssl": ver(["openssl", "version"]),
        },
    }


def git_state() -> dict:
    def g(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    return {"head": g("rev-parse", "HEAD"),
            "dirty_tracked_files": [x for x in g("status", "--short", "--untracked-files=no").splitlines() if x]}


def table(res: dict) -> str:
    inst, hsh = res["install"], res["hash"]
    lines = [
        "| contender | what | median ms | min–max ms | MB/s | CPU s | time ratio peer/hangar | split, medians (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    what = {
        "peer": "`curl \\| tee FILE \\| sha256sum`, check, `tar xzf FILE`",
        "hangar": "`Installer::install` (download+hash, verify, extract, rename)",
        "peer-stream": "`curl \\| tee >(sha256sum) \\| tar xz` (extracts before verifying)",
        "peer-seq": "`curl -o FILE`; `sha256sum FILE`; `tar xzf FILE`",
        "sha256sum": "`sha256sum FILE` (page cache)",
        "hangar-chunk16k": "`hash_bench --chunk 16384`",
        "hangar-buf64k": "`hash_bench --buf 65536` (not the product's buffer: what 64 KiB reads give)",
        "openssl-dgst": "`openssl dgst -sha256 FILE` (context: OpenSSL's SHA-NI code)",
    }
    h_inst = inst["summary"]["hangar"]["median_wall_ms"]
    for n, s in inst["summary"].items():
        ratio = "" if n == "hangar" else f"{s['median_wall_ms'] / h_inst:.2f}"
        split = ", ".join(f"{k.removeprefix('median_inner_').removesuffix('_ms').replace('_', '+')} "
                          f"{v:.0f}" for k, v in s.items()
                          if k.startswith("median_inner_") and k != "median_inner_wall_ms")
        lines.append(f"| {n} | {what.get(n, n)} | {s['median_wall_ms']:.0f} | {s['min_wall_ms']:.0f}–{s['max_wall_ms']:.0f} "
                     f"| {s['median_mb_per_s']:.0f} | {s['median_cpu_s']:.2f} | {ratio} | {split} |")
    h_hash = hsh["summary"]["hangar"]["median_wall_ms"]
    for n, s in hsh["summary"].items():
        label = {"hangar": "hangar hash", "hangar-chunk16k": "hangar hash, 16 KiB updates",
                 "hangar-buf64k": "hash, 64 KiB reads"}.get(n, n)
        w = "`hash_bench` (1 MiB reads, `Sha256::update`)" if n == "hangar" else what.get(n, n)
        ratio = "" if n == "hangar" else f"{s['median_wall_ms'] / h_hash:.2f}"
        inner = f" (in-process {s['median_inner_mb_per_s']:.0f})" if "median_inner_mb_per_s" in s else ""
        lines.append(f"| {label} | {w} | {s['median_wall_ms']:.0f} | {s['min_wall_ms']:.0f}–{s['max_wall_ms']:.0f} "
                     f"| {s['median_mb_per_s']:.0f}{inner} | {s['median_cpu_s']:.2f} | {ratio} | |")
    diag = res.get("steps_alone", {}).get("summary", {})
    if diag:
        lines.append("")
        lines.append("Each step alone (same archive, page cache warm):")
        lines.append("")
        lines.append("| step | median ms | min–max ms | CPU s |")
        lines.append("|---|---:|---:|---:|")
        for n, s in diag.items():
            lines.append(f"| `{n}` | {s['median_wall_ms']:.0f} | {s['min_wall_ms']:.0f}–{s['max_wall_ms']:.0f} "
                         f"| {s['median_cpu_s']:.2f} |")
    lines.append("")
    lines.append("| target | goal | measured | verdict |")
    lines.append("|---|---|---|---|")
    for k, v in res["verdicts"].items():
        lines.append(f"| {k} | ≥ {v['target']:.2f} | {v['ratio']:.3f} | {'met' if v['met'] else 'MISSED'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="timed rounds (R)")
    ap.add_argument("--binary-mib", type=int, default=300, help="size of the pseudo-binary (MiB)")
    ap.add_argument("--random-share", type=float, default=0.45,
                    help="share of 64 KiB blocks that are PRNG bytes (the rest compressible text)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--server", choices=["auto", "nginx", "python"], default="auto")
    ap.add_argument("--contenders", default="peer,hangar,peer-stream,peer-seq")
    ap.add_argument("--pause", type=float, default=1.0, help="pause after the untimed cleanup+sync (s)")
    ap.add_argument("--quiet-wait", type=float, default=0.0,
                    help="before each round, wait while other processes are busy, up to this many s in all")
    ap.add_argument("--no-diagnose", dest="diagnose", action="store_false",
                    help="skip timing each step alone (download, decompress, extract)")
    ap.add_argument("--busy-window", type=float, default=0.5,
                    help="window (s) for sampling other busy processes before each run")
    ap.add_argument("--install-bench", default=str(ROOT / "target/release/examples/install_bench"))
    ap.add_argument("--hash-bench", default=str(ROOT / "target/release/examples/hash_bench"))
    ap.add_argument("--json", default=str(ROOT / "bench/results/fetch.json"))
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where the work dir goes")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    a = ap.parse_args()

    for tool in ("curl", "sha256sum", "tar", "gzip", "bash"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (apt-get install {tool})")
    for b in (a.install_bench, a.hash_bench):
        if not Path(b).is_file():
            raise SystemExit(f"{b} missing: cargo build --release -p hangar-fetch --examples")

    work = Path(tempfile.mkdtemp(prefix="hangar-bench-fetch-", dir=a.tmp))
    os.chmod(work, 0o755)  # nginx's worker runs as nobody
    server = None
    try:
        docroot = work / "www"
        docroot.mkdir()
        tree = work / "tree"
        tree.mkdir()
        t0 = time.monotonic()
        log(f"building the archive in {work} ...")
        make_tree(tree, a.seed, a.binary_mib, a.random_share)
        files, extracted = tree_size(tree)
        archive = docroot / "app-1.0.0-linux-amd64.tar.gz"
        make_archive(tree, archive)
        a._binary_bytes = (tree / "app-1.0.0/bin/app").stat().st_size
        shutil.rmtree(tree)
        a._archive_bytes = archive.stat().st_size
        digest = sha256_file(archive)
        log(f"archive {a._archive_bytes} bytes ({a._archive_bytes / 1e6:.1f} MB), extracts to {extracted} bytes "
            f"in {files} files, sha256 {digest} ({time.monotonic() - t0:.0f} s)")

        port = free_port()
        kind = a.server
        if kind == "auto":
            kind = "nginx" if shutil.which("nginx") else "python"
        server = Nginx(docroot, work, port) if kind == "nginx" else PyServer(docroot, work, port)
        url = f"http://127.0.0.1:{port}/{archive.name}"
        wait_http(url, a._archive_bytes)
        log(f"serving {url} with {server.kind}")

        b = Bench(a, work, archive, digest, url)
        b.server_pids = set()
        if isinstance(server, Nginx):
            b.server_pids = {server.proc.pid} | {int(x) for x in subprocess.run(
                ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()}
        b.t_start = time.monotonic()
        names = [n.strip() for n in a.contenders.split(",") if n.strip()]
        inst = b.install_rounds(names)
        hsh = b.hash_rounds()
        diag = b.diag_rounds() if a.diagnose else {}

        res = {
            "bench": "fetch",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": "python3 bench/fetch.py " + " ".join(sys.argv[1:]),
            "machine": machine(),
            "git": git_state(),
            "server": {"kind": server.kind, "detail": server.detail, "url": url},
            "archive": {
                "name": archive.name,
                "bytes": a._archive_bytes,
                "sha256": digest,
                "extracted_bytes": extracted,
                "files": files,
                "binary_bytes": a._binary_bytes,
                "ratio": round(a._archive_bytes / extracted, 3),
                "recipe": {"seed": a.seed, "binary_mib": a.binary_mib, "random_share": a.random_share,
                           "gzip_level": 6, "tar_format": "GNU", "python_zlib": __import__("zlib").ZLIB_RUNTIME_VERSION},
            },
            "runs_per_contender": a.runs,
            "mb": "10^6 bytes",
            "targets": TARGETS,
            "install": {"summary": {n: summarize(inst[n], a._archive_bytes) for n in names}, "runs": inst},
            "hash": {"summary": {n: summarize(v, a._archive_bytes) for n, v in hsh.items()}, "runs": hsh},
            "steps_alone": {"summary": {n: summarize(v, a._archive_bytes) for n, v in diag.items()}, "runs": diag},
        }
        si, sh = res["install"]["summary"], res["hash"]["summary"]
        res["verdicts"] = {}
        if "peer" in si and "hangar" in si:
            r = si["peer"]["median_wall_ms"] / si["hangar"]["median_wall_ms"]
            res["verdicts"]["install throughput vs curl, sha256sum, tar"] = {
                "target": TARGETS["install"], "ratio": round(r, 3), "met": r >= TARGETS["install"]}
        r = sh["sha256sum"]["median_wall_ms"] / sh["hangar"]["median_wall_ms"]
        res["verdicts"]["hashing vs sha256sum"] = {"target": TARGETS["hash"], "ratio": round(r, 3),
                                                   "met": r >= TARGETS["hash"]}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
        log(f"wrote {a.json}")
        print(f"archive: {a._archive_bytes} bytes, extracts to {extracted} bytes in {files} files; "
              f"server: {server.kind}; R={a.runs}; MB = 10^6 bytes")
        print(table(res))
        return 0
    finally:
        if server:
            server.stop()
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
