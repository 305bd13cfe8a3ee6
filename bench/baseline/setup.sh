#!/usr/bin/env bash
# Sets up var/bench-venv with the Python stack the benchmark compares against
# (requirements.txt beside this script). Idempotent; quick when already done.
# Without Python or PyPI the benchmark still runs, and its report says the
# comparison was not made.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=$root/var/bench-venv
stamp=$venv/.requirements

if [[ -f $stamp ]] && cmp -s "$stamp" "$here/requirements.txt"; then
  exit 0
fi
if ! command -v python3 >/dev/null; then
  echo "bench: python3 is missing; the Pillow/OpenCV comparison is skipped" >&2
  exit 0
fi
echo "bench: installing the Pillow/OpenCV baseline into var/bench-venv (once)…" >&2
log=${TMPDIR:-/tmp}/pixmill-bench-venv.log
if python3 -m venv "$venv" >"$log" 2>&1 \
  && "$venv/bin/pip" install -q -r "$here/requirements.txt" >>"$log" 2>&1; then
  cp "$here/requirements.txt" "$stamp"
else
  echo "bench: could not install the baseline (see $log); the comparison is skipped" >&2
  rm -rf "$venv"
fi
