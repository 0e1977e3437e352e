#!/usr/bin/env bash
# Install the peer supervisors used by bench/supervisors.py.  Idempotent:
# anything already present at the expected version is left alone.
#
#   apt:   s6, runit (no recommends: keeps runit-init away from /sbin/init),
#          supervisor, gcc (for bench/floor.c), nodejs+npm if missing
#   npm:   pm2            -> bench/.cache/pm2/bin/pm2       (PM2_VERSION)
#   cargo: horust         -> bench/.cache/horust/bin/horust (HORUST_VERSION)
#
# Needs root (apt-get).  The horust build takes several minutes on 2 cores;
# it runs with CARGO_BUILD_JOBS=1 and CARGO_TARGET_DIR=/tmp/horust-target so
# it never touches the workspace's target/ directory.
#
# Usage: bench/install-peers.sh [--skip-horust] [--skip-pm2] [--skip-apt]
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$BENCH/.cache"
PM2_VERSION="${PM2_VERSION:-7.0.4}"
HORUST_VERSION="${HORUST_VERSION:-0.1.14}"

skip_apt=0 skip_pm2=0 skip_horust=0
for a in "$@"; do
  case "$a" in
    --skip-apt) skip_apt=1 ;;
    --skip-pm2) skip_pm2=1 ;;
    --skip-horust) skip_horust=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option: $a" >&2; exit 2 ;;
  esac
done

say() { printf '[install-peers] %s\n' "$*"; }

# ---------------------------------------------------------------- apt
if [ "$skip_apt" = 0 ]; then
  want=()
  for pkg in s6 runit supervisor; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || want+=("$pkg")
  done
  command -v gcc >/dev/null || want+=(gcc libc6-dev)
  command -v node >/dev/null || want+=(nodejs)
  command -v npm >/dev/null || want+=(npm)
  if [ "${#want[@]}" -gt 0 ]; then
    say "apt-get install ${want[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # --no-install-recommends: runit recommends runit-init/runit-run, which
    # would try to become the init system.  We only want the binaries.
    apt-get install -y -q --no-install-recommends "${want[@]}"
  else
    say "apt packages already installed"
  fi
  # The Debian packages start system-wide daemons where an init system lets
  # them (supervisor.service; runit's runsvdir on /etc/service).  They are
  # not ours and would add noise to the measurements, so stop them if a
  # systemd is actually running.  (In containers policy-rc.d usually blocks
  # the start anyway.)
  if [ -d /run/systemd/system ]; then
    systemctl disable --now supervisor.service 2>/dev/null || true
    systemctl disable --now runit.service 2>/dev/null || true
  fi
  if dpkg-query -W -f='${Status}' runit-init 2>/dev/null | grep -q 'install ok installed'; then
    say "WARNING: runit-init is installed (not by this script); /sbin/init -> $(readlink -f /sbin/init)"
  fi
fi

# ---------------------------------------------------------------- pm2
if [ "$skip_pm2" = 0 ]; then
  have=""
  pj="$CACHE/pm2/lib/node_modules/pm2/package.json"
  [ -f "$pj" ] && have="$(node -p "require('$pj').version" 2>/dev/null || true)"
  if [ "$have" = "$PM2_VERSION" ] && [ -x "$CACHE/pm2/bin/pm2" ]; then
    say "pm2 $have already in $CACHE/pm2"
  else
    say "npm install pm2@$PM2_VERSION into $CACHE/pm2"
    mkdir -p "$CACHE/pm2"
    # -g with --prefix = a private "global" prefix: bin/pm2 + lib/node_modules/pm2
    (cd /tmp && npm install -g --prefix "$CACHE/pm2" "pm2@$PM2_VERSION" --no-audit --no-fund)
  fi
fi

# ---------------------------------------------------------------- horust
if [ "$skip_horust" = 0 ]; then
  if [ -x "$CACHE/horust/bin/horust" ] && grep -q "\"horust $HORUST_VERSION " "$CACHE/horust/.crates.toml" 2>/dev/null; then
    say "horust $HORUST_VERSION already in $CACHE/horust"
  else
    command -v cargo >/dev/null || { echo "cargo not found (needed for horust)" >&2; exit 1; }
    say "cargo install horust@$HORUST_VERSION (single job, several minutes on 2 cores)"
    (cd /tmp && CARGO_BUILD_JOBS=1 CARGO_TARGET_DIR=/tmp/horust-target \
      nice -n 10 cargo install horust --version "$HORUST_VERSION" --locked --root "$CACHE/horust")
  fi
fi

say "done:"
for b in s6-svscan runsvdir supervisord gcc node; do
  printf '  %-12s %s\n' "$b" "$(command -v "$b" || echo MISSING)"
done
printf '  %-12s %s\n' pm2 "$( [ -x "$CACHE/pm2/bin/pm2" ] && echo "$CACHE/pm2/bin/pm2" || echo MISSING)"
printf '  %-12s %s\n' horust "$( [ -x "$CACHE/horust/bin/horust" ] && echo "$CACHE/horust/bin/horust" || echo MISSING)"
