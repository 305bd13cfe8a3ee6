#!/usr/bin/env bash
# Runs the whole system on this machine: the broker, the gateway and WORKERS worker
# processes, until Ctrl-C. Used by `make run`.
#
#   WORKERS=4 make run                       more worker processes
#   make scale WORKERS=3                     while it runs: grow or shrink to 3 workers
#   PIXMILL_HTTP_ADDR=0.0.0.0:9000 make run  listen elsewhere: then PIXMILL_AUTH must be
#                                            set too (`required` for API keys), or the
#                                            gateway refuses to start
#
# It supervises the workers. A worker that exits on its own (a crash, `kill -9`, a
# SIGTERM it did not get from here) is started again after a back-off of 0.5 s, doubling
# up to 10 s and back to 0.5 s once a worker has run 30 s; its unacked jobs go back to
# the queue, and the gateway and the other workers keep serving. Only Ctrl-C or SIGTERM
# to this script, or the gateway dying, stops everything; workers get SIGTERM and finish
# the jobs in hand first (a second Ctrl-C stops them at once; their jobs go back to the
# queue).
#
# Broker users: the gateway connects as PREFIX-gateway and the workers as PREFIX-worker
# (deploy/rabbitmq/users.sh; pixmill-gateway and pixmill-worker for the default prefix),
# which ensure-broker.sh sets up on the local node: the broker URL(s) of PIXMILL_AMQP_URL
# with their credentials swapped in. PIXMILL_BROKER_USERS=skip keeps PIXMILL_AMQP_URL's
# own credentials for both (a broker this machine does not administer).
#
# Every PIXMILL_* variable in docs/configuration.md applies to the processes started here, and:
#   PIXMILL_BIN_DIR=target/debug     use the binaries in that folder and skip the build
#                                    (a relative path is taken from the current folder,
#                                    else from the project root)
#   PIXMILL_METRICS_PORT_BASE=9100   worker-i serves /metrics on 127.0.0.1:BASE+i; 0 lets
#                                    each worker pick a free port (it logs the port)
#   PIXMILL_RUN_DIR=var/run/local    the state folder `make scale` (deploy/scale.sh) uses;
#                                    one `make run` per folder (relative: project root)
#
# The state folder, each file replaced atomically (written aside, then renamed):
#   desired-workers   N: the workers wanted; written here at start (WORKERS), then by
#                     deploy/scale.sh. Read every 0.25 s.
#   workers           one line per worker slot, "NAME PID STATE", STATE one of running,
#                     draining (scaled down, finishing the jobs in hand) or restarting
#                     (PID is - while it waits out its back-off)
#   current-workers   N: worker processes alive now (running + draining)
#   gateway.pid       the gateway's pid
#   supervisor.pid    this script's pid; written last, once the files above exist
# All of them are removed when this script exits.
set -euo pipefail

