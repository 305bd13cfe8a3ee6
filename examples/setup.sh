#!/usr/bin/env bash
# Prepares one Python virtual environment for every example under examples/.
#
#   PY=$(examples/setup.sh)        # last line of stdout: the venv's python
#   "$PY" examples/audit-log/audit_log.py
#
# The venv lives at $PIXMILL_EXAMPLES_VENV (default <repo>/var/examples-venv).
# Requirements are installed again only when an examples/*/requirements.txt changed,
# so running this a second time takes a moment. Progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${PIXMILL_EXAMPLES_VENV:-$repo/var/examples-venv}"
py="$venv/bin/python"
stamp="$venv/.requirements.sha256"

say() { echo "setup.sh: $*" >&2; }

make_venv() {
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" >&2
}

if ! command -v python3 >/dev/null 2>&1; then
    say "python3 is not installed (Debian/Ubuntu: apt-get install -y python3 python3-venv)"
    exit 1
fi

if ! "$py" -m pip --version >/dev/null 2>&1; then
    say "creating $venv"
    if ! make_venv; then
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            say "python3 -m venv failed; installing python3-venv with apt-get"
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
            make_venv
        else
            say "python3 -m venv failed; install the venv module first:"
            say "    sudo apt-get install -y python3-venv"
            rm -rf "$venv"
            exit 1
        fi
    fi
fi

shopt -s nullglob
reqs=("$here"/*/requirements.txt)
if [ "${#reqs[@]}" -gt 0 ]; then
    want="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
    have="$(cat "$stamp" 2>/dev/null || true)"
    if [ "$want" != "$have" ]; then
        args=()
        for r in "${reqs[@]}"; do
            say "installing ${r#"$repo"/}"
            args+=(-r "$r")
        done
        "$py" -m pip install -q --disable-pip-version-check "${args[@]}" >&2
        echo "$want" >"$stamp"
    else
        say "requirements unchanged"
    fi
fi

echo "$py"
