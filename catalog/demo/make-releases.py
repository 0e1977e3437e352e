#!/usr/bin/env python3
"""Build the demo feature's release archives and checksums, reproducibly
(fixed mtimes and owners), so the built-in catalog installs with no network:
    python3 catalog/demo/make-releases.py
"""
import hashlib, io, os, tarfile, gzip

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "releases")
os.makedirs(out, exist_ok=True)
script = open(os.path.join(here, "hangar-demo"), "rb").read()
lines = []
for version in ["1.0.0", "1.1.0"]:
    for arch in ["amd64", "arm64"]:
        name = f"hangar-demo-{version}-linux-{arch}.tar.gz"
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            d = tarfile.TarInfo(f"hangar-demo-{version}")
            d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tar.addfile(d)
            body = script.replace(b"VERSION", version.encode())
            f = tarfile.TarInfo(f"hangar-demo-{version}/hangar-demo")
            f.size, f.mode, f.mtime = len(body), 0o755, 1700000000
            tar.addfile(f, io.BytesIO(body))
            readme = f"hangar-demo {version} for linux/{arch}\n".encode()
            r = tarfile.TarInfo(f"hangar-demo-{version}/README")
            r.size, r.mode, r.mtime = len(readme), 0o644, 1700000000
            tar.addfile(r, io.BytesIO(readme))
        data = gzip.compress(raw.getvalue(), mtime=0)
        open(os.path.join(out, name), "wb").write(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
open(os.path.join(out, "checksums.txt"), "w").write("".join(lines))
print("".join(lines), end="")