caller_dir=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
workers=${WORKERS:-2}
max_workers=64
export PIXMILL_HTTP_ADDR=${PIXMILL_HTTP_ADDR:-127.0.0.1:8080}
export PIXMILL_DATA_DIR=${PIXMILL_DATA_DIR:-$root/var/data}
metrics_base=${PIXMILL_METRICS_PORT_BASE:-9100}
run_dir=${PIXMILL_RUN_DIR:-$root/var/run/local}
[[ $run_dir == /* ]] || run_dir=$root/$run_dir
grace=${PIXMILL_SHUTDOWN_GRACE_SECS:-30}
[[ $grace =~ ^[0-9]{1,6}$ ]] || grace=30
tick=0.25         # how often the supervisor looks at its processes and desired-workers
backoff_first=500 # ms
backoff_max=10000 # ms
backoff_reset=30000 # ms: a worker that ran this long starts again from backoff_first

say() { printf 'run: %s\n' "$*" >&2; }

if ! [[ $workers =~ ^[1-9][0-9]*$ ]] || ((${#workers} > 2 || workers > max_workers)); then
  say "WORKERS must be a positive number, at most $max_workers (got '$workers')"
  exit 64
fi
if ! [[ $metrics_base =~ ^[0-9]{1,5}$ ]] || ((metrics_base > 65535 - max_workers)); then
  say "PIXMILL_METRICS_PORT_BASE must be a port number from 0 to $((65535 - max_workers)) (got '$metrics_base')"
  exit 64
fi
# Several workers share this machine's cores: each gets its share of job slots (a
# worker on a machine of its own defaults to one slot per core), so the jobs in flight
# match the cores and the memory of idle slots is not spent.
if [[ -z ${PIXMILL_WORKER_CONCURRENCY:-} ]]; then
  cores=$(nproc 2>/dev/null || echo 1)
  export PIXMILL_WORKER_CONCURRENCY=$(( cores / workers > 0 ? cores / workers : 1 ))
fi
if [[ -n ${PIXMILL_METRICS_ADDR:-} ]]; then
  say "ignoring PIXMILL_METRICS_ADDR=$PIXMILL_METRICS_ADDR: one address cannot serve several workers;"
  say "worker-i listens on 127.0.0.1:PIXMILL_METRICS_PORT_BASE+i (base $metrics_base)"
  unset PIXMILL_METRICS_ADDR
fi

if [[ -n ${PIXMILL_BIN_DIR:-} ]]; then
  bin_dir=$PIXMILL_BIN_DIR
  if [[ $bin_dir != /* ]]; then
    if [[ -d $caller_dir/$bin_dir ]]; then bin_dir=$caller_dir/$bin_dir; else bin_dir=$root/$bin_dir; fi
  fi
  for binary in pixmill-gateway pixmill-worker; do
    if ! [[ -f $bin_dir/$binary && -x $bin_dir/$binary ]]; then
      say "PIXMILL_BIN_DIR=$PIXMILL_BIN_DIR: there is no executable $binary in $bin_dir"
      exit 1
    fi
  done
  build=0
else
  bin_dir=$root/target/release
  build=1
  if ! command -v cargo >/dev/null; then
    say "cargo is not installed; install Rust from your distribution or rustup first"
    exit 1
  fi
fi

# --- the state folder -------------------------------------------------------------------
pid_file=$run_dir/supervisor.pid
state_files=(supervisor.pid gateway.pid desired-workers current-workers workers)

# supervisor_alive PID: PID is a live run-local.sh other than this one.
supervisor_alive() {
  [[ $1 =~ ^[0-9]+$ && $1 != "$$" ]] || return 1
  kill -0 "$1" 2>/dev/null || return 1
  if [[ -r /proc/$1/cmdline ]]; then
    grep -qa run-local.sh "/proc/$1/cmdline"
  else
    ps -o args= -p "$1" 2>/dev/null | grep -q run-local.sh
  fi
}

# put FILE TEXT: replaces a state file atomically.
put() {
  printf '%s' "$2" >"$run_dir/.$1.$$"
  mv -f "$run_dir/.$1.$$" "$run_dir/$1"
}

mkdir -p "$run_dir"
if [[ -f $pid_file ]]; then
  other=
  read -r other <"$pid_file" || true
  if supervisor_alive "$other"; then
    say "another \`make run\` (pid $other) is running with the state folder ${run_dir#"$root"/};"
    say "stop it first, or give this one its own PIXMILL_RUN_DIR (and PIXMILL_HTTP_ADDR)"
    exit 1
  fi
  say "removing the state a stopped run left in ${run_dir#"$root"/} (pid ${other:-?} is gone)"
fi
for f in "${state_files[@]}"; do rm -f "${run_dir:?}/$f"; done
put desired-workers "$workers"$'\n'
put workers ''
put current-workers $'0\n'
put supervisor.pid "$$"$'\n'

# --- processes --------------------------------------------------------------------------
# Worker slot i (worker-i) has a state: running, draining or restarting (unset: empty).
declare -a w_pid=() w_state=() w_started=() w_delay=() w_restart_at=()
gateway_pid=
desired=$workers
bad_desired=
dirty=1
now=0
started=0  # 1 once processes have been started: then the exit says "stopped"
signals=0  # INT/TERM received
trap 'signals=$((signals + 1))' INT TERM

clock() { now=${EPOCHREALTIME//[.,]/}; now=$((10#$now / 1000)); }

# describe STATUS: sets $how to the words for a `wait` status.
describe() {
  if (($1 > 128)); then how="killed by signal $(($1 - 128))"; else how="exit status $1"; fi
}

# reap PID: waits for an exited child; sets $how.
reap() {
  local status=0
  wait "$1" 2>/dev/null || status=$?
  describe "$status"
}

fmt_secs() { # fmt_secs MS: sets $secs to MS in seconds, e.g. 500 -> 0.5
  if (($1 % 1000 == 0)); then secs=$(($1 / 1000)); else secs=$(($1 / 1000)).$(($1 % 1000 / 100)); fi
}

metrics_addr() { # metrics_addr SLOT: sets $addr
  if ((metrics_base == 0)); then addr=127.0.0.1:0; else addr=127.0.0.1:$((metrics_base + $1)); fi
}

start_worker() { # start_worker SLOT
  local i=$1 addr
  metrics_addr "$i"
  PIXMILL_WORKER_NAME=${PIXMILL_WORKER_NAME:-worker-$i} PIXMILL_METRICS_ADDR=$addr \
    PIXMILL_AMQP_URL=$worker_amqp_url "$bin_dir/pixmill-worker" &
  w_pid[i]=$!
  w_state[i]=running
  w_started[i]=$now
  dirty=1
}

clear_slot() {
  unset 'w_pid[$1]' 'w_state[$1]' 'w_started[$1]' 'w_delay[$1]' 'w_restart_at[$1]'
  dirty=1
}

write_state() {
  local i table='' alive=0
  for i in "${!w_state[@]}"; do
    table+="worker-$i ${w_pid[i]:--} ${w_state[i]}"$'\n'
    if [[ ${w_state[i]} != restarting ]]; then alive=$((alive + 1)); fi
  done
  put workers "$table"
  put current-workers "$alive"$'\n'
  dirty=0
}

read_desired() {
  local value=''
  [[ -f $run_dir/desired-workers ]] || return 0
  IFS= read -r value <"$run_dir/desired-workers" || true
  if [[ $value =~ ^[1-9][0-9]?$ ]] && ((value <= max_workers)); then
    bad_desired=
    if ((value != desired)); then
      say "scaling $desired → $value workers"
      desired=$value
    fi
  elif [[ $value != "$bad_desired" ]]; then
    bad_desired=$value
    say "ignoring desired-workers '$value': not a number from 1 to $max_workers; keeping $desired"
  fi
}

# One look at every worker slot: reap the dead, restart or retire them, apply `desired`.
# LOUD=0 for the first start (the banner names those workers).
supervise() {
  local loud=${1:-1} i top=$desired p d
  clock
  read_desired
  for i in "${!w_state[@]}"; do
    if ((i > top)); then top=$i; fi
  done
  for ((i = 1; i <= top; i++)); do
    p=${w_pid[i]:-}
    case ${w_state[i]:-} in
      running)
        if ! kill -0 "$p" 2>/dev/null; then
          reap "$p"
          if ((i > desired)); then
            say "worker-$i (pid $p) died ($how); not restarting it (scaled down)"
            clear_slot "$i"
          else
            if ((now - w_started[i] >= backoff_reset)); then w_delay[i]=$backoff_first; fi
            d=${w_delay[i]:-$backoff_first}
            fmt_secs "$d"
            say "worker-$i (pid $p) died ($how); restarting in $secs s"
            w_pid[i]=-
            w_state[i]=restarting
            w_restart_at[i]=$((now + d))
            d=$((d * 2))
            if ((d > backoff_max)); then d=$backoff_max; fi
            w_delay[i]=$d
            dirty=1
          fi
        elif ((i > desired)); then
          kill -TERM "$p" 2>/dev/null || true
          w_state[i]=draining
          dirty=1
          say "stopping worker-$i (pid $p): scaled down; it finishes the jobs in hand first"
        fi
        ;;
      draining)
        if ! kill -0 "$p" 2>/dev/null; then
          reap "$p"
          say "worker-$i (pid $p) stopped ($how)"
          clear_slot "$i"
        fi
        ;;
      restarting)
        if ((i > desired)); then
          say "worker-$i: not restarting it (scaled down)"
          clear_slot "$i"
        elif ((now >= w_restart_at[i])); then
          start_worker "$i"
          say "worker-$i restarted (pid ${w_pid[i]})"
        fi
        ;;
      '')
        if ((i <= desired)); then
          start_worker "$i"
          if ((loud)); then
            metrics_addr "$i"
            say "started worker-$i (pid ${w_pid[i]}, metrics http://$addr/metrics)"
          fi
        fi
        ;;
    esac
  done
  if ((dirty)); then write_state; fi
}

# shellcheck disable=SC2317  # reached through the EXIT trap
# Sends SIGTERM to every process still alive and waits for all of them; SIGKILL for any
# left after the grace period + 30 s, or at once on another Ctrl-C.
stop_all() {
  local pids=() alive=() i p seen=$signals deadline
  for i in "${!w_state[@]}"; do
    if [[ ${w_state[i]} != restarting ]]; then pids+=("${w_pid[i]}"); fi
  done
  if [[ -n $gateway_pid ]]; then pids+=("$gateway_pid"); fi
  ((${#pids[@]} > 0)) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  clock
  deadline=$((now + (grace + 30) * 1000))
  while true; do
    alive=()
    for p in "${pids[@]}"; do
      if kill -0 "$p" 2>/dev/null; then alive+=("$p"); fi
    done
    ((${#alive[@]} > 0)) || break
    clock
    if ((signals > seen)); then
      say "stopping at once (SIGKILL); jobs in hand go back to the queue"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      seen=$signals
    elif ((now > deadline)); then
      say "pid(s) ${alive[*]} still running $((grace + 30)) s after SIGTERM; killing them (SIGKILL)"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      deadline=$((now + 3600 * 1000))
    fi
    sleep 0.2 || true
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  w_pid=() w_state=() gateway_pid=
}

# shellcheck disable=SC2317  # the EXIT trap
on_exit() {
  local rc=$?
  trap - EXIT
  stop_all
  for f in "${state_files[@]}"; do rm -f "${run_dir:?}/$f"; done
  if ((started)); then
    say "stopped. The broker keeps running; stop it with: make broker-stop"
  fi
  exit "$rc"
}
trap on_exit EXIT

if ((build)); then
  deploy/deps.sh
fi
deploy/rabbitmq/ensure-broker.sh
amqp_url=${PIXMILL_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
gateway_amqp_url=$(deploy/rabbitmq/users.sh url gateway "$amqp_url")
worker_amqp_url=$(deploy/rabbitmq/users.sh url worker "$amqp_url")
if ((build)); then
  echo "run: building (release)…" >&2
  cargo build --release --bins --quiet
fi
if ((signals > 0)); then exit 0; fi

started=1
PIXMILL_AMQP_URL=$gateway_amqp_url "$bin_dir/pixmill-gateway" &
gateway_pid=$!
put gateway.pid "$gateway_pid"$'\n'
supervise 0

host=${PIXMILL_HTTP_ADDR%:*}
port=${PIXMILL_HTTP_ADDR##*:}
[[ $host == 0.0.0.0 ]] && host=127.0.0.1
for _ in $(seq 1 50); do
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$gateway_pid" 2>/dev/null; then
    reap "$gateway_pid"
    gateway_pid=
    say "the gateway exited ($how); see its message above"
    exit 1
  fi
  if ((signals > 0)); then
    echo >&2
    say "stopping (workers finish the jobs in hand)…"
    exit 0
  fi
  sleep 0.2 || true
done

url="http://$PIXMILL_HTTP_ADDR/"
scale_hint="make scale WORKERS=N"
if [[ $run_dir != "$root/var/run/local" ]]; then scale_hint="PIXMILL_RUN_DIR=$run_dir $scale_hint"; fi
{
  echo
  echo "  pixmill is running with $desired worker process(es)."
  echo "  Upload page:  $url"
  echo "  API:          curl -F image=@photo.jpg -F op=resize -F width=640 -F height=400 ${url}v1/jobs"
  echo "  Metrics:      gateway   ${url}metrics"
  if ((metrics_base == 0)); then
    echo "                workers   each on a free port, logged at its start (\"metrics listening\")"
  else
    for i in "${!w_state[@]}"; do
      printf '                %-9s http://127.0.0.1:%d/metrics\n' "worker-$i" $((metrics_base + i))
    done
    echo "                worker-i  port $metrics_base + i, also for workers added by make scale"
  fi
  echo "  Scale:        $scale_hint   (grow or shrink while this runs)"
  echo "  Press Ctrl-C to stop."
  echo
} >&2
if [[ -n ${DISPLAY:-} ]] && command -v xdg-open >/dev/null; then
  xdg-open "$url" >/dev/null 2>&1 || true
fi

# Stay up until Ctrl-C / SIGTERM, or until the gateway exits; restart workers that die.
while ((signals == 0)); do
  sleep "$tick" || true
  if ((signals > 0)); then break; fi
  if ! kill -0 "$gateway_pid" 2>/dev/null; then
    p=$gateway_pid
    reap "$p"
    gateway_pid=
    say "the gateway (pid $p) died ($how); stopping the workers (they finish the jobs in hand)…"
    exit 1
  fi
  supervise
done
echo >&2
say "stopping (workers finish the jobs in hand)…"
exit 0
