#!/usr/bin/env bash
# Sets up var/bench-venv with the Python stacks the benchmark compares against: the
# in-process Pillow/OpenCV baseline (requirements.txt beside this script) and the
# end-to-end peer, Flask + gunicorn + Celery (bench/peer/requirements.txt), in one
# virtualenv. Idempotent; quick when already done (the stamp is both files, so a change
# to either reinstalls). Without Python or PyPI the benchmark still runs, and its report
# says the comparison was not made.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=$root/var/bench-venv
stamp=$venv/.requirements
requirements=("$here/requirements.txt" "$root/bench/peer/requirements.txt")

if [[ -f $stamp ]] && cat "${requirements[@]}" | cmp -s "$stamp" -; then
  exit 0
fi
if ! command -v python3 >/dev/null; then
  echo "bench: python3 is missing; the Python comparisons are skipped" >&2
  exit 0
fi
echo "bench: installing the Python baseline and peer (Pillow/OpenCV, Flask/gunicorn/Celery) into var/bench-venv (once)…" >&2
log=${TMPDIR:-/tmp}/pixmill-bench-venv.log
if python3 -m venv "$venv" >"$log" 2>&1 \
  && "$venv/bin/pip" install -q -r "${requirements[0]}" -r "${requirements[1]}" >>"$log" 2>&1; then
  cat "${requirements[@]}" >"$stamp"
else
  echo "bench: could not install the Python stacks (see $log); the comparisons are skipped" >&2
  rm -rf "$venv"
fi
