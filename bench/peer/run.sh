#!/usr/bin/env bash
# Starts and stops the benchmark's end-to-end peer: the same job service as pixmill
# built the usual Python way, so `make bench` can put the two under the same load.
#
#   gateway side  gunicorn (app.py, Flask): its master and PEER_HTTP_WORKERS workers
#   workers side  celery worker (tasks.py): its main process and PEER_CONCURRENCY
#                 prefork children doing the image work
#   broker side   RabbitMQ (not started here: deploy/rabbitmq/ensure-broker.sh) and a
#                 private Redis, the result backend (ensure-redis.sh)
#
# Usage: run.sh start     start everything in the background, wait until the HTTP port
#                         answers and the Celery worker answers a ping, then exit 0
#        run.sh stop      stop all of it (whole process groups) and wait
#        run.sh status    say what runs
#
# Env (all optional):
#   PEER_PORT          HTTP port on 127.0.0.1 (8071)
#   PEER_DATA_DIR      uploads, results, logs and pid files (var/peer)
#   PEER_AMQP_URL      RabbitMQ (amqp://guest:guest@127.0.0.1:5672/%2f)
#   PEER_QUEUE         the peer's queue, apart from pixmill's (peer.jobs)
#   PEER_QUEUE_TYPE    classic (Celery's default) or quorum (classic; see tasks.py)
#   PEER_REDIS_PORT    the private Redis (6391)
#   PEER_CONCURRENCY   Celery prefork processes (the number of cores)
#   PEER_HTTP_WORKERS  gunicorn worker processes (the number of cores)
#   PEER_HTTP_THREADS  threads in each (16)
#
# In PEER_DATA_DIR: gunicorn.pid (the master), celery.pid (the main process), redis.pid,
# and gunicorn.log, celery.log, redis.log. Each of gunicorn and celery runs in a process
# group of its own led by that pid, so its children are found (and stopped) with it.
#
# Why gthread workers: a long-poll (`GET /v1/jobs/<id>?wait=10`) holds a request open
# for the whole wait, blocked in `AsyncResult.get()` on Redis pub/sub. gunicorn's
# default sync worker serves one request at a time, so 16 waiting clients would need
# 16+ processes (each with Flask, Celery, NumPy and OpenCV loaded). gthread serves each
# request on a thread and parks idle keep-alive connections in its poller, so threads
# are taken only by requests in flight. One process per core for the Python work
# (parsing, JSON, writing uploads) that the GIL serializes, and 16 threads in each so
# that even if the kernel hands all 16 clients' connections to one process, no request
# waits behind another's long-poll. (gevent would also do, but needs monkey-patching
# under Celery's and redis-py's sockets: the usual recipes keep to threads.)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=$root/var/bench-venv
cores=$(nproc 2>/dev/null || echo 2)

