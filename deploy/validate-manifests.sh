#!/usr/bin/env bash
# Validates the deployment files: deploy/compose.yaml, the Dockerfiles, the Kubernetes
# manifests and KEDA objects under deploy/k8s/, the Prometheus rules and config, and the
# Grafana dashboard. Prints one line per check and stops at the first failure with the
# validator's message (exit 1).
#
# The validators are pinned in deploy/validate-requirements.txt and installed from PyPI
# into var/validate-venv (once; Debian's python3-venv first when it is missing and we are
# root). promtool is taken from Debian's prometheus package: the .deb is downloaded with
# apt-get and only /usr/bin/promtool is extracted into var/validate-tools, so nothing is
# installed system-wide and no Prometheus service is set up or started. A second run
# reuses both and installs nothing.
#
#   PIXMILL_DEPLOY_DIR   the folder to check, laid out like deploy/ (default: deploy/)
#   PIXMILL_MAKEFILE     the Makefile whose recipes say what CI runs (default: Makefile)
#   PIXMILL_CI_SCRIPT    CI's entry point (default: .ci/run)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
deploy=$(cd "${PIXMILL_DEPLOY_DIR:-$here}" && pwd)
makefile=${PIXMILL_MAKEFILE:-$root/Makefile}
ci_script=${PIXMILL_CI_SCRIPT:-$root/.ci/run}
requirements=$here/validate-requirements.txt
venv=$root/var/validate-venv
tools=$root/var/validate-tools
promtool=$tools/promtool
k8s_version=1.30.0
log=${TMPDIR:-/tmp}/pixmill-validate.log

say() { printf 'validate: %s\n' "$*"; }
die() {
  printf 'validate: %s\n' "$*" >&2
  exit 1
}
can_apt() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  say "installing Debian's $* (once)…"
  if ! apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1; then
    apt-get update -q >>"$log" 2>&1
    apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1 ||
      die "apt-get install $* failed; see $log"
  fi
}

for f in "$makefile" "$ci_script" "$requirements"; do
  [[ -f $f ]] || die "$f not found"
done
mkdir -p "$root/var"
: >"$log"
# One installer at a time.
exec 9>"$root/var/.validate.lock"
flock 9

# --- the validators -----------------------------------------------------------------

venv_stamp=$venv/.requirements.sha256
want_stamp=$(sha256sum "$requirements" | cut -d' ' -f1)

venv_ready() {
  [[ -f $venv_stamp && $(cat "$venv_stamp") == "$want_stamp" ]] &&
    [[ -x $venv/bin/check-jsonschema && -x $venv/bin/kubernetes-validate && -x $venv/bin/hadolint ]] &&
    "$venv/bin/python" -c '' 2>/dev/null
}

make_venv() {
  rm -rf "$venv"
  python3 -m venv "$venv" >>"$log" 2>&1 && "$venv/bin/python" -m pip --version >/dev/null 2>&1
}

if ! venv_ready; then
  if ! command -v python3 >/dev/null || ! make_venv; then
    if can_apt; then
      apt_install python3 python3-venv
      make_venv || die "python3 -m venv still fails; see $log"
    else
      die "the validators are installed from PyPI into a venv, which needs python3 with venv." \
        "Install them (Debian/Ubuntu: sudo apt-get install python3 python3-venv), then run this again."
    fi
  fi
  say "installing the pinned validators into ${venv#"$root"/} (once)…"
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
    --require-hashes -r "$requirements" >>"$log" 2>&1; then
    tail -n 15 "$log" >&2
    die "pip install -r ${requirements#"$root"/} failed; the end of $log is above"
  fi
  echo "$want_stamp" >"$venv_stamp"
fi

if ! [[ -x $promtool ]] || ! "$promtool" --version >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    die "promtool is taken from Debian's prometheus package, which needs apt-get and dpkg-deb"
  fi
  say "extracting promtool from Debian's prometheus package into ${tools#"$root"/} (once)…"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && apt-get download prometheus) >>"$log" 2>&1; then
    can_apt || die "apt-get download prometheus failed (run apt-get update as root first); see $log"
    apt-get update -q >>"$log" 2>&1
    (cd "$tmp" && apt-get download prometheus) >>"$log" 2>&1 ||
      die "apt-get download prometheus failed; see $log"
  fi
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
  install -D -m 0755 "$tmp/usr/bin/promtool" "$promtool"
  "$promtool" --version >/dev/null 2>&1 || die "the extracted promtool does not run"
fi
exec 9>&-

py() { "$venv/bin/python" "$here/validate_manifests.py" "$@"; }
# Messages name files relative to the repository.
cd "$root"

# Runs a validator quietly; on failure prints its output and stops.
check() {
  local name=$1 out
  shift
  if ! out=$("$@" 2>&1); then
    printf 'validate: %s FAILED\n%s\n' "$name" "$out" >&2
    exit 1
  fi
  say "$name ok"
}

say "checking ${deploy#"$root"/} with check-jsonschema $("$venv/bin/check-jsonschema" --version | awk '{print $NF}')," \
  "kubernetes-validate $("$venv/bin/kubernetes-validate" --version), promtool $("$promtool" --version 2>&1 | awk 'NR==1{print $3}')," \
  "hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}')"

# --- Compose --------------------------------------------------------------------------
check "compose.yaml (Compose Specification schema)" \
  "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$deploy/compose.yaml"
py compose-refs "$deploy"

# --- Kubernetes -----------------------------------------------------------------------
k8s_files=$(py k8s-files "$deploy") || exit 1
mapfile -t k8s_files <<<"$k8s_files"
[[ ${#k8s_files[@]} -gt 0 && -n ${k8s_files[0]} ]] || die "no Kubernetes manifests under ${deploy}/k8s"
check "k8s manifests (${#k8s_files[@]} files, Kubernetes $k8s_version, strict)" \
  "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$k8s_version" --quiet "${k8s_files[@]}"
py kustomization "$deploy"
py keda "$deploy"
py invariants "$deploy"

# --- Prometheus -----------------------------------------------------------------------
check "prometheus/alerts.yaml (promtool check rules)" "$promtool" check rules "$deploy/prometheus/alerts.yaml"
check "prometheus/alerts.test.yaml (promtool test rules)" "$promtool" test rules "$deploy/prometheus/alerts.test.yaml"
check "prometheus/prometheus.yml (promtool check config)" "$promtool" check config "$deploy/prometheus/prometheus.yml"
py prometheus-k8s "$deploy" "$promtool"
py alert-policy "$deploy"

# --- Grafana --------------------------------------------------------------------------
py grafana "$deploy" "$promtool"

# --- Dockerfiles ----------------------------------------------------------------------
mapfile -t dockerfiles < <(find "$deploy/docker" -maxdepth 1 -name '*.Dockerfile' | sort)
((${#dockerfiles[@]} > 0)) || die "no Dockerfiles in $deploy/docker"
check "dockerfiles (hadolint, ${#dockerfiles[@]} files)" "$venv/bin/hadolint" --no-color "${dockerfiles[@]}"
py dockerfile-build "$deploy" "$makefile"
py dockerfile-ci "$deploy" "$makefile" "$ci_script"

say "all checks passed"
