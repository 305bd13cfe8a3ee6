#!/usr/bin/env bash
# Validates the published broker contract with the AsyncAPI parser (npm
# @asyncapi/parser, pinned in tests/asyncapi/package-lock.json), offline:
#
#   deploy/contract/check-asyncapi.sh                 # docs/contract/asyncapi.json
#   deploy/contract/check-asyncapi.sh FILE.json…      # other documents, e.g. a
#                                                     # gateway's /asyncapi.json
#
# The parser is installed into tests/asyncapi/node_modules the first time (npm ci).
# Node and npm come from Debian when missing and we are root.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=$root/tests/asyncapi
log=${TMPDIR:-/tmp}/pixmill-asyncapi-apt.log
export DEBIAN_FRONTEND=noninteractive

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "contract: the AsyncAPI check needs Node.js and npm: sudo apt-get install -y nodejs npm" >&2
    exit 1
  fi
  echo "contract: installing nodejs and npm from Debian (once)…" >&2
  apt-get install -y -q nodejs npm >"$log" 2>&1 \
    || { apt-get update -q >>"$log" 2>&1 && apt-get install -y -q nodejs npm >>"$log" 2>&1; } \
    || { echo "contract: apt-get install nodejs npm failed; see $log" >&2; exit 1; }
fi

want=$(node -e 'const l=require(process.argv[1]);process.stdout.write(l.packages["node_modules/@asyncapi/parser"].version)' "$dir/package-lock.json")
have=$(node -e 'try{process.stdout.write(require(process.argv[1]).version)}catch{}' "$dir/node_modules/@asyncapi/parser/package.json")
if [[ "$have" != "$want" ]]; then
  echo "contract: installing @asyncapi/parser $want into tests/asyncapi/node_modules (once)…" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) \
    || { echo "contract: npm ci in tests/asyncapi failed" >&2; exit 1; }
fi

if [[ $# -eq 0 ]]; then
  set -- "$root/docs/contract/asyncapi.json"
fi
exec node "$dir/check.mjs" "$@"