data=${PEER_DATA_DIR:-$root/var/peer}
mkdir -p "$data"
data=$(cd "$data" && pwd)
port=${PEER_PORT:-8071}
export PEER_DATA_DIR=$data
export PEER_AMQP_URL=${PEER_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export PEER_QUEUE=${PEER_QUEUE:-peer.jobs}
export PEER_QUEUE_TYPE=${PEER_QUEUE_TYPE:-classic}
export PEER_REDIS_PORT=${PEER_REDIS_PORT:-6391}
export PEER_HTTP_THREADS=${PEER_HTTP_THREADS:-16}
# No __pycache__ folders in the source tree.
export PYTHONDONTWRITEBYTECODE=1
concurrency=${PEER_CONCURRENCY:-$cores}
http_workers=${PEER_HTTP_WORKERS:-$cores}
node="peer-$port@${HOSTNAME:-$(hostname)}"

say() { printf 'peer: %s\n' "$*" >&2; }
alive_group() { [[ -n $1 ]] && kill -0 -- "-$1" 2>/dev/null; }
pid_in() { [[ -s $data/$1 ]] && cat "$data/$1" || true; }
answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Stops the process group led by the pid in $data/$1: SIGTERM (a graceful stop), then
# SIGKILL for whatever is left after $2 seconds.
stop_group() {
  local file=$1 grace=$2 pid
  pid=$(pid_in "$file")
  if [[ -z $pid ]]; then return 0; fi
  if alive_group "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while alive_group "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if alive_group "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null || true
      while alive_group "$pid"; do sleep 0.1; done
      say "${file%.pid}: killed group $pid (still running after ${grace} s)"
    else
      say "${file%.pid}: stopped group $pid"
    fi
  fi
  rm -f "$data/$file"
}

stop_all() {
  stop_group gunicorn.pid 15
  stop_group celery.pid 30
  PEER_REDIS_DIR=$data "$here/ensure-redis.sh" stop
}

status() {
  local name pid up=0
  for name in gunicorn celery redis; do
    pid=$(pid_in "$name.pid")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      say "$name: running, pid $pid"
    else
      say "$name: not running"; up=1
    fi
  done
  return $up
}

fail_start() {
  say "$*"
  for log in gunicorn.log celery.log; do
    [[ -s $data/$log ]] && { say "last lines of $data/$log:"; tail -n 15 "$data/$log" >&2; }
  done
  stop_all
  exit 1
}

start() {
  for name in gunicorn celery; do
    if alive_group "$(pid_in "$name.pid")"; then
      say "$name is already running (pid $(pid_in "$name.pid")); run '$0 stop' first"
      exit 1
    fi
  done
  if answers 127.0.0.1 "$port"; then
    say "port $port is taken; set PEER_PORT"
    exit 1
  fi
  # The broker must be there already (the peer shares pixmill's RabbitMQ).
  local rest=${PEER_AMQP_URL#*://} hostport bhost bport=5672
  rest=${rest#*@}; hostport=${rest%%/*}; hostport=${hostport%%\?*}
  bhost=${hostport%%:*}; [[ $hostport == *:* ]] && bport=${hostport##*:}
  if ! answers "${bhost:-127.0.0.1}" "$bport"; then
    say "no RabbitMQ answers at ${bhost:-127.0.0.1}:$bport (start one: deploy/rabbitmq/ensure-broker.sh)"
    exit 1
  fi

  "$root/bench/baseline/setup.sh"
  [[ -x $venv/bin/gunicorn && -x $venv/bin/celery ]] \
    || { say "the peer's Python stack is missing from var/bench-venv (see bench/baseline/setup.sh)"; exit 1; }

  PEER_REDIS_DIR=$data "$here/ensure-redis.sh" start || exit 1

  # Each under setsid, so it leads a process group of its own with its children, and
  # its pid (which $! is: a background command of a script never leads a group, so
  # setsid execs without forking) is the group to stop.
  local shm=/dev/shm
  [[ -d $shm && -w $shm ]] || shm=$data
  setsid "$venv/bin/gunicorn" app:app \
    --chdir "$here" \
    --bind "127.0.0.1:$port" \
    --worker-class gthread --workers "$http_workers" --threads "$PEER_HTTP_THREADS" \
    --backlog 2048 \
    --keep-alive 75 \
    --timeout 60 --graceful-timeout 10 \
    --worker-tmp-dir "$shm" \
    --log-level warning --error-logfile "$data/gunicorn.log" \
    </dev/null >>"$data/gunicorn.log" 2>&1 &
  echo $! >"$data/gunicorn.pid"

  setsid "$venv/bin/celery" -A tasks --workdir "$here" worker \
    --queues "$PEER_QUEUE" \
    --hostname "$node" \
    --pool prefork --concurrency "$concurrency" -O fair \
    --without-gossip --without-mingle --without-heartbeat \
    --loglevel WARNING --logfile "$data/celery.log" \
    </dev/null >>"$data/celery.log" 2>&1 &
  echo $! >"$data/celery.pid"

  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; do
    alive_group "$(pid_in gunicorn.pid)" || fail_start "gunicorn exited during start"
    ((SECONDS < deadline)) || fail_start "the HTTP port $port did not answer within 60 s"
    sleep 0.2
  done
  # Ready = the worker is consuming: it answers a remote-control ping.
  until (cd "$here" && "$venv/bin/celery" -A tasks inspect ping \
           --destination "$node" --timeout 1 >/dev/null 2>&1); do
    alive_group "$(pid_in celery.pid)" || fail_start "the celery worker exited during start"
    ((SECONDS < deadline)) || fail_start "the celery worker did not answer a ping within 60 s"
    sleep 0.2
  done
  say "ready: http://127.0.0.1:$port (gunicorn $(pid_in gunicorn.pid): $http_workers × $PEER_HTTP_THREADS threads;" \
    "celery $(pid_in celery.pid) as $node: $concurrency processes on queue $PEER_QUEUE; redis $(pid_in redis.pid) on $PEER_REDIS_PORT)"
}

case "${1:-}" in
  start) start ;;
  stop) stop_all ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 64 ;;
esac
