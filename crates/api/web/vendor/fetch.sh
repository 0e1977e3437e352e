#!/usr/bin/env bash
# Reproduces the vendored GraphiQL assets in this directory from the npm
# registry: each package is fetched with `npm pack`, checked against the
# registry's sha512 integrity pinned below, and the browser bundles taken out
# and compressed with `gzip -9n` (no name, no time: the same bytes every run).
# hangar serves them as they are, with `Content-Encoding: gzip`.
# Needs npm (for `npm pack` only), tar, gzip, sha512sum, base64.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch() { # package version integrity file...
    local pkg=$1 ver=$2 want=$3
    shift 3
    (cd "$tmp" && npm pack --silent "$pkg@$ver" >/dev/null)
    local tgz="$tmp/$pkg-$ver.tgz"
    local got
    got="sha512-$(sha512sum "$tgz" | cut -d' ' -f1 | xxd -r -p | base64 -w0)"
    if [[ $got != "$want" ]]; then
        echo "$pkg@$ver: integrity $got, expected $want" >&2
        exit 1
    fi
    local out="$pkg-$ver"
    mkdir -p "$tmp/x/$out" "$out"
    tar xzf "$tgz" -C "$tmp/x/$out" --strip-components=1
    cp "$tmp/x/$out/LICENSE" "$out/LICENSE"
    for f in "$@"; do
        gzip -9nc "$tmp/x/$out/$f" >"$out/$(basename "$f").gz"
    done
}

fetch graphiql 3.8.3 \
    'sha512-cuPDYtXVKV86Pu5PHBX642Odi/uVEE2y1Jxq5rGO/Qy1G2lRp7ZZ7a/T30RzxhuLSWo9zUbzq0P3U49//H0Ugw==' \
    graphiql.min.js graphiql.min.css
fetch react 18.3.1 \
    'sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ==' \
    umd/react.production.min.js
fetch react-dom 18.3.1 \
    'sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tRnTWT0snUIw==' \
    umd/react-dom.production.min.js
sha256sum ./*/*.gz >SHA256SUMS
