#!/usr/bin/env bash
# Changes the number of worker processes of a running `make run` (deploy/run-local.sh),
# with nothing lost. Used by `make scale WORKERS=n`.
#
#   deploy/scale.sh 3       grow or shrink to 3 workers (1 to 64)
#
# It writes N to desired-workers in the run's state folder (PIXMILL_RUN_DIR, default
# var/run/local; see run-local.sh), which the supervisor reads every 0.25 s. Growing
# starts worker-(k+1)…worker-N. Shrinking sends SIGTERM to the highest-numbered workers:
# each stops taking jobs, finishes the ones in hand (within PIXMILL_SHUTDOWN_GRACE_SECS),
# then exits, and is not restarted. This script waits until exactly N workers run and
# none is still finishing, at most PIXMILL_SCALE_TIMEOUT_SECS (default 60, or the grace
# period + 30 s when that is longer).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=${PIXMILL_RUN_DIR:-$root/var/run/local}
[[ $run_dir == /* ]] || run_dir=$root/$run_dir
max_workers=64
say() { printf 'scale: %s\n' "$*" >&2; }

n=${1:-}
if (($# != 1)) || ! [[ $n =~ ^[1-9][0-9]?$ ]] || ((n > max_workers)); then
  say "usage: make scale WORKERS=N, or deploy/scale.sh N, with N a whole number from 1 to $max_workers (got '${*}')"
  exit 64
fi
grace=${PIXMILL_SHUTDOWN_GRACE_SECS:-30}
[[ $grace =~ ^[0-9]{1,6}$ ]] || grace=30
timeout=${PIXMILL_SCALE_TIMEOUT_SECS:-$((grace + 30 > 60 ? grace + 30 : 60))}
if ! [[ $timeout =~ ^[1-9][0-9]{0,5}$ ]]; then
  say "PIXMILL_SCALE_TIMEOUT_SECS must be a positive number of seconds (got '$timeout')"
  exit 64
fi

shown=${run_dir#"$root"/}
pid_file=$run_dir/supervisor.pid
if ! [[ -f $pid_file ]]; then
  say "no \`make run\` is running (no $shown/supervisor.pid); start one with: make run"
  exit 1
fi
pid=
read -r pid <"$pid_file" || true
alive() {
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/cmdline ]]; then
    grep -qa run-local.sh "/proc/$pid/cmdline"
  else
    ps -o args= -p "$pid" 2>/dev/null | grep -q run-local.sh
  fi
}
if ! alive; then
  say "no \`make run\` is running: $shown/supervisor.pid names pid ${pid:-?}, which is no longer a running \`make run\`"
  say "(a run that was killed left it behind); start one with: make run"
  exit 1
fi

# read_file NAME: sets $value to the first line of a state file ('' when missing).
read_file() {
  value=
  if [[ -f $run_dir/$1 ]]; then IFS= read -r value <"$run_dir/$1" || true; fi
}

read_file desired-workers
before=$value
if [[ $before == "$n" ]]; then
  say "already $n worker(s) wanted"
else
  say "${before:-?} → $n workers"
fi
printf '%s\n' "$n" >"$run_dir/.desired-workers.scale.$$"
mv -f "$run_dir/.desired-workers.scale.$$" "$run_dir/desired-workers"

deadline=$((SECONDS + timeout))
told=
while true; do
  if ! alive; then
    say "\`make run\` (pid $pid) stopped before it had $n workers"
    exit 1
  fi
  read_file desired-workers
  if [[ $value != "$n" ]]; then
    say "superseded: desired-workers is now '$value' (another make scale?)"
    exit 1
  fi
  running=() waiting=() other=0
  if [[ -f $run_dir/workers ]]; then
    while read -r name wpid state; do
      case $state in
        running) running+=("$name (pid $wpid)") ;;
        draining) waiting+=("$name (pid $wpid) is finishing its jobs in hand") ; other=$((other + 1)) ;;
        restarting) waiting+=("$name is restarting after a crash") ; other=$((other + 1)) ;;
        *) other=$((other + 1)) ;;
      esac
    done <"$run_dir/workers"
  fi
  if ((${#running[@]} == n && other == 0)); then
    printf -v list '%s, ' "${running[@]}"
    say "$n worker(s) running: ${list%, }"
    exit 0
  fi
  if ((${#waiting[@]} > 0)) && [[ ${waiting[*]} != "$told" ]]; then
    told=${waiting[*]}
    for line in "${waiting[@]}"; do say "waiting: $line"; done
  fi
  if ((SECONDS >= deadline)); then
    say "gave up after $timeout s: ${#running[@]} worker(s) running, ${#waiting[@]} not settled; see the output of make run"
    exit 1
  fi
  sleep 0.25
done
