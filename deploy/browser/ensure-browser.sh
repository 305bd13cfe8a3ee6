#!/usr/bin/env bash
# Makes sure the browser test (tests/browser/) can run: Debian's Chromium at
# /usr/bin/chromium, and npm's playwright-core, at the exact version pinned in
# tests/browser/package.json and package-lock.json, under tests/browser/node_modules.
#
# The browser always comes from Debian's packages. Playwright is only the driver here:
# its own browser downloads are switched off (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD), and the
# test launches /usr/bin/chromium. When something is missing and we are root, it is
# installed (apt-get update first only if the install fails); otherwise the exact
# command is printed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=$root/tests/browser
log=${TMPDIR:-/tmp}/pixmill-browser-apt.log
export DEBIAN_FRONTEND=noninteractive
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

apt_install() {
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "browser: the browser test needs $*. Install, then run this again:" >&2
    echo "  sudo apt-get install -y $*" >&2
    exit 1
  fi
  echo "browser: installing $* from Debian (once)…" >&2
  if ! apt-get install -y -q "$@" >"$log" 2>&1; then
    apt-get update -q >>"$log" 2>&1
    apt-get install -y -q "$@" >>"$log" 2>&1 \
      || { echo "browser: apt-get install $* failed; see $log" >&2; exit 1; }
  fi
}

if [[ ! -x /usr/bin/chromium ]]; then
  apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi

# The version the lock file pins; node_modules must hold exactly that one.
want=$(node -e 'const l=require(process.argv[1]);process.stdout.write(l.packages["node_modules/playwright-core"].version)' "$dir/package-lock.json")
have=$(node -e 'try{process.stdout.write(require(process.argv[1]).version)}catch{}' "$dir/node_modules/playwright-core/package.json")
if [[ "$have" != "$want" ]]; then
  echo "browser: installing playwright-core $want into tests/browser/node_modules (once)…" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) \
    || { echo "browser: npm ci in tests/browser failed" >&2; exit 1; }
fi
