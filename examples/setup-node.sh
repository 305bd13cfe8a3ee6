#!/usr/bin/env bash
# Installs the Node.js example worker's packages (examples/node-worker/node_modules).
#
#   DIR=$(examples/setup-node.sh)   # last line of stdout: the worker's folder
#   node "$DIR/worker.mjs"
#
# Packages come from package-lock.json (npm ci) and are installed again only when it
# changed, so running this a second time takes a moment. Progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$here/node-worker"
lock="$dir/package-lock.json"
stamp="$dir/node_modules/.package-lock.sha256"

say() { echo "setup-node.sh: $*" >&2; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "node or npm is missing; installing nodejs and npm with apt-get"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2
    else
        say "node and npm are needed (Debian/Ubuntu: sudo apt-get install -y nodejs npm)"
        exit 1
    fi
fi

# sharp needs Node.js 18.17 or newer (Debian 12 ships 18.20, Ubuntu 24.04 18.19).
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 18 || (a === 18 && b >= 17) ? 0 : 1)'; then
    say "node $(node --version) is too old: the worker needs Node.js 18.17 or newer"
    exit 1
fi

want="$(sha256sum "$lock" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    say "installing ${dir#"$(dirname "$here")"/}/package-lock.json with npm ci"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2
    echo "$want" >"$stamp"
else
    say "package-lock.json unchanged"
fi

echo "$dir"
