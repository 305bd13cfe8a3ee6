#!/usr/bin/env bash
# Runs Schemathesis against a live gateway: requests generated from its /openapi.json for
# every operation (valid ones and invalid ones), checking that none gets a 5xx and that
# every answer is documented, with the documented content type, headers and schema.
#
# Usage: deploy/schemathesis/run.sh URL      e.g. deploy/schemathesis/run.sh http://127.0.0.1:8080
#
# Schemathesis comes from PyPI at the versions pinned in requirements.txt beside this
# script, installed into var/schemathesis-venv when missing or when the pins changed
# (and Debian's python3-venv first when it is missing and we are root).
#
# SCHEMATHESIS_EXAMPLES    test cases per operation and phase (default 50)
# SCHEMATHESIS_SEED        the random seed (default 1), so a run can be repeated
# SCHEMATHESIS_TIME_LIMIT  seconds before the run is cut off and fails (default 100)
# SCHEMATHESIS_CHECKS      the checks, comma-separated. The default: no 5xx; status, content
#                          type, headers and body as documented; an undocumented method gets
#                          405 with a true `Allow`; a missing required header is refused.
#                          `all` adds checks that report this API's deliberate choices: an
#                          empty parameter counts as absent and `wait` above 30 waits 30
#                          (negative_data_rejection); a schema-valid submit can still be
#                          refused for its image (positive_data_acceptance); DELETE removes
#                          a result but keeps the record (use_after_free,
#                          ensure_resource_availability).
# Messages go to stderr; Schemathesis's report to stdout. The exit code is Schemathesis's
# (0: every check passed), or 124 when the time limit cut it off.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
say() { printf 'schemathesis: %s\n' "$*" >&2; }

url=${1:-}
if ! [[ $url =~ ^https?://[^/]+$ ]]; then
  say "usage: $0 http://HOST:PORT (the gateway's base URL, no trailing slash)"
  exit 64
fi
examples=${SCHEMATHESIS_EXAMPLES:-50}
seed=${SCHEMATHESIS_SEED:-1}
limit=${SCHEMATHESIS_TIME_LIMIT:-100}
for n in "$examples" "$seed" "$limit"; do
  [[ $n =~ ^[0-9]+$ ]] || { say "SCHEMATHESIS_EXAMPLES, _SEED and _TIME_LIMIT must be whole numbers"; exit 64; }
done

venv=$root/var/schemathesis-venv
stamp=$venv/.requirements
pip_log=${TMPDIR:-/tmp}/pixmill-schemathesis-pip.log
apt_log=${TMPDIR:-/tmp}/pixmill-apt.log

can_apt() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; }

make_venv() {
  rm -rf "$venv"
  python3 -m venv "$venv" >>"$pip_log" 2>&1 && [[ -x $venv/bin/python ]] \
    && "$venv/bin/python" -m pip --version >/dev/null 2>&1
}

installed() { [[ -x $venv/bin/schemathesis && -f $stamp ]] && cmp -s "$stamp" "$here/requirements.txt"; }

install() {
  installed && return 0
  mkdir -p "$root/var"
  # One installer at a time.
  exec 9>"$root/var/.schemathesis-venv.lock"
  flock 9
  if ! installed; then
    : >"$pip_log"
    if ! command -v python3 >/dev/null || ! make_venv; then
      if can_apt; then
        say "installing Debian's python3-venv (once)…"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -q --no-install-recommends python3 python3-venv >"$apt_log" 2>&1; then
          apt-get update -q >>"$apt_log" 2>&1
          apt-get install -y -q --no-install-recommends python3 python3-venv >>"$apt_log" 2>&1 \
            || { say "apt-get install python3-venv failed; see $apt_log"; exit 1; }
        fi
        make_venv || { say "python3 -m venv still fails; see $pip_log"; exit 1; }
      else
        say "Schemathesis is installed from PyPI into a venv, which needs python3 with venv."
        say "Install them (Debian/Ubuntu: sudo apt-get install python3 python3-venv), then run this again."
        exit 1
      fi
    fi
    say "installing $(grep -m1 '^schemathesis==' "$here/requirements.txt") from PyPI into ${venv#"$root"/} (once)…"
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
      -r "$here/requirements.txt" >>"$pip_log" 2>&1; then
      say "pip install failed; the end of $pip_log:"
      tail -n 15 "$pip_log" >&2
      exit 1
    fi
    cp "$here/requirements.txt" "$stamp"
  fi
  exec 9>&-
}

install

checks=not_a_server_error,status_code_conformance,content_type_conformance
checks+=,response_headers_conformance,response_schema_conformance
checks+=,unsupported_method,allow_header_conformance,missing_required_header
checks=${SCHEMATHESIS_CHECKS:-$checks}
say "$examples cases per operation and phase, seed $seed, at most $limit s, against $url"
# Redirects are not followed: a 303 or 307 is an answer to check, not a hop. Schemathesis
# keeps its replay cache (for `st replay ID`) in the working directory: var/schemathesis.
# The example database would otherwise be written there too.
mkdir -p "$root/var/schemathesis"
cd "$root/var/schemathesis"
set +e
# With PIXMILL_API_KEY set (a gateway with PIXMILL_AUTH=required), every request carries
# it, and the missing_required_header check sends some without it to see the 401.
auth=()
[[ -n ${PIXMILL_API_KEY:-} ]] && auth=(-H "Authorization: Bearer $PIXMILL_API_KEY")
timeout --kill-after=5 "$limit" "$venv/bin/schemathesis" run "$url/openapi.json" \
  --url "$url" \
  "${auth[@]}" \
  --checks "$checks" \
  --max-examples "$examples" \
  --seed "$seed" \
  --workers 1 \
  --max-redirects 0 \
  --request-timeout 20 \
  --generation-database none \
  --no-color
status=$?
set -e
if ((status == 124)); then
  say "cut off after $limit s (SCHEMATHESIS_TIME_LIMIT)"
fi
exit "$status"
